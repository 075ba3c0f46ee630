use fcgi_shim::Body;
use http::{Request, Response, header};

fn hello(_req: Request<Body>) -> Response<&'static str> {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .body("Hello World\n")
        .unwrap()
}

fn main() -> Result<(), fcgi_shim::Error> {
    fcgi_shim::run(hello)
}
