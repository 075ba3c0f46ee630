// What the web server asserts about a request (not what the client claims), reached
// through a request extension.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::mount::Mount;
use crate::record::Role;
use crate::vars::Vars;

/// How this request reached the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mode {
    /// FastCGI, on a socket the web server passed (fd 0) or one we listen on.
    FastCgi,
    /// One CGI request from the environment and stdin.
    Cgi,
    /// SCGI, on a socket we listen on.
    Scgi,
    /// The plain-HTTP development server.
    Http,
}

impl Mode {
    /// `"fastcgi"`, `"cgi"`, `"scgi"` or `"http"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::FastCgi => "fastcgi",
            Mode::Cgi => "cgi",
            Mode::Scgi => "scgi",
            Mode::Http => "http",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The server-asserted facts about one request: who connected, over what, where the
/// app is mounted, and every raw CGI variable.
///
/// It travels in the request's extensions (cheap to clone) and is read with
/// [`RequestExt`]. Nothing here comes from a request header, so a client cannot forge
/// it; `X-Forwarded-*` headers stay ordinary headers unless the app opts in
/// (`FCGI_TRUST_FORWARDED=1`, [`crate::Builder::trust_forwarded`]) because a proxy it
/// controls sets them.
#[derive(Clone)]
pub struct Context(Arc<Inner>);

struct Inner {
    mode: Mode,
    role: Role,
    vars: Vars,
    mount: Mount,
    trust_forwarded: bool,
}

/// `FCGI_ALLOWED_HOSTS`, set once when the server starts (process-wide, like the
/// rest of the configuration; read only when an absolute URL is built).
static ALLOWED_HOSTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

pub(crate) fn set_allowed_hosts(hosts: Option<Vec<String>>) {
    if let Some(h) = hosts {
        let _ = ALLOWED_HOSTS.set(h.into_iter().map(|h| h.to_ascii_lowercase()).collect());
    }
}

/// Whether `authority` (a host, maybe with a port) may be used for absolute URLs.
fn host_allowed(authority: &str) -> bool {
    ALLOWED_HOSTS
        .get()
        .is_none_or(|allowed| host_in(allowed, authority))
}

fn host_in(allowed: &[String], authority: &str) -> bool {
    let host = match authority.rsplit_once(':') {
        // An IPv6 literal keeps its brackets; a port follows the last colon after `]`.
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => authority,
    }
    .to_ascii_lowercase();
    allowed.iter().any(|a| {
        a == "*"
            || *a == host
            || a.strip_prefix('.').is_some_and(|d| {
                host == d || host.strip_suffix(d).is_some_and(|sub| sub.ends_with('.'))
            })
    })
}

fn is_on(v: &str) -> bool {
    v.eq_ignore_ascii_case("on") || v == "1" || v.eq_ignore_ascii_case("true")
}

impl Context {
    pub(crate) fn new(
        mode: Mode,
        role: Role,
        vars: Vars,
        mount: Mount,
        trust_forwarded: bool,
    ) -> Context {
        Context(Arc::new(Inner {
            mode,
            role,
            vars,
            mount,
            trust_forwarded,
        }))
    }

    /// A forwarded header's value, only when the app opted in to trusting them.
    /// An `X-Forwarded-*` value when trusted: the last of a list, the one the proxy in
    /// front added. The entries before it came with the request, from the client or
    /// from proxies before ours (nginx's `$proxy_add_x_forwarded_for` appends to what
    /// the client sent), so the first one is the client's to choose.
    fn forwarded(&self, var: &str) -> Option<&str> {
        if !self.0.trust_forwarded {
            return None;
        }
        let v = self.0.vars.non_empty(var)?;
        Some(v.rsplit(',').next().unwrap_or(v).trim()).filter(|v| !v.is_empty())
    }

    /// How the request arrived (FastCGI, CGI, ...).
    pub fn mode(&self) -> Mode {
        self.0.mode
    }

    /// The FastCGI role; `Responder` for every other mode.
    pub fn role(&self) -> Role {
        self.0.role
    }

    /// The mount prefix rebuilt from the server's variables: `""` at the site root,
    /// `"/blog"` when the app serves `/blog/...`. Never ends with `/`. Prefix it to
    /// app-relative paths to build links.
    pub fn script_name(&self) -> &str {
        &self.0.mount.script_name
    }

    /// The app-relative path, percent-decoded (`PATH_INFO` as rebuilt); empty at the
    /// app's root. The request's `uri()` carries the same path, percent-encoded.
    pub fn path_info(&self) -> &[u8] {
        &self.0.mount.path_info
    }

    /// Which variable the mount prefix came from (for diagnostics).
    pub fn mount_source(&self) -> crate::mount::MountSource {
        self.0.mount.source
    }

    /// `REQUEST_URI` exactly as the web server sent it (the URL before rewriting).
    pub fn original_uri(&self) -> Option<&str> {
        self.0.vars.get_str("REQUEST_URI")
    }

    /// The raw `QUERY_STRING` ("" when absent), or the request's own query where the
    /// server's lost it (a `%23` cut by mod_rewrite; see [`crate::mount::MountSource`]).
    /// Bytes that are not UTF-8 come percent-encoded, as in the request's URI.
    pub fn query_string(&self) -> &str {
        match &self.0.mount.query {
            Some(q) => std::str::from_utf8(q).unwrap_or(""),
            None => self.0.vars.get_str("QUERY_STRING").unwrap_or(""),
        }
    }

    /// `REMOTE_ADDR`: the client (or the proxy in front of the web server). With
    /// `FCGI_TRUST_FORWARDED`, the last address of `X-Forwarded-For` instead: the
    /// client as the proxy in front saw it.
    pub fn remote_addr(&self) -> Option<IpAddr> {
        if let Some(addr) = self
            .forwarded("HTTP_X_FORWARDED_FOR")
            .and_then(|a| a.parse().ok())
        {
            return Some(addr);
        }
        self.0.vars.get_str("REMOTE_ADDR")?.parse().ok()
    }

    /// `REMOTE_PORT`.
    pub fn remote_port(&self) -> Option<u16> {
        self.0.vars.get_str("REMOTE_PORT")?.parse().ok()
    }

    /// The client as a socket address, what axum's `ConnectInfo<SocketAddr>` holds
    /// under its own server: [`Context::remote_addr`] with `REMOTE_PORT`, or port 0
    /// when the address came from `X-Forwarded-For` (the port is the proxy's then)
    /// or no port was sent.
    #[cfg(feature = "axum")]
    pub(crate) fn client_socket_addr(&self) -> Option<std::net::SocketAddr> {
        use std::net::SocketAddr;
        if let Some(ip) = self
            .forwarded("HTTP_X_FORWARDED_FOR")
            .and_then(|a| a.parse().ok())
        {
            return Some(SocketAddr::new(ip, 0));
        }
        let ip = self.0.vars.get_str("REMOTE_ADDR")?.parse().ok()?;
        Some(SocketAddr::new(ip, self.remote_port().unwrap_or(0)))
    }

    /// The request's URI with the mount prefix in front, as axum's `OriginalUri`
    /// holds it for a router nested under that prefix: `/blog/posts/1?x=1` when the
    /// app sees `/posts/1?x=1` under `/blog/`, `/blog` for a request of the mount
    /// point itself. `uri` is the request's (app-relative) URI.
    #[cfg(feature = "axum")]
    pub(crate) fn mounted_uri(&self, uri: &http::Uri) -> Option<http::Uri> {
        let prefix = self.script_name();
        if prefix.is_empty() {
            return Some(uri.clone());
        }
        let mut s = String::with_capacity(prefix.len() + uri.path().len() + 16);
        crate::request::push_path(&mut s, prefix.as_bytes());
        let rest = uri.path_and_query().map_or("/", |pq| pq.as_str());
        // The app sees `/` for the mount point itself (`/blog`, no path after it).
        match rest.strip_prefix('/') {
            Some(r) if self.path_info().is_empty() && (r.is_empty() || r.starts_with('?')) => {
                s.push_str(r)
            }
            _ => s.push_str(rest),
        }
        http::Uri::try_from(s).ok()
    }

    /// Whether the client connection is TLS: `HTTPS=on` (Apache, nginx, lighttpd) or
    /// `REQUEST_SCHEME=https`; with `FCGI_TRUST_FORWARDED`, `X-Forwarded-Proto` decides.
    pub fn is_https(&self) -> bool {
        if let Some(p) = self.forwarded("HTTP_X_FORWARDED_PROTO") {
            return p.eq_ignore_ascii_case("https");
        }
        let v = &self.0.vars;
        v.get_str("HTTPS").is_some_and(is_on)
            || v.get_str("REQUEST_SCHEME")
                .is_some_and(|s| s.eq_ignore_ascii_case("https"))
    }

    /// `"https"` or `"http"`.
    pub fn scheme(&self) -> &'static str {
        if self.is_https() { "https" } else { "http" }
    }

    /// `SERVER_NAME`.
    pub fn server_name(&self) -> Option<&str> {
        self.0.vars.non_empty("SERVER_NAME")
    }

    /// `SERVER_PORT`.
    pub fn server_port(&self) -> Option<u16> {
        self.0.vars.get_str("SERVER_PORT")?.parse().ok()
    }

    /// `REMOTE_USER`, set when the web server authenticated the client.
    pub fn remote_user(&self) -> Option<&str> {
        self.0.vars.non_empty("REMOTE_USER")
    }

    /// `AUTH_TYPE` ("Basic", "Digest", ...).
    pub fn auth_type(&self) -> Option<&str> {
        self.0.vars.non_empty("AUTH_TYPE")
    }

    /// Every CGI variable the web server sent (`HTTP_PROXY` excluded).
    pub fn vars(&self) -> &Vars {
        &self.0.vars
    }

    /// The scheme and authority the client used, e.g. `https://example.com:8443`,
    /// from the `Host` header the web server routed on, else `SERVER_NAME`/`SERVER_PORT`.
    pub fn origin(&self) -> String {
        let scheme = self.scheme();
        let v = &self.0.vars;
        let host = self
            .forwarded("HTTP_X_FORWARDED_HOST")
            .or_else(|| v.non_empty("HTTP_HOST"))
            .filter(|h| is_valid_authority(h) && host_allowed(h))
            // A default port is left out (nginx's `$host:$server_port` sends it).
            .map(|h| {
                let default = if scheme == "https" { ":443" } else { ":80" };
                h.strip_suffix(default).unwrap_or(h).to_owned()
            })
            .unwrap_or_else(|| {
                fallback_authority(
                    self.server_name(),
                    self.server_port(),
                    scheme,
                    ALLOWED_HOSTS.get().map(Vec::as_slice),
                )
            });
        format!("{scheme}://{host}")
    }

    /// An absolute URL for an app-relative `path`: [`Context::origin`] and
    /// [`Context::path_for`], e.g. `https://example.com/blog/posts/1` for
    /// `"/posts/1"` under `/blog/`. For a `Location` header or a link in an email.
    pub fn url_for(&self, path: &str) -> String {
        let mut url = self.origin();
        push_app_path(&mut url, self.script_name(), path);
        url
    }

    /// The site-relative URL of an app-relative `path`: the mount prefix and the path,
    /// e.g. `/blog/posts/1` for `"/posts/1"` under `/blog/`, `/posts/1` at the root.
    /// For links in pages. The prefix is percent-encoded ([`Context::script_name`] is
    /// decoded: a folder `/my blog/` is `"/my blog"` there and `/my%20blog` here); in
    /// `path`, which may carry `?query` and `#fragment`, only what no URL may hold raw
    /// (spaces, controls, non-ASCII, `"<>\\^`{|}`) is escaped, and a missing leading
    /// `/` is added.
    pub fn path_for(&self, path: &str) -> String {
        let mut url = String::with_capacity(self.script_name().len() + path.len() + 1);
        push_app_path(&mut url, self.script_name(), path);
        url
    }
}

/// Appends the mount prefix (percent-encoded) and an app-relative path.
fn push_app_path(url: &mut String, prefix: &str, path: &str) {
    crate::request::push_path(url, prefix.as_bytes());
    // One leading slash: `//evil.example` at the site root would be a link to another
    // site (a protocol-relative URL), an open redirect when the path came from a user.
    url.push('/');
    crate::request::push_url_text(url, path.trim_start_matches('/'));
}

/// The authority of absolute URLs when the request's host is missing, invalid or not
/// allowed: `SERVER_NAME` (and a port other than the scheme's default), but only when
/// that name is allowed too, since Apache (`UseCanonicalName Off`, its default) and
/// lighttpd fill it from the client's `Host`; else the first name in the allowed list
/// (a `.domain` entry gives `domain`), which only the operator chose.
fn fallback_authority(
    server_name: Option<&str>,
    server_port: Option<u16>,
    scheme: &str,
    allowed: Option<&[String]>,
) -> String {
    // An IPv6 address (the --http server's own, say) is written in brackets in a URL.
    let name = server_name
        .filter(|n| is_valid_authority(n) || n.parse::<std::net::Ipv6Addr>().is_ok())
        .map(|n| {
            if n.contains(':') && !n.starts_with('[') {
                format!("[{n}]")
            } else {
                n.to_owned()
            }
        });
    let Some(name) = name.filter(|n| allowed.is_none_or(|a| host_in(a, n))) else {
        return allowed
            .and_then(|a| a.iter().find(|h| *h != "*" && h.len() > 1))
            .map_or("localhost", |h| h.trim_start_matches('.'))
            .to_owned();
    };
    match server_port {
        Some(p) if !(p == 80 && scheme == "http" || p == 443 && scheme == "https") => {
            format!("{name}:{p}")
        }
        _ => name,
    }
}

/// A host a URL can hold (a name, an IPv4 address, or an IPv6 address in brackets),
/// then maybe a port from 1 to 65535 (RFC 3986 3.2.2 and 3.2.3).
fn is_valid_authority(h: &str) -> bool {
    let (host, port) = match h.rfind(':') {
        Some(i) if !h[i..].contains(']') => (&h[..i], Some(&h[i + 1..])),
        _ => (h, None),
    };
    let host_ok = match host.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => is_host_name(host),
    };
    host_ok
        && port.is_none_or(|p| {
            p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|n| n > 0)
        })
}

fn is_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("mode", &self.0.mode)
            .field("role", &self.0.role)
            .field("script_name", &self.0.mount.script_name)
            .field("vars", &self.0.vars)
            .finish()
    }
}

/// Server-asserted request context, for `http::Request` and `http::request::Parts`.
///
/// ```
/// use fcgi_shim::RequestExt;
/// fn handler(req: http::Request<fcgi_shim::Body>) -> http::Response<String> {
///     // "/blog/posts/1" when the app serves /blog/, "/posts/1" at the site root.
///     let link = req.path_for("/posts/1");
///     http::Response::new(format!("<a href=\"{link}\">first post</a>"))
/// }
/// ```
pub trait RequestExt {
    /// The whole context, when the request came through fcgi-shim.
    fn context(&self) -> Option<&Context>;

    /// The mount prefix (`""` at the root, `"/blog"` in a subdirectory), decoded: to
    /// build links, use [`RequestExt::path_for`], which encodes it.
    fn script_name(&self) -> &str {
        self.context().map_or("", Context::script_name)
    }

    /// The site-relative URL of an app-relative `path` (see [`Context::path_for`]); with
    /// no context (a request built in a test), the path alone, escaped the same way.
    fn path_for(&self, path: &str) -> String {
        match self.context() {
            Some(c) => c.path_for(path),
            None => {
                let mut url = String::with_capacity(path.len() + 1);
                push_app_path(&mut url, "", path);
                url
            }
        }
    }

    /// An absolute URL for an app-relative `path` (see [`Context::url_for`]); with no
    /// context, the path alone, as [`RequestExt::path_for`] gives it.
    fn url_for(&self, path: &str) -> String {
        match self.context() {
            Some(c) => c.url_for(path),
            None => self.path_for(path),
        }
    }

    /// The client address the web server saw.
    fn remote_addr(&self) -> Option<IpAddr> {
        self.context().and_then(Context::remote_addr)
    }

    /// Whether the client connection is TLS, as the web server says.
    fn is_https(&self) -> bool {
        self.context().is_some_and(Context::is_https)
    }

    /// The user the web server authenticated.
    fn remote_user(&self) -> Option<&str> {
        self.context().and_then(Context::remote_user)
    }
}

impl<B> RequestExt for http::Request<B> {
    fn context(&self) -> Option<&Context> {
        self.extensions().get::<Context>()
    }
}

impl RequestExt for http::request::Parts {
    fn context(&self) -> Option<&Context> {
        self.extensions.get::<Context>()
    }
}

#[cfg(test)]
mod tests {
    use super::{fallback_authority, host_in, is_valid_authority};

    #[test]
    fn a_host_is_a_name_or_address_then_maybe_a_port() {
        for h in [
            "example.com",
            "example.com:8080",
            "a_b.example",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:8000",
            "[2001:db8::7]:65535",
        ] {
            assert!(is_valid_authority(h), "{h}");
        }
        for h in [
            "",
            "a:abc",
            "a:80:90",
            "a:99999",
            "a:0",
            "a:",
            "a:+80",
            ":80",
            "[::1",
            "::1]",
            "[::1]x",
            "[zz::1]",
            "[]:80",
            "a b",
            "a@b",
            "evil.com/x",
        ] {
            assert!(!is_valid_authority(h), "{h}");
        }
    }

    /// When the request's host is not allowed, `SERVER_NAME` is used only if it is
    /// allowed too: Apache with `UseCanonicalName Off` copies the client's Host there.
    #[test]
    fn the_fallback_host_is_never_one_the_client_chose() {
        let allowed: Vec<String> = vec!["good.example".into(), ".example.org".into()];
        let domain_only: Vec<String> = vec!["*".into(), ".example.org".into()];
        let a = Some(allowed.as_slice());
        for (name, port, scheme, allowed, want) in [
            // Apache, UseCanonicalName Off, Host: evil.example
            (Some("evil.example"), Some(80), "http", a, "good.example"),
            (Some("evil.example"), Some(8080), "http", a, "good.example"),
            // UseCanonicalName On, or the client's Host was allowed
            (
                Some("www.example.org"),
                Some(8443),
                "https",
                a,
                "www.example.org:8443",
            ),
            (Some("good.example"), Some(443), "https", a, "good.example"),
            (
                None,
                None,
                "http",
                Some(domain_only.as_slice()),
                "example.org",
            ),
            (Some("bad host"), Some(80), "http", a, "good.example"),
            // No list: SERVER_NAME as sent; an IPv6 address in brackets.
            (
                Some("127.0.0.1"),
                Some(8000),
                "http",
                None,
                "127.0.0.1:8000",
            ),
            (Some("::1"), Some(8000), "http", None, "[::1]:8000"),
            (Some("[::1]"), Some(80), "http", None, "[::1]"),
            (None, None, "http", None, "localhost"),
        ] {
            assert_eq!(
                fallback_authority(name, port, scheme, allowed),
                want,
                "{name:?} {port:?} {allowed:?}"
            );
        }
    }

    #[test]
    fn allowed_hosts_match_as_django_does() {
        let allowed: Vec<String> = ["example.com", ".example.org", "[::1]"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (authority, want) in [
            ("example.com", true),
            ("EXAMPLE.com:8080", true),
            ("www.example.com", false),
            ("example.org", true),
            ("a.b.example.org:443", true),
            ("badexample.org", false),
            ("evil.example", false),
            ("[::1]:80", true),
            ("[::1]", true),
            ("[::2]", false),
        ] {
            assert_eq!(host_in(&allowed, authority), want, "{authority}");
        }
        assert!(host_in(&["*".to_string()], "anything.example"));
    }
}
