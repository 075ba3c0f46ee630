// A small real axum app run by fcgi-shim (feature `axum`): upload the binary as
// public_html/mysite.fcgi with an .htaccess from htaccess/, exactly as the plain one.
//
// Routes are written once, app-relative; links and redirects get the mount prefix from
// the request context (`Extension<fcgi_shim::Context>`), so the same binary works at
// the site root and under /blog/.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Form, OriginalUri, Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use fcgi_shim::Context;
use futures_util::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};

async fn home(Extension(ctx): Extension<Context>) -> Html<String> {
    let p = |path| ctx.path_for(path);
    Html(format!(
        r#"<!doctype html><title>fcgi-shim + axum</title>
<h1>It works</h1>
<ul>
<li><a href="{}">post 1</a></li>
<li><a href="{}">JSON</a></li>
<li><a href="{}">a streamed response</a></li>
<li><a href="{}">a redirect</a></li>
</ul>
<form method="post" action="{}"><input name="name"> <button>Greet</button></form>
"#,
        p("/posts/1"),
        p("/api/info"),
        p("/stream"),
        p("/go"),
        p("/greet"),
    ))
}

async fn post_page(Path(id): Path<u32>) -> Html<String> {
    Html(format!("<h1>Post {id}</h1>"))
}

#[derive(Deserialize)]
struct Greeting {
    name: String,
}

async fn greet(Form(g): Form<Greeting>) -> Html<String> {
    let name: String = g
        .name
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ')
        .collect();
    Html(format!("<p>Hello, {name}!</p>"))
}

async fn info(Extension(ctx): Extension<Context>, uri: axum::http::Uri) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "mode": ctx.mode().as_str(),
        "script_name": ctx.script_name(),
        "path": uri.path(),
        "remote_addr": ctx.remote_addr().map(|a| a.to_string()),
        "https": ctx.is_https(),
        "pid": std::process::id(),
    }))
}

/// axum's own extractors for the client and the URL it asked for, as under
/// `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())`:
/// fcgi-shim's feature `axum` fills them from the web server's variables. `OriginalUri`
/// holds the mount prefix, as for a router `nest`ed under it; the routed `Uri` does not.
async fn client(
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    OriginalUri(original): OriginalUri,
    uri: axum::http::Uri,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "client": addr.to_string(),
        "original_uri": original.to_string(),
        "uri": uri.to_string(),
    }))
}

/// A redirect to an absolute URL of this app, mount prefix included.
async fn go(Extension(ctx): Extension<Context>) -> Redirect {
    Redirect::to(&ctx.url_for("/posts/1"))
}

#[derive(Deserialize)]
struct StreamArgs {
    n: Option<u32>,
    delay_ms: Option<u64>,
}

/// `n` lines, one every `delay_ms`, each sent as soon as it is produced.
/// `n` items made by `item`, the first at once and the rest `delay` apart.
fn paced<T>(
    n: u32,
    delay: Duration,
    item: impl Fn(u32) -> T + Copy,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::unfold(0u32, move |i| async move {
        if i == n {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(delay).await;
        }
        Some((item(i), i + 1))
    })
}

async fn stream(Query(a): Query<StreamArgs>) -> Response {
    let delay = Duration::from_millis(a.delay_ms.unwrap_or(300));
    let lines = paced(a.n.unwrap_or(5), delay, |i| {
        Ok::<_, std::io::Error>(format!("line {i} at {:?}\n", std::time::SystemTime::now()))
    });
    (
        [(header::CONTENT_TYPE, "text/plain")],
        axum::body::Body::from_stream(lines),
    )
        .into_response()
}

/// Server-sent events: `n` events, one every `delay_ms`. fcgi-shim tells nginx not to
/// buffer them (`X-Accel-Buffering: no`); under mod_fcgid see `FcgidOutputBufferSize`.
async fn events(
    Query(a): Query<StreamArgs>,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    let delay = Duration::from_millis(a.delay_ms.unwrap_or(1000));
    axum::response::sse::Sse::new(paced(a.n.unwrap_or(5), delay, |i| {
        Ok(axum::response::sse::Event::default().data(format!("event {i}")))
    }))
}

/// Logs when it is dropped before finishing: what happens when the web server aborts
/// the request.
struct CancelGuard(bool);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.0 {
            log::warn!("axum example: /slow was cancelled before it finished");
        }
    }
}

#[derive(Deserialize)]
struct SlowArgs {
    ms: Option<u64>,
}

async fn slow(Query(a): Query<SlowArgs>) -> &'static str {
    let mut guard = CancelGuard(false);
    tokio::time::sleep(Duration::from_millis(a.ms.unwrap_or(5000))).await;
    guard.0 = true;
    "finished\n"
}

/// Hashes an upload as it streams in.
async fn upload(body: axum::body::Body) -> Result<Json<serde_json::Value>, StatusCode> {
    let mut h = Sha256::new();
    let mut len = 0u64;
    let mut s = body.into_data_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|_| StatusCode::BAD_REQUEST)?;
        len += chunk.len() as u64;
        h.update(&chunk);
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Json(serde_json::json!({ "len": len, "sha256": hex })))
}

async fn boom() -> &'static str {
    panic!("the /panic route panics on purpose")
}

fn app() -> Router {
    Router::new()
        .route("/", get(home))
        .route("/posts/{id}", get(post_page))
        .route("/greet", post(greet))
        .route("/api/info", get(info))
        .route("/api/client", get(client))
        .route("/go", get(go))
        .route("/stream", get(stream))
        .route("/events", get(events))
        .route("/slow", get(slow))
        .route("/upload", post(upload))
        .route("/panic", get(boom))
}

// Several worker threads on musl's malloc would queue on its one lock; this per-thread
// cache in front of it keeps them apart (see `fcgi_shim::ThreadCache`).
#[global_allocator]
static ALLOC: fcgi_shim::ThreadCache = fcgi_shim::ThreadCache::new();

fn main() -> Result<(), fcgi_shim::Error> {
    fcgi_shim::tower::run(app())
}
