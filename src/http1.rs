// The plain HTTP/1.1 development server (`--http`): try the app in a browser before
// uploading it. Same request mapping and app; not hardened for the internet.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;

use crate::body::Body;
use crate::config::Config;
use crate::context::Mode;
use crate::mount::{normalize, percent_decode};
use crate::record::Role;
use crate::request;
use crate::response::{self, Outcome, Sink};
use crate::server::App;
use crate::sockio::SockIo;
use crate::vars::Vars;

type Shared = Arc<Mutex<BufReader<SockIo>>>;

fn lock(r: &Shared) -> std::sync::MutexGuard<'_, BufReader<SockIo>> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    /// Chunked: bytes left in the current chunk; `None` before the first size line.
    Chunked(Option<u64>),
    Done,
}

/// The request body, read from the connection's shared buffer.
struct BodyReader {
    r: Shared,
    framing: Arc<Mutex<Framing>>,
    /// `Expect: 100-continue` not answered yet: the first read sends `100 Continue`.
    expect: Option<Expect>,
}

/// An `Expect: 100-continue` waiting for its answer. `100 Continue` goes out when the
/// app first reads the body, as Go's net/http sends it, so that an app that answers
/// without the body (a 413, a 404) spares the client the upload (RFC 9110 10.1.1).
/// Once anything of the response has reached the socket it never does (see
/// `HttpSink::expect`), and a response made before the body was read closes the
/// connection, since the client may or may not send the body then.
#[derive(Clone)]
struct Expect {
    due: Arc<AtomicBool>,
    io: SockIo,
}

impl Expect {
    fn answer(&self) -> io::Result<()> {
        if self.due.swap(false, Ordering::AcqRel) {
            let mut w = self.io.clone();
            w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        Ok(())
    }
}

fn bad(m: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m.to_owned())
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &self.expect {
            e.answer()?;
        }
        let mut f = self.framing.lock().unwrap_or_else(|p| p.into_inner());
        let mut r = lock(&self.r);
        loop {
            match *f {
                Framing::Done | Framing::Length(0) => {
                    *f = Framing::Done;
                    return Ok(0);
                }
                Framing::Length(left) => {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = r.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    *f = Framing::Length(left - n as u64);
                    return Ok(n);
                }
                Framing::Chunked(Some(0)) => {
                    // the CRLF after a chunk
                    let mut crlf = [0u8; 2];
                    r.read_exact(&mut crlf)?;
                    if &crlf != b"\r\n" {
                        return Err(bad("chunk not followed by CRLF"));
                    }
                    *f = Framing::Chunked(None);
                }
                Framing::Chunked(None) => {
                    let line = read_line(&mut *r, 1024)?;
                    let size = chunk_size(&line).ok_or_else(|| bad("bad chunk size"))?;
                    if size == 0 {
                        // Trailers until an empty line (read and dropped): 64 lines at
                        // most, so a client cannot keep the request going forever.
                        let mut lines = 0;
                        while !read_line(&mut *r, 8192)?.is_empty() {
                            lines += 1;
                            if lines > 64 {
                                return Err(bad("more than 64 trailer lines"));
                            }
                        }
                        *f = Framing::Done;
                        return Ok(0);
                    }
                    *f = Framing::Chunked(Some(size));
                    // fall through to read data next turn
                    let want = buf.len().min(usize::try_from(size).unwrap_or(usize::MAX));
                    let n = r.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    *f = Framing::Chunked(Some(size - n as u64));
                    return Ok(n);
                }
                Framing::Chunked(Some(left)) => {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = r.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    *f = Framing::Chunked(Some(left - n as u64));
                    return Ok(n);
                }
            }
        }
    }
}

/// The size on a chunk's first line: 1 to 16 hex digits, then nothing or an extension,
/// which may follow spaces or tabs (RFC 9112 7.1.1: `chunk-size [ BWS ";" ... ]`).
/// Nothing else: no sign, no `0x`, no spaces without the `;`. A lenient reading is how
/// requests get smuggled past a proxy that reads the size differently.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let (size, rest) = line.split_at(digits);
    let ext = rest.iter().position(|&b| b != b' ' && b != b'\t');
    let well_formed = match ext {
        None => rest.is_empty(),
        Some(i) => rest[i] == b';',
    };
    if !(1..=16).contains(&digits) || !well_formed {
        return None;
    }
    std::str::from_utf8(size)
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
}

/// `v` without the spaces and tabs at its ends (optional whitespace, RFC 9110 5.6.3).
fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// Whether a `..` segment of `path` goes above the root (`/a/../..`).
fn climbs_above_root(path: &[u8]) -> bool {
    let mut depth = 0usize;
    for seg in path.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." if depth == 0 => return true,
            b".." => depth -= 1,
            _ => depth += 1,
        }
    }
    false
}

/// RFC 9110 `tchar`: what a header name may hold.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The path and query of an absolute-form request target (`http://host/p?q`); the
/// path is `/` when it has none (`http://host?q` is `/?q`).
fn absolute_form_path(target: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    use std::borrow::Cow;
    let (scheme, authority, rest) = crate::mount::split_absolute(target)?;
    let http = scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https");
    if !http || authority.is_empty() {
        return None;
    }
    Some(match rest.first() {
        Some(b'/') => Cow::Borrowed(rest),
        Some(b'?') => Cow::Owned([&b"/"[..], rest].concat()),
        _ => Cow::Borrowed(b"/"),
    })
}

/// One line without its CRLF (or LF), at most `max` bytes.
fn read_line(r: &mut impl BufRead, max: usize) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let n = r.take(max as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if line.last() != Some(&b'\n') {
        if line.len() <= max {
            // The peer closed in the middle of the line.
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        return Err(bad("line too long"));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(line)
}

struct Head {
    vars: Vars,
    framing: Framing,
    keep_alive: bool,
    http11: bool,
    expect_continue: bool,
}

enum HeadError {
    Closed,
    Bad(StatusCode, String),
}

/// Reads a request head. `head_only` is set once the request line says HEAD, so that
/// a refusal of what follows is sent without a body too (RFC 9110 9.3.2).
fn read_head(
    r: &mut BufReader<SockIo>,
    cfg: &Config,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    head_only: &mut bool,
) -> Result<Head, HeadError> {
    let max = cfg.limits.max_params_bytes;
    // Empty lines before the request line are skipped (RFC 9112 section 2.2).
    let mut blank = 0;
    let line = loop {
        match read_line(r, 16 * 1024) {
            Ok(l) if l.is_empty() && blank < 4 => blank += 1,
            Ok(l) => break l,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(HeadError::Closed),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(HeadError::Bad(StatusCode::REQUEST_TIMEOUT, e.to_string()));
            }
            Err(e) => return Err(HeadError::Bad(StatusCode::URI_TOO_LONG, e.to_string())),
        }
    };
    let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Bad(
            StatusCode::BAD_REQUEST,
            "bad request line".into(),
        ));
    };
    *head_only = method == b"HEAD";
    if target.iter().any(|&b| b < 0x21 || b == 0x7f) {
        return Err(HeadError::Bad(
            StatusCode::BAD_REQUEST,
            "a control character in the request target".into(),
        ));
    }
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        _ => {
            return Err(HeadError::Bad(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "only HTTP/1.0 and 1.1".into(),
            ));
        }
    };
    // The absolute form (`GET http://host/path`), which servers must accept: its path.
    let absolute = absolute_form_path(target);
    let origin: &[u8] = absolute.as_deref().unwrap_or(target);
    if !origin.starts_with(b"/") {
        return Err(HeadError::Bad(
            StatusCode::BAD_REQUEST,
            "target must start with / (or be an absolute http(s) URL)".into(),
        ));
    }
    let (path, query) = match origin.iter().position(|&b| b == b'?') {
        Some(i) => (&origin[..i], &origin[i + 1..]),
        None => (origin, &b""[..]),
    };
    // RFC 9112 3.2: a request target has no fragment.
    if origin.contains(&b'#') {
        return Err(HeadError::Bad(
            StatusCode::BAD_REQUEST,
            "a fragment (#) in the request target".into(),
        ));
    }
    // The path the app sees, as Apache and nginx hand it over: decoded, then its dot
    // segments resolved (`%2e%2e` too), and 400 for one that climbs above the root.
    let decoded = percent_decode(path);
    if climbs_above_root(&decoded) {
        return Err(HeadError::Bad(
            StatusCode::BAD_REQUEST,
            "the path climbs above the root (..)".into(),
        ));
    }
    let path_info = normalize(&decoded);
    let mut vars = Vars::new();
    vars.push(b"GATEWAY_INTERFACE", b"CGI/1.1");
    vars.push(b"SERVER_SOFTWARE", b"fcgi-shim development server");
    vars.push(b"REQUEST_METHOD", method);
    vars.push(b"REQUEST_URI", target);
    vars.push(b"SCRIPT_NAME", b"");
    vars.push(b"PATH_INFO", &path_info);
    vars.push(b"QUERY_STRING", query);
    vars.push(b"SERVER_PROTOCOL", version);
    if let Some(p) = peer {
        vars.push(b"REMOTE_ADDR", p.ip().to_string().as_bytes());
        vars.push(b"REMOTE_PORT", p.port().to_string().as_bytes());
    }
    if let Some(l) = local {
        vars.push(b"SERVER_ADDR", l.ip().to_string().as_bytes());
        vars.push(b"SERVER_PORT", l.port().to_string().as_bytes());
        vars.push(b"SERVER_NAME", l.ip().to_string().as_bytes());
    }
    let mut total = line.len();
    let mut framing = Framing::Length(0);
    let mut length: Option<u64> = None;
    let mut keep_alive = http11;
    let mut expect_continue = false;
    let mut has_host = false;
    let mut te_on_http10 = false;
    // Header fields by their variable names, a field sent on several lines joined into
    // one value (RFC 9110 5.3), as Apache and nginx give it to CGI and FastCGI apps.
    let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut lines = 0;
    loop {
        let line = read_line(r, 16 * 1024).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => HeadError::Closed,
            io::ErrorKind::TimedOut => HeadError::Bad(StatusCode::REQUEST_TIMEOUT, e.to_string()),
            _ => HeadError::Bad(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, e.to_string()),
        })?;
        if line.is_empty() {
            break;
        }
        total += line.len();
        lines += 1;
        if total > max || vars.len() + lines > cfg.limits.max_params {
            return Err(HeadError::Bad(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head over the limits".into(),
            ));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(HeadError::Bad(
                StatusCode::BAD_REQUEST,
                "header line without ':'".into(),
            ));
        };
        // Optional whitespace is spaces and tabs only (RFC 9112 5.1): a CR or form feed
        // at the edge of a value is refused below, not trimmed away, so a proxy in
        // front cannot frame the request differently.
        let (n, v) = (&line[..colon], trim_ows(&line[colon + 1..]));
        if n.is_empty() || !n.iter().all(|&b| is_tchar(b)) {
            return Err(HeadError::Bad(
                StatusCode::BAD_REQUEST,
                "bad header name".into(),
            ));
        }
        // RFC 9110 5.5: no control characters but HTAB in a value (a CR, NUL or ESC
        // would reach the app's variables and its logs).
        if v.iter().any(|&b| b != b'\t' && (b < 0x20 || b == 0x7f)) {
            return Err(HeadError::Bad(
                StatusCode::BAD_REQUEST,
                "a control character in a header value".into(),
            ));
        }
        if n.contains(&b'_') {
            // As Apache and nginx do: as a CGI variable `X_Forwarded_For` would pass
            // for `X-Forwarded-For`.
            log::debug!(
                "HTTP: dropping header {:?} (an underscore in its name)",
                String::from_utf8_lossy(n)
            );
            continue;
        }
        let lower = n.to_ascii_lowercase();
        match &lower[..] {
            b"content-length" => {
                let len: u64 = std::str::from_utf8(v)
                    .ok()
                    .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        HeadError::Bad(StatusCode::BAD_REQUEST, "bad Content-Length".into())
                    })?;
                if length.is_some_and(|l| l != len) {
                    return Err(HeadError::Bad(
                        StatusCode::BAD_REQUEST,
                        "two different Content-Length values".into(),
                    ));
                }
                if length.is_none() {
                    vars.push(b"CONTENT_LENGTH", v);
                }
                length = Some(len);
                continue;
            }
            b"content-type" => {
                vars.push(b"CONTENT_TYPE", v);
                continue;
            }
            b"host" => {
                // RFC 9112 3.2: one Host line, with a valid value (a host, maybe
                // empty, and a port), else 400.
                if has_host {
                    return Err(HeadError::Bad(
                        StatusCode::BAD_REQUEST,
                        "more than one Host header".into(),
                    ));
                }
                if !v
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b))
                {
                    return Err(HeadError::Bad(
                        StatusCode::BAD_REQUEST,
                        "an invalid Host header".into(),
                    ));
                }
                has_host = true;
            }
            b"transfer-encoding" => {
                if matches!(framing, Framing::Chunked(_)) {
                    // A second line: chunked twice at least (RFC 9112 6.1 forbids it).
                    return Err(HeadError::Bad(
                        StatusCode::BAD_REQUEST,
                        "Transfer-Encoding given twice".into(),
                    ));
                }
                // Only a chunked body can be read (RFC 9112 section 6.3: chunked
                // must be the last coding of a request), and no other coding is
                // decoded here: exactly `chunked`, compared as a whole token.
                let codings: Vec<&[u8]> = v
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|c| !c.is_empty())
                    .collect();
                if !codings
                    .last()
                    .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
                {
                    return Err(HeadError::Bad(
                        StatusCode::BAD_REQUEST,
                        "Transfer-Encoding without chunked last".into(),
                    ));
                }
                if codings.len() > 1 {
                    return Err(HeadError::Bad(
                        StatusCode::NOT_IMPLEMENTED,
                        "a transfer coding other than chunked".into(),
                    ));
                }
                framing = Framing::Chunked(None);
                if !http11 {
                    // RFC 9112 6.1: a 1.0 message with Transfer-Encoding ends with
                    // the connection.
                    keep_alive = false;
                    te_on_http10 = true;
                }
            }
            b"connection" => {
                let v = v.to_ascii_lowercase();
                if v.windows(5).any(|w| w == b"close") {
                    keep_alive = false;
                } else if v.windows(10).any(|w| w == b"keep-alive") && !te_on_http10 {
                    keep_alive = true;
                }
            }
            // HTTP/1.0 clients cannot have asked for it (RFC 9110 section 10.1.1).
            b"expect" if http11 && v.eq_ignore_ascii_case(b"100-continue") => {
                expect_continue = true
            }
            _ => {}
        }
        let mut name = Vec::with_capacity(5 + n.len());
        name.extend_from_slice(b"HTTP_");
        name.extend(n.iter().map(|&b| {
            if b == b'-' {
                b'_'
            } else {
                b.to_ascii_uppercase()
            }
        }));
        match fields.iter_mut().find(|(f, _)| *f == name) {
            Some((_, joined)) => {
                // Cookie pairs are joined with "; " (RFC 6265 5.4), list fields with ", ".
                let sep: &[u8] = if name == b"HTTP_COOKIE" { b"; " } else { b", " };
                joined.extend_from_slice(sep);
                joined.extend_from_slice(v);
            }
            None => fields.push((name, v.to_vec())),
        }
    }
    for (n, v) in &fields {
        vars.push(n, v);
    }
    // RFC 9112 3.2.2: with an absolute-form target, its authority is the host, not
    // the Host header (the last HTTP_HOST is the one read).
    if absolute.is_some() {
        if let Some((_, authority, _)) = crate::mount::split_absolute(target) {
            if !authority.is_empty() {
                vars.push(b"HTTP_HOST", authority);
                has_host = true;
            }
        }
    }
    if http11 && !has_host {
        return Err(HeadError::Bad(
            StatusCode::BAD_REQUEST,
            "HTTP/1.1 request without Host".into(),
        ));
    }
    if matches!(framing, Framing::Chunked(_)) {
        if length.is_some() {
            // Both: a request smuggling attempt as often as not; the chunked framing
            // wins and the connection is not reused (RFC 9112 section 6.3).
            let filtered: Vars =
                Vars::from_pairs(vars.iter().filter(|(n, _)| *n != b"CONTENT_LENGTH"));
            vars = filtered;
            keep_alive = false;
        }
    } else if let Some(len) = length {
        framing = Framing::Length(len);
    }
    Ok(Head {
        vars,
        framing,
        keep_alive,
        http11,
        expect_continue,
    })
}

/// `t` as an HTTP date (RFC 9110 5.6.7, IMF-fixdate): `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: std::time::SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // The civil date of a day count, in 400-year eras of 146,097 days that start on
    // 1 March (so the leap day ends a year).
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// The response writer: turns the CGI head the app's response produces into an
/// HTTP/1.1 status line and headers, then frames the body (Content-Length when given,
/// else chunked on HTTP/1.1, else until close).
struct HttpSink {
    w: io::BufWriter<SockIo>,
    head: Vec<u8>,
    started: bool,
    chunked: bool,
    close: bool,
    http11: bool,
    failed: bool,
    /// A HEAD request: the response ends with its head.
    head_only: bool,
    /// The response has no body (HEAD, 1xx, 204, 304): no framing, nothing after the
    /// head (RFC 9112 section 6.3).
    bodyless: bool,
    /// An `Expect: 100-continue` not answered yet. The head says `Connection: close`
    /// then (the client may send the body or not); `100 Continue` may still go out
    /// ahead of it while nothing of the response has reached the socket (an app that
    /// makes its head first and then reads the body, as a streaming echo does), and
    /// never after.
    expect: Option<Arc<AtomicBool>>,
}

impl HttpSink {
    /// Before bytes may reach the socket: no `100 Continue` after them.
    fn no_more_continue(&mut self) {
        if let Some(due) = self.expect.take() {
            due.store(false, Ordering::Release);
        }
    }

    /// Before `n` bytes go into the writer: if they do not fit its buffer, what is in
    /// it goes to the socket.
    fn spills(&mut self, n: usize) {
        if self.expect.is_some() && self.w.buffer().len() + n > self.w.capacity() {
            self.no_more_continue();
        }
    }

    fn start(&mut self, rest: &[u8]) -> io::Result<()> {
        if self
            .expect
            .as_ref()
            .is_some_and(|due| due.load(Ordering::Acquire))
        {
            self.close = true;
        }
        let head = std::mem::take(&mut self.head);
        let mut out = Vec::with_capacity(head.len() + 64);
        let mut has_length = false;
        let mut has_date = false;
        let lines = head
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        for (i, line) in lines.filter(|l| !l.is_empty()).enumerate() {
            if i == 0 {
                let status = line.strip_prefix(b"Status: ").unwrap_or(b"200 OK");
                self.bodyless = self.head_only
                    || status.starts_with(b"1")
                    || status.starts_with(b"204")
                    || status.starts_with(b"304");
                out.extend_from_slice(b"HTTP/1.1 ");
                out.extend_from_slice(status);
                out.extend_from_slice(b"\r\n");
                continue;
            }
            let (name, value) = match line.iter().position(|&b| b == b':') {
                Some(at) => (&line[..at], line[at + 1..].trim_ascii()),
                None => (line, &b""[..]),
            };
            // The framing and the connection are ours (RFC 9110 7.6.1): the app's
            // hop-by-hop headers are left out, but its `Connection: close` is kept.
            if name.eq_ignore_ascii_case(b"connection") {
                if value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                {
                    self.close = true;
                }
                continue;
            }
            if crate::response::HOP_BY_HOP
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
            {
                continue;
            }
            if name.eq_ignore_ascii_case(b"content-length") {
                has_length = true;
            }
            if name.eq_ignore_ascii_case(b"date") {
                has_date = true;
            }
            // Header bytes as the app gave them (CGI and FastCGI pass them so too).
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        // RFC 9110 6.6.1: a server with a clock sends the date (web servers add it
        // to what FastCGI and CGI apps answer; here we are the web server).
        if !has_date {
            out.extend_from_slice(b"Date: ");
            out.extend_from_slice(http_date(std::time::SystemTime::now()).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !has_length && !self.bodyless {
            if self.http11 {
                self.chunked = true;
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            } else {
                self.close = true;
            }
        }
        if self.close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if !self.http11 {
            // An HTTP/1.0 client that asked to keep the connection is told it is kept.
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        self.spills(out.len());
        self.w.write_all(&out)?;
        self.started = true;
        if !rest.is_empty() {
            self.body(rest)?;
        }
        Ok(())
    }

    fn body(&mut self, b: &[u8]) -> io::Result<()> {
        if b.is_empty() || self.bodyless {
            return Ok(());
        }
        self.spills(b.len() + 20);
        if self.chunked {
            write!(self.w, "{:x}\r\n", b.len())?;
            self.w.write_all(b)?;
            self.w.write_all(b"\r\n")
        } else {
            self.w.write_all(b)
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.failed {
            // A write failed (the client went away, or stopped reading past the write
            // timeout): the response is cut, and the connection must not look as if it
            // ended normally, nor serve another request.
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if !self.started {
            self.start(&[])?;
        }
        if self.chunked {
            self.w.write_all(b"0\r\n\r\n")?;
        }
        self.no_more_continue();
        self.w.flush()
    }
}

impl Write for HttpSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let r = if self.started {
            self.body(buf)
        } else {
            self.head.extend_from_slice(buf);
            match self.head.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(end) => {
                    let rest = self.head.split_off(end + 4);
                    self.start(&rest)
                }
                None => Ok(()),
            }
        };
        r.inspect_err(|_| self.failed = true)
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.started {
            self.no_more_continue();
            self.w.flush().inspect_err(|_| self.failed = true)
        } else {
            Ok(())
        }
    }
}

impl Sink for HttpSink {
    fn gone(&self) -> bool {
        self.failed
    }
    fn watch_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.w.get_ref().raw_fd())
    }
    fn check(&mut self) -> crate::response::Check {
        crate::sys::peek_check(self.w.get_ref().raw_fd())
    }
}

/// How long an HTTP connection may idle before its (next) request: 5 s (Apache's
/// KeepAliveTimeout), or less with FCGI_IDLE_TIMEOUT. A browser keeps several idle
/// connections, each holding a worker thread here, so they cannot starve new ones
/// for long.
pub(crate) fn idle_limit(cfg: &Config) -> Duration {
    const HTTP_IDLE: Duration = Duration::from_secs(5);
    cfg.idle_timeout.map_or(HTTP_IDLE, |t| t.min(HTTP_IDLE))
}

/// Serves one HTTP connection: requests until the client closes, asks to close, or a
/// response cannot be framed for keep-alive.
pub(crate) fn serve(
    io: SockIo,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    app: &dyn App,
    cfg: &Config,
    after_request: &mut dyn FnMut(),
) {
    let reader: Shared = Arc::new(Mutex::new(BufReader::with_capacity(16 * 1024, io.clone())));
    loop {
        let buffered = !lock(&reader).buffer().is_empty();
        if !buffered {
            match io.wait_first(Some(idle_limit(cfg))) {
                Ok(true) => {}
                _ => return,
            }
        }
        io.head_deadline(true);
        let mut head_only = false;
        let head = read_head(&mut lock(&reader), cfg, peer, local, &mut head_only);
        io.head_deadline(false);
        let mut sink = HttpSink {
            w: io::BufWriter::with_capacity(32 * 1024, io.clone()),
            head: Vec::new(),
            started: false,
            chunked: false,
            close: false,
            http11: true,
            failed: false,
            head_only: false,
            bodyless: false,
            expect: None,
        };
        let head = match head {
            Ok(h) => h,
            Err(HeadError::Closed) => return,
            Err(HeadError::Bad(status, why)) => {
                log::info!("HTTP: {why}; answered {}", status.as_u16());
                sink.close = true;
                sink.head_only = head_only;
                response::send_error(status, &mut sink);
                let _ = sink.finish();
                io.linger_close();
                return;
            }
        };
        sink.http11 = head.http11;
        sink.close = !head.keep_alive;
        sink.head_only = head.vars.get("REQUEST_METHOD") == Some(b"HEAD");
        let framing = Arc::new(Mutex::new(head.framing));
        let len = match head.framing {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        let expect = (head.expect_continue && len != Some(0)).then(|| Expect {
            due: Arc::new(AtomicBool::new(true)),
            io: io.clone(),
        });
        sink.expect = expect.as_ref().map(|e| e.due.clone());
        let body = if len == Some(0) {
            Body::empty()
        } else {
            Body::from_reader(
                BodyReader {
                    r: reader.clone(),
                    framing: framing.clone(),
                    expect,
                },
                len,
            )
        };
        let outcome = match request::build(head.vars, body, Mode::Http, Role::Responder, &cfg.map) {
            Ok(req) => app.serve(req, &mut sink),
            Err(rej) => {
                log::warn!("{}; answered {}", rej.reason, rej.status.as_u16());
                response::send_error(rej.status, &mut sink)
            }
        };
        if outcome.is_cut() {
            // What the app wrote goes out without the last chunk, and the connection
            // closes: the client sees an incomplete response, not a short one.
            let _ = sink.w.flush();
            after_request();
            log::info!("HTTP: the app's response was cut short; closing the connection");
            return;
        }
        if outcome == Outcome::Gone && !sink.started {
            // The client went away before the app gave a head (a service cancelled
            // with it): nothing is written, not a head made up of nothing.
            after_request();
            log::info!("HTTP: the client went away; closing the connection");
            return;
        }
        let finished = sink.finish();
        after_request();
        if finished.is_err() {
            log::info!("HTTP: the response could not be sent whole; closing the connection");
            return;
        }
        if sink.close {
            io.linger_close();
            return;
        }
        // Whatever of the body the app did not read must go before the next request.
        let rest = {
            let mut drain = BodyReader {
                r: reader.clone(),
                framing,
                expect: None,
            };
            io::copy(&mut (&mut drain).take(1 << 20), &mut io::sink())
                .ok()
                .filter(|_| {
                    *drain.framing.lock().unwrap_or_else(|p| p.into_inner()) == Framing::Done
                })
        };
        if rest.is_none() {
            io.linger_close();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{absolute_form_path, chunk_size, climbs_above_root, http_date};

    #[test]
    fn http_dates() {
        use std::time::{Duration, UNIX_EPOCH};
        for (secs, want) in [
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_795_922_745, "Sun, 29 Nov 2026 03:25:45 GMT"),
            (4_102_444_799, "Thu, 31 Dec 2099 23:59:59 GMT"),
        ] {
            assert_eq!(http_date(UNIX_EPOCH + Duration::from_secs(secs)), want);
        }
    }

    #[test]
    fn chunk_sizes_and_the_space_before_an_extension() {
        for (line, want) in [
            (&b"5"[..], Some(5)),
            (b"1a;name=value", Some(26)),
            (b"5 ;ext", Some(5)),
            (b"5\t ;ext=\"q\"", Some(5)),
            (b"0", Some(0)),
            (b"ffffffffffffffff", Some(u64::MAX)),
            (b"", None),
            (b"5 ", None),
            (b"5 6", None),
            (b" 5", None),
            (b"+5", None),
            (b"0x5", None),
            (b"5 x", None),
            (b";ext", None),
            (b"10000000000000000", None),
        ] {
            assert_eq!(
                chunk_size(line),
                want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn paths_that_climb_above_the_root() {
        for p in [&b"/.."[..], b"/a/../..", b"/../a", b"/a/./../../b", b".."] {
            assert!(climbs_above_root(p), "{p:?}");
        }
        for p in [
            &b"/"[..],
            b"/a/..",
            b"/a/b/../..",
            b"/a/./b/..",
            b"//a/..",
            b"/..a",
            b"/a..b/",
        ] {
            assert!(!climbs_above_root(p), "{p:?}");
        }
    }

    #[test]
    fn absolute_form_targets_keep_path_and_query() {
        for (target, want) in [
            (&b"http://example.com/a/b?x=1"[..], Some(&b"/a/b?x=1"[..])),
            (b"HTTPS://Example.com:8443/a", Some(b"/a")),
            (b"http://example.com?x=1", Some(b"/?x=1")),
            (b"http://example.com", Some(b"/")),
            (b"/a/b", None),
            (b"ftp://example.com/a", None),
        ] {
            assert_eq!(absolute_form_path(target).as_deref(), want, "{target:?}");
        }
    }
}
