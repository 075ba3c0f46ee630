// The axum example (feature `axum`) under FastCGI on fd 0 and as CGI: routes resolve
// app-relative, redirects carry the mount prefix, responses stream frame by frame,
// an abort cancels the service, a panic is a 500 and the process lives.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

const T: Duration = Duration::from_secs(10);

/// The variables Apache sends for `<method> /blog<path>` after the subdirectory
/// .htaccess rewrote it to /blog/mysite.fcgi<path>.
fn blog(method: &str, path: &str, query: &str) -> Vec<(&'static str, String)> {
    let uri = if query.is_empty() {
        format!("/blog{path}")
    } else {
        format!("/blog{path}?{query}")
    };
    let mut v = cgi_vars(method, path, query);
    for (k, val) in v.iter_mut() {
        match *k {
            "SCRIPT_NAME" => *val = "/blog/mysite.fcgi".into(),
            "REQUEST_URI" => *val = uri.clone(),
            "HTTP_HOST" | "SERVER_NAME" => *val = "example.com".into(),
            _ => {}
        }
    }
    v.push(("REDIRECT_URL", format!("/blog{path}")));
    v
}

fn body_text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.head_and_body().1).into_owned()
}

#[test]
fn routes_resolve_app_relative_under_a_subdirectory() {
    let app = FcgiApp::start("axum", &[]);
    let r = app.roundtrip(request(1, false, &blog("GET", "/posts/42", ""), b""), 1);
    assert_eq!(r.status(), 200);
    assert_eq!(body_text(&r), "<h1>Post 42</h1>");
    let r = app.roundtrip(request(1, false, &blog("GET", "/", ""), b""), 1);
    assert!(
        body_text(&r).contains(r#"<a href="/blog/posts/1">"#),
        "{}",
        body_text(&r)
    );
    let r = app.roundtrip(request(1, false, &blog("GET", "/api/info", ""), b""), 1);
    let j: serde_json::Value = serde_json::from_slice(&r.head_and_body().1).unwrap();
    assert_eq!(j["script_name"], "/blog");
    assert_eq!(j["path"], "/api/info");
    assert_eq!(j["mode"], "fastcgi");
    // The redirect is built from the mount prefix.
    let r = app.roundtrip(request(1, false, &blog("GET", "/go", ""), b""), 1);
    let (head, _) = r.head_and_body();
    assert!(head.starts_with("Status: 303"), "{head}");
    assert!(
        head.contains("location: http://example.com/blog/posts/1\r\n"),
        "{head}"
    );
    // A form POST.
    let mut vars = blog("POST", "/greet", "");
    vars.push(("CONTENT_TYPE", "application/x-www-form-urlencoded".into()));
    let r = app.roundtrip(request(1, false, &vars, b"name=Ann+Lee"), 1);
    assert_eq!(body_text(&r), "<p>Hello, Ann Lee!</p>");
    // Unknown route: axum's 404.
    let r = app.roundtrip(request(1, false, &blog("GET", "/nope", ""), b""), 1);
    assert_eq!(r.status(), 404);
}

/// axum's `ConnectInfo<SocketAddr>` and `OriginalUri` work as under `axum::serve`
/// (feature `axum`): the client from REMOTE_ADDR/REMOTE_PORT, the URI with the mount
/// prefix. A request without a client address gets axum's own 500, and the process
/// serves on.
#[test]
fn axum_connect_info_and_original_uri_come_from_the_web_server() {
    let app = FcgiApp::start("axum", &[]);
    let client = |vars: &[(&'static str, String)]| {
        let r = app.roundtrip(request(1, false, vars, b""), 1);
        assert_eq!(r.status(), 200, "{}", body_text(&r));
        let j: serde_json::Value = serde_json::from_slice(&r.head_and_body().1).unwrap();
        j
    };
    let mut vars = blog("GET", "/api/client", "x=1&y=%20");
    vars.retain(|(k, _)| *k != "REMOTE_ADDR");
    vars.push(("REMOTE_ADDR", "203.0.113.7".into()));
    vars.push(("REMOTE_PORT", "51234".into()));
    let j = client(&vars);
    assert_eq!(j["client"], "203.0.113.7:51234");
    assert_eq!(j["original_uri"], "/blog/api/client?x=1&y=%20");
    assert_eq!(j["uri"], "/api/client?x=1&y=%20");

    let mut vars = cgi_vars("GET", "/api/client", "");
    vars.retain(|(k, _)| *k != "REMOTE_ADDR");
    vars.push(("REMOTE_ADDR", "2001:db8::5".into()));
    vars.push(("REMOTE_PORT", "443".into()));
    let j = client(&vars);
    assert_eq!(j["client"], "[2001:db8::5]:443");
    assert_eq!(j["original_uri"], "/api/client");

    let mut vars = cgi_vars("GET", "/api/client", "");
    vars.retain(|(k, _)| *k != "REMOTE_ADDR");
    let r = app.roundtrip(request(1, false, &vars, b""), 1);
    assert_eq!(r.status(), 500);
    assert!(body_text(&r).contains("ConnectInfo"), "{}", body_text(&r));
    let j = client(&cgi_vars("GET", "/api/client", ""));
    assert_eq!(j["client"], "127.0.0.1:0");

    // `--http`: the TCP peer, port and all, as `axum::serve` gives it.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(example("axum"));
    cmd.args(["--http", &addr])
        .env("FCGI_RESTART_GRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    contain(&mut cmd);
    let mut srv = spawn_retrying(&mut cmd);
    assert!(wait_until(T, || std::net::TcpStream::connect(&addr).is_ok()));
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let local = s.local_addr().unwrap();
    s.write_all(b"GET /api/client?a=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    let body = got.split("\r\n\r\n").nth(1).unwrap_or_default();
    let j: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {got}"));
    assert_eq!(j["client"], local.to_string());
    assert_eq!(j["original_uri"], "/api/client?a=1");
    let _ = srv.kill();
    let _ = srv.wait();
}

#[test]
fn upload_streams_into_the_service() {
    let app = FcgiApp::start("axum", &[]);
    let body = noise(5 * 1024 * 1024 + 7, 4);
    let mut vars = blog("POST", "/upload", "");
    vars.push(("CONTENT_TYPE", "application/octet-stream".into()));
    let r = app.roundtrip(request(1, false, &vars, &body), 1);
    let j: serde_json::Value = serde_json::from_slice(&r.head_and_body().1).unwrap();
    assert_eq!(j["len"], body.len() as u64);
    assert_eq!(j["sha256"], sha256_hex(&body));
}

#[test]
fn streamed_response_arrives_before_it_is_finished() {
    let app = FcgiApp::start("axum", &[]);
    let mut s = app.connect();
    s.write_all(&request(
        1,
        false,
        &blog("GET", "/stream", "n=4&delay_ms=400"),
        b"",
    ))
    .unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let t0 = Instant::now();
    // Read records until the first STDOUT record with body content after the head.
    let mut got = Vec::new();
    let first_line_at = loop {
        let mut h = [0u8; 8];
        s.read_exact(&mut h).unwrap();
        let len = u16::from_be_bytes([h[4], h[5]]) as usize;
        let mut c = vec![0u8; len + h[6] as usize];
        s.read_exact(&mut c).unwrap();
        if h[1] == STDOUT {
            got.extend_from_slice(&c[..len]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                if got[end + 4..].starts_with(b"line 0") {
                    break t0.elapsed();
                }
            }
        }
    };
    let rest = read_reply(&mut s, 1, T);
    let total = t0.elapsed();
    // Four lines 400 ms apart: the first one must not wait for the last (>= 1.2 s).
    assert!(
        first_line_at < Duration::from_millis(800),
        "first line after {first_line_at:?}"
    );
    assert!(
        total >= Duration::from_millis(1100),
        "whole stream took {total:?}"
    );
    got.extend_from_slice(&rest.stdout);
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("line ").count(), 4, "{text}");
    assert_eq!(rest.end, Some((0, 0)));
}

#[test]
fn abort_cancels_the_service_future() {
    let app = FcgiApp::start("axum", &[]);
    let mut s = app.connect();
    s.write_all(&request(1, true, &blog("GET", "/slow", "ms=5000"), b""))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    s.write_all(&rec(ABORT, 1, &[])).unwrap();
    let r = read_reply(&mut s, 1, T);
    assert!(r.end.is_some(), "no END_REQUEST");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t0.elapsed()
    );
    assert!(body_text_opt(&r).is_none_or(|b| !b.contains("finished")));
    // The service's future was dropped: its guard logged that (as FCGI_STDERR or on
    // the process's stderr).
    let log = format!("{}{}", String::from_utf8_lossy(&r.stderr), app.stderr());
    let saw = wait_until(Duration::from_secs(2), || {
        format!("{log}{}", app.stderr()).contains("/slow was cancelled")
    });
    assert!(saw, "no cancellation logged:\n{log}");
    // The connection (keep-conn) and the process go on.
    s.write_all(&request(2, false, &blog("GET", "/posts/1", ""), b""))
        .unwrap();
    assert_eq!(read_reply(&mut s, 2, T).status(), 200);
}

fn body_text_opt(r: &Reply) -> Option<String> {
    r.stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| String::from_utf8_lossy(&r.stdout[p + 4..]).into_owned())
}

/// Sends `bytes`, closes the connection 300 ms later, and expects `log` on the app's
/// stderr within 2 s.
fn closing_mid_request_is_logged(app: &FcgiApp, bytes: Vec<u8>, log: &str) {
    let mut s = app.connect();
    s.write_all(&bytes).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(s);
    assert!(
        wait_until(Duration::from_secs(2), || app.stderr().contains(log)),
        "{}",
        app.stderr()
    );
}

#[test]
fn disconnect_cancels_the_service_future() {
    let app = FcgiApp::start("axum", &[]);
    closing_mid_request_is_logged(
        &app,
        request(1, false, &blog("GET", "/slow", "ms=5000"), b""),
        "/slow was cancelled",
    );
}

/// A web server that half-closes after the whole request (Unix socket) does not
/// cancel the service: the answer comes whole. A close does (above).
#[test]
fn a_half_close_after_the_request_does_not_cancel_the_service() {
    let app = FcgiApp::start("axum", &[]);
    let mut s = app.connect();
    s.write_all(&request(1, false, &blog("GET", "/slow", "ms=500"), b""))
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let r = read_reply(&mut s, 1, T);
    assert_eq!(r.status(), 200, "{}", app.stderr());
    assert_eq!(body_text(&r), "finished\n");
    assert_eq!(r.end, Some((0, 0)));
    assert!(!app.stderr().contains("cancelled"), "{}", app.stderr());
}

#[test]
fn panic_is_500_and_the_process_lives() {
    let mut app = FcgiApp::start("axum", &[]);
    let r = app.roundtrip(request(1, false, &blog("GET", "/panic", ""), b""), 1);
    assert_eq!(r.status(), 500);
    assert!(String::from_utf8_lossy(&r.stderr).contains("service panicked"));
    let r = app.roundtrip(request(1, false, &blog("GET", "/posts/2", ""), b""), 1);
    assert_eq!(r.status(), 200);
    assert!(app.alive());
}

/// A panic in `poll_ready`, or in `call` before it returns a future, is a 500 like one
/// inside the future, and the process (and its only worker) serves on. Both used to
/// end the process.
#[test]
fn a_panic_in_poll_ready_or_in_call_itself_is_a_500() {
    let mut app = FcgiApp::start("tower_faults", &[]);
    // The first poll_ready of the process panics.
    let r = app.roundtrip(request(1, false, &get("/ok", ""), b""), 1);
    assert_eq!(r.status(), 500);
    assert_eq!(r.end, Some((1, 0)));
    let log = format!("{}{}", String::from_utf8_lossy(&r.stderr), app.stderr());
    assert!(log.contains("service panicked in poll_ready"), "{log}");
    // Mounted under /blog: the log line names the URL the client asked for, as the
    // sync API's does.
    let mut vars = get("/panic-in-call", "x=1");
    for (k, v) in vars.iter_mut() {
        match *k {
            "SCRIPT_NAME" => *v = "/blog/mysite.fcgi".into(),
            "REQUEST_URI" => *v = "/blog/panic-in-call?x=1".into(),
            _ => {}
        }
    }
    let r = app.roundtrip(request(1, false, &vars, b""), 1);
    assert_eq!(r.status(), 500);
    let log = format!("{}{}", String::from_utf8_lossy(&r.stderr), app.stderr());
    assert!(
        log.contains("service panicked in call on GET /blog/panic-in-call?x=1"),
        "{log}"
    );
    let r = app.roundtrip(request(1, false, &get("/ok", ""), b""), 1);
    assert_eq!(r.status(), 200);
    assert_eq!(body_text(&r), "ok");
    assert!(app.alive());
}

/// A handler that holds the request body without reading it: an abort or the web
/// server going away still cancels it (the end of an empty body is taken from the
/// stream; an abort read in behind unread body bytes is seen there, and a close
/// behind them shows as the peer's hang-up). The connection then serves on.
#[test]
fn abort_or_close_cancels_a_handler_holding_its_body_unread() {
    let app = FcgiApp::start("tower_faults", &[]);
    app.roundtrip(request(1, false, &get("/ok", ""), b""), 1);
    let mut post = get("/hold", "");
    post[1].1 = "POST".into();
    let mut partial = post.clone();
    partial.push(("CONTENT_LENGTH", "1000000".into()));
    let cases = [
        // GET: only the empty STDIN record is sent; then ABORT.
        ("GET", request(1, true, &get("/hold", ""), b"")),
        // A whole body of 1,000 bytes (before: no answer until the 3 s were up).
        ("POST", request(1, true, &post, &[b'x'; 1000])),
        // 1,000 bytes of a 1,000,000-byte body, then the client goes away.
        ("POST, part of the body", {
            let mut v = request_head(1, true, &partial);
            v.extend(rec(STDIN, 1, &[b'y'; 1000]));
            v
        }),
    ];
    for (what, bytes) in cases {
        let mut s = app.connect();
        s.write_all(&bytes).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        s.write_all(&rec(ABORT, 1, &[])).unwrap();
        let r = read_reply(&mut s, 1, T);
        assert_eq!(r.end, Some((1, 0)), "{what}: {:?}", r.end);
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{what}: took {:?}",
            t0.elapsed()
        );
        let log = format!("{}{}", String::from_utf8_lossy(&r.stderr), app.stderr());
        assert!(log.contains("/hold's future dropped"), "{what}: {log}");
        // The kept-alive connection serves the next request.
        s.write_all(&request(2, true, &get("/ok", ""), b""))
            .unwrap();
        let r = read_reply(&mut s, 2, T);
        assert_eq!((r.status(), r.end), (200, Some((0, 0))), "{what}");
    }
    // POST with a body the handler never reads; then the web server closes.
    let app = FcgiApp::start("tower_faults", &[]);
    app.roundtrip(request(1, false, &get("/ok", ""), b""), 1);
    let mut vars = get("/hold", "");
    vars[1].1 = "POST".into();
    closing_mid_request_is_logged(
        &app,
        request(1, false, &vars, b"0123456789"),
        "/hold's future dropped",
    );
}

/// A streamed body that fails after two frames: the frames reach the web server, then
/// the connection closes without END_REQUEST, so the response is not taken as complete.
#[test]
fn a_body_that_fails_midway_ends_without_end_request() {
    let app = FcgiApp::start("tower_faults", &[]);
    app.roundtrip(request(1, false, &get("/ok", ""), b""), 1);
    let mut s = app.connect();
    s.write_all(&request(1, true, &get("/cut", ""), b""))
        .unwrap();
    let r = read_reply(&mut s, 1, T);
    assert!(r.closed);
    assert_eq!(r.end, None);
    assert_eq!(r.head_and_body().1, b"part1 part2 ");
    let log = format!("{}{}", String::from_utf8_lossy(&r.stderr), app.stderr());
    assert!(
        log.contains("fails on purpose") && log.contains("cut short"),
        "{log}"
    );
    let r = app.roundtrip(request(1, false, &get("/ok", ""), b""), 1);
    assert_eq!(r.status(), 200);
}

/// For HEAD axum swaps the body for an empty one; its length 0 is not the GET's, so
/// no `Content-Length: 0` is made up.
#[test]
fn head_gets_no_made_up_content_length() {
    let app = FcgiApp::start("tower_faults", &[]);
    app.roundtrip(request(1, false, &get("/ok", ""), b""), 1);
    let r = app.roundtrip(request(1, false, &get("/text", ""), b""), 1);
    assert!(
        r.head_and_body().0.contains("content-length: 5"),
        "{:?}",
        r.head_and_body()
    );
    let r = app.roundtrip(request(1, false, &cgi_vars("HEAD", "/text", ""), b""), 1);
    let (head, body) = r.head_and_body();
    assert!(head.starts_with("Status: 200 OK\r\n"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("content-length: 0"),
        "{head}"
    );
    assert!(body.is_empty());
    // Nor on a 304 (RFC 9110 8.6: only the length a 200 would have had).
    let r = app.roundtrip(request(1, false, &get("/not-modified", ""), b""), 1);
    let (head, body) = r.head_and_body();
    assert_eq!(head, "Status: 304 Not Modified\r\n");
    assert!(body.is_empty());
}

#[test]
fn lifecycle_applies_to_services_too() {
    let mut app = FcgiApp::start("axum", &[("FCGI_MAX_REQUESTS", "2")]);
    for _ in 0..2 {
        let r = app.roundtrip(request(1, false, &blog("GET", "/posts/2", ""), b""), 1);
        assert_eq!(r.status(), 200);
    }
    assert_eq!(app.wait_exit(T).and_then(|s| s.code()), Some(0));
    // SIGTERM while a request is in flight: it completes, then exit 0.
    let mut app = FcgiApp::start("axum", &[]);
    let mut s = app.connect();
    s.write_all(&request(1, false, &blog("GET", "/slow", "ms=600"), b""))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    app.signal(libc::SIGTERM);
    let r = read_reply(&mut s, 1, T);
    assert_eq!(body_text(&r), "finished\n");
    assert_eq!(app.wait_exit(T).and_then(|s| s.code()), Some(0));
}

#[test]
fn the_same_app_as_cgi() {
    let out = Command::new(example("axum"))
        .env_clear()
        .envs(
            blog("GET", "/posts/9", "")
                .iter()
                .map(|(k, v)| (*k, v.as_str())),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.starts_with("Status: 200 OK\r\n") && s.ends_with("<h1>Post 9</h1>"),
        "{s}"
    );
}

#[test]
fn a_single_thread_serves_by_default() {
    // The default runtime is current-thread: an idle process has just its main thread.
    let app = FcgiApp::start("axum", &[]);
    let r = app.roundtrip(request(1, false, &blog("GET", "/posts/1", ""), b""), 1);
    assert_eq!(r.status(), 200);
    let threads = std::fs::read_dir(format!("/proc/{}/task", app.pid()))
        .unwrap()
        .count();
    assert_eq!(threads, 1, "threads in an fd-0 FastCGI process");
}

/// The count /ticks answers: tower_faults' task spawned by /spawn-tick adds one every
/// 10 ms while its runtime runs it.
fn ticks(get: &mut dyn FnMut(&str) -> (u16, String)) -> u64 {
    let (status, text) = get("/ticks");
    assert_eq!(status, 200, "{text}");
    text.trim().parse().unwrap_or_else(|_| panic!("{text:?}"))
}

/// Whether a task a request spawned runs between requests: /spawn-tick, then the
/// count 300 ms apart with no request between.
fn spawned_task_runs_between_requests(get: &mut dyn FnMut(&str) -> (u16, String)) -> bool {
    // The fixture's first poll_ready panics on purpose (a 500).
    let _ = get("/ok");
    assert_eq!(get("/spawn-tick").0, 200);
    std::thread::sleep(Duration::from_millis(100));
    let before = ticks(get);
    std::thread::sleep(Duration::from_millis(300));
    ticks(get) >= before + 10
}

/// `tower::run` called from inside a tokio runtime, as `#[tokio::main]` does. Under
/// FastCGI on fd 0 and under CGI it blocked on its own runtime from inside that one,
/// which tokio refuses with a panic: every request was lost (fd 0: the connection
/// closed with nothing on it; CGI: no output, exit 101), while the standalone server,
/// whose threads are its own, worked. It now serves from a thread of its own, and on
/// the multi-thread runtime it was called from, so a task a request spawns runs
/// between requests as under `axum::serve`. From a current-thread runtime it serves
/// too, with a warning that that runtime's tasks do not run meanwhile.
#[test]
fn a_service_run_from_inside_tokio_main_serves_in_every_mode() {
    for flavor in ["main", "main-current"] {
        let app = FcgiApp::start("tower_faults", &[("TOWER_FAULTS_RUNTIME", flavor)]);
        // What the app logs during a request comes as FCGI_STDERR.
        let mut logged = String::new();
        let mut get = |path: &str| {
            let r = app.roundtrip(request(1, false, &get(path, ""), b""), 1);
            logged.push_str(&String::from_utf8_lossy(&r.stderr));
            (r.status(), body_text(&r))
        };
        let _ = get("/ok");
        assert_eq!(get("/ok"), (200, "ok".to_string()), "{flavor}");
        // The serving thread keeps the program's name (a process forked from it shows
        // that name in `ps`).
        let names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", app.pid()))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .collect();
        assert!(
            names.iter().all(|n| n.trim() != "fcgi-shim"),
            "{flavor}: {names:?}"
        );
        if flavor == "main" {
            assert!(
                spawned_task_runs_between_requests(&mut get),
                "{flavor}: the spawned task did not run between requests"
            );
        }
        assert_eq!(
            logged.contains("current-thread tokio runtime"),
            flavor == "main-current",
            "{flavor}: {logged}"
        );
        let out = Command::new(example("tower_faults"))
            .env_clear()
            .env("TOWER_FAULTS_RUNTIME", flavor)
            .envs(get_vars("/text"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        // CGI: one process, one request, whose poll_ready is the process's first.
        assert!(
            text.starts_with("Status: 500"),
            "{flavor} CGI: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{flavor} CGI: {:?}", out.status);
    }
}

fn get_vars(path: &str) -> Vec<(&'static str, String)> {
    get(path, "")
}

/// tower_faults as a standalone server on a Unix socket (8 threads), with `env`.
struct Standalone {
    server: std::process::Child,
    sock: std::path::PathBuf,
    log: std::path::PathBuf,
    _dir: TempDir,
}

impl Standalone {
    fn start(name: &str, env: &[(&str, &str)]) -> Standalone {
        let dir = TempDir::new(name);
        let sock = dir.join("app.sock");
        let log = dir.join("stderr.log");
        let mut cmd = Command::new(example("tower_faults"));
        cmd.arg("--socket")
            .arg(&sock)
            .env("FCGI_RESTART_GRACE", "0")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        contain(&mut cmd);
        let s = Standalone {
            server: spawn_retrying(&mut cmd),
            sock,
            log,
            _dir: dir,
        };
        assert!(wait_until(T, || s.sock.exists()), "{}", s.stderr());
        s
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One GET on a new connection: status and body.
    fn get(&self, path: &str) -> (u16, String) {
        let mut s = std::os::unix::net::UnixStream::connect(&self.sock).unwrap();
        s.write_all(&request(1, false, &get(path, ""), b""))
            .unwrap();
        let r = read_reply(&mut s, 1, T);
        (r.status(), body_text(&r))
    }
}

/// A standalone server serves on 8 threads. With the default runtime a task spawned
/// by a request runs between requests: one runtime for all of them, not one per
/// thread, where it ran only while a request ran on the thread that spawned it (and a
/// pool or client built on one thread's runtime waited for that thread's next
/// request when a request on another thread used it).
#[test]
fn a_standalone_server_runs_spawned_tasks_between_requests() {
    let mut srv = Standalone::start("tower-standalone-tick", &[]);
    let ran = spawned_task_runs_between_requests(&mut |path| srv.get(path));
    signal(srv.server.id() as i32, libc::SIGTERM);
    let _ = srv.server.wait();
    assert!(
        ran,
        "the spawned task did not run between requests\n{}",
        srv.stderr()
    );
}

/// A stopped process does not wait for a `spawn_blocking` task still running (its
/// request long answered, here a 30 s one): on fd 0 (a current-thread runtime on the
/// serving thread) and standalone (a shared one), our runtimes shut down without
/// waiting for it. Before, the process exited when the task ended, or at
/// FCGI_STOP_TIMEOUT with exit 1 and "requests still running" though none was. And
/// once `run` has returned the stop's clock is off: an app's own clean-up after it
/// (1.5 s here, with FCGI_STOP_TIMEOUT=1) is not cut short with that line.
#[test]
fn a_stopped_process_does_not_wait_for_blocking_tasks_or_the_apps_clean_up() {
    let get_text = |app: &FcgiApp, path: &str| {
        let r = app.roundtrip(request(1, false, &get(path, ""), b""), 1);
        body_text(&r)
    };
    let mut app = FcgiApp::start("tower_faults", &[("FCGI_STOP_TIMEOUT", "10")]);
    let _ = get_text(&app, "/ok");
    assert_eq!(get_text(&app, "/blocking-bg"), "started");
    app.signal(libc::SIGTERM);
    let t0 = Instant::now();
    let st = app.wait_exit(Duration::from_secs(8));
    assert!(
        st.is_some_and(|s| s.success()) && t0.elapsed() < Duration::from_secs(3),
        "fd 0: {st:?} after {:?}\n{}",
        t0.elapsed(),
        app.stderr()
    );

    let mut app = FcgiApp::start(
        "tower_faults",
        &[
            ("FCGI_STOP_TIMEOUT", "1"),
            ("TOWER_FAULTS_AFTER_MS", "1500"),
        ],
    );
    let _ = get_text(&app, "/ok");
    app.signal(libc::SIGTERM);
    let st = app.wait_exit(Duration::from_secs(8));
    assert!(
        st.is_some_and(|s| s.success()),
        "clean-up after run: {st:?}\n{}",
        app.stderr()
    );
    assert!(!app.stderr().contains("still running"), "{}", app.stderr());

    let mut srv = Standalone::start("tower-blocking-stop", &[("FCGI_STOP_TIMEOUT", "10")]);
    let answer = |path: &str| srv.get(path).1;
    let _ = answer("/ok");
    assert_eq!(answer("/blocking-bg"), "started");
    signal(srv.server.id() as i32, libc::SIGTERM);
    let t0 = Instant::now();
    let exited = wait_until(Duration::from_secs(8), || {
        srv.server.try_wait().ok().flatten().is_some()
    });
    let took = t0.elapsed();
    if !exited {
        let _ = srv.server.kill();
    }
    let st = srv.server.wait().unwrap();
    assert!(
        exited && st.success() && took < Duration::from_secs(5),
        "standalone: {st:?} after {took:?}\n{}",
        srv.stderr()
    );
}

/// A task the service spawns that panics, on the request's thread (the current-thread
/// runtime of an fd-0 process): tokio hands the panic back as a `JoinError`, and its
/// message is logged. Before, our panic hook kept it for a line that never came, and
/// nothing was logged anywhere.
#[test]
fn a_panic_in_a_spawned_task_is_logged() {
    let app = FcgiApp::start("tower_faults", &[]);
    let _ = app.roundtrip(request(1, false, &get("/ok", ""), b""), 1);
    let r = app.roundtrip(request(1, false, &get("/spawn-panic", ""), b""), 1);
    assert_eq!(body_text(&r), "panicked: true");
    let log = format!("{}{}", String::from_utf8_lossy(&r.stderr), app.stderr());
    assert!(
        log.contains("panic caught inside the app")
            && log.contains("a spawned task panics on purpose"),
        "{log}"
    );
}

/// `Runtime::MultiThread` with `--processes 2` and with `--daemonize`, which fork after
/// the app is set up: a runtime built before a fork has no worker threads in the child,
/// so a tokio timer (/sleep) never fired and the request hung. It is built at the first
/// request now.
#[test]
fn a_multi_thread_runtime_works_after_a_fork() {
    for how in [&["--processes", "2"][..], &["--daemonize"][..]] {
        let dir = TempDir::new("tower-fork");
        let sock = dir.join("app.sock");
        let pidf = dir.join("app.pid");
        let log = dir.join("stderr.log");
        let mut cmd = Command::new(example("tower_faults"));
        cmd.arg("--socket")
            .arg(&sock)
            .arg("--pidfile")
            .arg(&pidf)
            .args(how)
            .env("TOWER_FAULTS_RUNTIME", "multi")
            .env("FCGI_RESTART_GRACE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        contain(&mut cmd);
        let mut launcher = spawn_retrying(&mut cmd);
        let stderr = || std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            wait_until(T, || sock.exists()
                && std::fs::read_to_string(&pidf)
                    .is_ok_and(|p| !p.trim().is_empty())),
            "{how:?}: {}",
            stderr()
        );
        let pid: i32 = std::fs::read_to_string(&pidf)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Each process's first poll_ready panics on purpose (a 500): a few tries.
        let mut slept = 0;
        for _ in 0..8 {
            let Ok(mut s) = std::os::unix::net::UnixStream::connect(&sock) else {
                continue;
            };
            s.write_all(&request(1, false, &get("/sleep", ""), b""))
                .unwrap();
            let (recs, _) = parse_records(&read_all(&mut s, Duration::from_secs(3)));
            let out: Vec<u8> = recs
                .iter()
                .filter(|r| r.t == STDOUT)
                .flat_map(|r| r.content.clone())
                .collect();
            if out.starts_with(b"Status: 200") && out.ends_with(b"slept") {
                slept += 1;
                if slept == 2 {
                    break;
                }
            }
        }
        signal(pid, libc::SIGTERM);
        let exited = wait_until(T, || {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || proc_state(pid as u32) == Some('Z')
        });
        // Whatever is left (hung workers, when this fails): the daemon has a session
        // of its own, the prefork parent and workers are in the launcher's group.
        if !exited {
            signal(pid, libc::SIGKILL);
            signal(-pid, libc::SIGKILL);
            signal(-(launcher.id() as i32), libc::SIGKILL);
        }
        let _ = launcher.kill();
        let _ = launcher.wait();
        assert_eq!(slept, 2, "{how:?}: {}", stderr());
        assert!(exited, "{how:?}: still running after SIGTERM");
    }
}

/// On the --http port, a client that half-closes while the service waits (here
/// /hold, 3 s) cancels it; the connection then ends with nothing written, where it
/// used to get a head with no status line.
#[test]
fn over_http_a_cancelled_service_writes_nothing() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let dir = TempDir::new("tower-http-gone");
    let log = dir.join("stderr.log");
    let mut cmd = Command::new(example("tower_faults"));
    cmd.args(["--http", &addr])
        .env("FCGI_RESTART_GRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    contain(&mut cmd);
    let mut srv = spawn_retrying(&mut cmd);
    let stderr = || std::fs::read_to_string(&log).unwrap_or_default();
    let exchange = |req: &[u8], half_close: bool| -> Vec<u8> {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        s.write_all(req).unwrap();
        if half_close {
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    };
    assert!(
        wait_until(T, || std::net::TcpStream::connect(&addr).is_ok()),
        "{}",
        stderr()
    );
    // The first poll_ready of the process panics on purpose: a 500 first.
    let r = exchange(
        b"GET /ok HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        false,
    );
    assert!(
        r.starts_with(b"HTTP/1.1 500"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    let r = exchange(b"GET /hold HTTP/1.1\r\nHost: h\r\n\r\n", true);
    assert!(
        r.is_empty() || r.starts_with(b"HTTP/1.1 "),
        "{:?}\n{}",
        String::from_utf8_lossy(&r),
        stderr()
    );
    // And the server serves on.
    let r = exchange(
        b"GET /ok HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        false,
    );
    assert!(
        r.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    let _ = srv.kill();
    let _ = srv.wait();
}
