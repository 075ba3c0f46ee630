// `http::Response` to a CGI response (`Status:` + headers + body), validated, streamed;
// and the handler call around it, with panics turned into 500s.

use std::any::Any;
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, Read, Write};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use http::{Request, Response, StatusCode};

use crate::body::Body;
use crate::context::RequestExt;
use crate::record::Role;

/// A response body: bytes known up front, or a stream written as it is produced.
///
/// Implemented for `Vec<u8>`, `String`, `&'static str`, `&'static [u8]`, `Cow`,
/// `bytes::Bytes` and `()`; [`stream`] makes a body from a closure that writes it,
/// [`ReaderBody`] one from any `Read`, and [`BoxBody`] erases the type so one handler
/// can return different kinds.
pub trait ResponseBody {
    /// The length, when known before writing; used for `Content-Length`.
    fn len_hint(&self) -> Option<u64> {
        None
    }

    /// Writes the body. Under FastCGI each write goes out in `FCGI_STDOUT` records;
    /// small writes are coalesced, and `flush` sends what is buffered at once.
    fn write_to(self, out: &mut dyn Write) -> io::Result<()>;
}

macro_rules! bytes_body {
    ($($t:ty),*) => {$(
        impl ResponseBody for $t {
            fn len_hint(&self) -> Option<u64> {
                Some(AsRef::<[u8]>::as_ref(self).len() as u64)
            }
            fn write_to(self, out: &mut dyn Write) -> io::Result<()> {
                out.write_all(AsRef::<[u8]>::as_ref(&self))
            }
        }
    )*};
}
bytes_body!(
    Vec<u8>,
    String,
    &'static str,
    &'static [u8],
    Cow<'static, [u8]>,
    bytes::Bytes
);

impl ResponseBody for Cow<'static, str> {
    fn len_hint(&self) -> Option<u64> {
        Some(self.len() as u64)
    }
    fn write_to(self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(self.as_bytes())
    }
}

impl ResponseBody for () {
    fn len_hint(&self) -> Option<u64> {
        Some(0)
    }
    fn write_to(self, _: &mut dyn Write) -> io::Result<()> {
        Ok(())
    }
}

/// A body written by a closure as it is produced; see [`stream`].
pub struct Streaming<F>(F);

/// A streamed body: `f` gets a writer and writes the body piece by piece. Call
/// `flush()` to push what is written so far to the client (server-sent events,
/// progress output); otherwise output is sent in efficient chunks.
///
/// - When the client or the web server goes away, a write or flush fails: return the
///   error (`?`) and the request ends there.
/// - A stream holds its serving thread for as long as it runs (one thread per process
///   under a web server, unless `FCGI_THREADS` says more).
/// - Web servers may hold output back: a `text/event-stream` response gets
///   `X-Accel-Buffering: no`, which nginx obeys; mod_fcgid passes output on in 64 KiB
///   pieces unless its `FcgidOutputBufferSize` is lowered; mod_fastcgi needs
///   `-flush`, and Apache `mod_proxy_fcgi` `flushpackets=on`.
///
/// ```
/// let body = fcgi_shim::stream(|w| {
///     for i in 0..3 {
///         writeln!(w, "line {i}")?;
///         w.flush()?;
///     }
///     Ok(())
/// });
/// let resp = http::Response::new(body);
/// # let _ = resp;
/// ```
pub fn stream<F>(f: F) -> Streaming<F>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    Streaming(f)
}

impl<F> ResponseBody for Streaming<F>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    fn write_to(self, out: &mut dyn Write) -> io::Result<()> {
        (self.0)(out)
    }
}

/// A body copied from a reader (a file, a pipe), with an optional known length.
pub struct ReaderBody<R> {
    reader: R,
    len: Option<u64>,
}

impl<R: Read> ReaderBody<R> {
    /// A body read from `reader` to its end; `len`, when known, becomes the
    /// `Content-Length` (the reader must then give exactly that many bytes).
    pub fn new(reader: R, len: Option<u64>) -> ReaderBody<R> {
        ReaderBody { reader, len }
    }
}

impl<R: Read> ResponseBody for ReaderBody<R> {
    fn len_hint(&self) -> Option<u64> {
        self.len
    }
    fn write_to(mut self, out: &mut dyn Write) -> io::Result<()> {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match self.reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            out.write_all(&buf[..n])?;
        }
    }
}

type WriteFn = Box<dyn FnOnce(&mut dyn Write) -> io::Result<()> + Send>;

/// Any [`ResponseBody`] behind one type, so one handler can answer with bytes on one
/// path and a stream on another: `BoxBody::new("text")`, `BoxBody::new(stream(...))`.
pub struct BoxBody {
    len: Option<u64>,
    write: WriteFn,
}

impl BoxBody {
    /// Boxes `body`, keeping its length hint.
    pub fn new<B: ResponseBody + Send + 'static>(body: B) -> BoxBody {
        BoxBody {
            len: body.len_hint(),
            write: Box::new(move |w| body.write_to(w)),
        }
    }
}

impl ResponseBody for BoxBody {
    fn len_hint(&self) -> Option<u64> {
        self.len
    }
    fn write_to(self, out: &mut dyn Write) -> io::Result<()> {
        (self.write)(out)
    }
}

impl fmt::Debug for BoxBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxBody").field("len", &self.len).finish()
    }
}

/// A web app: turns a request into a response. Implemented for every
/// `Fn(Request<Body>) -> Response<B>` that can be shared across threads.
pub trait Handler: Send + Sync + 'static {
    /// The response body type.
    type Body: ResponseBody;
    /// Answers one request (on any of the serving threads).
    fn call(&self, req: Request<Body>) -> Response<Self::Body>;
}

impl<F, B> Handler for F
where
    F: Fn(Request<Body>) -> Response<B> + Send + Sync + 'static,
    B: ResponseBody,
{
    type Body = B;
    fn call(&self, req: Request<Body>) -> Response<B> {
        self(req)
    }
}

/// Where a response goes: stdout under CGI, `FCGI_STDOUT` records under FastCGI.
pub(crate) trait Sink: Write {
    /// True once the web server aborted the request or went away: stop writing.
    fn gone(&self) -> bool;
    /// A descriptor that becomes readable when the peer may have aborted or gone (for
    /// an async app that is waiting on something else).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    fn watch_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// After `watch_fd` turned readable: looks, without blocking, at what arrived.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    fn check(&mut self) -> Check {
        Check::Stuck
    }
}

/// What a non-blocking look at the peer found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Aborted or disconnected.
    Gone,
    /// Nothing more to read now: wait for readiness again.
    Drained,
    /// Read something and handled it; look again.
    Progress,
    /// What is next is the request body, for the app to read: stop watching.
    Stuck,
    /// The peer shut its sending side after the whole request (`shutdown(SHUT_WR)` on
    /// a Unix socket, where a close shows as a hang-up too) and can still read the
    /// answer: nothing more to watch; a failed write says whether it went away.
    HalfClosed,
}

/// A buffered byte stream as a [`Sink`] (stdout under CGI, the socket under SCGI):
/// remembers a failed write, which means the peer went away.
pub(crate) struct WriteSink<W: Write> {
    w: io::BufWriter<W>,
    failed: bool,
    watch: Option<std::os::fd::RawFd>,
}

impl<W: Write> WriteSink<W> {
    pub fn new(w: W) -> WriteSink<W> {
        WriteSink {
            w: io::BufWriter::with_capacity(32 * 1024, w),
            failed: false,
            watch: None,
        }
    }

    /// The writer under the buffer.
    pub fn get_mut(&mut self) -> &mut W {
        self.w.get_mut()
    }

    /// The socket to watch for the peer going away (SCGI).
    pub fn watching(mut self, fd: std::os::fd::RawFd) -> WriteSink<W> {
        self.watch = Some(fd);
        self
    }
}

impl<W: Write> Write for WriteSink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.write(buf).inspect_err(|_| self.failed = true)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.w.write_all(buf).inspect_err(|_| self.failed = true)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush().inspect_err(|_| self.failed = true)
    }
}

impl<W: Write> Sink for WriteSink<W> {
    fn gone(&self) -> bool {
        self.failed
    }
    fn watch_fd(&self) -> Option<std::os::fd::RawFd> {
        self.watch
    }
    fn check(&mut self) -> Check {
        self.watch.map_or(Check::Stuck, crate::sys::peek_check)
    }
}

/// How a request ended, for `appStatus` and for deciding whether the connection lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A complete response was written.
    Complete,
    /// The app failed before its response began (a panic, a bad head): a complete 500
    /// was written in its place.
    AppFailed,
    /// The head went out, then the body failed (an error or a panic while streaming):
    /// the response is incomplete. It is ended so that the reader can tell: no
    /// END_REQUEST on FastCGI, no last chunk on HTTP, and the connection closes.
    Cut,
    /// As `Cut`, for a body that ended short of the `Content-Length` its head declared
    /// (it failed, or it was shorter): the length already tells the web server and the
    /// client that the response is incomplete, so a FastCGI connection may end it with
    /// END_REQUEST where that serves the web server better than a close (see
    /// `conn::ends_short`).
    CutShort,
    /// The web server aborted the request or the connection broke.
    Gone,
}

impl Outcome {
    /// A cut response: [`Outcome::CutShort`] when the head declared the body's length.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn cut(declared: Option<u64>) -> Outcome {
        if declared.is_some() {
            Outcome::CutShort
        } else {
            Outcome::Cut
        }
    }

    /// The response went out incomplete ([`Outcome::Cut`] or [`Outcome::CutShort`]).
    pub(crate) fn is_cut(self) -> bool {
        matches!(self, Outcome::Cut | Outcome::CutShort)
    }
}

/// A response header that would split or corrupt the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BadHead {
    /// A header name or value with CR, LF or NUL, which would split the head.
    Header(String),
    /// A 1xx status as the final answer: CGI has no interim responses, and a web
    /// server would send it as the response, with no final one after it.
    Interim(StatusCode),
    /// A status of 600 or more, which `http` allows but HTTP does not (RFC 9110 15:
    /// 100 to 599); web servers pass it on or refuse it, each their own way.
    OutOfRange(StatusCode),
    /// A `Content-Length` that is not a number of digits, or two that differ: a web
    /// server or client would frame the body differently from us.
    Length(String),
}

impl fmt::Display for BadHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadHead::Header(name) => write!(
                f,
                "response header {name:?} contains CR, LF or NUL; refusing to send it"
            ),
            BadHead::Length(value) => write!(
                f,
                "response header content-length {value:?} is not one length in digits; refusing to send it"
            ),
            BadHead::Interim(status) => write!(
                f,
                "the response's status is {status}, an interim (1xx) status, which cannot be the final answer"
            ),
            BadHead::OutOfRange(status) => write!(
                f,
                "the response's status is {}, outside HTTP's 100 to 599",
                status.as_u16()
            ),
        }
    }
}

fn has_forbidden(b: &[u8]) -> bool {
    b.iter().any(|&c| c == b'\r' || c == b'\n' || c == 0)
}

/// Appends `n` in decimal (no allocation, unlike `to_string`).
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Hop-by-hop headers (RFC 9110 7.6.1) an app's response may carry but that belong to
/// whoever speaks HTTP to the client: left out of the CGI/FastCGI head, and so out of
/// what `--http` sends (`Connection` is handled on its own: a `close` in it is kept).
pub(crate) const HOP_BY_HOP: [&str; 6] = [
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Encodes the CGI response head: `Status:`, every header (repeats kept, bytes as
/// given) but the hop-by-hop ones ([`HOP_BY_HOP`]; of `Connection`, only a `close`),
/// `Content-Length` when the length is known and the app set none, and the
/// blank line. A `Location` on a 200 becomes a 302, as CGI defines a bare `Location`
/// (and so the web server never turns it into an internal redirect). In the
/// authorizer role a 200 carries only the `Variable-*` headers, which is all the web
/// server reads.
///
/// Returns the length the head declares for the body (see [`Declared`]): the app's
/// `Content-Length`, else the one added from `body_len`; `None` with none, or with a
/// `Transfer-Encoding` from the app.
pub(crate) fn encode_head(
    parts: &http::response::Parts,
    body_len: Option<u64>,
    role: Role,
    out: &mut Vec<u8>,
) -> Result<Option<u64>, BadHead> {
    let status = sent_status(parts);
    if status.is_informational() {
        return Err(BadHead::Interim(status));
    }
    if status.as_u16() > 599 {
        return Err(BadHead::OutOfRange(status));
    }
    let authorized = role == Role::Authorizer && status == StatusCode::OK;
    out.extend_from_slice(b"Status: ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    // What the app said of the body's length, seen on the way through the headers
    // (cheaper than looking them up: each look-up hashes the name).
    let mut app_length: Option<u64> = None;
    let mut app_te = false;
    // A server-sent-events stream, and whether the app said how nginx is to buffer it.
    let mut event_stream = false;
    let mut accel_buffering = false;
    // Where the app's Content-Length lines start in `out`: with a Transfer-Encoding
    // they are taken out again (RFC 9112 6.1: never both).
    let mut length_lines: Vec<usize> = Vec::new();
    // The app asked for the client's connection to be closed after this response.
    let mut close = false;
    for (name, value) in &parts.headers {
        let is_length = name == http::header::CONTENT_LENGTH;
        // The same length set twice goes out once: two lines read as the list `6, 6`,
        // which is no length (RFC 9110 8.6), and nginx refuses a repeated one.
        let mut repeated = false;
        if is_length {
            // Digits only (no sign, no list), and one length however often it is set.
            let n = std::str::from_utf8(value.as_bytes())
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match (n, app_length) {
                (Some(n), None) => app_length = Some(n),
                (Some(n), Some(m)) if n == m => repeated = true,
                _ => {
                    return Err(BadHead::Length(
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    ));
                }
            }
        } else if name == http::header::TRANSFER_ENCODING {
            app_te = true;
        } else if name == http::header::CONTENT_TYPE {
            event_stream = value
                .as_bytes()
                .get(..17)
                .is_some_and(|t| t.eq_ignore_ascii_case(b"text/event-stream"));
        } else if name.as_str() == "x-accel-buffering" {
            accel_buffering = true;
        }
        if repeated {
            continue;
        }
        if authorized && !name.as_str().starts_with("variable-") {
            continue;
        }
        if (status == StatusCode::NO_CONTENT || status == StatusCode::RESET_CONTENT) && is_length {
            // RFC 9110 8.6: never on a 204 (axum sets one from the body it drops); a
            // 205 gets `Content-Length: 0` below.
            continue;
        }
        if status == StatusCode::NOT_MODIFIED && is_length && app_length == Some(0) {
            // A 304 may carry the length a 200 would have had (RFC 9110 8.6), but the
            // 0 axum sets from the empty body it was built with is not that length,
            // and would tell a cache the resource is empty (hyper leaves it out too).
            continue;
        }
        if name.as_str() == "status" {
            // CGI reads a `Status` header as the status line: one set by the app would
            // override the status it returned, so it is left out.
            log::debug!("dropping a `status` header from the response (the status is {status})");
            continue;
        }
        if name == http::header::CONNECTION {
            // The connection is the web server's: only a request to close it is passed
            // on (Apache honours it, nginx ignores it, `--http` closes).
            if value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                close = true;
            } else {
                log::debug!("dropping a `connection` header from the response (hop-by-hop)");
            }
            continue;
        }
        if HOP_BY_HOP.contains(&name.as_str()) {
            // RFC 3875 6.3.4: how the response reaches the client is the web server's
            // to say. mod_fcgid passed an app's `Transfer-Encoding: chunked` to the
            // client without chunking the body: a malformed response.
            log::debug!("dropping a `{name}` header from the response (hop-by-hop)");
            continue;
        }
        if has_forbidden(name.as_str().as_bytes()) || has_forbidden(value.as_bytes()) {
            return Err(BadHead::Header(name.as_str().to_owned()));
        }
        if is_length {
            length_lines.push(out.len());
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if app_te {
        for &at in length_lines.iter().rev() {
            if let Some(end) = out[at..].windows(2).position(|w| w == b"\r\n") {
                out.drain(at..at + end + 2);
            }
        }
    }
    if close && !authorized {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    if event_stream && !accel_buffering && !authorized {
        // Server-sent events are meant to arrive as they are sent: nginx holds a
        // FastCGI or SCGI response in its buffers unless this says otherwise (it does
        // not pass the header on). The app's own X-Accel-Buffering wins.
        out.extend_from_slice(b"X-Accel-Buffering: no\r\n");
    }
    let bodyless = has_no_body(status);
    // RFC 9110 15.3.6: a 205 has no content, and a length of 0 says so.
    let reset = status == StatusCode::RESET_CONTENT;
    if let Some(len) = if reset { Some(0) } else { body_len } {
        if !authorized && !app_te && (reset || (!bodyless && app_length.is_none())) {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, len);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(if app_te {
        None
    } else {
        app_length.or(body_len)
    })
}

/// The status the head carries: the app's, except that a `Location` on a 200 makes it
/// a 302. Whether the body is sent follows this status, not the app's.
fn sent_status(parts: &http::response::Parts) -> StatusCode {
    if parts.status == StatusCode::OK && parts.headers.contains_key(http::header::LOCATION) {
        StatusCode::FOUND
    } else {
        parts.status
    }
}

/// Holds a body to the length its head declared, as hyper and Go's net/http do: bytes
/// past it are left out (they would be read as the start of the next response on a
/// kept-alive connection), and the writer that tries gets an error so it stops.
pub(crate) struct Declared<'a> {
    out: &'a mut dyn Sink,
    declared: u64,
    left: u64,
    over: bool,
}

impl<'a> Declared<'a> {
    pub(crate) fn new(out: &'a mut dyn Sink, declared: u64) -> Declared<'a> {
        Declared {
            out,
            declared,
            left: declared,
            over: false,
        }
    }

    /// True when the body tried to pass its declared length; logs it. The response
    /// went out whole (to its declared length) all the same.
    pub(crate) fn was_over(&self) -> bool {
        if self.over {
            log_long_body("", self.declared);
        }
        self.over
    }

    /// True when the body ended short of its declared length; logs it. The response
    /// is then incomplete, and the connection must say so.
    pub(crate) fn was_short(&self) -> bool {
        if self.left > 0 {
            log_short_body("", self.declared - self.left, self.declared);
        }
        self.left > 0
    }
}

/// A body that failed (or panicked) once its whole declared length was written.
pub(crate) fn log_failed_after_whole(why: &str, declared: u64) {
    log::error!(
        "the response body failed after its whole Content-Length ({declared}) was written: {why}; the response is complete"
    );
}

pub(crate) fn log_long_body(what: &str, declared: u64) {
    log::error!(
        "{what}the response body is longer than its Content-Length ({declared}); the rest was left out"
    );
}

pub(crate) fn log_short_body(what: &str, sent: u64, declared: u64) {
    log::error!(
        "{what}the response body ended after {sent} of the {declared} bytes its Content-Length declares; response cut short"
    );
}

impl Sink for Declared<'_> {
    fn gone(&self) -> bool {
        self.out.gone()
    }
    fn watch_fd(&self) -> Option<std::os::fd::RawFd> {
        self.out.watch_fd()
    }
    fn check(&mut self) -> Check {
        self.out.check()
    }
}

impl Write for Declared<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let n = buf.len() as u64;
        if n > self.left {
            // `left` < `n` <= usize::MAX, so the cast is exact.
            self.out.write_all(&buf[..self.left as usize])?;
            self.left = 0;
            self.over = true;
            return Err(io::Error::other(
                "the response body is longer than its Content-Length",
            ));
        }
        self.out.write_all(buf)?;
        self.left -= n;
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// 204, 205 and 304 have no body (web servers drop what follows the head of a 204
/// or 304; RFC 9110 15.3.6 forbids one on a 205).
fn has_no_body(status: StatusCode) -> bool {
    status == StatusCode::NO_CONTENT
        || status == StatusCode::RESET_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// Whether the body follows the head: not for HEAD, not after 204 or 304, and not
/// after an authorizer's 200, which is the `Variable-*` headers only. An authorizer's
/// 302 (from `Location`) goes out whole.
pub(crate) fn body_is_sent(parts: &http::response::Parts, role: Role, head_only: bool) -> bool {
    let status = sent_status(parts);
    !(head_only || has_no_body(status) || (role == Role::Authorizer && status == StatusCode::OK))
}

/// A short plain-text response for errors we answer ourselves.
pub(crate) fn error_head_and_body(status: StatusCode) -> Vec<u8> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = format!("{} {}\n", status.as_u16(), reason);
    format!(
        "Status: {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{}",
        status.as_u16(),
        reason,
        body.len(),
        body
    )
    .into_bytes()
}

/// Writes an error response we generate ourselves (not flushed).
pub(crate) fn send_error(status: StatusCode, out: &mut dyn Sink) -> Outcome {
    let bytes = error_head_and_body(status);
    match out.write_all(&bytes) {
        Ok(()) => Outcome::Complete,
        Err(_) => Outcome::Gone,
    }
}

/// Writes `resp` to `out` without the final flush. Never panics: a panicking body ends
/// the response early.
pub(crate) fn send<B: ResponseBody>(
    resp: Response<B>,
    head_only: bool,
    role: Role,
    out: &mut dyn Sink,
) -> Outcome {
    let (parts, body) = resp.into_parts();
    // The head is encoded into a buffer kept per thread (one allocation less per
    // response); a head that grew it past 4 KiB gives the memory back afterwards.
    let mut head = HEAD_BUF.take();
    head.clear();
    let len_hint = body.len_hint();
    let encoded = encode_head(&parts, len_hint, role, &mut head);
    let written = encoded.is_ok() && out.write_all(&head).is_ok();
    if head.capacity() <= 4096 {
        HEAD_BUF.set(head);
    }
    let declared = match encoded {
        Ok(d) => d,
        Err(e) => {
            log::error!("{e}; answering 500 instead");
            let _ = send_error(StatusCode::INTERNAL_SERVER_ERROR, out);
            return Outcome::AppFailed;
        }
    };
    if !written {
        return Outcome::Gone;
    }
    if !body_is_sent(&parts, role, head_only) {
        // The caller ends the response (END_REQUEST, or flushing stdout), so a small
        // response leaves in one write.
        return if out.gone() {
            Outcome::Gone
        } else {
            Outcome::Complete
        };
    }
    let Some(declared) = declared else {
        let r = guarded(|| body.write_to(out));
        return body_outcome(r, out);
    };
    let mut held = Declared::new(out, declared);
    let r = guarded(|| body.write_to(&mut held));
    if held.was_over() {
        return if held.gone() {
            Outcome::Gone
        } else {
            Outcome::Complete
        };
    }
    if held.left == 0 && !held.gone() {
        // Every declared byte went out: the response is whole, whatever the body did
        // after (an error or a panic is still logged).
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log_failed_after_whole(&e.to_string(), declared),
            Err(msg) => log_failed_after_whole(&msg, declared),
        }
        return Outcome::Complete;
    }
    match body_outcome(r, &held) {
        Outcome::Complete if held.was_short() => Outcome::CutShort,
        Outcome::Cut => Outcome::CutShort,
        outcome => outcome,
    }
}

/// How a response ended, from how its body's writing ended.
fn body_outcome(r: Result<io::Result<()>, String>, out: &dyn Sink) -> Outcome {
    match r {
        Ok(Ok(())) if out.gone() => Outcome::Gone,
        Ok(Ok(())) => Outcome::Complete,
        Ok(Err(_)) if out.gone() => Outcome::Gone,
        Ok(Err(e)) => {
            log::error!(
                "response body failed after the headers were sent: {e}; response cut short"
            );
            Outcome::Cut
        }
        Err(msg) => {
            log::error!("panic while writing the response body: {msg}; response cut short");
            Outcome::Cut
        }
    }
}

/// A request as log lines name it, `GET /blog/posts/1?x=1`: the method and the URL as
/// the client sent it (`REQUEST_URI`; the app-relative path without it). Kept for the
/// log line a failure may need; formatted only then. Not a clone of the URI: that
/// would cost an allocation per request (sharing its buffer); the context is a
/// counted pointer.
pub(crate) struct RequestLabel {
    method: http::Method,
    ctx: Option<crate::context::Context>,
}

impl RequestLabel {
    pub(crate) fn of<B>(req: &Request<B>) -> RequestLabel {
        RequestLabel {
            method: req.method().clone(),
            ctx: req.context().cloned(),
        }
    }
}

impl fmt::Display for RequestLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uri = match &self.ctx {
            Some(c) => c
                .original_uri()
                .map_or_else(|| String::from_utf8_lossy(c.path_info()), Cow::Borrowed),
            None => Cow::Borrowed(""),
        };
        write!(f, "{} ", self.method)?;
        // The URL is the client's: control characters (a CR or LF forging a log line,
        // terminal escapes) are written escaped.
        for c in uri.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_str(c.encode_utf8(&mut [0; 4]))?;
            }
        }
        Ok(())
    }
}

/// Calls the handler and writes its response; a panic becomes a 500 and one log line.
pub(crate) fn serve<H: Handler + ?Sized>(
    handler: &H,
    req: Request<Body>,
    out: &mut dyn Sink,
) -> Outcome {
    let head_only = req.method() == http::Method::HEAD;
    let role = req.context().map_or(Role::Responder, |c| c.role());
    let what = RequestLabel::of(&req);
    let outcome = match guarded(|| handler.call(req)) {
        Ok(resp) => send(resp, head_only, role, out),
        Err(msg) => {
            log::error!("handler panicked on {what}: {msg}; answered 500");
            match send_error(StatusCode::INTERNAL_SERVER_ERROR, out) {
                Outcome::Gone => Outcome::Gone,
                _ => Outcome::AppFailed,
            }
        }
    };
    if outcome != Outcome::Complete {
        FAILED_ON.set(Some(what));
    }
    outcome
}

/// The request whose response just ended other than complete on this thread (set by
/// [`serve`]), for the log line its connection's failure gets: under a web server
/// every FastCGI request id is 1, which names nothing. Taken once.
pub(crate) fn take_failed_request() -> Option<RequestLabel> {
    FAILED_ON.take()
}

/// Whether the web server variable `name` of the request whose response just ended
/// other than complete on this thread starts with `prefix` (the label stays for
/// [`take_failed_request`]). Read only then, so a request that ends well pays nothing.
pub(crate) fn failed_request_var_starts_with(name: &str, prefix: &[u8]) -> bool {
    FAILED_ON.with(|cell| {
        let label = cell.take();
        let yes = label
            .as_ref()
            .and_then(|l| l.ctx.as_ref())
            .and_then(|c| c.vars().get(name))
            .is_some_and(|v| v.starts_with(prefix));
        cell.set(label);
        yes
    })
}

/// Keeps `what` as the request whose response ended other than complete on this
/// thread (see [`take_failed_request`]).
#[cfg_attr(not(feature = "tower"), allow(dead_code))]
pub(crate) fn set_failed_request(what: RequestLabel) {
    FAILED_ON.set(Some(what));
}

thread_local! {
    static FAILED_ON: Cell<Option<RequestLabel>> = const { Cell::new(None) };
    static HEAD_BUF: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    static IN_GUARD: Cell<bool> = const { Cell::new(false) };
    static PANIC_MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
    /// `PANIC_MESSAGE` holds a message: one load to know, where a look at the message
    /// itself costs a destructor's registration check (it runs twice a request).
    static PANIC_KEPT: Cell<bool> = const { Cell::new(false) };
}

static HOOK: Once = Once::new();

/// Routes panics inside `guarded` to our log line (one line, with the location) and
/// leaves every other panic to the hook that was there before.
pub(crate) fn install_panic_hook() {
    HOOK.call_once(|| {
        let prev = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_GUARD.with(Cell::get) {
                let msg = payload_message(info.payload());
                let text = match info.location() {
                    Some(l) => format!("{msg} (at {}:{})", l.file(), l.line()),
                    None => msg,
                };
                PANIC_MESSAGE.with(|m| *m.borrow_mut() = Some(text));
                PANIC_KEPT.set(true);
            } else {
                prev(info);
            }
        }));
    });
}

fn payload_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Runs `f`, catching a panic and returning its message.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let was = IN_GUARD.with(|g| g.replace(true));
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    IN_GUARD.with(|g| g.set(was));
    match r {
        Ok(v) => {
            log_swallowed_panic();
            Ok(v)
        }
        Err(p) => Err(take_panic_message().unwrap_or_else(|| payload_message(&*p))),
    }
}

/// Logs a panic that happened under a guard but was caught before it reached one: in
/// a task the app spawned (tokio hands it back as a `JoinError`, on the request's
/// thread with a current-thread runtime), or by the app's own `catch_unwind`. The
/// hook kept its message for a guard's line that never came; the default hook would
/// have printed it.
pub(crate) fn log_swallowed_panic() {
    if !PANIC_KEPT.get() {
        return;
    }
    if let Some(msg) = take_panic_message() {
        log::error!("panic caught inside the app (in a task it spawned, say): {msg}");
    }
}

fn take_panic_message() -> Option<String> {
    PANIC_KEPT.set(false);
    PANIC_MESSAGE.with(|m| m.borrow_mut().take())
}

/// A sink that keeps what is written, for unit tests here and in `tower`.
#[cfg(test)]
pub(crate) struct VecSink(pub Vec<u8>);

#[cfg(test)]
impl Write for VecSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl Sink for VecSink {
    fn gone(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn copy(r: &Response<()>) -> Response<()> {
        let mut c = Response::new(());
        *c.status_mut() = r.status();
        *c.headers_mut() = r.headers().clone();
        c
    }

    fn head(r: Response<()>, len: Option<u64>, role: Role) -> Result<String, BadHead> {
        let mut out = Vec::new();
        let (parts, ()) = r.into_parts();
        encode_head(&parts, len, role, &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn decimal_lengths_match_to_string() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            65_535,
            1 << 30,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn repeated_headers_kept_and_length_added() {
        let mut r = Response::new(());
        r.headers_mut()
            .append("set-cookie", HeaderValue::from_static("a=1"));
        r.headers_mut()
            .append("set-cookie", HeaderValue::from_static("b=2"));
        assert_eq!(
            head(copy(&r), Some(5), Role::Responder).unwrap(),
            "Status: 200 OK\r\nset-cookie: a=1\r\nset-cookie: b=2\r\nContent-Length: 5\r\n\r\n"
        );
    }

    /// The app's Content-Length is one length in digits, or the response is refused;
    /// beside a Transfer-Encoding it is left out (RFC 9112 6.1), and the body's length
    /// is then unknown, so nothing is held to it.
    #[test]
    fn app_content_length_is_checked_and_yields_to_transfer_encoding() {
        let with = |values: &[&'static str], te: bool| {
            let mut r = Response::new(());
            for v in values {
                r.headers_mut()
                    .append("content-length", HeaderValue::from_static(v));
            }
            if te {
                r.headers_mut()
                    .insert("transfer-encoding", HeaderValue::from_static("chunked"));
            }
            r.headers_mut()
                .insert("x-after", HeaderValue::from_static("1"));
            let mut out = Vec::new();
            let (parts, ()) = r.into_parts();
            encode_head(&parts, Some(5), Role::Responder, &mut out)
                .map(|declared| (String::from_utf8(out).unwrap(), declared))
        };
        for bad in [
            &["+5"][..],
            &["abc"],
            &[""],
            &["5, 5"],
            &["5", "6"],
            &["0x5"],
        ] {
            assert!(
                matches!(with(bad, false), Err(BadHead::Length(_))),
                "{bad:?}"
            );
        }
        // The same length twice goes out once (two lines read as `5, 5`).
        assert_eq!(
            with(&["5", " 5 "], false).unwrap(),
            (
                "Status: 200 OK\r\ncontent-length: 5\r\nx-after: 1\r\n\r\n".to_owned(),
                Some(5)
            )
        );
        // The Transfer-Encoding itself is left out too (hop-by-hop: the web server
        // frames the body, see `hop_by_hop_headers_are_left_out`), but it still means
        // the app's length is not the body's.
        assert_eq!(
            with(&["2"], true).unwrap(),
            ("Status: 200 OK\r\nx-after: 1\r\n\r\n".to_owned(), None)
        );
    }

    /// Statuses HTTP does not have are refused (the app gets a 500), as interim ones
    /// are: `http` allows 100 to 999, HTTP 100 to 599 (RFC 9110 15).
    #[test]
    fn statuses_outside_http_are_refused() {
        for (code, ok) in [(599, true), (600, false), (999, false), (101, false)] {
            let mut r = Response::new(());
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            let (parts, ()) = r.into_parts();
            let got = encode_head(&parts, Some(0), Role::Responder, &mut Vec::new());
            assert_eq!(got.is_ok(), ok, "{code}: {got:?}");
        }
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::from_u16(600).unwrap();
        let (parts, ()) = r.into_parts();
        let e = encode_head(&parts, None, Role::Responder, &mut Vec::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the response's status is 600, outside HTTP's 100 to 599"
        );
    }

    /// How the response reaches the client is the web server's to say (RFC 3875
    /// 6.3.4): mod_fcgid passed an app's `Transfer-Encoding: chunked` to the client
    /// without chunking the body. Of `Connection`, only a `close` is kept.
    #[test]
    fn hop_by_hop_headers_are_left_out() {
        let with = |headers: &[(&'static str, &'static str)]| {
            let mut r = Response::new(());
            for (n, v) in headers {
                r.headers_mut().append(*n, HeaderValue::from_static(v));
            }
            r.headers_mut()
                .insert("x-after", HeaderValue::from_static("1"));
            head(copy(&r), Some(5), Role::Responder).unwrap()
        };
        assert_eq!(
            with(&[
                ("transfer-encoding", "chunked"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("te", "trailers"),
                ("trailer", "x-sum"),
                ("upgrade", "websocket"),
                ("connection", "keep-alive, upgrade"),
            ]),
            "Status: 200 OK\r\nx-after: 1\r\n\r\n"
        );
        assert_eq!(
            with(&[("Connection", "Keep-Alive"), ("connection", " Close ")]),
            "Status: 200 OK\r\nx-after: 1\r\nConnection: close\r\nContent-Length: 5\r\n\r\n"
        );
        assert_eq!(
            with(&[("keep-alive", "timeout=5")]),
            "Status: 200 OK\r\nx-after: 1\r\nContent-Length: 5\r\n\r\n"
        );
        // The fuzz target's check of the same holds for these heads.
        #[cfg(feature = "fuzzing")]
        crate::fuzzing::response_head(
            200,
            &[
                (b"Transfer-Encoding".to_vec(), b"chunked".to_vec()),
                (b"content-length".to_vec(), b"2".to_vec()),
                (b"connection".to_vec(), b"upgrade, close".to_vec()),
                (b"upgrade".to_vec(), b"h2c".to_vec()),
            ],
        );
    }

    #[test]
    fn location_without_status_is_302() {
        let mut r = Response::new(());
        r.headers_mut()
            .insert("location", HeaderValue::from_static("/x"));
        assert!(
            head(copy(&r), None, Role::Responder)
                .unwrap()
                .starts_with("Status: 302 Found\r\n")
        );
        *r.status_mut() = StatusCode::CREATED;
        assert!(
            head(copy(&r), None, Role::Responder)
                .unwrap()
                .starts_with("Status: 201 Created\r\n")
        );
    }

    #[test]
    fn crlf_and_nul_detected() {
        for bad in [&b"a\r\nX-Injected: 1"[..], b"a\nb", b"a\0b", b"\r"] {
            assert!(has_forbidden(bad));
        }
        assert!(!has_forbidden(b"caf\xe9 \t ok"));
    }

    // `HeaderValue::from_maybe_shared_unchecked` only checks its bytes in debug builds;
    // in release an app can smuggle CR/LF through it, and encode_head must refuse.
    #[cfg(not(debug_assertions))]
    #[test]
    fn crlf_and_nul_refused_in_release_builds() {
        for bad in [&b"a\r\nX-Injected: 1"[..], b"a\nb", b"a\0b"] {
            let mut r = Response::new(());
            let v = unsafe {
                HeaderValue::from_maybe_shared_unchecked(bytes::Bytes::from(bad.to_vec()))
            };
            r.headers_mut().insert("x-bad", v);
            assert!(head(r, None, Role::Responder).is_err());
        }
    }

    #[test]
    fn non_utf8_value_passes_through() {
        let mut r = Response::new(());
        r.headers_mut()
            .insert("x-latin1", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let mut out = Vec::new();
        let (parts, ()) = r.into_parts();
        encode_head(&parts, None, Role::Responder, &mut out).unwrap();
        assert!(out.windows(6).any(|w| w == b"caf\xe9\r\n"));
    }

    #[test]
    fn authorizer_200_keeps_only_variables() {
        let mut r = Response::new(());
        r.headers_mut()
            .insert("variable-user", HeaderValue::from_static("ann"));
        r.headers_mut()
            .insert("x-other", HeaderValue::from_static("1"));
        assert_eq!(
            head(copy(&r), Some(10), Role::Authorizer).unwrap(),
            "Status: 200 OK\r\nvariable-user: ann\r\n\r\n"
        );
        *r.status_mut() = StatusCode::FORBIDDEN;
        assert!(
            head(copy(&r), None, Role::Authorizer)
                .unwrap()
                .contains("x-other: 1")
        );
    }

    #[test]
    fn authorizer_location_is_a_302_with_its_body() {
        let mut r = Response::new("0123456789".to_owned());
        r.headers_mut()
            .insert("location", HeaderValue::from_static("/elsewhere"));
        let mut sink = VecSink(Vec::new());
        assert_eq!(
            send(r, false, Role::Authorizer, &mut sink),
            Outcome::Complete
        );
        assert_eq!(
            String::from_utf8(sink.0).unwrap(),
            "Status: 302 Found\r\nlocation: /elsewhere\r\nContent-Length: 10\r\n\r\n0123456789"
        );
        // A plain 200 stays a head only.
        let r = Response::new("0123456789".to_owned());
        let mut sink = VecSink(Vec::new());
        assert_eq!(
            send(r, false, Role::Authorizer, &mut sink),
            Outcome::Complete
        );
        assert_eq!(String::from_utf8(sink.0).unwrap(), "Status: 200 OK\r\n\r\n");
    }

    #[test]
    fn interim_status_is_refused() {
        for code in [100, 103] {
            let mut r = Response::new(());
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            let e = head(r, Some(3), Role::Responder).unwrap_err();
            assert!(e.to_string().contains("interim"), "{e}");
        }
        // Through `send`: a 500 instead, and the body is not sent.
        let mut r = Response::new("abc".to_owned());
        *r.status_mut() = StatusCode::EARLY_HINTS;
        let mut sink = VecSink(Vec::new());
        assert_eq!(
            send(r, false, Role::Responder, &mut sink),
            Outcome::AppFailed
        );
        let out = String::from_utf8(sink.0).unwrap();
        assert!(out.starts_with("Status: 500 "), "{out}");
        assert!(!out.contains("abc"), "{out}");
    }

    #[test]
    fn a_status_header_from_the_app_is_left_out() {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::OK;
        r.headers_mut()
            .insert("status", HeaderValue::from_static("404 Not Found"));
        r.headers_mut()
            .insert("x-kept", HeaderValue::from_static("1"));
        assert_eq!(
            head(r, Some(0), Role::Responder).unwrap(),
            "Status: 200 OK\r\nx-kept: 1\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn event_streams_ask_nginx_not_to_buffer() {
        let mut r = Response::new(());
        r.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("Text/Event-Stream; charset=utf-8"),
        );
        assert_eq!(
            head(copy(&r), None, Role::Responder).unwrap(),
            "Status: 200 OK\r\ncontent-type: Text/Event-Stream; charset=utf-8\r\nX-Accel-Buffering: no\r\n\r\n"
        );
        // The app's own word stands.
        r.headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("yes"));
        assert!(
            !head(copy(&r), None, Role::Responder)
                .unwrap()
                .contains("X-Accel")
        );
        // Anything else is left alone.
        let mut r = Response::new(());
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("text/plain"));
        assert!(!head(r, None, Role::Responder).unwrap().contains("X-Accel"));
    }

    #[test]
    fn no_content_length_on_a_204() {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::NO_CONTENT;
        r.headers_mut()
            .insert("content-length", HeaderValue::from_static("3"));
        assert_eq!(
            head(copy(&r), Some(3), Role::Responder).unwrap(),
            "Status: 204 No Content\r\n\r\n"
        );
        // A 205 has no content, and says so (RFC 9110 15.3.6).
        *r.status_mut() = StatusCode::RESET_CONTENT;
        assert_eq!(
            head(copy(&r), Some(3), Role::Responder).unwrap(),
            "Status: 205 Reset Content\r\nContent-Length: 0\r\n\r\n"
        );
        // A 304 may carry the length of what a 200 would have sent.
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        assert_eq!(
            head(copy(&r), Some(3), Role::Responder).unwrap(),
            "Status: 304 Not Modified\r\ncontent-length: 3\r\n\r\n"
        );
        // But not the 0 of the empty body it was built with (axum sets one).
        r.headers_mut()
            .insert("content-length", HeaderValue::from_static("0"));
        assert_eq!(
            head(r, Some(0), Role::Responder).unwrap(),
            "Status: 304 Not Modified\r\n\r\n"
        );
    }

    #[test]
    fn no_body_after_204_205_or_304() {
        for code in [204, 205, 304] {
            let mut r = Response::new("not sent".to_owned());
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            let mut sink = VecSink(Vec::new());
            assert_eq!(
                send(r, false, Role::Responder, &mut sink),
                Outcome::Complete
            );
            let out = String::from_utf8(sink.0).unwrap();
            assert!(out.ends_with("\r\n\r\n"), "{code}: {out:?}");
            assert!(!out.contains("not sent"), "{out:?}");
            assert_eq!(
                out.contains("Content-Length"),
                code == 205,
                "{code}: {out:?}"
            );
        }
    }

    #[test]
    fn guarded_catches_and_reports() {
        install_panic_hook();
        let r: Result<(), String> = guarded(|| panic!("boom {}", 7));
        let msg = r.unwrap_err();
        assert!(msg.starts_with("boom 7 (at "), "{msg}");
    }

    /// As hyper and Go's net/http: bytes past the declared Content-Length are left out
    /// (the response is whole to its length); a body that ends short is cut.
    #[test]
    fn bodies_are_held_to_their_content_length() {
        let run = |resp: Response<BoxBody>| {
            let mut out = VecSink(Vec::new());
            let o = send(resp, false, Role::Responder, &mut out);
            (o, String::from_utf8_lossy(&out.0).into_owned())
        };
        let reader = |data: &'static [u8], len| {
            Response::new(BoxBody::new(ReaderBody::new(
                io::Cursor::new(data),
                Some(len),
            )))
        };
        let (o, text) = run(reader(b"1234567890", 4));
        assert_eq!(o, Outcome::Complete);
        assert!(text.ends_with("Content-Length: 4\r\n\r\n1234"), "{text:?}");
        let (o, text) = run(reader(b"12345", 100));
        assert_eq!(o, Outcome::CutShort);
        assert!(text.ends_with("\r\n\r\n12345"), "{text:?}");
        let with_length = |n: &'static str, body: &'static str| {
            let mut r = Response::new(BoxBody::new(body));
            r.headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from_static(n));
            r
        };
        let (o, text) = run(with_length("100", "short"));
        assert_eq!(o, Outcome::CutShort);
        assert!(text.contains("content-length: 100\r\n"), "{text:?}");
        let (o, text) = run(with_length("3", "short"));
        assert_eq!(o, Outcome::Complete);
        assert!(text.ends_with("\r\n\r\nsho"), "{text:?}");
        let (o, text) = run(with_length("5", "short"));
        assert_eq!(o, Outcome::Complete);
        assert!(text.ends_with("\r\n\r\nshort"), "{text:?}");
        // A streamed body with no declared length is not held to anything.
        let (o, text) = run(Response::new(BoxBody::new(stream(|w| {
            w.write_all(b"free")
        }))));
        assert_eq!(o, Outcome::Complete);
        assert!(text.ends_with("\r\n\r\nfree"), "{text:?}");
        // A body that fails is cut; with a declared length, short of it.
        let failing = || {
            BoxBody::new(stream(|w| {
                w.write_all(b"part")?;
                Err(io::Error::other("fails on purpose"))
            }))
        };
        let (o, _) = run(Response::new(failing()));
        assert_eq!(o, Outcome::Cut);
        let mut r = Response::new(failing());
        r.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            HeaderValue::from_static("100"),
        );
        let (o, text) = run(r);
        assert_eq!(o, Outcome::CutShort);
        assert!(text.ends_with("\r\n\r\npart"), "{text:?}");
        // One that fails after its whole declared length went out is whole.
        for n in ["4", "0"] {
            let mut r = Response::new(failing());
            r.headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from_static(n));
            assert_eq!(run(r).0, Outcome::Complete, "Content-Length {n}");
        }
    }

    /// Log lines name the request with the client's URL, control characters escaped
    /// (no forged lines, no terminal escapes).
    #[test]
    fn request_labels_escape_control_characters() {
        let req = crate::request_from_vars(
            [
                ("REQUEST_METHOD", "GET"),
                ("PATH_INFO", "/x"),
                ("REQUEST_URI", "/x?\u{1b}[2J\r\nfcgi[1]: ERROR: forged"),
            ],
            crate::Body::empty(),
        )
        .unwrap();
        assert_eq!(
            RequestLabel::of(&req).to_string(),
            "GET /x?\\u{1b}[2J\\r\\nfcgi[1]: ERROR: forged"
        );
    }
}
