// FastCGI protocol tests: the test plays the web server with raw records against the
// built examples, started with a listening socket on fd 0 as mod_fcgid starts them.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::util::*;

const T: Duration = Duration::from_secs(10);

#[test]
fn get_values_answered_truthfully_unknown_names_omitted() {
    let app = FcgiApp::start("hello", &[("FCGI_THREADS", "3")]);
    let mut s = app.connect();
    let mut q = Vec::new();
    for n in [
        "FCGI_MAX_CONNS",
        "FCGI_MAX_REQS",
        "FCGI_MPXS_CONNS",
        "NO_SUCH_NAME",
    ] {
        pair(&mut q, n.as_bytes(), b"");
    }
    s.write_all(&rec(GET_VALUES, 0, &q)).unwrap();
    let mut expect_content = Vec::new();
    pair(&mut expect_content, b"FCGI_MAX_CONNS", b"3");
    pair(&mut expect_content, b"FCGI_MAX_REQS", b"3");
    pair(&mut expect_content, b"FCGI_MPXS_CONNS", b"0");
    let expected = rec(GET_VALUES_RESULT, 0, &expect_content);
    let mut got = vec![0u8; expected.len()];
    s.set_read_timeout(Some(T)).unwrap();
    std::io::Read::read_exact(&mut s, &mut got).unwrap();
    assert_eq!(got, expected);
    // The connection stays usable for a request after a management record.
    s.write_all(&request(1, false, &get("/x", ""), b""))
        .unwrap();
    let r = read_reply(&mut s, 1, T);
    assert_eq!(r.status(), 200);
}

#[test]
fn unknown_management_type_gets_unknown_type() {
    let app = FcgiApp::start("hello", &[]);
    let mut s = app.connect();
    s.write_all(&rec(99, 0, b"whatever")).unwrap();
    // A BEGIN_REQUEST with id 0 is a management record we do not understand either.
    s.write_all(&begin(0, RESPONDER, false)).unwrap();
    let expected = [
        rec(UNKNOWN_TYPE, 0, &[99, 0, 0, 0, 0, 0, 0, 0]),
        rec(UNKNOWN_TYPE, 0, &[BEGIN, 0, 0, 0, 0, 0, 0, 0]),
    ]
    .concat();
    let mut got = vec![0u8; expected.len()];
    s.set_read_timeout(Some(T)).unwrap();
    std::io::Read::read_exact(&mut s, &mut got).unwrap();
    assert_eq!(got, expected);
}

#[test]
fn a_longer_begin_request_body_trickled_in_is_read_and_its_extra_bytes_skipped() {
    // The spec fixes BEGIN_REQUEST's body at 8 bytes; a longer one is read for its
    // first 8 (role, flags) and the rest skipped, here arriving a byte at a time.
    let app = FcgiApp::start("hello", &[]);
    let mut s = app.connect();
    let mut body = vec![0, RESPONDER as u8, 1, 0, 0, 0, 0, 0];
    body.extend(b"extra bytes");
    let begin_long = rec_pad(BEGIN, 1, &body, 3);
    for b in &begin_long {
        s.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let whole = request(1, true, &get("/first", ""), b"");
    let rest = &whole[begin(1, RESPONDER, true).len()..];
    s.write_all(rest).unwrap();
    let r = read_reply(&mut s, 1, T);
    assert_eq!(r.status(), 200);
    assert_eq!(r.head_and_body().1, b"Hello from /first\n");
    // The keep-conn flag came through: the connection serves another request.
    s.write_all(&request(2, false, &get("/second", ""), b""))
        .unwrap();
    let r = read_reply(&mut s, 2, T);
    assert_eq!(r.head_and_body().1, b"Hello from /second\n");
}

#[test]
fn whole_response_is_byte_exact_and_conn_closes_without_keep_conn() {
    let app = FcgiApp::start("hello", &[]);
    let mut s = app.connect();
    s.write_all(&request(1, false, &get("/x", ""), b""))
        .unwrap();
    let got = read_all(&mut s, T);
    let body = b"Hello from /x\n";
    let head = format!("Status: 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
    let stdout = [head.as_bytes(), body].concat();
    let expected = [
        rec(STDOUT, 1, &stdout),
        rec(STDOUT, 1, &[]),
        rec(END, 1, &[0, 0, 0, 0, 0, 0, 0, 0]),
    ]
    .concat();
    assert_eq!(got, expected, "got {:?}", String::from_utf8_lossy(&got));
}

/// With keep-conn off the app half-closes after END_REQUEST, then waits for the web
/// server to close its side (as libfcgi does, 2 s at most), draining what it sends —
/// but a connection queued meanwhile is served at once, not after the wait. On TCP:
/// on a Unix socket a request read to its end is closed at once (the next test).
#[test]
fn keep_conn_off_half_closes_and_lingers_without_delaying_the_next_connection() {
    let app = Copies::start("hello", 1);
    let connect = || app.connect();
    let roundtrip = |bytes: Vec<u8>| {
        let mut s = connect();
        s.write_all(&bytes).unwrap();
        read_reply(&mut s, 1, T)
    };
    let held_request = |path: &str| {
        let mut s = connect();
        s.write_all(&request(1, false, &get(path, ""), b""))
            .unwrap();
        let got = read_all(&mut s, T); // returns at the app's half-close
        let (recs, rest) = parse_records(&got);
        assert!(
            rest.is_empty() && recs.last().is_some_and(|r| r.t == END),
            "{got:?}"
        );
        s
    };
    // The app still reads: bytes sent after its half-close are drained, not refused.
    let mut held = held_request("/a");
    std::thread::sleep(Duration::from_millis(100));
    held.write_all(b"late bytes")
        .expect("the app closed instead of lingering");

    let t0 = Instant::now();
    let r = roundtrip(request(1, false, &get("/b", ""), b""));
    assert_eq!(r.status(), 200);
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "a queued connection waited {:?} behind a lingering one",
        t0.elapsed()
    );
    // Turning to the queued connection closed the lingering one.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        refuses_writes(&mut held),
        "the lingering connection is still open"
    );

    // Alone, a connection the web server holds open is closed after about 2 s.
    let mut held = held_request("/c");
    std::thread::sleep(Duration::from_millis(1000));
    held.write_all(b"x")
        .expect("closed before the linger ended");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        refuses_writes(&mut held),
        "still open 3.5 s after the response"
    );
}

/// On a Unix socket, one worker, a request read to its end and nothing more sent: the
/// close cannot reset anything there, so the app closes at once instead of waiting for
/// the web server's close (a sleep and a wake-up per request, under mod_fcgid about a
/// third of the app's CPU). A request whose body was left unread still gets the
/// lingering close, which drains it.
#[test]
fn on_a_unix_socket_a_request_read_to_its_end_is_closed_at_once() {
    let app = FcgiApp::start("hello", &[]);
    for _ in 0..3 {
        let mut s = app.connect();
        s.write_all(&request(1, false, &get("/a", ""), b""))
            .unwrap();
        let r = read_reply(&mut s, 1, T);
        assert_eq!(r.status(), 200);
        // Closed, not half-closed: no lingering process on the other end.
        std::thread::sleep(Duration::from_millis(100));
        assert!(refuses_writes(&mut s), "the app lingered");
    }
    // The body declared but not all sent: unread input, so the app lingers and drains.
    let mut vars = cgi_vars("POST", "/a", "");
    vars.push(("CONTENT_LENGTH", "100".into()));
    let mut s = app.connect();
    let mut head = request_head(1, false, &vars);
    head.extend(rec(STDIN, 1, b"0123456789"));
    s.write_all(&head).unwrap();
    let r = read_reply(&mut s, 1, T);
    assert_eq!(r.status(), 200);
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(&rec(STDIN, 1, b"more body"))
        .expect("the app closed instead of lingering");
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(&rec(STDIN, 1, b"and more"))
        .expect("the app closed instead of lingering");
}

/// With several workers a lingering one leaves queued connections to the others (as
/// several libfcgi processes on one socket do) and keeps waiting for the web server's
/// close; a shutdown still ends the wait at once.
#[test]
fn with_several_workers_the_linger_leaves_new_connections_to_the_others() {
    let mut app = FcgiApp::start("hello", &[("FCGI_THREADS", "4")]);
    let mut held = app.connect();
    held.write_all(&request(1, false, &get("/a", ""), b""))
        .unwrap();
    let got = read_all(&mut held, T);
    assert!(parse_records(&got).0.last().is_some_and(|r| r.t == END));
    let t0 = Instant::now();
    for path in ["/b", "/c", "/d"] {
        let r = app.roundtrip(request(1, false, &get(path, ""), b""), 1);
        assert_eq!(r.status(), 200);
    }
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
    // The first connection is still lingering: the app reads what it is sent.
    held.write_all(b"late bytes")
        .expect("the lingering connection was closed for the new ones");

    let t0 = Instant::now();
    app.signal(libc::SIGTERM);
    assert!(closed_within(&mut held, T));
    assert_eq!(app.wait_exit(T).and_then(|s| s.code()), Some(0));
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "the linger held the shutdown for {:?}",
        t0.elapsed()
    );
}

/// `n` copies of example `name` with one listening socket as their stdin, as
/// `spawn-fcgi -F n` starts them: each a process of its own that knows of no other.
struct Copies {
    children: Vec<std::process::Child>,
    /// The listener's address: TCP on 127.0.0.1.
    addr: std::net::SocketAddr,
}

impl Copies {
    fn start(name: &str, n: usize) -> Copies {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let children = (0..n)
            .map(|_| {
                let fd = std::os::fd::OwnedFd::from(listener.try_clone().unwrap());
                let mut cmd = std::process::Command::new(example(name));
                cmd.stdin(std::process::Stdio::from(fd))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .env_remove("GATEWAY_INTERFACE");
                contain(&mut cmd);
                spawn_retrying(&mut cmd)
            })
            .collect();
        Copies { children, addr }
    }

    fn connect(&self) -> std::net::TcpStream {
        std::net::TcpStream::connect(self.addr).unwrap()
    }
}

impl Drop for Copies {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One request for `/pid` on a new connection to `sock`; the connection and the pid
/// of the process that served it. Then a pause, until that process's lingering close
/// sleeps (or, for a connection not held, until it waits for connections again).
fn pid_request(sock: &std::path::Path) -> (UnixStream, u32) {
    pid_request_on(UnixStream::connect(sock).unwrap())
}

/// The same on a connection made already.
fn pid_request_on<S: Conn>(mut s: S) -> (S, u32) {
    s.write_all(&request(1, false, &get("/pid", ""), b""))
        .unwrap();
    let r = read_reply(&mut s, 1, T);
    assert_eq!(r.status(), 200, "{r:?}");
    let pid = r.json()["pid"].as_u64().unwrap() as u32;
    std::thread::sleep(Duration::from_millis(50));
    (s, pid)
}

/// Still lingering: the app has half-closed, not closed (no hang-up); the look wakes
/// nobody.
fn still_lingering(s: &impl AsRawFd) -> bool {
    let mut p = libc::pollfd {
        fd: s.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) };
    p.revents & libc::POLLHUP == 0
}

/// A process's sleeps that ended in a wake-up, over all its threads.
fn wakes(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| {
            let st = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
            st.lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

/// Several one-thread processes on one socket that know nothing of each other
/// (`spawn-fcgi -F`): a new connection wakes one sleeping process at most, not every
/// lingering one. Each, alone as far as it knows, watches the listener while it
/// lingers, through an epoll set holding the listener with `EPOLLEXCLUSIVE`, as the
/// wait for a connection does. With `poll`, every lingering process woke for each new
/// connection.
#[test]
fn a_new_connection_does_not_wake_every_lingering_process() {
    // On TCP: on a Unix socket a request read to its end is closed without lingering.
    let app = Copies::start("echo", 8);
    let connect = || app.connect();
    // Connections held open after their responses until two processes or more linger
    // (a lingering close waits 2 s at most, within which the rest runs). A lingering
    // process woken by a new connection gives way to it (one does, whichever comes
    // first among the sleeping), so a hold may take the place of another.
    let mut held: Vec<(std::net::TcpStream, u32)> = Vec::new();
    while held.iter().filter(|(s, _)| still_lingering(s)).count() < 3 && held.len() < 8 {
        held.push(pid_request_on(connect()));
    }
    let now: Vec<u32> = held
        .iter()
        .filter(|(s, _)| still_lingering(s))
        .map(|&(_, pid)| pid)
        .collect();
    assert!(now.len() >= 2, "lingering: {now:?} of {held:?}");
    let before: Vec<u64> = now.iter().map(|&p| wakes(p)).collect();
    let (_, served_by) = pid_request_on(connect());
    let woke: Vec<u32> = now
        .iter()
        .zip(&before)
        .filter(|&(&p, &b)| wakes(p) > b)
        .map(|(&p, _)| p)
        .collect();
    assert!(
        woke.len() <= 1,
        "one new connection (served by {served_by}) woke the lingering processes {woke:?} of {now:?}"
    );
}

/// `FCGI_PROCESSES` workers know of each other: like the threads of one process, a
/// lingering one leaves new connections to the others and keeps waiting for the web
/// server's close, woken by nothing else.
#[test]
fn processes_linger_on_while_their_siblings_take_new_connections() {
    let mut app = FcgiApp::start("echo", &[("FCGI_PROCESSES", "4")]);
    let held: Vec<(UnixStream, u32)> = (0..3).map(|_| pid_request(&app.sock)).collect();
    let pids: std::collections::BTreeSet<u32> = held.iter().map(|&(_, p)| p).collect();
    assert_eq!(pids.len(), 3, "a lingering worker gave way: {held:?}");
    let before: Vec<u64> = held.iter().map(|&(_, p)| wakes(p)).collect();
    for _ in 0..10 {
        let (_, pid) = pid_request(&app.sock);
        assert!(!pids.contains(&pid), "{pid} was lingering");
    }
    for ((s, pid), b) in held.iter().zip(before) {
        assert_eq!(wakes(*pid), b, "lingering worker {pid} woke");
        assert!(
            still_lingering(s),
            "worker {pid} closed its lingering connection"
        );
    }
    app.stop_expecting_0();
}

#[test]
fn keep_conn_serves_many_requests_on_one_connection() {
    let app = FcgiApp::start("echo", &[]);
    let mut s = app.connect();
    let mut pids = Vec::new();
    for (i, id) in [1u16, 2, 1, 7].into_iter().enumerate() {
        let path = format!("/n/{i}");
        s.write_all(&request(id, true, &get(&path, "k=v"), b""))
            .unwrap();
        let r = read_reply(&mut s, id, T);
        assert!(!r.closed, "connection closed after request {i}");
        assert_eq!(r.end, Some((0, 0)));
        let j = r.json();
        assert_eq!(j["path_info"], path.as_str());
        assert_eq!(j["query"], "k=v");
        assert_eq!(j["served"], (i + 1) as u64);
        pids.push(j["pid"].as_u64().unwrap());
    }
    assert!(pids.windows(2).all(|w| w[0] == w[1]));
    // With keep-conn off on the last one, the app closes after END_REQUEST.
    s.write_all(&request(3, false, &get("/last", ""), b""))
        .unwrap();
    let r = read_reply(&mut s, 3, T);
    assert_eq!(r.status(), 200);
    assert!(closed_within(&mut s, T));
}

#[test]
fn params_split_anywhere_and_odd_padding_accepted() {
    let app = FcgiApp::start("echo", &[]);
    let vars = get("/split", "a=1");
    let mut p = Vec::new();
    for (k, v) in &vars {
        pair(&mut p, k.as_bytes(), v.as_bytes());
    }
    // PARAMS one byte per record with 255 bytes of padding; STDIN likewise.
    let mut bytes = begin(5, RESPONDER, false);
    for b in &p {
        bytes.extend(rec_pad(PARAMS, 5, &[*b], 255));
    }
    bytes.extend(rec_pad(PARAMS, 5, &[], 3));
    let body = b"xyz";
    // CONTENT_LENGTH was not in the params: the body is the whole STDIN stream.
    for b in body {
        bytes.extend(rec_pad(STDIN, 5, &[*b], 1));
    }
    bytes.extend(rec_pad(STDIN, 5, &[], 0));
    let r = app.roundtrip(bytes, 5);
    let j = r.json();
    assert_eq!(j["path_info"], "/split");
    assert_eq!(j["body_len"], 3);
    assert_eq!(j["body_sha256"], sha256_hex(body));
}

/// Caddy's fastcgi transport (2.6 to 2.8) sends a chunked request as `CONTENT_LENGTH=-1`
/// and the body in FCGI_STDIN: the body is the whole stream, as with no length at all.
/// The app sees no `content-length` header then. Any other negative or malformed
/// length is still a bad request (`servers::caddy_*` sends it through the real Caddy).
#[test]
fn content_length_minus_one_is_a_body_to_the_end_of_stdin() {
    let app = FcgiApp::start("echo", &[]);
    let mut s = app.connect();
    let body = noise(200_000, 7);
    let mut vars = cgi_vars("POST", "/chunked", "");
    vars.push(("CONTENT_LENGTH", "-1".into()));
    s.write_all(&request(1, true, &vars, &body)).unwrap();
    let j = read_reply(&mut s, 1, T).json();
    assert_eq!(j["body_len"], body.len());
    assert_eq!(j["body_sha256"], sha256_hex(&body));
    // The app is not given `content-length: -1`, a value no HTTP server would pass on.
    assert!(j["headers"].get("content-length").is_none(), "{j}");
    for bad in ["-2", "-01", "- 1"] {
        let mut vars = cgi_vars("POST", "/chunked", "");
        vars.push(("CONTENT_LENGTH", bad.into()));
        s.write_all(&request(2, true, &vars, b"abc")).unwrap();
        let r = read_reply(&mut s, 2, T);
        assert_eq!(r.status(), 400, "CONTENT_LENGTH {bad:?}");
    }
}

#[test]
fn four_byte_lengths_in_names_and_values() {
    let app = FcgiApp::start("echo", &[]);
    let long_value = "v".repeat(300);
    let long_name = format!("HTTP_X_{}", "N".repeat(200));
    let mut vars = get("/long", "");
    vars.push(("HTTP_X_LONG", long_value.clone()));
    let name: &'static str = Box::leak(long_name.clone().into_boxed_str());
    vars.push((name, "short".into()));
    let r = app.roundtrip(request(1, false, &vars, b""), 1);
    let j = r.json();
    assert_eq!(j["headers"]["x-long"], long_value.as_str());
    let header = long_name["HTTP_".len()..]
        .to_ascii_lowercase()
        .replace('_', "-");
    assert_eq!(j["headers"][header.as_str()], "short");
}

#[test]
fn ten_mib_request_body_streams_in() {
    let app = FcgiApp::start("echo", &[]);
    let body = noise(10 * 1024 * 1024, 1);
    let mut vars = get("/upload", "");
    vars[1].1 = "POST".into();
    let r = app.roundtrip(request(1, false, &vars, &body), 1);
    let j = r.json();
    assert_eq!(j["body_len"], body.len() as u64);
    assert_eq!(j["body_sha256"], sha256_hex(&body));
}

#[test]
fn ten_mib_response_streams_out_in_valid_records() {
    let app = FcgiApp::start("echo", &[]);
    let r = app.roundtrip(
        request(1, false, &get("/stream", "chunks=160&size=65536"), b""),
        1,
    );
    let (_, body) = r.head_and_body();
    assert_eq!(body.len(), 160 * 65536);
    for (i, c) in body.chunks(65536).enumerate() {
        assert!(c.iter().all(|&b| b == b'a' + (i % 26) as u8), "chunk {i}");
    }
    // parse_records already checked version, ≤65535 and padding for every record.
    let stdout_recs = r.records.iter().filter(|x| x.t == STDOUT).count();
    assert!(stdout_recs >= 161, "{stdout_recs} STDOUT records");
    assert_eq!(r.end, Some((0, 0)));
}

#[test]
fn ten_mib_echoed_through_both_ways_at_once() {
    let app = FcgiApp::start("echo", &[]);
    let body = noise(10 * 1024 * 1024 + 13, 2);
    let mut vars = get("/echo-body", "");
    vars[1].1 = "PUT".into();
    let r = app.roundtrip(request(1, true, &vars, &body), 1);
    let (_, got) = r.head_and_body();
    assert_eq!(got.len(), body.len());
    assert!(got == body, "echoed body differs");
    assert_eq!(r.end, Some((0, 0)));
}

#[test]
fn abort_before_params_end_is_answered_at_once() {
    let app = FcgiApp::start("echo", &[]);
    let mut s = app.connect();
    let mut bytes = begin(4, RESPONDER, true);
    bytes.extend(rec(PARAMS, 4, &pairs(&[("REQUEST_METHOD", "GET")])));
    bytes.extend(rec(ABORT, 4, &[]));
    s.write_all(&bytes).unwrap();
    let expected = rec(END, 4, &[0, 0, 0, 0, 0, 0, 0, 0]);
    let mut got = vec![0u8; expected.len()];
    s.set_read_timeout(Some(T)).unwrap();
    std::io::Read::read_exact(&mut s, &mut got).unwrap();
    assert_eq!(got, expected);
    // keep-conn was on: the connection still serves.
    s.write_all(&request(5, false, &get("/after", ""), b""))
        .unwrap();
    assert_eq!(read_reply(&mut s, 5, T).status(), 200);
}

/// A head that arrived in pieces, aborted before its PARAMS ended: its deadline does
/// not carry over, so the next request on the kept-alive connection, arriving after
/// that deadline and in pieces too, is served.
#[test]
fn abort_before_params_end_leaves_no_deadline_behind() {
    let app = FcgiApp::start("echo", &[("FCGI_READ_TIMEOUT", "1")]);
    let mut s = app.connect();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(&begin(4, RESPONDER, true)).unwrap();
    // The app waits for the rest of the head: its 1 s deadline starts.
    std::thread::sleep(Duration::from_millis(200));
    let mut bytes = rec(PARAMS, 4, &pairs(&[("REQUEST_METHOD", "GET")]));
    bytes.extend(rec(ABORT, 4, &[]));
    s.write_all(&bytes).unwrap();
    let expected = rec(END, 4, &[0, 0, 0, 0, 0, 0, 0, 0]);
    let mut got = vec![0u8; expected.len()];
    std::io::Read::read_exact(&mut s, &mut got).unwrap();
    assert_eq!(got, expected);
    // Past the aborted head's deadline, a new head in two pieces.
    std::thread::sleep(Duration::from_millis(1200));
    let whole = request(5, false, &get("/after", ""), b"");
    let (first, rest) = whole.split_at(16);
    s.write_all(first).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.write_all(rest).unwrap();
    assert_eq!(read_reply(&mut s, 5, T).status(), 200);
}

/// A web server that writes the whole request before it reads (as mod_fcgid does),
/// to an app that does not read the body and answers with more than the socket holds:
/// the unread body is taken and dropped while the response waits, so neither side
/// waits for the other.
#[test]
fn an_unread_body_is_taken_while_a_large_response_waits() {
    let app = FcgiApp::start("echo", &[]);
    let mut s = app.connect();
    let body = vec![b'b'; 4 * 1024 * 1024];
    let mut vars = get("/stream", "chunks=64&size=65536");
    vars[1].1 = "POST".into();
    vars.push(("CONTENT_LENGTH", body.len().to_string()));
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    // From this thread, all of it, before reading anything.
    s.write_all(&request(1, false, &vars, &body))
        .expect("the app stopped taking the request");
    let r = read_reply(&mut s, 1, T);
    assert_eq!(r.status(), 200);
    assert_eq!(r.head_and_body().1.len(), 64 * 65536);
    assert_eq!(r.end, Some((0, 0)));
}

#[test]
fn abort_mid_upload_ends_the_request_promptly() {
    let app = FcgiApp::start("echo", &[]);
    let mut s = app.connect();
    let mut vars = get("/upload", "");
    vars[1].1 = "POST".into();
    vars.push(("CONTENT_LENGTH", "1000000".into()));
    let mut p = Vec::new();
    for (k, v) in &vars {
        pair(&mut p, k.as_bytes(), v.as_bytes());
    }
    let mut bytes = begin(1, RESPONDER, true);
    bytes.extend(stream(PARAMS, 1, &p, 65535));
    bytes.extend(rec(STDIN, 1, &[b'x'; 1000]));
    s.write_all(&bytes).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    s.write_all(&rec(ABORT, 1, &[])).unwrap();
    let r = read_reply(&mut s, 1, T);
    assert!(t0.elapsed() < Duration::from_secs(2));
    let (app_status, proto) = r.end.expect("END_REQUEST after abort");
    assert_eq!(proto, 0);
    assert_eq!(app_status, 1, "an aborted request reports appStatus 1");
    // The connection (keep-conn) still serves the next request.
    s.write_all(&request(2, false, &get("/next", ""), b""))
        .unwrap();
    assert_eq!(read_reply(&mut s, 2, T).status(), 200);
}

#[test]
fn abort_mid_download_stops_the_stream() {
    abort_mid_download(Vec::new());
}

/// The abort is seen behind records bigger than our read buffer (16 KiB), which are
/// skipped without being held whole.
#[test]
fn abort_behind_a_record_larger_than_the_read_buffer_is_seen() {
    abort_mid_download(rec(20, 7, &[b'p'; 30_000]));
    abort_mid_download(rec(STDIN, 7, &[b's'; 65_535]));
}

/// Records of the active request that the spec says to ignore, sent after their
/// stream ended (PARAMS after the empty PARAMS, STDIN after the empty STDIN), do not
/// hide an abort that follows them.
#[test]
fn abort_behind_stray_records_of_the_active_request_is_seen() {
    abort_mid_download(rec(PARAMS, 1, &pairs(&[("LATE", "1")])));
    abort_mid_download(rec(STDIN, 1, b"late body"));
}

/// A large body the app does not read (it streams a slow answer instead) is read and
/// dropped as fast as the web server sends it, not a buffer per write of the app's:
/// the upload is not held back, and an abort behind it is seen at once. (Before, 2 MB
/// behind writes 100 ms apart took about 12 s to reach the abort.)
#[test]
fn an_abort_behind_a_large_unread_body_is_seen_at_once() {
    let app = FcgiApp::start("echo", &[]);
    let mut s = app.connect();
    let mut vars = get("/stream", "chunks=1000&size=100&delay_ms=100");
    vars[1].1 = "POST".into();
    let body = vec![b'u'; 2_000_000];
    vars.push(("CONTENT_LENGTH", body.len().to_string()));
    let mut bytes = request(1, true, &vars, &body);
    bytes.extend(rec(ABORT, 1, &[]));
    let t0 = Instant::now();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(&bytes).unwrap();
        Instant::now()
    });
    let r = read_reply(&mut s, 1, T);
    let sent = writer.join().unwrap();
    assert_eq!(r.end.map(|e| e.0), Some(1), "aborted: appStatus 1");
    assert!(
        sent.duration_since(t0) < Duration::from_secs(3),
        "the upload took {:?}",
        sent.duration_since(t0)
    );
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "END_REQUEST after {:?} (the whole stream is 100 s)",
        t0.elapsed()
    );
    // The connection (keep-conn) still serves the next request.
    s.write_all(&request(2, false, &get("/next", ""), b""))
        .unwrap();
    assert_eq!(read_reply(&mut s, 2, T).status(), 200);
}

/// A web server that shuts its sending side once the whole request is sent (on a
/// Unix socket, where that shows apart from a close) gets the whole answer, as
/// libfcgi gives it: a 2 MB stream written over 200 ms, then END_REQUEST. (Before,
/// the end of its side was taken for a close: 100,044 bytes and no END_REQUEST.)
#[test]
fn a_web_server_that_half_closes_after_the_request_gets_the_whole_answer() {
    let app = FcgiApp::start("echo", &[]);
    for keep_conn in [false, true] {
        let mut s = app.connect();
        s.write_all(&request(
            1,
            keep_conn,
            &get("/stream", "chunks=20&size=100000&delay_ms=10"),
            b"",
        ))
        .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let r = read_reply(&mut s, 1, T);
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.head_and_body().1.len(),
            2_000_000,
            "keep_conn {keep_conn}"
        );
        assert_eq!(r.end, Some((0, 0)), "keep_conn {keep_conn}");
    }
    // A close, not a half-close, still stops the stream (the app's next write fails).
    let mut s = app.connect();
    s.write_all(&request(
        1,
        false,
        &get("/stream", "chunks=1000&size=1000&delay_ms=10"),
        b"",
    ))
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(s);
    // Seen by the look at the socket (a hang-up) or by the write that follows.
    assert!(
        wait_until(T, || app.stderr().contains("closing the connection")
            || app.stderr().contains("closed by the web server")),
        "{}",
        app.stderr()
    );
    let r = app.roundtrip(request(1, false, &get("/ok", ""), b""), 1);
    assert_eq!(r.status(), 200);
}

fn abort_mid_download(before_abort: Vec<u8>) {
    let app = FcgiApp::start("echo", &[]);
    let mut s = app.connect();
    s.write_all(&request(
        1,
        true,
        &get("/stream", "chunks=1000&size=100&delay_ms=10"),
        b"",
    ))
    .unwrap();
    // Wait for the first STDOUT record, then abort.
    s.set_read_timeout(Some(T)).unwrap();
    let mut first = [0u8; 8];
    std::io::Read::read_exact(&mut s, &mut first).unwrap();
    assert_eq!(first[1], STDOUT);
    let rest = u16::from_be_bytes([first[4], first[5]]) as usize + first[6] as usize;
    std::io::Read::read_exact(&mut s, &mut vec![0u8; rest]).unwrap();
    let t0 = Instant::now();
    let mut bytes = before_abort;
    bytes.extend(rec(ABORT, 1, &[]));
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&bytes).unwrap());
    let r = read_reply(&mut s, 1, T);
    writer.join().unwrap();
    assert!(r.end.is_some(), "no END_REQUEST after abort");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "took {:?} (the whole stream is 10 s)",
        t0.elapsed()
    );
    // Fewer than the 100,000 bytes a finished stream would carry.
    assert!(r.stdout.len() < 50_000);
}

/// FCGI_MAX_BODY over FastCGI: a larger CONTENT_LENGTH gets 413 without the app (its
/// body is dropped unread), and the kept-alive connection serves the next request.
#[test]
fn a_body_over_the_max_body_setting_gets_413_and_the_connection_lives() {
    let app = FcgiApp::start("echo", &[("FCGI_MAX_BODY", "1000")]);
    let mut s = app.connect();
    let post = |id: u16, len: usize| {
        let mut vars = get("/upload", "");
        vars[1].1 = "POST".into();
        vars.push(("CONTENT_LENGTH", len.to_string()));
        request(id, true, &vars, &vec![b'b'; len])
    };
    s.write_all(&post(1, 200_000)).unwrap();
    let r = read_reply(&mut s, 1, T);
    assert_eq!(r.status(), 413, "{}", app.stderr());
    assert_eq!(r.end, Some((0, 0)));
    s.write_all(&post(2, 1000)).unwrap();
    let r = read_reply(&mut s, 2, T);
    assert_eq!(r.status(), 200);
    assert_eq!(r.json()["body_len"], 1000);
}

/// mod_fcgid under HTTP/2 sends empty FCGI_STDIN records before and between the body's
/// (mod_http2's empty pieces; it counted the length right): for an HTTP/2 request an
/// empty one short of the declared length is not the end. Over HTTP/1.1 the spec's
/// rule holds: the first empty record ends the body, and a body short of its length
/// fails the app's read (echo answers 400). The connection serves on either way.
#[test]
fn empty_stdin_records_before_an_http2_bodys_length_are_not_its_end() {
    let app = FcgiApp::start("echo", &[]);
    let mut s = app.connect();
    for (id, protocol, status, len) in [(1u16, "HTTP/2.0", 200, 10), (2, "HTTP/1.1", 400, 0)] {
        let mut vars = get("/upload", "");
        vars[1].1 = "POST".into();
        vars.retain(|(k, _)| *k != "SERVER_PROTOCOL");
        vars.push(("SERVER_PROTOCOL", protocol.into()));
        vars.push(("CONTENT_LENGTH", "10".into()));
        let mut bytes = request_head(id, true, &vars);
        for piece in [&b""[..], b"01234", b"", b"56789", b""] {
            bytes.extend(rec(STDIN, id, piece));
        }
        s.write_all(&bytes).unwrap();
        let r = read_reply(&mut s, id, T);
        assert_eq!(
            (r.status(), r.end),
            (status, Some((0, 0))),
            "{protocol}: {}",
            app.stderr()
        );
        if status == 200 {
            assert_eq!(r.json()["body_len"], len, "{protocol}");
        }
    }
    s.write_all(&request(3, true, &get("/after", ""), b""))
        .unwrap();
    assert_eq!(read_reply(&mut s, 3, T).status(), 200, "{}", app.stderr());
}

#[test]
fn second_begin_on_busy_connection_gets_cant_mpx_conn() {
    let app = FcgiApp::start("echo", &[]);
    let mut s = app.connect();
    let mut vars = get("/one", "");
    vars[1].1 = "POST".into();
    let mut p = Vec::new();
    for (k, v) in &vars {
        pair(&mut p, k.as_bytes(), v.as_bytes());
    }
    let mut bytes = begin(1, RESPONDER, true);
    bytes.extend(stream(PARAMS, 1, &p, 65535));
    // Request 2 arrives while request 1 is still reading its body.
    bytes.extend(begin(2, RESPONDER, true));
    bytes.extend(stream(PARAMS, 2, &pairs(&[("REQUEST_METHOD", "GET")]), 100));
    bytes.extend(stream(STDIN, 1, b"body", 100));
    s.write_all(&bytes).unwrap();
    let r = read_reply(&mut s, 1, T);
    let cant = rec(END, 2, &[0, 0, 0, 0, 1, 0, 0, 0]);
    let first = &r.records[0];
    assert_eq!(
        rec(first.t, first.id, &first.content),
        cant,
        "first record should be END_REQUEST(CANT_MPX_CONN) for id 2"
    );
    assert_eq!(r.json()["body_len"], 4);
    assert_eq!(r.end, Some((0, 0)));
}

#[test]
fn records_for_unknown_ids_are_ignored() {
    let app = FcgiApp::start("echo", &[]);
    let mut s = app.connect();
    let mut bytes = rec(STDIN, 9, b"stray");
    bytes.extend(rec(PARAMS, 9, &pairs(&[("A", "b")])));
    bytes.extend(rec(ABORT, 9, &[]));
    bytes.extend(rec(STDOUT, 9, b"?"));
    bytes.extend(request(1, false, &get("/ok", ""), b""));
    s.write_all(&bytes).unwrap();
    let r = read_reply(&mut s, 1, T);
    assert_eq!(r.status(), 200);
    assert!(r.records.iter().all(|x| x.id == 1), "{:?}", r.records);
}

#[test]
fn authorizer_role_sees_role_and_sends_only_variables() {
    let app = FcgiApp::start("echo", &[]);
    let mut p = Vec::new();
    for (k, v) in get("/protected", "") {
        pair(&mut p, k.as_bytes(), v.as_bytes());
    }
    let mut bytes = begin(1, AUTHORIZER, false);
    bytes.extend(stream(PARAMS, 1, &p, 65535));
    bytes.extend(stream(STDIN, 1, b"", 10));
    let got = app.roundtrip(bytes, 1);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "Status: 200 OK\r\nvariable-echo-role: Authorizer\r\n\r\n"
    );
    // A non-200 authorizer answer goes to the client whole.
    let mut p = Vec::new();
    for (k, v) in get("/status/403", "") {
        pair(&mut p, k.as_bytes(), v.as_bytes());
    }
    let mut bytes = begin(1, AUTHORIZER, false);
    bytes.extend(stream(PARAMS, 1, &p, 65535));
    bytes.extend(stream(STDIN, 1, b"", 10));
    let got = app.roundtrip(bytes, 1);
    assert_eq!(got.status(), 403);
    assert_eq!(got.json()["role"], "Authorizer");
}

/// mod_fcgid sends an authorizer BEGIN_REQUEST and PARAMS only: no FCGI_STDIN, not even
/// the empty record, also when the request being authorized is a POST with a
/// `CONTENT_LENGTH`. An app that reads its body (echo does) must see it empty, not wait
/// for a stream that never comes; a kept-alive connection then serves the next request.
#[test]
fn authorizer_without_stdin_is_answered_at_once() {
    let app = FcgiApp::start("echo", &[("FCGI_READ_TIMEOUT", "60")]);
    let mut s = app.connect();
    for (id, method, len) in [(1u16, "GET", None), (2, "POST", Some("5"))] {
        let mut vars = cgi_vars(method, "/protected", "");
        if let Some(n) = len {
            vars.push(("CONTENT_LENGTH", n.into()));
        }
        let mut p = Vec::new();
        for (k, v) in &vars {
            pair(&mut p, k.as_bytes(), v.as_bytes());
        }
        let mut bytes = begin(id, AUTHORIZER, true);
        bytes.extend(stream(PARAMS, id, &p, 65535));
        s.write_all(&bytes).unwrap();
        let started = Instant::now();
        let got = read_reply(&mut s, id, T);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            String::from_utf8_lossy(&got.stdout),
            "Status: 200 OK\r\nvariable-echo-role: Authorizer\r\n\r\n"
        );
    }
    // A responder request on the same connection reads its body as usual.
    s.write_all(&request(
        3,
        true,
        &cgi_vars("POST", "/echo-body", ""),
        b"hello",
    ))
    .unwrap();
    let got = read_reply(&mut s, 3, T);
    assert_eq!(got.head_and_body().1, b"hello");
}

/// lighttpd 1.4.69 mounted at "/" splits after the first segment
/// (SCRIPT_NAME=/posts, PATH_INFO=/1); the README's fix is `FORCE_SCRIPT_NAME=""` in
/// the process environment (`bin-environment`), which must mean the site root.
#[test]
fn empty_force_script_name_in_the_environment_is_the_site_root() {
    let app = FcgiApp::start("echo", &[("FORCE_SCRIPT_NAME", "")]);
    let vars = vec![
        ("REQUEST_METHOD", "GET".to_owned()),
        ("SCRIPT_NAME", "/posts".into()),
        ("PATH_INFO", "/1".into()),
        ("REQUEST_URI", "/posts/1".into()),
        ("QUERY_STRING", String::new()),
        ("SERVER_PROTOCOL", "HTTP/1.1".into()),
    ];
    let r = app.roundtrip(request(1, false, &vars, b""), 1);
    assert_eq!(r.json()["script_name"], "");
    assert_eq!(r.json()["path_info"], "/posts/1");
}

/// `fcgi-shim request --param NAME=VALUE` replaces the variable of that name or adds
/// one (the option was parsed and then ignored).
#[test]
fn the_request_tool_sends_the_params_it_is_given() {
    let app = FcgiApp::start("echo", &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fcgi-shim"))
        .args(["request", "--socket"])
        .arg(&app.sock)
        .args(["--path", "/p", "--param", "SCRIPT_NAME=/blog/mysite.fcgi"])
        .args(["--param", "REQUEST_URI=/blog/p", "--param", "X_EXTRA=1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let json = &text[text.find('{').unwrap()..=text.rfind('}').unwrap()];
    let j: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(j["script_name"], "/blog");
    assert_eq!(j["vars"]["SCRIPT_NAME"], "/blog/mysite.fcgi");
    assert_eq!(j["vars"]["X_EXTRA"], "1");
}

/// `--header` replaces a built-in header of the same name (the README's
/// `--header Accept=text/html`); a repeat is joined with ", ". `request --help` and the
/// other subcommands' `--help` print the usage.
#[test]
fn the_request_tool_headers_replace_its_defaults_and_help_works() {
    let app = FcgiApp::start("echo", &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fcgi-shim"))
        .args(["request", "--socket"])
        .arg(&app.sock)
        .args(["--header", "Accept=text/html", "--header", "X-Two=a"])
        .args(["--header", "X-Two=b"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = &text[text.find('{').unwrap()..=text.rfind('}').unwrap()];
    let j: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(j["vars"]["HTTP_ACCEPT"], "text/html");
    assert_eq!(j["vars"]["HTTP_X_TWO"], "a, b");
    for cmd in ["request", "bench", "cgi-time"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fcgi-shim"))
            .args([cmd, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("--body-file"),
            "{cmd}"
        );
    }
}

// ---- the `fcgi-shim` tool: request and bench ----

/// Runs the `fcgi-shim` tool with `args`, `stdin` as its standard input.
fn tool(args: &[&std::ffi::OsStr], stdin: &[u8]) -> std::process::Output {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_fcgi-shim"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// The tool's args, as OS strings (paths among them).
macro_rules! args {
    ($($a:expr),* $(,)?) => { &[$(std::ffi::OsStr::new(&$a)),*] };
}

/// The JSON object in a successful run's standard output.
fn tool_json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let (Some(a), Some(b)) = (text.find('{'), text.rfind('}')) else {
        panic!("no JSON in {text:?}");
    };
    serde_json::from_str(&text[a..=b]).unwrap()
}

/// How many requests the echo app has served, this one included.
fn echo_served(app: &FcgiApp) -> u64 {
    let r = app.roundtrip(request(1, false, &get("/count", ""), b""), 1);
    r.json()["served"].as_u64().unwrap()
}

/// `request --spawn` waited for the app with the user's own request, so the app
/// served it twice (a POST's side effects too). The readiness probe is FCGI_GET_VALUES.
#[test]
fn the_request_tool_with_spawn_sends_the_request_once() {
    let echo = example("echo");
    let out = tool(
        args![
            "request",
            "--spawn",
            echo,
            "--",
            "--path",
            "/once",
            "--body-size",
            "3"
        ],
        b"",
    );
    let j = tool_json(&out);
    assert_eq!(j["method"], "POST");
    assert_eq!(j["served"], 1, "the app served the request more than once");
    // The probe is read to its end: the app sees no reset connection.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("connection error"), "{log}");
}

/// `bench -n 8 -c 4` sent 11 requests (every connection finished one more); with
/// --spawn the probe was one more. Exactly N now; warm-up requests are reported apart.
#[test]
fn the_bench_tool_sends_exactly_n_requests() {
    let app = FcgiApp::start("echo", &[("FCGI_THREADS", "4")]);
    let out = tool(
        args![
            "bench", "--socket", app.sock, "-n", "8", "-c", "4", "--warmup", "0", "--json"
        ],
        b"",
    );
    let j = tool_json(&out);
    assert_eq!(
        (j["requests"].as_u64(), j["errors"].as_u64()),
        (Some(8), Some(0))
    );
    assert_eq!(j["warmup_requests"], 0);
    assert_eq!(echo_served(&app), 8 + 1);
    // With a warm-up: its requests are counted apart, the measured ones are N.
    let out = tool(
        args![
            "bench", "--socket", app.sock, "-n", "5", "-c", "2", "--warmup", "0.2", "--json"
        ],
        b"",
    );
    let j = tool_json(&out);
    assert_eq!(
        (j["requests"].as_u64(), j["errors"].as_u64()),
        (Some(5), Some(0))
    );
    let warm = j["warmup_requests"].as_u64().unwrap();
    assert!(warm > 0, "{j}");
    assert_eq!(echo_served(&app), 9 + warm + 5 + 1);
    // --spawn: an app that exits after 8 requests answers all 8 (none went to a probe).
    let echo = example("echo");
    let out = tool(
        args![
            "bench",
            "--spawn",
            "env",
            "FCGI_MAX_REQUESTS=8",
            echo,
            "--",
            "-n",
            "8",
            "-c",
            "4",
            "--warmup",
            "0",
            "--json"
        ],
        b"",
    );
    let j = tool_json(&out);
    assert_eq!(
        (j["requests"].as_u64(), j["errors"].as_u64()),
        (Some(8), Some(0)),
        "{j}"
    );
}

/// `bench --rate`: an open loop. Requests go out on a schedule whatever the app does,
/// and latency counts from when each was due, so an app that falls behind shows its
/// queue (a closed loop would only wait for it). Both checks are lower bounds, which a
/// slow machine cannot break.
#[test]
fn the_bench_tool_keeps_to_a_rate_and_counts_from_when_a_request_was_due() {
    // One thread, 50 ms a request: 20 requests/s at most. At 100/s on 4 connections,
    // the 8 requests are due within 70 ms but the last ends 400 ms or more after the
    // start: at least 330 ms after it was due.
    let app = FcgiApp::start("echo", &[("FCGI_THREADS", "1")]);
    let out = tool(
        args![
            "bench", "--socket", app.sock, "--path", "/sleep", "--query", "ms=50", "-n", "8", "-c",
            "4", "--rate", "100", "--warmup", "0", "--json"
        ],
        b"",
    );
    let j = tool_json(&out);
    assert_eq!(
        (j["requests"].as_u64(), j["errors"].as_u64()),
        (Some(8), Some(0)),
        "{j}"
    );
    assert!(j["seconds"].as_f64().unwrap() >= 0.39, "{j}");
    assert!(j["max_us"].as_u64().unwrap() >= 330_000, "{j}");
    // A fast app is not sent more than the rate: 10 requests at 50/s on 2 connections
    // are due over 180 ms, so they take at least that.
    let out = tool(
        args![
            "bench", "--socket", app.sock, "-n", "10", "-c", "2", "--rate", "50", "--warmup", "0",
            "--json"
        ],
        b"",
    );
    let j = tool_json(&out);
    assert_eq!(j["requests"].as_u64(), Some(10), "{j}");
    assert!(j["seconds"].as_f64().unwrap() >= 0.175, "{j}");
    // A rate that is not one is refused, with what it must be.
    for bad in ["0", "-5", "inf", "NaN", "x", "1e-300"] {
        let out = tool(args!["bench", "--socket", app.sock, "--rate", bad], b"");
        assert!(!out.status.success(), "--rate {bad} was taken");
    }
    let out = tool(args!["bench", "--socket", app.sock, "--rate", "0"], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--rate must be"), "{err}");
    let out = tool(
        args!["bench", "--socket", app.sock, "--rate", "1e-300"],
        b"",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--rate is too low"), "{err}");
}

/// `cgi-time -n 0` is refused with a message, as `-c 0` is (it used to panic on an
/// empty list of times, exit 101).
#[test]
fn the_cgi_time_tool_refuses_zero_runs() {
    for extra in [&[][..], &["--json"][..]] {
        let mut a: Vec<&std::ffi::OsStr> = args!["cgi-time", "/bin/true", "-n", "0"].to_vec();
        a.extend(extra.iter().map(std::ffi::OsStr::new));
        let out = tool(&a, b"");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("-n must be at least 1"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A connection the tool cannot make names what it tried to reach (it used to print
/// only "No such file or directory" or "Connection refused").
#[test]
fn the_tool_names_the_socket_or_address_it_cannot_reach() {
    let dir = TempDir::new("tool-connect");
    let missing = dir.join("no-such.sock");
    let out = tool(args!["request", "--socket", missing], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("connecting to {}", missing.display())),
        "{err}"
    );
    // A port nothing listens on.
    let addr = format!("127.0.0.1:{}", free_port());
    let out = tool(args!["request", "--tcp", addr], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("connecting to {addr}")), "{err}");
}

/// The tool on answers that are not plain successes. `request`: a response cut short
/// prints what arrived (it used to print nothing) and exits 1 naming the cut; an app
/// that does not answer ends it at `--timeout` (it used to wait for good). `bench`: a
/// redirect is an answer, not an error (only `Status: 200` used to count); with no
/// request answered at all (a wrong socket) it exits 1 (it used to exit 0), and the
/// failed connects are not reported as warm-up requests (90,000 of them were).
#[test]
fn the_tool_reports_cut_slow_and_failed_answers() {
    let echo = example("echo");
    let out = tool(
        args![
            "request",
            "--spawn",
            echo,
            "--",
            "--path",
            "/stream",
            "--query",
            "chunks=4&size=5&fail_after=2"
        ],
        b"",
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stdout.starts_with("Status: 200") && stdout.contains("aaaaabbbbb"),
        "{stdout:?}"
    );
    assert!(
        stderr.contains("the response is incomplete (what arrived is above)")
            && stderr.contains("connection closed before END_REQUEST"),
        "{stderr}"
    );

    let t0 = Instant::now();
    let out = tool(
        args![
            "request",
            "--spawn",
            echo,
            "--",
            "--path",
            "/sleep",
            "--query",
            "ms=20000",
            "--timeout",
            "1"
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no answer within the timeout"), "{stderr}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());

    let app = FcgiApp::start("echo", &[]);
    let out = tool(
        args![
            "bench",
            "--socket",
            app.sock,
            "--path",
            "/redirect",
            "-n",
            "5",
            "--warmup",
            "0",
            "--json"
        ],
        b"",
    );
    let j = tool_json(&out);
    assert_eq!(
        (j["requests"].as_u64(), j["errors"].as_u64()),
        (Some(5), Some(0)),
        "{j}"
    );

    let missing = app.sock.with_extension("missing");
    let out = tool(
        args![
            "bench", "--socket", missing, "-n", "3", "--warmup", "0.2", "--json"
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no request was answered (3 errors"),
        "{stderr}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"warmup_requests\":0,"), "{text}");
}

/// `--spawn` stopped the program it started, not what that program started: behind a
/// wrapper that does not `exec` (a shell script, `strace`, `perf stat`) the app ran on
/// after the tool had exited, on its socket and with its binary busy. Now the tool
/// stops the whole tree before it exits.
#[test]
fn the_tools_stop_the_app_a_wrapper_started() {
    use std::process::{Command, Stdio};
    let echo = example("echo");
    // Not `tool`: an app left running would hold its standard error open, and reading
    // that to its end would wait for the app instead of failing.
    let dir = TempDir::new("spawn-tree");
    let log = std::fs::File::create(dir.join("tool.log")).unwrap();
    // `; true`: the shell cannot exec the app, it forks it and waits.
    let out = Command::new(env!("CARGO_BIN_EXE_fcgi-shim"))
        .args(["request", "--spawn", "/bin/sh", "-c", "\"$0\"; true"])
        .arg(&echo)
        .args(["--", "--path", "/who"])
        .stdin(Stdio::null())
        .stderr(log)
        .output()
        .unwrap();
    let pid = tool_json(&out)["pid"].as_u64().unwrap();
    let running = || {
        // Gone, or a zombie left for whoever reaps orphans here.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| Some(s.rsplit_once(')')?.1.trim_start().chars().next()? != 'Z'))
            .unwrap_or(false)
    };
    let t0 = Instant::now();
    while running() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if running() {
        // SAFETY: kill(2) on the app this test started, so it does not outlive the test.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        panic!("the app ({pid}) was still running after the tool had exited");
    }
}

/// A SIGTERM to the tool alone (a CI harness's timeout, `kill PID`) while `--spawn`
/// runs: the tool stops the app and all it started, removes its socket's directory
/// and then dies of the signal. Before, the cleanup ran only on a normal exit: the app
/// (here behind a shell that does not exec it) ran on for good on its socket, and the
/// `fcgi-shim-bench-PID` directory stayed.
#[test]
fn the_tools_stop_the_app_when_killed() {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Command, Stdio};
    let dir = TempDir::new("spawn-signal");
    let log = std::fs::File::create(dir.join("tool.log")).unwrap();
    let tree = descendants;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fcgi-shim"));
    cmd.args(["bench", "--spawn", "/bin/sh", "-c", "\"$0\"; true"])
        .arg(example("echo"))
        .args(["--", "-d", "60", "--warmup", "0"])
        .env("TMPDIR", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0);
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let sock_dir = dir.join(&format!("fcgi-shim-bench-{pid}"));
    // The shell and the app under it, and the app answering (bench has started).
    let mut app = Vec::new();
    let ready = wait_until(Duration::from_secs(10), || {
        app = tree(pid);
        app.len() >= 2 && UnixStream::connect(sock_dir.join("app.sock")).is_ok()
    });
    let stop_all = |pids: &[u32]| {
        for &p in pids {
            // SAFETY: kill(2) on processes this test started.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
    };
    if !ready {
        stop_all(&app);
        let _ = child.kill();
        panic!("the spawned app did not start: {app:?}");
    }
    // SAFETY: kill(2) on the tool this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let mut status = None;
    wait_until(Duration::from_secs(10), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let gone = wait_until(Duration::from_secs(5), || {
        app.iter().all(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).map_or(true, |s| {
                s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z')
            })
        })
    });
    let tool_log = std::fs::read_to_string(dir.join("tool.log")).unwrap_or_default();
    stop_all(&app);
    let _ = child.kill();
    let _ = child.wait();
    let status = status.expect("the tool exits on SIGTERM");
    assert!(
        gone,
        "the app ({app:?}) ran on after the tool was killed; {tool_log}"
    );
    assert!(!sock_dir.exists(), "{} was left behind", sock_dir.display());
    assert_eq!(
        status.signal(),
        Some(libc::SIGTERM),
        "{status:?}; {tool_log}"
    );
}

/// `--header Content-Type=...` became HTTP_CONTENT_TYPE, which no web server sends, and
/// the tool's own CONTENT_TYPE stayed: the two headers map to CONTENT_TYPE and
/// CONTENT_LENGTH, as a web server maps them.
#[test]
fn the_request_tool_maps_content_type_and_length_as_a_web_server_does() {
    let app = FcgiApp::start("echo", &[]);
    let out = tool(
        args![
            "request",
            "--socket",
            app.sock,
            "--path",
            "/ct",
            "--body-size",
            "3",
            "--header",
            "Content-Type=text/plain",
            "--header",
            "content-length=3",
            "--header",
            "X-Y=z"
        ],
        b"",
    );
    let j = tool_json(&out);
    assert_eq!(j["vars"]["CONTENT_TYPE"], "text/plain");
    assert_eq!(j["vars"]["CONTENT_LENGTH"], "3");
    assert_eq!(j["vars"]["HTTP_X_Y"], "z");
    assert!(j["vars"].get("HTTP_CONTENT_TYPE").is_none(), "{j}");
    assert!(j["vars"].get("HTTP_CONTENT_LENGTH").is_none(), "{j}");
    assert_eq!(j["headers"]["content-type"], "text/plain");
    assert_eq!(j["body_len"], 3);
    // Without a body: the Content-Type alone.
    let out = tool(
        args![
            "request",
            "--socket",
            app.sock,
            "--header",
            "Content-Type=text/csv"
        ],
        b"",
    );
    let j = tool_json(&out);
    assert_eq!(
        (&j["method"], &j["vars"]["CONTENT_TYPE"]),
        (&"GET".into(), &"text/csv".into())
    );
    // A Content-Length that is not the body's length is refused.
    let out = tool(
        args![
            "request",
            "--socket",
            app.sock,
            "--body-size",
            "3",
            "--header",
            "Content-Length=5"
        ],
        b"",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Content-Length"), "{err}");
}

/// `--body-file PATH` (or `-` for standard input) sends that file as the body: POST,
/// CONTENT_LENGTH its length, FCGI_STDIN in records of at most 65535 bytes.
#[test]
fn the_request_tool_sends_a_body_file() {
    let app = FcgiApp::start("echo", &[]);
    let dir = TempDir::new("tool-body");
    // Above 1 MiB: written record by record while the response is read.
    let body = noise(1_200_000, 7);
    let file = dir.join("body.bin");
    std::fs::write(&file, &body).unwrap();
    for (arg, stdin) in [(file.as_os_str(), &[][..]), ("-".as_ref(), &body[..])] {
        let out = tool(
            args![
                "request",
                "--socket",
                app.sock,
                "--path",
                "/up",
                "--body-file",
                arg
            ],
            stdin,
        );
        let j = tool_json(&out);
        assert_eq!(j["method"], "POST");
        assert_eq!(j["vars"]["CONTENT_LENGTH"], "1200000");
        assert_eq!(j["vars"]["CONTENT_TYPE"], "application/octet-stream");
        assert_eq!(j["body_len"], 1_200_000);
        assert_eq!(j["body_sha256"], sha256_hex(&body));
    }
    // An explicit method wins; an empty file is a body of 0 bytes.
    let empty = dir.join("empty");
    std::fs::write(&empty, b"").unwrap();
    let out = tool(
        args![
            "request",
            "--socket",
            app.sock,
            "--method",
            "PUT",
            "--body-file",
            empty
        ],
        b"",
    );
    let j = tool_json(&out);
    assert_eq!(
        (&j["method"], &j["vars"]["CONTENT_LENGTH"]),
        (&"PUT".into(), &"0".into())
    );
}

/// `bench --body-file` sends the same body with every request; the test plays the app
/// and checks each request's records.
#[test]
fn the_bench_tool_sends_a_body_file_with_every_request() {
    let dir = TempDir::new("tool-bench-body");
    let body = noise(150_000, 9);
    let file = dir.join("body.bin");
    std::fs::write(&file, &body).unwrap();
    let sock = dir.join("fake.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let expected = body.clone();
    let server = std::thread::spawn(move || {
        for _ in 0..3 {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(T)).unwrap();
            let mut raw = Vec::new();
            let (mut params, mut stdin) = (Vec::new(), Vec::new());
            'read: loop {
                let mut buf = [0u8; 65536];
                let n = std::io::Read::read(&mut s, &mut buf).unwrap();
                assert!(n > 0, "closed mid-request");
                raw.extend_from_slice(&buf[..n]);
                let (recs, rest) = parse_records(&raw);
                for r in &recs {
                    match r.t {
                        PARAMS => params.extend_from_slice(&r.content),
                        STDIN if r.content.is_empty() => break 'read,
                        STDIN => stdin.extend_from_slice(&r.content),
                        _ => {}
                    }
                }
                raw = rest;
            }
            assert!(
                stdin == expected,
                "the body differs ({} bytes)",
                stdin.len()
            );
            let mut cl = Vec::new();
            pair(
                &mut cl,
                b"CONTENT_LENGTH",
                expected.len().to_string().as_bytes(),
            );
            assert!(
                params.windows(cl.len()).any(|w| w == cl),
                "no CONTENT_LENGTH"
            );
            let mut reply = rec(STDOUT, 1, b"Status: 200 OK\r\n\r\nok");
            reply.extend(rec(STDOUT, 1, b""));
            reply.extend(rec(END, 1, &[0; 8]));
            s.write_all(&reply).unwrap();
        }
    });
    let out = tool(
        args![
            "bench",
            "--socket",
            sock,
            "-n",
            "3",
            "--warmup",
            "0",
            "--body-file",
            file,
            "--json"
        ],
        b"",
    );
    let j = tool_json(&out);
    assert_eq!(
        (j["requests"].as_u64(), j["errors"].as_u64()),
        (Some(3), Some(0))
    );
    server.join().unwrap();
}

/// An END_REQUEST shorter than its 8 bytes (a broken peer) is an error the tool
/// reports, not a panic (it indexed the content).
#[test]
fn the_request_tool_reports_a_short_end_request() {
    let dir = TempDir::new("tool-short-end");
    let sock = dir.join("fake.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let mut raw = Vec::new();
        loop {
            let mut buf = [0u8; 4096];
            let n = std::io::Read::read(&mut s, &mut buf).unwrap_or(0);
            raw.extend_from_slice(&buf[..n]);
            let (recs, _) = parse_records(&raw);
            if n == 0 || recs.iter().any(|r| r.t == STDIN && r.content.is_empty()) {
                break;
            }
        }
        let _ = s.write_all(&rec(END, 1, &[0, 0]));
    });
    let out = tool(args!["request", "--socket", sock], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("END_REQUEST") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn filter_role_is_answered_unknown_role() {
    let app = FcgiApp::start("echo", &[]);
    let mut s = app.connect();
    let mut bytes = begin(3, FILTER, false);
    bytes.extend(stream(PARAMS, 3, &pairs(&[("REQUEST_METHOD", "GET")]), 100));
    s.write_all(&bytes).unwrap();
    let got = read_all(&mut s, T); // returns at the app's half-close
    assert_eq!(got, rec(END, 3, &[0, 0, 0, 0, 3, 0, 0, 0]));
    // Keep-conn off: the app closes as after a response, lingering and draining what
    // the web server still sends for the request (a FILTER's FCGI_DATA), rather than
    // closing under it.
    s.write_all(&rec(STDIN, 3, b"late stdin"))
        .and_then(|_| s.write_all(&rec(DATA, 3, b"late data")))
        .expect("the app closed instead of lingering");
    s.shutdown(std::net::Shutdown::Write).unwrap();
}

/// An abort before the params were complete, keep-conn off: answered, then the
/// lingering close, as after a response.
#[test]
fn abort_before_params_end_without_keep_conn_lingers() {
    let app = FcgiApp::start("echo", &[]);
    let mut s = app.connect();
    let mut bytes = begin(4, RESPONDER, false);
    bytes.extend(rec(PARAMS, 4, &pairs(&[("REQUEST_METHOD", "GET")])));
    bytes.extend(rec(ABORT, 4, &[]));
    s.write_all(&bytes).unwrap();
    let got = read_all(&mut s, T); // returns at the app's half-close
    assert_eq!(got, rec(END, 4, &[0, 0, 0, 0, 0, 0, 0, 0]));
    s.write_all(&rec(PARAMS, 4, b""))
        .expect("the app closed instead of lingering");
    drop(s);
    // The app serves on.
    let r = app.roundtrip(request(1, false, &get("/after", ""), b""), 1);
    assert_eq!(r.status(), 200);
}

#[test]
fn stderr_records_carry_what_the_app_logs() {
    let app = FcgiApp::start("echo", &[]);
    let r = app.roundtrip(request(1, false, &get("/log", ""), b""), 1);
    assert_eq!(r.status(), 200);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("WARN: echo: /log was requested"),
        "stderr: {err:?}"
    );
    // The STDERR stream is terminated with an empty record before END_REQUEST.
    let n = r.records.len();
    assert_eq!(r.records[n - 1].t, END);
    assert_eq!(
        (r.records[n - 2].t, r.records[n - 2].content.len()),
        (STDERR, 0)
    );
    assert_eq!(
        (r.records[n - 3].t, r.records[n - 3].content.len()),
        (STDOUT, 0)
    );
}

/// What an app logs is one line, whatever a client put into it: control characters
/// are escaped, so a newline in a logged body cannot forge a log line of its own.
#[test]
fn a_logged_newline_is_escaped_not_a_new_line() {
    let app = FcgiApp::start("echo", &[]);
    let body = b"one\necho[1]: ERROR: forged\r\x1b[31m";
    let r = app.roundtrip(request(1, false, &cgi_vars("POST", "/log", ""), body), 1);
    assert_eq!(r.status(), 200);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(
        err,
        "WARN: echo: /log was requested (a warning on purpose): \
         one\\necho[1]: ERROR: forged\\r\\x1b[31m\n"
    );
}

/// With FCGI_LOG_TARGET=syslog, what is logged during a request goes to the system
/// log, as the setting says, not to the web server as FCGI_STDERR nor to stderr.
#[cfg(feature = "syslog")]
#[test]
fn the_syslog_target_holds_during_requests() {
    let app = FcgiApp::start("echo", &[("FCGI_LOG_TARGET", "syslog")]);
    let r = app.roundtrip(request(1, false, &get("/log", ""), b""), 1);
    assert_eq!(r.status(), 200);
    assert!(
        r.stderr.is_empty(),
        "FCGI_STDERR: {:?}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(r.records.iter().all(|x| x.t != STDERR), "{:?}", r.records);
    let log = app.stderr();
    assert!(!log.contains("/log was requested"), "stderr: {log}");
}

/// A body that fails after the head went out: what was written reaches the web server,
/// then the connection closes with neither the end of FCGI_STDOUT nor END_REQUEST, as
/// a crashed libfcgi app's would. That is how the web server learns the response is
/// incomplete (nginx then leaves out the client's last chunk). Kept-alive or not, the
/// process serves on.
#[test]
fn a_body_that_fails_midway_ends_without_end_request() {
    let app = FcgiApp::start("echo", &[]);
    for keep in [true, false] {
        let mut s = app.connect();
        s.write_all(&request(
            1,
            keep,
            &get("/stream", "chunks=5&size=10&fail_after=2"),
            b"",
        ))
        .unwrap();
        let r = read_reply(&mut s, 1, T);
        assert!(r.closed, "keep-conn {keep}: the connection stays open");
        assert_eq!(r.end, None, "keep-conn {keep}: END_REQUEST after a cut");
        let (head, body) = r.head_and_body();
        assert!(head.starts_with("Status: 200"), "{head}");
        assert_eq!(body, b"aaaaaaaaaabbbbbbbbbb");
        assert!(
            !r.records
                .iter()
                .any(|x| x.t == STDOUT && x.content.is_empty()),
            "keep-conn {keep}: FCGI_STDOUT was ended"
        );
        let log = format!("{}{}", String::from_utf8_lossy(&r.stderr), app.stderr());
        assert!(
            log.contains("fails on purpose") && log.contains("cut short"),
            "{log}"
        );
        let r = app.roundtrip(request(1, false, &get("/fine", ""), b""), 1);
        assert_eq!(r.status(), 200);
        assert_eq!(r.end, Some((0, 0)));
    }
}

/// A body that ends short of its declared Content-Length, from nginx without
/// FCGI_KEEP_CONN: the length says it is incomplete, so it ends with FCGI_STDOUT's end
/// and END_REQUEST (app status 1), and nginx closes its client's connection at once,
/// where a close over a Unix socket left the client waiting
/// (`servers::nginx_fastcgi_unix_socket`). From nginx with FCGI_KEEP_CONN, from any
/// other server (Apache: `apache::fcgid_a_body_short_of_its_length_is_never_a_whole_200`),
/// or with no length, it closes without END_REQUEST as above.
#[test]
fn a_body_short_of_its_length_ends_with_end_request_only_to_nginx() {
    let (cut, short, no_length) = (
        "chunks=5&size=10&fail_after=2&length=30",
        "chunks=2&size=10&length=30",
        "chunks=5&size=10&fail_after=2",
    );
    let app = FcgiApp::start("echo", &[]);
    // (SERVER_SOFTWARE, query, FCGI_KEEP_CONN, ends with END_REQUEST)
    for (software, query, keep, ended) in [
        ("nginx/1.22.1", cut, false, true),
        ("nginx/1.22.1", short, false, true),
        ("nginx/1.22.1", cut, true, false),
        ("nginx/1.22.1", no_length, false, false),
        ("Apache/2.4.71 (Debian) mod_fcgid/2.3.9", cut, false, false),
        (
            "Apache/2.4.71 (Debian) mod_fcgid/2.3.9",
            short,
            false,
            false,
        ),
        ("lighttpd/1.4.69", short, false, false),
    ] {
        let mut vars = get("/stream", query);
        vars.push(("SERVER_SOFTWARE", software.into()));
        let mut s = app.connect();
        s.write_all(&request(1, keep, &vars, b"")).unwrap();
        let r = read_reply(&mut s, 1, T);
        let what = format!("{software} {query} keep-conn {keep}");
        let (head, body) = r.head_and_body();
        assert!(head.starts_with("Status: 200"), "{what}: {head}");
        assert_eq!(body, b"aaaaaaaaaabbbbbbbbbb", "{what}");
        if ended {
            assert_eq!(r.end, Some((1, 0)), "{what}");
        } else {
            assert_eq!(r.end, None, "{what}: END_REQUEST after a cut");
            assert!(r.closed, "{what}: the connection stays open");
        }
    }
    let r = app.roundtrip(request(1, false, &get("/fine", ""), b""), 1);
    assert_eq!(r.end, Some((0, 0)));
}

#[test]
fn panic_becomes_500_and_the_process_keeps_serving() {
    let mut app = FcgiApp::start("echo", &[]);
    let r = app.roundtrip(request(1, false, &get("/panic", ""), b""), 1);
    assert_eq!(r.status(), 500);
    assert_eq!(r.end.map(|e| e.0), Some(1), "appStatus 1 after a panic");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("panicked") && err.contains("on purpose"),
        "{err:?}"
    );
    for i in 0..3 {
        let r = app.roundtrip(request(1, false, &get("/fine", ""), b""), 1);
        assert_eq!(r.status(), 200, "request {i} after the panic");
        assert_eq!(r.json()["pid"], app.pid());
    }
    assert!(app.alive());
}

#[test]
fn params_over_the_limit_get_431_and_bounded_memory() {
    let app = FcgiApp::start("echo", &[("FCGI_MAX_PARAMS_BYTES", "4096")]);
    let mut vars = get("/big", "");
    vars.push(("HTTP_X_BIG", "b".repeat(8000)));
    let r = app.roundtrip(request(1, false, &vars, b""), 1);
    assert_eq!(r.status(), 431);
    // Too many params.
    let app = FcgiApp::start("echo", &[("FCGI_MAX_PARAMS", "20")]);
    let mut vars = get("/many", "");
    let names: Vec<String> = (0..30).map(|i| format!("HTTP_X_{i}")).collect();
    for n in &names {
        vars.push((Box::leak(n.clone().into_boxed_str()), "1".into()));
    }
    let r = app.roundtrip(request(1, false, &vars, b""), 1);
    assert_eq!(r.status(), 431);
    // Within limits, the same process answers normally.
    let r = app.roundtrip(request(1, false, &get("/ok", ""), b""), 1);
    assert_eq!(r.status(), 200);
}

#[test]
fn every_truncated_prefix_closes_cleanly_and_the_app_lives() {
    let mut app = FcgiApp::start("echo", &[]);
    let mut vars = get("/prefix", "q=1");
    vars[1].1 = "POST".into();
    let full = request(1, false, &vars, b"0123456789");
    for cut in 0..full.len() {
        let mut s = app.connect();
        s.write_all(&full[..cut]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let got = read_all(&mut s, T);
        let (recs, rest) = parse_records(&got);
        assert!(rest.is_empty(), "cut {cut}: partial record in reply");
        // A reply, if any (the params were complete), is a whole, terminated response.
        if !recs.is_empty() {
            assert_eq!(recs.last().unwrap().t, END, "cut {cut}");
        }
    }
    assert!(app.alive());
    let r = app.roundtrip(full, 1);
    assert_eq!(r.json()["body_sha256"], sha256_hex(b"0123456789"));
    // One log line per broken connection at most, never a panic.
    let log = app.stderr();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn malformed_input_closes_that_connection_only() {
    let mut app = FcgiApp::start("echo", &[]);
    let good = request(1, false, &get("/ok", ""), b"");
    let mut bad_lengths = begin(1, RESPONDER, false);
    // A name declared 2^31-1 bytes long, inside a 6-byte record.
    bad_lengths.extend(rec(PARAMS, 1, &[0xff, 0xff, 0xff, 0xff, 1, b'a']));
    bad_lengths.extend(rec(PARAMS, 1, &[]));
    let mut stdin_first = begin(1, RESPONDER, false);
    stdin_first.extend(rec(STDIN, 1, b"early"));
    let mut dup_begin = begin(1, RESPONDER, true);
    dup_begin.extend(begin(1, RESPONDER, true));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("version 2", {
            let mut r = rec(BEGIN, 1, &[0, 1, 0, 0, 0, 0, 0, 0]);
            r[0] = 2;
            r
        }),
        ("version 0", vec![0u8; 16]),
        ("short BEGIN_REQUEST", rec(BEGIN, 1, &[0, 1, 0, 0])),
        ("name-value length past the end", bad_lengths),
        ("STDIN before PARAMS end", stdin_first),
        ("BEGIN twice for one id", dup_begin),
        (
            "HTTP instead of FastCGI",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
    ];
    for (name, bytes) in &cases {
        let mut s = app.connect();
        s.write_all(bytes).unwrap();
        let got = read_all(&mut s, T);
        let (recs, _) = parse_records(&got);
        assert!(
            recs.iter().all(|r| r.t != STDOUT),
            "{name}: the app answered malformed input: {recs:?}"
        );
        // The next connection is served.
        let r = app.roundtrip(good.clone(), 1);
        assert_eq!(r.status(), 200, "after {name}");
    }
    assert!(app.alive());
    let log = app.stderr();
    for needle in [
        "record version 2",
        "BEGIN_REQUEST body of 4 bytes",
        "name-value pair runs past the end",
        "FCGI_STDIN before the end of FCGI_PARAMS",
        "already in flight",
    ] {
        assert!(
            log.contains(needle),
            "no log line with {needle:?} in:\n{log}"
        );
    }
}

#[test]
fn zero_length_records_are_fine() {
    let app = FcgiApp::start("echo", &[]);
    let mut bytes = rec(GET_VALUES, 0, &[]);
    bytes.extend(begin(1, RESPONDER, false));
    bytes.extend(rec(
        PARAMS,
        1,
        &pairs(&[("REQUEST_METHOD", "GET"), ("PATH_INFO", "/z")]),
    ));
    bytes.extend(rec(PARAMS, 1, &[]));
    bytes.extend(rec(STDIN, 1, &[]));
    let r = app.roundtrip(bytes, 1);
    assert_eq!(
        r.records[0],
        Rec {
            t: GET_VALUES_RESULT,
            id: 0,
            content: vec![],
            pad: 0
        }
    );
    assert_eq!(r.json()["path_info"], "/z");
}

#[test]
fn stray_records_for_the_active_request_are_ignored() {
    let app = FcgiApp::start("echo", &[]);
    let mut p = Vec::new();
    for (k, v) in get("/active", "") {
        pair(&mut p, k.as_bytes(), v.as_bytes());
    }
    let mut bytes = begin(1, RESPONDER, false);
    bytes.extend(stream(PARAMS, 1, &p, 65535));
    // FCGI_DATA (FILTER only), and types only an application sends, for request 1.
    bytes.extend(rec(DATA, 1, b"file data"));
    bytes.extend(rec(STDOUT, 1, b"not from the server"));
    bytes.extend(rec(END, 1, &[0; 8]));
    bytes.extend(rec(99, 1, b"??"));
    bytes.extend(stream(STDIN, 1, b"body", 100));
    let r = app.roundtrip(bytes, 1);
    let j = r.json();
    assert_eq!(j["path_info"], "/active");
    assert_eq!(j["body_len"], 4);
    assert_eq!(r.end, Some((0, 0)));
}

/// The system call a process is blocked in (`/proc/PID/syscall`, first field).
fn blocked_in(pid: u32) -> Option<i64> {
    std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A one-worker process waits for its next connection in one blocking `accept4`, as
/// libfcgi waits in `accept`, not in `epoll_wait` followed by a second `accept4` (6 µs
/// more CPU per request behind Apache + mod_fcgid, BENCHMARKS.md); a stop signal
/// there ends the wait at once, and the program file is still looked at.
#[test]
fn an_idle_single_worker_waits_in_accept_and_stops_at_once() {
    const ACCEPT4: i64 = libc::SYS_accept4;
    for sig in [libc::SIGTERM, libc::SIGUSR1] {
        let mut app = FcgiApp::start("echo", &[]);
        let (s, pid) = pid_request(&app.sock);
        drop(s);
        assert!(
            wait_until(T, || blocked_in(pid) == Some(ACCEPT4)),
            "the idle worker waits in system call {:?}, not accept4 ({ACCEPT4})",
            blocked_in(pid)
        );
        // Still serving after its wait began.
        let (s, again) = pid_request(&app.sock);
        drop(s);
        assert_eq!(again, pid);
        assert!(wait_until(T, || blocked_in(pid) == Some(ACCEPT4)));
        let t0 = Instant::now();
        app.signal(sig);
        let st = app.wait_exit(T).expect("exited");
        assert_eq!(st.code(), Some(0), "signal {sig}: {st:?}");
        assert!(
            t0.elapsed() < Duration::from_millis(200),
            "signal {sig}: stopped after {:?}",
            t0.elapsed()
        );
    }
}

/// CPU time (user + system, clock ticks) of a process, from `/proc/PID/stat`.
fn cpu_ticks(pid: u32) -> u64 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command's closing parenthesis: utime and stime are the 12th
    // and 13th.
    let rest = &st[st.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// The echo example started on a listener the test made (and so knows), `env` added.
fn echo_on(
    listener: std::os::unix::net::UnixListener,
    env: &[(&str, &str)],
) -> std::process::Child {
    let mut cmd = std::process::Command::new(example("echo"));
    cmd.stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
        listener,
    )))
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .env_remove("GATEWAY_INTERFACE")
    .envs(env.iter().copied());
    contain(&mut cmd);
    spawn_retrying(&mut cmd)
}

/// The blocking wait shares the listener's `O_NONBLOCK` with every process on the socket
/// (`spawn-fcgi -F` copies, one of them starting up): when another holder makes it
/// non-blocking again, the idle worker's `accept` stops waiting, and it must then wait
/// another way, not spin on `EAGAIN`.
#[test]
fn a_listener_made_non_blocking_by_another_process_does_not_make_the_worker_spin() {
    let dir = TempDir::new("nb");
    let sock = dir.join("app.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let mine = listener.try_clone().unwrap();
    let mut child = echo_on(listener, &[]);
    let pid = child.id();
    let (s, _) = pid_request(&sock);
    drop(s);
    assert!(wait_until(T, || blocked_in(pid) == Some(libc::SYS_accept4)));
    // What a copy starting up does to the shared open file description.
    mine.set_nonblocking(true).unwrap();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    // A spin on EAGAIN takes the whole second (100 ticks); waiting costs next to none.
    assert!(
        used <= 10,
        "the idle worker used {used} ticks of CPU in 1 s"
    );
    let (s, again) = pid_request(&sock);
    drop(s);
    assert_eq!(again, pid, "still serving");
    let _ = child.kill();
    let _ = child.wait();
}

/// How many epoll sets of process `pid` watch the socket `target` (a `socket:[inode]`
/// link), from `/proc/PID/fdinfo`: one `tfd:` line per descriptor a set watches.
fn epoll_sets_watching(pid: u32, target: &std::path::Path) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let mut sets = 0;
    for fd in fds.flatten() {
        let is_epoll = std::fs::read_link(fd.path())
            .is_ok_and(|l| l.to_string_lossy() == "anon_inode:[eventpoll]");
        if !is_epoll {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let watches = info.lines().any(|l| {
            l.strip_prefix("tfd:")
                .and_then(|r| r.split_whitespace().next())
                .is_some_and(|n| {
                    std::fs::read_link(format!("/proc/{pid}/fd/{n}")).is_ok_and(|l| l == target)
                })
        });
        sets += usize::from(watches);
    }
    sets
}

/// A worker thread's epoll set holds the listener only while the thread waits for a
/// connection. Each set that holds it is an entry on the listener's wait queue, whose
/// callback the web server's `connect` runs: with every thread busy, as under load, the
/// web server paid one per thread on each connection (BENCHMARKS.md).
#[test]
fn busy_workers_leave_the_listener_alone() {
    let dir = TempDir::new("busy");
    let sock = dir.join("app.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let target = std::fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap();
    let mut child = echo_on(listener, &[("FCGI_THREADS", "2")]);
    let pid = child.id();
    let (s, _) = pid_request(&sock);
    drop(s);
    assert!(
        wait_until(T, || epoll_sets_watching(pid, &target) >= 1),
        "an idle worker waits on the listener"
    );
    // Both threads busy (the pool's cap is 2).
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut s = UnixStream::connect(&sock).unwrap();
        s.write_all(&request(1, false, &get("/sleep", "ms=1500"), b""))
            .unwrap();
        busy.push(s);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        epoll_sets_watching(pid, &target),
        0,
        "every thread is serving, and a set still watches the listener"
    );
    for mut s in busy {
        assert_eq!(read_reply(&mut s, 1, T).status(), 200);
    }
    // Both idle again: each waits on the listener, and a new connection is served.
    assert!(
        wait_until(T, || epoll_sets_watching(pid, &target) == 2),
        "{} sets watch the listener with both threads idle",
        epoll_sets_watching(pid, &target)
    );
    let (s, again) = pid_request(&sock);
    drop(s);
    assert_eq!(again, pid);
    let _ = child.kill();
    let _ = child.wait();
}

/// One thread, the default under a web server and what each `spawn-fcgi -F n` copy
/// runs: an idle kept-alive connection gives its thread up to a connection that waits
/// (nginx's `keepalive` pool holds idle connections open for good), and is served
/// again when its next request comes. On a Unix socket and on TCP, with one process
/// and with two copies behind three kept connections. Before, the new connection
/// waited until the web server closed an idle one: never, behind nginx.
#[test]
fn one_thread_gives_an_idle_kept_alive_connection_up_to_a_waiting_one() {
    fn check<S: Conn + Write>(mut connect: impl FnMut() -> S, kept_n: usize, what: &str) {
        let mut kept: Vec<S> = (0..kept_n)
            .map(|i| {
                let mut c = connect();
                c.write_all(&request(1, true, &get(&format!("/k{i}"), ""), b""))
                    .unwrap();
                assert_eq!(read_reply(&mut c, 1, T).status(), 200, "{what}: kept {i}");
                c
            })
            .collect();
        // Every thread now holds an idle kept-alive connection.
        let t0 = Instant::now();
        let mut new = connect();
        new.write_all(&request(1, false, &get("/new", ""), b""))
            .unwrap();
        assert_eq!(
            read_reply(&mut new, 1, T).status(),
            200,
            "{what}: the new one"
        );
        // Within the pool's look (250 ms), not the 10 s read timeout.
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{what}: {:?}",
            t0.elapsed()
        );
        // The kept connections are still open and serve their next requests.
        for (i, c) in kept.iter_mut().enumerate() {
            c.write_all(&request(2, true, &get(&format!("/again{i}"), ""), b""))
                .unwrap();
            assert_eq!(read_reply(c, 2, T).status(), 200, "{what}: kept {i} again");
        }
        // And again, after a moment in which each may have been parked or not.
        std::thread::sleep(Duration::from_millis(300));
        for (i, c) in kept.iter_mut().enumerate() {
            c.write_all(&request(3, true, &get(&format!("/third{i}"), ""), b""))
                .unwrap();
            assert_eq!(
                read_reply(c, 3, T).status(),
                200,
                "{what}: kept {i} a third time"
            );
        }
    }
    let app = FcgiApp::start("echo", &[]);
    check(|| app.connect(), 1, "one process, Unix socket");
    drop(app);
    let one = Copies::start("echo", 1);
    check(|| one.connect(), 1, "one process, TCP");
    drop(one);
    let two = Copies::start("echo", 2);
    check(|| two.connect(), 3, "two copies, TCP");
}

/// The signals the tool blocks for its own signal thread (SIGINT, SIGTERM, SIGHUP) are
/// not blocked in the program `--spawn` starts: a blocked mask survives exec, and an
/// app that could not be stopped by SIGTERM was killed 3 s later instead (no clean
/// exit, no profile written by a profile-generating build, a slower benchmark).
#[test]
fn the_spawned_app_starts_with_no_signal_blocked() {
    use std::process::{Command, Stdio};
    let dir = TempDir::new("spawn-sigmask");
    let mut tool = Command::new(env!("CARGO_BIN_EXE_fcgi-shim"))
        .args(["bench", "--spawn"])
        .arg(example("echo"))
        .args(["--", "-d", "30", "--warmup", "0"])
        .env("TMPDIR", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = dir
        .join(&format!("fcgi-shim-bench-{}", tool.id()))
        .join("app.sock");
    let mut app = Vec::new();
    let ready = wait_until(Duration::from_secs(10), || {
        app = descendants(tool.id());
        !app.is_empty() && UnixStream::connect(&sock).is_ok()
    });
    let status = app
        .first()
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .unwrap_or_default();
    let _ = tool.kill();
    let _ = tool.wait();
    for &p in &app {
        // SAFETY: kill(2) on the app the tool started for this test.
        unsafe { libc::kill(p as i32, libc::SIGKILL) };
    }
    assert!(ready, "the spawned app did not start");
    let blocked = status.lines().find(|l| l.starts_with("SigBlk:"));
    assert_eq!(
        blocked,
        Some("SigBlk:\t0000000000000000"),
        "the app started with signals blocked"
    );
}

/// The live descendants of `root`, from every process's parent in /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let mut rest = stat.rsplit_once(')').unwrap().1.split_whitespace();
        let state = rest.next().unwrap().to_owned();
        let ppid: u32 = rest.next().unwrap().parse().unwrap();
        parent.push((pid, ppid, state));
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(
            parent
                .iter()
                .filter(|(_, pp, st)| *pp == p && st != "Z")
                .map(|(c, _, _)| *c),
        );
        i += 1;
    }
    found.remove(0);
    found
}
