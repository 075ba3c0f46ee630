// The smallest fcgi-shim app: upload the binary as public_html/mysite.fcgi with an
// .htaccess from htaccess/, and every URL answers "Hello".

use fcgi_shim::{Body, RequestExt};
use http::{Request, Response};

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
