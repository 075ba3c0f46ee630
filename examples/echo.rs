// A diagnostic app: answers every request with JSON describing how it arrived (mode,
// mount prefix, app-relative path, headers, a hash of the body). The integration tests
// use it, and it is what to upload first when checking a new host.
//
// Paths: /status/NNN, /redirect, /hop-by-hop[?keep=1], /echo-body,
// /stream?chunks=N&size=S (S at most 16 MiB)[&delay_ms=D][&fail_after=K][&length=CONTENT_LENGTH],
// /cookies, /panic, /sleep?ms=N, /log; anything else echoes.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fcgi_shim::{Body, BoxBody, RequestExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

static SERVED: AtomicU64 = AtomicU64::new(0);

fn query_param(query: &str, name: &str) -> Option<u64> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

fn json_response(status: StatusCode, v: Value) -> Response<BoxBody> {
    let mut r = Response::new(BoxBody::new(format!("{v}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn describe(req: &Request<Body>, served: u64, body_len: u64, body_sha: String) -> Value {
    let ctx = req.context();
    let mut headers = Map::new();
    for name in req.headers().keys() {
        let joined = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        headers.insert(name.as_str().to_owned(), Value::String(joined));
    }
    json!({
        "mode": ctx.map_or("unknown", |c| c.mode().as_str()),
        "method": req.method().as_str(),
        "script_name": req.script_name(),
        "path_info": ctx.map(|c| String::from_utf8_lossy(c.path_info()).into_owned()).unwrap_or_default(),
        "query": ctx.map_or("", |c| c.query_string()),
        "uri": req.uri().to_string(),
        "original_uri": ctx.and_then(|c| c.original_uri()),
        "headers": headers,
        "body_len": body_len,
        "body_sha256": body_sha,
        "remote_addr": req.remote_addr().map(|a| a.to_string()),
        "https": req.is_https(),
        "remote_user": req.remote_user(),
        "pid": std::process::id(),
        "served": served,
        "role": ctx.map(|c| format!("{:?}", c.role())),
        "mount_source": ctx.map(|c| format!("{:?}", c.mount_source())),
        // Every CGI variable the web server sent, to diagnose a new host.
        "vars": ctx.map(|c| c.vars().iter().map(|(k, v)| {
            (String::from_utf8_lossy(k).into_owned(), Value::String(String::from_utf8_lossy(v).into_owned()))
        }).collect::<Map<String, Value>>()),
        // httpoxy: a client's `Proxy:` header must never show up here.
        "env_http_proxy": std::env::var("HTTP_PROXY").ok(),
    })
}

fn echo(mut req: Request<Body>) -> Response<BoxBody> {
    let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();

    // /log logs a line, with the request body (if any) in it: what an app logs often
    // carries what a client sent.
    let mut note = String::new();
    if path == "/log" {
        let _ = req.body_mut().take(4096).read_to_string(&mut note);
    }

    if path == "/panic" {
        panic!("the /panic route panics on purpose");
    }
    if path == "/echo-body" {
        // Streams the request body straight back.
        let mut body = std::mem::take(req.body_mut());
        let mut r = Response::new(BoxBody::new(fcgi_shim::stream(move |w| {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = body.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                w.write_all(&buf[..n])?;
            }
        })));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return r;
    }
    if path == "/stream" {
        let chunks = query_param(&query, "chunks").unwrap_or(3);
        // Each chunk is allocated: at most 16 MiB, so a public URL cannot make this
        // app ask for more memory than there is (the allocation failure aborts the
        // process).
        let size = query_param(&query, "size").unwrap_or(16).min(16 << 20) as usize;
        let delay = query_param(&query, "delay_ms").unwrap_or(0);
        // A stream that fails after this many chunks (a file that could not be read to
        // its end, say).
        let fail_after = query_param(&query, "fail_after");
        let mut r = Response::new(BoxBody::new(fcgi_shim::stream(move |w| {
            for i in 0..chunks {
                if fail_after == Some(i) {
                    return Err(std::io::Error::other("the stream fails on purpose"));
                }
                if i > 0 && delay > 0 {
                    std::thread::sleep(Duration::from_millis(delay));
                }
                let chunk = vec![b'a' + (i % 26) as u8; size];
                w.write_all(&chunk)?;
                w.flush()?;
            }
            Ok(())
        })));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        // A Content-Length that need not match what the stream writes.
        if let Some(n) = query_param(&query, "length") {
            r.headers_mut().insert(header::CONTENT_LENGTH, n.into());
        }
        return r;
    }

    // Everything else reads and hashes the body, then describes the request.
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match req.body_mut().read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) => {
                // A chunked body past FCGI_MAX_BODY has its own kind.
                let status = match e.kind() {
                    std::io::ErrorKind::FileTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                    _ => StatusCode::BAD_REQUEST,
                };
                return json_response(status, json!({ "error": format!("reading the body: {e}") }));
            }
        }
    }
    let sha: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let info = describe(&req, served, len, sha);

    if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        return json_response(status, info);
    }
    match path.as_str() {
        "/redirect" => {
            let target = req
                .context()
                .map(|c| c.url_for("/landed"))
                .unwrap_or_else(|| "/landed".to_owned());
            let mut r = json_response(StatusCode::FOUND, info);
            if let Ok(v) = HeaderValue::from_str(&target) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        "/cookies" => {
            let mut r = json_response(StatusCode::OK, info);
            r.headers_mut().append(
                header::SET_COOKIE,
                HeaderValue::from_static("first=1; Path=/"),
            );
            r.headers_mut().append(
                header::SET_COOKIE,
                HeaderValue::from_static("second=2; Path=/"),
            );
            r
        }
        "/hop-by-hop" => {
            // Headers an app should not send (the framing and the connection belong to
            // whoever speaks HTTP), and a header value that is not UTF-8.
            let mut r = json_response(StatusCode::OK, info);
            let h = r.headers_mut();
            if query_param(&query, "keep") == Some(1) {
                // A Content-Length that is not the body's, beside the Transfer-Encoding:
                // neither may frame the response on a kept-alive connection.
                h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
            } else {
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            h.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
            h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
            if let Ok(v) = HeaderValue::from_bytes(b"caf\xe9") {
                h.insert("x-latin1", v);
            }
            r
        }
        "/sleep" => {
            let ms = query_param(&query, "ms").unwrap_or(1000);
            std::thread::sleep(Duration::from_millis(ms));
            json_response(StatusCode::OK, info)
        }
        "/log" => {
            if note.is_empty() {
                log::warn!("echo: /log was requested (a warning on purpose)");
            } else {
                log::warn!("echo: /log was requested (a warning on purpose): {note}");
            }
            json_response(StatusCode::OK, info)
        }
        _ => json_response(StatusCode::OK, info),
    }
}

/// In the FastCGI authorizer role, a 200 passes `Variable-*` headers to the web
/// server (and nothing else): show that.
fn app(req: Request<Body>) -> Response<BoxBody> {
    let authorizer = req
        .context()
        .is_some_and(|c| c.role() == fcgi_shim::Role::Authorizer);
    let mut r = echo(req);
    if authorizer {
        r.headers_mut()
            .insert("variable-echo-role", HeaderValue::from_static("Authorizer"));
        r.headers_mut()
            .insert("x-not-a-variable", HeaderValue::from_static("dropped"));
    }
    r
}

// Several worker threads on musl's malloc would queue on its one lock; this per-thread
// cache in front of it keeps them apart (see `fcgi_shim::ThreadCache`).
#[global_allocator]
static ALLOC: fcgi_shim::ThreadCache = fcgi_shim::ThreadCache::new();

fn main() -> Result<(), fcgi_shim::Error> {
    fcgi_shim::run(app)
}
