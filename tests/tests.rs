// One integration test target (one build, one binary); each area is a module.

mod util;

mod apache;
mod cgi;
mod faults;
mod lifecycle;
mod mount;
mod protocol;
mod servers;
mod standalone;
#[cfg(feature = "axum")]
mod tower;
