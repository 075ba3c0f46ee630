// Test helpers: the built examples, temp dirs, a raw FastCGI client that plays the web
// server byte by byte, an app process started the way mod_fcgid starts it, process
// inspection, and a plain HTTP/1.1 client.

#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The example binary `name`, built with the same profile and features as this test
/// binary. (Cargo builds examples with the tests, but `target/<profile>/examples/<name>`
/// is only refreshed when that build is dirty: after a build with other features it is
/// a stale copy. So build once per run, exactly as configured; cargo is done when the
/// tests run, so this does not wait on its lock.)
pub fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("test exe path");
        // target/<profile>/deps/tests-<hash> -> target/<profile>
        let dir = exe.parent().and_then(Path::parent).expect("target dir");
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(p) => p,
        };
        let mut features: Vec<&str> = Vec::new();
        if cfg!(feature = "syslog") {
            features.push("syslog");
        }
        if cfg!(feature = "tower") {
            features.push("tower");
        }
        if cfg!(feature = "axum") {
            features.push("axum");
        }
        // Built with --target (target/<triple>/<profile>): build the examples for it too.
        let triple = dir
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .filter(|n| *n != "target" && n.contains("-linux-"));
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "--examples", "--profile", profile]);
        if let Some(t) = triple {
            cmd.args(["--target", t]);
        }
        let status = cmd
            .args(["--no-default-features", "--features", &features.join(",")])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --examples");
        assert!(status.success(), "cargo build --examples failed");
        dir.join("examples")
    });
    let p = dir.join(name);
    assert!(p.exists(), "{} is missing", p.display());
    p
}

static TMP_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A directory under /tmp, readable by everyone (Apache children run as www-data),
/// removed on drop.
pub struct TempDir(pub PathBuf);

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), tag)
    }

    /// A temp dir under `parent` (suEXEC runs programs only under its docroot).
    pub fn new_in(parent: &Path, tag: &str) -> TempDir {
        let n = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let p = parent.join(format!("fcgi-shim-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("create temp dir");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEMP").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

// ---- FastCGI records ----

pub const BEGIN: u8 = 1;
pub const ABORT: u8 = 2;
pub const END: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const STDERR: u8 = 7;
pub const DATA: u8 = 8;
pub const GET_VALUES: u8 = 9;
pub const GET_VALUES_RESULT: u8 = 10;
pub const UNKNOWN_TYPE: u8 = 11;

pub const RESPONDER: u16 = 1;
pub const AUTHORIZER: u16 = 2;
pub const FILTER: u16 = 3;

/// One record with the given padding.
pub fn rec_pad(t: u8, id: u16, content: &[u8], pad: u8) -> Vec<u8> {
    assert!(content.len() <= 65535);
    let mut v = vec![
        1,
        t,
        (id >> 8) as u8,
        id as u8,
        (content.len() >> 8) as u8,
        content.len() as u8,
        pad,
        0,
    ];
    v.extend_from_slice(content);
    v.extend(std::iter::repeat_n(0u8, pad as usize));
    v
}

/// One record padded to a multiple of 8, as web servers send them.
pub fn rec(t: u8, id: u16, content: &[u8]) -> Vec<u8> {
    rec_pad(t, id, content, ((8 - content.len() % 8) % 8) as u8)
}

pub fn begin(id: u16, role: u16, keep_conn: bool) -> Vec<u8> {
    rec(
        BEGIN,
        id,
        &[
            (role >> 8) as u8,
            role as u8,
            keep_conn as u8,
            0,
            0,
            0,
            0,
            0,
        ],
    )
}

pub fn pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    for len in [name.len(), value.len()] {
        if len < 128 {
            out.push(len as u8);
        } else {
            out.extend_from_slice(&((len as u32) | 0x8000_0000).to_be_bytes());
        }
    }
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

pub fn pairs(vars: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, v) in vars {
        pair(&mut b, k.as_bytes(), v.as_bytes());
    }
    b
}

/// A whole stream (PARAMS, STDIN): content in records of at most `max` bytes, then
/// the empty record that ends it.
pub fn stream(t: u8, id: u16, data: &[u8], max: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for c in data.chunks(max.max(1)) {
        v.extend(rec(t, id, c));
    }
    v.extend(rec(t, id, &[]));
    v
}

/// The CGI variables Apache sends for `GET <uri>` to an app at the site root.
pub fn cgi_vars(method: &str, path: &str, query: &str) -> Vec<(&'static str, String)> {
    let uri = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    vec![
        ("GATEWAY_INTERFACE", "CGI/1.1".into()),
        ("REQUEST_METHOD", method.into()),
        ("SCRIPT_NAME", "/mysite.fcgi".into()),
        ("PATH_INFO", path.into()),
        ("QUERY_STRING", query.into()),
        ("REQUEST_URI", uri),
        ("SERVER_PROTOCOL", "HTTP/1.1".into()),
        ("SERVER_NAME", "localhost".into()),
        ("SERVER_PORT", "80".into()),
        ("REMOTE_ADDR", "127.0.0.1".into()),
        ("HTTP_HOST", "localhost".into()),
    ]
}

/// A request's head: BEGIN and the whole PARAMS stream, no STDIN yet.
pub fn request_head(id: u16, keep_conn: bool, vars: &[(&str, String)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (k, v) in vars {
        pair(&mut p, k.as_bytes(), v.as_bytes());
    }
    let mut v = begin(id, RESPONDER, keep_conn);
    v.extend(stream(PARAMS, id, &p, 65535));
    v
}

/// A complete request: BEGIN, PARAMS, STDIN.
pub fn request(id: u16, keep_conn: bool, vars: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut v = if !body.is_empty() && !vars.iter().any(|(k, _)| *k == "CONTENT_LENGTH") {
        let mut vars = vars.to_vec();
        vars.push(("CONTENT_LENGTH", body.len().to_string()));
        request_head(id, keep_conn, &vars)
    } else {
        request_head(id, keep_conn, vars)
    };
    v.extend(stream(STDIN, id, body, 65535));
    v
}

pub fn get(path: &str, query: &str) -> Vec<(&'static str, String)> {
    cgi_vars("GET", path, query)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub t: u8,
    pub id: u16,
    pub content: Vec<u8>,
    pub pad: u8,
}

/// Splits bytes into records, checking what the spec and our promises require of
/// every record we send: version 1, content ≤ 65535, padded to a multiple of 8.
/// Returns the records and any trailing partial bytes.
pub fn parse_records(mut b: &[u8]) -> (Vec<Rec>, Vec<u8>) {
    let mut out = Vec::new();
    while b.len() >= 8 {
        let len = u16::from_be_bytes([b[4], b[5]]) as usize;
        let pad = b[6];
        if b.len() < 8 + len + pad as usize {
            break;
        }
        assert_eq!(b[0], 1, "record version");
        assert_eq!(
            (len + pad as usize) % 8,
            0,
            "record not padded to 8: {len}+{pad}"
        );
        assert!(pad < 8, "padding {pad} larger than needed");
        out.push(Rec {
            t: b[1],
            id: u16::from_be_bytes([b[2], b[3]]),
            content: b[8..8 + len].to_vec(),
            pad,
        });
        b = &b[8 + len + pad as usize..];
    }
    (out, b.to_vec())
}

/// What came back for one request.
#[derive(Debug, Default)]
pub struct Reply {
    pub records: Vec<Rec>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// (appStatus, protocolStatus)
    pub end: Option<(u32, u8)>,
    /// The connection was closed by the app after the reply.
    pub closed: bool,
}

impl Reply {
    pub fn head_and_body(&self) -> (String, Vec<u8>) {
        let pos = self
            .stdout
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| {
                panic!(
                    "no header end in {:?}",
                    String::from_utf8_lossy(&self.stdout)
                )
            });
        (
            String::from_utf8_lossy(&self.stdout[..pos + 2]).into_owned(),
            self.stdout[pos + 4..].to_vec(),
        )
    }

    pub fn status(&self) -> u16 {
        let (h, _) = self.head_and_body();
        h.strip_prefix("Status: ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {h:?}"))
    }

    pub fn json(&self) -> serde_json::Value {
        let (_, b) = self.head_and_body();
        serde_json::from_slice(&b)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", String::from_utf8_lossy(&b)))
    }
}

/// Reads records for request `id` until its END_REQUEST (or EOF), with a deadline.
/// Reads exactly one record at a time, so bytes of a later reply stay in the socket.
/// The test's end of a connection to the app, as the web server's: a Unix socket, or
/// TCP.
pub trait Conn: Read + Write + std::os::fd::AsRawFd {
    fn set_timeout(&self, t: Option<Duration>) -> std::io::Result<()>;
}

impl Conn for UnixStream {
    fn set_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(t)
    }
}

impl Conn for std::net::TcpStream {
    fn set_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(t)
    }
}

pub fn read_reply<S: Conn>(s: &mut S, id: u16, timeout: Duration) -> Reply {
    s.set_timeout(Some(timeout)).unwrap();
    let mut reply = Reply::default();
    loop {
        let mut h = [0u8; 8];
        match read_full(s, &mut h) {
            Ok(true) => {}
            Ok(false) => {
                reply.closed = true;
                return reply;
            }
            Err(e) => panic!("reading the reply: {e}"),
        }
        let len = u16::from_be_bytes([h[4], h[5]]) as usize;
        let mut rest = vec![0u8; len + h[6] as usize];
        if let Err(e) = s.read_exact(&mut rest) {
            panic!("reading a record body: {e}");
        }
        let mut bytes = h.to_vec();
        bytes.extend_from_slice(&rest);
        let (recs, _) = parse_records(&bytes);
        let r = recs.into_iter().next().expect("one whole record");
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
        let done = r.t == END && r.id == id;
        reply.records.push(r);
        if done {
            return reply;
        }
    }
}

/// Fills `buf`; `Ok(false)` on a clean EOF before the first byte.
fn read_full<S: Conn>(s: &mut S, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// True when the app closes the connection within `timeout` (EOF, no more bytes).
pub fn closed_within<S: Conn>(s: &mut S, timeout: Duration) -> bool {
    s.set_timeout(Some(timeout)).unwrap();
    let mut b = [0u8; 64];
    matches!(s.read(&mut b), Ok(0))
        || matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

/// True when the app has closed its end: writing to it fails (the first write may
/// still be accepted into the socket buffer, the second gets the error; on TCP once
/// the reset the first one drew has come back, hence the pause).
pub fn refuses_writes<S: Conn>(s: &mut S) -> bool {
    s.write_all(&[0; 4096])
        .and_then(|_| {
            std::thread::sleep(Duration::from_millis(50));
            s.write_all(&[0; 4096])
        })
        .is_err()
}

/// Reads everything until the app closes the connection.
pub fn read_all<S: Conn>(s: &mut S, timeout: Duration) -> Vec<u8> {
    s.set_timeout(Some(timeout)).unwrap();
    let mut v = Vec::new();
    let _ = s.read_to_end(&mut v);
    v
}

/// A new upload of `from` to `exe`, as FTP clients and rsync do it: written beside
/// under another name (with `from`'s mode), then renamed over.
/// The echo example copied into `dir` as `mysite.fcgi`, as a user uploads it.
pub fn echo_site(dir: impl AsRef<Path>) -> PathBuf {
    let exe = dir.as_ref().join("mysite.fcgi");
    fs::copy(example("echo"), &exe).unwrap();
    exe
}

pub fn upload(from: &Path, exe: &Path) {
    let mut tmp = exe.as_os_str().to_owned();
    tmp.push(".new");
    fs::copy(from, &tmp).unwrap();
    fs::rename(&tmp, exe).unwrap();
}

// ---- an app process with a listening socket on fd 0, as mod_fcgid starts it ----

pub struct FcgiApp {
    pub child: Child,
    pub sock: PathBuf,
    pub stderr_path: PathBuf,
    pub dir: TempDir,
}

impl FcgiApp {
    /// Starts example `name` with a listening Unix socket as stdin and `env` added.
    pub fn start(name: &str, env: &[(&str, &str)]) -> FcgiApp {
        Self::start_exe(&example(name), env)
    }

    pub fn start_exe(exe: &Path, env: &[(&str, &str)]) -> FcgiApp {
        let dir = TempDir::new("app");
        let sock = dir.join("app.sock");
        let listener = UnixListener::bind(&sock).expect("bind");
        let stderr_path = dir.join("stderr.log");
        let errf = fs::File::create(&stderr_path).unwrap();
        let mut cmd = Command::new(exe);
        cmd.stdin(Stdio::from(OwnedFd::from(listener)))
            .stdout(Stdio::null())
            .stderr(Stdio::from(errf))
            .env_remove("GATEWAY_INTERFACE")
            .env("FCGI_LOG", "debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        // If the test runner dies, so does the app, instead of lingering as an orphan.
        contain(&mut cmd);
        // A binary written a moment ago can be "busy" while a process forked by another
        // test still holds it open between fork and exec; that passes quickly.
        let child = spawn_retrying(&mut cmd);
        FcgiApp {
            child,
            sock,
            stderr_path,
            dir,
        }
    }

    pub fn connect(&self) -> UnixStream {
        UnixStream::connect(&self.sock).expect("connect to app")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One request on a fresh connection (keep-conn off): writes everything from a
    /// second thread while reading, so large bodies cannot deadlock.
    pub fn roundtrip(&self, bytes: Vec<u8>, id: u16) -> Reply {
        let mut s = self.connect();
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&bytes);
        });
        let r = read_reply(&mut s, id, Duration::from_secs(30));
        writer.join().unwrap();
        r
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Stops for FcgiApp {
    fn signal(&self, sig: i32) {
        FcgiApp::signal(self, sig)
    }
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        FcgiApp::wait_exit(self, timeout)
    }
    fn stderr(&self) -> String {
        FcgiApp::stderr(self)
    }
}

impl Drop for FcgiApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

// ---- processes ----

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The first number of a `/proc/PID/status` line (`VmRSS:`, `Uid:` ...), if the
/// process and the line are there.
pub fn proc_status_field(pid: u32, field: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// uid and gid of www-data, the user Apache's children run as when started by root.
pub fn www_data() -> (u32, u32) {
    user_ids("www-data")
}

/// uid and gid of the user `name`, which must exist.
pub fn user_ids(name: &str) -> (u32, u32) {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a valid C string; the result is read at once, before any other getpw call.
    unsafe {
        let pw = libc::getpwnam(c.as_ptr());
        assert!(!pw.is_null(), "no user {name}");
        ((*pw).pw_uid, (*pw).pw_gid)
    }
}

/// The state letter of /proc/<pid>/stat (R, S, Z, ...), None when there is no such process.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Processes whose process group is `pgid` (pid, state, command line).
pub fn group_members(pgid: i32) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // after the command: state, ppid, pgrp
        if f.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            out.push(format!("{pid} {} {}", f[0], cmd.trim()));
        }
    }
    out
}

/// The sockets the process has open (inode names like `socket:[1234]`): for a FastCGI
/// app, its listening socket plus one per connection.
pub fn socket_inodes(pid: u32) -> std::collections::HashSet<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| l.starts_with("socket:"))
        .collect()
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a process (or, negative, a process group) we started.
    unsafe {
        libc::kill(pid, sig);
    }
}

// ---- a plain HTTP/1.1 client (the tests' browser: one request per connection) ----

pub enum Body<'a> {
    None,
    /// Sent with Content-Length.
    Fixed(&'a [u8]),
    /// Sent with Transfer-Encoding: chunked, in chunks of 4000 bytes.
    Chunked(&'a [u8]),
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Names lowercased, in order, repeats kept.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }

    /// The echo app's JSON, from a 200 answer.
    pub fn echo(&self) -> serde_json::Value {
        assert_eq!(self.status, 200, "{self:?} {}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        self.json()
    }
}

/// One request on a new connection (`Connection: close`); the body is written from a
/// second thread while the answer is read.
pub fn http_request(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Response {
    try_http_request(port, method, target, headers, body, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

pub fn try_http_request(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Body,
    timeout: Duration,
) -> Result<Response, String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (n, v) in headers {
        head += &format!("{n}: {v}\r\n");
    }
    let payload: Vec<u8> = match body {
        Body::None => Vec::new(),
        Body::Fixed(b) => {
            head += &format!("Content-Length: {}\r\n", b.len());
            b.to_vec()
        }
        Body::Chunked(b) => {
            head += "Transfer-Encoding: chunked\r\n";
            let mut v = Vec::new();
            for c in b.chunks(4000) {
                v.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                v.extend_from_slice(c);
                v.extend_from_slice(b"\r\n");
            }
            v.extend_from_slice(b"0\r\n\r\n");
            v
        }
    };
    head += "\r\n";
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(head.as_bytes())?;
        w.write_all(&payload)
    });
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw) {
        // A reset after a complete answer is still an answer (parsed below).
        if raw.is_empty() {
            return Err(format!("reading the response: {e}"));
        }
    }
    let _ = writer.join();
    parse_response(&raw, method == "HEAD")
        .map_err(|e| format!("{e}: {:?}", String::from_utf8_lossy(&raw)))
}

pub fn parse_response(raw: &[u8], head_only: bool) -> Result<Response, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of the header")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "header is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for l in lines {
        let (n, v) = l
            .split_once(':')
            .ok_or_else(|| format!("bad header line {l:?}"))?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let mut r = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &raw[end + 4..];
    if head_only || status == 204 || status == 304 || status < 200 {
        return Ok(r);
    }
    if r.header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        r.body = dechunk(rest)?;
    } else if let Some(cl) = r.header("content-length") {
        let n: usize = cl
            .parse()
            .map_err(|_| format!("bad Content-Length {cl:?}"))?;
        if rest.len() != n {
            return Err(format!("Content-Length {n}, but {} bytes came", rest.len()));
        }
        r.body = rest.to_vec();
    } else {
        r.body = rest.to_vec();
    }
    Ok(r)
}

pub fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let line = std::str::from_utf8(&b[..eol]).map_err(|_| "bad chunk size")?;
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size_hex, 16).map_err(|_| format!("bad chunk size {line:?}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            // Trailers (none expected), then the final empty line.
            return if b.ends_with(b"\r\n") {
                Ok(out)
            } else {
                Err("no end of the chunked body".into())
            };
        }
        if b.len() < size + 2 || &b[size..size + 2] != b"\r\n" {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

// ---- the echo example as a standalone server ----

/// The echo example run as a standalone server: its own process group (so prefork
/// workers are killed with it), killed if the test runner dies, stderr in a file.
pub struct Srv {
    child: Child,
    stderr_path: PathBuf,
    _dir: TempDir,
}

/// A command for the echo example with a clean launch environment: no CGI variables,
/// no systemd variables, no listening socket on stdin.
pub fn echo_cmd(args: &[&str], env: &[(&str, &str)]) -> Command {
    example_cmd("echo", args, env)
}

/// [`echo_cmd`] for the example `name`.
pub fn example_cmd(name: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(example(name));
    cmd.args(args)
        .stdin(Stdio::null())
        .env_remove("GATEWAY_INTERFACE")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_FDNAMES")
        .env("FCGI_LOG", "debug");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Own process group, and SIGKILL when the test runner dies.
pub fn contain(cmd: &mut Command) {
    cmd.process_group(0);
    // SAFETY: prctl and signal are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // The app starts with SIGHUP as a web server leaves it, not as the test
            // run found it: under `nohup cargo test` it would be ignored, and the app
            // keeps an ignored SIGHUP ignored (as `nohup` users want).
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            Ok(())
        });
    }
}

pub fn spawn_retrying(cmd: &mut Command) -> Child {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r.expect("spawn echo"),
        }
    }
}

impl Srv {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Srv {
        Srv::start_in(None, args, env)
    }

    pub fn start_in(cwd: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Srv {
        Srv::start_cmd(echo_cmd(args, env), cwd)
    }

    /// A server of the example `name` rather than echo.
    pub fn start_example(name: &str, args: &[&str], env: &[(&str, &str)]) -> Srv {
        Srv::start_cmd(example_cmd(name, args, env), None)
    }

    fn start_cmd(mut cmd: Command, cwd: Option<&Path>) -> Srv {
        let dir = TempDir::new("srv-log");
        let stderr_path = dir.join("stderr.log");
        cmd.stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(&stderr_path).unwrap()));
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        contain(&mut cmd);
        Srv {
            child: spawn_retrying(&mut cmd),
            stderr_path,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// True once a log line containing `needle` appears (within `timeout`).
    pub fn logs_within(&self, timeout: Duration, needle: &str) -> bool {
        wait_until(timeout, || self.stderr().contains(needle))
    }
}

impl Stops for Srv {
    fn signal(&self, sig: i32) {
        Srv::signal(self, sig)
    }
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        Srv::wait_exit(self, timeout)
    }
    fn stderr(&self) -> String {
        Srv::stderr(self)
    }
}

impl Drop for Srv {
    fn drop(&mut self) {
        // SAFETY: the whole process group we created (the server and its workers).
        unsafe { libc::killpg(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request with curl over h2c (`--http2-prior-knowledge`) to 127.0.0.1:`port`:
/// `body` is sent with a content-length (`Some((data, true))`), or streamed from stdin
/// with none (`Some((data, false))`; h2 has no Transfer-Encoding either). Returns the
/// status (0 when curl failed, e.g. the server reset the stream) and the answer parsed
/// as JSON (Null when it is not JSON).
pub fn curl_h2c(
    port: u16,
    target: &str,
    headers: &[&str],
    body: Option<(&[u8], bool)>,
) -> (u16, serde_json::Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--http2-prior-knowledge", "--max-time", "60"])
        .args(["-w", "\n%{http_code} %{http_version}"]);
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    let file = std::env::temp_dir().join(format!("fcgi-shim-h2c-{}-{port}", std::process::id()));
    match body {
        Some((data, true)) => {
            fs::write(&file, data).unwrap();
            cmd.arg("--data-binary").arg(format!("@{}", file.display()));
            cmd.args(["-H", "Content-Type: application/octet-stream"]);
        }
        Some((data, false)) => {
            fs::write(&file, data).unwrap();
            cmd.args(["-X", "POST", "-T", "-"]);
            cmd.args(["-H", "Content-Type: application/octet-stream"]);
            cmd.stdin(fs::File::open(&file).unwrap());
        }
        None => {}
    }
    cmd.arg(format!("http://127.0.0.1:{port}{target}"));
    let out = cmd.output().expect("run curl");
    let _ = fs::remove_file(&file);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (answer, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut tail = tail.split(' ');
    let status: u16 = tail.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    if status != 0 {
        assert_eq!(tail.next(), Some("2"), "not HTTP/2: {text}");
    }
    (
        status,
        serde_json::from_str(answer).unwrap_or(serde_json::Value::Null),
    )
}

/// The body the app read is the whole of `data`.
pub fn assert_whole_body(j: &serde_json::Value, data: &[u8], what: &str) {
    assert_eq!(
        (&j["body_len"], j["body_sha256"].as_str()),
        (
            &serde_json::json!(data.len()),
            Some(sha256_hex(data).as_str())
        ),
        "{what}: {j}"
    );
}

/// A self-signed certificate for `127.0.0.1` and `localhost`, made with openssl's
/// command line as a host's own would be: `(cert.pem, key.pem)` in `dir`, readable by
/// anyone (a web server reads them as root, or as its own user).
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [&cert, &key] {
        fs::set_permissions(f, fs::Permissions::from_mode(0o644)).unwrap();
    }
    (cert, key)
}

/// An answer over TLS, as curl saw it.
#[derive(Debug)]
pub struct TlsReply {
    /// 0 when curl failed.
    pub status: u16,
    /// "1.1" or "2".
    pub version: String,
    /// The response head, lowercased.
    pub head: String,
    pub body: Vec<u8>,
}

impl TlsReply {
    /// A header's value (the last, if sent twice).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim() == name)
            .map(|(_, v)| v.trim())
            .next_back()
    }

    pub fn echo(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not an echo answer ({e}): {self:?} {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One GET over TLS to 127.0.0.1:`port` with curl (`-k`: the certificate is
/// self-signed), HTTP/2 when `http2` (chosen by ALPN, as browsers do), else HTTP/1.1.
/// Redirects are not followed.
pub fn curl_tls(port: u16, target: &str, http2: bool, headers: &[&str]) -> TlsReply {
    curl_tls_with(port, target, http2, headers, None)
}

/// [`curl_tls`] for a POST of `data` (`--data-binary`, so with a content-length, as
/// `application/octet-stream`) to `target`.
pub fn curl_tls_post(port: u16, target: &str, http2: bool, data: &[u8]) -> TlsReply {
    curl_tls_with(port, target, http2, &[], Some(data))
}

fn curl_tls_with(
    port: u16,
    target: &str,
    http2: bool,
    headers: &[&str],
    data: Option<&[u8]>,
) -> TlsReply {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let base = std::env::temp_dir().join(format!("fcgi-shim-tls-{}-{n}", std::process::id()));
    let [data_file, head_file, body_file] =
        ["data", "head", "body"].map(|e| base.with_extension(e));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-k", "--max-time", "60"])
        .arg(if http2 { "--http2" } else { "--http1.1" })
        .args(["-w", "%{http_code} %{http_version}"])
        .arg("-D")
        .arg(&head_file)
        .arg("-o")
        .arg(&body_file);
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    if let Some(data) = data {
        fs::write(&data_file, data).unwrap();
        cmd.args(["-H", "Content-Type: application/octet-stream"])
            .arg("--data-binary")
            .arg(format!("@{}", data_file.display()));
    }
    cmd.arg(format!("https://127.0.0.1:{port}{target}"));
    let out = cmd.output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut tail = text.split(' ');
    let reply = TlsReply {
        status: tail.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        version: tail.next().unwrap_or("").to_owned(),
        head: fs::read_to_string(&head_file)
            .unwrap_or_default()
            .to_ascii_lowercase(),
        body: fs::read(&body_file).unwrap_or_default(),
    };
    for f in [&data_file, &head_file, &body_file] {
        let _ = fs::remove_file(f);
    }
    reply
}

/// Through the web server's TLS port `tls`, over HTTP/1.1 and over HTTP/2, with the app
/// at `prefix`: the app knows the request came over HTTPS (`HTTPS=on` sent), sees the
/// TLS port and the protocol, keeps the mount; `{prefix}/redirect` points at an
/// `https://` URL with the TLS port; a 5 MiB upload arrives whole.
pub fn https_checks(tls: u16, prefix: &str) {
    for http2 in [false, true] {
        let (version, protocol) = if http2 {
            ("2", "HTTP/2.0")
        } else {
            ("1.1", "HTTP/1.1")
        };
        let r = curl_tls(tls, &format!("{prefix}/posts/1?x=1"), http2, &[]);
        assert_eq!((r.status, r.version.as_str()), (200, version), "{r:?}");
        let j = r.echo();
        let v = &j["vars"];
        assert_eq!(
            (&j["script_name"], &j["path_info"], &j["uri"], &j["https"]),
            (
                &serde_json::json!(prefix),
                &serde_json::json!("/posts/1"),
                &serde_json::json!("/posts/1?x=1"),
                &serde_json::json!(true)
            ),
            "{j}"
        );
        assert_eq!(
            (
                &v["HTTPS"],
                &v["REQUEST_SCHEME"],
                &v["SERVER_PORT"],
                &v["SERVER_PROTOCOL"]
            ),
            (
                &serde_json::json!("on"),
                &serde_json::json!("https"),
                &serde_json::json!(tls.to_string()),
                &serde_json::json!(protocol)
            ),
            "{j}"
        );

        assert_https_redirect(tls, prefix, http2);

        let data = noise(5 << 20, tls as u64 + http2 as u64);
        let r = curl_tls_post(tls, &format!("{prefix}/upload"), http2, &data);
        assert_eq!((r.status, r.version.as_str()), (200, version), "{r:?}");
        let j = r.echo();
        assert_whole_body(&j, &data, &format!("5 MiB over TLS, HTTP/{version}"));
        assert_eq!(j["vars"]["SERVER_PROTOCOL"], protocol, "{j}");
    }
}

/// A process a test started and stops: [`FcgiApp`] and [`Srv`].
pub trait Stops {
    fn signal(&self, sig: i32);
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus>;
    fn stderr(&self) -> String;

    /// SIGTERM, then the process must exit 0 within 10 s, as every clean stop ends;
    /// its stderr is in the failure message.
    fn stop_expecting_0(&mut self) {
        self.signal(libc::SIGTERM);
        let st = self.wait_exit(Duration::from_secs(10));
        assert_eq!(
            st.and_then(|s| s.code()),
            Some(0),
            "after SIGTERM: {st:?}\n{}",
            self.stderr()
        );
    }
}

/// Over TLS to port `tls`, `{prefix}/redirect` answers 302 to the `https://` URL with
/// the TLS port and the prefix.
pub fn assert_https_redirect(tls: u16, prefix: &str, http2: bool) {
    let r = curl_tls(tls, &format!("{prefix}/redirect"), http2, &[]);
    assert_eq!(
        (r.status, r.header("location")),
        (
            302,
            Some(format!("https://127.0.0.1:{tls}{prefix}/landed").as_str())
        ),
        "{r:?}"
    );
}
