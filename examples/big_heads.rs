// A test fixture for tests/servers.rs and tests/apache.rs (large response heads,
// X-Sendfile, X-Accel-Redirect), not an example to copy: it hands a path the client
// chose to the web server's X-Sendfile.
//
// Paths:
// - /head?name=N&size=S&count=C: C headers (N-0, N-1, ... when C > 1; `set-cookie`
//   repeats itself, with values c0=vvv..., c1=vvv...), each value S bytes long;
// - /sendfile?path=P: `X-Sendfile: P` (lighttpd, Apache mod_xsendfile);
// - /accel?uri=U: `X-Accel-Redirect: U` (nginx);
// every answer's body is `pid=PID served=N path=PATH`, so a test sees which process
// answered and that it goes on serving.

use std::sync::atomic::{AtomicU64, Ordering};

use fcgi_shim::Body;
use http::{HeaderName, HeaderValue, Request, Response};

static SERVED: AtomicU64 = AtomicU64::new(0);

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn app(req: Request<Body>) -> Response<String> {
    let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let body = format!("pid={} served={served} path={path}\n", std::process::id());
    let mut r = Response::new(body);
    let h = r.headers_mut();
    let value = |name: &str| param(&query, name).and_then(|v| HeaderValue::from_str(v).ok());
    match path.as_str() {
        "/head" => {
            // At most 4 MiB a header and 64 MiB in all.
            let size = param(&query, "size")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100usize)
                .min(4 << 20);
            let count = param(&query, "count")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1usize)
                .min((64 << 20) / size.max(1));
            let name = param(&query, "name").unwrap_or("x-big");
            for i in 0..count {
                let (n, v) = if name == "set-cookie" {
                    let p = format!("c{i}=");
                    let fill = size.saturating_sub(p.len());
                    (name.to_owned(), format!("{p}{}", "v".repeat(fill)))
                } else if count > 1 {
                    (format!("{name}-{i}"), "v".repeat(size))
                } else {
                    (name.to_owned(), "v".repeat(size))
                };
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(n.as_bytes()),
                    HeaderValue::from_str(&v),
                ) {
                    h.append(n, v);
                }
            }
        }
        "/sendfile" => {
            if let Some(v) = value("path") {
                h.insert("x-sendfile", v);
            }
        }
        "/accel" => {
            if let Some(v) = value("uri") {
                h.insert("x-accel-redirect", v);
            }
        }
        _ => {}
    }
    r
}

fn main() -> Result<(), fcgi_shim::Error> {
    fcgi_shim::run(app)
}
