// Settings: defaults, the builder an app can use, and the environment a host can set.

use std::time::Duration;

use log::LevelFilter;

use std::ffi::OsString;
use std::path::PathBuf;

use crate::error::Error;
use crate::request::MapSettings;
use crate::standalone::{Protocol, Standalone};

/// Caps on what one request's FastCGI params may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Total bytes of the FCGI_PARAMS stream (names, values and their lengths).
    pub max_params_bytes: usize,
    /// Number of variables.
    pub max_params: usize,
}

/// Where log lines go when the app has not installed a logger of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogTarget {
    /// stderr, which mod_fcgid, Apache CGI and lighttpd put in the error log. During a
    /// FastCGI request, lines logged on the request's thread go to the web server as
    /// FCGI_STDERR records instead, so they are logged with the request's context.
    Stderr,
    /// syslog(3), facility `user` (needs the `syslog` feature); during FastCGI
    /// requests too, so nothing goes to the web server as FCGI_STDERR. Without the
    /// feature, `FCGI_LOG_TARGET=syslog` is refused as a setting, and this value set in
    /// code logs to stderr with a warning.
    Syslog,
}

/// The resolved settings a server runs with.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub limits: Limits,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    /// Connections served at once by one process.
    pub max_conns: usize,
    /// What FCGI_MAX_CONNS and FCGI_MAX_REQS answer, when more than `max_conns`
    /// (prefork: all workers together).
    pub advertised_conns: Option<usize>,
    /// Other worker processes of ours accept on the same listener (prefork): a
    /// lingering close leaves queued connections to them, as a thread of a pool does.
    pub sibling_workers: bool,
    pub max_requests: Option<u64>,
    pub map: MapSettings,
    pub watch_binary: bool,
    pub binary_check_interval: Duration,
    pub log_level: LevelFilter,
    pub log_target: LogTarget,
    pub force_cgi: bool,
    /// `FCGI_WEB_SERVER_ADDRS`: TCP peers allowed to connect.
    pub web_server_addrs: Option<Vec<std::net::IpAddr>>,
    /// How long a stopping standalone server keeps its socket open for a new one.
    pub restart_grace: Duration,
    /// `FCGI_STOP_TIMEOUT`: how long a stop waits for the requests in flight before
    /// the process exits without them; `None`: for as long as they take.
    pub stop_timeout: Option<Duration>,
    /// `FCGI_ALLOWED_HOSTS`: the host names absolute URLs may be built with.
    pub allowed_hosts: Option<Vec<String>>,
    /// `FCGI_SPIN_MICROS`: how long a thread that has just answered looks for more
    /// work before it sleeps (`sys::spin`); zero: never.
    pub spin: Duration,
}

/// How long a request head (FastCGI BEGIN_REQUEST and PARAMS, an SCGI netstring, an
/// HTTP request line and headers) may take to arrive, at most: web servers send one at
/// once, so a peer that trickles it (slowloris) holds a worker for this long, not for
/// the whole read timeout. `FCGI_READ_TIMEOUT` lowers it too.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The time a request head gets: the read timeout, at most [`HEAD_TIMEOUT`].
pub(crate) fn head_timeout(read_timeout: Option<Duration>) -> Duration {
    read_timeout.map_or(HEAD_TIMEOUT, |t| t.min(HEAD_TIMEOUT))
}

/// Defaults: generous for real browsers and web servers, bounded for everything else.
pub(crate) const DEFAULT_MAX_PARAMS_BYTES: usize = 1024 * 1024;
pub(crate) const DEFAULT_MAX_PARAMS: usize = 1000;
const MAX_PARAMS_BYTES_CEILING: usize = 1 << 30;
/// What `FCGI_SPIN_MICROS` defaults to: the next request on a kept-alive connection,
/// or the web server's close, comes 20-40 µs after a response when the web server
/// is not busy elsewhere (BENCHMARKS.md).
pub(crate) const DEFAULT_SPIN: Duration = Duration::from_micros(50);
/// `FCGI_STOP_TIMEOUT` unless set.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest spin `FCGI_SPIN_MICROS` may ask for.
const SPIN_CEILING_MICROS: u64 = 10_000;
/// The longest time a setting in seconds may give: a year.
const SECS_CEILING: f64 = 365.0 * 24.0 * 3600.0;

impl Default for Config {
    fn default() -> Config {
        Config {
            limits: Limits {
                max_params_bytes: DEFAULT_MAX_PARAMS_BYTES,
                max_params: DEFAULT_MAX_PARAMS,
            },
            read_timeout: Some(Duration::from_secs(60)),
            write_timeout: Some(Duration::from_secs(60)),
            idle_timeout: None,
            max_conns: 1,
            advertised_conns: None,
            sibling_workers: false,
            max_requests: None,
            map: MapSettings::default(),
            watch_binary: true,
            binary_check_interval: Duration::from_secs(1),
            log_level: LevelFilter::Info,
            log_target: LogTarget::Stderr,
            force_cgi: false,
            web_server_addrs: None,
            restart_grace: Duration::from_secs(2),
            stop_timeout: Some(DEFAULT_STOP_TIMEOUT),
            allowed_hosts: None,
            spin: DEFAULT_SPIN,
        }
    }
}

/// Configures and starts a server; [`crate::run`] is `Builder::new().run(app)`.
///
/// Values set here are the app's defaults. The settings file beside the binary
/// (`mysite.fcgi.env`) and the process environment override them, because on shared
/// hosting those are what a site owner can change without rebuilding
/// (`FcgidInitialEnv` in the Apache configuration, `bin-environment` in lighttpd; an
/// `.htaccess` `SetEnv` reaches the app per request, which only `FORCE_SCRIPT_NAME`
/// is read from):
///
/// | variable | meaning | default |
/// |---|---|---|
/// | `FCGI_MAX_REQUESTS` (or `PHP_FCGI_MAX_REQUESTS`) | exit cleanly after this many requests | unlimited |
/// | `FORCE_SCRIPT_NAME` | the mount prefix, when it cannot be worked out | rebuilt per request |
/// | `FCGI_THREADS` | connections served at once | 1 under a web server; 8 for a server of its own |
/// | `FCGI_MAX_PARAMS_BYTES` | cap on one request's FastCGI params | 1 MiB |
/// | `FCGI_MAX_PARAMS` | cap on the number of params | 1000 |
/// | `FCGI_MAX_BODY` | the largest request body the app is given, in bytes ([`Builder::max_body`]; 0: no limit) | the web server's limit |
/// | `FCGI_READ_TIMEOUT`, `FCGI_WRITE_TIMEOUT` | seconds the web server may stall mid-request (a request head: 10 s at most) | 60 |
/// | `FCGI_IDLE_TIMEOUT` | seconds a kept-alive connection may idle (0: no limit) | no limit |
/// | `FCGI_WATCH_BINARY` | `0`: do not exit when the program file is replaced | `1` under a web server; off for a server of its own |
/// | `FCGI_LOG` | `off`, `error`, `warn`, `info`, `debug`, `trace` | `info` |
/// | `FCGI_LOG_TARGET` | `stderr` or `syslog` (feature `syslog`) | `stderr` |
/// | `FCGI_FORCE_CGI` | `1`: serve one CGI request even if fd 0 is a socket | off |
/// | `FCGI_WEB_SERVER_ADDRS` | IPv4/IPv6 addresses allowed to connect over TCP | anyone |
/// | `FCGI_TRUST_FORWARDED` | `1`: believe `X-Forwarded-*` (a proxy you control sets them) | off |
/// | `FCGI_ALLOWED_HOSTS` | host names absolute URLs may use (`example.com,.example.org`, `*`) | any |
/// | `FCGI_RESTART_GRACE` | seconds a stopping standalone server waits for a replacement | 2 |
/// | `FCGI_STOP_TIMEOUT` | seconds a stop waits for the requests in flight ([`Builder::stop_timeout`]; 0: no limit) | 30 |
/// | `FCGI_SPIN_MICROS` | microseconds a thread that has just answered looks for the next request before it sleeps (0: never) | 50 |
///
/// A file beside the program, named after it with `.env` appended (`mysite.fcgi.env`,
/// `NAME=value` lines), is read first; the environment overrides it. The standalone
/// server's options (`--socket`, ...) have variables too; see `--help`.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    pub(crate) cfg: Config,
    pub(crate) read_env: bool,
    pub(crate) sa: Standalone,
    /// The command line to parse; `None`: the process's own (unless ignored).
    pub(crate) args: Option<Vec<OsString>>,
    pub(crate) read_args: bool,
    pub(crate) threads_explicit: bool,
}

impl Builder {
    /// Default settings; the environment is read when the server starts.
    pub fn new() -> Builder {
        Builder {
            cfg: Config::default(),
            read_env: true,
            sa: Standalone::default(),
            args: None,
            read_args: true,
            threads_explicit: false,
        }
    }

    /// Do not look at the process's command line: for apps with a command line of
    /// their own, which set the server options here (or pass the arguments meant for
    /// us with [`Builder::args`]). The process's exit is then the app's too: `run`
    /// returns [`crate::Error::NotLaunchedByWebServer`] when there is nothing to serve
    /// (started from a terminal), and a bad argument's error, instead of printing and
    /// exiting with status 2; `--help` among [`Builder::args`] prints the usage and
    /// returns `Ok`.
    pub fn ignore_args(mut self) -> Builder {
        self.read_args = false;
        self
    }

    /// Parse these arguments (without the program name) instead of the process's.
    pub fn args<I, S>(mut self, args: I) -> Builder
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Serve FastCGI (or SCGI) on a Unix socket at `path` (`--socket`).
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Builder {
        self.sa.socket = Some(path.into());
        self
    }

    /// Serve on TCP at `addr`: `HOST:PORT`, `[IPv6]:PORT`, or a bare port, which
    /// means 127.0.0.1 (`--listen`).
    pub fn listen(mut self, addr: impl Into<String>) -> Builder {
        self.sa.listen = Some(addr.into());
        self
    }

    /// Serve plain HTTP/1.1 at `addr`: the development server (`--http`).
    pub fn http(mut self, addr: impl Into<String>) -> Builder {
        self.sa.http = Some(addr.into());
        self
    }

    /// The protocol of `--socket`/`--listen` (default FastCGI).
    pub fn protocol(mut self, p: Protocol) -> Builder {
        self.sa.protocol = Some(p);
        self
    }

    /// Prefork `n` worker processes sharing the socket (`--processes`).
    pub fn processes(mut self, n: usize) -> Builder {
        self.sa.processes = Some(n.max(1));
        self
    }

    /// Write the server's pid here once the socket is ready (`--pidfile`).
    pub fn pidfile(mut self, path: impl Into<PathBuf>) -> Builder {
        self.sa.pidfile = Some(path.into());
        self
    }

    /// Detach from the terminal (`--daemonize`).
    pub fn daemonize(mut self, on: bool) -> Builder {
        self.sa.daemonize = on;
        self
    }

    /// Change to this directory first (`--workdir`).
    pub fn workdir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.sa.workdir = Some(dir.into());
        self
    }

    /// The process umask, which sets the socket file's mode (`--umask 0002`).
    pub fn umask(mut self, mask: u32) -> Builder {
        self.sa.umask = Some(mask & 0o777);
        self
    }

    /// Where a daemon's stdout and stderr go (`--outlog`, `--errlog`).
    pub fn logs(mut self, outlog: Option<PathBuf>, errlog: Option<PathBuf>) -> Builder {
        self.sa.outlog = outlog;
        self.sa.errlog = errlog;
        self
    }

    /// Believe `X-Forwarded-For`, `-Proto`, `-Host` and `-Prefix` for the client
    /// address, HTTPS, the host in absolute links and the mount prefix
    /// (`FCGI_TRUST_FORWARDED=1`). Only behind a proxy you control that sets them and
    /// drops what clients send; otherwise any client could claim HTTPS or an address.
    /// Of a list (`X-Forwarded-For: client-sent, added-by-proxy`), the last entry
    /// counts: the one the proxy in front added.
    pub fn trust_forwarded(mut self, on: bool) -> Builder {
        self.cfg.map.trust_forwarded = on;
        self
    }

    /// The host names [`crate::Context::url_for`] and [`crate::Context::origin`] may
    /// take from the request's `Host` header (`FCGI_ALLOWED_HOSTS=example.com,.example.org`;
    /// a leading dot allows the domain and its subdomains, `*` any host, as Django's
    /// `ALLOWED_HOSTS`). Another host there is not used: `SERVER_NAME` and
    /// `SERVER_PORT` are if that name is allowed (Apache's default
    /// `UseCanonicalName Off` copies the client's Host into it), else the first name
    /// in the list (a `.domain` entry gives `domain`). Without the setting any valid
    /// host name is used, so a web
    /// server that passes any Host (a default virtual host, `--http`) lets a client
    /// choose the host of absolute links, which matters for links sent by mail.
    pub fn allowed_hosts<I, S>(mut self, hosts: I) -> Builder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cfg.allowed_hosts = Some(hosts.into_iter().map(Into::into).collect());
        self
    }

    /// Only these addresses may connect over TCP (`FCGI_WEB_SERVER_ADDRS`).
    pub fn web_server_addrs(mut self, addrs: Vec<std::net::IpAddr>) -> Builder {
        self.cfg.web_server_addrs = Some(addrs);
        self
    }

    /// Do not read any `FCGI_*` variable from the process environment (tests, or
    /// apps that take every setting from their own configuration).
    pub fn ignore_env(mut self) -> Builder {
        self.read_env = false;
        self
    }

    /// Exit cleanly after `n` requests, so the web server starts a fresh process
    /// (PHP's `PHP_FCGI_MAX_REQUESTS`, flup's `maxrequests`).
    pub fn max_requests(mut self, n: u64) -> Builder {
        self.cfg.max_requests = (n > 0).then_some(n);
        self
    }

    /// The mount prefix to use instead of rebuilding it per request (Django's
    /// `FORCE_SCRIPT_NAME`); `""` means the site root. It applies to the development
    /// server too (`FORCE_SCRIPT_NAME=/blog ./app --http 127.0.0.1:8000`), to try the
    /// app's links under a prefix.
    pub fn force_script_name(mut self, prefix: impl Into<String>) -> Builder {
        self.cfg.map.force_script_name = Some(prefix.into());
        self
    }

    /// Connections served at once (threads). Under mod_fcgid one is right: it sends
    /// one request per process at a time.
    pub fn threads(mut self, n: usize) -> Builder {
        self.cfg.max_conns = n.max(1);
        self.threads_explicit = true;
        self
    }

    /// Cap on the bytes of one request's FastCGI params (default 1 MiB). Larger
    /// requests are answered 431.
    pub fn max_params_bytes(mut self, n: usize) -> Builder {
        self.cfg.limits.max_params_bytes = n.clamp(1, MAX_PARAMS_BYTES_CEILING);
        self
    }

    /// Cap on the number of params of one request (default 1000).
    pub fn max_params(mut self, n: usize) -> Builder {
        self.cfg.limits.max_params = n.max(1);
        self
    }

    /// How long the web server may stall while sending a request (default 60 s).
    pub fn read_timeout(mut self, t: Option<Duration>) -> Builder {
        self.cfg.read_timeout = t;
        self
    }

    /// How long the web server may stall while taking a response (default 60 s).
    pub fn write_timeout(mut self, t: Option<Duration>) -> Builder {
        self.cfg.write_timeout = t;
        self
    }

    /// How long a kept-alive connection may sit idle between requests (default: as
    /// long as the web server keeps it).
    pub fn idle_timeout(mut self, t: Option<Duration>) -> Builder {
        self.cfg.idle_timeout = t;
        self
    }

    /// The largest request body the app is given (`None`, the default: no limit but the
    /// web server's). A larger declared length is answered 413 before the app runs, as
    /// Flask's `MAX_CONTENT_LENGTH`; reading a body of no declared length (chunked)
    /// past it fails with `std::io::ErrorKind::FileTooLarge` (answer 413; axum's
    /// extractors answer 400 for it, knowing only their own limit: set axum's
    /// `DefaultBodyLimit::max` below this one for a 413 from axum). `Some(0)`
    /// here is a limit of 0 bytes; `FCGI_MAX_BODY=0` in the environment means no limit.
    pub fn max_body(mut self, bytes: Option<u64>) -> Builder {
        self.cfg.map.max_body = bytes;
        self
    }

    /// How long a stop (a signal, max-requests, a replaced program file) waits for the
    /// requests in flight before the process exits without them, with an error in the
    /// log (default 30 s, after a standalone server's restart window); `None`: for as
    /// long as they take. A handler that never returns would otherwise keep a stopped
    /// process, and its socket, for good.
    pub fn stop_timeout(mut self, t: Option<Duration>) -> Builder {
        self.cfg.stop_timeout = t;
        self
    }

    /// How long a thread that has just answered looks for the next request (or the
    /// web server's close, or the next connection) before it sleeps (default 50 µs;
    /// zero: never). Only while it is the only thread at work, and less often after
    /// looks that found nothing, so a quiet site spins once in many requests.
    pub fn spin(mut self, d: Duration) -> Builder {
        self.cfg.spin = d.min(Duration::from_micros(SPIN_CEILING_MICROS));
        self
    }

    /// Whether to exit after the current request once the program file on disk has
    /// been replaced (a new upload), so the web server starts the new one (default on
    /// under a web server; always off for a server of its own, which nobody would
    /// restart).
    pub fn exit_when_binary_replaced(mut self, on: bool) -> Builder {
        self.cfg.watch_binary = on;
        self
    }

    /// The most verbose level our stderr/syslog logger lets through (default `Info`).
    pub fn log_level(mut self, level: LevelFilter) -> Builder {
        self.cfg.log_level = level;
        self
    }

    /// Where our logger writes (default stderr).
    pub fn log_target(mut self, target: LogTarget) -> Builder {
        self.cfg.log_target = target;
        self
    }

    /// Applies the settings file beside the program (`mysite.fcgi.env`), then the
    /// environment, over the builder's values. Returns a warning for each name in the
    /// file that is not a setting (a typo would otherwise pass unseen), to be logged
    /// once the logger is set up.
    pub(crate) fn apply_env(&mut self) -> Result<Vec<String>, Error> {
        let file = match crate::sys::invoked_exe().map(|p| {
            let mut s = p.as_os_str().to_owned();
            s.push(".env");
            PathBuf::from(s)
        }) {
            Some(p) => read_settings_file(&p)?.map(|t| (p, t)),
            None => None,
        };
        let file_vars = match &file {
            Some((p, text)) => {
                parse_env_file(text).map_err(|line| Error::SettingsFileUnusable {
                    path: p.clone(),
                    problem: format!(
                        "{line}; expected NAME=value lines (blank lines and # comments allowed)"
                    ),
                })?
            }
            None => Vec::new(),
        };
        self.apply_vars(|name: &str| setting(name, std::env::var(name).ok(), &file_vars))
            .map_err(|e| match (&file, &e) {
                // A bad value the file gave (the environment sets no other): the error
                // names the file, as its unknown-name warnings do.
                (Some((path, _)), Error::Setting { name, .. })
                    if setting(name, std::env::var(name).ok(), &[]).is_none()
                        && file_vars.iter().any(|(k, _)| k == name) =>
                {
                    Error::SettingsFile {
                        path: path.clone(),
                        source: Box::new(e),
                    }
                }
                _ => e,
            })?;
        Ok(match &file {
            Some((p, _)) => unknown_names(&file_vars)
                .map(|w| format!("{}: {w}", p.display()))
                .collect(),
            None => Vec::new(),
        })
    }

    pub(crate) fn apply_vars(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), Error> {
        // Set but empty means "not set", except for FORCE_SCRIPT_NAME, where it means
        // the site root (as Django's `FORCE_SCRIPT_NAME = ''`; the fix for lighttpd
        // mounted at "/").
        let forced = get("FORCE_SCRIPT_NAME");
        let get = |n: &str| get(n).filter(|v| !v.trim().is_empty());
        let c = &mut self.cfg;
        if let Some((name, v)) = get("FCGI_MAX_REQUESTS")
            .map(|v| ("FCGI_MAX_REQUESTS", v))
            .or_else(|| get("PHP_FCGI_MAX_REQUESTS").map(|v| ("PHP_FCGI_MAX_REQUESTS", v)))
        {
            let n: u64 = parse(name, &v, "a whole number (0 for no limit)")?;
            c.max_requests = (n > 0).then_some(n);
        }
        if let Some(v) = forced {
            let path = v.trim();
            // A path as the client sees it; a URL, a query or a stray quote would end
            // up in every link the app makes.
            if !(path.is_empty() || path.starts_with('/'))
                || path
                    .chars()
                    .any(|ch| ch.is_control() || matches!(ch, '?' | '#' | '"' | '\''))
            {
                return Err(Error::setting(
                    "FORCE_SCRIPT_NAME",
                    v,
                    "the path the app is mounted at, starting with / (empty for the site root)",
                ));
            }
            c.map.force_script_name = Some(path.to_owned());
        }
        if let Some(v) = get("FCGI_THREADS") {
            let n: usize = parse("FCGI_THREADS", &v, "a whole number from 1 to 1024")?;
            if !(1..=1024).contains(&n) {
                return Err(Error::setting(
                    "FCGI_THREADS",
                    v,
                    "a whole number from 1 to 1024",
                ));
            }
            c.max_conns = n;
        }
        if let Some(v) = get("FCGI_MAX_PARAMS_BYTES") {
            let n: usize = parse(
                "FCGI_MAX_PARAMS_BYTES",
                &v,
                "a number of bytes up to 1073741824",
            )?;
            if n == 0 || n > MAX_PARAMS_BYTES_CEILING {
                return Err(Error::setting(
                    "FCGI_MAX_PARAMS_BYTES",
                    v,
                    "a number of bytes from 1 to 1073741824",
                ));
            }
            c.limits.max_params_bytes = n;
        }
        if let Some(v) = get("FCGI_MAX_BODY") {
            let n: u64 = parse("FCGI_MAX_BODY", &v, "a number of bytes (0 for no limit)")?;
            c.map.max_body = (n > 0).then_some(n);
        }
        if let Some(v) = get("FCGI_MAX_PARAMS") {
            let n: usize = parse("FCGI_MAX_PARAMS", &v, "a whole number above 0")?;
            if n == 0 {
                // 0 is no limit elsewhere; here it would refuse every request.
                return Err(Error::setting(
                    "FCGI_MAX_PARAMS",
                    v,
                    "a whole number above 0",
                ));
            }
            c.limits.max_params = n;
        }
        for (name, slot) in [
            ("FCGI_READ_TIMEOUT", &mut c.read_timeout),
            ("FCGI_WRITE_TIMEOUT", &mut c.write_timeout),
            ("FCGI_IDLE_TIMEOUT", &mut c.idle_timeout),
            ("FCGI_STOP_TIMEOUT", &mut c.stop_timeout),
        ] {
            if let Some(v) = get(name) {
                let secs: f64 = parse(name, &v, "seconds (0 for no limit)")?;
                // A duration must be representable (1e20 s would panic in
                // Duration::from_secs_f64); a year is more than any wait needs.
                if !(0.0..=SECS_CEILING).contains(&secs) {
                    return Err(Error::setting(
                        name,
                        v,
                        "seconds up to a year (0 for no limit)",
                    ));
                }
                *slot = (secs > 0.0).then(|| Duration::from_secs_f64(secs));
            }
        }
        if let Some(v) = get("FCGI_WATCH_BINARY") {
            c.watch_binary = parse_bool("FCGI_WATCH_BINARY", &v)?;
        }
        if let Some(v) = get("FCGI_LOG") {
            c.log_level = v.trim().parse().map_err(|_| {
                Error::setting("FCGI_LOG", &v, "off, error, warn, info, debug or trace")
            })?;
        }
        if let Some(v) = get("FCGI_LOG_TARGET") {
            c.log_target = match v.trim() {
                "stderr" => LogTarget::Stderr,
                "syslog" if cfg!(feature = "syslog") => LogTarget::Syslog,
                "syslog" => {
                    return Err(Error::setting(
                        "FCGI_LOG_TARGET",
                        v,
                        "stderr (this build has no `syslog` feature)",
                    ));
                }
                _ => return Err(Error::setting("FCGI_LOG_TARGET", v, "stderr or syslog")),
            };
        }
        if let Some(v) = get("FCGI_FORCE_CGI") {
            c.force_cgi = parse_bool("FCGI_FORCE_CGI", &v)?;
        }
        if let Some(v) = get("FCGI_TRUST_FORWARDED") {
            c.map.trust_forwarded = parse_bool("FCGI_TRUST_FORWARDED", &v)?;
        }
        if let Some(v) = get("FCGI_ALLOWED_HOSTS") {
            let hosts: Vec<String> = v
                .split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect();
            // Host names only: the first is put into URLs when a request's host is
            // not allowed, so `https://...` or a comment would be copied there.
            let host_like = |h: &str| {
                h == "*"
                    || h.bytes().all(|b| {
                        b.is_ascii_alphanumeric()
                            || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
                    })
            };
            if !hosts.iter().all(|h| host_like(h)) {
                return Err(Error::setting(
                    "FCGI_ALLOWED_HOSTS",
                    v,
                    "host names separated by commas (.example.com for a domain and its subdomains, * for any)",
                ));
            }
            c.allowed_hosts = Some(hosts);
        }
        if let Some(v) = get("FCGI_WEB_SERVER_ADDRS") {
            c.web_server_addrs = Some(crate::listen::parse_addrs(&v)?);
        }
        if let Some(v) = get("FCGI_SPIN_MICROS") {
            let us: u64 = parse("FCGI_SPIN_MICROS", &v, "microseconds from 0 to 10000")?;
            if us > SPIN_CEILING_MICROS {
                return Err(Error::setting(
                    "FCGI_SPIN_MICROS",
                    v,
                    "microseconds from 0 to 10000",
                ));
            }
            c.spin = Duration::from_micros(us);
        }
        if let Some(v) = get("FCGI_RESTART_GRACE") {
            let secs: f64 = parse("FCGI_RESTART_GRACE", &v, "seconds")?;
            if !secs.is_finite() || !(0.0..=600.0).contains(&secs) {
                return Err(Error::setting(
                    "FCGI_RESTART_GRACE",
                    v,
                    "seconds from 0 to 600",
                ));
            }
            c.restart_grace = Duration::from_secs_f64(secs);
        }
        if get("FCGI_THREADS").is_some() {
            self.threads_explicit = true;
        }
        self.apply_standalone_env(&get)
    }
}

/// The settings file, if there is one. It can turn on trust in forwarded headers, move
/// the server to a port of its own or name a file to overwrite with a pid, so it is
/// read only when nobody else could have written it, as suexec requires of the
/// program: owned by us (or root) and writable by nobody else.
fn read_settings_file(path: &std::path::Path) -> Result<Option<String>, Error> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let refuse = |why: String| {
        Err(Error::SettingsFileUnusable {
            path: path.to_owned(),
            problem: format!(
                "{why}; expected a file owned by the program's user (or root) and writable by nobody else (chmod 644)"
            ),
        })
    };
    // Non-blocking: a FIFO at the path would block open() until a writer came, and
    // every start with it (it is refused below, as anything but a regular file is).
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // There, but not for us (mode 600 for another user, say): its settings would
        // silently not apply.
        Err(e) => return refuse(format!("cannot be read: {e}")),
    };
    let io = |e: std::io::Error| Error::SettingsFileUnusable {
        path: path.to_owned(),
        problem: format!("cannot be read: {e}; expected a UTF-8 text file of NAME=value lines"),
    };
    let meta = f.metadata().map_err(io)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return refuse(format!("cannot be read: {what}, not a regular file"));
    }
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid && meta.uid() != 0 {
        return refuse(format!(
            "owned by uid {}, not by us (uid {euid})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return refuse(format!(
            "mode {:o}: writable by group or others",
            meta.mode() & 0o777
        ));
    }
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(io)?;
    Ok(Some(text))
}

/// A setting from the environment (`env`) over the settings file. Set but empty in the
/// environment counts as not set (as everywhere in the settings), so it leaves the
/// file's value in force; except FORCE_SCRIPT_NAME, where empty means the site root.
fn setting(name: &str, env: Option<String>, file_vars: &[(String, String)]) -> Option<String> {
    env.filter(|v| name == "FORCE_SCRIPT_NAME" || !v.trim().is_empty())
        .or_else(|| {
            file_vars
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
}

/// Every name the settings file can hold (what `apply_vars` and the standalone
/// options read; `every_name_read_is_known` checks the list against them).
const SETTINGS: &[&str] = &[
    "FCGI_MAX_REQUESTS",
    "PHP_FCGI_MAX_REQUESTS",
    "FORCE_SCRIPT_NAME",
    "FCGI_THREADS",
    "FCGI_MAX_PARAMS_BYTES",
    "FCGI_MAX_PARAMS",
    "FCGI_MAX_BODY",
    "FCGI_READ_TIMEOUT",
    "FCGI_WRITE_TIMEOUT",
    "FCGI_IDLE_TIMEOUT",
    "FCGI_STOP_TIMEOUT",
    "FCGI_WATCH_BINARY",
    "FCGI_LOG",
    "FCGI_LOG_TARGET",
    "FCGI_FORCE_CGI",
    "FCGI_TRUST_FORWARDED",
    "FCGI_ALLOWED_HOSTS",
    "FCGI_WEB_SERVER_ADDRS",
    "FCGI_SPIN_MICROS",
    "FCGI_RESTART_GRACE",
    "FCGI_SOCKET",
    "FCGI_LISTEN",
    "FCGI_HTTP",
    "FCGI_PROTOCOL",
    "FCGI_PROCESSES",
    "FCGI_PIDFILE",
    "FCGI_DAEMONIZE",
    "FCGI_WORKDIR",
    "FCGI_UMASK",
    "FCGI_OUTLOG",
    "FCGI_ERRLOG",
];

/// A warning for each name in the file that is not a setting, with the setting it
/// is likely a typo of.
fn unknown_names(file_vars: &[(String, String)]) -> impl Iterator<Item = String> + '_ {
    file_vars
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !SETTINGS.contains(&k.as_str()))
        .map(|k| {
            let near = SETTINGS
                .iter()
                .find(|s| edit_distance(&k.to_ascii_uppercase(), s) <= 2);
            match near {
                Some(s) => format!("{k} is not a setting, ignored (did you mean {s}?)"),
                None => format!(
                    "{k} is not a setting, ignored (the file holds fcgi-shim's settings only)"
                ),
            }
        })
}

/// Levenshtein distance, for names of a few dozen bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &x) in a.as_bytes().iter().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &y) in b.iter().enumerate() {
            let next = (diag + usize::from(x != y))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// `NAME=value` lines; returns the first bad line, with its number, as the error. A
/// leading byte order mark (what Windows Notepad saves) is skipped.
fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let bad = || format!("line {}: {line}", n + 1);
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let l = l.strip_prefix("export ").unwrap_or(l);
        let Some((k, v)) = l.split_once('=') else {
            return Err(bad());
        };
        let k = k.trim();
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(bad());
        }
        let v = v.trim();
        let v = match v.chars().next() {
            // A quoted value ends at its closing quote; only a comment may follow.
            Some(q @ ('"' | '\'')) => {
                let Some((inner, rest)) = v[1..].split_once(q) else {
                    return Err(bad());
                };
                let rest = rest.trim_start();
                if !(rest.is_empty() || rest.starts_with('#')) {
                    return Err(bad());
                }
                inner
            }
            // Unquoted, a `#` after a space or tab starts a comment (as dotenv reads it).
            _ => v
                .char_indices()
                .find(|&(i, ch)| ch == '#' && i > 0 && v[..i].ends_with([' ', '\t']))
                .map_or(v, |(i, _)| v[..i].trim_end()),
        };
        out.push((k.to_owned(), v.to_owned()));
    }
    Ok(out)
}

fn parse<T: std::str::FromStr>(name: &str, v: &str, expected: &'static str) -> Result<T, Error> {
    v.trim()
        .parse()
        .map_err(|_| Error::setting(name, v, expected))
}

fn parse_bool(name: &str, v: &str) -> Result<bool, Error> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::setting(name, v, "1 or 0")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> Result<Config, Error> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut b = Builder::new().max_requests(7);
        b.apply_vars(|n| m.get(n).cloned())?;
        Ok(b.cfg)
    }

    #[test]
    fn env_overrides_builder() {
        assert_eq!(with(&[]).unwrap().max_requests, Some(7));
        assert_eq!(
            with(&[("FCGI_MAX_REQUESTS", "3")]).unwrap().max_requests,
            Some(3)
        );
        assert_eq!(
            with(&[("PHP_FCGI_MAX_REQUESTS", "5")])
                .unwrap()
                .max_requests,
            Some(5)
        );
        assert_eq!(
            with(&[("FCGI_MAX_REQUESTS", "0")]).unwrap().max_requests,
            None
        );
        let c = with(&[("FCGI_READ_TIMEOUT", "2.5"), ("FCGI_IDLE_TIMEOUT", "0")]).unwrap();
        assert_eq!(c.read_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(c.idle_timeout, None);
    }

    #[test]
    fn every_name_read_is_known() {
        let asked = std::cell::RefCell::new(Vec::new());
        let mut b = Builder::new();
        b.apply_vars(|n| {
            asked.borrow_mut().push(n.to_owned());
            None
        })
        .unwrap();
        let asked = asked.into_inner();
        assert!(asked.len() >= 25, "{asked:?}");
        for n in &asked {
            assert!(
                SETTINGS.contains(&n.as_str()),
                "{n} is read but not in SETTINGS"
            );
        }
        for n in SETTINGS {
            assert!(
                asked.iter().any(|a| a == n),
                "{n} is in SETTINGS but never read"
            );
        }
    }

    #[test]
    fn names_that_are_not_settings_are_named_with_the_likely_one() {
        let file = parse_env_file(
            "FCGI_ALLOWED_HOST=a.example\nfcgi_threads=4\nDATABASE_URL=x\nFCGI_LOG=info\n",
        )
        .unwrap();
        let w: Vec<String> = unknown_names(&file).collect();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w[0].starts_with("FCGI_ALLOWED_HOST ")
                && w[0].contains("did you mean FCGI_ALLOWED_HOSTS?"),
            "{w:?}"
        );
        assert!(w[1].contains("did you mean FCGI_THREADS?"), "{w:?}");
        assert!(
            w[2].starts_with("DATABASE_URL ") && !w[2].contains("did you mean"),
            "{w:?}"
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
    }

    #[test]
    fn comments_after_a_value_and_quotes() {
        let file = parse_env_file(concat!(
            "FCGI_ALLOWED_HOSTS=good.example # only this\n",
            "FORCE_SCRIPT_NAME=\"/my blog\"   # quoted, then a comment\n",
            "FCGI_LOG='info'\n",
            "A=/x#y\n",
            "B=\t/z\t#\tc\n",
        ))
        .unwrap();
        let v: Vec<(&str, &str)> = file.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            v,
            [
                ("FCGI_ALLOWED_HOSTS", "good.example"),
                ("FORCE_SCRIPT_NAME", "/my blog"),
                ("FCGI_LOG", "info"),
                ("A", "/x#y"),
                ("B", "/z"),
            ]
        );
        for bad in ["A=\"/unclosed\n", "A='x' y\n", "A=\"x\"y\n"] {
            assert!(parse_env_file(bad).is_err(), "{bad:?}");
        }
    }

    /// A file saved by Windows Notepad starts with a byte order mark: skipped, not a
    /// bad first line. A bad line's error carries its number.
    #[test]
    fn env_file_bom_and_line_numbers() {
        let file = parse_env_file("\u{feff}FCGI_THREADS=4\r\nFCGI_LOG=info\r\n").unwrap();
        assert_eq!(
            file,
            [
                ("FCGI_THREADS".to_owned(), "4".to_owned()),
                ("FCGI_LOG".to_owned(), "info".to_owned())
            ]
        );
        // Only at the start: elsewhere it is part of a name, and a bad line.
        assert_eq!(
            parse_env_file("# c\n\nA=1\n\u{feff}B=2\n").unwrap_err(),
            "line 4: \u{feff}B=2"
        );
        assert_eq!(
            parse_env_file("A=1\nthis line is wrong\n").unwrap_err(),
            "line 2: this line is wrong"
        );
    }

    #[test]
    fn force_script_name_and_allowed_hosts_are_checked() {
        for good in ["", "/", "/blog", "/my blog/x"] {
            assert!(with(&[("FORCE_SCRIPT_NAME", good)]).is_ok(), "{good:?}");
        }
        for bad in [
            "blog",
            "https://example.com/blog",
            "/a?b",
            "/a#b",
            "\"/q",
            "/a\u{7f}",
        ] {
            assert!(
                matches!(
                    with(&[("FORCE_SCRIPT_NAME", bad)]),
                    Err(Error::Setting { .. })
                ),
                "{bad:?}"
            );
        }
        let c = with(&[(
            "FCGI_ALLOWED_HOSTS",
            "Good.example, .example.org,[::1]:8000,*",
        )])
        .unwrap();
        assert_eq!(
            c.allowed_hosts.unwrap(),
            ["good.example", ".example.org", "[::1]:8000", "*"]
        );
        for bad in ["https://good.example", "good.example # c", "a/b", "a@b"] {
            assert!(
                matches!(
                    with(&[("FCGI_ALLOWED_HOSTS", bad)]),
                    Err(Error::Setting { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_empty_variable_leaves_the_settings_file_in_force() {
        let file = parse_env_file("FCGI_MAX_REQUESTS=500\nFORCE_SCRIPT_NAME=/blog\n").unwrap();
        let s = |name: &str, env: Option<&str>| setting(name, env.map(str::to_owned), &file);
        assert_eq!(s("FCGI_MAX_REQUESTS", None).as_deref(), Some("500"));
        assert_eq!(s("FCGI_MAX_REQUESTS", Some("")).as_deref(), Some("500"));
        assert_eq!(s("FCGI_MAX_REQUESTS", Some("  ")).as_deref(), Some("500"));
        assert_eq!(s("FCGI_MAX_REQUESTS", Some("9")).as_deref(), Some("9"));
        assert_eq!(s("FCGI_THREADS", Some("")), None);
        // FORCE_SCRIPT_NAME empty is a value: the site root, over the file's.
        assert_eq!(s("FORCE_SCRIPT_NAME", Some("")).as_deref(), Some(""));
        assert_eq!(s("FORCE_SCRIPT_NAME", None).as_deref(), Some("/blog"));
    }

    #[test]
    fn empty_force_script_name_is_the_site_root() {
        assert_eq!(with(&[]).unwrap().map.force_script_name, None);
        assert_eq!(
            with(&[("FORCE_SCRIPT_NAME", "")])
                .unwrap()
                .map
                .force_script_name,
            Some(String::new())
        );
        assert_eq!(
            with(&[("FORCE_SCRIPT_NAME", " /blog ")])
                .unwrap()
                .map
                .force_script_name,
            Some("/blog".to_owned())
        );
        // Other settings set but empty stay unset.
        assert_eq!(
            with(&[("FCGI_MAX_REQUESTS", "")]).unwrap().max_requests,
            Some(7)
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = with(&[("FCGI_MAX_REQUESTS", "ten")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("FCGI_MAX_REQUESTS") && e.contains("whole number"),
            "{e}"
        );
        assert_eq!(with(&[]).unwrap().spin, Duration::from_micros(50));
        assert_eq!(
            with(&[("FCGI_SPIN_MICROS", "0")]).unwrap().spin,
            Duration::ZERO
        );
        assert_eq!(
            with(&[("FCGI_SPIN_MICROS", "10000")]).unwrap().spin,
            Duration::from_millis(10)
        );
        for bad in ["10001", "-1", "5.5", "x"] {
            let e = with(&[("FCGI_SPIN_MICROS", bad)]).unwrap_err().to_string();
            assert!(e.contains("FCGI_SPIN_MICROS"), "{bad}: {e}");
        }
        assert!(with(&[("FCGI_THREADS", "0")]).is_err());
        assert!(with(&[("FCGI_LOG", "loud")]).is_err());
        assert!(with(&[("FCGI_READ_TIMEOUT", "-1")]).is_err());
        // Finite but past what a Duration holds (from_secs_f64 would panic), and NaN.
        for v in ["1e20", "NaN", "inf", "31536001"] {
            let e = with(&[("FCGI_IDLE_TIMEOUT", v)]).unwrap_err().to_string();
            assert!(
                e.contains("FCGI_IDLE_TIMEOUT") && e.contains("a year"),
                "{v}: {e}"
            );
        }
        assert!(with(&[("FCGI_WRITE_TIMEOUT", "31536000")]).is_ok());
        // 0 params would refuse every request: refused here instead.
        assert!(with(&[("FCGI_MAX_PARAMS", "0")]).is_err());
        assert_eq!(
            with(&[("FCGI_MAX_PARAMS", "5")]).unwrap().limits.max_params,
            5
        );
    }
}
