// The benchmark peers' response (bench/peers/): a fixed "Hello World" with a
// Content-Type, for comparing fcgi-shim with them like for like by hand, e.g.
// `fcgi-shim bench --spawn target/release/examples/hello_world -- -c 8 -d 3`.
// (The benchmark's targets are judged with examples/hello, which formats its mount path
// per request; bench/run.sh's section 1b runs this one too, like for like.)

use fcgi_shim::Body;
use http::{Request, Response, header};

fn hello(_req: Request<Body>) -> Response<&'static str> {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .body("Hello World\n")
        .unwrap()
}

// Several worker threads on musl's malloc would queue on its one lock; this per-thread
// cache in front of it keeps them apart (see `fcgi_shim::ThreadCache`).
#[global_allocator]
static ALLOC: fcgi_shim::ThreadCache = fcgi_shim::ThreadCache::new();

fn main() -> Result<(), fcgi_shim::Error> {
    fcgi_shim::run(hello)
}
