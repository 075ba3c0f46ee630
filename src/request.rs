// One pure function turns CGI variables into an `http::Request`; CGI, FastCGI and SCGI
// all go through it.

use std::ops::Range;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, StatusCode, Uri, Version};

use crate::body::Body;
use crate::context::{Context, Mode};
use crate::mount;
use crate::record::Role;
use crate::vars::Vars;

/// Settings the mapping needs from the server.
#[derive(Debug, Clone, Default)]
pub(crate) struct MapSettings {
    /// Process-wide `FORCE_SCRIPT_NAME`.
    pub force_script_name: Option<String>,
    /// Our executable's file name, to recognise `SCRIPT_NAME=/dir/<it>`.
    pub exe_name: Option<String>,
    /// Believe `X-Forwarded-For/-Proto/-Host/-Prefix` (a proxy we control sets them).
    pub trust_forwarded: bool,
    /// `FCGI_MAX_BODY`: the largest request body the app is given.
    pub max_body: Option<u64>,
}

/// A request that cannot be built; answered with `status` and logged with `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub status: StatusCode,
    pub reason: String,
}

impl Rejection {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Rejection {
        Rejection {
            status,
            reason: reason.into(),
        }
    }
}

/// How the body length is declared by `CONTENT_LENGTH` (RFC 3875 section 4.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeclaredLength {
    /// A valid decimal number.
    Exact(u64),
    /// Absent or empty: no body under CGI, "until the stream ends" under FastCGI/SCGI.
    Absent,
    /// `-1`: a body of unknown length, to the end of the stream. Caddy's fastcgi
    /// transport (2.6 to 2.8) sends it for a chunked request and then streams the body
    /// in FCGI_STDIN (Go's `ContentLength` of -1 passed on as it is).
    Unknown,
}

/// Reads `CONTENT_LENGTH`; anything but decimal digits (or `-1`) is a bad request.
pub(crate) fn content_length(vars: &Vars) -> Result<DeclaredLength, Rejection> {
    match vars.get("CONTENT_LENGTH") {
        None | Some(b"") => Ok(DeclaredLength::Absent),
        Some(b"-1") => Ok(DeclaredLength::Unknown),
        Some(v) => std::str::from_utf8(v)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .map(DeclaredLength::Exact)
            .ok_or_else(|| {
                Rejection::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "CONTENT_LENGTH {:?} is not a number",
                        String::from_utf8_lossy(v)
                    ),
                )
            }),
    }
}

/// Builds the request the app sees: method, app-relative URI (`PATH_INFO` plus
/// `?QUERY_STRING`), version, headers from `HTTP_*`/`CONTENT_*`, and the [`Context`]
/// extension with the mount prefix and every raw variable.
pub(crate) fn build(
    vars: Vars,
    mut body: Body,
    mode: Mode,
    role: Role,
    settings: &MapSettings,
) -> Result<Request<Body>, Rejection> {
    let method = match vars.get("REQUEST_METHOD") {
        Some(m) if !m.is_empty() => Method::from_bytes(m).map_err(|_| {
            Rejection::new(
                StatusCode::BAD_REQUEST,
                format!("invalid REQUEST_METHOD {:?}", String::from_utf8_lossy(m)),
            )
        })?,
        // An authorizer may be asked without a method; a responder never is.
        _ if role == Role::Authorizer => Method::GET,
        _ => {
            return Err(Rejection::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the web server sent no REQUEST_METHOD",
            ));
        }
    };
    if let Some(max) = settings.max_body {
        match body.content_length() {
            // Refused before the app runs, as Flask's MAX_CONTENT_LENGTH does; the
            // body is then dropped unread.
            Some(len) if len > max => {
                return Err(Rejection::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a request body of {len} bytes is over FCGI_MAX_BODY ({max})"),
                ));
            }
            Some(_) => {}
            // A body of no declared length (chunked): reading past the limit fails.
            None => body.cap(max),
        }
    }
    let version = match vars.get("SERVER_PROTOCOL") {
        Some(b"HTTP/1.0") => Version::HTTP_10,
        Some(b"HTTP/0.9") => Version::HTTP_09,
        Some(b"HTTP/2.0") | Some(b"HTTP/2") => Version::HTTP_2,
        Some(b"HTTP/3.0") | Some(b"HTTP/3") => Version::HTTP_3,
        _ => Version::HTTP_11,
    };

    let mut mount = mount::rebuild(
        &vars,
        settings.force_script_name.as_deref(),
        settings.exe_name.as_deref(),
    );
    if settings.trust_forwarded {
        if let Some(p) = vars.non_empty("HTTP_X_FORWARDED_PREFIX") {
            // The last of a list, as for the other X-Forwarded-* (Context::forwarded).
            let p = p
                .rsplit(',')
                .next()
                .unwrap_or(p)
                .trim()
                .trim_end_matches('/');
            if p.starts_with('/') && !p.starts_with("//") && !p.contains(['\r', '\n']) {
                mount.script_name = format!("{p}{}", mount.script_name);
            }
        }
    }
    let mut query = match &mount.query {
        Some(q) => &q[..],
        None => vars.get("QUERY_STRING").unwrap_or_default(),
    };
    // A query that is not UTF-8 (a Latin-1 form sent with GET) is kept percent-encoded,
    // as the URI holds it, so `Context::query_string` does not lose it.
    if !query.is_ascii() && std::str::from_utf8(query).is_err() {
        mount.query = Some(escape_query(query));
        query = mount.query.as_deref().unwrap_or_default();
    }
    // An encoded slash needs a `%` in the client's path (one look, most have none).
    let mut decoded = None;
    let raw = match vars.get("REQUEST_URI") {
        Some(u) if u.contains(&b'%') => raw_uri_with_encoded_slash(u, &mount, query, &mut decoded),
        _ => None,
    };
    let uri = match raw {
        Some(uri) => uri,
        None => app_uri(decoded.as_deref().unwrap_or(&mount.path_info), query)?,
    };
    if let Some(path) = decoded {
        mount.path_info = path;
    }
    let headers = headers(&vars, method == Method::GET || method == Method::HEAD);

    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    req.extensions_mut().insert(Context::new(
        mode,
        role,
        vars,
        mount,
        settings.trust_forwarded,
    ));
    Ok(req)
}

/// The app-relative part of the client's own `REQUEST_URI` (`uri`) path when it holds an
/// encoded slash (`%2F`) and is otherwise the mount prefix and `PATH_INFO` exactly.
/// The URI rebuilt from the decoded `PATH_INFO` would make it a real `/` and move the
/// path's segments (`/files/a%2Fb` would route as `/files/a/b`, where axum's `Path`
/// under hyper gets `a/b`). Apache refuses such paths by default
/// (`AllowEncodedSlashes`); nginx and `--http` pass them. A request path the server
/// resolved (dot segments, `//`) is not the same path, and keeps the decoded one.
///
/// Apache with `AllowEncodedSlashes NoDecode` leaves the client's `%2F` as it is in
/// `PATH_INFO`: a `%2F` there matches the client's own `%2F` (and only that: a client's
/// `%252F`, which mod_rewrite may decode into the same `%2F`, is `%25` in `uri`). The
/// second value says whether one did: `PATH_INFO` then holds those three bytes where
/// the decoded path has a `/`.
fn encoded_slash_path<'a>(uri: &'a [u8], mount: &mount::Mount) -> Option<(&'a [u8], bool)> {
    let path = uri.split(|&b| b == b'?').next().unwrap_or_default();
    // Origin form only (an absolute-form target, rare, keeps the decoded path).
    if !path.starts_with(b"/") {
        return None;
    }
    let prefix = mount.script_name.as_bytes();
    let want = |n: usize| -> Option<u8> {
        match n.checked_sub(prefix.len()) {
            None => prefix.get(n).copied(),
            Some(i) => mount.path_info.get(i).copied(),
        }
    };
    // Decode byte by byte against prefix + PATH_INFO; note where the prefix ends.
    let (mut i, mut n, mut split, mut slash, mut kept) = (0, 0, None, false, false);
    while i < path.len() {
        if n == prefix.len() && split.is_none() {
            split = Some(i);
        }
        let (b, len) = match (path[i], path.get(i + 1), path.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => match (mount::hex(h), mount::hex(l)) {
                (Some(h), Some(l)) => (h << 4 | l, 3),
                _ => (b'%', 1),
            },
            (b, ..) => (b, 1),
        };
        // `%2F` left as the client wrote it (`AllowEncodedSlashes NoDecode`).
        let as_sent = len == 3 && b == b'/' && (0..3).all(|k| want(n + k) == Some(path[i + k]));
        if as_sent {
            kept |= split.is_some();
        } else if want(n) != Some(b) {
            return None;
        }
        slash |= len == 3 && b == b'/' && split.is_some();
        i += len;
        n += if as_sent { 3 } else { 1 };
    }
    if n != prefix.len() + mount.path_info.len() || !slash {
        return None;
    }
    Some((&path[split?..], kept))
}

/// [`encoded_slash_path`] made a URI with the query (out of line: rarely needed).
/// When `PATH_INFO` kept the client's `%2F` as it was, `decoded` gets the path decoded
/// (as the server would have, with `AllowEncodedSlashes On`).
#[inline(never)]
fn raw_uri_with_encoded_slash(
    uri: &[u8],
    mount: &mount::Mount,
    query: &[u8],
    decoded: &mut Option<Vec<u8>>,
) -> Option<Uri> {
    let (path, kept) = encoded_slash_path(uri, mount)?;
    if kept {
        *decoded = Some(mount::percent_decode(path).into_owned());
    }
    raw_app_uri(path, query)
}

/// The URI of a raw app-relative path (see [`encoded_slash_path`]) and the query;
/// `None` when the path holds bytes a URI may not (the decoded path is used then).
fn raw_app_uri(path: &[u8], query: &[u8]) -> Option<Uri> {
    if !path.iter().all(|&b| b == b'%' || is_path_char(b)) {
        return None;
    }
    let mut s = String::with_capacity(path.len() + 1 + query.len() * 3);
    s.extend(path.iter().map(|&b| b as char));
    if !query.is_empty() {
        s.push('?');
        push_query(&mut s, query);
    }
    Uri::try_from(s).ok()
}

/// `path` (decoded) percent-encoded, or `/` when empty, plus `?query` when not empty.
pub(crate) fn app_uri(path: &[u8], query: &[u8]) -> Result<Uri, Rejection> {
    let slash = path.first() != Some(&b'/');
    if query.is_empty() && (path.is_empty() || path == b"/") {
        return Ok(Uri::from_static("/"));
    }
    // Sized exactly: a string whose length is its capacity becomes the URI's buffer
    // as it is; one with room to spare costs another allocation to share it.
    let escaped = |bytes: &[u8], ok: fn(u8) -> bool| {
        bytes
            .iter()
            .map(|&b| if ok(b) { 1 } else { 3 })
            .sum::<usize>()
    };
    let len = usize::from(slash)
        + escaped(path, is_path_char)
        + if query.is_empty() {
            0
        } else {
            1 + escaped(query, is_query_char)
        };
    let mut s = String::with_capacity(len);
    if slash {
        s.push('/');
    }
    push_path(&mut s, path);
    if !query.is_empty() {
        s.push('?');
        push_query(&mut s, query);
    }
    debug_assert_eq!(s.len(), len);
    Uri::try_from(s).map_err(|e| Rejection::new(StatusCode::BAD_REQUEST, format!("bad path: {e}")))
}

/// `query` with what a URL query cannot hold as it is percent-encoded (`%` kept).
fn escape_query(query: &[u8]) -> Vec<u8> {
    let mut s = String::with_capacity(query.len() * 3);
    push_query(&mut s, query);
    s.into_bytes()
}

/// Appends a query, percent-encoding what a URL query cannot hold as it is.
#[inline]
fn push_query(s: &mut String, query: &[u8]) {
    for &b in query {
        if is_query_char(b) {
            s.push(b as char);
        } else {
            push_escape(s, b);
        }
    }
}

/// Appends a decoded path, percent-encoding what a URL path cannot hold as it is.
pub(crate) fn push_path(s: &mut String, path: &[u8]) {
    for &b in path {
        if is_path_char(b) {
            s.push(b as char);
        } else {
            push_escape(s, b);
        }
    }
}

/// Appends an app-given URL part (a path, maybe with `?query` or `#fragment`) with the
/// bytes no URL may hold raw (controls, space, non-ASCII, `"<>\\^`{|}`) escaped and
/// everything else as given, `%` escapes and reserved characters included.
pub(crate) fn push_url_text(s: &mut String, text: &str) {
    for &b in text.as_bytes() {
        if b <= b' '
            || b >= 0x7f
            || matches!(
                b,
                b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
            )
        {
            push_escape(s, b);
        } else {
            s.push(b as char);
        }
    }
}

fn push_escape(s: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    s.push('%');
    s.push(HEX[(b >> 4) as usize] as char);
    s.push(HEX[(b & 15) as usize] as char);
}

/// RFC 3986 `pchar` plus `/`, without `%`: the decoded path is re-escaped.
fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

/// The query stays as sent (it is not decoded by the server) except bytes that are
/// not allowed in a URI, which are escaped.
fn is_query_char(b: u8) -> bool {
    is_path_char(b) || matches!(b, b'?' | b'%')
}

/// The header a CGI variable name (without `HTTP_`) stands for, when it is one that
/// requests commonly carry: what lowercasing the name, `_` to `-`, and
/// `HeaderName::from_bytes` give, without doing either. Dispatches on the length and
/// compares fixed-size arrays, as [`crate::vars`] does for its indexed names.
#[inline]
fn common_header(name: &[u8]) -> Option<HeaderName> {
    use http::header as h;
    fn pick<const N: usize>(name: &[u8], table: &[(&[u8; N], HeaderName)]) -> Option<HeaderName> {
        let name = <&[u8; N]>::try_from(name).ok()?;
        table
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, h)| h.clone())
    }
    // The tables are statics: a name `http` has no constant for (`from_static`) holds
    // a `Bytes`, which a `const` may not, and a table in the arm itself would be
    // built on every call.
    match name.len() {
        2 => {
            static T: [(&[u8; 2], HeaderName); 1] = [(b"TE", h::TE)];
            pick(name, &T)
        }
        3 => {
            static T: [(&[u8; 3], HeaderName); 2] = [(b"DNT", h::DNT), (b"VIA", h::VIA)];
            pick(name, &T)
        }
        4 => {
            static T: [(&[u8; 4], HeaderName); 1] = [(b"HOST", h::HOST)];
            pick(name, &T)
        }
        5 => {
            static T: [(&[u8; 5], HeaderName); 1] = [(b"RANGE", h::RANGE)];
            pick(name, &T)
        }
        6 => {
            static T: [(&[u8; 6], HeaderName); 4] = [
                (b"ACCEPT", h::ACCEPT),
                (b"COOKIE", h::COOKIE),
                (b"ORIGIN", h::ORIGIN),
                (b"PRAGMA", h::PRAGMA),
            ];
            pick(name, &T)
        }
        7 => {
            static T: [(&[u8; 7], HeaderName); 2] =
                [(b"REFERER", h::REFERER), (b"UPGRADE", h::UPGRADE)];
            pick(name, &T)
        }
        8 => {
            static T: [(&[u8; 8], HeaderName); 3] = [
                (b"IF_MATCH", h::IF_MATCH),
                (b"IF_RANGE", h::IF_RANGE),
                (b"PRIORITY", HeaderName::from_static("priority")),
            ];
            pick(name, &T)
        }
        9 => {
            static T: [(&[u8; 9], HeaderName); 3] = [
                (b"FORWARDED", h::FORWARDED),
                (b"SEC_CH_UA", HeaderName::from_static("sec-ch-ua")),
                (b"X_REAL_IP", HeaderName::from_static("x-real-ip")),
            ];
            pick(name, &T)
        }
        10 => {
            static T: [(&[u8; 10], HeaderName); 3] = [
                (b"USER_AGENT", h::USER_AGENT),
                (b"CONNECTION", h::CONNECTION),
                (b"KEEP_ALIVE", HeaderName::from_static("keep-alive")),
            ];
            pick(name, &T)
        }
        12 => {
            static T: [(&[u8; 12], HeaderName); 2] = [
                (b"CONTENT_TYPE", h::CONTENT_TYPE),
                (b"X_CSRF_TOKEN", HeaderName::from_static("x-csrf-token")),
            ];
            pick(name, &T)
        }
        13 => {
            static T: [(&[u8; 13], HeaderName); 3] = [
                (b"AUTHORIZATION", h::AUTHORIZATION),
                (b"CACHE_CONTROL", h::CACHE_CONTROL),
                (b"IF_NONE_MATCH", h::IF_NONE_MATCH),
            ];
            pick(name, &T)
        }
        14 => {
            static T: [(&[u8; 14], HeaderName); 5] = [
                (b"CONTENT_LENGTH", h::CONTENT_LENGTH),
                (b"SEC_FETCH_DEST", HeaderName::from_static("sec-fetch-dest")),
                (b"SEC_FETCH_MODE", HeaderName::from_static("sec-fetch-mode")),
                (b"SEC_FETCH_SITE", HeaderName::from_static("sec-fetch-site")),
                (b"SEC_FETCH_USER", HeaderName::from_static("sec-fetch-user")),
            ];
            pick(name, &T)
        }
        15 => {
            static T: [(&[u8; 15], HeaderName); 3] = [
                (b"ACCEPT_ENCODING", h::ACCEPT_ENCODING),
                (b"ACCEPT_LANGUAGE", h::ACCEPT_LANGUAGE),
                (
                    b"X_FORWARDED_FOR",
                    HeaderName::from_static("x-forwarded-for"),
                ),
            ];
            pick(name, &T)
        }
        16 => {
            static T: [(&[u8; 16], HeaderName); 3] = [
                (
                    b"SEC_CH_UA_MOBILE",
                    HeaderName::from_static("sec-ch-ua-mobile"),
                ),
                (
                    b"X_REQUESTED_WITH",
                    HeaderName::from_static("x-requested-with"),
                ),
                (
                    b"X_FORWARDED_HOST",
                    HeaderName::from_static("x-forwarded-host"),
                ),
            ];
            pick(name, &T)
        }
        17 => {
            static T: [(&[u8; 17], HeaderName); 2] = [
                (b"IF_MODIFIED_SINCE", h::IF_MODIFIED_SINCE),
                (
                    b"X_FORWARDED_PROTO",
                    HeaderName::from_static("x-forwarded-proto"),
                ),
            ];
            pick(name, &T)
        }
        18 => {
            static T: [(&[u8; 18], HeaderName); 1] = [(
                b"SEC_CH_UA_PLATFORM",
                HeaderName::from_static("sec-ch-ua-platform"),
            )];
            pick(name, &T)
        }
        19 => {
            static T: [(&[u8; 19], HeaderName); 1] =
                [(b"IF_UNMODIFIED_SINCE", h::IF_UNMODIFIED_SINCE)];
            pick(name, &T)
        }
        25 => {
            static T: [(&[u8; 25], HeaderName); 1] =
                [(b"UPGRADE_INSECURE_REQUESTS", h::UPGRADE_INSECURE_REQUESTS)];
            pick(name, &T)
        }
        _ => None,
    }
}

/// The request's headers from its variables. `bodiless`: a GET or HEAD, whose
/// `CONTENT_LENGTH` of 0 is no header (see below).
fn headers(vars: &Vars, bodiless: bool) -> HeaderMap {
    // Sized for the headers there are, not for every variable: a map sized for 30
    // variables is a 6 KiB allocation per request, too big for the allocator's
    // per-thread cache.
    let n = vars
        .iter()
        .filter(|(n, _)| n.starts_with(b"HTTP_") || n.starts_with(b"CONTENT_"))
        .count();
    let mut map = HeaderMap::with_capacity(n);
    // Header names are lowercased into a buffer on the stack; a longer one than it
    // holds (rare) goes through a vector.
    let mut name_buf = [0u8; 64];
    let mut long_name = Vec::new();
    let mut repeated: Vec<&[u8]> = Vec::new();
    for (name, range) in vars.iter_ranges() {
        let header = if let Some(h) = name.strip_prefix(b"HTTP_") {
            // Proxy is the httpoxy header; CONTENT_* come from the CGI variables below.
            if h == b"PROXY" || h == b"CONTENT_TYPE" || h == b"CONTENT_LENGTH" {
                continue;
            }
            // nginx passes the client's `Transfer-Encoding: chunked` beside the
            // CONTENT_LENGTH of the body it has read whole: the app gets those bytes,
            // not chunks, so the length alone describes them (both together are what
            // RFC 9112 6.1 calls a possible smuggling attempt, for an app that passes
            // the request on).
            if h == b"TRANSFER_ENCODING" && has_length(vars) {
                continue;
            }
            // Apache passes Authorization only through a rewrite's
            // `[E=HTTP_AUTHORIZATION:%{HTTP:Authorization}]`, which sets it empty
            // when the client sent none: no header then, as under any server.
            if range.is_empty() && h == b"AUTHORIZATION" {
                continue;
            }
            h
        } else if name == b"CONTENT_TYPE" {
            if range.is_empty() {
                continue;
            }
            name
        } else if name == b"CONTENT_LENGTH" {
            // Only the value the body is read by: the last, when a configuration sends
            // it twice (see `is_content_length_header`).
            if vars.known_range("CONTENT_LENGTH") != Some(range.clone())
                || !is_content_length_header(
                    vars.get("CONTENT_LENGTH").unwrap_or_default(),
                    bodiless,
                )
            {
                continue;
            }
            name
        } else {
            continue;
        };
        // The headers browsers and proxies send are found by their CGI name: no
        // lowercasing, no parsing, and no allocation for a name `http` has no
        // constant for (`sec-fetch-mode`, `x-forwarded-for`).
        let n = match common_header(header) {
            Some(n) => Ok(n),
            None => {
                let lower = |b: &u8| match *b {
                    b'_' => b'-',
                    b => b.to_ascii_lowercase(),
                };
                let lowered: &[u8] = if header.len() <= name_buf.len() {
                    for (d, s) in name_buf.iter_mut().zip(header) {
                        *d = lower(s);
                    }
                    &name_buf[..header.len()]
                } else {
                    long_name.clear();
                    long_name.extend(header.iter().map(lower));
                    &long_name
                };
                HeaderName::from_bytes(lowered)
            }
        };
        let (Ok(n), Ok(v)) = (
            n,
            // Points into the variables' buffer: no copy per header.
            HeaderValue::from_maybe_shared(vars.shared(range)),
        ) else {
            log::debug!(
                "skipping variable {} that is not a valid header",
                String::from_utf8_lossy(name)
            );
            continue;
        };
        // A repeated request header keeps every value, in order, as hyper gives them
        // to an app (nginx before 1.23 sends each line of a header sent on several
        // lines as a variable of its own; `HeaderMap::get` is then the first, as under
        // hyper). A repeated Host or CONTENT_* is the server's configuration
        // overriding itself (nginx's `fastcgi_params` and then a `fastcgi_param` of the
        // same name; nginx then leaves the client's own header out): the last value,
        // as `Vars::get` reads it.
        if map.insert(n, v).is_some() && header != b"HOST" && name.starts_with(b"HTTP_") {
            // Rare: a header passed twice. The insert kept only this value; every
            // value goes back below, once for all such names (a client's thousands of
            // repeated lines cost one more pass, not one per line).
            repeated.push(name);
        }
    }
    if !repeated.is_empty() {
        all_values(&mut map, vars, repeated);
    }
    if let Some(range) = vars.known_range("REDIRECT_HTTP_AUTHORIZATION") {
        redirect_authorization(&mut map, vars, range);
    }
    map
}

/// Whether the CONTENT_LENGTH `v` the body is read by (the last, when a web server's
/// configuration sends it twice) becomes a `content-length` header. `-1` (Caddy 2.6 to
/// 2.8 on a chunked upload) is a body of unknown length, read to its end: no header, as
/// under hyper, rather than one whose value is not a length (RFC 9110 8.6: digits
/// only). mod_fcgid, lighttpd and every SCGI server send a length of 0 with a GET,
/// nginx none: no header for an empty GET or HEAD either way, as the client sent none
/// (RFC 9110 8.6: a user agent does not send one there).
fn is_content_length_header(v: &[u8], bodiless: bool) -> bool {
    !v.is_empty() && v.iter().all(u8::is_ascii_digit) && !(bodiless && v.iter().all(|&b| b == b'0'))
}

/// An HTTP/2 or HTTP/3 request, by `SERVER_PROTOCOL`: its body, when streamed, comes
/// with neither a length nor a `Transfer-Encoding`.
pub(crate) fn over_http2(vars: &Vars) -> bool {
    vars.get("SERVER_PROTOCOL")
        .is_some_and(|p| p.starts_with(b"HTTP/2") || p.starts_with(b"HTTP/3"))
}

/// Whether the request has a body length (a CONTENT_LENGTH of digits).
#[cold]
fn has_length(vars: &Vars) -> bool {
    vars.get("CONTENT_LENGTH")
        .is_some_and(|v| !v.is_empty() && v.iter().all(u8::is_ascii_digit))
}

/// The same `E=HTTP_AUTHORIZATION:...` on the rule that rewrites to the app: Apache's
/// internal redirect renames it (Symfony and Laravel read it there too). Used when no
/// `HTTP_AUTHORIZATION` came.
#[cold]
fn redirect_authorization(map: &mut HeaderMap, vars: &Vars, range: Range<usize>) {
    // (Looked for among the variables, not in the map: see the note below.)
    let sent = vars
        .iter()
        .any(|(n, v)| n == b"HTTP_AUTHORIZATION" && !v.is_empty());
    if !range.is_empty() && !sent {
        if let Ok(v) = HeaderValue::from_maybe_shared(vars.shared(range)) {
            // (`append`, the header being absent: one more call site of `insert` or
            // `contains_key` made LLVM stop inlining them into the request path,
            // +260 instructions per request by callgrind.)
            map.append(http::header::AUTHORIZATION, v);
        }
    }
}

/// Sets each header of the `HTTP_*` variables `names` to every valid value the
/// variables of that name hold, in the order received: one pass over the variables.
#[cold]
fn all_values(map: &mut HeaderMap, vars: &Vars, mut names: Vec<&[u8]>) {
    names.sort_unstable();
    names.dedup();
    let header = |var: &[u8]| {
        let h: Vec<u8> = var
            .strip_prefix(b"HTTP_")
            .unwrap_or(var)
            .iter()
            .map(|&b| {
                if b == b'_' {
                    b'-'
                } else {
                    b.to_ascii_lowercase()
                }
            })
            .collect();
        HeaderName::from_bytes(&h).ok()
    };
    for &name in &names {
        if let Some(h) = header(name) {
            map.remove(&h);
        }
    }
    for (n, range) in vars.iter_ranges() {
        if names.binary_search(&n).is_ok() {
            if let (Some(h), Ok(v)) = (
                header(n),
                HeaderValue::from_maybe_shared(vars.shared(range)),
            ) {
                map.append(h, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::RequestExt;

    fn settings() -> MapSettings {
        MapSettings {
            force_script_name: None,
            exe_name: Some("mysite.fcgi".into()),
            trust_forwarded: false,
            max_body: None,
        }
    }

    /// The names looked up by their CGI name are the ones lowercasing gives; the rest
    /// (and near misses) take the general way.
    #[test]
    fn common_headers_are_what_lowercasing_gives() {
        let slow = |cgi: &str| {
            HeaderName::from_bytes(cgi.to_ascii_lowercase().replace('_', "-").as_bytes()).unwrap()
        };
        // What Chrome, Firefox, curl and the usual proxies send.
        let common = [
            "TE",
            "DNT",
            "VIA",
            "HOST",
            "RANGE",
            "ACCEPT",
            "COOKIE",
            "ORIGIN",
            "PRAGMA",
            "REFERER",
            "UPGRADE",
            "IF_MATCH",
            "IF_RANGE",
            "PRIORITY",
            "FORWARDED",
            "SEC_CH_UA",
            "X_REAL_IP",
            "USER_AGENT",
            "CONNECTION",
            "KEEP_ALIVE",
            "CONTENT_TYPE",
            "X_CSRF_TOKEN",
            "AUTHORIZATION",
            "CACHE_CONTROL",
            "IF_NONE_MATCH",
            "CONTENT_LENGTH",
            "SEC_FETCH_DEST",
            "SEC_FETCH_MODE",
            "SEC_FETCH_SITE",
            "SEC_FETCH_USER",
            "ACCEPT_ENCODING",
            "ACCEPT_LANGUAGE",
            "X_FORWARDED_FOR",
            "SEC_CH_UA_MOBILE",
            "X_REQUESTED_WITH",
            "X_FORWARDED_HOST",
            "IF_MODIFIED_SINCE",
            "X_FORWARDED_PROTO",
            "SEC_CH_UA_PLATFORM",
            "IF_UNMODIFIED_SINCE",
            "UPGRADE_INSECURE_REQUESTS",
        ];
        for cgi in common {
            let fast = common_header(cgi.as_bytes());
            assert_eq!(fast.as_ref(), Some(&slow(cgi)), "{cgi}");
            assert_eq!(fast.unwrap().as_str(), slow(cgi).as_str());
        }
        for other in [
            "HOSTS",
            "ACCEPT_CHARSET",
            "X_FORWARDED_PORT",
            "host",
            "Accept",
            "X",
            "",
        ] {
            assert_eq!(common_header(other.as_bytes()), None, "{other}");
        }
        // The map holds the same names and values either way.
        let mut pairs: Vec<(String, String)> = common
            .iter()
            .map(|c| (format!("HTTP_{c}"), format!("v-{c}")))
            .collect();
        pairs.push(("HTTP_X_OTHER_THING".into(), "o".into()));
        pairs.push(("REQUEST_METHOD".into(), "GET".into()));
        let map = headers(&Vars::from_pairs(pairs), true);
        for c in common.iter().filter(|c| !c.starts_with("CONTENT_")) {
            assert_eq!(map.get(slow(c)).unwrap(), &format!("v-{c}")[..], "{c}");
        }
        assert_eq!(map["x-other-thing"], "o");
        assert_eq!(map.len(), common.len() - 2 + 1);
    }

    #[test]
    fn builds_method_uri_headers() {
        let vars = Vars::from_pairs([
            ("REQUEST_METHOD", "POST"),
            ("SCRIPT_NAME", "/blog/mysite.fcgi"),
            ("PATH_INFO", "/café/a b"),
            ("QUERY_STRING", "x=1&y={2}"),
            ("REQUEST_URI", "/blog/caf%C3%A9/a%20b?x=1&y={2}"),
            ("REDIRECT_URL", "/blog/café/a b"),
            ("CONTENT_TYPE", "text/plain"),
            ("CONTENT_LENGTH", "3"),
            ("HTTP_X_CUSTOM_THING", "yes"),
            ("HTTP_PROXY", "http://evil"),
            ("HTTP_COOKIE", "a=1"),
            ("SERVER_PROTOCOL", "HTTP/1.0"),
        ]);
        let req = build(vars, Body::empty(), Mode::Cgi, Role::Responder, &settings()).unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "/caf%C3%A9/a%20b?x=1&y=%7B2%7D");
        assert_eq!(req.version(), Version::HTTP_10);
        assert_eq!(req.headers()["x-custom-thing"], "yes");
        assert_eq!(req.headers()["content-type"], "text/plain");
        assert_eq!(req.headers()["content-length"], "3");
        assert!(req.headers().get("proxy").is_none());
        assert_eq!(req.script_name(), "/blog");
        let ctx = req.context().unwrap();
        assert_eq!(ctx.query_string(), "x=1&y={2}");
        assert!(ctx.vars().get("HTTP_PROXY").is_none());
    }

    /// A chunked upload nginx has read whole comes with CONTENT_LENGTH and the client's
    /// HTTP_TRANSFER_ENCODING: the app sees the length alone. With no length (nginx's
    /// `fastcgi_request_buffering off`) the body is read to its end, and the header
    /// stays, as hyper gives it.
    #[test]
    fn transfer_encoding_beside_a_length_is_left_out() {
        for (len, te) in [("11", None), ("", Some("chunked"))] {
            let vars = Vars::from_pairs([
                ("REQUEST_METHOD", "POST"),
                ("SCRIPT_NAME", ""),
                ("PATH_INFO", "/"),
                ("CONTENT_LENGTH", len),
                ("HTTP_TRANSFER_ENCODING", "chunked"),
            ]);
            let req = build(vars, Body::empty(), Mode::Cgi, Role::Responder, &settings()).unwrap();
            let h = req.headers();
            assert_eq!(
                h.get("transfer-encoding").map(|v| v.to_str().unwrap()),
                te,
                "{len}"
            );
            let cl = h.get("content-length").map(|v| v.to_str().unwrap());
            assert_eq!(cl, Some(len).filter(|l| !l.is_empty()), "{len}");
        }
    }

    /// A CONTENT_LENGTH sent twice (a configuration adding its own after an include):
    /// the headers describe the body as it is read, by the last value.
    #[test]
    fn a_repeated_content_length_is_its_last_value_in_the_headers_too() {
        for (method, lens, te, header) in [
            ("GET", ["5", "0"], false, None),
            ("POST", ["0", "5"], false, Some("5")),
            ("POST", ["5", "0"], false, Some("0")),
            ("POST", ["5", ""], true, None),
        ] {
            let mut pairs = vec![
                ("REQUEST_METHOD", method),
                ("SCRIPT_NAME", ""),
                ("PATH_INFO", "/"),
                ("CONTENT_LENGTH", lens[0]),
                ("CONTENT_LENGTH", lens[1]),
            ];
            if te {
                pairs.push(("HTTP_TRANSFER_ENCODING", "chunked"));
            }
            let vars = Vars::from_pairs(pairs);
            let req = build(vars, Body::empty(), Mode::Cgi, Role::Responder, &settings()).unwrap();
            let h = req.headers();
            let got = h.get("content-length").map(|v| v.to_str().unwrap());
            assert_eq!(got, header, "{method} {lens:?}");
            assert_eq!(
                h.get("transfer-encoding").is_some(),
                te,
                "{method} {lens:?}"
            );
            assert_eq!(
                h.get_all("content-length").iter().count(),
                usize::from(header.is_some())
            );
        }
    }

    /// `RequestExt::url_for`: the context's absolute URL, or the path alone for a
    /// request built without one.
    #[test]
    fn url_for_through_the_request() {
        let vars = Vars::from_pairs([
            ("REQUEST_METHOD", "GET"),
            ("SCRIPT_NAME", "/blog/mysite.fcgi"),
            ("PATH_INFO", "/x"),
            ("REQUEST_URI", "/blog/x"),
            ("REDIRECT_URL", "/blog/x"),
            ("HTTP_HOST", "example.com"),
            ("HTTPS", "on"),
        ]);
        let req = build(vars, Body::empty(), Mode::Cgi, Role::Responder, &settings()).unwrap();
        assert_eq!(req.url_for("/posts/1"), "https://example.com/blog/posts/1");
        let bare = http::Request::new(());
        assert_eq!(bare.url_for("/posts/a b"), "/posts/a%20b");
    }

    /// mod_fcgid and SCGI send `CONTENT_LENGTH=0` with every request: an empty GET or
    /// HEAD has no `content-length` header, as under nginx and as the client sent it;
    /// a POST or PUT keeps its 0, and a GET with a body its length.
    #[test]
    fn an_empty_gets_content_length_of_0_is_no_header() {
        for (method, len, header) in [
            ("GET", "0", None),
            ("GET", "00", None),
            ("HEAD", "0", None),
            ("GET", "5", Some("5")),
            ("POST", "0", Some("0")),
            ("PUT", "0", Some("0")),
            ("DELETE", "0", Some("0")),
        ] {
            let vars = Vars::from_pairs([
                ("REQUEST_METHOD", method),
                ("SCRIPT_NAME", ""),
                ("PATH_INFO", "/"),
                ("CONTENT_LENGTH", len),
            ]);
            let req = build(vars, Body::empty(), Mode::Cgi, Role::Responder, &settings()).unwrap();
            let got = req
                .headers()
                .get("content-length")
                .map(|v| v.to_str().unwrap());
            assert_eq!(got, header, "{method} {len}");
            assert_eq!(
                req.context().unwrap().vars().get_str("CONTENT_LENGTH"),
                Some(len)
            );
        }
    }

    /// What the `axum` feature hands axum as `OriginalUri` and `ConnectInfo`.
    #[cfg(feature = "axum")]
    #[test]
    fn the_mounted_uri_and_the_client_socket_address() {
        let req_for = |script: &str, path: &str, query: &str, extra: &[(&str, &str)], trust| {
            // As after the .htaccess rewrite: the client asked for the folder's URL.
            let redirect_url = format!("{}{path}", script.trim_end_matches("/mysite.fcgi"));
            let mut pairs = vec![
                ("REQUEST_METHOD", "GET"),
                ("SCRIPT_NAME", script),
                ("PATH_INFO", path),
                ("QUERY_STRING", query),
                ("REDIRECT_URL", &redirect_url),
            ];
            pairs.extend_from_slice(extra);
            let s = MapSettings {
                trust_forwarded: trust,
                ..settings()
            };
            build(
                Vars::from_pairs(pairs),
                Body::empty(),
                Mode::FastCgi,
                Role::Responder,
                &s,
            )
            .unwrap()
        };
        for (script, path, query, want) in [
            ("/blog/mysite.fcgi", "/posts/1", "x=1", "/blog/posts/1?x=1"),
            ("/blog/mysite.fcgi", "/", "", "/blog/"),
            // The mount point itself: the app sees `/`, the client asked for `/blog`.
            ("/blog/mysite.fcgi", "", "", "/blog"),
            ("/blog/mysite.fcgi", "", "a=b", "/blog?a=b"),
            (
                "/my blog/mysite.fcgi",
                "/café",
                "q=%20",
                "/my%20blog/caf%C3%A9?q=%20",
            ),
            ("/mysite.fcgi", "/posts/1", "x=1", "/posts/1?x=1"),
            ("/mysite.fcgi", "/", "", "/"),
        ] {
            let req = req_for(script, path, query, &[], false);
            let ctx = req.context().unwrap();
            let got = ctx.mounted_uri(req.uri()).unwrap();
            assert_eq!(got, want, "{script} {path:?} {query:?}");
        }
        let addr = |extra: &[(&str, &str)], trust| {
            let req = req_for("/mysite.fcgi", "/", "", extra, trust);
            req.context()
                .unwrap()
                .client_socket_addr()
                .map(|a| a.to_string())
        };
        let v4 = [("REMOTE_ADDR", "203.0.113.7"), ("REMOTE_PORT", "51234")];
        assert_eq!(addr(&v4, false).as_deref(), Some("203.0.113.7:51234"));
        let v6 = [("REMOTE_ADDR", "2001:db8::5"), ("REMOTE_PORT", "443")];
        assert_eq!(addr(&v6, false).as_deref(), Some("[2001:db8::5]:443"));
        assert_eq!(
            addr(&[("REMOTE_ADDR", "10.0.0.1")], false).as_deref(),
            Some("10.0.0.1:0")
        );
        assert_eq!(addr(&[], false), None);
        assert_eq!(addr(&[("REMOTE_ADDR", "unix:")], false), None);
        // Behind a trusted proxy: the last X-Forwarded-For entry, without the proxy's port.
        let fwd = [
            ("REMOTE_ADDR", "127.0.0.1"),
            ("REMOTE_PORT", "40000"),
            ("HTTP_X_FORWARDED_FOR", "198.51.100.1, 192.0.2.9"),
        ];
        assert_eq!(addr(&fwd, true).as_deref(), Some("192.0.2.9:0"));
        assert_eq!(addr(&fwd, false).as_deref(), Some("127.0.0.1:40000"));
    }

    #[test]
    fn url_for_encodes_the_mount_prefix() {
        for (folder, want) in [
            ("/my blog", "http://example.com/my%20blog/landed"),
            ("/caf\u{e9}", "http://example.com/caf%C3%A9/landed"),
            ("", "http://example.com/landed"),
        ] {
            let script = format!("{folder}/mysite.fcgi");
            let vars = Vars::from_pairs([
                ("REQUEST_METHOD", "GET"),
                ("SCRIPT_NAME", script.as_str()),
                ("PATH_INFO", "/x"),
                ("HTTP_HOST", "example.com"),
            ]);
            let req = build(vars, Body::empty(), Mode::Cgi, Role::Responder, &settings()).unwrap();
            assert_eq!(req.script_name(), format!("{folder}/mysite.fcgi"));
            let ctx = req.context().unwrap();
            assert_eq!(
                ctx.url_for("/landed"),
                want.replace("/landed", "/mysite.fcgi/landed"),
                "{folder:?}"
            );
        }
    }

    /// Links: the prefix encoded, a missing leading `/` added, what no URL may hold
    /// raw escaped in the app's path, its `%` escapes, query and fragment kept.
    #[test]
    fn path_for_and_url_for_build_links_under_the_mount() {
        let vars = Vars::from_pairs([
            ("REQUEST_METHOD", "GET"),
            ("SCRIPT_NAME", "/docs#1/mysite.fcgi"),
            ("PATH_INFO", "/form"),
            ("REQUEST_URI", "/docs%231/form"),
            ("HTTP_HOST", "example.com"),
        ]);
        let req = build(vars, Body::empty(), Mode::Cgi, Role::Responder, &settings()).unwrap();
        assert_eq!(req.script_name(), "/docs#1");
        for (path, want) in [
            ("/form", "/docs%231/form"),
            ("thanks", "/docs%231/thanks"),
            ("/thanks?name=Al B", "/docs%231/thanks?name=Al%20B"),
            ("/a%2Fb?x=1&y=%25#top", "/docs%231/a%2Fb?x=1&y=%25#top"),
            ("/caf\u{e9}", "/docs%231/caf%C3%A9"),
            ("", "/docs%231/"),
        ] {
            assert_eq!(req.path_for(path), want, "{path:?}");
            assert_eq!(
                req.context().unwrap().url_for(path),
                format!("http://example.com{want}"),
                "{path:?}"
            );
        }
        // A request built without fcgi-shim (in a test): the path alone.
        let bare = http::Request::new(());
        assert_eq!(bare.path_for("x y"), "/x%20y");
        // Never a protocol-relative URL (another site), whatever the app passes.
        assert_eq!(bare.path_for("//evil.example/x"), "/evil.example/x");
        assert_eq!(req.path_for("//evil.example"), "/docs%231/evil.example");
    }

    /// An encoded slash in the client's path stays encoded in the app's URI (as under
    /// hyper), when `REQUEST_URI` is otherwise the prefix and `PATH_INFO` exactly.
    #[test]
    fn an_encoded_slash_stays_encoded() {
        let uri_of = |script: &str, path: &str, request_uri: &str, query: &str| {
            let req = build(
                Vars::from_pairs([
                    ("REQUEST_METHOD", "GET"),
                    ("SCRIPT_NAME", script),
                    ("PATH_INFO", path),
                    ("REQUEST_URI", request_uri),
                    ("QUERY_STRING", query),
                ]),
                Body::empty(),
                Mode::FastCgi,
                Role::Responder,
                &MapSettings {
                    exe_name: None,
                    ..settings()
                },
            )
            .unwrap();
            let ctx = req.context().unwrap();
            assert_eq!(ctx.path_info(), path.as_bytes(), "{request_uri}");
            req.uri().to_string()
        };
        // nginx at /app/ (fastcgi_split_path_info), and at the root.
        assert_eq!(
            uri_of("/app", "/p/a/b", "/app/p/a%2Fb?x=1", "x=1"),
            "/p/a%2Fb?x=1"
        );
        assert_eq!(uri_of("", "/f/a/b/c", "/f/a%2fb%2Fc", ""), "/f/a%2fb%2Fc");
        // Other escapes as the client wrote them, with the slash.
        assert_eq!(
            uri_of("/app", "/p/é/a b/", "/app/p/%c3%a9/a%20b%2F", ""),
            "/p/%c3%a9/a%20b%2F"
        );
        // No encoded slash: the URI is rebuilt from PATH_INFO, as always.
        assert_eq!(uri_of("/app", "/p/é", "/app/p/%c3%a9", ""), "/p/%C3%A9");
        // Only in the prefix: nothing moves in the app's path.
        assert_eq!(uri_of("/my/app", "/x", "/my%2Fapp/x", ""), "/x");
        // A path the server resolved is not the client's: PATH_INFO's.
        assert_eq!(uri_of("/app", "/p/a/b", "/app/x/../p/a%2Fb", ""), "/p/a/b");
        assert_eq!(uri_of("/app", "/p/a/b", "/app/p//a%2Fb", ""), "/p/a/b");
        // Bytes a URI may not hold raw: PATH_INFO's.
        assert_eq!(uri_of("/app", "/a\"/b", "/app/a\"%2Fb", ""), "/a%22/b");
        // An absolute-form target (rare) keeps the decoded path.
        assert_eq!(uri_of("/app", "/a/b", "http://h/app/a%2Fb", ""), "/a/b");
    }

    /// Apache with `AllowEncodedSlashes NoDecode` (the value its docs advise) leaves a
    /// client's `%2F` as it is in `PATH_INFO` and `REDIRECT_URL`, and mod_rewrite in
    /// `.htaccess` decodes a `%252F` into the same `%2F`: the client's `REQUEST_URI`
    /// tells them apart. (Variables captured from Apache 2.4.71 + mod_fcgid with
    /// htaccess/fcgid-subdir.htaccess in /blog/ and fcgid-root.htaccess at /.)
    #[test]
    fn an_encoded_slash_apache_did_not_decode() {
        let get = |pairs: &[(&str, &str)]| {
            let mut all = vec![("REQUEST_METHOD", "GET")];
            all.extend_from_slice(pairs);
            if !pairs.iter().any(|(k, _)| *k == "QUERY_STRING") {
                all.push(("QUERY_STRING", ""));
            }
            let req = build(
                Vars::from_pairs(all),
                Body::empty(),
                Mode::FastCgi,
                Role::Responder,
                &settings(),
            )
            .unwrap();
            let ctx = req.context().unwrap();
            (
                ctx.script_name().to_owned(),
                String::from_utf8_lossy(ctx.path_info()).into_owned(),
                req.uri().to_string(),
            )
        };
        let nodecode = |uri: &str, script: &str, path: &str, redirect: Option<&str>| {
            let mut pairs = vec![
                ("REQUEST_URI", uri),
                ("SCRIPT_NAME", script),
                ("PATH_INFO", path),
            ];
            if let Some(r) = redirect {
                pairs.push(("REDIRECT_URL", r));
            }
            get(&pairs)
        };
        let blog = "/blog/mysite.fcgi";
        // As with `AllowEncodedSlashes On`: the client's encoding, a decoded path.
        assert_eq!(
            nodecode(
                "/blog/files/a%2Fb",
                blog,
                "/files/a%2Fb",
                Some("/blog/files/a%2Fb")
            ),
            ("/blog".into(), "/files/a/b".into(), "/files/a%2Fb".into())
        );
        assert_eq!(
            nodecode(
                "/blog/files/a%2fb",
                blog,
                "/files/a%2fb",
                Some("/blog/files/a%2fb")
            ),
            ("/blog".into(), "/files/a/b".into(), "/files/a%2fb".into())
        );
        // The same variables but for REQUEST_URI: a `%25` the client sent, kept apart.
        assert_eq!(
            nodecode(
                "/blog/files/a%252Fb",
                blog,
                "/files/a%2Fb",
                Some("/blog/files/a%2Fb")
            ),
            (
                "/blog".into(),
                "/files/a%2Fb".into(),
                "/files/a%252Fb".into()
            )
        );
        // At the root, with a query; and the script's own URL, no rewrite.
        let root = get(&[
            ("REQUEST_URI", "/files/a%2Fb?x=1"),
            ("SCRIPT_NAME", "/mysite.fcgi"),
            ("PATH_INFO", "/files/a%2Fb"),
            ("REDIRECT_URL", "/files/a%2Fb"),
            ("QUERY_STRING", "x=1"),
        ]);
        assert_eq!(
            root,
            ("".into(), "/files/a/b".into(), "/files/a%2Fb?x=1".into())
        );
        assert_eq!(
            nodecode("/blog/mysite.fcgi/files/a%2Fb", blog, "/files/a%2Fb", None),
            (blog.into(), "/files/a/b".into(), "/files/a%2Fb".into())
        );
        // A literal `%2F` in PATH_INFO where the client's path has none: left alone.
        assert_eq!(
            nodecode("/blog/files/a/b", blog, "/files/a%2Fb", None).2,
            "/files/a%252Fb"
        );
    }

    /// The Authorization header as Apache rewrites pass it: `HTTP_AUTHORIZATION`, or
    /// `REDIRECT_HTTP_AUTHORIZATION` after the rewrite to the app; an empty one (the
    /// rewrite ran for a request without the header) is none.
    #[test]
    fn authorization_from_apache_rewrites() {
        let auth = |pairs: &[(&str, &str)]| {
            let mut all = vec![
                ("REQUEST_METHOD", "GET"),
                ("SCRIPT_NAME", ""),
                ("PATH_INFO", "/"),
            ];
            all.extend_from_slice(pairs);
            let req = build(
                Vars::from_pairs(all),
                Body::empty(),
                Mode::Cgi,
                Role::Responder,
                &settings(),
            )
            .unwrap();
            let v: Vec<_> = req
                .headers()
                .get_all("authorization")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect();
            v
        };
        assert_eq!(auth(&[("HTTP_AUTHORIZATION", "Bearer a")]), ["Bearer a"]);
        assert_eq!(
            auth(&[("REDIRECT_HTTP_AUTHORIZATION", "Bearer r")]),
            ["Bearer r"]
        );
        assert_eq!(
            auth(&[
                ("REDIRECT_HTTP_AUTHORIZATION", "Bearer r"),
                ("HTTP_AUTHORIZATION", "Bearer a")
            ]),
            ["Bearer a"]
        );
        assert_eq!(auth(&[("HTTP_AUTHORIZATION", "")]), Vec::<String>::new());
        assert_eq!(
            auth(&[
                ("HTTP_AUTHORIZATION", ""),
                ("REDIRECT_HTTP_AUTHORIZATION", "Basic x")
            ]),
            ["Basic x"]
        );
        assert_eq!(
            auth(&[("REDIRECT_HTTP_AUTHORIZATION", "")]),
            Vec::<String>::new()
        );
        assert_eq!(auth(&[]), Vec::<String>::new());
    }

    /// nginx's `include fastcgi_params;` then a `fastcgi_param` of the same name sends
    /// both: the last wins, in the context and as one header (Host, CONTENT_*). A
    /// request header sent twice keeps both values. A default port in the Host is left
    /// out of absolute URLs.
    #[test]
    fn a_repeated_variable_is_its_last_value() {
        let req = build(
            Vars::from_pairs([
                ("REQUEST_METHOD", "GET"),
                ("HTTP_HOST", "example.com"),
                ("REMOTE_ADDR", "127.0.0.1"),
                ("SCRIPT_NAME", "/app"),
                ("PATH_INFO", "/x"),
                ("HTTP_HOST", "example.com:8443"),
                ("REMOTE_ADDR", "203.0.113.7"),
                // A header the client sent on two lines, as nginx 1.22 passes it.
                ("HTTP_X_DUP", "a"),
                ("HTTP_ACCEPT", "text/html"),
                ("HTTP_X_DUP", "b"),
                ("CONTENT_TYPE", "text/plain"),
                ("CONTENT_TYPE", "text/html"),
            ]),
            Body::empty(),
            Mode::Cgi,
            Role::Responder,
            &settings(),
        )
        .unwrap();
        let hosts: Vec<_> = req.headers().get_all("host").iter().collect();
        assert_eq!(hosts, ["example.com:8443"]);
        let dups: Vec<_> = req.headers().get_all("x-dup").iter().collect();
        assert_eq!(dups, ["a", "b"]);
        assert_eq!(req.headers()["x-dup"], "a");
        let types: Vec<_> = req.headers().get_all("content-type").iter().collect();
        assert_eq!(types, ["text/html"]);

        // Several names repeated, interleaved; and thousands of lines of one name (a
        // client can send that many): every value, in order, in one more pass.
        let mut pairs = vec![("REQUEST_METHOD".to_owned(), "GET".to_owned())];
        for (n, v) in [
            ("A", "1"),
            ("B", "p"),
            ("A", "2"),
            ("C", "x"),
            ("B", "q"),
            ("A", "3"),
        ] {
            pairs.push((format!("HTTP_X_{n}"), v.to_owned()));
        }
        for i in 0..4000 {
            pairs.push(("HTTP_X_MANY".to_owned(), i.to_string()));
        }
        let lines = build(
            Vars::from_pairs(pairs),
            Body::empty(),
            Mode::Cgi,
            Role::Responder,
            &settings(),
        )
        .unwrap();
        let all = |n: &str| -> Vec<String> {
            lines
                .headers()
                .get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(all("x-a"), ["1", "2", "3"]);
        assert_eq!(all("x-b"), ["p", "q"]);
        assert_eq!(all("x-c"), ["x"]);
        let many = all("x-many");
        assert_eq!(
            (many.len(), many[0].as_str(), many[3999].as_str()),
            (4000, "0", "3999")
        );
        let ctx = req.context().unwrap();
        assert_eq!(ctx.remote_addr(), Some([203, 0, 113, 7].into()));
        assert_eq!(ctx.url_for("/y"), "http://example.com:8443/app/y");
        for (host, https, want) in [
            ("example.com:80", "off", "http://example.com"),
            ("example.com:443", "on", "https://example.com"),
            ("example.com:443", "off", "http://example.com:443"),
            ("[::1]:80", "off", "http://[::1]"),
        ] {
            let req = build(
                Vars::from_pairs([
                    ("REQUEST_METHOD", "GET"),
                    ("HTTP_HOST", host),
                    ("HTTPS", https),
                ]),
                Body::empty(),
                Mode::Cgi,
                Role::Responder,
                &settings(),
            )
            .unwrap();
            assert_eq!(req.context().unwrap().origin(), want, "{host} {https}");
        }
    }

    #[test]
    fn every_byte_survives_in_path_and_query() {
        for b in 0..=255u8 {
            let path = [b'/', b];
            let q = [b'a', b'=', b];
            let uri = app_uri(&path, &q).unwrap_or_else(|e| panic!("byte {b}: {e:?}"));
            let p = mount::percent_decode(uri.path().as_bytes());
            assert_eq!(&*p, &path[..], "byte {b}");
        }
    }

    #[test]
    fn root_and_relative_paths_get_one_leading_slash() {
        for (path, query, want) in [
            ("", "", "/"),
            ("/", "", "/"),
            ("", "a=1", "/?a=1"),
            ("/", "a=1", "/?a=1"),
            ("x", "", "/x"),
            ("/x/", "b", "/x/?b"),
        ] {
            let uri = app_uri(path.as_bytes(), query.as_bytes()).unwrap();
            assert_eq!(uri, want, "{path:?} {query:?}");
        }
    }

    #[test]
    fn header_names_of_any_length_are_converted() {
        // The stack buffer holds 64 bytes; longer names take the other path.
        for len in [1, 63, 64, 65, 200] {
            let var = format!("HTTP_{}", "X_A".repeat(len).split_at(len).0);
            let vars = Vars::from_pairs([("REQUEST_METHOD", "GET"), (var.as_str(), "v")]);
            let req = build(vars, Body::empty(), Mode::Cgi, Role::Responder, &settings()).unwrap();
            let want = "x-a".repeat(len)[..len].to_owned();
            assert_eq!(req.headers().len(), 1, "{len}");
            assert_eq!(req.headers()[want.as_str()], "v", "{len}");
        }
    }

    #[test]
    fn missing_method_is_a_server_error() {
        let vars = Vars::from_pairs([("SCRIPT_NAME", "/x")]);
        let e = build(vars, Body::empty(), Mode::Cgi, Role::Responder, &settings()).unwrap_err();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    /// `CONTENT_LENGTH=-1` (Caddy 2.6 to 2.8 on a chunked upload) is a body to the end
    /// of the stream, not a `content-length: -1` header, which no HTTP server would
    /// hand an app (RFC 9110 8.6: digits only).
    #[test]
    fn an_unknown_content_length_is_no_header() {
        let vars = Vars::from_pairs([
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_LENGTH", "-1"),
            ("CONTENT_TYPE", "text/plain"),
        ]);
        let req = build(vars, Body::empty(), Mode::Cgi, Role::Responder, &settings()).unwrap();
        assert!(
            req.headers().get("content-length").is_none(),
            "{:?}",
            req.headers()
        );
        assert_eq!(req.headers()["content-type"], "text/plain");
    }

    #[test]
    fn content_length_rules() {
        let v = |s: &str| Vars::from_pairs([("CONTENT_LENGTH", s)]);
        assert_eq!(content_length(&Vars::new()), Ok(DeclaredLength::Absent));
        assert_eq!(content_length(&v("")), Ok(DeclaredLength::Absent));
        assert_eq!(content_length(&v("42")), Ok(DeclaredLength::Exact(42)));
        assert_eq!(content_length(&v("-1")), Ok(DeclaredLength::Unknown));
        assert!(content_length(&v("-2")).is_err());
        assert!(content_length(&v("-01")).is_err());
        assert!(content_length(&v("-")).is_err());
        assert!(content_length(&v("4 2")).is_err());
        assert!(content_length(&v("99999999999999999999999")).is_err());
    }
}
