//! Feature `tower`: serve any `tower::Service<Request<RequestBody>>` (an axum `Router`)
//! through the same launch modes, protocols and lifecycle as the plain handler API.

use std::cell::RefCell;
use std::error::Error as StdError;
use std::future::{Future, poll_fn};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::{Pin, pin};
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::runtime::RuntimeFlavor;
use tower_service::Service;

use crate::body::Body;
use crate::config::Builder;
use crate::context::RequestExt;
use crate::error::Error;
use crate::record::Role;
use crate::response::{self, Check, Outcome, Sink};
use crate::server::App;

/// The request body a service receives: the same stream as [`crate::Body`], as an
/// `http_body::Body` of `Bytes` frames. It is read as the service polls it, never
/// buffered whole.
pub struct RequestBody {
    inner: Option<Body>,
    buf: BytesMut,
    remaining: Option<u64>,
}

impl RequestBody {
    fn new(body: Body) -> RequestBody {
        let remaining = body.content_length();
        RequestBody {
            inner: Some(body),
            buf: BytesMut::new(),
            remaining,
        }
    }
}

const FRAME: usize = 32 * 1024;

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        // The bytes come from the web server's connection, which is already receiving
        // this request: reading blocks this thread only until they arrive (the read
        // itself notices an aborted request).
        let want = match this.remaining {
            Some(r) => FRAME.min(usize::try_from(r).unwrap_or(FRAME)),
            None => FRAME,
        };
        if want == 0 {
            this.inner = None;
            return Poll::Ready(None);
        }
        this.buf.resize(want, 0);
        match inner.read(&mut this.buf[..want]) {
            Ok(0) => {
                this.inner = None;
                Poll::Ready(None)
            }
            Ok(n) => {
                if let Some(r) = &mut this.remaining {
                    *r -= n as u64;
                }
                let chunk = this.buf.split_to(n).freeze();
                this.buf.clear();
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Err(e) => {
                this.inner = None;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_none() || self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// Which runtime drives the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Runtime {
    /// The default. Called from inside a multi-thread tokio runtime (`#[tokio::main]`):
    /// that runtime, for every request, as under `axum::serve`, so what `main` set up
    /// on it (a database pool, a client) serves every request. Otherwise: as
    /// `CurrentThread` while the process serves on one thread (mod_fcgid, lighttpd
    /// `bin-path`, CGI: one runtime, no thread more), and as `MultiThread(2)` when it
    /// serves on several (a standalone server's 8), where per-thread runtimes would
    /// leave a pool, a client or a task that one request made on one thread waiting
    /// for that thread's next request when a request on another thread uses it.
    #[default]
    Auto,
    /// A current-thread runtime on each worker thread: no extra threads, which shared
    /// hosts count against the account. Tasks the service spawns, and I/O objects it
    /// creates, make progress only while a request runs on the thread that made them.
    CurrentThread,
    /// One multi-thread runtime with this many worker threads, shared by all requests:
    /// for services whose spawned background tasks must run between requests.
    MultiThread(usize),
}

/// Serves `service` the way the process was launched: FastCGI on fd 0, CGI, or a
/// standalone server from the command line — exactly as [`crate::run`] does for a
/// plain handler.
///
/// Each request carries the [`crate::Context`] as an extension. With the `axum`
/// feature it also carries axum's `ConnectInfo<SocketAddr>` (the client the web
/// server names) and `OriginalUri` (the URI with the mount prefix), as `axum::serve`
/// with connect info and `Router::nest` would set them.
///
/// ```no_run
/// # #[cfg(feature = "tower")]
/// # fn main() -> Result<(), fcgi_shim::Error> {
/// # let app = tower_service_example();
/// fcgi_shim::tower::run(app)
/// # }
/// # #[cfg(feature = "tower")]
/// # fn tower_service_example() -> impl tower_service::Service<http::Request<fcgi_shim::tower::RequestBody>, Response = http::Response<String>, Error = std::convert::Infallible, Future = std::future::Ready<Result<http::Response<String>, std::convert::Infallible>>> + Clone + Send + 'static {
/// #     #[derive(Clone)] struct S;
/// #     impl tower_service::Service<http::Request<fcgi_shim::tower::RequestBody>> for S {
/// #         type Response = http::Response<String>; type Error = std::convert::Infallible;
/// #         type Future = std::future::Ready<Result<http::Response<String>, std::convert::Infallible>>;
/// #         fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> { std::task::Poll::Ready(Ok(())) }
/// #         fn call(&mut self, _: http::Request<fcgi_shim::tower::RequestBody>) -> Self::Future { std::future::ready(Ok(http::Response::new(String::new()))) }
/// #     }
/// #     S
/// # }
/// # #[cfg(not(feature = "tower"))] fn main() {}
/// ```
pub fn run<S, B>(service: S) -> Result<(), Error>
where
    S: Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: HttpBody + 'static,
    B::Data: bytes::Buf,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    run_with(Builder::new(), Runtime::default(), service)
}

/// [`run`] with settings and a choice of runtime.
///
/// Called from inside a tokio runtime (`#[tokio::main]`), it serves from a thread of
/// its own, since no runtime may be blocked on from inside one; the calling thread
/// waits for it.
pub fn run_with<S, B>(builder: Builder, runtime: Runtime, service: S) -> Result<(), Error>
where
    S: Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: HttpBody + 'static,
    B::Data: bytes::Buf,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let current = tokio::runtime::Handle::try_current().ok();
    let ambient = match (&current, runtime) {
        (Some(h), Runtime::Auto) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            Some((h.clone(), std::process::id()))
        }
        _ => None,
    };
    let app = Arc::new(TowerApp {
        service: std::sync::Mutex::new(service),
        runtimes: Runtimes {
            // Said at the first request, once the logger is set up.
            current_thread_caller: runtime == Runtime::Auto
                && current
                    .as_ref()
                    .is_some_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread),
            ..Runtimes::new(runtime, ambient)
        },
    });
    if current.is_none() {
        return builder.run_app(app);
    }
    // Unnamed: it keeps the program's name, which a process forked from it
    // (`--daemonize`, `--processes`) shows in `ps` and `pgrep`.
    let serving = std::thread::Builder::new()
        .spawn(move || builder.run_app(app))
        .map_err(|e| Error::io("starting the serving thread", e))?;
    serving
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The runtimes requests run on (see [`Runtime`]).
struct Runtimes {
    choice: Runtime,
    /// The multi-thread runtime `run` was called from, and the process it belongs to:
    /// a fork (`--daemonize`, `--processes`) keeps none of its threads, so its timers
    /// and I/O would never fire in the child.
    ambient: Option<(tokio::runtime::Handle, u32)>,
    /// A shared multi-thread runtime of our own, built at the first request: after
    /// `--daemonize` or `--processes` have forked, for the same reason. One that cannot
    /// be built is logged, and the requests run on each worker's current-thread
    /// runtime instead.
    own: OnceLock<Option<OwnRuntime>>,
    /// `run` was called from a current-thread runtime, which cannot be shared.
    current_thread_caller: bool,
    /// One warning about the runtime `run` was called from.
    warned: std::sync::Once,
}

impl Runtimes {
    fn new(choice: Runtime, ambient: Option<(tokio::runtime::Handle, u32)>) -> Runtimes {
        Runtimes {
            choice,
            ambient,
            own: OnceLock::new(),
            current_thread_caller: false,
            warned: std::sync::Once::new(),
        }
    }

    /// The shared runtime this request runs on; `None`: this thread's own.
    fn shared(&self) -> Option<&tokio::runtime::Handle> {
        if let Some((handle, pid)) = &self.ambient {
            if *pid == std::process::id() {
                return Some(handle);
            }
            self.warned.call_once(|| {
                log::error!(
                    "the tokio runtime of main() did not survive the fork (--daemonize, \
                     --processes or FCGI_PROCESSES), and what was built on it cannot be used \
                     here; requests run on a runtime of this process (build the runtime after \
                     the fork: call fcgi_shim::tower::run from a plain fn main)"
                );
            });
        }
        if self.current_thread_caller {
            self.warned.call_once(|| {
                log::warn!(
                    "fcgi_shim::tower::run was called from inside a current-thread tokio \
                     runtime (`#[tokio::main(flavor = \"current_thread\")]`): its tasks, and \
                     what was built on it, make no progress while requests are served, which \
                     run on runtimes of their own; use the multi-thread runtime \
                     (`#[tokio::main]`) or a plain `fn main`"
                );
            });
        }
        let threads = match self.choice {
            Runtime::CurrentThread => return None,
            Runtime::MultiThread(n) => n.max(1),
            Runtime::Auto if crate::server::serving_threads() > 1 => 2,
            Runtime::Auto => return None,
        };
        self.own
            .get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .enable_all()
                    .build()
                    .inspect_err(|e| {
                        log::error!(
                            "cannot start the multi-thread tokio runtime: {e}; each worker runs its own"
                        );
                    })
                    .ok()
                    .map(OwnRuntime::new)
            })
            .as_ref()
            .and_then(OwnRuntime::get)
            .map(tokio::runtime::Runtime::handle)
    }
}

/// A runtime of ours. Dropped (when `run` returns, or at the thread's or the process's
/// end), it shuts down without waiting for `spawn_blocking` work still running: a
/// stopped process exits at once, as without a runtime, rather than when a blocking
/// task that outlived its request (its client gone) happens to end. Such work ends
/// with the process, as spawned tasks do.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    fn new(rt: tokio::runtime::Runtime) -> OwnRuntime {
        OwnRuntime(Some(rt))
    }

    /// The runtime (taken only when dropped).
    fn get(&self) -> Option<&tokio::runtime::Runtime> {
        self.0.as_ref()
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

struct TowerApp<S> {
    /// Cloned for each request, under the lock: a service need not be `Sync` (tower's
    /// `BoxCloneService` is not), only `Clone + Send`, as with `axum::serve`.
    service: std::sync::Mutex<S>,
    runtimes: Runtimes,
}

thread_local! {
    static LOCAL_RT: OnceLock<Option<OwnRuntime>> = const { OnceLock::new() };
}

/// Runs `fut` to completion on this thread's runtime (or the shared one).
fn block_on<F: Future>(shared: Option<&tokio::runtime::Handle>, fut: F) -> Option<F::Output> {
    if let Some(rt) = shared {
        return Some(rt.block_on(fut));
    }
    LOCAL_RT.with(|cell| {
        let rt = cell.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .inspect_err(|e| log::error!("cannot start a tokio runtime: {e}"))
                .ok()
                .map(OwnRuntime::new)
        });
        // `Runtime::block_on`: on a current-thread runtime only it drives the timers
        // and the I/O (`Handle::block_on` would not).
        rt.as_ref()
            .and_then(OwnRuntime::get)
            .map(|rt| rt.block_on(fut))
    })
}

/// A descriptor watched for readability without owning it.
struct Watched(RawFd);

impl AsRawFd for Watched {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Resolves when the peer has aborted the request or gone away; never otherwise.
async fn peer_gone(out: &RefCell<&mut dyn Sink>) {
    let fd = out.borrow().watch_fd();
    let Some(fd) = fd else {
        return std::future::pending().await;
    };
    // SAFETY: the descriptor is the web server's connection, which the connection
    // keeps open for the whole request; this AsyncFd is dropped when `serve` returns.
    let registered = unsafe { AsyncFd::register_with_interest(Watched(fd), Interest::READABLE) };
    let Ok(afd) = registered else {
        return std::future::pending().await;
    };
    loop {
        let Ok(mut guard) = afd.readable().await else {
            return std::future::pending().await;
        };
        // Bind first: the borrow must end before any await below.
        let check = out.borrow_mut().check();
        match check {
            Check::Gone => return,
            // Only a failed write can tell now.
            Check::HalfClosed => return std::future::pending().await,
            Check::Drained => guard.clear_ready(),
            Check::Progress => {}
            // The app's body is next in the stream: nothing behind it can be read
            // until the app reads it, but a close still shows (EPOLLRDHUP).
            Check::Stuck => {
                if guard.ready().is_read_closed() {
                    return;
                }
                guard.clear_ready();
            }
        }
    }
}

/// Polls `fut`, turning a panic into `Err(message)` (one log line, see `guarded`).
async fn catch<F: Future>(fut: F) -> Result<F::Output, String> {
    let mut fut = pin!(fut);
    poll_fn(
        move |cx| match response::guarded(|| fut.as_mut().poll(cx)) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(msg) => Poll::Ready(Err(msg)),
        },
    )
    .await
}

/// What axum's own server (`axum::serve` with
/// `into_make_service_with_connect_info::<SocketAddr>()`) and its `nest` give a handler,
/// so extractors written for them work here unchanged: `ConnectInfo<SocketAddr>` (the
/// client, from the web server's variables; left out when it sent no usable
/// `REMOTE_ADDR`, which axum answers with its own 500) and `OriginalUri` (the URI with
/// the mount prefix, as for a router nested under it).
#[cfg(feature = "axum")]
fn axum_extensions(req: &mut Request<RequestBody>) {
    let Some(ctx) = req.context() else {
        return;
    };
    let client = ctx.client_socket_addr();
    let original = ctx.mounted_uri(req.uri());
    let ext = req.extensions_mut();
    if let Some(addr) = client {
        ext.insert(axum::extract::ConnectInfo(addr));
    }
    if let Some(uri) = original {
        ext.insert(axum::extract::OriginalUri(uri));
    }
}

impl<S, B> App for TowerApp<S>
where
    S: Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: HttpBody + 'static,
    B::Data: bytes::Buf,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    fn serve(&self, req: Request<Body>, out: &mut dyn Sink) -> Outcome {
        let head_only = req.method() == http::Method::HEAD;
        let role = req.context().map_or(Role::Responder, |c| c.role());
        let what = response::RequestLabel::of(&req);
        #[cfg_attr(not(feature = "axum"), allow(unused_mut))]
        let mut req = req.map(RequestBody::new);
        #[cfg(feature = "axum")]
        axum_extensions(&mut req);
        let mut svc = self
            .service
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let out = RefCell::new(out);
        let work = async {
            // A panic in `poll_ready`, or in `call` before it returns its future (a
            // `map_request` closure, say), is a 500 like one inside the future.
            let panicked = |msg: String, stage: &str| {
                log::error!("service panicked in {stage} on {what}: {msg}; answered 500");
                match error(&out, StatusCode::INTERNAL_SERVER_ERROR) {
                    Outcome::Gone => Outcome::Gone,
                    _ => Outcome::AppFailed,
                }
            };
            match catch(poll_fn(|cx| svc.poll_ready(cx))).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    log::error!("service not ready for {what}: {}; answered 503", e.into());
                    return error(&out, StatusCode::SERVICE_UNAVAILABLE);
                }
                Err(msg) => return panicked(msg, "poll_ready"),
            }
            let fut = match response::guarded(|| svc.call(req)) {
                Ok(fut) => fut,
                Err(msg) => return panicked(msg, "call"),
            };
            let resp = match catch(fut).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    log::error!("service failed on {what}: {}; answered 500", e.into());
                    return error(&out, StatusCode::INTERNAL_SERVER_ERROR);
                }
                Err(msg) => {
                    log::error!("service panicked on {what}: {msg}; answered 500");
                    return match error(&out, StatusCode::INTERNAL_SERVER_ERROR) {
                        Outcome::Gone => Outcome::Gone,
                        _ => Outcome::AppFailed,
                    };
                }
            };
            let (parts, body) = resp.into_parts();
            // For HEAD, axum (like hyper's servers) swaps the body for an empty one:
            // its length 0 says nothing about the GET's, so no Content-Length is
            // made up from it.
            let exact = body.size_hint().exact().filter(|&n| !(head_only && n == 0));
            let mut head = Vec::with_capacity(256);
            let declared = match response::encode_head(&parts, exact, role, &mut head) {
                Ok(d) => d,
                Err(e) => {
                    log::error!("{e}; answering 500 instead");
                    let _ = error(&out, StatusCode::INTERNAL_SERVER_ERROR);
                    return Outcome::AppFailed;
                }
            };
            if out.borrow_mut().write_all(&head).is_err() {
                return Outcome::Gone;
            }
            if !response::body_is_sent(&parts, role, head_only) {
                return Outcome::Complete;
            }
            stream_body(body, &out, declared, &what).await
        };
        let cancel = peer_gone(&out);
        let both = async {
            let mut work = pin!(work);
            let mut cancel = pin!(cancel);
            poll_fn(|cx| {
                if let Poll::Ready(o) = work.as_mut().poll(cx) {
                    return Poll::Ready(o);
                }
                if cancel.as_mut().poll(cx).is_ready() {
                    // Dropping `work` cancels the service's future.
                    log::info!(
                        "{what}: the web server aborted the request; the service was cancelled"
                    );
                    return Poll::Ready(Outcome::Gone);
                }
                Poll::Pending
            })
            .await
        };
        let outcome = block_on(self.runtimes.shared(), both).unwrap_or_else(|| {
            let mut o = out.borrow_mut();
            response::send_error(StatusCode::INTERNAL_SERVER_ERROR, &mut **o)
        });
        // A task the service spawned ran on this thread and panicked: tokio caught it.
        response::log_swallowed_panic();
        if outcome != Outcome::Complete {
            // As for a plain handler: the connection's log line names the request.
            response::set_failed_request(what);
        }
        outcome
    }
}

fn error(out: &RefCell<&mut dyn Sink>, status: StatusCode) -> Outcome {
    let mut o = out.borrow_mut();
    response::send_error(status, &mut **o)
}

/// Writes the body frame by frame; flushes whenever the body has nothing ready, so a
/// stream (server-sent events, progress) reaches the client as it is produced while
/// a fast body still goes out in large writes.
/// A body with a declared length is held to it (see [`response::Declared`]).
async fn stream_body<B>(
    body: B,
    out: &RefCell<&mut dyn Sink>,
    declared: Option<u64>,
    what: &response::RequestLabel,
) -> Outcome
where
    B: HttpBody,
    B::Data: bytes::Buf,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut body = pin!(body);
    let mut left = declared;
    loop {
        let next = poll_fn(
            |cx| match response::guarded(|| body.as_mut().poll_frame(cx)) {
                Ok(Poll::Pending) => {
                    if out.borrow_mut().flush().is_err() {
                        return Poll::Ready(Err(None));
                    }
                    Poll::Pending
                }
                Ok(Poll::Ready(f)) => Poll::Ready(Ok(f)),
                Err(msg) => Poll::Ready(Err(Some(msg))),
            },
        )
        .await;
        match next {
            Ok(None) => {
                return match (declared, left) {
                    (Some(d), Some(l)) if l > 0 => {
                        response::log_short_body(&format!("{what}: "), d - l, d);
                        Outcome::CutShort
                    }
                    _ => Outcome::Complete,
                };
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(mut data) = frame.into_data() {
                    let mut o = out.borrow_mut();
                    while bytes::Buf::has_remaining(&data) {
                        let chunk = bytes::Buf::chunk(&data);
                        let n = chunk.len();
                        if let (Some(d), Some(l)) = (declared, left.as_mut()) {
                            if n as u64 > *l {
                                // `l` < `n`, so the cast is exact.
                                if o.write_all(&chunk[..*l as usize]).is_err() {
                                    return Outcome::Gone;
                                }
                                response::log_long_body(&format!("{what}: "), d);
                                return Outcome::Complete;
                            }
                            *l -= n as u64;
                        }
                        if o.write_all(chunk).is_err() {
                            return Outcome::Gone;
                        }
                        bytes::Buf::advance(&mut data, n);
                    }
                }
            }
            Ok(Some(Err(e))) => {
                if out.borrow().gone() {
                    return Outcome::Gone;
                }
                if left == Some(0) {
                    let why = format!("{what}: {}", e.into());
                    response::log_failed_after_whole(&why, declared.unwrap_or(0));
                    return Outcome::Complete;
                }
                log::error!(
                    "{what}: response body failed after the headers were sent: {}; response cut short",
                    e.into()
                );
                return Outcome::cut(declared);
            }
            Err(None) => return Outcome::Gone,
            Err(Some(msg)) => {
                if left == Some(0) {
                    let why = format!("{what}: panic: {msg}");
                    response::log_failed_after_whole(&why, declared.unwrap_or(0));
                    return Outcome::Complete;
                }
                log::error!(
                    "{what}: panic while streaming the response body: {msg}; response cut short"
                );
                return Outcome::cut(declared);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// A service answering with the request body reversed, or panicking on /panic.
    #[derive(Clone)]
    struct Rev;

    impl Service<Request<RequestBody>> for Rev {
        type Response = Response<String>;
        type Error = Infallible;
        type Future =
            std::pin::Pin<Box<dyn Future<Output = Result<Response<String>, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Request<RequestBody>) -> Self::Future {
            Box::pin(async move {
                if req.uri().path() == "/panic" {
                    panic!("test service panics");
                }
                let req_path = req.uri().path().to_owned();
                let mut body = pin!(req.into_body());
                let mut got = Vec::new();
                while let Some(f) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
                    if let Ok(d) = f.expect("body frame").into_data() {
                        got.extend_from_slice(&d);
                    }
                }
                got.reverse();
                let mut resp = Response::new(String::from_utf8_lossy(&got).into_owned());
                // /cl/N: a Content-Length of N whatever the body's length.
                if let Some(n) = req_path.strip_prefix("/cl/") {
                    resp.headers_mut()
                        .insert("content-length", n.parse().expect("a length"));
                }
                Ok(resp)
            })
        }
    }

    use crate::response::VecSink;

    fn serve(app: &TowerApp<Rev>, path: &str, body: &'static str) -> (Outcome, String) {
        let mut req = Request::new(Body::from(body));
        *req.uri_mut() = path.parse().unwrap();
        let mut out = VecSink(Vec::new());
        let o = app.serve(req, &mut out);
        (o, String::from_utf8_lossy(&out.0).into_owned())
    }

    #[test]
    fn both_runtimes_serve_and_catch_panics() {
        response::install_panic_hook();
        for app in [
            TowerApp {
                service: Rev.into(),
                runtimes: Runtimes::new(Runtime::CurrentThread, None),
            },
            TowerApp {
                service: Rev.into(),
                runtimes: Runtimes::new(Runtime::MultiThread(2), None),
            },
        ] {
            let (o, text) = serve(&app, "/", "abc");
            assert_eq!(o, Outcome::Complete);
            assert!(text.starts_with("Status: 200 OK\r\n"), "{text}");
            assert!(text.ends_with("\r\n\r\ncba"), "{text}");
            let (o, text) = serve(&app, "/panic", "");
            assert_eq!(o, Outcome::AppFailed);
            assert!(text.starts_with("Status: 500"), "{text}");
        }
    }

    /// A body is held to its Content-Length: what passes it is left out (the response
    /// is whole to its declared length), and one that ends short is cut.
    #[test]
    fn bodies_are_held_to_their_content_length() {
        let app = TowerApp {
            service: Rev.into(),
            runtimes: Runtimes::new(Runtime::CurrentThread, None),
        };
        let (o, text) = serve(&app, "/cl/2", "abcd");
        assert_eq!(o, Outcome::Complete);
        assert!(text.ends_with("content-length: 2\r\n\r\ndc"), "{text:?}");
        let (o, text) = serve(&app, "/cl/10", "abc");
        assert_eq!(o, Outcome::CutShort);
        assert!(text.ends_with("\r\n\r\ncba"), "{text:?}");
        let (o, _) = serve(&app, "/cl/3", "abc");
        assert_eq!(o, Outcome::Complete);
    }

    /// A service that is `Send` but not `Sync`, as tower's `BoxCloneService`.
    #[derive(Clone)]
    struct NotSync(std::cell::Cell<u32>);

    impl Service<Request<RequestBody>> for NotSync {
        type Response = Response<String>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<String>, Infallible>>;

        fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<RequestBody>) -> Self::Future {
            self.0.set(self.0.get() + 1);
            std::future::ready(Ok(Response::new(format!("call {}", self.0.get()))))
        }
    }

    #[test]
    fn a_service_need_not_be_sync() {
        let app: Arc<dyn App> = Arc::new(TowerApp {
            service: NotSync(std::cell::Cell::new(0)).into(),
            runtimes: Runtimes::new(Runtime::CurrentThread, None),
        });
        for _ in 0..2 {
            let mut out = VecSink(Vec::new());
            assert_eq!(
                app.serve(Request::new(Body::empty()), &mut out),
                Outcome::Complete
            );
            // Each request has its own clone of the service.
            assert!(out.0.ends_with(b"\r\n\r\ncall 1"), "{:?}", out.0);
        }
    }

    #[test]
    fn request_body_frames_and_size_hint() {
        let mut b = RequestBody::new(Body::from(vec![7u8; 100_000]));
        assert_eq!(b.size_hint().exact(), Some(100_000));
        let waker = std::task::Waker::noop();
        let mut cx = TaskContext::from_waker(waker);
        let mut total = 0;
        while let Poll::Ready(Some(f)) = Pin::new(&mut b).poll_frame(&mut cx) {
            let d = f.unwrap().into_data().unwrap();
            assert!(d.len() <= FRAME);
            total += d.len();
        }
        assert_eq!(total, 100_000);
        assert!(b.is_end_stream());
    }
}
