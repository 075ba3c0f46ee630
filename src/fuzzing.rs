// Entry points for the fuzz targets in fuzz/ (feature `fuzzing`): each one runs a real
// code path on arbitrary bytes. Not a stable API.

use std::io::{self, IoSlice, Read};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};

use crate::body::Body;
use crate::config::Config;
use crate::conn::{self, Transport};
use crate::context::{Mode, RequestExt};
use crate::record::{self, Role};
use crate::request::{self, MapSettings};
use crate::response;
use crate::server::{App, SyncApp};
use crate::sys::Wake;
use crate::vars::Vars;

/// Reads come from a byte string in chunks of at most `chunk` bytes; writes are
/// collected. Once the input is used up, a read says "nothing yet" (`WouldBlock`) until
/// the connection waits for more, and end of file after that: like a web server that
/// has sent everything and then closes, so non-blocking looks during a long response do
/// not end the connection early.
struct Mem {
    input: Vec<u8>,
    pos: usize,
    chunk: usize,
    waited: bool,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Transport for Mem {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.input.len() && !buf.is_empty() {
            if !self.waited {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            return Ok(0);
        }
        let n = buf.len().min(self.input.len() - self.pos).min(self.chunk);
        buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut out = self.output.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for b in bufs {
            out.extend_from_slice(b);
            n += b.len();
        }
        Ok(n)
    }
    fn wait(&mut self, writable: bool, _: Option<Duration>, _: bool) -> io::Result<Wake> {
        if !writable && self.pos == self.input.len() {
            self.waited = true;
        }
        Ok(Wake::Ready)
    }
}

/// The app the connection fuzzer talks to: reads the body (or not, by path), answers
/// with a body whose size depends on the path, sometimes streamed, sometimes panicking.
fn app(mut req: Request<Body>) -> Response<response::BoxBody> {
    let path = req.uri().path().to_owned();
    let script = req.script_name().len();
    if path.starts_with("/panic") {
        panic!("fuzz app panics on purpose");
    }
    if path.starts_with("/log") {
        log::error!("fuzz app logs {} bytes of path", path.len());
    }
    let mut got = Vec::new();
    if !path.starts_with("/noread") {
        let _ = req.body_mut().take(1 << 20).read_to_end(&mut got);
    }
    if path.starts_with("/stream") {
        let n = path.len() * 1000;
        return Response::new(response::BoxBody::new(response::stream(move |w| {
            for i in 0..n / 700 {
                w.write_all(&[b'x'; 700])?;
                if i % 7 == 0 {
                    w.flush()?;
                }
            }
            Ok(())
        })));
    }
    Response::new(response::BoxBody::new(format!(
        "{} {} {}",
        script,
        got.len(),
        "y".repeat(path.len() * 100)
    )))
}

/// The default configuration with small request-head limits (4 KiB, 64 variables), so
/// the fuzzers reach them with short inputs.
fn small_limits() -> Config {
    let mut cfg = Config::default();
    cfg.limits.max_params_bytes = 4096;
    cfg.limits.max_params = 64;
    cfg
}

fn quiet_panics() {
    response::install_panic_hook();
    // Our logger, so lines logged during a request are captured into FCGI_STDERR; at
    // error level, so the warnings every malformed input earns do not flood stderr.
    crate::logger::init(log::LevelFilter::Error, crate::config::LogTarget::Stderr);
}

/// Runs one FastCGI connection over `input` (delivered `chunk` bytes per read) and
/// returns everything the connection wrote.
pub fn connection(input: &[u8], chunk: usize, threads: usize) -> Vec<u8> {
    quiet_panics();
    let output = Arc::new(Mutex::new(Vec::new()));
    let t = Mem {
        input: input.to_vec(),
        pos: 0,
        chunk: chunk.max(1),
        waited: false,
        output: output.clone(),
    };
    let cfg = Config {
        max_conns: threads.max(1),
        ..small_limits()
    };
    let cfg = Arc::new(cfg);
    let app: Arc<dyn App> = Arc::new(SyncApp(app));
    conn::serve(t, &*app, &cfg, &mut || {}, None, false);
    let out = output.lock().unwrap_or_else(|p| p.into_inner());
    out.clone()
}

/// The protocol [`exchange`] speaks.
#[derive(Clone, Copy, Debug)]
pub enum Wire {
    /// The `--http` development server (`http1::serve`).
    Http,
    /// One SCGI request (`scgi::serve`).
    Scgi,
}

/// One whole plain-HTTP or SCGI connection on a real socket pair: a client sends
/// `input`, shuts its sending side and reads until the server closes. Returns what the
/// server wrote, the fuzzing app answering (8 MiB at most is kept).
pub fn exchange(input: &[u8], wire: Wire) -> Vec<u8> {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    quiet_panics();
    // The app's panics and every malformed head would be a line on stderr each (the
    // connection target catches such lines in FCGI_STDERR, and covers the logger).
    log::set_max_level(log::LevelFilter::Off);
    crate::sys::ignore_sigpipe();
    let Ok((client, server)) = UnixStream::pair() else {
        return Vec::new();
    };
    let Ok(sender) = client.try_clone() else {
        return Vec::new();
    };
    if server.set_nonblocking(true).is_err() {
        return Vec::new();
    }
    let input = input.to_vec();
    let send = std::thread::spawn(move || {
        let mut sender = sender;
        let _ = sender.write_all(&input);
        let _ = sender.shutdown(std::net::Shutdown::Write);
    });
    let receive = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&client).take(8 << 20).read_to_end(&mut out);
        out
    });
    let mut cfg = small_limits();
    // Nothing here waits on the client (it has sent all there is); the bounds only
    // turn a wait that should not happen into an error rather than a fuzzer timeout.
    let t = Some(Duration::from_secs(2));
    cfg.read_timeout = t;
    cfg.write_timeout = t;
    let io = crate::sockio::SockIo::new(crate::sys::Socket::from_owned(server.into()), t, t);
    let app = SyncApp(app);
    match wire {
        Wire::Http => {
            // A client and a server address as on loopback TCP (the pair has none), so
            // `REMOTE_ADDR`, `SERVER_PORT` and their use are reached.
            let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40_000));
            let local = std::net::SocketAddr::from(([127, 0, 0, 1], 8_000));
            crate::http1::serve(io, Some(peer), Some(local), &app, &cfg, &mut || {})
        }
        Wire::Scgi => crate::scgi::serve(io, &app, &cfg),
    }
    let _ = send.join();
    receive.join().unwrap_or_default()
}

/// Decodes a block of name-value pairs both ways the library does.
pub fn pairs(block: &[u8]) -> usize {
    let mut n = 0;
    let _ = record::parse_pairs(block, |s| {
        assert!(s.name.0 <= s.name.1 && s.name.1 <= s.value.0 && s.value.1 <= block.len());
        n += 1;
        true
    });
    if let Ok(v) = Vars::from_fcgi_params(block.to_vec(), 1000) {
        assert!(v.len() <= n);
    }
    n
}

/// Builds a request from CGI variables (pairs encoded as in FCGI_PARAMS) and checks the
/// invariants every request must hold.
pub fn cgi_request(block: &[u8], forced: Option<&str>) {
    let Ok(vars) = Vars::from_fcgi_params(block.to_vec(), 1000) else {
        return;
    };
    let settings = MapSettings {
        force_script_name: forced.map(str::to_owned),
        exe_name: Some("mysite.fcgi".into()),
        trust_forwarded: forced.is_some_and(|f| f.len() % 2 == 1),
        max_body: None,
    };
    let _ = request::content_length(&vars);
    if let Ok(req) = request::build(vars, Body::empty(), Mode::Cgi, Role::Responder, &settings) {
        let sn = req.script_name();
        assert!(!sn.ends_with('/'), "script name {sn:?} ends with /");
        assert!(sn.is_empty() || sn.starts_with('/'), "script name {sn:?}");
        assert!(req.uri().path().starts_with('/'));
        let ctx = req.context().expect("context");
        let again = request::app_uri(ctx.path_info(), ctx.query_string().as_bytes());
        assert!(again.is_ok());
        // The URI's path is the decoded path, re-encoded or (an encoded slash) as the
        // client sent it: decoding it gives the decoded path back.
        let decoded = crate::mount::percent_decode(req.uri().path().as_bytes());
        let pi = ctx.path_info();
        assert!(
            *decoded == *pi || (decoded.first() == Some(&b'/') && decoded[1..] == *pi),
            "uri {:?} against path_info {:?}",
            req.uri(),
            String::from_utf8_lossy(pi)
        );
    }
}

/// Encodes a response head from arbitrary header bytes: must refuse CR/LF/NUL, never
/// panic.
pub fn response_head(status: u16, headers: &[(Vec<u8>, Vec<u8>)]) {
    let mut r = Response::new(());
    if let Ok(s) = http::StatusCode::from_u16(status) {
        *r.status_mut() = s;
    }
    for (n, v) in headers {
        if let (Ok(n), Ok(v)) = (
            http::header::HeaderName::from_bytes(n),
            http::HeaderValue::from_bytes(v),
        ) {
            r.headers_mut().append(n, v);
        }
    }
    let (parts, ()) = r.into_parts();
    let mut out = Vec::new();
    if response::encode_head(&parts, Some(1), Role::Responder, &mut out).is_ok() {
        let head = &out[..out.len() - 2];
        // Every line of the head is a `name: value` line ending in CRLF.
        assert!(head.ends_with(b"\r\n"));
        for line in head[..head.len() - 2].split(|&b| b == b'\n') {
            assert!(!line.contains(&b'\r') || line.ends_with(b"\r"));
        }
        // No hop-by-hop header (the framing is the web server's), and of `Connection`
        // only a `close`.
        for line in head.split(|&b| b == b'\n').skip(1) {
            let name = line.split(|&b| b == b':').next().unwrap_or(&[]);
            assert!(
                !response::HOP_BY_HOP
                    .iter()
                    .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
            );
            if name.eq_ignore_ascii_case(b"connection") {
                assert_eq!(line, b"Connection: close\r");
            }
        }
        // Never a Content-Length beside a Transfer-Encoding (RFC 9112 6.1).
        if parts.headers.contains_key(http::header::TRANSFER_ENCODING) {
            let lower = head.to_ascii_lowercase();
            assert!(!lower.windows(16).any(|w| w == b"\ncontent-length:"));
        }
    }
}

/// Decodes an SCGI request head (netstring of NUL-separated headers) and, when it is
/// accepted, builds the request from it: bounded by the params limits, never a panic.
pub fn scgi(data: &[u8]) {
    let cfg = small_limits();
    let mut r = data;
    if let Ok(vars) = crate::scgi::read_head(&mut r, &cfg) {
        assert!(vars.len() <= 64 && vars.byte_len() <= 4096);
        assert_eq!(
            vars.iter().next().map(|(n, _)| n),
            Some(&b"CONTENT_LENGTH"[..])
        );
        let _ = request::content_length(&vars);
        let settings = MapSettings::default();
        let _ = request::build(vars, Body::empty(), Mode::Scgi, Role::Responder, &settings);
    }
}
