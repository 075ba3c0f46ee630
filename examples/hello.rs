// The smallest fcgi-shim app: upload the binary as public_html/mysite.fcgi with an
// .htaccess from htaccess/, and every URL answers "Hello".

use fcgi_shim::{Body, RequestExt};
use http::{Request, Response};

// Several worker threads on musl's malloc would queue on its one lock; this per-thread
// cache in front of it keeps them apart (see `fcgi_shim::ThreadCache`).
#[global_allocator]
static ALLOC: fcgi_shim::ThreadCache = fcgi_shim::ThreadCache::new();

fn hello(req: Request<Body>) -> Response<String> {
    Response::new(format!(
        "Hello from {}{}\n",
        req.script_name(),
        req.uri().path()
    ))
}

fn main() -> Result<(), fcgi_shim::Error> {
    fcgi_shim::run(hello)
}
