// Test fixture for tests/tower.rs, not an example to copy: a tower service with faults
// real services can have, in front of a small axum router.
//
// - The first `poll_ready` of the process panics.
// - `call` panics before returning its future for /panic-in-call (as a panicking
//   `map_request` closure would).
// - /hold takes the request body and sleeps 3 s without reading it.
// - /text answers "hello" (axum strips the body for HEAD).
// - /cut streams "part1 ", "part2 ", then its body fails.
// - /sleep awaits a 50 ms tokio timer, then answers "slept".
// - /spawn-tick spawns (once) a task that counts every 10 ms; /ticks answers the count,
//   so a test sees whether spawned tasks run between requests.
// - /blocking-bg starts a 30 s `spawn_blocking` task and answers without waiting.
// - /spawn-panic awaits a spawned task that panics, and answers whether it did.
// With TOWER_FAULTS_AFTER_MS=N, `main` sleeps N ms after `run` returns (an app's own
// clean-up).
// With TOWER_FAULTS_RUNTIME=multi it runs on `Runtime::MultiThread(2)`; with `main`,
// `tower::run` is called from inside a multi-thread runtime (what `#[tokio::main]`
// builds), and with `main-current` from inside a current-thread one.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use axum::routing::{any, get};
use fcgi_shim::tower::RequestBody;
use tower_service::Service;

static READY_PANICKED: AtomicBool = AtomicBool::new(false);
static TICKING: AtomicBool = AtomicBool::new(false);
static TICKS: AtomicU64 = AtomicU64::new(0);

async fn spawn_tick() -> &'static str {
    if !TICKING.swap(true, Ordering::SeqCst) {
        tokio::spawn(async {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                TICKS.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    "ticking"
}

#[derive(Clone)]
struct Faulty(Router);

impl Service<http::Request<RequestBody>> for Faulty {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !READY_PANICKED.swap(true, Ordering::SeqCst) {
            panic!("the first poll_ready panics on purpose");
        }
        Service::<http::Request<RequestBody>>::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, req: http::Request<RequestBody>) -> Self::Future {
        if req.uri().path() == "/panic-in-call" {
            panic!("call panics on purpose before returning its future");
        }
        Box::pin(self.0.call(req))
    }
}

async fn hold(_body: Body) -> &'static str {
    let guard = DropLog;
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::mem::forget(guard);
    "held"
}

/// Logs when the handler's future is dropped before it finished.
struct DropLog;

impl Drop for DropLog {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        log::info!("tower_faults: /hold's future dropped");
    }
}

async fn cut() -> Body {
    let frames: Vec<Result<&'static str, std::io::Error>> = vec![
        Ok("part1 "),
        Ok("part2 "),
        Err(std::io::Error::other("the body fails on purpose")),
    ];
    Body::from_stream(futures_util::stream::iter(frames))
}

fn main() -> Result<(), fcgi_shim::Error> {
    let router = Router::new()
        .route("/cut", get(cut))
        .route("/hold", any(hold))
        .route("/text", get(|| async { "hello" }))
        .route("/ok", get(|| async { "ok" }))
        // What a handler answering a conditional GET builds: axum gives it the
        // `content-length: 0` of its empty body.
        .route(
            "/not-modified",
            get(|| async { axum::http::StatusCode::NOT_MODIFIED }),
        )
        .route("/spawn-tick", get(spawn_tick))
        .route(
            "/blocking-bg",
            get(|| async {
                drop(tokio::task::spawn_blocking(|| {
                    std::thread::sleep(Duration::from_secs(30))
                }));
                "started"
            }),
        )
        .route(
            "/spawn-panic",
            get(|| async {
                let joined =
                    tokio::spawn(async { panic!("a spawned task panics on purpose") }).await;
                format!("panicked: {}", joined.is_err_and(|e| e.is_panic()))
            }),
        )
        .route(
            "/ticks",
            get(|| async { TICKS.load(Ordering::SeqCst).to_string() }),
        )
        .route(
            "/sleep",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                "slept"
            }),
        );
    let served = match std::env::var("TOWER_FAULTS_RUNTIME").as_deref() {
        Ok("multi") => fcgi_shim::tower::run_with(
            fcgi_shim::Builder::new(),
            fcgi_shim::tower::Runtime::MultiThread(2),
            Faulty(router),
        ),
        Ok("main") => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("building the tokio runtime")
            .block_on(async { fcgi_shim::tower::run(Faulty(router)) }),
        Ok("main-current") => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building the tokio runtime")
            .block_on(async { fcgi_shim::tower::run(Faulty(router)) }),
        _ => fcgi_shim::tower::run(Faulty(router)),
    };
    if let Some(ms) = std::env::var("TOWER_FAULTS_AFTER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
    }
    served
}
