// The standalone server (`--socket`, `--listen`, `--http`, SCGI, prefork, pidfile,
// daemonize, restart handover, systemd activation, the `<program>.env` file): the built
// echo example started as a real process, talked to with raw FastCGI, SCGI and HTTP.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

const T: Duration = Duration::from_secs(10);

/// A process that is not our child (a daemon): SIGKILLed on drop if still there.
struct Stray(i32);

impl Drop for Stray {
    fn drop(&mut self) {
        if self.0 > 1 && proc_alive(self.0) {
            // SAFETY: a process this test started (through the daemonizing launcher).
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

/// True while `pid` exists and is not a zombie.
fn proc_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

/// Live (non-zombie) children of `parent`, from /proc.
fn children_of(parent: u32) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 1 && f[0] != "Z" && f[1].parse::<u32>().ok() == Some(parent) {
            out.insert(pid);
        }
    }
    out
}

/// Runs the echo example to completion (with a deadline); (status, stdout, stderr).
fn run_to_end(mut cmd: Command, timeout: Duration) -> (ExitStatus, String, String) {
    let dir = TempDir::new("run");
    let (o, e) = (dir.join("out"), dir.join("err"));
    cmd.stdout(Stdio::from(fs::File::create(&o).unwrap()))
        .stderr(Stdio::from(fs::File::create(&e).unwrap()));
    contain(&mut cmd);
    let mut child = spawn_retrying(&mut cmd);
    let deadline = Instant::now() + timeout;
    let st = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (
        st,
        fs::read_to_string(&o).unwrap_or_default(),
        fs::read_to_string(&e).unwrap_or_default(),
    )
}

// ---- FastCGI over any stream ----

/// Reads records until END_REQUEST for `id`; an EOF or error first is an `Err`.
fn fcgi_read<S: Read>(s: &mut S, id: u16) -> io::Result<Reply> {
    let mut reply = Reply::default();
    loop {
        let mut h = [0u8; 8];
        s.read_exact(&mut h)?;
        if h[0] != 1 {
            return Err(io::Error::other(format!("not a FastCGI record: {h:?}")));
        }
        let len = u16::from_be_bytes([h[4], h[5]]) as usize;
        let mut rest = vec![0u8; len + h[6] as usize];
        s.read_exact(&mut rest)?;
        let mut bytes = h.to_vec();
        bytes.extend_from_slice(&rest);
        let (recs, _) = parse_records(&bytes);
        let r = recs.into_iter().next().expect("one whole record");
        let end = r.t == END && r.id == id;
        if r.id == id {
            match r.t {
                STDOUT => reply.stdout.extend_from_slice(&r.content),
                STDERR => reply.stderr.extend_from_slice(&r.content),
                END => {
                    let c = &r.content;
                    reply.end = Some((u32::from_be_bytes([c[0], c[1], c[2], c[3]]), c[4]));
                }
                _ => {}
            }
        }
        reply.records.push(r);
        if end {
            return Ok(reply);
        }
    }
}

/// One GET (keep-conn off) on a connected stream; Err on any failure or a non-200.
fn fcgi_get_on<S: Read + Write>(s: &mut S, path: &str, query: &str) -> Result<Value, String> {
    s.write_all(&request(1, false, &get(path, query), b""))
        .map_err(|e| format!("write: {e}"))?;
    let r = fcgi_read(s, 1).map_err(|e| format!("read: {e}"))?;
    if r.end != Some((0, 0)) {
        return Err(format!("end {:?}", r.end));
    }
    let pos = r
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no header end")?;
    if !r.stdout.starts_with(b"Status: 200") {
        return Err(format!(
            "not 200: {:?}",
            String::from_utf8_lossy(&r.stdout[..pos])
        ));
    }
    serde_json::from_slice(&r.stdout[pos + 4..]).map_err(|e| format!("json: {e}"))
}

fn unix_conn(path: &Path) -> io::Result<UnixStream> {
    let s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(T))?;
    s.set_write_timeout(Some(T))?;
    Ok(s)
}

fn tcp_conn(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, T)?;
    s.set_read_timeout(Some(T))?;
    s.set_write_timeout(Some(T))?;
    Ok(s)
}

/// One FastCGI GET over a fresh Unix connection.
fn unix_get(path: &Path, p: &str, q: &str) -> Result<Value, String> {
    let mut s = unix_conn(path).map_err(|e| format!("connect: {e}"))?;
    fcgi_get_on(&mut s, p, q)
}

fn tcp_get(addr: SocketAddr, p: &str, q: &str) -> Result<Value, String> {
    let mut s = tcp_conn(addr).map_err(|e| format!("connect: {e}"))?;
    fcgi_get_on(&mut s, p, q)
}

/// Waits until the server at `sock` answers a FastCGI request; panics with its stderr
/// otherwise.
fn wait_unix_serving(srv: &mut Srv, sock: &Path) {
    let ok = wait_until(T, || unix_get(sock, "/ready", "").is_ok());
    if !ok {
        panic!(
            "no FastCGI service at {} (alive: {}); stderr:\n{}",
            sock.display(),
            srv.alive(),
            srv.stderr()
        );
    }
}

fn wait_tcp_serving(srv: &mut Srv, addr: SocketAddr) {
    let ok = wait_until(T, || tcp_get(addr, "/ready", "").is_ok());
    if !ok {
        panic!(
            "no FastCGI service at {addr} (alive: {}); stderr:\n{}",
            srv.alive(),
            srv.stderr()
        );
    }
}

/// FCGI_GET_VALUES for `names`; the answered pairs.
fn get_values<S: Read + Write>(s: &mut S, names: &[&str]) -> HashMap<String, String> {
    let mut q = Vec::new();
    for n in names {
        pair(&mut q, n.as_bytes(), b"");
    }
    s.write_all(&rec(GET_VALUES, 0, &q)).unwrap();
    let mut h = [0u8; 8];
    s.read_exact(&mut h).unwrap();
    assert_eq!(h[1], GET_VALUES_RESULT, "record type");
    let len = u16::from_be_bytes([h[4], h[5]]) as usize;
    let mut body = vec![0u8; len + h[6] as usize];
    s.read_exact(&mut body).unwrap();
    let mut b = &body[..len];
    let mut out = HashMap::new();
    let take_len = |b: &mut &[u8]| -> usize {
        if b[0] < 128 {
            let n = b[0] as usize;
            *b = &b[1..];
            n
        } else {
            let n = (u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff) as usize;
            *b = &b[4..];
            n
        }
    };
    while !b.is_empty() {
        let nl = take_len(&mut b);
        let vl = take_len(&mut b);
        let name = String::from_utf8_lossy(&b[..nl]).into_owned();
        let value = String::from_utf8_lossy(&b[nl..nl + vl]).into_owned();
        b = &b[nl + vl..];
        out.insert(name, value);
    }
    out
}

fn pid_in(v: &Value) -> u32 {
    v["pid"].as_u64().expect("pid in reply") as u32
}

/// `n` concurrent `/sleep?ms=ms` requests on fresh connections; each thread's result
/// and the time it took.
fn concurrent_sleeps(sock: &Path, n: usize, ms: u64) -> Vec<(Result<Value, String>, Duration)> {
    let t0 = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let sock = sock.to_path_buf();
            std::thread::spawn(move || {
                let r = unix_get(&sock, "/sleep", &format!("ms={ms}"));
                (r, t0.elapsed())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// A client that sends a FastCGI request over a fresh Unix connection every few ms
/// until stopped: what a web server in front of the socket does.
struct Poller {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<PollStats>>,
}

#[derive(Debug, Default)]
struct PollStats {
    ok: usize,
    failures: Vec<String>,
    /// The pids that answered, in order of first appearance.
    pids: Vec<u32>,
    /// Requests each pid answered.
    per_pid: BTreeMap<u32, usize>,
}

impl Poller {
    fn start(sock: &Path) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let sock = sock.to_path_buf();
        let handle = std::thread::spawn(move || {
            let mut stats = PollStats::default();
            while !st.load(Ordering::Relaxed) {
                match unix_get(&sock, "/poll", "") {
                    Ok(v) => {
                        stats.ok += 1;
                        let pid = pid_in(&v);
                        if !stats.pids.contains(&pid) {
                            stats.pids.push(pid);
                        }
                        *stats.per_pid.entry(pid).or_default() += 1;
                    }
                    Err(e) => stats.failures.push(e),
                }
                std::thread::sleep(Duration::from_millis(3));
            }
            stats
        });
        Poller {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> PollStats {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode()
}

fn read_pid(p: &Path) -> Option<u32> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

// ---- --socket ----

#[test]
fn socket_serves_fastcgi_and_its_mode_follows_umask() {
    for (umask, want) in [("0002", 0o775), ("0077", 0o700)] {
        let dir = TempDir::new("sa-umask");
        let sock = dir.join("app.sock");
        let mut srv = Srv::start(
            &["--socket", sock.to_str().unwrap(), "--umask", umask],
            &[("FCGI_RESTART_GRACE", "0.1")],
        );
        wait_unix_serving(&mut srv, &sock);
        let v = unix_get(&sock, "/hello", "a=1").unwrap();
        assert_eq!(v["mode"], "fastcgi");
        assert_eq!(v["uri"], "/hello?a=1");
        assert_eq!(pid_in(&v), srv.pid());
        let m = mode_of(&sock);
        assert_eq!(m & libc::S_IFMT, libc::S_IFSOCK, "a socket: {m:o}");
        assert_eq!(m & 0o7777, want, "--umask {umask}: mode {m:o}");
        srv.stop_expecting_0();
        assert!(!sock.exists(), "socket file removed on exit");
    }
}

/// A standalone server's stop deadline starts after its restart window, during which
/// it still accepts: FCGI_STOP_TIMEOUT=1 with a 2 s window ends a stuck request after
/// about 3 s, not 1, and the log line says 3 s and why.
#[test]
fn a_standalone_stop_deadline_comes_after_the_restart_window() {
    let dir = TempDir::new("sa-stop-deadline");
    let sock = dir.join("app.sock");
    let mut srv = Srv::start(
        &["--socket", sock.to_str().unwrap()],
        &[("FCGI_RESTART_GRACE", "2"), ("FCGI_STOP_TIMEOUT", "1")],
    );
    wait_unix_serving(&mut srv, &sock);
    let mut c = unix_conn(&sock).unwrap();
    c.write_all(&request(1, false, &get("/sleep", "ms=60000"), b""))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    srv.signal(libc::SIGTERM);
    let st = srv.wait_exit(Duration::from_secs(10)).expect("exits");
    let took = t0.elapsed();
    assert_eq!(st.code(), Some(1));
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(6),
        "{took:?}"
    );
    let said = "requests still running 3s after the stop began \
                (the 2s restart window and FCGI_STOP_TIMEOUT=1)";
    assert!(srv.stderr().contains(said), "{}", srv.stderr());
}

#[test]
fn socket_replaces_a_stale_socket_file() {
    let dir = TempDir::new("sa-stale");
    let sock = dir.join("app.sock");
    // A server that died: its socket file stays, nobody listens on it.
    drop(UnixListener::bind(&sock).unwrap());
    assert!(fs::symlink_metadata(&sock).unwrap().file_type().is_socket());
    assert_eq!(
        UnixStream::connect(&sock).unwrap_err().kind(),
        io::ErrorKind::ConnectionRefused
    );
    let stale_ino = fs::symlink_metadata(&sock).unwrap().ino();
    let mut srv = Srv::start(
        &["--socket", sock.to_str().unwrap()],
        &[("FCGI_RESTART_GRACE", "0.1")],
    );
    wait_unix_serving(&mut srv, &sock);
    assert_ne!(fs::symlink_metadata(&sock).unwrap().ino(), stale_ino);
    assert_eq!(pid_in(&unix_get(&sock, "/x", "").unwrap()), srv.pid());
}

#[test]
fn second_server_on_a_served_socket_is_refused_and_the_first_keeps_serving() {
    let dir = TempDir::new("sa-twice");
    let sock = dir.join("app.sock");
    let mut first = Srv::start(&["--socket", sock.to_str().unwrap()], &[]);
    wait_unix_serving(&mut first, &sock);
    let ino = fs::symlink_metadata(&sock).unwrap().ino();

    let (st, _, err) = run_to_end(echo_cmd(&["--socket", sock.to_str().unwrap()], &[]), T);
    assert!(!st.success(), "second server must fail: {st:?} {err}");
    assert!(
        err.contains(sock.to_str().unwrap()) && err.contains("in use"),
        "the error names the path: {err}"
    );
    // The first one is untouched and serves on.
    assert!(first.alive());
    assert_eq!(fs::symlink_metadata(&sock).unwrap().ino(), ino);
    assert_eq!(pid_in(&unix_get(&sock, "/still", "").unwrap()), first.pid());
}

#[test]
fn socket_path_that_is_a_regular_file_is_refused() {
    let dir = TempDir::new("sa-regular");
    let path = dir.join("notes.txt");
    fs::write(&path, "keep me\n").unwrap();
    let (st, _, err) = run_to_end(echo_cmd(&["--socket", path.to_str().unwrap()], &[]), T);
    assert!(!st.success(), "{st:?}");
    assert!(err.contains(path.to_str().unwrap()), "{err}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "keep me\n");
}

/// A socket path the OS takes (sun_path holds 107 bytes and a NUL) is served whatever
/// the length of the server's temporary name beside it; one that is too long is refused
/// with an error naming it and the limit, not a temporary file the user never named.
#[test]
fn socket_paths_up_to_the_os_limit_work_and_longer_ones_are_named() {
    let dir = TempDir::new("sa-long");
    let named = |len: usize| {
        let prefix = format!("{}/", dir.path().display());
        let fill = len - prefix.len() - ".sock".len();
        std::path::PathBuf::from(format!("{prefix}{}.sock", "y".repeat(fill)))
    };
    for len in [100, 104, 107] {
        let sock = named(len);
        assert_eq!(sock.as_os_str().len(), len);
        let args = ["--socket", sock.to_str().unwrap()];
        let mut srv = Srv::start(&args, &[]);
        wait_unix_serving(&mut srv, &sock);
        assert_eq!(pid_in(&unix_get(&sock, "/long", "").unwrap()), srv.pid());
        // A restart on the same long path takes it over.
        srv.signal(libc::SIGTERM);
        let mut next = Srv::start(&args, &[]);
        assert!(
            wait_until(T, || unix_get(&sock, "/long", "")
                .is_ok_and(|v| pid_in(&v) == next.pid())),
            "{len}: {}\n{}",
            srv.stderr(),
            next.stderr()
        );
        assert_eq!(srv.wait_exit(T).and_then(|s| s.code()), Some(0), "{len}");
        next.signal(libc::SIGTERM);
        assert_eq!(next.wait_exit(T).and_then(|s| s.code()), Some(0), "{len}");
        assert!(!sock.exists(), "socket file removed on exit");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "nothing left behind: {left:?}");
    }
    let sock = named(108);
    let (st, _, err) = run_to_end(echo_cmd(&["--socket", sock.to_str().unwrap()], &[]), T);
    assert!(!st.success(), "{st:?}");
    assert!(
        err.contains(sock.to_str().unwrap()) && err.contains("107") && !err.contains(".tmp"),
        "{err}"
    );
}

// ---- --listen ----

/// The local addresses (hex, as /proc/net/tcp{,6} writes them) listening on `port`.
fn listening_on(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 4 || cols[3] != "0A" {
                continue;
            }
            if let Some((addr, p)) = cols[1].split_once(':') {
                if u16::from_str_radix(p, 16).ok() == Some(port) {
                    out.push(addr.to_owned());
                }
            }
        }
    }
    out
}

fn free_port_v6() -> u16 {
    std::net::TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn listen_bare_port_binds_loopback_only() {
    let port = free_port();
    let mut srv = Srv::start(
        &["--listen", &port.to_string()],
        &[("FCGI_RESTART_GRACE", "0.1")],
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_tcp_serving(&mut srv, addr);
    assert_eq!(
        listening_on(port),
        vec!["0100007F".to_owned()],
        "a bare port listens on 127.0.0.1 only"
    );
    let v = tcp_get(addr, "/tcp", "").unwrap();
    assert_eq!(v["mode"], "fastcgi");
    assert_eq!(pid_in(&v), srv.pid());
    srv.stop_expecting_0();
}

#[test]
fn listen_explicit_ipv4_and_ipv6_addresses() {
    let port = free_port();
    let mut v4 = Srv::start(&["--listen", &format!("127.0.0.1:{port}")], &[]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_tcp_serving(&mut v4, addr);
    assert_eq!(listening_on(port), vec!["0100007F".to_owned()]);
    assert_eq!(pid_in(&tcp_get(addr, "/v4", "").unwrap()), v4.pid());

    let port6 = free_port_v6();
    let mut v6 = Srv::start(&["--listen", &format!("[::1]:{port6}")], &[]);
    let addr6: SocketAddr = format!("[::1]:{port6}").parse().unwrap();
    wait_tcp_serving(&mut v6, addr6);
    assert_eq!(
        listening_on(port6),
        vec!["00000000000000000000000001000000".to_owned()],
        "listens on ::1 only"
    );
    let v = tcp_get(addr6, "/v6", "").unwrap();
    assert_eq!(pid_in(&v), v6.pid());
    assert_eq!(v["path_info"], "/v6");
}

// ---- FCGI_WEB_SERVER_ADDRS ----

/// Sends a request over TCP; `Ok(bytes)` is whatever came back before the close.
fn tcp_exchange_raw(addr: SocketAddr) -> (u16, Vec<u8>) {
    let mut s = tcp_conn(addr).unwrap();
    let local_port = s.local_addr().unwrap().port();
    let _ = s.write_all(&request(1, false, &get("/filtered", ""), b""));
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the connection was neither answered nor closed: {e}"),
        }
    }
    (local_port, got)
}

#[test]
fn web_server_addrs_admit_listed_peers_and_close_others() {
    // Listed: served.
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut ok = Srv::start(
        &["--listen", &port.to_string()],
        &[("FCGI_WEB_SERVER_ADDRS", "127.0.0.1")],
    );
    wait_tcp_serving(&mut ok, addr);
    assert_eq!(pid_in(&tcp_get(addr, "/in", "").unwrap()), ok.pid());

    // Not listed (an IPv4 address, and an IPv6-only list for an IPv4 client): the
    // connection is closed at once, unanswered, with a log line naming the peer.
    for allowed in ["10.0.0.1", "::1"] {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut srv = Srv::start(
            &["--listen", &port.to_string()],
            &[("FCGI_WEB_SERVER_ADDRS", allowed)],
        );
        let up = wait_until(T, || TcpStream::connect(addr).is_ok());
        assert!(up, "{}", srv.stderr());
        let t0 = Instant::now();
        let (client_port, got) = tcp_exchange_raw(addr);
        assert!(got.is_empty(), "{allowed}: answered {got:?}");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "closed at once: {:?}",
            t0.elapsed()
        );
        let peer = format!("127.0.0.1:{client_port}");
        assert!(
            srv.logs_within(T, &peer),
            "{allowed}: a log line names {peer}: {}",
            srv.stderr()
        );
        assert!(srv.alive(), "{}", srv.stderr());
    }

    // IPv6 entries parse (bracketed or not) and admit an IPv6 client.
    let port6 = free_port_v6();
    let addr6: SocketAddr = format!("[::1]:{port6}").parse().unwrap();
    let mut v6 = Srv::start(
        &["--listen", &format!("[::1]:{port6}")],
        &[("FCGI_WEB_SERVER_ADDRS", "10.0.0.1, [fe80::1], ::1")],
    );
    wait_tcp_serving(&mut v6, addr6);
    assert_eq!(pid_in(&tcp_get(addr6, "/v6", "").unwrap()), v6.pid());
    // ... and a malformed list is an error naming the variable.
    let (st, _, err) = run_to_end(
        echo_cmd(
            &["--listen", &free_port().to_string()],
            &[("FCGI_WEB_SERVER_ADDRS", "127.0.0.1,not-an-ip")],
        ),
        T,
    );
    assert!(!st.success());
    assert!(err.contains("FCGI_WEB_SERVER_ADDRS"), "{err}");
}

// ---- SCGI ----

fn netstring_headers(h: &[(&str, &str)]) -> Vec<u8> {
    let mut inner = Vec::new();
    for (k, v) in h {
        inner.extend_from_slice(k.as_bytes());
        inner.push(0);
        inner.extend_from_slice(v.as_bytes());
        inner.push(0);
    }
    let mut out = format!("{}:", inner.len()).into_bytes();
    out.extend(inner);
    out.push(b',');
    out
}

fn scgi_request(method: &str, path: &str, body: &[u8], extra: &[(&str, &str)]) -> Vec<u8> {
    let len = body.len().to_string();
    let mut h = vec![
        ("CONTENT_LENGTH", len.as_str()),
        ("SCGI", "1"),
        ("REQUEST_METHOD", method),
        ("SCRIPT_NAME", ""),
        ("PATH_INFO", path),
        ("QUERY_STRING", "q=1"),
        ("REQUEST_URI", "/ignored"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("HTTP_HOST", "localhost"),
    ];
    h.extend_from_slice(extra);
    let mut v = netstring_headers(&h);
    v.extend_from_slice(body);
    v
}

/// Writes `bytes` (from a second thread), optionally half-closes, reads to EOF.
fn unix_exchange(sock: &Path, bytes: Vec<u8>, half_close: bool) -> Vec<u8> {
    let mut s = unix_conn(sock).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&bytes);
        if half_close {
            let _ = w.shutdown(Shutdown::Write);
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("neither answered nor closed: {e}"),
        }
    }
    writer.join().unwrap();
    got
}

fn cgi_split(resp: &[u8]) -> (String, Vec<u8>) {
    let pos = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {:?}", String::from_utf8_lossy(resp)));
    (
        String::from_utf8_lossy(&resp[..pos + 2]).into_owned(),
        resp[pos + 4..].to_vec(),
    )
}

#[test]
fn scgi_serves_netstring_requests_and_survives_malformed_ones() {
    let dir = TempDir::new("sa-scgi");
    let sock = dir.join("scgi.sock");
    let mut srv = Srv::start(
        &["--socket", sock.to_str().unwrap(), "--protocol", "scgi"],
        &[("FCGI_MAX_PARAMS_BYTES", "4096")],
    );
    assert!(
        wait_until(T, || UnixStream::connect(&sock).is_ok()),
        "{}",
        srv.stderr()
    );
    let body = noise(300_000, 7);
    let good = || {
        let resp = unix_exchange(&sock, scgi_request("POST", "/upload", &body, &[]), false);
        let (head, b) = cgi_split(&resp);
        assert!(head.starts_with("Status: 200"), "{head}");
        assert!(
            head.contains("Content-Type: application/json")
                || head.contains("content-type: application/json"),
            "{head}"
        );
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["mode"], "scgi");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path_info"], "/upload");
        assert_eq!(v["uri"], "/upload?q=1");
        assert_eq!(v["body_len"], body.len());
        assert_eq!(v["body_sha256"], sha256_hex(&body));
        v
    };
    assert_eq!(pid_in(&good()), srv.pid());

    let malformed: Vec<(&str, Vec<u8>)> = vec![
        ("bad length", b"1x:CONTENT_LENGTH\x000\x00,".to_vec()),
        (
            "length not digits",
            b"abc:CONTENT_LENGTH\x000\x00,".to_vec(),
        ),
        ("missing comma", {
            let mut v = netstring_headers(&[("CONTENT_LENGTH", "0"), ("SCGI", "1")]);
            *v.last_mut().unwrap() = b';';
            v
        }),
        (
            "CONTENT_LENGTH not first",
            netstring_headers(&[("SCGI", "1"), ("CONTENT_LENGTH", "0")]),
        ),
        ("truncated", {
            let v = scgi_request("GET", "/t", b"", &[]);
            v[..v.len() / 2].to_vec()
        }),
    ];
    for (what, bytes) in malformed {
        let got = unix_exchange(&sock, bytes, true);
        assert!(
            got.is_empty(),
            "{what}: answered {:?}",
            String::from_utf8_lossy(&got)
        );
        assert!(srv.alive(), "{what}: {}", srv.stderr());
        // The server goes on serving.
        good();
    }

    // Headers over FCGI_MAX_PARAMS_BYTES: 431.
    let big = "x".repeat(8000);
    let resp = unix_exchange(
        &sock,
        scgi_request("GET", "/big", b"", &[("HTTP_X_BIG", &big)]),
        false,
    );
    let (head, _) = cgi_split(&resp);
    assert!(head.starts_with("Status: 431"), "{head}");
    good();
}

/// A body longer than its Content-Length is sent to that length and no further (the
/// rest would be read as the next response on the connection); one that ends short
/// closes the connection.
#[test]
fn http_bodies_are_held_to_their_content_length() {
    let (srv, addr) = http_server(&[], &[("FCGI_RESTART_GRACE", "0")]);
    let (mut s, mut r) = http_conn(addr);
    s.write_all(
        b"GET /stream?chunks=2&size=5&length=4 HTTP/1.1\r\nHost: localhost\r\n\r\n\
          GET /next HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .unwrap();
    let first = http_read(&mut r, false);
    assert_eq!(first.body, b"aaaa");
    let next = http_read(&mut r, false);
    assert_eq!(next.status, 200);
    assert_eq!(next.json()["path_info"], "/next");
    assert!(
        srv.logs_within(T, "longer than its Content-Length (4)"),
        "{}",
        srv.stderr()
    );

    let (mut s, mut r) = http_conn(addr);
    s.write_all(
        b"GET /stream?chunks=1&size=5&length=100 HTTP/1.1\r\nHost: localhost\r\n\r\n\
          GET /next HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut all = Vec::new();
    let _ = r.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.contains("content-length: 100\r\n") && text.ends_with("GMT\r\n\r\naaaaa"),
        "the 5 bytes, then the close: {text:?}"
    );
    assert!(
        srv.logs_within(T, "ended after 5 of the 100 bytes"),
        "{}",
        srv.stderr()
    );
}

/// The framing and the connection are the server's: an app's `Transfer-Encoding`,
/// `Connection` and `Keep-Alive` headers are left out (its `Connection: close` is
/// honoured), and header bytes pass as the app gave them, not UTF-8-mangled.
#[test]
fn http_app_hop_by_hop_headers_are_the_servers() {
    let (_srv, addr) = http_server(&[], &[("FCGI_RESTART_GRACE", "0")]);
    let (mut s, mut r) = http_conn(addr);
    s.write_all(
        b"GET /hop-by-hop HTTP/1.1\r\nHost: localhost\r\n\r\n\
          GET /next HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut all = Vec::new();
    let _ = r.read_to_end(&mut all);
    let head_end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&all[..head_end]).to_ascii_lowercase();
    assert_eq!(head.matches("transfer-encoding").count(), 1, "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert!(!head.contains("keep-alive"), "{head}");
    assert!(
        all.windows(15).any(|w| w == b"x-latin1: caf\xe9\r"),
        "{:?}",
        String::from_utf8_lossy(&all)
    );
    let body = dechunk(&all[head_end + 4..]).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["path_info"],
        "/hop-by-hop"
    );
    assert!(
        !String::from_utf8_lossy(&all).contains("/next"),
        "the app asked for the connection to close"
    );
}

/// An app's Content-Length beside its Transfer-Encoding is left out (RFC 9112 6.1): the
/// response is framed by our chunks alone, and the next one on the kept-alive
/// connection arrives whole (with both, the client read 2 bytes of the body and took
/// the rest for the next response).
#[test]
fn http_app_content_length_beside_transfer_encoding_is_left_out() {
    let (_srv, addr) = http_server(&[], &[("FCGI_RESTART_GRACE", "0")]);
    let (mut s, mut r) = http_conn(addr);
    s.write_all(
        b"GET /hop-by-hop?keep=1 HTTP/1.1\r\nHost: localhost\r\n\r\n\
          GET /next HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut all = Vec::new();
    let _ = r.read_to_end(&mut all);
    let find = |from: usize, what: &[u8]| {
        all[from..]
            .windows(what.len())
            .position(|w| w == what)
            .map(|p| from + p)
    };
    let head_end = find(0, b"\r\n\r\n").expect("a head");
    let head = String::from_utf8_lossy(&all[..head_end]).to_ascii_lowercase();
    assert!(!head.contains("content-length"), "{head}");
    assert_eq!(
        head.matches("transfer-encoding: chunked").count(),
        1,
        "{head}"
    );
    // The first body's chunks end, and the next response starts right there.
    let body_end = find(head_end, b"\r\n0\r\n\r\n").expect("last chunk") + 7;
    let body = dechunk(&all[head_end + 4..body_end]).unwrap();
    let j: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(j["path_info"], "/hop-by-hop");
    let rest = String::from_utf8_lossy(&all[body_end..]);
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
    assert!(rest.contains("\"path_info\":\"/next\""), "{rest}");
}

/// On an HTTP or SCGI port a FastCGI connection is the restart probe and nothing else:
/// a FastCGI request there is refused with a log line, since it would let whoever
/// reaches the port set REMOTE_ADDR, HTTPS, REMOTE_USER and every other variable.
#[test]
fn http_and_scgi_ports_refuse_fastcgi_requests() {
    for protocol in ["http", "scgi"] {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let args: Vec<&str> = if protocol == "http" {
            vec!["--http", &addr]
        } else {
            vec!["--listen", &addr, "--protocol", "scgi"]
        };
        let srv = Srv::start(&args, &[("FCGI_RESTART_GRACE", "0")]);
        assert!(
            wait_until(T, || TcpStream::connect(&addr).is_ok()),
            "{}",
            srv.stderr()
        );
        let out = Command::new(env!("CARGO_BIN_EXE_fcgi-shim"))
            .args(["request", "--tcp", &addr, "--param", "REMOTE_USER=admin"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("admin"), "{protocol}: served: {text}");
        let why = "a FastCGI request on an SCGI or HTTP port";
        assert!(srv.logs_within(T, why), "{protocol}: {}", srv.stderr());
        let line = log_line(&srv.stderr(), why);
        assert!(!line.contains("malformed"), "{line}");
    }
}

/// The stderr line that contains `needle` (empty if none).
fn log_line(stderr: &str, needle: &str) -> String {
    stderr
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_default()
        .to_owned()
}

/// SCGI or HTTP sent to a FastCGI port (the web server set to the wrong protocol) is
/// logged with what it looks like, not only as a bad record version.
#[test]
fn scgi_or_http_on_a_fastcgi_port_is_named_in_the_log() {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut srv = Srv::start(&["--listen", &port.to_string()], &[]);
    wait_tcp_serving(&mut srv, addr);
    for (sent, looks_like) in [
        (scgi_request("GET", "/x", b"", &[]), "this looks like SCGI"),
        (
            b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            "this looks like HTTP",
        ),
    ] {
        let version = format!("record version {} ", sent[0]);
        let mut s = tcp_conn(addr).unwrap();
        s.write_all(&sent).unwrap();
        assert!(closed_within(&mut s, T), "{looks_like}");
        assert!(srv.logs_within(T, looks_like), "{}", srv.stderr());
        let line = log_line(&srv.stderr(), looks_like);
        assert!(line.contains(&version), "{line}");
    }
    // FastCGI with a bad version says nothing of the kind.
    let mut s = tcp_conn(addr).unwrap();
    let mut bad = rec(GET_VALUES, 0, b"");
    bad[0] = 2;
    s.write_all(&bad).unwrap();
    assert!(closed_within(&mut s, T));
    assert!(srv.logs_within(T, "record version 2"), "{}", srv.stderr());
    let line = log_line(&srv.stderr(), "record version 2");
    assert!(!line.contains("looks like"), "{line}");
}

/// Absolute URLs come from the Host header only for the hosts FCGI_ALLOWED_HOSTS names;
/// another host gets the first allowed one, since SERVER_NAME (here the listening
/// address) is not in the list (no open redirect, no poisoned link in a mail). With an
/// absolute-form target, its authority is the host (RFC 9112).
#[test]
fn http_absolute_urls_use_only_allowed_hosts() {
    let (_srv, addr) = http_server(
        &[],
        &[
            ("FCGI_RESTART_GRACE", "0"),
            ("FCGI_ALLOWED_HOSTS", "good.example, .example.org"),
        ],
    );
    let location = |req: String| {
        let (mut s, mut r) = http_conn(addr);
        s.write_all(req.as_bytes()).unwrap();
        let resp = http_read(&mut r, false);
        resp.header("location").map(str::to_owned)
    };
    let get = |host: &str| location(format!("GET /redirect HTTP/1.1\r\nHost: {host}\r\n\r\n"));
    assert_eq!(
        get("good.example").as_deref(),
        Some("http://good.example/landed")
    );
    assert_eq!(
        get("www.example.org:8080").as_deref(),
        Some("http://www.example.org:8080/landed")
    );
    let fallback = "http://good.example/landed".to_owned();
    assert_eq!(get("evil.example").as_deref(), Some(fallback.as_str()));
    // The absolute-form target's authority, not the Host header.
    assert_eq!(
        location("GET http://evil.example/redirect HTTP/1.1\r\nHost: good.example\r\n\r\n".into())
            .as_deref(),
        Some(fallback.as_str())
    );
    assert_eq!(
        location("GET http://good.example/redirect HTTP/1.1\r\nHost: evil.example\r\n\r\n".into())
            .as_deref(),
        Some("http://good.example/landed")
    );
}

/// SCGI ends a response with the close; on TCP a body that fails midway ends with a
/// reset instead, so the web server (nginx: "recv() failed ... reset") does not take
/// the short response for a whole one. The server serves on.
#[test]
fn scgi_on_tcp_a_body_that_fails_midway_ends_with_a_reset() {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let srv = Srv::start(
        &[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--protocol",
            "scgi",
        ],
        &[],
    );
    assert!(
        wait_until(T, || TcpStream::connect(addr).is_ok()),
        "{}",
        srv.stderr()
    );
    let exchange = |path: &str, query: &str| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        s.write_all(&netstring_headers(&[
            ("CONTENT_LENGTH", "0"),
            ("SCGI", "1"),
            ("REQUEST_METHOD", "GET"),
            ("SCRIPT_NAME", ""),
            ("PATH_INFO", path),
            ("QUERY_STRING", query),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
        ]))
        .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return (got, None),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return (got, Some(e.kind())),
            }
        }
    };
    let (got, end) = exchange("/stream", "chunks=5&size=10&fail_after=2");
    let (head, body) = cgi_split(&got);
    assert!(head.starts_with("Status: 200"), "{head}");
    assert_eq!(body, b"aaaaaaaaaabbbbbbbbbb");
    assert_eq!(end, Some(io::ErrorKind::ConnectionReset));
    let (got, end) = exchange("/stream", "chunks=5&size=10");
    assert_eq!(cgi_split(&got).1.len(), 50);
    assert_eq!(end, None, "a whole response ends with an orderly close");
}

// ---- --threads, --processes ----

#[test]
fn threads_n_are_advertised_and_serve_n_at_once_never_more() {
    // The same setting from the environment and from the command line.
    for (args, env) in [
        (&[][..], &[("FCGI_THREADS", "3")][..]),
        (&["--threads", "3"][..], &[][..]),
    ] {
        let how = format!("{args:?} {env:?}");
        let dir = TempDir::new("sa-threads");
        let sock = dir.join("app.sock");
        let mut all = vec!["--socket", sock.to_str().unwrap()];
        all.extend_from_slice(args);
        let mut env = env.to_vec();
        env.push(("FCGI_RESTART_GRACE", "0.1"));
        let mut srv = Srv::start(&all, &env);
        wait_unix_serving(&mut srv, &sock);
        let vals = get_values(
            &mut unix_conn(&sock).unwrap(),
            &["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"],
        );
        assert_eq!(
            vals.get("FCGI_MAX_CONNS").map(String::as_str),
            Some("3"),
            "{how}: {vals:?}"
        );
        assert_eq!(
            vals.get("FCGI_MAX_REQS").map(String::as_str),
            Some("3"),
            "{how}: {vals:?}"
        );
        assert_eq!(
            vals.get("FCGI_MPXS_CONNS").map(String::as_str),
            Some("0"),
            "{how}: {vals:?}"
        );

        let ms = 800u64;
        let mut res = concurrent_sleeps(&sock, 4, ms);
        res.sort_by_key(|(_, t)| *t);
        for (r, _) in &res {
            assert!(r.is_ok(), "{how}: {r:?}");
        }
        let times: Vec<Duration> = res.iter().map(|(_, t)| *t).collect();
        // Three at once: all three done well before two sleeps' worth.
        assert!(
            times[2] < Duration::from_millis(2 * ms - 100),
            "{how}: 3 threads serve 3 at once: {times:?}"
        );
        // The fourth waits for a free thread: one sleep after the first three.
        assert!(
            times[3] >= Duration::from_millis(2 * ms - 50),
            "{how}: never more than 3 at once: {times:?}"
        );
    }
}

#[test]
fn prefork_advertises_processes_times_threads() {
    for (args, env) in [
        (&["--processes", "2"][..], &[("FCGI_THREADS", "2")][..]),
        (&["--processes", "2", "--threads", "2"][..], &[][..]),
    ] {
        let how = format!("{args:?} {env:?}");
        let dir = TempDir::new("sa-prefork-gv");
        let sock = dir.join("app.sock");
        let mut all = vec!["--socket", sock.to_str().unwrap()];
        all.extend_from_slice(args);
        let mut srv = Srv::start(&all, env);
        wait_unix_serving(&mut srv, &sock);
        let vals = get_values(
            &mut unix_conn(&sock).unwrap(),
            &["FCGI_MAX_CONNS", "FCGI_MAX_REQS"],
        );
        assert_eq!(
            vals.get("FCGI_MAX_CONNS").map(String::as_str),
            Some("4"),
            "{how}: {vals:?}"
        );
        assert_eq!(
            vals.get("FCGI_MAX_REQS").map(String::as_str),
            Some("4"),
            "{how}: {vals:?}"
        );
    }
}

/// A pids cgroup (v1, as this machine has it) for a test to limit processes and
/// threads in; removed when dropped, once what ran in it has exited. `None`, with a
/// note, where none can be made (the test then has nothing to run on).
struct PidsGroup(std::path::PathBuf);

impl PidsGroup {
    fn new(tag: &str) -> Option<PidsGroup> {
        let dir = Path::new("/sys/fs/cgroup/pids")
            .join(format!("fcgi-shim-test-{tag}-{}", std::process::id()));
        if fs::create_dir(&dir).is_err() {
            eprintln!(
                "skipped: no pids cgroup can be made here ({})",
                dir.display()
            );
            return None;
        }
        let g = PidsGroup(dir);
        if !g.0.join("pids.max").exists() {
            eprintln!("skipped: {} has no pids.max", g.0.display());
            return None;
        }
        Some(g)
    }
}

impl Drop for PidsGroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A standalone server whose one worker thread cannot be started (EAGAIN under a
/// process limit: threads count) fails at once with the reason, rather than holding
/// its socket with nobody to serve it.
#[test]
fn a_server_without_a_worker_thread_fails_at_once() {
    let Some(group) = PidsGroup::new("thread") else {
        return;
    };
    fs::write(group.0.join("pids.max"), "1").unwrap();
    let dir = TempDir::new("sa-nothread");
    let sock = dir.join("app.sock");
    let log = dir.join("stderr.log");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec {} --socket {}",
            group.0.display(),
            example("echo").display(),
            sock.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::from(fs::File::create(&log).unwrap()));
    contain(&mut cmd);
    let mut child = spawn_retrying(&mut cmd);
    let t0 = Instant::now();
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if t0.elapsed() > T {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = fs::read_to_string(&log).unwrap();
    let st = st.unwrap_or_else(|| panic!("still running after {T:?}: {err}"));
    assert_ne!(st.code(), Some(0), "{err}");
    assert!(err.contains("starting a worker thread"), "{err}");
    assert!(!sock.exists(), "the socket file is removed");
    drop(group);
}

/// A worker that cannot be replaced (fork fails with EAGAIN, as under a host's process
/// limit) leaves the others serving, and is started once the system lets us: the
/// server does not stop. The limit is a pids cgroup (v1, as this machine has it; the
/// test says so and returns where none can be made).
#[test]
fn prefork_serves_on_when_a_worker_cannot_be_forked() {
    let Some(group) = PidsGroup::new("fork") else {
        return;
    };
    let cg = group.0.clone();
    let dir = TempDir::new("sa-forkfail");
    let sock = dir.join("app.sock");
    let mut srv = Srv::start(
        &[
            "--socket",
            sock.to_str().unwrap(),
            "--processes",
            "2",
            "--max-requests",
            "1",
        ],
        &[("FCGI_RESTART_GRACE", "0")],
    );
    let parent = srv.pid();
    assert!(
        wait_until(T, || children_of(parent).len() == 2),
        "{}",
        srv.stderr()
    );
    // From now on the parent (alone in the group) may not fork.
    fs::write(cg.join("pids.max"), "1").unwrap();
    fs::write(cg.join("cgroup.procs"), parent.to_string()).unwrap();
    unix_get(&sock, "/one", "").unwrap();
    // That worker exited (max-requests 1) and could not be replaced.
    assert!(
        wait_until(T, || children_of(parent).len() == 1),
        "{}",
        srv.stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(srv.alive(), "the server stopped: {}", srv.stderr());
    unix_get(&sock, "/two", "").expect("the other worker serves");
    assert!(
        srv.logs_within(T, "retrying every second"),
        "{}",
        srv.stderr()
    );
    // Allowed again: both workers are back within a few seconds.
    fs::write(cg.join("pids.max"), "max").unwrap();
    assert!(
        wait_until(T, || children_of(parent).len() == 2),
        "{}",
        srv.stderr()
    );
    unix_get(&sock, "/three", "").expect("served again");
    srv.stop_expecting_0();
    drop(srv);
    drop(group);
}

#[test]
fn prefork_workers_share_the_socket_are_replaced_and_stop_with_the_parent() {
    let dir = TempDir::new("sa-prefork");
    let sock = dir.join("app.sock");
    let mut srv = Srv::start(
        &[
            "--socket",
            sock.to_str().unwrap(),
            "--processes",
            "2",
            "--threads",
            "2",
        ],
        // FCGI_THREADS too: two threads per worker is what this test relies on
        // (`prefork_advertises_processes_times_threads` checks --threads alone).
        &[("FCGI_RESTART_GRACE", "0.2"), ("FCGI_THREADS", "2")],
    );
    wait_unix_serving(&mut srv, &sock);
    let parent = srv.pid();

    // The second worker may still be forking when the first one serves.
    wait_until(T, || children_of(parent).len() == 2);
    let workers = children_of(parent);
    assert_eq!(workers.len(), 2, "two workers: {workers:?}");
    // Four slow requests at once need both workers (two threads each).
    let served_by = |n| -> BTreeSet<u32> {
        concurrent_sleeps(&sock, n, 400)
            .into_iter()
            .map(|(r, _)| pid_in(&r.expect("request")))
            .collect()
    };
    let pids = served_by(4);
    assert_eq!(pids, workers, "served by both workers");
    assert!(!pids.contains(&parent));

    // SIGKILL one worker while a client polls: it is replaced, nothing else fails.
    let poller = Poller::start(&sock);
    std::thread::sleep(Duration::from_millis(200));
    let victim = *workers.iter().next().unwrap();
    // SAFETY: a worker process of the server we started.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let replaced = wait_until(T, || {
        let now = children_of(parent);
        now.len() == 2 && !now.contains(&victim)
    });
    let now = children_of(parent);
    assert!(
        replaced,
        "worker {victim} replaced: {now:?}; {}",
        srv.stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    let stats = poller.finish();
    assert!(stats.ok >= 20, "{stats:?}");
    assert!(
        stats.failures.len() <= 1,
        "at most the request in flight on the killed worker fails: {:?}",
        stats.failures
    );
    let newcomer: Vec<u32> = now.difference(&workers).copied().collect();
    assert_eq!(newcomer.len(), 1, "{workers:?} -> {now:?}");
    assert_eq!(served_by(4), now, "the new worker serves");

    // SIGTERM to the parent: every worker exits, the parent exits 0, the socket goes.
    srv.signal(libc::SIGTERM);
    let st = srv.wait_exit(T).expect("parent exited");
    assert_eq!(st.code(), Some(0), "{st:?}; {}", srv.stderr());
    for w in &now {
        assert!(!proc_alive(*w as i32), "worker {w} still running");
    }
    assert!(!sock.exists(), "socket file removed");
}

/// A server of 2 worker processes that each exit after `max` requests, serving.
fn prefork_with_max_requests(tag: &str, max: u32) -> (TempDir, std::path::PathBuf, Srv) {
    let dir = TempDir::new(tag);
    let sock = dir.join("app.sock");
    let max = max.to_string();
    let srv = Srv::start(
        &[
            "--socket",
            sock.to_str().unwrap(),
            "--processes",
            "2",
            "--max-requests",
            &max,
        ],
        &[("FCGI_RESTART_GRACE", "0.1")],
    );
    assert!(
        wait_until(T, || UnixStream::connect(&sock).is_ok()),
        "{}",
        srv.stderr()
    );
    (dir, sock, srv)
}

#[test]
fn prefork_workers_are_replaced_after_max_requests() {
    let (_dir, sock, mut srv) = prefork_with_max_requests("sa-maxreq", 5);
    let mut per_pid: BTreeMap<u32, u64> = BTreeMap::new();
    for i in 0..30 {
        let v = unix_get(&sock, "/n", "")
            .unwrap_or_else(|e| panic!("request {i} failed: {e}; {}", srv.stderr()));
        let served = v["served"].as_u64().unwrap();
        assert!(served <= 5, "a worker served {served} requests");
        *per_pid.entry(pid_in(&v)).or_default() += 1;
    }
    assert!(per_pid.values().all(|&n| n <= 5), "{per_pid:?}");
    assert!(per_pid.len() >= 6, "30 requests, 5 per worker: {per_pid:?}");
    assert!(!per_pid.contains_key(&srv.pid()));
    assert!(srv.alive());
    assert!(
        wait_until(T, || children_of(srv.pid()).len() == 2),
        "two workers again"
    );
    srv.stop_expecting_0();
    // Workers are recycled here: no warning that the server would end.
    assert!(
        !srv.stderr().contains("nothing here restarts it"),
        "{}",
        srv.stderr()
    );
}

// ---- --pidfile, --daemonize, --workdir ----

#[test]
fn pidfile_appears_only_once_the_socket_accepts_and_goes_on_exit() {
    let dir = TempDir::new("sa-pidfile");
    let sock = dir.join("app.sock");
    let pidf = dir.join("app.pid");
    let mut srv = Srv::start(
        &[
            "--socket",
            sock.to_str().unwrap(),
            "--pidfile",
            pidf.to_str().unwrap(),
        ],
        &[("FCGI_RESTART_GRACE", "0.1")],
    );
    let deadline = Instant::now() + T;
    while !pidf.exists() {
        assert!(Instant::now() < deadline, "no pidfile: {}", srv.stderr());
        std::thread::sleep(Duration::from_micros(500));
    }
    // The moment it exists, the socket already accepts.
    let mut s = unix_conn(&sock).expect("the socket accepts once the pidfile exists");
    assert_eq!(read_pid(&pidf), Some(srv.pid()));
    assert_eq!(pid_in(&fcgi_get_on(&mut s, "/p", "").unwrap()), srv.pid());
    srv.stop_expecting_0();
    assert!(!pidf.exists(), "pidfile removed");
    assert!(!sock.exists(), "socket removed");
}

#[test]
fn daemonize_returns_once_serving_and_stops_cleanly() {
    let dir = TempDir::new("sa-daemon");
    let sock = dir.join("app.sock");
    let pidf = dir.join("app.pid");
    let errlog = dir.join("err.log");
    // A pidfile path that is someone's symlink to another file: the file stays as it
    // is, and the pidfile becomes a file of our own.
    let victim = dir.join("victim");
    fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, &pidf).unwrap();
    let mut cmd = echo_cmd(
        &[
            "--socket",
            sock.to_str().unwrap(),
            "--daemonize",
            "--pidfile",
            pidf.to_str().unwrap(),
            "--errlog",
            errlog.to_str().unwrap(),
            "--umask",
            "0",
        ],
        &[("FCGI_RESTART_GRACE", "0.1")],
    );
    cmd.current_dir(dir.path());
    // A descriptor the launcher inherits (a shell's `7>file`), not close-on-exec.
    let leak = fs::File::create(dir.join("leak")).unwrap();
    let leak_fd = leak.as_raw_fd();
    // SAFETY: in the child before exec: dup2 onto fd 7, which dup2 leaves inheritable.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(leak_fd, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let t0 = Instant::now();
    let (st, _, err) = run_to_end(cmd, T);
    assert_eq!(st.code(), Some(0), "launcher: {st:?} {err}");
    // Read at once, no waiting: it serves already.
    let pid = read_pid(&pidf).unwrap_or_else(|| panic!("pidfile after {:?}", t0.elapsed()));
    let _guard = Stray(pid as i32);
    let v = unix_get(&sock, "/daemon", "").expect("the daemon serves when the launcher returns");
    assert_eq!(pid_in(&v), pid, "the pidfile names the daemon");
    assert!(proc_alive(pid as i32));
    // Not the launcher (nor its intermediate child): the daemon is reparented.
    let ppid: u32 = fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap()
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(ppid, std::process::id());
    drop(leak);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    let meta = fs::symlink_metadata(&pidf).unwrap();
    assert!(meta.file_type().is_file(), "the pidfile is a file of ours");
    // --umask 0 is for the socket: the pidfile and the log are not world-writable.
    assert_eq!(meta.mode() & 0o777, 0o644);
    assert_eq!(fs::metadata(&errlog).unwrap().mode() & 0o777, 0o640);
    let leaked: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .filter(|p| p.ends_with("/leak"))
        .collect();
    assert!(
        leaked.is_empty(),
        "the daemon kept an inherited descriptor: {leaked:?}"
    );

    // kill $(cat P)
    // SAFETY: the daemon this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert!(
        wait_until(T, || !proc_alive(pid as i32)),
        "the daemon stops on SIGTERM"
    );
    assert!(
        wait_until(Duration::from_secs(2), || !sock.exists() && !pidf.exists()),
        "socket and pidfile removed: {} {}",
        sock.exists(),
        pidf.exists()
    );
    let log = fs::read_to_string(&errlog).unwrap_or_default();
    assert!(
        log.contains("stopped after"),
        "the daemon logs to --errlog: {log:?}"
    );
}

#[test]
fn daemonize_reports_a_bind_error_from_the_launcher() {
    let dir = TempDir::new("sa-daemon-err");
    let sock = dir.join("no/such/dir/app.sock");
    let pidf = dir.join("app.pid");
    let (st, _, err) = run_to_end(
        echo_cmd(
            &[
                "--socket",
                sock.to_str().unwrap(),
                "--daemonize",
                "--pidfile",
                pidf.to_str().unwrap(),
            ],
            &[],
        ),
        T,
    );
    assert!(!st.success(), "{st:?}");
    assert!(
        err.contains(&format!("{}: No such file", sock.display())),
        "names the path asked for, not the temporary name: {err}"
    );
    assert!(!pidf.exists());

    // A socket in use: refused by the launcher too.
    let sock = dir.join("app.sock");
    let mut first = Srv::start(&["--socket", sock.to_str().unwrap()], &[]);
    wait_unix_serving(&mut first, &sock);
    let (st, _, err) = run_to_end(
        echo_cmd(&["--socket", sock.to_str().unwrap(), "--daemonize"], &[]),
        T,
    );
    assert!(!st.success(), "{st:?}");
    assert!(err.contains(sock.to_str().unwrap()), "{err}");
    assert_eq!(pid_in(&unix_get(&sock, "/x", "").unwrap()), first.pid());
}

#[test]
fn daemonize_pidfile_error_is_reported_and_leaves_no_socket_behind() {
    let dir = TempDir::new("sa-daemon-pid");
    let sock = dir.join("app.sock");
    let pidf = dir.join("missing/app.pid");
    let (st, _, err) = run_to_end(
        echo_cmd(
            &[
                "--socket",
                sock.to_str().unwrap(),
                "--daemonize",
                "--pidfile",
                pidf.to_str().unwrap(),
            ],
            &[],
        ),
        T,
    );
    assert!(!st.success(), "{st:?}");
    assert!(err.contains("missing/app.pid"), "names the pidfile: {err}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !sock.exists(),
        "a server that failed to start leaves no socket file behind"
    );
}

#[test]
fn workdir_holds_relative_socket_and_pidfile() {
    let work = TempDir::new("sa-workdir");
    let elsewhere = TempDir::new("sa-cwd");
    let mut srv = Srv::start_in(
        Some(elsewhere.path()),
        &[
            "--workdir",
            work.path().to_str().unwrap(),
            "--socket",
            "rel.sock",
            "--pidfile",
            "rel.pid",
        ],
        &[("FCGI_RESTART_GRACE", "0.1")],
    );
    let sock = work.join("rel.sock");
    wait_unix_serving(&mut srv, &sock);
    assert!(wait_until(T, || read_pid(&work.join("rel.pid")) == Some(srv.pid())));
    assert!(!elsewhere.join("rel.sock").exists());
    assert!(!elsewhere.join("rel.pid").exists());
    srv.stop_expecting_0();
    assert!(!sock.exists() && !work.join("rel.pid").exists());
}

// ---- restart: a new server takes the socket over from a stopping one ----

/// A restart while every worker is busy with a long request (a long poll, say): the
/// new server's question (are you draining?) is answered all the same, by a worker
/// added for the handover, so the new server takes over instead of refusing to start
/// as beside a live server; the long requests finish on the old one.
#[test]
fn restart_with_every_worker_busy_is_taken_over() {
    restart_with_every_worker_busy("--threads");
}

/// The same with two worker processes (prefork).
#[test]
fn prefork_restart_with_every_worker_busy_is_taken_over() {
    restart_with_every_worker_busy("--processes");
}

fn restart_with_every_worker_busy(workers: &str) {
    let dir = TempDir::new("sa-restart-busy");
    let sock = dir.join("app.sock");
    let args = ["--socket", sock.to_str().unwrap(), workers, "2"];
    let env = [("FCGI_RESTART_GRACE", "3")];
    let mut a = Srv::start(&args, &env);
    wait_unix_serving(&mut a, &sock);
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let mut s = unix_conn(&sock).unwrap();
            s.write_all(&request(1, false, &get("/sleep", "ms=4000"), b""))
                .unwrap();
            std::thread::spawn(move || fcgi_read(&mut s, 1))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    a.signal(libc::SIGTERM);
    let mut b = Srv::start(&args, &env);
    assert!(
        b.logs_within(T, "listening on"),
        "the restart was refused: {}",
        b.stderr()
    );
    assert!(b.alive(), "{}", b.stderr());
    // Served by B: B itself (threads) or one of its workers (prefork).
    let parent_of = |pid: u32| {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|st| {
                st.rsplit(')')
                    .next()?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()
            })
    };
    assert!(wait_until(T, || unix_get(&sock, "/b", "").is_ok_and(|v| {
        let p = pid_in(&v);
        p == b.pid() || parent_of(p) == Some(b.pid())
    })));
    for r in busy {
        let r = r.join().unwrap().expect("the long request completes");
        assert!(
            r.stdout.starts_with(b"Status: 200"),
            "{}",
            String::from_utf8_lossy(&r.stdout)
        );
    }
    old_exited_then_stop_new(&mut a, &mut b);
}

#[test]
fn restart_hands_the_socket_over_without_a_failed_request() {
    let dir = TempDir::new("sa-restart");
    let sock = dir.join("app.sock");
    let pidf = dir.join("app.pid");
    let args = [
        "--socket",
        sock.to_str().unwrap(),
        "--pidfile",
        pidf.to_str().unwrap(),
    ];
    let mut a = Srv::start(&args, &[]);
    wait_unix_serving(&mut a, &sock);
    assert_eq!(read_pid(&pidf), Some(a.pid()));

    let poller = Poller::start(&sock);
    std::thread::sleep(Duration::from_millis(100));
    // A request in flight on A while it is told to stop.
    let mut slow = unix_conn(&sock).unwrap();
    slow.write_all(&request(1, false, &get("/sleep", "ms=1200"), b""))
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));

    a.signal(libc::SIGTERM);
    let mut b = Srv::start(&args, &[]);
    let slow_reply = std::thread::spawn(move || fcgi_read(&mut slow, 1));

    // B takes the socket over (its pidfile, its socket file) and serves.
    assert!(
        wait_until(T, || read_pid(&pidf) == Some(b.pid())),
        "B writes its pidfile; A: {}\nB: {}",
        a.stderr(),
        b.stderr()
    );
    assert!(wait_until(T, || unix_get(&sock, "/b", "")
        .is_ok_and(|v| pid_in(&v) == b.pid())));
    // A finishes its request, then exits 0.
    let r = slow_reply
        .join()
        .unwrap()
        .expect("the request in flight completes");
    assert!(
        r.stdout.starts_with(b"Status: 200"),
        "{:?}",
        String::from_utf8_lossy(&r.stdout)
    );
    assert_eq!(pid_in(&r.json()), a.pid());
    let st = a.wait_exit(T).expect("A exits");
    assert_eq!(st.code(), Some(0), "{st:?}; {}", a.stderr());
    assert!(st.signal().is_none());
    std::thread::sleep(Duration::from_millis(200));
    let stats = poller.finish();
    assert!(
        stats.failures.is_empty(),
        "a client polling throughout saw failures: {:?}\nA: {}\nB: {}",
        stats.failures,
        a.stderr(),
        b.stderr()
    );
    assert!(
        stats.per_pid.contains_key(&a.pid()) && stats.per_pid.contains_key(&b.pid()),
        "{stats:?}"
    );
    // A's exit left B's files alone.
    assert!(b.alive());
    assert_eq!(read_pid(&pidf), Some(b.pid()));
    assert_eq!(pid_in(&unix_get(&sock, "/after", "").unwrap()), b.pid());
    b.stop_expecting_0();
    assert!(!sock.exists() && !pidf.exists());
}

/// During the restart window a stopping server still accepts; whatever it accepts it
/// must answer, even when the request arrives a moment after the connection (a web
/// server connects, then writes).
#[test]
fn stopping_server_answers_what_it_accepts_in_the_restart_window() {
    let dir = TempDir::new("sa-window");
    let sock = dir.join("app.sock");
    let mut srv = Srv::start(
        &["--socket", sock.to_str().unwrap()],
        &[("FCGI_RESTART_GRACE", "2")],
    );
    wait_unix_serving(&mut srv, &sock);
    srv.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    assert!(srv.alive(), "holds the socket for a new server");
    let mut s = unix_conn(&sock).expect("still accepting in the restart window");
    std::thread::sleep(Duration::from_millis(100));
    let r = fcgi_get_on(&mut s, "/late", "");
    assert!(
        r.is_ok(),
        "a connection accepted in the window is answered: {r:?}; {}",
        srv.stderr()
    );
    assert_eq!(srv.wait_exit(T).and_then(|s| s.code()), Some(0));
}

// ---- the settings file beside the binary ----

#[test]
fn settings_file_beside_the_binary() {
    let dir = TempDir::new("sa-envfile");
    let exe = echo_site(&dir);
    let envf = dir.join("mysite.fcgi.env");
    fs::write(&envf, "# settings for mysite\n\nFCGI_MAX_REQUESTS=2\n").unwrap();

    let one = |app: &FcgiApp| {
        app.roundtrip(request(1, false, &get("/e", ""), b""), 1)
            .status()
    };
    let mut app = FcgiApp::start_exe(&exe, &[]);
    assert_eq!(one(&app), 200);
    std::thread::sleep(Duration::from_millis(100));
    assert!(app.alive(), "still serving after 1 request");
    assert_eq!(one(&app), 200);
    let st = app
        .wait_exit(T)
        .expect("exits after FCGI_MAX_REQUESTS=2 from the file");
    assert_eq!(st.code(), Some(0));

    // The environment overrides the file.
    let mut app = FcgiApp::start_exe(&exe, &[("FCGI_MAX_REQUESTS", "3")]);
    assert_eq!(one(&app), 200);
    assert_eq!(one(&app), 200);
    std::thread::sleep(Duration::from_millis(150));
    assert!(app.alive(), "the environment's 3 wins over the file's 2");
    assert_eq!(one(&app), 200);
    assert_eq!(app.wait_exit(T).and_then(|s| s.code()), Some(0));

    // A malformed line: an error naming the file.
    fs::write(&envf, "FCGI_MAX_REQUESTS=2\nthis line is wrong\n").unwrap();
    let mut app = FcgiApp::start_exe(&exe, &[]);
    let st = app
        .wait_exit(T)
        .expect("exits on a malformed settings file");
    assert!(!st.success(), "{st:?}");
    let err = app.stderr();
    assert!(
        err.contains(envf.to_str().unwrap()),
        "names the file: {err}"
    );

    // A file others can write (it could turn on FCGI_TRUST_FORWARDED, move the app to
    // a port of its own, name a file to overwrite): refused, as suexec refuses such a
    // program.
    fs::write(&envf, "FCGI_MAX_REQUESTS=2\n").unwrap();
    fs::set_permissions(&envf, fs::Permissions::from_mode(0o666)).unwrap();
    let mut app = FcgiApp::start_exe(&exe, &[]);
    let st = app
        .wait_exit(T)
        .expect("exits on a world-writable settings file");
    assert!(!st.success(), "{st:?}");
    let err = app.stderr();
    assert!(err.contains("writable by group or others"), "{err}");
    // Said of the file, not as if its path were a setting's name.
    assert!(
        err.contains(&format!("{}: mode 666", envf.display())) && !err.contains("invalid /"),
        "{err}"
    );
    fs::set_permissions(&envf, fs::Permissions::from_mode(0o644)).unwrap();
    let mut app = FcgiApp::start_exe(&exe, &[]);
    assert_eq!(one(&app), 200);
    assert_eq!(one(&app), 200);
    assert_eq!(app.wait_exit(T).and_then(|s| s.code()), Some(0));

    // A comment after a value is not part of it, and a name that is not a setting (a
    // typo of one) is logged with the setting meant, not passed over in silence.
    fs::write(&envf, "FCGI_MAX_REQUESTS=2   # two\nFCGI_MAX_REQUEST=1\n").unwrap();
    let mut app = FcgiApp::start_exe(&exe, &[]);
    assert_eq!(one(&app), 200);
    std::thread::sleep(Duration::from_millis(100));
    assert!(app.alive(), "FCGI_MAX_REQUEST (a typo) must not act");
    assert_eq!(one(&app), 200);
    assert_eq!(app.wait_exit(T).and_then(|s| s.code()), Some(0));
    let err = app.stderr();
    assert!(
        err.contains(
            "FCGI_MAX_REQUEST is not a setting, ignored (did you mean FCGI_MAX_REQUESTS?)"
        ),
        "{err}"
    );

    // A bad value from the file: the error names the file, as the warning above does;
    // the same value from the environment is not blamed on the file.
    fs::write(&envf, "FCGI_THREADS=0\n").unwrap();
    let in_file = format!("{}: invalid FCGI_THREADS=\"0\"", envf.display());
    let mut app = FcgiApp::start_exe(&exe, &[]);
    let st = app.wait_exit(T).expect("exits on a bad value in the file");
    assert!(!st.success(), "{st:?}");
    let err = app.stderr();
    assert!(err.contains(&in_file), "{err}");
    let mut app = FcgiApp::start_exe(&exe, &[("FCGI_THREADS", "0")]);
    let st = app
        .wait_exit(T)
        .expect("exits on a bad value in the environment");
    assert!(!st.success(), "{st:?}");
    let err = app.stderr();
    assert!(
        err.contains("invalid FCGI_THREADS=\"0\"") && !err.contains(&in_file),
        "{err}"
    );

    // A settings file that is there but cannot be read is an error naming it, not
    // settings that silently do not apply.
    fs::remove_file(&envf).unwrap();
    fs::create_dir(&envf).unwrap();
    let mut app = FcgiApp::start_exe(&exe, &[]);
    let st = app
        .wait_exit(T)
        .expect("exits on an unreadable settings file");
    assert!(!st.success(), "{st:?}");
    let err = app.stderr();
    assert!(
        err.contains(envf.to_str().unwrap()) && err.contains("cannot be read"),
        "{err}"
    );
}

/// A FIFO named like the settings file is refused at once (every start used to block
/// in open() for good, waiting for a writer). A file saved by Windows Notepad, which
/// starts with a byte order mark, applies (it used to be a bad first line). A bad line
/// is named by its number.
#[test]
fn settings_file_fifo_bom_and_line_number() {
    let dir = TempDir::new("sa-envfile-odd");
    let exe = echo_site(&dir);
    let envf = dir.join("mysite.fcgi.env");
    let made = Command::new("mkfifo")
        .args(["-m", "644"])
        .arg(&envf)
        .status()
        .unwrap();
    assert!(made.success());
    let mut app = FcgiApp::start_exe(&exe, &[]);
    let st = app
        .wait_exit(Duration::from_secs(5))
        .expect("exits on a FIFO as the settings file, instead of hanging in open()");
    assert!(!st.success(), "{st:?}");
    let err = app.stderr();
    assert!(
        err.contains(envf.to_str().unwrap()) && err.contains("a FIFO, not a regular file"),
        "{err}"
    );
    drop(app);
    fs::remove_file(&envf).unwrap();

    fs::write(&envf, "\u{feff}FCGI_MAX_REQUESTS=1\r\n").unwrap();
    let mut app = FcgiApp::start_exe(&exe, &[]);
    let r = app.roundtrip(request(1, false, &get("/e", ""), b""), 1);
    assert_eq!(r.status(), 200, "{}", app.stderr());
    let st = app
        .wait_exit(T)
        .expect("exits after FCGI_MAX_REQUESTS=1 from a file with a byte order mark");
    assert_eq!(st.code(), Some(0), "{}", app.stderr());

    fs::write(&envf, "# two\nFCGI_MAX_REQUESTS=2\n\nthis line is wrong\n").unwrap();
    let mut app = FcgiApp::start_exe(&exe, &[]);
    let st = app
        .wait_exit(T)
        .expect("exits on a malformed settings file");
    assert!(!st.success(), "{st:?}");
    let err = app.stderr();
    assert!(
        err.contains(&format!(
            "{}: line 4: this line is wrong; expected",
            envf.display()
        )),
        "{err}"
    );
}

// ---- systemd socket activation ----

/// Runs echo through `/bin/sh` with `listener` as fd 3 and `LISTEN_FDS=1`, with
/// `LISTEN_PID` set to the app's pid (or to `pid_override`).
fn socket_activated(listener: &impl AsRawFd, pid_override: Option<&str>, log: &Path) -> Child {
    let script = match pid_override {
        None => "export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$0\"".to_owned(),
        Some(p) => format!("export LISTEN_PID={p} LISTEN_FDS=1; exec \"$0\""),
    };
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .arg(example("echo"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(fs::File::create(log).unwrap()))
        .env_remove("GATEWAY_INTERFACE")
        .env("FCGI_LOG", "debug");
    contain(&mut cmd);
    let fd = listener.as_raw_fd();
    // SAFETY: dup2/fcntl are async-signal-safe; fd 3 becomes the inherited listener.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0);
            } else if libc::dup2(fd, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    spawn_retrying(&mut cmd)
}

#[test]
fn systemd_socket_activation_serves_on_fd_3() {
    let dir = TempDir::new("sa-systemd");
    let sock = dir.join("activated.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let log = dir.join("err.log");
    let mut child = socket_activated(&listener, None, &log);
    drop(listener);
    let served = wait_until(T, || unix_get(&sock, "/sd", "").is_ok());
    let stderr = fs::read_to_string(&log).unwrap_or_default();
    let alive = child.try_wait().unwrap().is_none();
    if !served {
        let _ = child.kill();
        let _ = child.wait();
        panic!("not served on the activated socket (alive: {alive}): {stderr}");
    }
    let v = unix_get(&sock, "/sd", "x=1").unwrap();
    assert_eq!(v["mode"], "fastcgi");
    assert_eq!(pid_in(&v), child.id());
    // SAFETY: our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + T;
    let st = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(st.code(), Some(0));
    assert!(
        sock.exists(),
        "systemd's socket file is systemd's: left in place"
    );

    // LISTEN_PID naming another process: not ours, so nothing to serve (exit 2).
    let sock2 = dir.join("other.sock");
    let listener = UnixListener::bind(&sock2).unwrap();
    let mut child = socket_activated(&listener, Some("1"), &log);
    let deadline = Instant::now() + T;
    let st = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("served a socket passed for another pid");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(st.code(), Some(2));

    // A connection as fd 3 (a socket unit with Accept=yes): exit 2, and the log says
    // what is wrong with fd 3 rather than only "not started by a web server".
    let (conn, _peer) = UnixStream::pair().unwrap();
    let log3 = dir.join("err3.log");
    let mut child = socket_activated(&conn, None, &log3);
    let st = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline + T {
            let _ = child.kill();
            let _ = child.wait();
            panic!("did not exit with a connection as fd 3");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(st.code(), Some(2));
    let err = fs::read_to_string(&log3).unwrap_or_default();
    assert!(
        err.contains("fd 3 is not a listening socket (a socket unit needs Accept=no)"),
        "{err}"
    );
}

// ---- --http ----

struct HttpResp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }
}

fn http_line(r: &mut impl BufRead) -> String {
    let mut l = String::new();
    r.read_line(&mut l).expect("read a line");
    assert!(l.ends_with("\r\n"), "line without CRLF: {l:?}");
    l.truncate(l.len() - 2);
    l
}

/// Reads one response (framed by Content-Length, chunked, or the close).
fn http_read(r: &mut BufReader<TcpStream>, head_request: bool) -> HttpResp {
    let status_line = http_line(r);
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let l = http_line(r);
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("header line");
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let mut resp = HttpResp {
        status,
        headers,
        body: Vec::new(),
    };
    if head_request || status == 100 {
        return resp;
    }
    if let Some(n) = resp.header("content-length") {
        let n: usize = n.parse().unwrap();
        resp.body = vec![0u8; n];
        r.read_exact(&mut resp.body).unwrap();
    } else if resp
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size =
                usize::from_str_radix(http_line(r).split(';').next().unwrap().trim(), 16).unwrap();
            if size == 0 {
                while !http_line(r).is_empty() {}
                break;
            }
            let mut chunk = vec![0u8; size];
            r.read_exact(&mut chunk).unwrap();
            resp.body.extend(chunk);
            assert_eq!(http_line(r), "");
        }
    } else {
        r.read_to_end(&mut resp.body).unwrap();
    }
    resp
}

/// A `--http` server of the echo example on a free loopback port, with `args` added;
/// returns once it accepts connections.
fn http_server(args: &[&str], env: &[(&str, &str)]) -> (Srv, SocketAddr) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let listen = addr.to_string();
    let mut all = vec!["--http", listen.as_str()];
    all.extend_from_slice(args);
    let srv = Srv::start(&all, env);
    assert!(
        wait_until(T, || TcpStream::connect(addr).is_ok()),
        "{}",
        srv.stderr()
    );
    (srv, addr)
}

fn http_conn(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let s = tcp_conn(addr).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

#[test]
fn http_dev_server() {
    let (mut srv, addr) = http_server(&[], &[("FCGI_RESTART_GRACE", "0.1")]);

    // GET with a query; then, on the same kept-alive connection, more requests.
    let (mut s, mut r) = http_conn(addr);
    s.write_all(b"GET /some/path?x=1&y=two HTTP/1.1\r\nHost: localhost\r\nX-Custom: yes\r\n\r\n")
        .unwrap();
    let g = http_read(&mut r, false);
    assert_eq!(g.status, 200);
    let v = g.json();
    assert_eq!(v["mode"], "http");
    // The date, as any web server adds it (RFC 9110 6.6.1).
    let date = g.header("date").unwrap_or_default();
    assert!(date.len() == 29 && date.ends_with(" GMT"), "{date:?}");
    assert_eq!(v["uri"], "/some/path?x=1&y=two");
    assert_eq!(v["path_info"], "/some/path");
    assert_eq!(v["query"], "x=1&y=two");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["headers"]["x-custom"], "yes");
    assert_eq!(v["remote_addr"], "127.0.0.1");
    let pid = pid_in(&v);
    assert_eq!(pid, srv.pid());

    // An encoded slash stays one in the app's URI (as under hyper); the decoded path
    // has it as a `/`, as CGI's PATH_INFO does.
    s.write_all(b"GET /files/a%2Fb?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let v = http_read(&mut r, false).json();
    assert_eq!(v["uri"], "/files/a%2Fb?x=1");
    assert_eq!(v["path_info"], "/files/a/b");

    // POST with Content-Length, same connection (keep-alive).
    let body = noise(200_000, 3);
    s.write_all(
        format!(
            "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let p = http_read(&mut r, false);
    assert_eq!(p.status, 200);
    let v = p.json();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["body_len"], body.len());
    assert_eq!(v["body_sha256"], sha256_hex(&body));
    assert_eq!(v["served"], 3, "the third request on one connection: {v}");

    // POST chunked, one size line with an extension after a space (RFC 9112 7.1.1).
    s.write_all(b"POST /chunked HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let mut sent = Vec::new();
    for (i, size) in [1usize, 4096, 70_000, 13].into_iter().enumerate() {
        let chunk = noise(size, i as u64);
        let ext = if i == 1 { " ;name=value" } else { "" };
        s.write_all(format!("{size:x}{ext}\r\n").as_bytes())
            .unwrap();
        s.write_all(&chunk).unwrap();
        s.write_all(b"\r\n").unwrap();
        sent.extend(chunk);
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let c = http_read(&mut r, false);
    assert_eq!(c.status, 200);
    let v = c.json();
    assert_eq!(v["body_len"], sent.len());
    assert_eq!(v["body_sha256"], sha256_hex(&sent));

    // HEAD: headers only; the next response on the connection is intact.
    s.write_all(b"HEAD /head HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let h = http_read(&mut r, true);
    assert_eq!(h.status, 200);
    s.write_all(b"GET /status/404 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let nf = http_read(&mut r, false);
    assert_eq!(
        nf.status, 404,
        "after HEAD, the next response parses: no stray body"
    );
    assert_eq!(nf.json()["path_info"], "/status/404");
    assert_eq!(nf.json()["served"], 6, "six requests on one connection");
    drop((s, r));

    // Expect: 100-continue.
    let (mut s, mut r) = http_conn(addr);
    let body = noise(5000, 11);
    s.write_all(
        format!(
            "PUT /expect HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let cont = http_read(&mut r, false);
    assert_eq!(cont.status, 100, "100 Continue before the body is sent");
    s.write_all(&body).unwrap();
    let e = http_read(&mut r, false);
    assert_eq!(e.status, 200);
    assert_eq!(e.json()["body_sha256"], sha256_hex(&body));
    assert_eq!(e.json()["method"], "PUT");
    drop((s, r));

    // A malformed request line: 400, then the connection closes.
    let (mut s, mut r) = http_conn(addr);
    s.write_all(b"THIS IS NOT HTTP AT ALL\r\n\r\n").unwrap();
    let bad = http_read(&mut r, false);
    assert_eq!(bad.status, 400);
    let mut rest = Vec::new();
    let n = r.read_to_end(&mut rest);
    assert!(
        matches!(n, Ok(0)) || matches!(&n, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
        "closed after the 400: {n:?} {rest:?}"
    );
    assert!(srv.alive());
    // Connection: close is honoured too.
    let (mut s, mut r) = http_conn(addr);
    s.write_all(b"GET /bye HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(http_read(&mut r, false).status, 200);
    let mut rest = Vec::new();
    assert_eq!(r.read_to_end(&mut rest).unwrap(), 0);
    drop(s);
    srv.stop_expecting_0();
}

// ---- the command line ----

#[test]
fn unknown_option_exits_2_naming_it_and_help_exits_0() {
    let (st, out, err) = run_to_end(echo_cmd(&["--frobnicate", "7"], &[]), T);
    assert_eq!(st.code(), Some(2), "{out}{err}");
    assert!(err.contains("--frobnicate"), "{err}");

    let (st, out, err) = run_to_end(echo_cmd(&["--help"], &[]), T);
    assert_eq!(st.code(), Some(0), "{err}");
    for opt in [
        "--socket",
        "--listen",
        "--protocol",
        "--http",
        "--threads",
        "--processes",
        "--max-requests",
        "--pidfile",
        "--daemonize",
        "--outlog",
        "--errlog",
        "--workdir",
        "--umask",
        "FCGI_SOCKET",
        "FCGI_LISTEN",
        "FCGI_THREADS",
        "FCGI_PROCESSES",
        "FCGI_MAX_REQUESTS",
        "FCGI_PIDFILE",
    ] {
        assert!(out.contains(opt), "--help mentions {opt}: {out}");
    }
}

/// Two kinds of listener on one command line (`--socket` and `--listen`, in any
/// spelling) are refused with status 2 naming both, as `socket=` with `host=`/`port=`
/// is: only one could be served.
#[test]
fn two_listeners_on_the_command_line_exit_2_naming_both() {
    let dir = TempDir::new("sa-two-listeners");
    let sock = dir.join("app.sock");
    let port = free_port().to_string();
    for (args, first, second) in [
        (
            vec!["--socket", sock.to_str().unwrap(), "--listen", &port],
            "--socket",
            "--listen",
        ),
        (
            vec!["--listen", &port, "--socket", sock.to_str().unwrap()],
            "--listen",
            "--socket",
        ),
    ] {
        let (st, out, err) = run_to_end(echo_cmd(&args, &[]), T);
        assert_eq!(st.code(), Some(2), "{args:?}: {out}{err}");
        assert!(
            err.contains(&format!("{first} with {second}")),
            "{args:?}: {err}"
        );
        assert!(!sock.exists(), "{args:?}: nothing served");
    }
}

/// `--listen HOST:0` takes a port the system picks, and the log says which.
#[test]
fn listen_on_port_0_logs_the_port_it_got() {
    let mut srv = Srv::start(&["--listen", "127.0.0.1:0"], &[("FCGI_RESTART_GRACE", "0")]);
    assert!(
        srv.logs_within(T, "listening on 127.0.0.1:"),
        "{}",
        srv.stderr()
    );
    let line = log_line(&srv.stderr(), "listening on 127.0.0.1:");
    let port: u16 = line
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert_ne!(port, 0, "{line}");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_tcp_serving(&mut srv, addr);
    assert_eq!(pid_in(&tcp_get(addr, "/zero", "").unwrap()), srv.pid());
}

/// A listener address that is not one is refused as the options are read, naming the
/// option or variable it came from: on the command line exit 2 with the hint, as any
/// bad option. It used to be found only when the server started: exit 1 with the
/// app's `Error:` line, and `--http`/`FCGI_HTTP` were reported as `--listen`.
#[test]
fn a_bad_listener_address_is_a_bad_option_named_as_given() {
    for (args, said) in [
        (&["--listen", "garbage"][..], "invalid --listen=\"garbage\""),
        (&["--http", "garbage"][..], "invalid --http=\"garbage\""),
        (
            &["--listen", "localhost:x"][..],
            "invalid --listen=\"localhost:x\"",
        ),
        (&["port=garbage"][..], "invalid port=\"garbage\""),
    ] {
        let (st, out, err) = run_to_end(echo_cmd(args, &[]), T);
        assert_eq!(st.code(), Some(2), "{args:?}: {out}{err}");
        assert!(err.contains(said), "{args:?}: {err}");
        assert!(err.contains("Try `echo --help`"), "{args:?}: {err}");
        assert!(!err.contains("Error:"), "{args:?}: {err}");
    }
    for (var, said) in [
        ("FCGI_HTTP", "invalid FCGI_HTTP=\"garbage\""),
        ("FCGI_LISTEN", "invalid FCGI_LISTEN=\"garbage\""),
    ] {
        let (st, out, err) = run_to_end(echo_cmd(&[], &[(var, "garbage")]), T);
        assert_eq!(st.code(), Some(1), "{var}: {out}{err}");
        assert!(err.contains(said), "{var}: {err}");
        assert!(!err.contains("--listen"), "{var}: {err}");
    }
}

/// --max-requests with a socket of our own and one process: the exit is the process's
/// own and no new server comes to take the socket over, so it is not held open for the
/// restart window (2 s) while nobody accepts (connections made then were reset at the
/// close).
#[test]
fn max_requests_exit_does_not_hold_the_socket_for_a_restart() {
    let dir = TempDir::new("sa-maxreq");
    let sock = dir.join("app.sock");
    let mut srv = Srv::start(
        &["--socket", sock.to_str().unwrap(), "--max-requests", "2"],
        &[],
    );
    assert!(
        wait_until(T, || UnixStream::connect(&sock).is_ok()),
        "{}",
        srv.stderr()
    );
    unix_get(&sock, "/one", "").unwrap();
    unix_get(&sock, "/two", "").unwrap();
    let t0 = Instant::now();
    let st = srv.wait_exit(T).expect("exits after --max-requests 2");
    assert_eq!(st.code(), Some(0), "{}", srv.stderr());
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "the exit took {:?}",
        t0.elapsed()
    );
    assert!(!sock.exists());
    // Said at the start, where someone who meant worker recycling reads it.
    assert!(
        srv.stderr().contains(
            "max-requests 2 without worker processes: this server exits after 2 requests \
             and nothing here restarts it"
        ),
        "{}",
        srv.stderr()
    );
}

#[test]
fn runfcgi_spellings_work_end_to_end() {
    let dir = TempDir::new("sa-flup");
    let sock = dir.join("flup.sock");
    let mut srv = Srv::start(
        &[
            &format!("socket={}", sock.display()),
            "method=threaded",
            "maxrequests=2",
            "daemonize=false",
        ],
        &[],
    );
    assert!(
        wait_until(T, || UnixStream::connect(&sock).is_ok()),
        "{}",
        srv.stderr()
    );
    let v1 = unix_get(&sock, "/one", "").unwrap();
    assert_eq!(pid_in(&v1), srv.pid(), "not daemonized: our child serves");
    let v2 = unix_get(&sock, "/two", "").unwrap();
    assert_eq!(v2["served"], 2);
    let st = srv.wait_exit(T).expect("exits after maxrequests=2");
    assert_eq!(st.code(), Some(0), "{}", srv.stderr());
    assert!(!sock.exists());

    // The debugging command of Django's guide, as it is (runfcgi's defaults: prefork,
    // in the background): the launcher returns once the site serves, a fresh worker
    // answers each request, and the site stays up. (Before: threads in the
    // foreground, and the whole server exited after the first request.)
    let pidf = dir.join("flup.pid");
    let cmd = echo_cmd(
        &[
            &format!("socket={}", sock.display()),
            &format!("pidfile={}", pidf.display()),
            "maxrequests=1",
        ],
        &[("FCGI_RESTART_GRACE", "0.1")],
    );
    let (st, _, err) = run_to_end(cmd, T);
    assert_eq!(st.code(), Some(0), "launcher: {err}");
    let pid = read_pid(&pidf).expect("pidfile");
    let _guard = Stray(pid as i32);
    let mut workers = BTreeSet::new();
    for i in 0..6 {
        let v = unix_get(&sock, "/debug", "").unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(v["served"], 1, "each worker serves one request");
        workers.insert(pid_in(&v));
    }
    assert_eq!(workers.len(), 6, "{workers:?}");
    assert!(!workers.contains(&pid), "workers answer, not the parent");
    // SAFETY: the daemon this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert!(wait_until(T, || !proc_alive(pid as i32)), "still running");
    assert!(!sock.exists() && !pidf.exists());
}

#[test]
fn under_cgi_the_command_line_is_ignored() {
    for words in [&["foo"][..], &["foo", "--bogus"][..], &["--socket"][..]] {
        let mut cmd = Command::new(example("echo"));
        cmd.args(words)
            .env_clear()
            .envs([
                ("GATEWAY_INTERFACE", "CGI/1.1"),
                ("REQUEST_METHOD", "GET"),
                ("SCRIPT_NAME", "/cgi/mysite.fcgi"),
                ("PATH_INFO", "/search"),
                ("QUERY_STRING", "foo"),
                ("REQUEST_URI", "/cgi/mysite.fcgi/search?foo"),
                ("SERVER_NAME", "localhost"),
                ("SERVER_PORT", "80"),
                ("SERVER_PROTOCOL", "HTTP/1.1"),
                ("REMOTE_ADDR", "127.0.0.1"),
            ])
            .stdin(Stdio::null());
        let (st, out, err) = run_to_end(cmd, T);
        assert_eq!(st.code(), Some(0), "{words:?}: {err}");
        let (head, body) = cgi_split(out.as_bytes());
        assert!(head.starts_with("Status: 200"), "{words:?}: {head}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["mode"], "cgi");
        assert_eq!(v["path_info"], "/search");
        assert_eq!(v["query"], "foo");
    }
}

/// A client connection to the test's `--http` port (`tcp`) or its SCGI Unix socket.
fn connect_to(tcp: bool, port: u16, sock: &Path) -> Option<Box<dyn Write + Send>> {
    if tcp {
        TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|s| Box::new(s) as _)
    } else {
        UnixStream::connect(sock).ok().map(|s| Box::new(s) as _)
    }
}

/// A peer that connects to an SCGI or HTTP port and sends nothing at all, with the
/// default timeouts (60 s read): SIGTERM still ends the process within the head's 1 s
/// grace (the wait for the first byte used to take the whole read timeout and miss
/// the stop).
#[test]
fn a_silent_connection_does_not_hold_the_exit() {
    let dir = TempDir::new("sa-silent");
    let sock = dir.join("scgi.sock");
    let port = free_port();
    let http = format!("127.0.0.1:{port}");
    let scgi_args = ["--socket", sock.to_str().unwrap(), "--protocol", "scgi"];
    let http_args = ["--http", http.as_str()];
    for (args, tcp) in [(&scgi_args[..], false), (&http_args[..], true)] {
        let mut srv = Srv::start(args, &[("FCGI_RESTART_GRACE", "0")]);
        let connect = || connect_to(tcp, port, &sock);
        assert!(wait_until(T, || connect().is_some()), "{}", srv.stderr());
        let silent = connect().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        srv.signal(libc::SIGTERM);
        assert!(srv.wait_exit(T).is_some(), "{args:?}: {}", srv.stderr());
        assert!(
            t0.elapsed() < Duration::from_millis(2500),
            "{args:?}: the exit took {:?}",
            t0.elapsed()
        );
        drop(silent);
    }
}

/// SCGI and the HTTP server read a request head under the same rule as FastCGI: it
/// must arrive whole within the read timeout (a peer trickling a byte every 300 ms is
/// cut off), and once the process is stopping a head still arriving gets 1 s, so a
/// slow peer holds neither a worker nor the exit. Both used to wait a whole read
/// timeout per byte.
#[test]
fn scgi_and_http_heads_must_arrive_in_time_and_stopping_cuts_them_short() {
    let dir = TempDir::new("sa-slowhead");
    let sock = dir.join("scgi.sock");
    let port = free_port();
    let http = format!("127.0.0.1:{port}");
    let scgi_args = ["--socket", sock.to_str().unwrap(), "--protocol", "scgi"];
    let http_args = ["--http", http.as_str()];
    let scgi_head = scgi_request("GET", "/slow", b"", &[]);
    let http_head =
        b"GET /slow HTTP/1.1\r\nHost: localhost\r\nX-Pad: 0123456789abcdef\r\n\r\n".to_vec();
    for (args, head, tcp) in [
        (&scgi_args[..], &scgi_head, false),
        (&http_args[..], &http_head, true),
    ] {
        for stop in [false, true] {
            let mut srv = Srv::start(
                args,
                &[("FCGI_READ_TIMEOUT", "2"), ("FCGI_RESTART_GRACE", "0")],
            );
            let connect = || connect_to(tcp, port, &sock);
            assert!(wait_until(T, || connect().is_some()), "{}", srv.stderr());
            let mut s = connect().unwrap();
            let bytes = head.clone();
            let t0 = Instant::now();
            let trickle = std::thread::spawn(move || {
                for b in bytes {
                    if s.write_all(&[b]).is_err() || t0.elapsed() > Duration::from_secs(12) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            });
            if stop {
                std::thread::sleep(Duration::from_millis(500));
                let t1 = Instant::now();
                srv.signal(libc::SIGTERM);
                assert!(srv.wait_exit(T).is_some(), "{args:?}: {}", srv.stderr());
                assert!(
                    t1.elapsed() < Duration::from_millis(2500),
                    "{args:?}: the exit took {:?}",
                    t1.elapsed()
                );
            } else {
                assert!(
                    srv.logs_within(
                        Duration::from_secs(6),
                        "timed out waiting for the request head"
                    ),
                    "{args:?}: {}",
                    srv.stderr()
                );
                if tcp {
                    // The HTTP server answers a head that did not arrive in time 408.
                    assert!(srv.stderr().contains("answered 408"), "{}", srv.stderr());
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "{args:?}: {:?}",
                    t0.elapsed()
                );
            }
            trickle.join().unwrap();
        }
    }
}

/// The HTTP server frames only responses that have a body: HEAD, 204 and 304 end with
/// the head (the connection then serves the next request in step); a response cut by
/// a failed write is not finished as if complete, and the connection is closed.
#[test]
fn http_bodyless_responses_have_no_framing_and_a_cut_response_closes() {
    let (srv, addr) = http_server(
        &[],
        &[("FCGI_WRITE_TIMEOUT", "1"), ("FCGI_RESTART_GRACE", "0")],
    );
    let (mut s, mut r) = http_conn(addr);
    for (method, target) in [
        ("HEAD", "/stream?chunks=2&size=10"),
        ("GET", "/status/204"),
        ("GET", "/status/304"),
        ("HEAD", "/x"),
    ] {
        write!(s, "{method} {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let resp = http_read(&mut r, true);
        assert!(
            resp.header("transfer-encoding").is_none(),
            "{method} {target}: {:?}",
            resp.headers
        );
        // The next response on the connection must start right here.
        s.write_all(b"GET /next HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let next = http_read(&mut r, false);
        assert_eq!(next.status, 200, "after {method} {target}");
        assert_eq!(next.json()["path_info"], "/next");
    }
    // A client that stops reading a long stream: after the write timeout the
    // connection closes without the chunked terminator, and is not reused.
    let (mut s, mut r) = http_conn(addr);
    s.write_all(b"GET /stream?chunks=800&size=65536 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let _ = s.write_all(b"GET /after HTTP/1.1\r\nHost: localhost\r\n\r\n");
    s.set_read_timeout(Some(T)).unwrap();
    let mut all = Vec::new();
    let _ = r.read_to_end(&mut all);
    assert!(all.len() < 800 * 65536, "{} bytes", all.len());
    assert!(
        !all.ends_with(b"0\r\n\r\n"),
        "a cut response was ended as complete"
    );
    assert!(
        !String::from_utf8_lossy(&all).contains("\"path_info\":\"/after\""),
        "the connection served another request after a failed write"
    );
    assert!(
        srv.logs_within(T, "could not be sent whole"),
        "{}",
        srv.stderr()
    );
}

/// A response body that fails after its head went out: the connection closes without
/// the last chunk, so the client sees an incomplete response, not a short complete one;
/// the server serves the next connection.
#[test]
fn http_a_body_that_fails_midway_is_not_ended_as_complete() {
    let (srv, addr) = http_server(&[], &[("FCGI_RESTART_GRACE", "0")]);
    let (mut s, mut r) = http_conn(addr);
    s.write_all(
        b"GET /stream?chunks=5&size=10&fail_after=2 HTTP/1.1\r\nHost: localhost\r\n\r\n\
          GET /after HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut all = Vec::new();
    let _ = r.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("Transfer-Encoding: chunked\r\n"),
        "{text:?}"
    );
    assert!(
        text.ends_with("\r\n\r\na\r\naaaaaaaaaa\r\na\r\nbbbbbbbbbb\r\n"),
        "the two chunks written before the failure, and no last chunk: {text:?}"
    );
    assert!(srv.logs_within(T, "cut short"), "{}", srv.stderr());
    let (mut s, mut r) = http_conn(addr);
    s.write_all(b"GET /next HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let next = http_read(&mut r, false);
    assert_eq!(next.status, 200);
    assert_eq!(next.json()["path_info"], "/next");
}

/// A browser keeps idle connections open; each holds one of the HTTP server's worker
/// threads, so idle ones are closed after 5 s and a new client is served then instead
/// of waiting for a browser to let go.
#[test]
fn http_idle_keep_alive_connections_give_way() {
    let (_srv, addr) = http_server(&["--threads", "2"], &[("FCGI_RESTART_GRACE", "0")]);
    let mut idle = Vec::new();
    for _ in 0..2 {
        let (mut s, mut r) = http_conn(addr);
        s.write_all(b"GET /a HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        assert_eq!(http_read(&mut r, false).status, 200);
        idle.push((s, r));
    }
    let t0 = Instant::now();
    let (mut s, mut r) = http_conn(addr);
    s.write_all(b"GET /new HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    assert_eq!(http_read(&mut r, false).status, 200);
    assert!(
        t0.elapsed() < Duration::from_secs(7),
        "waited {:?}",
        t0.elapsed()
    );
    drop(idle);
}

/// Workers that exit cleanly (max-requests) are replaced at once: not throttled as a
/// crash loop (500 ms per fork: 40 requests took about 16 s that way), and not at the
/// parent's next 100-ms look either (SIGCHLD wakes it): 100 requests took 4.9 s when
/// it waited for those looks, 0.09 s woken.
#[test]
fn prefork_clean_exits_are_replaced_at_once() {
    let (_dir, sock, mut srv) = prefork_with_max_requests("sa-maxreq1", 1);
    let t0 = Instant::now();
    let mut pids = BTreeSet::new();
    for i in 0..100 {
        let v = unix_get(&sock, "/n", "")
            .unwrap_or_else(|e| panic!("request {i} failed: {e}; {}", srv.stderr()));
        pids.insert(pid_in(&v));
    }
    assert_eq!(pids.len(), 100, "one request per worker");
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "100 requests took {:?}",
        t0.elapsed()
    );
    srv.stop_expecting_0();
}

/// A worker that ends itself with status 0 before serving anything (an app that exits
/// as a worker starts) is throttled as a crash loop is, not forked again as fast as it
/// exits: with SIGCHLD waking the parent and clean exits replaced at once, that came to
/// about 37,000 forks in 6 s and 80 % of a core for the parent; before SIGCHLD, its
/// 100-ms looks made it 20 forks a second. Throttled: the first 4 × N at once, then
/// about 2 a second per worker.
#[test]
fn prefork_workers_exiting_without_serving_are_throttled() {
    let dir = TempDir::new("sa-exit0");
    let sock = dir.join("app.sock");
    let mut srv = Srv::start_example(
        "prefork_faults",
        &["--socket", sock.to_str().unwrap(), "--processes", "2"],
        &[("PREFORK_FAULTS_EXIT0", "1"), ("FCGI_RESTART_GRACE", "0.1")],
    );
    assert!(
        srv.logs_within(T, "2 worker processes started"),
        "{}",
        srv.stderr()
    );
    std::thread::sleep(Duration::from_secs(3));
    let log = srv.stderr();
    let forks = log.matches("exited (0); replacing it").count();
    assert!((4..=30).contains(&forks), "{forks} workers in 3 s: {log}");
    srv.stop_expecting_0();
}

/// A prefork worker gets back the SIGCHLD action the app set before `run` (the parent
/// replaces it with its own to hear workers exit), and its own child processes are
/// waited for as usual; the app's code after `run` returns has its action back too.
#[test]
fn prefork_workers_keep_the_apps_sigchld_and_wait_for_their_children() {
    for (own, expected) in [(true, "own"), (false, "default")] {
        let dir = TempDir::new("sa-sigchld");
        let sock = dir.join("app.sock");
        let env: &[(&str, &str)] = if own {
            &[
                ("PREFORK_FAULTS_SIGCHLD", "1"),
                ("FCGI_RESTART_GRACE", "0.1"),
            ]
        } else {
            &[("FCGI_RESTART_GRACE", "0.1")]
        };
        let mut srv = Srv::start_example(
            "prefork_faults",
            &["--socket", sock.to_str().unwrap(), "--processes", "2"],
            env,
        );
        assert!(
            wait_until(T, || UnixStream::connect(&sock).is_ok()),
            "{}",
            srv.stderr()
        );
        let text = |path: &str| {
            let mut s = unix_conn(&sock).unwrap();
            s.write_all(&request(1, false, &get(path, ""), b""))
                .unwrap();
            let r = read_reply(&mut s, 1, T);
            String::from_utf8_lossy(&r.head_and_body().1).into_owned()
        };
        let t = text("/");
        assert!(t.ends_with(&format!(" sigchld={expected}")), "{own}: {t}");
        assert!(
            !t.contains(&format!("pid={} ", srv.pid())),
            "{own}: served by a worker"
        );
        let t = text("/cmd");
        assert!(t.ends_with(" status=Ok(Some(3))"), "{own}: {t}");
        srv.stop_expecting_0();
        let after = format!("after run: sigchld={expected}\n");
        assert!(srv.stderr().ends_with(&after), "{own}: {}", srv.stderr());
    }
}

/// A prefork server killed with SIGKILL takes its workers with it (they would serve on
/// as orphans and keep a new server off the socket).
#[test]
fn prefork_workers_do_not_outlive_their_parent() {
    let dir = TempDir::new("sa-orphans");
    let sock = dir.join("app.sock");
    let mut srv = Srv::start(
        &["--socket", sock.to_str().unwrap(), "--processes", "2"],
        &[("FCGI_RESTART_GRACE", "0.1")],
    );
    assert!(
        wait_until(T, || children_of(srv.pid()).len() == 2),
        "{}",
        srv.stderr()
    );
    let workers = children_of(srv.pid());
    srv.signal(libc::SIGKILL);
    srv.wait_exit(T);
    assert!(
        wait_until(T, || workers.iter().all(|&w| !proc_alive(w as i32))),
        "workers {workers:?} outlived the parent"
    );
    // A new server takes the (now stale) socket.
    let mut again = Srv::start(&["--socket", sock.to_str().unwrap()], &[]);
    wait_unix_serving(&mut again, &sock);
    again.stop_expecting_0();
}

/// Restarting a prefork server: its workers answer the new server's probe as draining
/// (it is the parent that got SIGTERM), so the new one takes over at once, also with
/// a restart grace longer than the 3 s a live server is waited for.
#[test]
fn prefork_restart_is_taken_over_at_once() {
    let dir = TempDir::new("sa-prerestart");
    let sock = dir.join("app.sock");
    let args = ["--socket", sock.to_str().unwrap(), "--processes", "2"];
    let mut a = Srv::start(&args, &[("FCGI_RESTART_GRACE", "5")]);
    wait_unix_serving(&mut a, &sock);
    a.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    let mut b = Srv::start(&args, &[("FCGI_RESTART_GRACE", "5")]);
    assert!(
        wait_until(T, || unix_get(&sock, "/b", "")
            .is_ok_and(|v| children_of(b.pid()).contains(&pid_in(&v)))),
        "A: {}\nB: {}",
        a.stderr(),
        b.stderr()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "the takeover took {:?}",
        t0.elapsed()
    );
    assert!(b.alive(), "{}", b.stderr());
    old_exited_then_stop_new(&mut a, &mut b);
}

/// A restart started twice at once (a restart script run twice, or by two people):
/// both new servers find the old one draining. One of them serves on the path and the
/// other is refused, never both running with one listening on a socket file the other
/// replaced (unreachable, serving nothing, saying nothing). Eight such restarts at once,
/// each on a path of its own.
#[test]
fn a_restart_started_twice_at_once_leaves_one_server() {
    let env = [("FCGI_RESTART_GRACE", "1")];
    let dirs: Vec<TempDir> = (0..8).map(|_| TempDir::new("race")).collect();
    let sock = |i: usize| dirs[i].join("app.sock");
    let mut old: Vec<Srv> = (0..8)
        .map(|i| Srv::start(&["--socket", sock(i).to_str().unwrap()], &env))
        .collect();
    for (i, o) in old.iter().enumerate() {
        assert!(
            wait_until(T, || UnixStream::connect(sock(i)).is_ok()),
            "{}",
            o.stderr()
        );
    }
    let pairs: Vec<(Srv, Srv)> = (0..8)
        .map(|i| {
            old[i].signal(libc::SIGTERM);
            let p = sock(i);
            let p = p.to_str().unwrap();
            (
                Srv::start(&["--socket", p], &env),
                Srv::start(&["--socket", p], &env),
            )
        })
        .collect();
    let mut live = Vec::new();
    for (i, (mut a, mut b)) in pairs.into_iter().enumerate() {
        // The one that came second waits up to 3 s for the first to say it drains.
        let settled = wait_until(Duration::from_secs(15), || !a.alive() || !b.alive());
        let (l, mut refused) = if a.alive() { (a, b) } else { (b, a) };
        assert!(
            settled,
            "restart {i}: both new servers run\n--- one:\n{}\n--- other:\n{}",
            l.stderr(),
            refused.stderr()
        );
        let st = refused.wait_exit(T).unwrap();
        assert!(!st.success(), "{}", refused.stderr());
        assert!(
            refused.stderr().contains("in use by a running server"),
            "{}",
            refused.stderr()
        );
        live.push(l);
    }
    for (i, l) in live.iter_mut().enumerate() {
        assert!(l.alive(), "restart {i}: neither runs: {}", l.stderr());
        // The one that runs is the one the path reaches.
        let mut s = UnixStream::connect(sock(i)).unwrap();
        s.write_all(&request(1, false, &get("/pid", ""), b""))
            .unwrap();
        let r = read_reply(&mut s, 1, T);
        assert_eq!(r.json()["pid"].as_u64(), Some(u64::from(l.pid())));
        l.signal(libc::SIGTERM);
    }
    for (l, o) in live.iter_mut().zip(old.iter_mut()) {
        assert_eq!(l.wait_exit(T).and_then(|s| s.code()), Some(0));
        assert_eq!(o.wait_exit(T).and_then(|s| s.code()), Some(0));
    }
}

/// FCGI_WEB_SERVER_ADDRS without this machine's address (the web server is elsewhere):
/// a local peer still gets the restart probe answered, and nothing else. So a second
/// server started on the port is refused as beside any live server (without the
/// answer it took the server for something else and shared the port with it), a
/// restart still takes over, and a request from here is refused with a log line.
#[test]
fn web_server_addrs_still_answer_the_restart_probe_from_this_machine() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let addr: SocketAddr = listen.parse().unwrap();
    let env = [
        ("FCGI_WEB_SERVER_ADDRS", "10.0.0.1"),
        ("FCGI_RESTART_GRACE", "1"),
    ];
    let mut a = Srv::start(&["--listen", &listen], &env);
    assert!(
        wait_until(T, || TcpStream::connect(addr).is_ok()),
        "{}",
        a.stderr()
    );
    // The probe's question, answered.
    let mut s = tcp_conn(addr).unwrap();
    let mut q = Vec::new();
    pair(&mut q, b"FCGI_MAX_CONNS", b"");
    s.write_all(&rec(GET_VALUES, 0, &q)).unwrap();
    let mut want = Vec::new();
    pair(&mut want, b"FCGI_MAX_CONNS", b"8");
    let want = rec(GET_VALUES_RESULT, 0, &want);
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).expect("GET_VALUES answered");
    assert_eq!(got, want);
    // A request is not.
    let (client_port, got) = tcp_exchange_raw(addr);
    assert!(got.is_empty(), "answered {got:?}");
    let peer = format!("refused a request from 127.0.0.1:{client_port}");
    assert!(a.logs_within(T, &peer), "{}", a.stderr());
    // A refusal, not a complaint about the input (which was well-formed).
    let line = log_line(&a.stderr(), &peer);
    assert!(!line.contains("malformed"), "{line}");
    // A second server is refused.
    let (st, _, err) = run_to_end(
        echo_cmd(&["--listen", &listen], &env),
        Duration::from_secs(15),
    );
    assert!(!st.success(), "started beside a live server: {err}");
    assert!(err.contains("in use by a running server"), "{err}");
    assert!(a.alive(), "{}", a.stderr());
    // A restart takes over.
    a.signal(libc::SIGTERM);
    let mut b = Srv::start(&["--listen", &listen], &env);
    assert!(
        b.logs_within(T, "listening on"),
        "the restart did not take over: {}",
        b.stderr()
    );
    old_exited_then_stop_new(&mut a, &mut b);
}

/// A second server on the port of a live `--http` server is refused, as on a FastCGI
/// port (the HTTP server answers the FastCGI probe too; both set SO_REUSEPORT, so the
/// bind alone would succeed and the two would share the port); a restart still takes
/// the port over.
#[test]
fn a_live_http_server_keeps_its_port() {
    let port = free_port();
    let http = format!("127.0.0.1:{port}");
    let addr: SocketAddr = http.parse().unwrap();
    let mut a = Srv::start(&["--http", &http], &[("FCGI_RESTART_GRACE", "1")]);
    assert!(
        wait_until(T, || TcpStream::connect(addr).is_ok()),
        "{}",
        a.stderr()
    );
    for args in [["--http", http.as_str()], ["--listen", http.as_str()]] {
        let (st, _, err) = run_to_end(echo_cmd(&args, &[]), Duration::from_secs(15));
        assert!(!st.success(), "{args:?} started beside a live server");
        assert!(
            err.contains("in use by a running server"),
            "{args:?}: {err}"
        );
    }
    assert!(a.alive());
    // A restart: the stopping server says it is draining, the new one takes over.
    a.signal(libc::SIGTERM);
    let mut b = Srv::start(&["--http", &http], &[]);
    let served_by = |pid: u32| {
        let Ok(mut s) = TcpStream::connect(addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(T));
        let mut got = Vec::new();
        s.write_all(b"GET /pid HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .is_ok()
            && s.read_to_end(&mut got).is_ok()
            && String::from_utf8_lossy(&got).contains(&format!("\"pid\":{pid}"))
    };
    assert!(
        wait_until(T, || served_by(b.pid())),
        "A: {}\nB: {}",
        a.stderr(),
        b.stderr()
    );
    old_exited_then_stop_new(&mut a, &mut b);
}

/// `Expect: 100-continue` is answered when the app first reads the body, as Go's
/// net/http does: a request refused before the app runs (413, over `FCGI_MAX_BODY`)
/// or an app that answers without reading the body (`/stream`) spares the client its
/// upload, and the connection closes after the answer, which says so. Before, `100
/// Continue` went out before the app ran, the client sent its body, and the server
/// dropped a MiB of it and closed without having said it would.
#[test]
fn http_expect_continue_is_answered_when_the_body_is_read() {
    let (mut srv, addr) = http_server(
        &[],
        &[("FCGI_MAX_BODY", "100000"), ("FCGI_RESTART_GRACE", "0")],
    );
    for (target, length, status) in [
        ("/x", 50_000_000, 413),
        ("/stream?chunks=1&size=3", 50_000, 200),
    ] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "PUT {target} HTTP/1.1\r\nHost: h\r\nContent-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
        )
        .unwrap();
        let t0 = Instant::now();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{target}: {text}"
        );
        assert!(
            text.contains("\r\nConnection: close\r\n"),
            "{target}: {text}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "{target}: {:?}",
            t0.elapsed()
        );
    }
    // Read by the app: 100 Continue, then the answer, on a connection kept alive.
    let (mut s, mut r) = http_conn(addr);
    s.write_all(b"PUT /e HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    assert_eq!(http_read(&mut r, false).status, 100);
    s.write_all(b"hello").unwrap();
    let e = http_read(&mut r, false);
    assert_eq!((e.status, e.json()["body_len"].as_u64()), (200, Some(5)));
    s.write_all(b"GET /again HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    assert_eq!(http_read(&mut r, false).status, 200);
    drop((s, r));
    // An app that makes its head before it reads the body (a streaming echo): the
    // head has not left yet when it reads, so `100 Continue` still goes out first.
    let (mut s, mut r) = http_conn(addr);
    r.get_ref()
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    s.write_all(
        b"PUT /echo-body HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    assert_eq!(http_read(&mut r, false).status, 100, "no 100 within 1 s");
    s.write_all(b"hello").unwrap();
    let e = http_read(&mut r, false);
    assert_eq!((e.status, e.body.as_slice()), (200, &b"hello"[..]));
    drop((s, r));
    assert!(srv.alive(), "{}", srv.stderr());
}

/// The HTTP server's request rules from RFC 9110/9112 that clients and proxies rely
/// on: absolute-form targets and leading blank lines accepted; HTTP/1.1 without Host,
/// two different Content-Lengths, and a Transfer-Encoding not ending in chunked are
/// 400; Transfer-Encoding with Content-Length reads chunked, then closes; a header
/// name with an underscore is dropped (it would pose as a dash in CGI); an HTTP/1.0
/// client gets no 100 Continue and is told when its connection is kept.
#[test]
fn http_request_rules() {
    let (mut srv, addr) = http_server(&[], &[("FCGI_RESTART_GRACE", "0")]);
    let exchange = |req: &[u8]| -> Vec<u8> {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(req).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    let r = text(&exchange(
        b"\r\nGET http://example.com/abs/path?x=1 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    ));
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("\"path_info\":\"/abs/path\""), "{r}");
    assert!(r.contains("\"script_name\":\"\""), "{r}");

    for bad in [
        &b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        // Leniencies a proxy in front may not share (request smuggling): a coding
        // named like chunked, control characters in a value or the target.
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\x1b[31m\r\n\r\n",
        b"GET /\x1b[2J HTTP/1.1\r\nHost: h\r\n\r\n",
        // RFC 9112 3.2: one Host line, and a valid one.
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a/b@c\r\n\r\n",
        // A CR or form feed at the edge of a value is not whitespace to trim.
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\x0c\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        // chunked twice, on two lines.
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ] {
        let r = text(&exchange(bad));
        assert!(r.starts_with("HTTP/1.1 400"), "{:?}: {r}", text(bad));
    }
    // A refused HEAD gets the head alone (RFC 9110 9.3.2: no content in a response to
    // HEAD); the error's text used to follow it.
    let r = text(&exchange(b"HEAD /../x HTTP/1.1\r\nHost: h\r\n\r\n"));
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(r.ends_with("\r\n\r\n"), "{r:?}");
    // Spaces and tabs around a value are trimmed; an IPv6 Host and an empty one pass.
    for good in [
        &b"GET / HTTP/1.1\r\nHost: \t h:8080 \r\nConnection: close\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: [::1]:8000\r\nConnection: close\r\n\r\n",
        b"GET http://example.com/ HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
    ] {
        let r = text(&exchange(good));
        assert!(r.starts_with("HTTP/1.1 200"), "{:?}: {r}", text(good));
    }
    // A coding we do not decode before chunked: 501, as RFC 9112 6.1 says.
    let r = text(&exchange(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    ));
    assert!(r.starts_with("HTTP/1.1 501"), "{r}");
    // A chunk size with a sign or spaces is not a chunk size; the pipelined request
    // behind it is not served.
    for size in [&b"+5"[..], b" 5 "] {
        let mut req =
            b"POST /echo-body HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(size);
        req.extend_from_slice(b"\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n");
        let r = text(&exchange(&req));
        assert!(
            !r.contains("hello") && !r.contains("/smuggled"),
            "{size:?}: {r}"
        );
    }
    // Trailers are bounded: 65 trailer lines end the request (no answer as whole).
    let mut req = b"POST /echo-body HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n".to_vec();
    for i in 0..65 {
        req.extend_from_slice(format!("X-T{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = text(&exchange(&req));
    assert!(!r.contains("/after") && !r.ends_with("0\r\n\r\n"), "{r}");
    // HTTP/1.0 with Transfer-Encoding: the connection ends with the message, whatever
    // Connection says (RFC 9112 6.1), so nothing pipelined behind it is served.
    let r = text(&exchange(
        b"POST /echo-body HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
    ));
    assert!(r.contains("hello") && !r.contains("/smuggled"), "{r}");

    let r = exchange(
        b"POST /echo-body HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /second HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    let r = text(&r);
    assert!(r.starts_with("HTTP/1.1 200") && r.contains("hello"), "{r}");
    assert!(r.contains("Connection: close"), "{r}");
    assert!(!r.contains("/second"), "{r}");

    // A field sent on several lines reaches the app as one value (RFC 9110 5.3),
    // cookies joined with "; " (RFC 6265 5.4), as Apache and nginx pass them on.
    let r = text(&exchange(
        b"GET /h HTTP/1.1\r\nHost: h\r\nCookie: session=abc\r\nAccept: text/html\r\nCookie: theme=dark\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
    ));
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("\"cookie\":\"session=abc; theme=dark\""), "{r}");
    assert!(
        r.contains("\"accept\":\"text/html, application/json\""),
        "{r}"
    );
    // Dot segments are resolved before the app sees the path (`%2e%2e` too), and a
    // path above the root or a fragment is refused, as Apache and nginx do.
    for (target, path) in [
        ("/static/../secret", "/secret"),
        ("/a/%2e%2e/b", "/b"),
        ("/a/./b//c/", "/a/b/c/"),
        ("/a/..", "/"),
    ] {
        let r = text(&exchange(
            format!("GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").as_bytes(),
        ));
        assert!(r.starts_with("HTTP/1.1 200"), "{target}: {r}");
        assert!(
            r.contains(&format!("\"path_info\":\"{path}\"")),
            "{target}: {r}"
        );
    }
    for target in ["/../etc/passwd", "/a/%2E%2E/%2e%2e/x", "/x#frag"] {
        let r = text(&exchange(
            format!("GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").as_bytes(),
        ));
        assert!(r.starts_with("HTTP/1.1 400"), "{target}: {r}");
    }
    // A 205 is framed as empty, whatever the app wrote.
    let r = text(&exchange(
        b"GET /status/205 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    ));
    assert!(r.starts_with("HTTP/1.1 205"), "{r}");
    assert!(
        r.contains("Content-Length: 0\r\n") && r.ends_with("\r\n\r\n"),
        "{r}"
    );

    let r = text(&exchange(
        b"GET /h HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 6.6.6.6\r\nConnection: close\r\n\r\n",
    ));
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(!r.contains("6.6.6.6"), "{r}");

    let r = text(&exchange(
        b"GET /k HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n\r\n",
    ));
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(!r.contains("100 Continue"), "{r}");
    assert!(r.contains("Connection: keep-alive"), "{r}");
    srv.stop_expecting_0();
}

/// After a takeover: the old server `a` has exited 0; the new one, `b`, then stops
/// with 0 on SIGTERM.
fn old_exited_then_stop_new(a: &mut Srv, b: &mut Srv) {
    assert_eq!(
        a.wait_exit(T).and_then(|s| s.code()),
        Some(0),
        "{}",
        a.stderr()
    );
    b.stop_expecting_0();
}

/// `--threads 1` behind a web server that keeps connections alive (nginx's
/// `keepalive`, Apache's `enablereuse=on`): the one idle kept-alive connection gives
/// the thread up to a new one, and is served again after. Before, the new connection
/// waited for good.
#[test]
fn one_thread_standalone_gives_an_idle_kept_alive_connection_up() {
    let dir = TempDir::new("sa-one-thread-park");
    let sock = dir.join("app.sock");
    let mut srv = Srv::start(
        &["--socket", sock.to_str().unwrap(), "--threads", "1"],
        &[("FCGI_RESTART_GRACE", "0.1")],
    );
    wait_unix_serving(&mut srv, &sock);
    let mut kept = unix_conn(&sock).unwrap();
    kept.write_all(&request(1, true, &get("/kept", ""), b""))
        .unwrap();
    assert_eq!(fcgi_read(&mut kept, 1).unwrap().end, Some((0, 0)));
    let t0 = Instant::now();
    let v = unix_get(&sock, "/new", "").unwrap_or_else(|e| panic!("{e}; {}", srv.stderr()));
    assert_eq!(v["uri"], "/new");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    kept.write_all(&request(2, true, &get("/kept-again", ""), b""))
        .unwrap();
    assert_eq!(fcgi_read(&mut kept, 2).unwrap().end, Some((0, 0)));
    srv.stop_expecting_0();
}

/// The web server closing an SCGI connection during a long response (its client went
/// away) is logged once, naming the request, as FastCGI's is; the server goes on.
#[test]
fn scgi_a_connection_closed_during_the_response_is_logged_with_its_request() {
    let dir = TempDir::new("sa-scgi-gone");
    let sock = dir.join("scgi.sock");
    let srv = Srv::start(
        &["--socket", sock.to_str().unwrap(), "--protocol", "scgi"],
        &[],
    );
    assert!(
        wait_until(T, || UnixStream::connect(&sock).is_ok()),
        "{}",
        srv.stderr()
    );
    let mut s = unix_conn(&sock).unwrap();
    s.write_all(&netstring_headers(&[
        ("CONTENT_LENGTH", "0"),
        ("SCGI", "1"),
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", ""),
        ("PATH_INFO", "/stream"),
        ("QUERY_STRING", "chunks=800&size=65536"),
        ("REQUEST_URI", "/stream?chunks=800&size=65536"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("HTTP_HOST", "localhost"),
    ]))
    .unwrap();
    let mut first = [0u8; 4096];
    s.set_read_timeout(Some(T)).unwrap();
    let n = s.read(&mut first).unwrap();
    assert!(first[..n].starts_with(b"Status: 200"), "{:?}", &first[..n]);
    drop(s);
    assert!(
        srv.logs_within(
            T,
            "SCGI GET /stream?chunks=800&size=65536: the web server closed the connection"
        ),
        "{}",
        srv.stderr()
    );
    // The server goes on serving.
    let resp = unix_exchange(&sock, scgi_request("GET", "/after", b"", &[]), false);
    assert!(cgi_split(&resp).0.starts_with("Status: 200"));
}
