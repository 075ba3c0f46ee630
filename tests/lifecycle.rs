// Process life under a web server: signals drain and exit 0, max-requests, exiting when
// the binary is replaced, threads.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use crate::util::*;

const T: Duration = Duration::from_secs(10);

fn pid_of(app: &FcgiApp) -> u64 {
    app.roundtrip(request(1, false, &get("/pid", ""), b""), 1)
        .json()["pid"]
        .as_u64()
        .unwrap()
}

#[test]
fn idle_process_exits_at_once_on_each_signal() {
    for sig in [libc::SIGTERM, libc::SIGUSR1, libc::SIGINT, libc::SIGHUP] {
        let mut app = FcgiApp::start("echo", &[]);
        pid_of(&app);
        let t0 = Instant::now();
        app.signal(sig);
        let st = app.wait_exit(T).expect("exited");
        assert_eq!(st.code(), Some(0), "signal {sig}: {st:?}");
        // mod_fcgid sends SIGKILL about 3 s after SIGTERM: an idle process must be gone
        // long before.
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "signal {sig}: {:?}",
            t0.elapsed()
        );
    }
}

/// Started with SIGHUP ignored (`nohup`), the process keeps ignoring it.
#[test]
fn sighup_stays_ignored_under_nohup() {
    let dir = TempDir::new("nohup");
    let wrapper = dir.join("nohup-echo");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ntrap '' HUP\nexec '{}'\n",
            example("echo").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut app = FcgiApp::start_exe(&wrapper, &[]);
    pid_of(&app);
    app.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert!(app.alive(), "{}", app.stderr());
    pid_of(&app);
    app.stop_expecting_0();
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let mut app = FcgiApp::start("echo", &[]);
    let mut s = app.connect();
    s.write_all(&request(1, false, &get("/sleep", "ms=800"), b""))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    app.signal(libc::SIGTERM);
    let r = read_reply(&mut s, 1, T);
    assert_eq!(r.status(), 200, "the request in flight completes");
    assert_eq!(r.end, Some((0, 0)));
    let st = app.wait_exit(T).expect("exited after the request");
    assert_eq!(st.code(), Some(0));
}

/// A handler that does not return does not keep a stopped process for good: after
/// FCGI_STOP_TIMEOUT the process exits 1 with an error that says so (under a web
/// server no restart window comes on top; a prefork parent waits 2 s more for its
/// workers). With FCGI_PROCESSES, the worker in the request goes the same way and
/// the parent after it, leaving no process behind. (Before: still running 12 s after
/// the signal, with nothing in the log.)
#[test]
fn a_stop_waits_for_a_stuck_request_only_until_the_stop_timeout() {
    for processes in ["1", "2"] {
        let mut app = FcgiApp::start(
            "echo",
            &[("FCGI_STOP_TIMEOUT", "1"), ("FCGI_PROCESSES", processes)],
        );
        let worker = pid_of(&app) as u32;
        let mut s = app.connect();
        s.write_all(&request(1, false, &get("/sleep", "ms=60000"), b""))
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        app.signal(libc::SIGTERM);
        let st = app
            .wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{processes}: still running 10 s after SIGTERM"));
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(6),
            "{processes}: exited after {took:?}"
        );
        let err = app.stderr();
        assert!(
            err.contains(
                "requests still running 1s after the stop began (FCGI_STOP_TIMEOUT); exiting without them"
            ),
            "{processes}: {err}"
        );
        if processes == "1" {
            assert_eq!(st.code(), Some(1), "{err}");
        }
        assert!(
            wait_until(T, || proc_state(worker).is_none_or(|c| c == 'Z')),
            "{processes}: the worker {worker} is still there"
        );
    }
    // FCGI_STOP_TIMEOUT=0: for as long as the request takes.
    let mut app = FcgiApp::start("echo", &[("FCGI_STOP_TIMEOUT", "0")]);
    let mut s = app.connect();
    s.write_all(&request(1, false, &get("/sleep", "ms=4500"), b""))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    app.signal(libc::SIGTERM);
    let r = read_reply(&mut s, 1, T);
    assert_eq!(r.status(), 200, "{}", app.stderr());
    assert_eq!(app.wait_exit(T).and_then(|s| s.code()), Some(0));
}

/// A SIGINT while already stopping for another reason (SIGTERM here; max-requests or a
/// replaced binary alike) is a first Ctrl-C, not a second one: the request in flight
/// still completes and the exit is 0. Only a second SIGINT exits at once.
#[test]
fn sigint_after_sigterm_still_finishes_the_request() {
    let mut app = FcgiApp::start("echo", &[]);
    let mut s = app.connect();
    s.write_all(&request(1, false, &get("/sleep", "ms=800"), b""))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    app.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(100));
    app.signal(libc::SIGINT);
    let r = read_reply(&mut s, 1, T);
    assert_eq!(r.status(), 200, "the request in flight completes");
    assert_eq!(app.wait_exit(T).expect("exited").code(), Some(0));

    // Two SIGINTs: the second one means it.
    let mut app = FcgiApp::start("echo", &[]);
    let mut s = app.connect();
    s.write_all(&request(1, false, &get("/sleep", "ms=3000"), b""))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    app.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(100));
    app.signal(libc::SIGINT);
    let t0 = Instant::now();
    assert_eq!(app.wait_exit(T).expect("exited").code(), Some(130));
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

/// SIGTERM while a fresh connection's request head is still arriving (nothing sent,
/// BEGIN_REQUEST only, half the params) with the default 60 s read timeout: the head
/// gets a 1 s grace, not the whole timeout, so the process is gone before mod_fcgid's
/// SIGKILL 3 s later. A head that does arrive within the grace is still served.
#[test]
fn sigterm_gives_a_request_head_still_arriving_a_short_grace() {
    let full = request(1, false, &get("/late", ""), b"");
    for sent in [0, 8, 16, full.len() / 2] {
        let mut app = FcgiApp::start("echo", &[("FCGI_THREADS", "2")]);
        pid_of(&app);
        let mut s = app.connect();
        s.write_all(&full[..sent]).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        app.signal(libc::SIGTERM);
        let st = app.wait_exit(T).expect("exited");
        assert_eq!(st.code(), Some(0), "{sent} bytes sent: {}", app.stderr());
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{sent} bytes sent: exit took {:?}",
            t0.elapsed()
        );
        drop(s);
    }
    // The rest of the head arriving within the grace: answered, then the exit.
    let mut app = FcgiApp::start("echo", &[]);
    pid_of(&app);
    let mut s = app.connect();
    s.write_all(&full[..full.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    app.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(&full[full.len() / 2..]).unwrap();
    assert_eq!(read_reply(&mut s, 1, T).status(), 200);
    assert_eq!(app.wait_exit(T).expect("exited").code(), Some(0));
}

/// SIGTERM with a response sent but its upload unread, the web server keeping the
/// connection open: the lingering close gives it 200 ms, not 2 s, then the process
/// exits.
#[test]
fn sigterm_cuts_a_lingering_close_short() {
    let mut app = FcgiApp::start("echo", &[]);
    pid_of(&app);
    let mut s = app.connect();
    // /status/200 answers without reading the body; the terminating empty STDIN
    // record is not sent, so the request is never read to its end.
    let mut bytes = request(1, false, &get("/status/200", ""), &[b'x'; 100_000]);
    bytes.truncate(bytes.len() - 8);
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&bytes);
        w
    });
    let r = read_reply(&mut s, 1, T);
    assert_eq!(r.status(), 200, "{}", app.stderr());
    // Now in the lingering close, waiting for a terminator that never comes.
    std::thread::sleep(Duration::from_millis(100));
    app.signal(libc::SIGTERM);
    let t0 = Instant::now();
    let st = app.wait_exit(T).expect("exited");
    assert_eq!(st.code(), Some(0));
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    drop(writer.join());
}

/// The same with the request read to its end (the usual case), where the one worker's
/// lingering close also watches its listener: SIGTERM ends it at once too, whichever
/// thread the signal lands on. (Five times, to give the signal chances to land on
/// another thread than the worker.)
#[test]
fn sigterm_cuts_a_lingering_close_short_after_a_whole_request() {
    for _ in 0..5 {
        let mut app = FcgiApp::start("echo", &[]);
        pid_of(&app);
        let mut s = app.connect();
        s.write_all(&request(1, false, &get("/a", ""), b""))
            .unwrap();
        let r = read_reply(&mut s, 1, T);
        assert_eq!(r.status(), 200, "{}", app.stderr());
        // Now in the lingering close: we keep our side open.
        std::thread::sleep(Duration::from_millis(100));
        app.signal(libc::SIGTERM);
        let t0 = Instant::now();
        let st = app.wait_exit(T).expect("exited");
        assert_eq!(st.code(), Some(0));
        assert!(
            t0.elapsed() < Duration::from_millis(1000),
            "{:?}",
            t0.elapsed()
        );
        drop(s);
    }
}

#[test]
fn sigterm_closes_idle_kept_alive_connections() {
    let mut app = FcgiApp::start("echo", &[]);
    let mut s = app.connect();
    s.write_all(&request(1, true, &get("/a", ""), b"")).unwrap();
    assert_eq!(read_reply(&mut s, 1, T).status(), 200);
    // The connection is open and idle (keep-conn).
    app.signal(libc::SIGTERM);
    assert!(closed_within(&mut s, Duration::from_secs(2)));
    assert_eq!(app.wait_exit(T).and_then(|s| s.code()), Some(0));
}

#[test]
fn sigterm_wakes_every_thread_idling_on_a_kept_alive_connection_at_once() {
    // Each worker blocks in a plain recv on its idle connection; the signal must end
    // every one of them without a timeout to fall back on. Five times, to give the
    // signal chances to land just before a recv.
    for round in 0..5 {
        let mut app = FcgiApp::start("echo", &[("FCGI_THREADS", "8")]);
        let mut conns: Vec<_> = (0..8)
            .map(|_| {
                let mut s = app.connect();
                s.write_all(&request(1, true, &get("/a", ""), b"")).unwrap();
                assert_eq!(read_reply(&mut s, 1, T).status(), 200);
                s
            })
            .collect();
        let t0 = Instant::now();
        app.signal(libc::SIGTERM);
        for s in &mut conns {
            assert!(closed_within(s, T), "round {round}");
        }
        assert_eq!(app.wait_exit(T).and_then(|s| s.code()), Some(0));
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "round {round}: {:?}",
            t0.elapsed()
        );
    }
}

#[test]
fn sigterm_during_upload_completes_the_request() {
    let mut app = FcgiApp::start("echo", &[]);
    let body = noise(2 * 1024 * 1024, 9);
    let mut vars = get("/upload", "");
    vars[1].1 = "POST".into();
    let bytes = request(1, false, &vars, &body);
    let mut s = app.connect();
    let (first, rest) = bytes.split_at(bytes.len() / 2);
    s.write_all(first).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    app.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    s.write_all(rest).unwrap();
    let r = read_reply(&mut s, 1, T);
    assert_eq!(r.json()["body_sha256"], sha256_hex(&body));
    assert_eq!(app.wait_exit(T).and_then(|s| s.code()), Some(0));
}

#[test]
fn max_requests_exits_cleanly_after_n() {
    let mut app = FcgiApp::start("echo", &[("FCGI_MAX_REQUESTS", "3")]);
    for i in 1..=3 {
        let r = app.roundtrip(request(1, false, &get("/n", ""), b""), 1);
        assert_eq!(r.json()["served"], i);
    }
    let st = app.wait_exit(T).expect("exited after 3 requests");
    assert_eq!(st.code(), Some(0));
    assert!(st.signal().is_none());
    // Said at the default level: a server that ends itself says why.
    let log = app.stderr();
    assert!(
        log.contains("INFO: served 3 requests (max-requests 3); exiting"),
        "{log}"
    );
}

/// When the app ends itself (max-requests, the binary replaced), a connection the web
/// server made meanwhile is served, not reset: the web server still took the process
/// for alive (mod_fcgid answered 500 for such a reset, and lighttpd took the backend
/// out of service). A SIGTERM is the web server's own decision and does not drain.
#[test]
fn an_own_exit_serves_the_connections_already_queued() {
    let mut app = FcgiApp::start("echo", &[("FCGI_MAX_REQUESTS", "1")]);
    let mut first = app.connect();
    first
        .write_all(&request(1, false, &get("/sleep", "ms=300"), b""))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // Queued on the listener while the only worker serves the first request.
    let mut queued: Vec<_> = (0..3)
        .map(|i| {
            let mut s = app.connect();
            s.write_all(&request(1, false, &get(&format!("/queued/{i}"), ""), b""))
                .unwrap();
            s
        })
        .collect();
    assert_eq!(read_reply(&mut first, 1, T).status(), 200);
    for (i, s) in queued.iter_mut().enumerate() {
        let r = read_reply(s, 1, T);
        assert_eq!(r.status(), 200, "queued {i}: closed without an answer");
        assert_eq!(r.json()["path_info"], format!("/queued/{i}"));
    }
    assert_eq!(app.wait_exit(T).and_then(|s| s.code()), Some(0));
}

#[test]
fn max_requests_applies_on_a_kept_alive_connection_too() {
    let mut app = FcgiApp::start("echo", &[("PHP_FCGI_MAX_REQUESTS", "2")]);
    let mut s = app.connect();
    for id in 1..=2 {
        s.write_all(&request(id, true, &get("/k", ""), b""))
            .unwrap();
        assert_eq!(read_reply(&mut s, id, T).status(), 200);
    }
    assert!(closed_within(&mut s, T));
    assert_eq!(app.wait_exit(T).and_then(|s| s.code()), Some(0));
}

/// A deploy by symlink: `mysite.fcgi -> v1/app`, then `ln -sfn` to v2. The process was
/// started by the link's path (as a web server starts the script): its settings file
/// is the one beside the link, it logs under the link's name, and switching the link
/// counts as a new upload.
#[test]
fn a_switched_symlink_counts_as_a_new_upload() {
    let dir = TempDir::new("relink");
    for v in ["v1", "v2"] {
        std::fs::create_dir_all(dir.join(v)).unwrap();
        std::fs::copy(example("echo"), dir.join(v).join("app")).unwrap();
    }
    let link = dir.join("mysite.fcgi");
    std::os::unix::fs::symlink(dir.join("v1/app"), &link).unwrap();

    // The settings file beside the link applies (one request, then the exit).
    std::fs::write(dir.join("mysite.fcgi.env"), "FCGI_MAX_REQUESTS=1\n").unwrap();
    let mut app = FcgiApp::start_exe(&link, &[]);
    let r = app.roundtrip(request(1, false, &get("/x", ""), b""), 1);
    assert_eq!(r.status(), 200);
    let st = app.wait_exit(T).expect("exits after FCGI_MAX_REQUESTS=1");
    assert_eq!(st.code(), Some(0));
    assert!(
        app.stderr().contains("mysite.fcgi["),
        "logs under the link's name: {}",
        app.stderr()
    );
    std::fs::remove_file(dir.join("mysite.fcgi.env")).unwrap();

    // Switching the link is noticed like a new upload.
    let mut app = FcgiApp::start_exe(&link, &[]);
    let pid = pid_of(&app);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(pid_of(&app), pid, "the same link: serving on");
    // ln -sfn: a new link renamed over the old one.
    let tmp = dir.join("mysite.fcgi.tmp");
    std::os::unix::fs::symlink(dir.join("v2/app"), &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    // The request that notices is served; the process exits after the first request
    // past its stagger delay (0, 2 or 4 s): keep asking until it is gone.
    let t0 = Instant::now();
    while app.alive() && t0.elapsed() < Duration::from_secs(8) {
        if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&app.sock) {
            let _ = s.write_all(&request(1, false, &get("/poll", ""), b""));
            let _ = read_reply(&mut s, 1, T);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let st = app
        .wait_exit(T)
        .expect("exited after the link was switched");
    assert_eq!(st.code(), Some(0), "{}", app.stderr());
    assert!(app.stderr().contains("was replaced"), "{}", app.stderr());
}

#[test]
fn exits_after_the_binary_is_replaced_on_disk() {
    let dir = TempDir::new("replace");
    let exe = echo_site(&dir);
    let mut app = FcgiApp::start_exe(&exe, &[]);
    let pid = pid_of(&app);
    // Still the same file: the process keeps serving past the check interval.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(pid_of(&app), pid);
    assert!(app.alive());
    // A new upload: written beside, renamed over (what FTP clients and rsync do).
    let tmp = dir.join("mysite.fcgi.new");
    std::fs::copy(example("echo"), &tmp).unwrap();
    let uploaded = Instant::now();
    std::fs::rename(&tmp, &exe).unwrap();
    // Noticed within a second (by a request, or by the idle process itself); the
    // process exits 0, 2 or 4 s later by its pid (processes of one program stagger
    // their exits): every request until it goes is answered.
    let delay = Duration::from_secs((pid % 3) * 2);
    while app.alive() && uploaded.elapsed() < delay + Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(200));
        // The process owns the listener: once it is gone, connecting fails.
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(&app.sock) else {
            break;
        };
        s.write_all(&request(1, false, &get("/poll", ""), b""))
            .unwrap();
        let r = read_reply(&mut s, 1, T);
        if r.closed && r.stdout.is_empty() {
            break;
        }
        assert_eq!(r.status(), 200);
    }
    let st = app
        .wait_exit(T)
        .expect("exited after the binary was replaced");
    assert_eq!(st.code(), Some(0));
    assert!(
        uploaded.elapsed() >= delay,
        "exited {:?} after the upload, before its {delay:?}",
        uploaded.elapsed()
    );
    assert!(
        app.stderr().contains("mysite.fcgi was replaced; exiting"),
        "{}",
        app.stderr()
    );
}

/// A new upload that cannot be run (here: without its execute bit) does not end the
/// process: under lighttpd `bin-path` the server could not start the new file and
/// would answer 503. The process serves on, says why once, and exits as usual once the
/// file is made runnable.
#[test]
fn a_replaced_binary_that_cannot_be_run_leaves_the_process_serving() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("replace-unrunnable");
    let exe = echo_site(&dir);
    let mut app = FcgiApp::start_exe(&exe, &[]);
    let pid = pid_of(&app);
    let tmp = dir.join("mysite.fcgi.new");
    std::fs::copy(example("echo"), &tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, &exe).unwrap();
    // Past the check and the longest stagger (4 s): still this process, answering.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(6) {
        assert_eq!(pid_of(&app), pid, "{}", app.stderr());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(app.alive(), "{}", app.stderr());
    let why = "cannot be run: not executable (chmod 755 it)";
    assert_eq!(app.stderr().matches(why).count(), 1, "{}", app.stderr());
    assert!(!app.stderr().contains("exiting"), "{}", app.stderr());
    // Made runnable: the process goes, 0, 2 or 4 s later by its pid.
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exits_as_replaced(
        &mut app,
        Duration::from_secs(10),
        "exited once the new file could be run",
        "was replaced",
    );
}

/// A program file removed (not replaced by one that cannot be run): the site is being
/// taken down, and the process goes as after any upload.
#[test]
fn a_removed_binary_ends_the_process() {
    let dir = TempDir::new("remove");
    let exe = echo_site(&dir);
    let mut app = FcgiApp::start_exe(&exe, &[]);
    let _ = pid_of(&app);
    std::fs::remove_file(&exe).unwrap();
    exits_as_replaced(
        &mut app,
        Duration::from_secs(10),
        "exited after the program file was removed",
        "was removed",
    );
    assert!(!app.stderr().contains("cannot be run"), "{}", app.stderr());
}

/// An idle process notices a new upload too, without a request to look after: under
/// mod_fcgid, which sends the requests to processes of the new file from then on, the
/// old one would otherwise idle until `FcgidIdleTimeout`, holding its memory.
#[test]
fn an_idle_process_exits_on_its_own_after_the_binary_is_replaced() {
    let dir = TempDir::new("replace-idle");
    let exe = echo_site(&dir);
    let mut app = FcgiApp::start_exe(&exe, &[("FCGI_THREADS", "2")]);
    let pid = app.pid();
    assert_eq!(pid_of(&app), u64::from(pid));
    upload(&example("echo"), &exe);
    // No request from here on: noticed within 1 s, then its stagger delay (0, 2 or 4 s).
    let delay = Duration::from_secs(u64::from(pid % 3) * 2);
    exits_as_replaced(
        &mut app,
        delay + Duration::from_secs(4),
        "an idle process exits after its binary is replaced",
        "was replaced",
    );
}

/// `touch mysite.fcgi`, the reload habit of Passenger and mod_wsgi users: the process
/// goes as after an upload, and the log says what it saw.
#[test]
fn a_touched_binary_ends_the_process_as_an_upload_does() {
    let dir = TempDir::new("touch");
    let exe = echo_site(&dir);
    let mut app = FcgiApp::start_exe(&exe, &[]);
    let pid = pid_of(&app);
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    // Opened to read: the program running from it cannot be opened to write (ETXTBSY).
    std::fs::File::open(&exe)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let delay = Duration::from_secs((pid % 3) * 2);
    exits_as_replaced(
        &mut app,
        delay + Duration::from_secs(4),
        "exited after the program file was touched",
        "changed on disk (written in place or touched)",
    );
}

#[test]
fn threads_serve_connections_at_once_and_no_more() {
    let app = FcgiApp::start("echo", &[("FCGI_THREADS", "4")]);
    let t0 = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let mut s = app.connect();
            std::thread::spawn(move || {
                s.write_all(&request(1, false, &get("/sleep", "ms=1000"), b""))
                    .unwrap();
                read_reply(&mut s, 1, T).status()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 200);
    }
    // Four 1 s requests in parallel take about 1 s; one at a time would take 4 s.
    assert!(
        t0.elapsed() < Duration::from_millis(3000),
        "{:?}",
        t0.elapsed()
    );

    // With one thread, a second connection waits while the first is busy instead of
    // being served by an extra thread. (Once the first is idle, kept alive, it gives
    // the thread up: `protocol::one_thread_gives_an_idle_kept_alive_connection_up_to_a_waiting_one`.)
    let app = FcgiApp::start("echo", &[("FCGI_THREADS", "1")]);
    let mut a = app.connect();
    a.write_all(&request(1, true, &get("/sleep", "ms=1500"), b""))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut b = app.connect();
    b.write_all(&request(1, false, &get("/b", ""), b""))
        .unwrap();
    b.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        std::io::Read::read(&mut b, &mut byte).is_err(),
        "served past the thread limit"
    );
    assert_eq!(read_reply(&mut a, 1, T).status(), 200);
    assert_eq!(read_reply(&mut b, 1, T).status(), 200);
}

/// A web server that keeps more connections open than the app has threads (H2O's
/// pool has no limit; nginx's `keepalive` is per worker process): a connection idle
/// between requests gives its thread to one that waits, within about a quarter of a
/// second, and is served again when its next request comes (`ParkLot`). Before, the
/// waiting one waited for the web server's keep-alive timeout.
#[test]
fn idle_kept_connections_give_their_threads_to_waiting_ones() {
    let mut app = FcgiApp::start("echo", &[("FCGI_THREADS", "2")]);
    let ask = |s: &mut std::os::unix::net::UnixStream, id: u16, path: &str| {
        let t0 = Instant::now();
        s.write_all(&request(id, true, &get(path, ""), b""))
            .unwrap();
        let r = read_reply(s, id, Duration::from_secs(5));
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.json()["path_info"], path);
        t0.elapsed()
    };
    // Two kept connections, each served once and then idle: both threads are theirs.
    let mut conns = vec![app.connect(), app.connect()];
    ask(&mut conns[0], 1, "/a");
    ask(&mut conns[1], 1, "/b");
    // Four more, one after another, each kept open after its answer.
    for i in 0..4 {
        let mut c = app.connect();
        let took = ask(&mut c, 1, &format!("/new{i}"));
        assert!(
            took < Duration::from_secs(2),
            "connection {i} waited {took:?}"
        );
        conns.push(c);
    }
    // Every one of them is still served, in turns, again and again.
    for round in 0..3u16 {
        for (i, c) in conns.iter_mut().enumerate() {
            let took = ask(c, 2 + round, &format!("/again/{i}"));
            assert!(
                took < Duration::from_secs(2),
                "round {round}, connection {i}: {took:?}"
            );
        }
    }
    // Six at once on the six connections.
    let handles: Vec<_> = conns
        .drain(..)
        .enumerate()
        .map(|(i, mut c)| {
            std::thread::spawn(move || {
                c.write_all(&request(9, true, &get("/sleep", "ms=300"), b""))
                    .unwrap();
                assert_eq!(
                    read_reply(&mut c, 9, Duration::from_secs(10)).status(),
                    200,
                    "{i}"
                );
                c
            })
        })
        .collect();
    let mut conns: Vec<std::os::unix::net::UnixStream> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    // A stop with a request sent on every connection just before: each is answered,
    // parked or not, then the connections close and the process exits 0.
    // (Each takes 200 ms, so the two threads are busy at the signal and the others
    // wait parked.)
    for c in &mut conns {
        c.write_all(&request(10, true, &get("/sleep", "ms=200"), b""))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    app.signal(libc::SIGTERM);
    for (i, c) in conns.iter_mut().enumerate() {
        assert_eq!(
            read_reply(c, 10, T).status(),
            200,
            "connection {i}: {}",
            app.stderr()
        );
        assert!(closed_within(c, T), "connection {i}");
    }
    assert_eq!(
        app.wait_exit(T).and_then(|s| s.code()),
        Some(0),
        "{}",
        app.stderr()
    );
}

/// `FCGI_IDLE_TIMEOUT` closes parked connections too.
#[test]
fn parked_connections_are_closed_at_the_idle_timeout() {
    let mut app = FcgiApp::start("echo", &[("FCGI_THREADS", "2"), ("FCGI_IDLE_TIMEOUT", "2")]);
    let mut conns = Vec::new();
    for i in 0..4u16 {
        let mut c = app.connect();
        c.write_all(&request(1, true, &get(&format!("/{i}"), ""), b""))
            .unwrap();
        assert_eq!(read_reply(&mut c, 1, Duration::from_secs(5)).status(), 200);
        conns.push(c);
    }
    let t0 = Instant::now();
    for (i, c) in conns.iter_mut().enumerate() {
        assert!(closed_within(c, Duration::from_secs(6)), "connection {i}");
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    assert!(app.alive());
}

/// ... but not one whose next request came while every thread was busy: that one is
/// no longer idle, and waits to be served.
#[test]
fn a_parked_connection_with_a_request_waiting_is_not_closed_for_idling() {
    // The late requests go out well inside the idle timeout (the connections before the
    // busy ones may each wait for the watch's next look, 250 ms, under a loaded suite),
    // and are answered well past it.
    let app = FcgiApp::start("echo", &[("FCGI_THREADS", "2"), ("FCGI_IDLE_TIMEOUT", "2")]);
    let mut idle: Vec<_> = (0..4)
        .map(|i| {
            let mut c = app.connect();
            c.write_all(&request(1, true, &get(&format!("/{i}"), ""), b""))
                .unwrap();
            assert_eq!(read_reply(&mut c, 1, Duration::from_secs(5)).status(), 200);
            c
        })
        .collect();
    // Two 4 s requests take both threads; the idle connections are parked.
    let mut busy: Vec<_> = (0..2)
        .map(|_| {
            let mut c = app.connect();
            c.write_all(&request(1, true, &get("/sleep", "ms=4000"), b""))
                .unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    for (i, c) in idle.iter_mut().enumerate() {
        c.write_all(&request(2, true, &get(&format!("/late{i}"), ""), b""))
            .unwrap();
    }
    // Past the idle timeout, while both threads are still busy: answered once a
    // thread is free, not closed.
    for (i, c) in idle.iter_mut().enumerate() {
        let r = read_reply(c, 2, Duration::from_secs(10));
        assert_eq!(r.status(), 200, "connection {i}");
    }
    for c in &mut busy {
        assert_eq!(read_reply(c, 1, Duration::from_secs(10)).status(), 200);
    }
}

/// A stop answers the requests already sent on parked connections however many there
/// are (every stopping worker serves them), not only those it gets to in the first
/// seconds.
#[test]
fn a_stop_answers_every_request_already_sent_on_parked_connections() {
    let mut app = FcgiApp::start("echo", &[("FCGI_THREADS", "2")]);
    let mut conns: Vec<_> = (0..16)
        .map(|i| {
            let mut c = app.connect();
            c.write_all(&request(1, true, &get(&format!("/{i}"), ""), b""))
                .unwrap();
            assert_eq!(read_reply(&mut c, 1, Duration::from_secs(5)).status(), 200);
            c
        })
        .collect();
    for c in &mut conns {
        c.write_all(&request(2, true, &get("/sleep", "ms=600"), b""))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    app.signal(libc::SIGTERM);
    for (i, c) in conns.iter_mut().enumerate() {
        let r = read_reply(c, 2, Duration::from_secs(20));
        assert_eq!(r.status(), 200, "connection {i}: {}", app.stderr());
        assert!(closed_within(c, T), "connection {i}");
    }
    assert_eq!(
        app.wait_exit(T).and_then(|s| s.code()),
        Some(0),
        "{}",
        app.stderr()
    );
}

/// Connections whose requests come back to back never idle: with more of them than
/// threads, each still gets its turn (a busy connection looks, 10 times a second at
/// most, whether a new one waits, and then waits parked itself).
#[test]
fn busy_kept_connections_beyond_the_threads_each_get_their_turn() {
    let app = FcgiApp::start("echo", &[("FCGI_THREADS", "2")]);
    let until = Instant::now() + Duration::from_secs(3);
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let mut c = app.connect();
            std::thread::spawn(move || {
                let mut answered = 0u32;
                let mut id = 1u16;
                while Instant::now() < until {
                    c.write_all(&request(id, true, &get("/busy", ""), b""))
                        .unwrap();
                    if read_reply(&mut c, id, Duration::from_secs(10)).status() == 200 {
                        answered += 1;
                    }
                    id = id % 1000 + 1;
                }
                answered
            })
        })
        .collect();
    let counts: Vec<u32> = clients.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        counts.iter().all(|&n| n >= 10),
        "answers per connection: {counts:?}"
    );
}

#[test]
fn sigterm_still_serves_a_request_already_sent_on_the_kept_alive_connection() {
    let mut app = FcgiApp::start("echo", &[]);
    let mut s = app.connect();
    // The web server sent request 2 right behind request 1 on the same connection.
    let mut bytes = request(1, true, &get("/sleep", "ms=500"), b"");
    bytes.extend(request(2, true, &get("/second", ""), b""));
    s.write_all(&bytes).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    app.signal(libc::SIGTERM);
    assert_eq!(read_reply(&mut s, 1, T).status(), 200);
    let r2 = read_reply(&mut s, 2, T);
    assert_eq!(r2.json()["path_info"], "/second");
    // Nothing more is served on it: the connection closes and the process exits 0.
    assert!(closed_within(&mut s, T));
    assert_eq!(app.wait_exit(T).and_then(|s| s.code()), Some(0));
}

/// FCGI_PROCESSES under a web server (lighttpd `bin-path`, spawn-fcgi), as php-cgi's
/// PHP_FCGI_CHILDREN: the process started with the socket keeps it, and workers that
/// exit at FCGI_MAX_REQUESTS are replaced while the others serve, so no connection is
/// refused; SIGTERM stops them all.
#[test]
fn processes_under_a_web_server_replace_workers_while_the_socket_stays() {
    let mut app = FcgiApp::start(
        "echo",
        &[("FCGI_PROCESSES", "2"), ("FCGI_MAX_REQUESTS", "3")],
    );
    let parent = app.pid() as u64;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let sock = app.sock.clone();
            std::thread::spawn(move || {
                (0..10)
                    .map(|_| {
                        let mut s = std::os::unix::net::UnixStream::connect(&sock)
                            .expect("connect: the socket must stay open");
                        s.write_all(&request(1, false, &get("/pid", ""), b""))
                            .unwrap();
                        let r = read_reply(&mut s, 1, T);
                        assert_eq!(r.status(), 200, "{r:?}");
                        r.json()["pid"].as_u64().unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let pids: std::collections::BTreeSet<u64> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client"))
        .collect();
    // 40 requests at 3 per worker: at least 14 workers, none of them the parent.
    assert!(pids.len() >= 14, "served by {pids:?}");
    assert!(!pids.contains(&parent), "the parent served: {pids:?}");
    assert!(app.alive(), "{}", app.stderr());
    let serving = pid_of(&app);
    signal(parent as i32, libc::SIGTERM);
    let st = app.wait_exit(T).expect("exits on SIGTERM");
    assert_eq!(st.code(), Some(0), "{}", app.stderr());
    assert!(
        wait_until(T, || proc_state(serving as u32).is_none_or(|s| s == 'Z')),
        "worker {serving} outlived its parent"
    );
}

/// Under FCGI_PROCESSES the parent watches the program file (a worker forked from
/// the old program would never run the new one): once it is replaced, the workers
/// finish and the new program runs in the same process, on the same socket, so no
/// request fails and the web server sees the same pid. A new file that cannot be run
/// (not executable, not a program, a build for another machine) leaves the running
/// program serving, said once in the log; one that only `exec` refuses makes the
/// process exit, for the web server to start it anew.
/// With FCGI_PROCESSES, a new upload while a worker is in a long request: the new
/// program starts its workers at once, beside the old worker, which finishes its
/// request (200) and is then reaped. (Before: nobody accepted until the long request
/// ended, so every request waited for it: 13 s under lighttpd for a 15 s one.)
#[test]
fn processes_replaced_while_a_worker_is_in_a_long_request_keep_answering() {
    let dir = TempDir::new("replace-prefork-busy");
    let exe = echo_site(&dir);
    let mut app = FcgiApp::start_exe(&exe, &[("FCGI_PROCESSES", "2")]);
    let sock = app.sock.clone();
    let long = std::thread::spawn(move || {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.write_all(&request(1, false, &get("/sleep", "ms=8000"), b""))
            .unwrap();
        let r = read_reply(&mut s, 1, Duration::from_secs(30));
        (r.status(), r.json()["pid"].as_u64())
    });
    std::thread::sleep(Duration::from_millis(500));
    upload(&example("hello"), &exe);
    let t0 = Instant::now();
    // The new program answers (hello) well before the long request ends.
    let mut hello_after = None;
    while t0.elapsed() < Duration::from_secs(6) {
        let r = app.roundtrip(request(1, false, &get("/x", ""), b""), 1);
        assert_eq!(r.status(), 200);
        if r.head_and_body().1.starts_with(b"Hello from") {
            hello_after = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let hello_after = hello_after.unwrap_or_else(|| {
        panic!(
            "no answer from the new program within 6 s\n{}",
            app.stderr()
        )
    });
    assert!(hello_after < Duration::from_secs(4), "{hello_after:?}");
    let (status, old_pid) = long.join().unwrap();
    assert_eq!(status, 200, "the long request finishes\n{}", app.stderr());
    assert!(app.alive(), "{}", app.stderr());
    let old_pid = old_pid.expect("pid") as u32;
    assert!(
        wait_until(T, || proc_state(old_pid).is_none()),
        "the old worker {old_pid} is not reaped: {:?}",
        proc_state(old_pid)
    );
}

#[test]
fn processes_under_a_web_server_run_a_replaced_binary_in_place() {
    let dir = TempDir::new("replace-prefork");
    let exe = echo_site(&dir);
    let mut app = FcgiApp::start_exe(&exe, &[("FCGI_PROCESSES", "2")]);
    let worker = pid_of(&app);
    assert_ne!(worker, app.pid() as u64);
    // A client that asks all along and records who answered: echo (JSON) or hello.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let sock = app.sock.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut s = std::os::unix::net::UnixStream::connect(&sock)
                    .expect("connect: the socket must stay open");
                s.write_all(&request(1, false, &get("/x", ""), b""))
                    .unwrap();
                let r = read_reply(&mut s, 1, T);
                assert_eq!(r.status(), 200, "{r:?}");
                let hello = r.head_and_body().1.starts_with(b"Hello from");
                answers.push(hello);
                if hello && answers.len() > 1 && answers[answers.len() - 2] {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            answers
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    upload(&example("hello"), &exe);
    let t0 = Instant::now();
    while !client.is_finished() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = client.join().expect("every request answered with a 200");
    assert!(
        answers.first() == Some(&false) && answers.last() == Some(&true),
        "echo, then hello: {answers:?}\n{}",
        app.stderr()
    );
    assert!(app.alive(), "{}", app.stderr());
    assert!(app.stderr().contains("takes over"), "{}", app.stderr());
    assert!(
        wait_until(T, || proc_state(worker as u32).is_none_or(|s| s == 'Z')),
        "worker {worker} of the old program is still there"
    );

    // A new file that cannot be run: the workers serve on with the program they have,
    // and the log says why, once per file.
    let pid = app.pid();
    let tmp = dir.join("mysite.fcgi.new");
    let put = |bytes: &[u8], mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::rename(&tmp, &exe).unwrap();
    };
    let echo = std::fs::read(example("echo")).unwrap();
    let mut other_machine = echo.clone();
    // e_machine: AArch64 (or x86-64, on an AArch64 host).
    let aarch64 = 183u16.to_le_bytes();
    other_machine[18..20].copy_from_slice(if echo[18..20] == aarch64 {
        &[62, 0]
    } else {
        &aarch64
    });
    for (bytes, mode, why) in [
        (&b"not a program\n"[..], 0o755, "not a program"),
        (&echo[..], 0o644, "not executable"),
        (&other_machine[..], 0o755, "for another kind of machine"),
    ] {
        put(bytes, mode);
        assert!(
            wait_until(Duration::from_secs(8), || app.stderr().contains(why)),
            "no log line saying {why:?}\n{}",
            app.stderr()
        );
        // Still the same program, the same process, answering.
        for _ in 0..5 {
            let mut s = std::os::unix::net::UnixStream::connect(&app.sock).unwrap();
            s.write_all(&request(1, false, &get("/x", ""), b""))
                .unwrap();
            let r = read_reply(&mut s, 1, T);
            assert_eq!(r.status(), 200, "{r:?}\n{}", app.stderr());
            assert!(r.head_and_body().1.starts_with(b"Hello from"), "{r:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
        assert!(app.alive(), "{}", app.stderr());
        assert_eq!(app.pid(), pid);
        assert_eq!(
            app.stderr().matches(why).count(),
            1,
            "said once per file: {}",
            app.stderr()
        );
    }
    // Made runnable (here: the next upload), it takes over in the same process.
    put(&echo, 0o755);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let Ok(mut s) = std::os::unix::net::UnixStream::connect(&app.sock) else {
                return false;
            };
            s.write_all(&request(1, false, &get("/x", ""), b""))
                .unwrap();
            let r = read_reply(&mut s, 1, T);
            r.status() == 200 && r.head_and_body().1.starts_with(b"{")
        }),
        "echo did not take over\n{}",
        app.stderr()
    );
    assert!(app.alive(), "{}", app.stderr());
    assert_eq!(app.pid(), pid);

    // One that looks runnable but that exec refuses (a script whose interpreter is
    // missing): the process exits, for the web server to start it anew.
    put(b"#!/nonexistent/interpreter\n", 0o755);
    let st = app
        .wait_exit(Duration::from_secs(8))
        .expect("exited when the new file could not be run");
    assert_eq!(st.code(), Some(0), "{}", app.stderr());
    assert!(
        app.stderr().contains("could not start the new program"),
        "{}",
        app.stderr()
    );
}

/// The app exits 0 within `within`, saying what happened to its program file.
fn exits_as_replaced(app: &mut FcgiApp, within: Duration, what: &str, said: &str) {
    let st = app.wait_exit(within).expect(what);
    assert_eq!(st.code(), Some(0), "{}", app.stderr());
    assert!(
        app.stderr()
            .contains(&format!("mysite.fcgi {said}; exiting")),
        "{}",
        app.stderr()
    );
}
