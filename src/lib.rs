//! Run a Rust web app on plain shared hosting, or behind any web server.
//!
//! Build your app against [`run`], upload the binary as `public_html/mysite.fcgi`, add
//! an `.htaccess` from the project's `htaccess/` folder, and it serves:
//!
//! - **FastCGI on fd 0** when started by Apache mod_fcgid or mod_fastcgi, lighttpd
//!   `bin-path` or spawn-fcgi (they pass a listening socket as stdin);
//! - **one CGI request** when `GATEWAY_INTERFACE` is set (Apache mod_cgi, any server);
//! - an **explanation** on stderr and exit status 2 when started from a terminal;
//! - a **server of its own** with `--socket PATH` or `--listen HOST:PORT` (FastCGI or,
//!   with `--protocol scgi`, SCGI, behind nginx, Apache `mod_proxy_fcgi` or lighttpd),
//!   or `--http HOST:PORT`, a development HTTP server to try the app in a browser
//!   (`--help` lists every option).
//!
//! ```no_run
//! use fcgi_shim::{Body, RequestExt};
//! use http::{Request, Response};
//!
//! fn app(req: Request<Body>) -> Response<String> {
//!     // `uri()` is app-relative: the same routes at `/` and under `/blog/`.
//!     match req.uri().path() {
//!         "/" => Response::new(format!("home; posts at {}", req.path_for("/posts"))),
//!         _ => {
//!             let mut r = Response::new("not found".to_owned());
//!             *r.status_mut() = http::StatusCode::NOT_FOUND;
//!             r
//!         }
//!     }
//! }
//!
//! fn main() -> Result<(), fcgi_shim::Error> {
//!     fcgi_shim::run(app)
//! }
//! ```
//!
//! The request body streams ([`Body`] implements `std::io::Read`); the response body
//! is bytes or a stream ([`stream`]). What the web server asserts — client address,
//! HTTPS, authenticated user, the mount prefix, the raw CGI variables — is in the
//! request's [`Context`], read through [`RequestExt`]; never from headers a client
//! could forge.
//!
//! Settings come from [`Builder`] and, on top, from the environment (the table in
//! [`Builder`]'s documentation), so a host's configuration can change them without a
//! rebuild.
//!
//! Features (none by default):
//! - `tower`: `tower::run` serves any tower `Service` (an axum `Router`) in every
//!   mode, on a tokio runtime;
//! - `axum`: `tower`, plus the `ConnectInfo` and `OriginalUri` that axum's own server
//!   gives its extractors;
//! - `syslog`: [`LogTarget::Syslog`], logging to syslog(3).
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod cgi;
mod config;
mod conn;
mod context;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod http1;
mod launch;
mod listen;
mod logger;
pub mod mount;
pub mod record;
mod request;
mod response;
mod scgi;
mod server;
mod sockio;
mod standalone;
mod sys;
mod thread_cache;
#[cfg(feature = "tower")]
pub mod tower;
mod vars;

use std::sync::Arc;

pub use body::Body;
pub use config::{Builder, LogTarget};
pub use context::{Context, Mode, RequestExt};
pub use error::Error;
/// The level type [`Builder::log_level`] takes (from the `log` crate).
pub use log::LevelFilter;
pub use mount::MountSource;
pub use record::Role;
pub use response::{BoxBody, Handler, ReaderBody, ResponseBody, Streaming, stream};
pub use standalone::Protocol;
pub use thread_cache::ThreadCache;
pub use vars::Vars;

use server::{App, SyncApp};

/// Serves `app` the way the process was launched (see the crate documentation).
/// Returns when the server has stopped (SIGTERM, max-requests, the binary replaced) or
/// the CGI request is answered. Started from a terminal, it prints how to deploy and
/// exits with status 2; it reads the command line (`--help`, `--http ADDR`, ...) and
/// exits with status 2 on a bad one; an invalid `FCGI_*` variable is logged once and
/// ends the process with status 1 (under CGI after answering 500). An app with a
/// command line of its own uses [`Builder::ignore_args`], and gets
/// [`Error::NotLaunchedByWebServer`] or the bad setting back instead.
pub fn run<H: Handler>(app: H) -> Result<(), Error> {
    Builder::new().run(app)
}

/// Builds the request a handler would get from these CGI variables and body, as a CGI
/// request is built (mount prefix, app-relative URI, headers from `HTTP_*`, the
/// [`Context`]), without a web server: for testing handlers, like Go's
/// `cgi.RequestFromMap`. `FORCE_SCRIPT_NAME` and `FCGI_TRUST_FORWARDED` are not
/// consulted; a `FORCE_SCRIPT_NAME` among `vars` is.
///
/// ```
/// use fcgi_shim::{Body, RequestExt};
///
/// let req = fcgi_shim::request_from_vars(
///     [
///         ("REQUEST_METHOD", "GET"),
///         ("SCRIPT_NAME", "/blog/mysite.fcgi"),
///         ("PATH_INFO", "/posts/1"),
///         ("REQUEST_URI", "/blog/posts/1"),
///         ("HTTP_HOST", "example.com"),
///     ],
///     Body::empty(),
/// )
/// .unwrap();
/// assert_eq!(req.uri().path(), "/posts/1");
/// assert_eq!(req.path_for("/posts/2"), "/blog/posts/2");
/// assert_eq!(
///     req.context().unwrap().url_for("/"),
///     "http://example.com/blog/"
/// );
///
/// let bad = fcgi_shim::request_from_vars([("REQUEST_METHOD", "G E T")], Body::empty());
/// assert!(matches!(bad, Err(fcgi_shim::Error::BadRequest { status, .. }) if status == 400));
/// ```
pub fn request_from_vars<N, V>(
    vars: impl IntoIterator<Item = (N, V)>,
    body: Body,
) -> Result<http::Request<Body>, Error>
where
    N: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let vars = Vars::from_pairs(vars);
    request::build(
        vars,
        body,
        Mode::Cgi,
        Role::Responder,
        &request::MapSettings::default(),
    )
    .map_err(|r| Error::BadRequest {
        status: r.status,
        reason: r.reason,
    })
}

impl Builder {
    /// Serves `app` with these settings; see [`run`].
    pub fn run<H: Handler>(self, app: H) -> Result<(), Error> {
        self.run_app(Arc::new(SyncApp(app)))
    }

    pub(crate) fn run_app(mut self, app: Arc<dyn App>) -> Result<(), Error> {
        let env = if self.read_env {
            self.apply_env()
        } else {
            Ok(Vec::new())
        };
        logger::init(self.cfg.log_level, self.cfg.log_target);
        for warning in env.as_deref().unwrap_or_default() {
            log::warn!("{warning}");
        }
        if let Err(e) = env {
            // As with a bad argument: the process is ours unless the app owns its
            // command line, so the error is said once (a log line, which names the
            // program in the web server's log) and the process ends; an app that
            // owns its command line gets the error back to report as it likes.
            // Said before the answer below: lighttpd's mod_cgi sends SIGTERM to a CGI
            // program as soon as its response is complete.
            if self.read_args {
                log::error!("{e}");
            }
            if std::env::var_os("GATEWAY_INTERFACE").is_some() {
                // Under CGI a proper 500 beats "End of script output before headers".
                cgi::answer_error(http::StatusCode::INTERNAL_SERVER_ERROR);
            }
            if self.read_args {
                std::process::exit(1);
            }
            return Err(e);
        }
        context::set_allowed_hosts(self.cfg.allowed_hosts.take());
        sys::ignore_sigpipe();
        response::install_panic_hook();
        let program = sys::exe_file_name();
        self.cfg.map.exe_name = program.clone();
        let program = program.unwrap_or_else(|| "mysite.fcgi".to_owned());

        if self.cfg.force_cgi {
            cgi::serve_one(&*app, &self.cfg);
            return Ok(());
        }
        let fd0 = sys::is_listening_socket(0);
        // A CGI request: the command line is not ours (Apache passes the words of a
        // query without '=' as arguments).
        if !fd0 && std::env::var_os("GATEWAY_INTERFACE").is_some() {
            cgi::serve_one(&*app, &self.cfg);
            return Ok(());
        }
        // The process's exit is ours only when its command line is: an app that owns
        // its command line (`ignore_args`) gets errors back instead.
        let owns_process = self.read_args;
        if self.read_args || self.args.is_some() {
            let args = self
                .args
                .take()
                .unwrap_or_else(|| std::env::args_os().skip(1).collect());
            if let Err(e) = self.apply_args(args) {
                if !owns_process {
                    return Err(e);
                }
                eprintln!("{program}: {e}\nTry `{program} --help`.");
                std::process::exit(2);
            }
        }
        if self.sa.help {
            print!("{}", launch::usage(&program));
            if !owns_process {
                return Ok(());
            }
            std::process::exit(0);
        }
        sys::set_stop_deadline(self.cfg.stop_timeout, &program)
            .map_err(|e| Error::io("installing signal handlers", e))?;
        let r = launch::run(self, app, fd0, &program, owns_process);
        sys::end_stop_deadline();
        r
    }
}
