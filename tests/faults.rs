// Faults, hostile input, forged headers and a bounded soak, against real processes on
// real sockets: nothing crashes, leaks, mixes up or loses a request.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

const T: Duration = Duration::from_secs(10);

/// (VmRSS, VmHWM) of a process, in KiB.
fn mem_kib(pid: u32) -> (u64, u64) {
    let field = |n: &str| proc_status_field(pid, n).unwrap_or(0);
    (field("VmRSS:"), field("VmHWM:"))
}

fn stdout_only(r: &Reply) -> Vec<u8> {
    r.head_and_body().1
}

#[test]
fn disconnect_mid_stdout_is_one_log_line_and_the_process_serves_on() {
    let mut app = FcgiApp::start("echo", &[]);
    for round in 0..3 {
        let mut s = app.connect();
        s.write_all(&request(
            1,
            false,
            &get("/stream", "chunks=400&size=65536"),
            b"",
        ))
        .unwrap();
        let mut first = vec![0u8; 100_000];
        s.set_read_timeout(Some(T)).unwrap();
        s.read_exact(&mut first).unwrap();
        drop(s); // the web server goes away mid-response
        let r = app.roundtrip(request(1, false, &get("/after", ""), b""), 1);
        assert_eq!(r.json()["path_info"], "/after", "round {round}");
    }
    assert!(app.alive());
    let log = app.stderr();
    let lines = log
        .lines()
        .filter(|l| l.contains("closing the connection"))
        .count();
    assert!(lines <= 3, "more than one line per disconnect:\n{log}");
    // Each names the request by its method and URL, not by its FastCGI id (always 1
    // under a web server).
    assert!(lines >= 1, "{log}");
    for l in log.lines().filter(|l| l.contains("closing the connection")) {
        assert!(
            l.contains("GET /stream?chunks=400&size=65536: ") && !l.contains("request 1"),
            "{l}"
        );
    }
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn disconnect_mid_params_and_mid_stdin() {
    let mut app = FcgiApp::start("echo", &[]);
    let mut vars = get("/upload", "");
    vars[1].1 = "POST".into();
    let full = request(1, false, &vars, &noise(300_000, 5));
    // Cut inside the params, and inside the body.
    for cut in [40, full.len() / 2] {
        let mut s = app.connect();
        s.write_all(&full[..cut]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        drop(s);
        let r = app.roundtrip(request(1, false, &get("/next", ""), b""), 1);
        assert_eq!(r.status(), 200, "after a cut at {cut}");
    }
    assert!(app.alive());
}

#[test]
fn slow_client_on_tcp_is_cut_off_and_the_worker_freed() {
    let port = free_port();
    let mut srv = Srv::start(
        &["--listen", &format!("127.0.0.1:{port}"), "--threads", "1"],
        &[("FCGI_READ_TIMEOUT", "2")],
    );
    assert!(wait_until(T, || std::net::TcpStream::connect((
        "127.0.0.1",
        port
    ))
    .is_ok()));
    // A client that sends its request one byte every 250 ms (each byte well within the
    // read timeout; the whole head would take ~100 s).
    let bytes = request(1, false, &get("/slow", ""), b"");
    let slow = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let t0 = Instant::now();
        for b in bytes {
            if s.write_all(&[b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
            if t0.elapsed() > Duration::from_secs(15) {
                break;
            }
        }
        let mut rest = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let _ = s.read_to_end(&mut rest);
        (t0.elapsed(), rest)
    });
    std::thread::sleep(Duration::from_millis(300));
    // The only worker is held by the slow client; this request waits in the backlog
    // until the read timeout frees it.
    let t0 = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&request(1, false, &get("/fast", ""), b""))
        .unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let waited = t0.elapsed();
    let (slow_took, slow_got) = slow.join().unwrap();
    assert!(
        String::from_utf8_lossy(&got).contains("/fast"),
        "fast client not served"
    );
    assert!(
        waited < Duration::from_secs(5),
        "fast client waited {waited:?}"
    );
    assert!(slow_got.is_empty(), "the slow client got an answer");
    assert!(
        slow_took < Duration::from_secs(8),
        "slow client held on for {slow_took:?}"
    );
    assert!(
        srv.stderr()
            .contains("timed out waiting for the request head"),
        "{}",
        srv.stderr()
    );
    assert!(srv.alive());
}

/// Without any setting, connections that send nothing (slowloris) hold the workers
/// for 10 s at most, not the 60 s read timeout: a real client waiting behind 8 of them
/// on an 8-thread server is answered within about 10 s, by FastCGI and `--http` alike.
#[test]
fn idle_fresh_connections_give_way_within_the_head_timeout() {
    for http in [false, true] {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let args: Vec<&str> = if http {
            vec!["--http", &addr]
        } else {
            vec!["--listen", &addr]
        };
        let srv = Srv::start(&args, &[("FCGI_RESTART_GRACE", "0")]);
        assert!(wait_until(T, || std::net::TcpStream::connect(&addr).is_ok()));
        // 8 connections (the default threads): FastCGI ones send nothing; HTTP ones
        // start a request line and stop (the idle wait before the first byte is 5 s).
        let idle: Vec<_> = (0..8)
            .map(|_| {
                let mut s = std::net::TcpStream::connect(&addr).unwrap();
                if http {
                    s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
                }
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        if http {
            s.write_all(b"GET /real HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
                .unwrap();
        } else {
            s.write_all(&request(1, false, &get("/real", ""), b""))
                .unwrap();
        }
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let waited = t0.elapsed();
        assert!(
            String::from_utf8_lossy(&got).contains("/real"),
            "http {http}: not served: {}",
            srv.stderr()
        );
        assert!(
            waited < Duration::from_secs(13),
            "http {http}: waited {waited:?} behind connections sending nothing"
        );
        drop(idle);
    }
}

/// A web server that stops reading the response: the write timeout frees the worker,
/// whether the app writes in small pieces (buffered, 32 KiB records) or in big ones
/// (written straight from the app's buffer, 64 KiB a record), and a shutdown is not
/// held up by it.
#[test]
fn a_web_server_that_stops_reading_meets_the_write_timeout() {
    for query in ["chunks=100&size=65536", "chunks=2000&size=8000"] {
        let app = FcgiApp::start(
            "echo",
            &[("FCGI_THREADS", "1"), ("FCGI_WRITE_TIMEOUT", "2")],
        );
        let mut stalled = app.connect();
        stalled
            .write_all(&request(1, false, &get("/stream", query), b""))
            .unwrap();
        // The only worker is writing to `stalled`, which nobody reads; this request
        // waits in the backlog until the write timeout frees the worker.
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        let r = app.roundtrip(request(1, false, &get("/next", ""), b""), 1);
        assert_eq!(r.status(), 200, "{query}");
        let waited = t0.elapsed();
        assert!(
            waited < Duration::from_secs(6),
            "{query}: waited {waited:?}"
        );
        assert!(
            app.stderr()
                .contains("timed out waiting for the web server to read the response"),
            "{query}: {}",
            app.stderr()
        );
        drop(stalled);
    }
    // SIGTERM while the only worker writes to a reader that stalled: the process
    // stops within the write timeout, not never.
    let mut app = FcgiApp::start(
        "echo",
        &[("FCGI_THREADS", "1"), ("FCGI_WRITE_TIMEOUT", "2")],
    );
    let mut stalled = app.connect();
    stalled
        .write_all(&request(
            1,
            false,
            &get("/stream", "chunks=100&size=65536"),
            b"",
        ))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    app.signal(libc::SIGTERM);
    assert!(
        app.wait_exit(Duration::from_secs(5)).is_some(),
        "{}",
        app.stderr()
    );
    drop(stalled);
}

/// The same, with a web server that keeps sending the request's body a few bytes at a
/// time while it reads none of the response (nginx with request buffering off, in
/// front of a client that trickles its upload and does not read). The app answered
/// without the body, so what comes is read and dropped; the write timeout still runs
/// from the moment the response stopped going out. It used to start over with every
/// piece of body that came in, and the worker stayed stuck for as long as the body
/// lasted.
#[test]
fn a_trickled_body_does_not_hold_off_the_write_timeout() {
    let app = FcgiApp::start(
        "echo",
        &[("FCGI_THREADS", "1"), ("FCGI_WRITE_TIMEOUT", "2")],
    );
    let mut stalled = app.connect();
    let mut vars = cgi_vars("POST", "/stream", "chunks=100&size=65536");
    vars.push(("CONTENT_LENGTH", "1000000".into()));
    stalled.write_all(&request_head(1, false, &vars)).unwrap();
    // 8 body bytes every 200 ms for 12 s, or until the app has closed the connection.
    let trickle = std::thread::spawn(move || {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(12) {
            if stalled.write_all(&rec(STDIN, 1, b"xxxxxxxx")).is_err() {
                return Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    });
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let r = app.roundtrip(request(1, false, &get("/next", ""), b""), 1);
    assert_eq!(r.status(), 200);
    let waited = t0.elapsed();
    assert!(
        waited < Duration::from_secs(6),
        "waited {waited:?}\n{}",
        app.stderr()
    );
    assert!(
        app.stderr()
            .contains("timed out waiting for the web server to read the response"),
        "{}",
        app.stderr()
    );
    // The stalled connection was closed: the trickle's writes began to fail.
    let closed = trickle.join().unwrap();
    assert!(
        closed.is_some_and(|t| t < Duration::from_secs(7)),
        "{closed:?}"
    );
}

/// Out of file descriptors while the pool grows (each worker has an epoll descriptor
/// besides its connection): the process serves on with the workers it has, and serves
/// everyone once connections close. It used to stop altogether.
#[test]
fn running_out_of_descriptors_while_growing_the_pool_does_not_stop_the_process() {
    // Each connection takes a descriptor, each new worker one more, so which of the
    // two meets the limit first depends on its parity: try both.
    let mut grow_failed = false;
    for cap in [24, 25] {
        let mut app = FcgiApp::start("echo", &[("FCGI_THREADS", "100")]);
        // Once it serves, cap its descriptors (it uses about 8 when idle).
        assert_eq!(
            app.roundtrip(request(1, false, &get("/up", ""), b""), 1)
                .status(),
            200
        );
        let limit = libc::rlimit {
            rlim_cur: cap,
            rlim_max: cap,
        };
        // SAFETY: prlimit on our own child with a valid rlimit.
        let rc = unsafe {
            libc::prlimit(
                app.pid() as libc::pid_t,
                libc::RLIMIT_NOFILE,
                &limit,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        // Kept-alive connections, each holding a worker: more than the cap allows.
        let mut held = Vec::new();
        for i in 0..30u16 {
            let mut s = app.connect();
            s.write_all(&request(i + 1, true, &get("/held", ""), b""))
                .unwrap();
            held.push(s);
        }
        std::thread::sleep(Duration::from_millis(500));
        assert!(app.alive(), "cap {cap}: {}", app.stderr());
        grow_failed |= app.stderr().contains("could not start one more worker");
        drop(held);
        // Every held connection closed: the process, still there, answers again.
        assert!(
            wait_until(T, || {
                let mut s = app.connect();
                s.write_all(&request(1, false, &get("/after", ""), b""))
                    .is_ok()
                    && read_reply(&mut s, 1, T).end.is_some()
            }),
            "cap {cap}: {}",
            app.stderr()
        );
        assert!(app.alive(), "cap {cap}: {}", app.stderr());
    }
    assert!(grow_failed, "no cap made starting a worker fail");
}

#[test]
fn params_flood_and_huge_pair_are_rejected_with_bounded_memory() {
    let app = FcgiApp::start("echo", &[]);
    let ok = app.roundtrip(request(1, false, &get("/warm", ""), b""), 1);
    assert_eq!(ok.status(), 200);
    let (_, hwm_before) = mem_kib(app.pid());
    // 64 MiB of params: a flood of 1-byte pairs, then a 2^31-1 byte value declared
    // and 16 MiB of it actually sent.
    let mut flood = begin(1, RESPONDER, false);
    let mut block = Vec::new();
    for i in 0..4000 {
        pair(&mut block, format!("HTTP_X_{i}").as_bytes(), b"v");
    }
    let mut sent = 0usize;
    while sent < 64 << 20 {
        for c in block.chunks(65535) {
            flood.extend(rec(PARAMS, 1, c));
            sent += c.len();
        }
    }
    flood.extend(rec(PARAMS, 1, &[]));
    flood.extend(rec(STDIN, 1, &[]));
    let r = app.roundtrip(flood, 1);
    assert_eq!(r.status(), 431);

    let mut huge = begin(1, RESPONDER, false);
    let mut head = vec![4, 0xff, 0xff, 0xff, 0xff];
    head.extend_from_slice(b"NAME");
    huge.extend(rec(PARAMS, 1, &head));
    let chunk = vec![b'a'; 65528];
    for _ in 0..256 {
        huge.extend(rec(PARAMS, 1, &chunk));
    }
    huge.extend(rec(PARAMS, 1, &[]));
    huge.extend(rec(STDIN, 1, &[]));
    let r = app.roundtrip(huge, 1);
    assert_eq!(r.status(), 431);

    let (_, hwm_after) = mem_kib(app.pid());
    // The cap is 1 MiB: the peak may grow by about that, never by what was sent.
    assert!(
        hwm_after < hwm_before + 4096,
        "peak RSS grew from {hwm_before} KiB to {hwm_after} KiB"
    );
    let r = app.roundtrip(request(1, false, &get("/after", ""), b""), 1);
    assert_eq!(r.status(), 200);
}

#[test]
fn a_handler_that_panics_on_every_request_still_answers_every_one() {
    let mut app = FcgiApp::start("echo", &[]);
    let pid = app.pid();
    let mut s = app.connect();
    for id in 1..=200u16 {
        s.write_all(&request(id, true, &get("/panic", ""), b""))
            .unwrap();
        let r = read_reply(&mut s, id, T);
        assert_eq!(r.status(), 500, "request {id}");
        assert_eq!(r.end, Some((1, 0)));
    }
    drop(s);
    assert!(app.alive());
    let r = app.roundtrip(request(1, false, &get("/pid", ""), b""), 1);
    assert_eq!(r.json()["pid"], pid);
}

/// What a client can put in headers, trying to look like the server's assertions.
fn forged() -> Vec<(&'static str, String)> {
    let mut v = get("/redirect", "");
    for (k, val) in [
        ("HTTP_X_FORWARDED_FOR", "6.6.6.6, 10.0.0.1"),
        ("HTTP_X_FORWARDED_PROTO", "http, https"),
        ("HTTP_X_FORWARDED_HOST", "evil.example"),
        ("HTTP_X_FORWARDED_PREFIX", "/evil"),
        ("HTTP_REMOTE_USER", "admin"),
        ("HTTP_AUTH_TYPE", "Basic"),
        ("HTTP_HTTPS", "on"),
        ("HTTP_REMOTE_ADDR", "1.2.3.4"),
        ("HTTP_SCRIPT_NAME", "/forged"),
        ("HTTP_FORCE_SCRIPT_NAME", "/forged"),
    ] {
        v.push((k, val.to_owned()));
    }
    v
}

#[test]
fn client_headers_cannot_forge_what_the_server_asserts() {
    let app = FcgiApp::start("echo", &[]);
    let r = app.roundtrip(request(1, false, &forged(), b""), 1);
    let j = r.json();
    assert_eq!(j["remote_addr"], "127.0.0.1");
    assert_eq!(j["https"], false);
    assert_eq!(j["remote_user"], Value::Null);
    assert_eq!(j["script_name"], "");
    let (head, _) = r.head_and_body();
    assert!(
        head.contains("location: http://localhost/landed\r\n"),
        "{head}"
    );
    // The headers are still there, as headers.
    assert_eq!(j["headers"]["x-forwarded-proto"], "http, https");

    // Opted in (a proxy the app controls sets them): believed, the last entry of a
    // list (what that proxy added; the client sent the ones before it).
    let app = FcgiApp::start("echo", &[("FCGI_TRUST_FORWARDED", "1")]);
    let r = app.roundtrip(request(1, false, &forged(), b""), 1);
    let j = r.json();
    assert_eq!(j["remote_addr"], "10.0.0.1");
    assert_eq!(j["https"], true);
    assert_eq!(j["script_name"], "/evil");
    let (head, _) = r.head_and_body();
    assert!(
        head.contains("location: https://evil.example/evil/landed\r\n"),
        "{head}"
    );
}

// ---- the soak ----

fn soak_secs() -> u64 {
    std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

/// A tiny deterministic generator per client thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Mostly small, sometimes up to 4 MiB.
    fn size(&mut self) -> usize {
        if self.below(10) < 7 {
            self.below(64 * 1024) as usize
        } else {
            self.below(4 * 1024 * 1024 + 1) as usize
        }
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    aborted: AtomicU64,
    bytes: AtomicU64,
}

/// One client's loop: echoes, downloads, aborts and small GETs, each verified.
fn soak_client(
    sock: std::path::PathBuf,
    seed: u64,
    until: Instant,
    tally: Arc<Tally>,
) -> Result<(), String> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut conn: Option<UnixStream> = None;
    let mut id: u16 = 0;
    while Instant::now() < until {
        let keep = rng.below(2) == 0;
        id = id.wrapping_add(1).max(1);
        let op = rng.below(10);
        // An upload's body (up to 4 MiB of noise, slow to make in a debug build on a
        // starved machine) is made before connecting, as a web server has the request
        // head ready when it connects: the app gives a fresh connection 10 s (the head
        // timeout) for BEGIN_REQUEST and PARAMS, and closes it after.
        let echo = (op <= 4).then(|| {
            let body = noise(rng.size(), rng.next());
            let mut vars = get("/echo-body", "");
            vars[1].1 = "PUT".into();
            let bytes = request(id, keep, &vars, &body);
            (body, bytes)
        });
        let mut s = match conn.take() {
            Some(s) => s,
            None => UnixStream::connect(&sock).map_err(|e| format!("connect: {e}"))?,
        };
        match op {
            0..=4 => {
                let (body, bytes) = echo.expect("made above");
                let mut w = s.try_clone().map_err(|e| e.to_string())?;
                let writer =
                    std::thread::spawn(move || w.write_all(&bytes).map_err(|e| e.to_string()));
                let r = read_reply(&mut s, id, Duration::from_secs(30));
                writer.join().map_err(|_| "writer panicked".to_string())??;
                if r.end != Some((0, 0)) {
                    return Err(format!("echo of {} bytes: end {:?}", body.len(), r.end));
                }
                let got = stdout_only(&r);
                if sha256_hex(&got) != sha256_hex(&body) {
                    return Err(format!(
                        "echo of {} bytes came back as {} different bytes",
                        body.len(),
                        got.len()
                    ));
                }
                tally
                    .bytes
                    .fetch_add(2 * body.len() as u64, Ordering::Relaxed);
            }
            5..=7 => {
                let size = 1 + rng.below(65536) as usize;
                let chunks = rng.size() / size;
                s.write_all(&request(
                    id,
                    keep,
                    &get("/stream", &format!("chunks={chunks}&size={size}")),
                    b"",
                ))
                .map_err(|e| format!("write: {e}"))?;
                let r = read_reply(&mut s, id, Duration::from_secs(30));
                let got = stdout_only(&r);
                let mut want = Vec::with_capacity(chunks * size);
                for i in 0..chunks {
                    want.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, size));
                }
                if r.end != Some((0, 0)) || sha256_hex(&got) != sha256_hex(&want) {
                    return Err(format!(
                        "download of {chunks}x{size}: {} bytes, end {:?}",
                        got.len(),
                        r.end
                    ));
                }
                tally.bytes.fetch_add(got.len() as u64, Ordering::Relaxed);
            }
            8 => {
                // Abort a big download after its first record; the connection stays.
                s.write_all(&request(
                    id,
                    true,
                    &get("/stream", "chunks=1000&size=65536"),
                    b"",
                ))
                .map_err(|e| format!("write: {e}"))?;
                let mut h = [0u8; 8];
                s.set_read_timeout(Some(Duration::from_secs(30)))
                    .map_err(|e| e.to_string())?;
                s.read_exact(&mut h)
                    .map_err(|e| format!("first record: {e}"))?;
                let rest = u16::from_be_bytes([h[4], h[5]]) as usize + h[6] as usize;
                s.read_exact(&mut vec![0u8; rest])
                    .map_err(|e| e.to_string())?;
                s.write_all(&rec(ABORT, id, &[]))
                    .map_err(|e| format!("abort: {e}"))?;
                let t0 = Instant::now();
                let r = read_reply(&mut s, id, Duration::from_secs(30));
                if r.end.is_none() || t0.elapsed() > Duration::from_secs(5) {
                    return Err(format!("abort: end {:?} after {:?}", r.end, t0.elapsed()));
                }
                tally.aborted.fetch_add(1, Ordering::Relaxed);
                conn = Some(s);
                continue;
            }
            _ => {
                let q = format!("n={}", rng.next());
                s.write_all(&request(id, keep, &get("/small", &q), b""))
                    .map_err(|e| e.to_string())?;
                let r = read_reply(&mut s, id, Duration::from_secs(30));
                let j = r.json();
                if j["query"] != q.as_str() {
                    return Err(format!("small GET answered for {:?}", j["query"]));
                }
            }
        }
        tally.ok.fetch_add(1, Ordering::Relaxed);
        if keep {
            conn = Some(s);
        }
    }
    Ok(())
}

#[test]
fn soak_64_connections_mixed_sizes_some_aborted_nothing_lost() {
    let secs = soak_secs();
    let dir = TempDir::new("soak");
    let sock = dir.join("soak.sock");
    let mut srv = Srv::start(
        &["--socket", sock.to_str().unwrap(), "--threads", "64"],
        // info: a connection the app closes says why (the head timeout, a write
        // timeout), in the failure message below; nothing is logged per request.
        &[("FCGI_LOG", "info")],
    );
    assert!(
        wait_until(T, || UnixStream::connect(&sock).is_ok()),
        "{}",
        srv.stderr()
    );
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let clients: Vec<_> = (0..64)
        .map(|i| {
            let (sock, tally) = (sock.clone(), tally.clone());
            std::thread::spawn(move || soak_client(sock, i + 1, until, tally))
        })
        .collect();
    // RSS after warm-up (a sixth of the run), then at the end.
    std::thread::sleep(Duration::from_secs(secs / 6));
    let (warm, _) = mem_kib(srv.pid());
    let mut failures = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        // A client that panicked (a reply that never came) is a failure like the
        // others, reported with them and the server's log.
        match c.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("client {i}: {e}")),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("client {i} panicked: {msg}"));
            }
        }
    }
    let (end, peak) = mem_kib(srv.pid());
    let ok = tally.ok.load(Ordering::Relaxed);
    let aborted = tally.aborted.load(Ordering::Relaxed);
    let mib = tally.bytes.load(Ordering::Relaxed) / (1 << 20);
    eprintln!(
        "soak: {secs} s, 64 connections: {ok} verified requests, {aborted} aborted, {mib} MiB moved; \
         RSS after warm-up {warm} KiB, at the end {end} KiB, peak {peak} KiB"
    );
    assert!(failures.is_empty(), "{failures:#?}\n{}", srv.stderr());
    assert!(ok > 64 && aborted > 0, "{ok} requests, {aborted} aborted");
    // No leak: the end within 20% (or 4 MiB) of the warmed-up size.
    let margin = (warm / 5).max(4096);
    assert!(
        end <= warm + margin,
        "RSS grew from {warm} KiB to {end} KiB"
    );
    assert!(srv.alive());
    assert!(!srv.stderr().contains("panicked"), "{}", srv.stderr());
}
