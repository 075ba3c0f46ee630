// The set-ups in servers/, run for real: each snippet file is read, its placeholders
// filled in, and the web server it configures (nginx, lighttpd, spawn-fcgi + nginx,
// Apache mod_proxy_fcgi/mod_proxy_scgi, Caddy, H2O, the restart script, systemd socket
// activation)
// is started on 127.0.0.1 in front of the echo example, then spoken to over HTTP.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::*;

const NGINX: &str = "/usr/sbin/nginx";
const LIGHTTPD: &str = "/usr/sbin/lighttpd";
const SPAWN_FCGI: &str = "/usr/bin/spawn-fcgi";
const SOCKET_ACTIVATE: &str = "/usr/bin/systemd-socket-activate";
const CADDY: &str = "/usr/bin/caddy";
const H2O: &str = "/usr/bin/h2o";
const APACHE_MODULES: &str = "/usr/lib/apache2/modules";

// ---- the snippets ----

/// The file `servers/<name>` with its placeholders (`{LISTEN}`, ...) replaced. Each
/// given placeholder must occur in the file, and none may be left outside comments.
fn snippet(name: &str, vars: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("servers")
        .join(name);
    let mut text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    for (k, v) in vars {
        assert!(text.contains(k), "{name} has no placeholder {k}");
        text = text.replace(k, v);
    }
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with('#') {
            continue;
        }
        if let Some(p) = placeholder_in(code) {
            panic!("{name}: placeholder {p} left in {line:?}");
        }
    }
    text
}

/// A `{NAME}` (capitals and `_`, not a shell `${NAME}`) in `line`.
fn placeholder_in(line: &str) -> Option<&str> {
    let b = line.as_bytes();
    for (i, _) in line.match_indices('{') {
        if i > 0 && b[i - 1] == b'$' {
            continue;
        }
        let rest = &line[i + 1..];
        let end = rest.find('}')?;
        let name = &rest[..end];
        if !name.is_empty() && name.bytes().all(|c| c.is_ascii_uppercase() || c == b'_') {
            return Some(&line[i..i + end + 2]);
        }
    }
    None
}

fn need(program: &str) {
    assert!(
        Path::new(program).exists(),
        "{program} is not installed (apt-get install nginx-light lighttpd spawn-fcgi \
         apache2 systemd caddy h2o)"
    );
}

// ---- processes ----

/// A server (or script) in its own process group, with what it starts, its output in a
/// log file. Stopped on drop (SIGTERM to the group, SIGKILL after 15 s); the test fails
/// if anything of the group outlives that.
struct Group {
    what: String,
    child: Option<Child>,
    logs: Vec<PathBuf>,
}

/// Starts `cmd` in a new process group: stdin from /dev/null, stdout and stderr to
/// `log`, no descriptor of the test runner but those (other tests' sockets must not
/// leak into servers), and SIGTERM if the test runner dies.
fn spawn_group(what: &str, cmd: &mut Command, log: &Path) -> Group {
    let out = fs::File::create(log).expect("create log");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .env_remove("GATEWAY_INTERFACE")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_FDNAMES")
        .process_group(0);
    // SAFETY: close_range(2) and prctl(2) are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    // A binary written a moment ago can be "busy" while another test's fork still
    // holds it open; that passes quickly.
    let mut tries = 0;
    let child = loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            r => break r.unwrap_or_else(|e| panic!("starting {what}: {e}")),
        }
    };
    Group {
        what: what.to_owned(),
        child: Some(child),
        logs: vec![log.to_path_buf()],
    }
}

impl Group {
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("stopped").id()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for p in &self.logs {
            let text = fs::read(p).unwrap_or_default();
            s += &format!(
                "--- {} ({}) ---\n{}\n",
                self.what,
                p.display(),
                String::from_utf8_lossy(&text)
            );
        }
        s
    }

    /// Stops the group; returns what had to be killed.
    fn stop(&mut self) -> Vec<String> {
        let Some(mut child) = self.child.take() else {
            return Vec::new();
        };
        let pgid = child.id() as i32;
        signal(-pgid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut left = Vec::new();
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                left = group_members(pgid);
                signal(-pgid, libc::SIGKILL);
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: kill with signal 0 only checks whether the group has members.
        let group_empty = || unsafe { libc::kill(-pgid, 0) } != 0;
        if !wait_until(Duration::from_secs(5), group_empty) {
            left.extend(group_members(pgid));
            signal(-pgid, libc::SIGKILL);
            wait_until(Duration::from_secs(5), group_empty);
        }
        left
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let left = self.stop();
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        } else if !left.is_empty() {
            panic!(
                "{} did not stop cleanly; killed: {left:?}\n{}",
                self.what,
                self.logs()
            );
        }
    }
}

/// Runs a script to its end in a process group of its own; its output goes to `log`.
fn run_script(what: &str, cmd: &mut Command, log: &Path) -> (ExitStatus, String) {
    let mut g = spawn_group(what, cmd, log);
    let status = g
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{what} did not finish in 20 s\n{}", g.logs()));
    let out = fs::read_to_string(log).unwrap_or_default();
    (status, out)
}

/// True while `pid` runs (not gone, not a zombie).
fn running(pid: u32) -> bool {
    !matches!(proc_state(pid), None | Some('Z'))
}

/// Processes that left every process group we control (daemons, spawn-fcgi's
/// children): SIGKILLed on drop if still running our program.
struct Detached {
    exe: PathBuf,
    pids: Vec<u32>,
}

impl Drop for Detached {
    fn drop(&mut self) {
        let exe = self.exe.to_string_lossy().into_owned();
        for &pid in &self.pids {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if running(pid) && String::from_utf8_lossy(&cmd).contains(&exe) {
                signal(pid as i32, libc::SIGKILL);
            }
        }
    }
}

fn read_pids(p: &Path) -> Vec<u32> {
    fs::read_to_string(p)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn is_socket(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// True when process `pid` listens on 127.0.0.1:`port` (from /proc/net/tcp, so without
/// connecting: a probe connection would show up in the app's connection counts).
fn tcp_listening(pid: u32, port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    let ours = socket_inodes(pid);
    fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&want.as_str())
                && f.get(3) == Some(&"0A")
                && f.get(9)
                    .is_some_and(|i| ours.contains(&format!("socket:[{i}]")))
        })
}

// ---- the app as a standalone server ----

/// Where a standalone app listens.
enum Listen {
    Socket(PathBuf),
    Tcp(u16),
}

impl Listen {
    /// As nginx's `fastcgi_pass`/`scgi_pass` names it.
    fn nginx(&self) -> String {
        match self {
            Listen::Socket(p) => format!("unix:{}", p.display()),
            Listen::Tcp(port) => format!("127.0.0.1:{port}"),
        }
    }

    fn port(&self) -> u16 {
        match self {
            Listen::Tcp(p) => *p,
            Listen::Socket(_) => panic!("not a TCP server"),
        }
    }
}

struct App {
    group: Group,
    listen: Listen,
}

impl App {
    /// The echo example on a Unix socket in `dir` (`tcp`: on a free port instead),
    /// with `args` added; returns once it accepts connections.
    fn start(dir: &TempDir, tcp: bool, args: &[&str]) -> App {
        App::start_example("echo", dir, tcp, args)
    }

    /// Like `start`, with another example (`axum`).
    fn start_example(name: &str, dir: &TempDir, tcp: bool, args: &[&str]) -> App {
        for _ in 0..5 {
            let listen = if tcp {
                Listen::Tcp(free_port())
            } else {
                Listen::Socket(dir.join("mysite.sock"))
            };
            let mut cmd = Command::new(example(name));
            match &listen {
                Listen::Socket(p) => cmd.arg("--socket").arg(p),
                Listen::Tcp(port) => cmd.arg("--listen").arg(format!("127.0.0.1:{port}")),
            };
            cmd.args(args);
            let mut group = spawn_group("the app", &mut cmd, &dir.join("app.log"));
            let pid = group.pid();
            let ready = wait_until(Duration::from_secs(10), || {
                group.exited().is_some()
                    || match &listen {
                        Listen::Socket(p) => is_socket(p),
                        Listen::Tcp(port) => tcp_listening(pid, *port),
                    }
            });
            if ready && group.exited().is_none() {
                return App { group, listen };
            }
            let logs = group.logs();
            if !(tcp && logs.contains("in use")) {
                panic!("the app did not start\n{logs}");
            }
        }
        panic!("no free port for the app");
    }

    fn pid(&self) -> u32 {
        self.group.pid()
    }
}

// ---- web servers ----

/// A web server on 127.0.0.1:`port`.
pub(crate) struct Web {
    group: Group,
    pub(crate) port: u16,
}

/// Starts a web server on a free port: `spawn(port)` starts it; it is ready once it
/// answers HTTP on the port. Another port is tried when the port was taken meanwhile.
fn start_web(what: &str, spawn: &mut dyn FnMut(u16) -> Group) -> Web {
    let mut failure = String::new();
    for _ in 0..5 {
        let port = free_port();
        let mut group = spawn(port);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if group.exited().is_some() || Instant::now() > deadline {
                failure = format!("{what} did not come up on port {port}\n{}", group.logs());
                break;
            }
            let t = Duration::from_secs(2);
            if try_http_request(port, "GET", "/ready", &[], Body::None, t).is_ok() {
                return Web { group, port };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !failure.contains("in use") {
            break;
        }
    }
    panic!("{failure}");
}

/// [`nginx`] with the snippet `conf` from servers/, its `{LISTEN}` our port on
/// 127.0.0.1 and its `{BACKEND}` `backend`.
fn nginx_snippet(dir: &TempDir, conf: &str, backend: &str) -> Web {
    nginx(dir, &|port| {
        snippet(
            conf,
            &[
                ("{LISTEN}", &format!("127.0.0.1:{port}")),
                ("{BACKEND}", backend),
            ],
        )
    })
}

/// nginx with `site` (a `server { }` block, given the port) inside `http { }`, with
/// Debian's fastcgi_params and scgi_params beside it as `include` expects them.
pub(crate) fn nginx(dir: &TempDir, site: &dyn Fn(u16) -> String) -> Web {
    need(NGINX);
    let root = dir.join("nginx");
    for d in ["logs", "tmp"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in ["fastcgi_params", "scgi_params"] {
        fs::copy(Path::new("/etc/nginx").join(f), root.join(f))
            .unwrap_or_else(|e| panic!("/etc/nginx/{f}: {e}"));
    }
    start_web("nginx", &mut |port| {
        let r = root.display();
        // As root, workers would run as nobody, which may not connect to the app's
        // socket (mode 755 under the default umask): run them as root here.
        let user = if is_root() { "user root;\n" } else { "" };
        let conf = format!(
            "{user}daemon off;
master_process on;
worker_processes 1;
pid {r}/nginx.pid;
error_log {r}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {r}/logs/access.log;
    client_body_temp_path {r}/tmp/body;
    fastcgi_temp_path {r}/tmp/fastcgi;
    scgi_temp_path {r}/tmp/scgi;
    proxy_temp_path {r}/tmp/proxy;
    uwsgi_temp_path {r}/tmp/uwsgi;
    include {r}/site.conf;
}}
"
        );
        fs::write(root.join("site.conf"), site(port)).unwrap();
        fs::write(root.join("nginx.conf"), conf).unwrap();
        let mut cmd = Command::new(NGINX);
        cmd.arg("-p")
            .arg(&root)
            .arg("-c")
            .arg(root.join("nginx.conf"));
        let mut g = spawn_group("nginx", &mut cmd, &root.join("logs/stdout.log"));
        g.logs.push(root.join("logs/error.log"));
        g
    })
}

/// lighttpd with `site` (a snippet) included from a minimal lighttpd.conf.
fn lighttpd(dir: &TempDir, site: &str) -> Web {
    need(LIGHTTPD);
    let root = dir.join("lighttpd");
    for d in ["logs", "tmp", "htdocs"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("site.conf"), site).unwrap();
    start_web("lighttpd", &mut |port| {
        let r = root.display();
        let conf = format!(
            "server.document-root = \"{r}/htdocs\"
server.bind = \"127.0.0.1\"
server.port = {port}
server.errorlog = \"{r}/logs/error.log\"
server.upload-dirs = ( \"{r}/tmp\" )
include \"{r}/site.conf\"
"
        );
        fs::write(root.join("lighttpd.conf"), conf).unwrap();
        let mut cmd = Command::new(LIGHTTPD);
        cmd.arg("-D").arg("-f").arg(root.join("lighttpd.conf"));
        let mut g = spawn_group("lighttpd", &mut cmd, &root.join("logs/stdout.log"));
        g.logs.push(root.join("logs/error.log"));
        g
    })
}

/// Apache 2.4 with mod_proxy_fcgi and mod_proxy_scgi, and `site` (snippets) in the
/// server configuration.
fn apache(dir: &TempDir, site: &str) -> Web {
    let bin = ["/usr/sbin/apache2", "/usr/sbin/httpd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("Apache 2.4 is not installed (apt-get install apache2)");
    let root = dir.join("apache");
    for d in ["run", "logs", "htdocs"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("site.conf"), site).unwrap();
    start_web("Apache", &mut |port| {
        let r = root.display();
        let mut conf = format!(
            "ServerRoot \"{r}\"
DefaultRuntimeDir \"{r}/run\"
PidFile \"{r}/run/httpd.pid\"
Mutex file:{r}/run default
Listen 127.0.0.1:{port}
ServerName 127.0.0.1
"
        );
        for (id, file) in [
            ("mpm_event_module", "mod_mpm_event.so"),
            ("unixd_module", "mod_unixd.so"),
            ("authz_core_module", "mod_authz_core.so"),
            ("log_config_module", "mod_log_config.so"),
            ("proxy_module", "mod_proxy.so"),
            ("proxy_fcgi_module", "mod_proxy_fcgi.so"),
            ("proxy_scgi_module", "mod_proxy_scgi.so"),
        ] {
            conf += &format!(
                "<IfModule !{id}>\n  LoadModule {id} {APACHE_MODULES}/{file}\n</IfModule>\n"
            );
        }
        if is_root() {
            conf += "User www-data\nGroup www-data\n";
        }
        conf += &format!(
            "StartServers 1
ServerLimit 1
ThreadsPerChild 16
MaxRequestWorkers 16
MinSpareThreads 4
MaxSpareThreads 16
Timeout 30
ErrorLog \"{r}/logs/error.log\"
LogLevel warn
CustomLog \"{r}/logs/access.log\" common
DocumentRoot \"{r}/htdocs\"
Include \"{r}/site.conf\"
"
        );
        fs::write(root.join("httpd.conf"), conf).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("-f")
            .arg(root.join("httpd.conf"))
            .arg("-DFOREGROUND")
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C");
        let mut g = spawn_group("Apache", &mut cmd, &root.join("logs/stdout.log"));
        g.logs.push(root.join("logs/error.log"));
        g
    })
}

// ---- what every set-up must get right ----

/// Checks one echo answer; collects mismatches instead of stopping at the first.
struct Checks {
    failures: Vec<String>,
}

impl Checks {
    fn new() -> Checks {
        Checks {
            failures: Vec::new(),
        }
    }

    /// The echo JSON of a 200 answer, or a recorded failure.
    fn answer(&mut self, what: &str, r: &Response) -> Option<Value> {
        let json = serde_json::from_slice::<Value>(&r.body).ok();
        match json {
            Some(j) if r.status == 200 => Some(j),
            _ => {
                self.failures
                    .push(format!("{what}: status {}, body {:?}", r.status, r.text()));
                None
            }
        }
    }

    /// `j[field] == want` for each pair; on any mismatch one failure naming them all,
    /// with the CGI variables the server sent.
    fn fields(&mut self, what: &str, j: &Value, want: &[(&str, Value)]) {
        let wrong: Vec<String> = want
            .iter()
            .filter(|(f, w)| &j[*f] != w)
            .map(|(f, w)| format!("{f} = {}, expected {w}", j[*f]))
            .collect();
        if !wrong.is_empty() {
            self.failures.push(format!(
                "{what}: {}\n    variables sent: {}",
                wrong.join("; "),
                j["vars"]
            ));
        }
    }

    fn finish(self, what: &str) {
        assert!(
            self.failures.is_empty(),
            "{what}:\n  {}",
            self.failures.join("\n  ")
        );
    }
}

/// Through the web server on `port`, the app mounted at `prefix` ("" or "/app") in
/// `mode` ("fastcgi", "scgi") must see: its mount prefix, the app-relative path and
/// URI, the query, a 200 KiB POST body intact, and two cookies set. Fails with every
/// mismatch at once. Returns the echo answers.
fn check_mount(port: u16, prefix: &str, mode: &str) -> Vec<Value> {
    let mut c = Checks::new();
    let mut answers = Vec::new();
    let mut get = |c: &mut Checks, target: &str, want: &[(&str, Value)]| {
        let r = http_request(port, "GET", target, &[], Body::None);
        if let Some(j) = c.answer(&format!("GET {target}"), &r) {
            c.fields(&format!("GET {target}"), &j, want);
            answers.push(j);
        }
        r
    };
    let base = |path: &str| {
        vec![
            ("mode", json!(mode)),
            ("script_name", json!(prefix)),
            ("path_info", json!(path)),
        ]
    };
    let with = |mut v: Vec<(&'static str, Value)>, more: &[(&'static str, Value)]| {
        v.extend_from_slice(more);
        v
    };

    let t = format!("{prefix}/posts/1?x=1&y=two");
    let want = with(
        base("/posts/1"),
        &[
            ("method", json!("GET")),
            ("uri", json!("/posts/1?x=1&y=two")),
            ("query", json!("x=1&y=two")),
            ("original_uri", json!(t)),
        ],
    );
    get(&mut c, &t, &want);

    let want = with(base("/"), &[("uri", json!("/")), ("query", json!(""))]);
    get(&mut c, &format!("{prefix}/"), &want);

    let want = with(
        base("/café/a b"),
        &[
            ("uri", json!("/caf%C3%A9/a%20b?q=%C3%A9")),
            ("query", json!("q=%C3%A9")),
        ],
    );
    get(&mut c, &format!("{prefix}/caf%C3%A9/a%20b?q=%C3%A9"), &want);

    let t = format!("{prefix}/cookies");
    let r = get(&mut c, &t, &base("/cookies"));
    if r.all("set-cookie") != ["first=1; Path=/", "second=2; Path=/"] {
        c.failures.push(format!(
            "GET {t}: Set-Cookie headers {:?}",
            r.all("set-cookie")
        ));
    }

    // The Authorization header reaches the app (Bearer tokens, Basic logins).
    let t = format!("{prefix}/auth");
    let r = http_request(
        port,
        "GET",
        &t,
        &[("Authorization", "Bearer t0k.en")],
        Body::None,
    );
    if let Some(j) = c.answer(&format!("GET {t} with Authorization"), &r) {
        if j["headers"]["authorization"] != "Bearer t0k.en" {
            c.failures.push(format!(
                "GET {t}: no Authorization header reached the app: {j}"
            ));
        }
    }

    let data = noise(200 * 1024, port as u64);
    let t = format!("{prefix}/upload?n=1");
    let r = http_request(
        port,
        "POST",
        &t,
        &[("Content-Type", "application/octet-stream")],
        Body::Fixed(&data),
    );
    if let Some(j) = c.answer(&format!("POST {t}"), &r) {
        let want = with(
            base("/upload"),
            &[
                ("method", json!("POST")),
                ("uri", json!("/upload?n=1")),
                ("query", json!("n=1")),
                ("body_len", json!(data.len())),
                ("body_sha256", json!(sha256_hex(&data))),
            ],
        );
        c.fields(&format!("POST {t} (200 KiB)"), &j, &want);
        answers.push(j);
    }
    c.finish(&format!(
        "the app mounted at {prefix:?} through port {port}"
    ));
    answers
}

/// `/app/redirect` answers with an absolute URL that keeps the web server's port.
fn redirects_keep_the_port(port: u16) {
    let r = http_request(port, "GET", "/app/redirect", &[], Body::None);
    assert_eq!(
        r.header("location"),
        Some(format!("http://127.0.0.1:{port}/app/landed").as_str()),
        "{r:?}"
    );
}

fn pid_of(j: &Value) -> u32 {
    j["pid"].as_u64().expect("pid") as u32
}

fn pids(answers: &[Value]) -> BTreeSet<u32> {
    answers.iter().map(pid_of).collect()
}

/// Sends GETs for `target` on `n` connections at once; returns the answers.
fn concurrent(port: u16, target: &str, n: usize) -> Vec<Value> {
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let target = target.to_owned();
            std::thread::spawn(move || http_request(port, "GET", &target, &[], Body::None))
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("request thread").echo())
        .collect()
}

// ---- nginx ----

/// The app's connections: its socket inodes other than those it had when idle.
fn connections(pid: u32, idle: &HashSet<String>) -> HashSet<String> {
    socket_inodes(pid).difference(idle).cloned().collect()
}

/// nginx (`servers/<conf>`) to the app on a Unix socket or TCP; the app at /app/ and at
/// the root. Then 20 requests in a row: one process serves them all, and either they
/// share kept connections (`keepalive`: the app holds an open connection after every
/// answer, at most 2 over all 20) or the app closes each connection after its answer.
fn nginx_fastcgi(conf: &str, tcp: bool, keepalive: bool) {
    let dir = TempDir::new("nginx-fcgi");
    let app = App::start(&dir, tcp, &[]);
    // Before nginx (whose readiness probe reaches the app): only the listener.
    let idle = socket_inodes(app.pid());
    let backend = app.listen.nginx();
    let web = nginx_snippet(&dir, conf, &backend);
    let mut answers = check_mount(web.port, "/app", "fastcgi");
    answers.extend(check_mount(web.port, "", "fastcgi"));
    assert_eq!(pids(&answers), BTreeSet::from([app.pid()]));
    // Absolute URLs keep nginx's port: the conf's HTTP_HOST, after Debian's
    // fastcgi_params sent one without the port, is the one the app reads (the last of
    // a repeated param wins); and Host is one header, not two.
    redirects_keep_the_port(web.port);
    let j = http_request(web.port, "GET", "/app/host", &[], Body::None).echo();
    assert_eq!(
        j["headers"]["host"],
        format!("127.0.0.1:{}", web.port),
        "{j}"
    );
    // A header sent on two lines keeps both values (nginx 1.22, Debian 12's, passes
    // each line as a variable of its own; 1.23 and later join them first).
    let j = http_request(
        web.port,
        "GET",
        "/app/dup",
        &[("X-Dup", "a"), ("Accept", "text/html"), ("X-Dup", "b")],
        Body::None,
    )
    .echo();
    assert_eq!(j["headers"]["x-dup"], "a, b", "{j}");
    // An encoded slash stays one in the app's URI (nginx sends PATH_INFO decoded).
    let j = http_request(web.port, "GET", "/app/files/a%2Fb?x=1", &[], Body::None).echo();
    assert_eq!(
        (j["uri"].as_str(), j["path_info"].as_str()),
        (Some("/files/a%2Fb?x=1"), Some("/files/a/b")),
        "{j}"
    );
    // A body that fails midway reaches the client as an incomplete response (no last
    // chunk), not as a complete short one: nginx sees the connection close without
    // END_REQUEST (with fastcgi_keep_conn) or reset (TCP). Over a Unix socket without
    // fastcgi_keep_conn nginx takes any close for the end of the response, as it would
    // from an app that crashed (README, "FastCGI support").
    if keepalive || tcp {
        let cut = try_http_request(
            web.port,
            "GET",
            "/app/stream?chunks=5&size=10&fail_after=2",
            &[],
            Body::None,
            Duration::from_secs(10),
        );
        // With keep-conn the bytes before the cut reach the client; after a reset
        // nginx may drop what it had buffered, but never ends the reply as whole.
        assert!(
            cut.as_ref()
                .is_err_and(|e| !keepalive || e.contains("aaaaaaaaaa")),
            "{:?}",
            cut.map(|r| r.text())
        );
    }
    // A body short of its declared Content-Length: nginx passes on what came and
    // closes its client's connection at once, in every set-up. Without
    // fastcgi_keep_conn the app ends it with END_REQUEST (to nginx, by its
    // SERVER_SOFTWARE), with it by a close: each the other way about left a kept-alive
    // client waiting for the rest until nginx's keep-alive timeout (a close over a
    // Unix socket; END_REQUEST with fastcgi_keep_conn).
    let mut s = std::net::TcpStream::connect(("127.0.0.1", web.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"GET /app/stream?chunks=5&size=10&fail_after=2&length=1000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    let end = std::io::Read::read_to_end(&mut s, &mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(
        end.as_ref().map_or_else(
            |e| e.kind() == std::io::ErrorKind::ConnectionReset,
            |_| true
        ),
        "{end:?} after {:?}: {text}",
        t0.elapsed()
    );
    // (With a reset on TCP nginx may drop what it had not sent.)
    assert!(
        text.starts_with("HTTP/1.1 200")
            && text.contains("Content-Length: 1000\r\n")
            && (text.ends_with("\r\n\r\naaaaaaaaaabbbbbbbbbb") || keepalive && tcp),
        "{text}"
    );

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_served = None;
    for i in 0..20 {
        let j = http_request(
            web.port,
            "GET",
            &format!("/app/kept?i={i}"),
            &[],
            Body::None,
        )
        .echo();
        assert_eq!(pid_of(&j), app.pid(), "{j}");
        let served = j["served"].as_u64().expect("served");
        if let Some(last) = last_served {
            assert_eq!(served, last + 1, "request {i}: {j}");
        }
        last_served = Some(served);
        if keepalive {
            let now = connections(app.pid(), &idle);
            assert!(
                !now.is_empty(),
                "request {i}: the app holds no connection after the answer, though nginx \
                 keeps them (fastcgi_keep_conn on)"
            );
            for c in now {
                *seen.entry(c).or_default() += 1;
            }
        } else {
            assert!(
                wait_until(Duration::from_secs(3), || connections(app.pid(), &idle)
                    .is_empty()),
                "request {i}: the app kept a connection open without fastcgi_keep_conn: {:?}",
                connections(app.pid(), &idle)
            );
        }
    }
    if keepalive {
        assert!(
            seen.len() <= 2,
            "20 requests over kept connections used {} connections: {seen:?}",
            seen.len()
        );
    }
    drop(web);
    drop(app);
}

#[test]
fn nginx_fastcgi_unix_socket() {
    nginx_fastcgi("nginx-fastcgi.conf", false, false);
}

#[test]
fn nginx_fastcgi_tcp() {
    nginx_fastcgi("nginx-fastcgi.conf", true, false);
}

#[test]
fn nginx_fastcgi_keepalive_unix_socket() {
    nginx_fastcgi("nginx-fastcgi-keepalive.conf", false, true);
}

#[test]
fn nginx_fastcgi_keepalive_tcp() {
    nginx_fastcgi("nginx-fastcgi-keepalive.conf", true, true);
}

#[test]
fn nginx_scgi() {
    let dir = TempDir::new("nginx-scgi");
    let app = App::start(&dir, false, &["--protocol", "scgi"]);
    let backend = app.listen.nginx();
    let web = nginx_snippet(&dir, "nginx-scgi.conf", &backend);
    let mut answers = check_mount(web.port, "/app", "scgi");
    answers.extend(check_mount(web.port, "", "scgi"));
    assert_eq!(pids(&answers), BTreeSet::from([app.pid()]));
    drop(web);

    // With `scgi_request_buffering off`, nginx sends as CONTENT_LENGTH only what it has
    // read of the body so far: refused with a 500 and the reason in the log, never a
    // short body handed to the app as whole.
    let web = nginx(&dir, &|port| {
        snippet(
            "nginx-scgi.conf",
            &[
                ("{LISTEN}", &format!("127.0.0.1:{port}")),
                ("{BACKEND}", &backend),
            ],
        )
        .replace(
            "client_max_body_size 20m;",
            "client_max_body_size 20m;\n    scgi_request_buffering off;",
        )
    });
    let body = noise(1 << 20, 11);
    let r = http_request(web.port, "POST", "/app/upload", &[], Body::Fixed(&body));
    if r.status == 200 {
        // nginx read the whole body before passing it on: then it must be whole.
        assert_eq!(r.echo()["body_len"], body.len(), "{r:?}");
    } else {
        assert_eq!(r.status, 500, "{r:?}");
        assert!(
            wait_until(Duration::from_secs(5), || app
                .group
                .logs()
                .contains("scgi_request_buffering off")),
            "{}",
            app.group.logs()
        );
    }
    drop(web);
}

/// nginx's stock `include scgi_params;` alone sends REQUEST_URI but neither SCRIPT_NAME
/// nor PATH_INFO. At the site root that still says everything: the path is the
/// request's path and the prefix is empty (not the whole path as the prefix).
#[test]
fn nginx_scgi_with_only_the_stock_scgi_params_at_the_root() {
    let dir = TempDir::new("nginx-scgi-stock");
    let app = App::start(&dir, false, &["--protocol", "scgi"]);
    let backend = app.listen.nginx();
    let web = nginx(&dir, &|port| {
        format!(
            "server {{
    listen 127.0.0.1:{port};
    location / {{
        include scgi_params;
        scgi_pass {backend};
    }}
}}
"
        )
    });
    let mut c = Checks::new();
    let r = http_request(web.port, "GET", "/posts/1?x=1", &[], Body::None);
    if let Some(j) = c.answer("GET /posts/1?x=1", &r) {
        c.fields(
            "GET /posts/1?x=1",
            &j,
            &[
                ("script_name", json!("")),
                ("path_info", json!("/posts/1")),
                ("uri", json!("/posts/1?x=1")),
            ],
        );
    }
    c.finish("nginx with the stock scgi_params only");
    drop(web);
}

// ---- lighttpd ----

/// lighttpd starts the app (`bin-path`, 2 processes per mount) at /app and at the root.
#[test]
fn lighttpd_bin_path() {
    let dir = TempDir::new("lighttpd-bin");
    let exe = example("echo");
    let run = dir.join("run");
    fs::create_dir_all(&run).unwrap();
    let site = snippet(
        "lighttpd-bin-path.conf",
        &[
            ("{APP}", &exe.to_string_lossy()),
            ("{ROOT}", &run.to_string_lossy()),
        ],
    );
    let web = lighttpd(&dir, &site);

    // max-procs 2 for each of the two mounts.
    let exe_s = exe.to_string_lossy().into_owned();
    let apps = || -> BTreeSet<u32> {
        group_members(web.group.pid() as i32)
            .iter()
            .filter(|m| m.split(' ').nth(2) == Some(exe_s.as_str()))
            .filter_map(|m| m.split(' ').next()?.parse().ok())
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(5), || apps().len() == 4),
        "lighttpd started {:?}, not 2 processes per mount\n{}",
        group_members(web.group.pid() as i32),
        web.group.logs()
    );

    let sub = check_mount(web.port, "/app", "fastcgi");
    // The bare prefix is the app's root (FORCE_SCRIPT_NAME in the snippet).
    let j = http_request(web.port, "GET", "/app", &[], Body::None).echo();
    assert_eq!(
        (&j["script_name"], &j["path_info"], &j["uri"]),
        (&json!("/app"), &json!(""), &json!("/")),
        "{j}"
    );
    // An encoded slash stays one in the app's URI (lighttpd decodes it in PATH_INFO),
    // under the forced prefix and at the root.
    for (target, uri) in [
        ("/app/p/a%2Fb?x=1", "/p/a%2Fb?x=1"),
        ("/p/a%2Fb", "/p/a%2Fb"),
    ] {
        let j = http_request(web.port, "GET", target, &[], Body::None).echo();
        assert_eq!(
            (j["uri"].as_str(), j["path_info"].as_str()),
            (Some(uri), Some("/p/a/b")),
            "{j}"
        );
    }
    let top = check_mount(web.port, "", "fastcgi");
    let all = apps();
    assert!(pids(&sub).is_subset(&all), "{:?} {all:?}", pids(&sub));
    assert!(pids(&top).is_subset(&all), "{:?} {all:?}", pids(&top));
    assert!(
        pids(&sub).is_disjoint(&pids(&top)),
        "one process served both mounts"
    );

    // Two requests at once go to the two processes of the mount.
    let both = concurrent(web.port, "/app/sleep?ms=1500", 2);
    assert_eq!(pids(&both).len(), 2, "{both:?}");
    assert!(pids(&both).is_subset(&all));

    // Stopping lighttpd (alone) stops the processes it started.
    let mut web = web;
    let pgid = web.group.pid() as i32;
    signal(pgid, libc::SIGTERM);
    assert!(
        web.group.wait_exit(Duration::from_secs(10)).is_some(),
        "lighttpd did not stop"
    );
    assert!(
        wait_until(Duration::from_secs(10), || group_members(pgid).is_empty()),
        "left running after lighttpd stopped: {:?}",
        group_members(pgid)
    );
}

/// lighttpd with `exe` at /app as one `bin-path` process (`max-procs` 1) and `env`
/// (lighttpd's `"NAME" => "value"` pairs) in its environment.
fn lighttpd_one_process(dir: &TempDir, exe: &Path, env: &str) -> Web {
    let run = dir.join("run");
    fs::create_dir_all(&run).unwrap();
    let site = format!(
        "server.modules += ( \"mod_fastcgi\" )
fastcgi.server += ( \"/app\" => ((
    \"bin-path\" => \"{}\",
    \"socket\" => \"{}/app.sock\",
    \"max-procs\" => 1,
    \"check-local\" => \"disable\",
    \"bin-environment\" => ( {env} ),
)) )
",
        exe.display(),
        run.display()
    );
    lighttpd(dir, &site)
}

/// lighttpd `bin-path` with one process that exits at FCGI_MAX_REQUESTS: lighttpd
/// answers 503 while it restarts it. With FCGI_PROCESSES (as php-cgi's
/// PHP_FCGI_CHILDREN) that process keeps the socket and replaces its workers, so
/// lighttpd never sees the backend go: every request under concurrent load is a 200.
#[test]
fn lighttpd_bin_path_with_processes_and_max_requests_never_503s() {
    let dir = TempDir::new("lighttpd-prefork");
    let web = lighttpd_one_process(
        &dir,
        &example("echo"),
        "\"FCGI_PROCESSES\" => \"2\", \"FCGI_MAX_REQUESTS\" => \"5\"",
    );
    let port = web.port;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                (0..25)
                    .map(|_| {
                        let r = http_request(port, "GET", "/app/pid", &[], Body::None);
                        (r.status, (r.status == 200).then(|| pid_of(&r.json())))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<(u16, Option<u32>)> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client"))
        .collect();
    let bad: Vec<_> = answers.iter().filter(|(st, _)| *st != 200).collect();
    assert!(bad.is_empty(), "{bad:?}\n{}", web.group.logs());
    // 100 requests at 5 per worker: workers were replaced, under one lighttpd backend.
    let workers: BTreeSet<u32> = answers.iter().filter_map(|(_, p)| *p).collect();
    assert!(workers.len() >= 20, "served by {workers:?}");
    let log = web.group.logs();
    assert!(!log.contains("child exited"), "{log}");
}

/// The same, across an upload: under load, the program file is replaced (written
/// beside, renamed over); the process runs the new program in place, so lighttpd
/// answers every request, from the old program and then from the new one.
#[test]
fn lighttpd_bin_path_with_processes_takes_a_new_upload_without_a_failed_request() {
    let dir = TempDir::new("lighttpd-upload");
    let exe = echo_site(&dir);
    let web = lighttpd_one_process(&dir, &exe, "\"FCGI_PROCESSES\" => \"2\"");
    let port = web.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = http_request(port, "GET", "/app/x", &[], Body::None);
                    answers.push((r.status, r.text().starts_with("Hello from")));
                    std::thread::sleep(Duration::from_millis(10));
                }
                answers
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    upload(&example("hello"), &exe);
    // Noticed within 2 s (a look, then a look that finds it unchanged), then taken over.
    let new_answers = wait_until(Duration::from_secs(10), || {
        http_request(port, "GET", "/app/x", &[], Body::None)
            .text()
            .starts_with("Hello from")
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers: Vec<(u16, bool)> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client"))
        .collect();
    assert!(
        new_answers,
        "the new program never answered\n{}",
        web.group.logs()
    );
    let bad: Vec<_> = answers.iter().filter(|(st, _)| *st != 200).collect();
    assert!(bad.is_empty(), "{bad:?}\n{}", web.group.logs());
    assert!(
        answers.iter().any(|a| !a.1) && answers.iter().any(|a| a.1),
        "{answers:?}"
    );
    let log = web.group.logs();
    assert!(!log.contains("child exited"), "{log}");
}

/// lighttpd to a standalone server on a Unix socket, at /app and at the root.
#[test]
fn lighttpd_socket() {
    let dir = TempDir::new("lighttpd-sock");
    let app = App::start(&dir, false, &[]);
    let Listen::Socket(sock) = &app.listen else {
        unreachable!()
    };
    let site = snippet(
        "lighttpd-socket.conf",
        &[("{SOCKET}", &sock.to_string_lossy())],
    );
    let web = lighttpd(&dir, &site);
    let mut answers = check_mount(web.port, "/app", "fastcgi");
    answers.extend(check_mount(web.port, "", "fastcgi"));
    assert_eq!(pids(&answers), BTreeSet::from([app.pid()]));
    drop(web);
}

// ---- spawn-fcgi ----

/// servers/spawn-fcgi.sh run in `dir`: the two copies it starts (stopped when the
/// guard drops) and their socket.
fn spawn_fcgi_copies(dir: &TempDir) -> (Detached, PathBuf) {
    need(SPAWN_FCGI);
    let exe = example("echo");
    let root = dir.join("site");
    fs::create_dir_all(&root).unwrap();
    let script = dir.join("spawn-fcgi.sh");
    fs::write(
        &script,
        snippet(
            "spawn-fcgi.sh",
            &[
                ("{APP}", &exe.to_string_lossy()),
                ("{ROOT}", &root.to_string_lossy()),
            ],
        ),
    )
    .unwrap();
    let pidfile = root.join("mysite.pid");
    let sock = root.join("mysite.sock");
    let (status, out) = run_script(
        "spawn-fcgi.sh",
        Command::new("/bin/sh").arg(&script),
        &dir.join("spawn-fcgi.log"),
    );
    // Whatever happens next, the copies it started are stopped at the end.
    let copies = Detached {
        exe,
        pids: read_pids(&pidfile),
    };
    assert!(status.success(), "spawn-fcgi.sh: {status}\n{out}");
    assert_eq!(copies.pids.len(), 2, "pidfile: {:?}\n{out}", copies.pids);
    assert!(is_socket(&sock), "no socket at {}", sock.display());
    (copies, sock)
}

/// servers/spawn-fcgi.sh starts two copies on a Unix socket; nginx in front.
#[test]
fn spawn_fcgi_two_processes_behind_nginx() {
    let dir = TempDir::new("spawn-fcgi");
    let (copies, sock) = spawn_fcgi_copies(&dir);
    let backend = format!("unix:{}", sock.display());
    let web = nginx_snippet(&dir, "nginx-fastcgi.conf", &backend);
    let all: BTreeSet<u32> = copies.pids.iter().copied().collect();
    let mut answers = check_mount(web.port, "/app", "fastcgi");
    answers.extend(check_mount(web.port, "", "fastcgi"));
    assert!(
        pids(&answers).is_subset(&all),
        "{:?} {all:?}",
        pids(&answers)
    );
    // Each copy serves one connection at a time: two at once need both. (Long enough
    // that the two requests overlap even when the machine is busy.)
    let both = concurrent(web.port, "/app/sleep?ms=1500", 2);
    assert_eq!(pids(&both), all, "{both:?}");

    // `kill $(cat mysite.pid)` stops both.
    for &pid in &copies.pids {
        signal(pid as i32, libc::SIGTERM);
    }
    for &pid in &copies.pids {
        assert!(
            wait_until(Duration::from_secs(10), || !running(pid)),
            "copy {pid} still runs 10 s after SIGTERM"
        );
    }
    drop(web);
}

/// The two one-thread copies servers/spawn-fcgi.sh starts, behind
/// servers/nginx-fastcgi-keepalive.conf: nginx keeps an idle connection to each copy,
/// and four requests at once open two more. Each copy gives its idle connection up to
/// a new one (README, "Threads"), so all four are answered; before, the two new
/// connections waited until nginx's 60 s timeout (a 504).
#[test]
fn spawn_fcgi_copies_behind_nginx_keepalive_serve_new_connections() {
    let dir = TempDir::new("spawn-fcgi-ka");
    let (copies, sock) = spawn_fcgi_copies(&dir);
    let backend = format!("unix:{}", sock.display());
    let web = nginx_snippet(&dir, "nginx-fastcgi-keepalive.conf", &backend);
    let all: BTreeSet<u32> = copies.pids.iter().copied().collect();
    // Two at once, twice: nginx now keeps a connection to each copy, idle.
    for _ in 0..2 {
        let both = concurrent(web.port, "/app/sleep?ms=300", 2);
        assert!(pids(&both).is_subset(&all), "{both:?}");
    }
    let port = web.port;
    let t0 = std::time::Instant::now();
    let four: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                try_http_request(
                    port,
                    "GET",
                    &format!("/app/sleep?ms=300&i={i}"),
                    &[],
                    Body::None,
                    Duration::from_secs(15),
                )
            })
        })
        .collect();
    for (i, t) in four.into_iter().enumerate() {
        let r = t.join().expect("request thread");
        let r = r.unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    drop(web);
    drop(copies);
}

// ---- Apache ----

// ---- Caddy ----

/// Caddy 2 with `site` (a site block, given the port), its admin endpoint off (it
/// would take port 2019, which a distribution's own Caddy may hold) and its state in
/// `dir`.
fn caddy(dir: &TempDir, site: &dyn Fn(u16) -> String) -> Web {
    need(CADDY);
    let root = dir.join("caddy");
    fs::create_dir_all(root.join("logs")).unwrap();
    start_web("caddy", &mut |port| {
        let conf = format!("{{\n\tadmin off\n}}\n\n{}", site(port));
        fs::write(root.join("Caddyfile"), conf).unwrap();
        let mut cmd = Command::new(CADDY);
        cmd.arg("run")
            .arg("--config")
            .arg(root.join("Caddyfile"))
            .arg("--adapter")
            .arg("caddyfile")
            .env("HOME", &root)
            .env("XDG_DATA_HOME", &root)
            .env("XDG_CONFIG_HOME", &root);
        spawn_group("caddy", &mut cmd, &root.join("logs/stdout.log"))
    })
}

/// GETs `target` and returns (when `first` first appeared in what came, the whole
/// answer as sent, when it ended), timed from the request.
fn timed_get(port: u16, target: &str, first: &[u8]) -> (Option<Duration>, Vec<u8>, Duration) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let t0 = Instant::now();
    s.write_all(
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let (mut all, mut seen, mut buf) = (Vec::new(), None, [0u8; 4096]);
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            return (seen, all, t0.elapsed());
        }
        all.extend_from_slice(&buf[..n]);
        if seen.is_none() && all.windows(first.len()).any(|w| w == first) {
            seen = Some(t0.elapsed());
        }
    }
}

/// Caddy's `reverse_proxy` with the fastcgi transport (`servers/caddy-fastcgi.Caddyfile`)
/// to the app on a Unix socket or TCP, at /app/ and at the root: the mount both ways,
/// redirects with the port, no `Status:` line left among the client's headers, a
/// chunked upload (Caddy 2.6 sends `CONTENT_LENGTH=-1`), and a stream that reaches the
/// client as it is written.
fn caddy_fastcgi(tcp: bool) {
    let dir = TempDir::new("caddy-fcgi");
    let app = App::start(&dir, tcp, &[]);
    let backend = match &app.listen {
        Listen::Socket(p) => format!("unix/{}", p.display()),
        Listen::Tcp(port) => format!("127.0.0.1:{port}"),
    };
    let web = caddy(&dir, &|port| {
        snippet(
            "caddy-fastcgi.Caddyfile",
            &[
                ("{SITE}", &format!("http://127.0.0.1:{port}")),
                ("{BACKEND}", &backend),
            ],
        )
    });
    let mut answers = check_mount(web.port, "/app", "fastcgi");
    answers.extend(check_mount(web.port, "", "fastcgi"));
    assert_eq!(pids(&answers), BTreeSet::from([app.pid()]));

    redirects_keep_the_port(web.port);
    for target in ["/app/posts/1", "/posts/1", "/app/status/404"] {
        let r = http_request(web.port, "GET", target, &[], Body::None);
        assert!(r.header("status").is_none(), "GET {target}: {r:?}");
    }
    assert_eq!(
        http_request(web.port, "GET", "/app/status/404", &[], Body::None).status,
        404
    );
    let r = http_request(web.port, "GET", "/app", &[], Body::None);
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some("/app/")),
        "{r:?}"
    );

    for prefix in ["/app", ""] {
        let data = noise(300 * 1024, 21);
        let t = format!("{prefix}/upload?chunked=1");
        let j = http_request(web.port, "POST", &t, &[], Body::Chunked(&data)).echo();
        assert_eq!(
            (&j["body_len"], j["body_sha256"].as_str()),
            (&json!(data.len()), Some(sha256_hex(&data).as_str())),
            "POST {t} chunked: {j}"
        );
        assert_eq!(j["script_name"], prefix, "{j}");
    }

    // Two chunks 3 s apart: the first reaches the client long before the second is
    // written (without `flush_interval -1`, Caddy sent both at the end).
    for prefix in ["/app", ""] {
        let t = format!("{prefix}/stream?chunks=2&size=5&delay_ms=3000");
        let (first, all, total) = timed_get(web.port, &t, b"aaaaa");
        let text = String::from_utf8_lossy(&all);
        assert!(text.contains("bbbbb"), "GET {t}: {text}");
        assert!(total >= Duration::from_millis(2900), "GET {t}: {total:?}");
        let first = first.expect("the first chunk");
        assert!(
            first < Duration::from_millis(2000),
            "GET {t}: the first chunk came after {first:?}, with the rest ({total:?})"
        );
    }
    drop(web);
    drop(app);
}

#[test]
fn caddy_fastcgi_unix_socket() {
    caddy_fastcgi(false);
}

#[test]
fn caddy_fastcgi_tcp() {
    caddy_fastcgi(true);
}

// ---- H2O ----

/// H2O with one host on a free port whose `paths:` are `paths` (a snippet, indented
/// here under the host).
fn h2o(dir: &TempDir, paths: &str) -> Web {
    need(H2O);
    let root = dir.join("h2o");
    fs::create_dir_all(&root).unwrap();
    let paths: String = paths.lines().map(|l| format!("    {l}\n")).collect();
    start_web("h2o", &mut |port| {
        let r = root.display();
        // As root H2O wants to be told which user to run as.
        let user = if is_root() { "user: root\n" } else { "" };
        let conf = format!(
            "{user}error-log: {r}/error.log
access-log: {r}/access.log
pid-file: {r}/h2o.pid
num-threads: 1
hosts:
  \"127.0.0.1:{port}\":
    listen:
      host: 127.0.0.1
      port: {port}
{paths}"
        );
        fs::write(root.join("h2o.conf"), conf).unwrap();
        let mut cmd = Command::new(H2O);
        cmd.arg("-c").arg(root.join("h2o.conf"));
        let mut g = spawn_group("h2o", &mut cmd, &root.join("stdout.log"));
        g.logs.push(root.join("error.log"));
        g
    })
}

/// H2O's `fastcgi.spawn` (`servers/h2o-fastcgi.conf`): H2O starts the app with a
/// listening socket on fd 0 and never starts it again. The mount at /app (told by
/// `FORCE_SCRIPT_NAME`: H2O sends the whole path as PATH_INFO) and at the root; more
/// requests at once than the app has threads, over H2O's kept connections; then a new
/// upload of the file, after which the new program answers and no request fails on
/// the way (the snippet's `FCGI_PROCESSES`: without it the app exits, and H2O answers
/// 503 until it is restarted).
#[test]
fn h2o_fastcgi_spawn() {
    let dir = TempDir::new("h2o");
    let exe = dir.join("mysite.fcgi");
    fs::copy(example("echo"), &exe).unwrap();
    let web = h2o(
        &dir,
        &snippet("h2o-fastcgi.conf", &[("{APP}", &exe.display().to_string())]),
    );
    check_mount(web.port, "/app", "fastcgi");
    check_mount(web.port, "", "fastcgi");
    redirects_keep_the_port(web.port);

    // H2O keeps every connection it opens (the snippet's keep-alive), more than the 8
    // the app serves at once: 16 requests at once, twice, are all answered in turn,
    // idle connections parked while others wait (before, they waited for H2O's
    // 10 s keep-alive timeout).
    for round in 0..2 {
        let t0 = Instant::now();
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let port = web.port;
                std::thread::spawn(move || {
                    try_http_request(
                        port,
                        "GET",
                        &format!("/app/sleep?ms=300&i={i}"),
                        &[],
                        Body::None,
                        Duration::from_secs(30),
                    )
                    .map(|r| r.status)
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), Ok(200), "round {round}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "round {round}: 16 requests of 0.3 s on 8 threads took {:?}",
            t0.elapsed()
        );
    }

    upload(&example("hello"), &exe);
    let uploaded = Instant::now();
    // Each `paths:` entry spawned a process of its own; each takes the new program
    // over on its own, and every answer meanwhile is a 200 from the old or the new.
    for target in ["/app/posts/1", "/posts/2"] {
        let mut answers = 0;
        loop {
            let r = try_http_request(
                web.port,
                "GET",
                target,
                &[],
                Body::None,
                Duration::from_secs(10),
            )
            .unwrap_or_else(|e| {
                panic!(
                    "{target}: request {answers} after the upload: {e}\n{}",
                    web.group.logs()
                )
            });
            assert_eq!(
                r.status,
                200,
                "{target}: request {answers} after the upload: {r:?}\n{}",
                web.group.logs()
            );
            answers += 1;
            if r.text() == format!("Hello from {target}\n") {
                break;
            }
            assert!(
                uploaded.elapsed() < Duration::from_secs(15),
                "{target}: the new program did not take over within 15 s\n{}",
                web.group.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    drop(web);
}

/// Apache `ProxyPass "/app/" "fcgi://127.0.0.1:PORT/"` to a `--listen` server.
#[test]
fn apache_proxy_fcgi() {
    let dir = TempDir::new("apache-fcgi");
    let app = App::start(&dir, true, &[]);
    let port = app.listen.port().to_string();
    let web = apache(
        &dir,
        &snippet("apache-proxy-fcgi.conf", &[("{PORT}", &port)]),
    );
    let answers = check_mount(web.port, "/app", "fastcgi");
    assert_eq!(pids(&answers), BTreeSet::from([app.pid()]));
    // A chunked upload: Apache passes it on as it comes, with no CONTENT_LENGTH (small
    // ones it reads whole first and gives a length); the body is all of FCGI_STDIN.
    let data = noise(300 * 1024, 5);
    let j = http_request(web.port, "POST", "/app/upload", &[], Body::Chunked(&data)).echo();
    assert_eq!(
        (&j["body_len"], j["body_sha256"].as_str()),
        (&json!(data.len()), Some(sha256_hex(&data).as_str())),
        "{j}"
    );
    assert!(j["vars"].get("CONTENT_LENGTH").is_none(), "{j}");
    // The Authorization header reaches the app (Apache keeps it from FastCGI
    // backends unless told otherwise).
    let j = http_request(
        web.port,
        "GET",
        "/app/me",
        &[("Authorization", "Bearer t0k")],
        Body::None,
    )
    .echo();
    assert_eq!(j["headers"]["authorization"], "Bearer t0k", "{j}");
    drop(web);
}

/// The same with `ProxyFCGIBackendType GENERIC` (Apache's advice for backends other
/// than PHP-FPM), which sends the backend path alone as `SCRIPT_FILENAME` (`/posts/1`,
/// not `proxy:fcgi://127.0.0.1:PORT/posts/1`): the same mount.
#[test]
fn apache_proxy_fcgi_generic_backend_type() {
    let dir = TempDir::new("apache-fcgi-generic");
    let app = App::start(&dir, true, &[]);
    let port = app.listen.port();
    let web = apache(
        &dir,
        &format!(
            "<Location \"/gen/\">
    ProxyFCGIBackendType GENERIC
    CGIPassAuth On
</Location>
ProxyPass \"/gen/\" \"fcgi://127.0.0.1:{port}/\"
"
        ),
    );
    let answers = check_mount(web.port, "/gen", "fastcgi");
    assert_eq!(pids(&answers), BTreeSet::from([app.pid()]));
    let j = http_request(web.port, "GET", "/gen/posts/1?x=1", &[], Body::None).echo();
    assert_eq!(j["vars"]["SCRIPT_FILENAME"], "/posts/1", "{j}");
    drop(web);
}

/// The streaming options the snippet gives as comments, uncommented, each on its own
/// (a `<Proxy>` block for the URL a ProxyPass names sets that ProxyPass's worker too):
/// the ProxyPass with `flushpackets=on`, and `SetHandler` with a `<Proxy>` block that
/// sets it. Each passes the first chunk of a stream on before the second is written
/// (with `flushpackets=off`, Apache's default, both came at the end).
#[test]
fn apache_proxy_fcgi_streams_with_flushpackets() {
    let dir = TempDir::new("apache-fcgi-flush");
    let app = App::start(&dir, true, &[]);
    let port = app.listen.port().to_string();
    let text = snippet("apache-proxy-fcgi.conf", &[("{PORT}", &port)]);
    let plain = format!("ProxyPass \"/app/\" \"fcgi://127.0.0.1:{port}/\"\n");
    assert!(text.contains(&plain), "{text}");
    let uncomment = |mut site: String, lines: &[String]| {
        for line in lines {
            assert!(site.contains(line.as_str()), "the snippet has no {line:?}");
            site = site.replacen(line.as_str(), &line[1..], 1);
        }
        site
    };
    let proxy_pass = uncomment(
        text.replacen(&plain, "", 1),
        &[format!(
            "#ProxyPass \"/app/\" \"fcgi://127.0.0.1:{port}/\" flushpackets=on"
        )],
    );
    let mut set_handler = uncomment(
        text.replacen(&plain, "", 1),
        &[
            format!("#<Proxy \"fcgi://127.0.0.1:{port}/\">"),
            "#    ProxySet flushpackets=on".to_owned(),
            "#</Proxy>".to_owned(),
        ],
    );
    set_handler.push_str(&format!(
        "<Location \"/app/\">\n    SetHandler \"proxy:fcgi://127.0.0.1:{port}/\"\n</Location>\n"
    ));
    for (how, site) in [("ProxyPass", proxy_pass), ("SetHandler", set_handler)] {
        let web = apache(&dir, &site);
        let t = "/app/stream?chunks=2&size=5&delay_ms=3000";
        let (first, all, total) = timed_get(web.port, t, b"aaaaa");
        let text = String::from_utf8_lossy(&all);
        assert!(text.contains("bbbbb"), "{how}: GET {t}: {text}");
        assert!(
            total >= Duration::from_millis(2900),
            "{how}: GET {t}: {total:?}"
        );
        let first = first.expect("the first chunk");
        assert!(
            first < Duration::from_millis(2000),
            "{how}: GET {t}: the first chunk came after {first:?}, with the rest ({total:?})"
        );
        drop(web);
    }
    drop(app);
}

/// The same without the trailing slashes, `ProxyPass "/bare" "fcgi://127.0.0.1:PORT"`,
/// which also proxies `/bare` itself (with `SCRIPT_FILENAME=proxy:fcgi://...:PORT/`, as
/// for `/bare/`): the prefix is `/bare` for both, and the app's root is `""` or `/`.
#[test]
fn apache_proxy_fcgi_without_trailing_slashes() {
    let dir = TempDir::new("apache-fcgi-bare");
    let app = App::start(&dir, true, &[]);
    let port = app.listen.port();
    let web = apache(
        &dir,
        &format!("ProxyPass \"/bare\" \"fcgi://127.0.0.1:{port}\"\n"),
    );
    for (target, path) in [
        ("/bare", ""),
        ("/bare/", "/"),
        ("/bare/posts/1?x=1", "/posts/1"),
    ] {
        let r = http_request(web.port, "GET", target, &[], Body::None);
        assert_eq!(r.status, 200, "{target}: {r:?}");
        let j: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(j["script_name"], "/bare", "{target}: {j}");
        assert_eq!(j["path_info"], path, "{target}: {j}");
    }
    drop(web);
}

/// Apache `ProxyPass /scgi/ scgi://127.0.0.1:PORT/` to a `--protocol scgi` server.
#[test]
fn apache_proxy_scgi() {
    let dir = TempDir::new("apache-scgi");
    let app = App::start(&dir, true, &["--protocol", "scgi"]);
    let port = app.listen.port().to_string();
    let web = apache(
        &dir,
        &snippet("apache-proxy-scgi.conf", &[("{PORT}", &port)]),
    );
    let answers = check_mount(web.port, "/scgi", "scgi");
    assert_eq!(pids(&answers), BTreeSet::from([app.pid()]));
    // The snippet's CGIPassAuth passes the Authorization header on.
    let j = http_request(
        web.port,
        "GET",
        "/scgi/me",
        &[("Authorization", "Basic dXNlcjpwdw==")],
        Body::None,
    )
    .echo();
    assert_eq!(j["headers"]["authorization"], "Basic dXNlcjpwdw==", "{j}");
    drop(web);
}

// ---- the restart script ----

/// Requests through the web server, one after another every few ms, until stopped.
struct Poller {
    stop: Arc<AtomicBool>,
    /// The pid of each answer, or what went wrong.
    results: Arc<Mutex<Vec<Result<u32, String>>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    fn start(port: u16, target: &str) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Vec::new()));
        let (st, res, target) = (stop.clone(), results.clone(), target.to_owned());
        let handle = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let t = Duration::from_secs(10);
                let r = match try_http_request(port, "GET", &target, &[], Body::None, t) {
                    Ok(r) if r.status == 200 => serde_json::from_slice::<Value>(&r.body)
                        .map(|j| pid_of(&j))
                        .map_err(|e| format!("{e}: {}", r.text())),
                    Ok(r) => Err(format!("status {}: {}", r.status, r.text())),
                    Err(e) => Err(e),
                };
                res.lock().unwrap().push(r);
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        Poller {
            stop,
            results,
            handle: Some(handle),
        }
    }

    /// Answers from `pid` so far.
    fn answers_from(&self, pid: u32) -> usize {
        let r = self.results.lock().unwrap();
        r.iter().filter(|x| x.as_ref().ok() == Some(&pid)).count()
    }

    /// Waits until `pid` has answered `n` polls.
    fn wait_for(&self, pid: u32, n: usize) {
        assert!(
            wait_until(Duration::from_secs(10), || self.answers_from(pid) >= n),
            "server {pid} answered {} polls in 10 s",
            self.answers_from(pid)
        );
    }

    fn finish(mut self) -> Vec<Result<u32, String>> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().expect("poller");
        }
        std::mem::take(&mut *self.results.lock().unwrap())
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A raw FastCGI GET on the Unix socket: the pid that answers.
fn pid_behind_socket(sock: &Path) -> u32 {
    let mut s =
        UnixStream::connect(sock).unwrap_or_else(|e| panic!("connect to {}: {e}", sock.display()));
    s.write_all(&request(1, false, &get("/direct", ""), b""))
        .unwrap();
    let reply = read_reply(&mut s, 1, Duration::from_secs(10));
    pid_of(&reply.json())
}

/// servers/restart.sh, the Django runfcgi recipe: started, then run twice more while a
/// client polls through nginx every few ms. No poll may fail; each server answers in
/// turn and the old one exits; the socket file and the pidfile end up the last
/// server's. Then `kill $(cat PIDFILE)` alone stops it and both files are removed.
#[test]
fn restart_script_twice_under_load_then_kill() {
    let dir = TempDir::new("restart");
    let exe = example("echo");
    let root = dir.join("mysite");
    fs::create_dir_all(&root).unwrap();
    let script = root.join("restart.sh");
    fs::write(
        &script,
        snippet(
            "restart.sh",
            &[
                ("{ROOT}", &root.to_string_lossy()),
                ("{APP}", &exe.to_string_lossy()),
            ],
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let sock = root.join("mysite.sock");
    let pidfile = root.join("mysite.pid");
    let errlog = root.join("mysite.log");
    let mut servers = Detached {
        exe: exe.clone(),
        pids: Vec::new(),
    };
    let mut runs = 0;
    let mut restart = |servers: &mut Detached| -> u32 {
        runs += 1;
        let log = dir.join(&format!("restart-{runs}.log"));
        let (status, out) = run_script("restart.sh", &mut Command::new(&script), &log);
        let pid = read_pids(&pidfile).first().copied();
        servers.pids.extend(pid);
        assert!(
            status.success(),
            "restart.sh (run {runs}): {status}\n{out}\n{}",
            fs::read_to_string(&errlog).unwrap_or_default()
        );
        pid.unwrap_or_else(|| panic!("no pid in {} after run {runs}", pidfile.display()))
    };

    // A pidfile left over from before (a reboot) that names some other process: the
    // script starts the server and leaves that process alone.
    let mut bystander = Command::new("sleep").arg("30").spawn().unwrap();
    fs::write(&pidfile, format!("{}\n", bystander.id())).unwrap();
    let first = restart(&mut servers);
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "restart.sh killed the process a stale pidfile named"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
    assert!(is_socket(&sock), "no socket after the first start");
    let backend = format!("unix:{}", sock.display());
    let web = nginx_snippet(&dir, "nginx-fastcgi.conf", &backend);
    let poller = Poller::start(web.port, "/app/poll");
    poller.wait_for(first, 20);

    let second = restart(&mut servers);
    assert_ne!(second, first);
    poller.wait_for(second, 20);
    assert!(
        wait_until(Duration::from_secs(10), || !running(first)),
        "the first server {first} still runs after the restart"
    );

    let third = restart(&mut servers);
    assert_ne!(third, second);
    poller.wait_for(third, 20);
    assert!(
        wait_until(Duration::from_secs(10), || !running(second)),
        "the second server {second} still runs after the restart"
    );
    let results = poller.finish();

    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let mut per_pid: BTreeMap<u32, usize> = BTreeMap::new();
    for pid in results.iter().filter_map(|r| r.as_ref().ok()) {
        *per_pid.entry(*pid).or_default() += 1;
    }
    assert!(
        failed.is_empty(),
        "{} of {} polls failed during the restarts: {failed:?}\nanswered: {per_pid:?}\n{}",
        failed.len(),
        results.len(),
        web.group.logs()
    );
    assert!(
        [first, second, third]
            .iter()
            .all(|p| per_pid.contains_key(p)),
        "not every server answered: {per_pid:?}"
    );
    assert!(per_pid.len() >= 3, "{per_pid:?}");

    // The files are the last server's: the old ones did not remove them on their way out.
    assert_eq!(read_pids(&pidfile), vec![third], "pidfile");
    assert!(is_socket(&sock), "the socket file is gone");
    assert_eq!(pid_behind_socket(&sock), third, "who answers on the socket");

    // `kill $(cat PIDFILE)`: the server stops and removes both files.
    let (status, out) = run_script(
        "kill",
        Command::new("/bin/sh")
            .arg("-c")
            .arg("kill $(cat \"$1\")")
            .arg("sh")
            .arg(&pidfile),
        &dir.join("kill.log"),
    );
    assert!(status.success(), "kill: {status} {out}");
    assert!(
        wait_until(Duration::from_secs(10), || !running(third)),
        "server {third} still runs 10 s after kill"
    );
    assert!(!sock.exists(), "socket file left behind");
    assert!(!pidfile.exists(), "pidfile left behind");
    let log = fs::read_to_string(&errlog).unwrap_or_default();
    assert!(!log.contains("ERROR"), "errors in the servers' log:\n{log}");
    drop(web);
}

// ---- systemd ----

/// The value of `key=` in a unit file (the last one; `Environment=` lines all).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_owned())
        .collect()
}

/// servers/mysite.socket + mysite.service, run the way systemd would run them (with
/// systemd-socket-activate: the socket on fd 3, LISTEN_FDS=1); nginx in front. SIGTERM
/// stops the app, which leaves systemd's socket file alone.
#[test]
fn systemd_socket_activation() {
    need(SOCKET_ACTIVATE);
    let dir = TempDir::new("systemd");
    let exe = example("echo");
    let sock = dir.join("mysite.sock");
    let socket_unit = snippet("mysite.socket", &[("{SOCKET}", &sock.to_string_lossy())]);
    let service = snippet("mysite.service", &[("{APP}", &exe.to_string_lossy())]);
    let listen = unit_values(&socket_unit, "ListenStream");
    assert_eq!(listen, vec![sock.to_string_lossy().into_owned()]);
    let exec_start = unit_values(&service, "ExecStart");
    let argv: Vec<&str> = exec_start
        .last()
        .expect("ExecStart=")
        .split_whitespace()
        .collect();
    let mut cmd = Command::new(SOCKET_ACTIVATE);
    cmd.arg("-l").arg(&sock);
    for e in unit_values(&service, "Environment") {
        cmd.arg("-E").arg(e);
    }
    cmd.arg("--").args(&argv);
    let mut app = spawn_group("systemd-socket-activate", &mut cmd, &dir.join("app.log"));
    assert!(
        wait_until(Duration::from_secs(10), || is_socket(&sock)),
        "no socket\n{}",
        app.logs()
    );

    let backend = format!("unix:{}", sock.display());
    let web = nginx_snippet(&dir, "nginx-fastcgi.conf", &backend);
    let mut answers = check_mount(web.port, "/app", "fastcgi");
    answers.extend(check_mount(web.port, "", "fastcgi"));
    // systemd-socket-activate execs the app in its own place on the first connection.
    assert_eq!(pids(&answers), BTreeSet::from([app.pid()]));

    signal(app.pid() as i32, libc::SIGTERM);
    let status = app.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "after SIGTERM: {status:?}\n{}",
        app.logs()
    );
    assert!(is_socket(&sock), "the app removed systemd's socket file");
    drop(web);
}

/// The axum example (feature `tower`) behind nginx, on a standalone socket: routes
/// resolve app-relative under /app/, the redirect carries the prefix, the upload
/// streams in, the streamed response arrives whole.
#[cfg(feature = "axum")]
#[test]
fn nginx_axum_standalone_socket() {
    let dir = TempDir::new("nginx-axum");
    let app = App::start_example("axum", &dir, false, &[]);
    let backend = app.listen.nginx();
    let web = nginx_snippet(&dir, "nginx-fastcgi.conf", &backend);
    let origin = format!("http://127.0.0.1:{}", web.port);
    let r = http_request(web.port, "GET", "/app/posts/17", &[], Body::None);
    assert_eq!((r.status, r.text()), (200, "<h1>Post 17</h1>".to_owned()));
    let r = http_request(web.port, "GET", "/app/", &[], Body::None);
    assert!(
        r.text().contains(r#"<a href="/app/posts/1">"#),
        "{}",
        r.text()
    );
    let r = http_request(web.port, "GET", "/app/go", &[], Body::None);
    assert_eq!(r.status, 303);
    let loc = r.header("location").unwrap_or_default();
    // Debian's fastcgi_params send HTTP_HOST without the port; the conf's own
    // HTTP_HOST after the include wins, so the port is kept.
    assert_eq!(loc, format!("{origin}/app/posts/1"));
    let r = http_request(
        web.port,
        "POST",
        "/app/greet",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Body::Fixed(b"name=Bo"),
    );
    assert_eq!(r.text(), "<p>Hello, Bo!</p>");
    let body = noise(300 * 1024, 8);
    let r = http_request(web.port, "POST", "/app/upload", &[], Body::Fixed(&body));
    let j: Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(j["sha256"], sha256_hex(&body));
    let r = http_request(
        web.port,
        "GET",
        "/app/stream?n=3&delay_ms=50",
        &[],
        Body::None,
    );
    assert_eq!(r.text().matches("line ").count(), 3, "{}", r.text());
    let r = http_request(web.port, "GET", "/app/api/info", &[], Body::None);
    let j: Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(
        (j["script_name"].as_str(), j["path"].as_str()),
        (Some("/app"), Some("/api/info"))
    );
    // Server-sent events stream through nginx's default buffering: the app's
    // responses of type text/event-stream carry X-Accel-Buffering: no.
    let (first, body, total) = timed_get(web.port, "/app/events?n=2&delay_ms=1500", b"event 0");
    let first = first.unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&body)));
    assert!(
        first < Duration::from_millis(1000) && total >= Duration::from_millis(1400),
        "first event after {first:?}, the stream ended after {total:?}"
    );
    assert!(String::from_utf8_lossy(&body).contains("data: event 1"));
    let r = http_request(web.port, "GET", "/app/api/client?x=1", &[], Body::None);
    let j: Value = serde_json::from_str(&r.text()).unwrap();
    crate::apache::assert_client_is_loopback(&j);
    assert_eq!(j["original_uri"], "/app/api/client?x=1");
    assert_eq!(j["uri"], "/api/client?x=1");
    drop(web);
    drop(app);
}

/// The FastCGI authorizer role under a real web server: lighttpd's `"mode" =>
/// "authorizer"` asks the app about each request under `/status/` (BEGIN_REQUEST role
/// 2, with no SCRIPT_NAME or PATH_INFO: the app's path comes from REQUEST_URI). The
/// echo app authorizes with a 200 whose `Variable-*` headers are all it sends, and
/// lighttpd then serves the file; any other answer (here /status/403 and /401, by the
/// echo app's route) goes to the client whole.
#[test]
fn lighttpd_authorizer_mode() {
    let dir = TempDir::new("lighttpd-authorizer");
    let app = App::start(&dir, false, &[]);
    let Listen::Socket(sock) = &app.listen else {
        unreachable!()
    };
    let htdocs = dir.join("lighttpd/htdocs");
    fs::create_dir_all(htdocs.join("status")).unwrap();
    for name in ["200", "403", "401"] {
        fs::write(htdocs.join("status").join(name), "the file\n").unwrap();
    }
    let site = format!(
        "server.modules += ( \"mod_fastcgi\" )
fastcgi.server += ( \"/status/\" => ((
    \"socket\" => \"{}\",
    \"mode\" => \"authorizer\",
    \"docroot\" => \"{}\",
    \"check-local\" => \"disable\",
)) )
",
        sock.display(),
        htdocs.display()
    );
    let web = lighttpd(&dir, &site);
    let r = http_request(web.port, "GET", "/status/200", &[], Body::None);
    assert_eq!(
        (r.status, r.text()),
        (200, "the file\n".to_string()),
        "{r:?}"
    );
    for (target, status, query) in [("/status/403", 403, ""), ("/status/401?x=1", 401, "x=1")] {
        let r = http_request(web.port, "GET", target, &[], Body::None);
        assert_eq!(r.status, status, "{target}: {r:?}");
        let j = r.json();
        assert_eq!(
            (j["role"].as_str(), j["query"].as_str(), pid_of(&j)),
            (Some("Authorizer"), Some(query), app.pid()),
            "{target}: {j}"
        );
        let path = target.split('?').next().unwrap_or(target);
        assert_eq!(j["path_info"], path, "{target}: {j}");
    }
    drop(web);
}

// ---- large response heads, X-Sendfile, X-Accel-Redirect ----

/// The head the big_heads fixture sends for `/head?name=x-big&size=SIZE` with `body`.
fn big_head(size: usize, body: &[u8]) -> String {
    format!(
        "Status: 200 OK\r\nx-big: {}\r\nContent-Length: {}\r\n\r\n",
        "v".repeat(size),
        body.len()
    )
}

/// A response head over 64 KiB leaves in STDOUT records of at most 65535 bytes that
/// join byte for byte, and the connection serves the next request. nginx answers 502
/// ("upstream sent too big header") for a head past `fastcgi_buffer_size` (one page,
/// 4 KiB here: the head and the 8-byte record header must fit), and the app serves on;
/// with the buffer raised, a head split across records reaches the client whole. An
/// `X-Accel-Redirect` to an `internal` location serves the file instead of the app's body.
#[test]
fn nginx_large_response_heads_and_x_accel_redirect() {
    let dir = TempDir::new("nginx-big-heads");
    let app = App::start_example("big_heads", &dir, false, &[]);
    let Listen::Socket(sock) = &app.listen else {
        unreachable!()
    };

    // Raw FastCGI, as the web server: 70 KiB and 1 MiB heads, then a small answer on
    // the same connection.
    let mut s = UnixStream::connect(sock).unwrap();
    for (id, size) in [(1u16, 70 * 1024), (2, 1 << 20)] {
        s.write_all(&request(
            id,
            true,
            &get("/head", &format!("size={size}")),
            b"",
        ))
        .unwrap();
        let r = read_reply(&mut s, id, Duration::from_secs(10));
        assert_eq!(r.end, Some((0, 0)), "{size}: {:?}", r.end);
        let stdout: Vec<usize> = r
            .records
            .iter()
            .filter(|c| c.t == STDOUT && !c.content.is_empty())
            .map(|c| c.content.len())
            .collect();
        assert!(stdout.len() > size / 65535, "{size}: {stdout:?}");
        let (head, body) = r.head_and_body();
        assert!(
            body.starts_with(b"pid="),
            "{size}: {:?}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            format!("{head}\r\n") == big_head(size, &body),
            "{size}: the head differs ({} bytes)",
            head.len()
        );
    }
    s.write_all(&request(3, true, &get("/", ""), b"")).unwrap();
    let r = read_reply(&mut s, 3, Duration::from_secs(10));
    assert_eq!((r.status(), r.end), (200, Some((0, 0))));
    drop(s);

    let files = dir.join("files");
    fs::create_dir_all(&files).unwrap();
    fs::write(files.join("file.txt"), "the protected file\n").unwrap();
    let backend = app.listen.nginx();
    let web = nginx(&dir, &|port| {
        format!(
            "upstream kept {{ server {backend}; keepalive 2; }}
server {{
    listen 127.0.0.1:{port};
    location /big/ {{
        fastcgi_split_path_info ^(/big)(/.*)$;
        include fastcgi_params;
        fastcgi_param PATH_INFO $fastcgi_path_info;
        fastcgi_buffer_size 128k;
        fastcgi_buffers 4 128k;
        fastcgi_busy_buffers_size 128k;
        fastcgi_keep_conn on;
        fastcgi_pass kept;
    }}
    location /protected/ {{
        internal;
        alias {}/;
    }}
    location / {{
        fastcgi_split_path_info ^()(/.*)$;
        include fastcgi_params;
        fastcgi_param PATH_INFO $fastcgi_path_info;
        fastcgi_keep_conn on;
        fastcgi_pass kept;
    }}
}}
",
            files.display()
        )
    });
    let get_ = |target: &str| http_request(web.port, "GET", target, &[], Body::None);
    let pid = format!("pid={} ", app.pid());

    // Default buffer (4 KiB): the largest x-big value that fits is 4096 - 8 (record
    // header) - 16 (status line) - 9 ("x-big: " and CRLF) - the length line and the
    // blank line.
    let r = get_("/head?size=3000");
    assert_eq!(
        (r.status, r.header("x-big").map(str::len)),
        (200, Some(3000)),
        "{r:?}"
    );
    let r = get_("/head?name=set-cookie&size=7168");
    assert_eq!(r.status, 502, "{r:?}");
    let log = fs::read_to_string(dir.join("nginx/logs/error.log")).unwrap();
    assert!(log.contains("upstream sent too big header"), "{log}");
    let r = get_("/after");
    assert!(
        r.status == 200 && r.text().starts_with(&pid),
        "{r:?} {}",
        r.text()
    );

    // fastcgi_buffer_size 128k: 70 KiB in one header line, and 200 headers.
    let r = get_("/big/head?size=71680");
    assert_eq!(r.header("x-big").map(str::len), Some(71680), "{}", r.status);
    assert!(r.text().starts_with(&pid), "{}", r.text());
    let r = get_("/big/head?name=x-many&size=100&count=200");
    assert_eq!(r.status, 200);
    for i in [0, 199] {
        assert_eq!(
            r.header(&format!("x-many-{i}")).map(str::len),
            Some(100),
            "{i}"
        );
    }

    // X-Accel-Redirect: nginx serves the file, not the app's body, and passes the
    // header on to no one; the location stays internal.
    let r = get_("/accel?uri=/protected/file.txt");
    assert_eq!(
        (r.status, r.text()),
        (200, "the protected file\n".to_string()),
        "{r:?}"
    );
    assert_eq!(r.header("x-accel-redirect"), None, "{r:?}");
    assert_eq!(get_("/accel?uri=/protected/missing").status, 404);
    assert_eq!(get_("/protected/file.txt").status, 404);
    let r = get_("/after");
    assert!(
        r.status == 200 && r.text().starts_with(&pid),
        "{r:?} {}",
        r.text()
    );
    drop(web);
}

/// lighttpd `bin-path` (the app on fd 0): heads up to 64 KiB pass, a larger one is a
/// 502 ("response headers too large") and the process serves on; with
/// `allow-x-send-file`, `X-Sendfile` serves the file instead of the app's body.
#[test]
fn lighttpd_x_sendfile_and_large_response_heads() {
    let dir = TempDir::new("lighttpd-big-heads");
    let exe = example("big_heads");
    let run = dir.join("run");
    let files = dir.join("files");
    fs::create_dir_all(&run).unwrap();
    fs::create_dir_all(&files).unwrap();
    let file = files.join("file.bin");
    let content = noise(200_000, 7);
    fs::write(&file, &content).unwrap();
    let site = format!(
        "server.modules += ( \"mod_fastcgi\" )
fastcgi.server += ( \"/\" => ((
    \"bin-path\" => \"{}\",
    \"socket\" => \"{}/app.sock\",
    \"max-procs\" => 1,
    \"check-local\" => \"disable\",
    \"fix-root-scriptname\" => \"enable\",
    \"allow-x-send-file\" => \"enable\",
)) )
",
        exe.display(),
        run.display()
    );
    let web = lighttpd(&dir, &site);
    let get_ = |target: &str| http_request(web.port, "GET", target, &[], Body::None);
    let first = get_("/");
    assert_eq!(first.status, 200, "{first:?}");
    let pid = first.text().split(' ').next().unwrap().to_owned();

    for size in [3 * 1024, 7 * 1024, 30 * 1024, 60 * 1024] {
        let r = get_(&format!("/head?name=set-cookie&size={size}"));
        assert_eq!(r.status, 200, "{size}");
        assert_eq!(r.header("set-cookie").map(str::len), Some(size), "{size}");
    }
    let r = get_("/head?name=x-many&size=100&count=200");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-many-199").map(str::len), Some(100));
    let r = get_("/head?name=set-cookie&size=71680");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(
        wait_until(Duration::from_secs(5), || {
            fs::read_to_string(dir.join("lighttpd/logs/error.log"))
                .is_ok_and(|l| l.contains("response headers too large"))
        }),
        "{}",
        web.group.logs()
    );
    let r = get_("/after");
    assert!(
        r.text().starts_with(&format!("{pid} ")),
        "{r:?} {}",
        r.text()
    );

    let r = get_(&format!("/sendfile?path={}", file.display()));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body == content,
        "the file differs ({} bytes)",
        r.body.len()
    );
    assert_eq!(r.header("x-sendfile"), None, "{r:?}");
    let r = get_(&format!("/sendfile?path={}/missing", files.display()));
    assert_eq!(r.status, 404, "{r:?}");
    let r = get_("/after");
    assert!(
        r.text().starts_with(&format!("{pid} ")),
        "{r:?} {}",
        r.text()
    );
    drop(web);
}

// ---- plain CGI behind lighttpd mod_cgi and nginx + fcgiwrap ----

const FCGIWRAP: &str = "/usr/sbin/fcgiwrap";

/// What the echo app run as plain CGI at `prefix` ("" or "/blog") must get right behind
/// any CGI server on `port`: request bodies of 0 and 10 bytes, 5 MiB with a length
/// and chunked, whole; a 404 and a panic's 500 as the app answered them; a 2 MiB upload
/// the app never reads still gets its answer; a 20 MiB response whole; HEAD with no
/// body. `log()` is where the server puts a CGI program's stderr: the panic's line and
/// a `log::warn!` line must reach it.
fn cgi_checks(port: u16, prefix: &str, log: &dyn Fn() -> String) {
    let big = noise(5 << 20, port as u64);
    let bodies: [(&str, &[u8], bool); 5] = [
        ("empty", b"", false),
        ("10 bytes", b"0123456789", false),
        ("5 MiB", &big, false),
        ("5 MiB chunked", &big, true),
        ("11 bytes chunked", b"hello world", true),
    ];
    for (what, data, chunked) in bodies {
        let t = format!("{prefix}/upload?what=1");
        let body = if chunked {
            Body::Chunked(data)
        } else {
            Body::Fixed(data)
        };
        let ct = [("Content-Type", "application/octet-stream")];
        let j = http_request(port, "POST", &t, &ct, body).echo();
        assert_eq!(
            (&j["mode"], &j["method"], &j["script_name"], &j["path_info"]),
            (
                &json!("cgi"),
                &json!("POST"),
                &json!(prefix),
                &json!("/upload")
            ),
            "POST {t} ({what}): {j}"
        );
        assert_eq!(
            (&j["body_len"], j["body_sha256"].as_str()),
            (&json!(data.len()), Some(sha256_hex(data).as_str())),
            "POST {t} ({what}): {j}"
        );
        // A body the server has read whole is described by its length alone (nginx
        // passes the client's Transfer-Encoding beside the CONTENT_LENGTH).
        let h = &j["headers"];
        assert!(
            h.get("content-length").is_some() != h.get("transfer-encoding").is_some(),
            "POST {t} ({what}): {j}"
        );
    }

    let r = http_request(
        port,
        "GET",
        &format!("{prefix}/status/404"),
        &[],
        Body::None,
    );
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["path_info"], "/status/404", "{r:?}");
    // The body left unread: drained by the app, so the server still passes its answer.
    let two = noise(2 << 20, 3);
    for body in [Body::Fixed(&two), Body::Chunked(&two)] {
        let r = http_request(port, "POST", &format!("{prefix}/status/404"), &[], body);
        assert_eq!(r.status, 404, "{r:?}");
    }

    let r = http_request(port, "GET", &format!("{prefix}/panic"), &[], Body::None);
    assert_eq!(
        (r.status, r.text().as_str()),
        (500, "500 Internal Server Error\n"),
        "{r:?}"
    );
    let r = http_request(port, "GET", &format!("{prefix}/log"), &[], Body::None);
    assert_eq!(r.status, 200, "{r:?}");
    let panicked = format!("handler panicked on GET {prefix}/panic");
    assert!(
        wait_until(Duration::from_secs(5), || {
            let l = log();
            l.contains(&panicked) && l.contains("echo: /log was requested")
        }),
        "the CGI program's stderr lines are not in the log:\n{}",
        log()
    );

    let t = format!("{prefix}/stream?chunks=20&size=1048576");
    let r = http_request(port, "GET", &t, &[], Body::None);
    assert_eq!(r.status, 200, "GET {t}");
    assert_eq!(r.body.len(), 20 << 20, "GET {t}");
    for (i, c) in r.body.chunks(1 << 20).enumerate() {
        assert!(
            c.iter().all(|&b| b == b'a' + i as u8),
            "GET {t}: chunk {i} differs"
        );
    }

    let r = http_request(port, "HEAD", &format!("{prefix}/posts/1"), &[], Body::None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    assert!(r.body.is_empty(), "{r:?}");
}

/// The echo app as plain CGI at /blog and at the root, on `port`: both mounts right,
/// one process per request, and for /blog/posts/1 the variables the server sent, with
/// its own `script_name` (lighttpd's names the program, nginx's the prefix).
fn cgi_mounts_at_blog_and_root(port: u16, script_name: &str) {
    let mut answers = check_mount(port, "/blog", "cgi");
    answers.extend(check_mount(port, "", "cgi"));
    assert_eq!(
        pids(&answers).len(),
        answers.len(),
        "CGI: one process per request"
    );
    let j = &answers[0];
    assert_eq!(
        (
            &j["vars"]["SCRIPT_NAME"],
            &j["vars"]["PATH_INFO"],
            &j["vars"]["REQUEST_URI"]
        ),
        (
            &json!(script_name),
            &json!("/posts/1"),
            &json!("/blog/posts/1?x=1&y=two")
        ),
        "{j}"
    );
}

/// What the same site must get right behind any CGI server on `port`: an encoded
/// slash stays one in the app's URI (the servers decode it in PATH_INFO), redirects
/// keep the port, and [`cgi_checks`] at /blog and at the root.
fn cgi_site_checks(port: u16, log: &dyn Fn() -> String) {
    for (target, uri) in [
        ("/blog/files/a%2Fb?x=1", "/files/a%2Fb?x=1"),
        ("/p/a%2Fb", "/p/a%2Fb"),
    ] {
        let j = http_request(port, "GET", target, &[], Body::None).echo();
        assert_eq!(j["uri"], uri, "{j}");
    }
    redirects_keep_the_port_under(port, "/blog");
    cgi_checks(port, "/blog", log);
    cgi_checks(port, "", log);
}

/// `target` streams its first chunk (`first`) 3 s before the rest: the first must
/// reach the client long before the end.
fn streams_as_written(port: u16, target: &str, first: &[u8]) {
    let (seen, all, total) = timed_get(port, target, first);
    assert!(
        total >= Duration::from_millis(2900),
        "GET {target}: {total:?}"
    );
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.starts_with("HTTP/1.1 200 ") && text.contains("bbbbb"),
        "GET {target}: {text}"
    );
    let seen = seen.expect("the first chunk");
    assert!(
        seen < Duration::from_millis(2000),
        "GET {target}: the first chunk came after {seen:?}, with the rest ({total:?})"
    );
}

/// servers/lighttpd-cgi.conf: lighttpd `mod_cgi` (`cgi.assign`) runs the app as plain
/// CGI: at the root and in /blog/, each reached through `url.rewrite-if-not-file` as
/// `mysite.fcgi/...` (the .htaccess way: static files beside it are served as they
/// are). lighttpd sends
/// SCRIPT_NAME=/blog/mysite.fcgi, PATH_INFO=/posts/1 and the client's REQUEST_URI
/// (and CONTENT_LENGTH=0 for a GET, which the app does not see as a header), and
/// decodes a chunked upload itself (CONTENT_LENGTH,
/// no HTTP_TRANSFER_ENCODING). A CGI program's stderr goes to lighttpd's own stderr
/// (`server.breakagelog` if set), not to `server.errorlog`.
#[test]
fn lighttpd_mod_cgi() {
    let dir = TempDir::new("lighttpd-cgi");
    let htdocs = dir.join("lighttpd/htdocs");
    fs::create_dir_all(htdocs.join("blog")).unwrap();
    echo_site(&htdocs);
    echo_site(htdocs.join("blog"));
    fs::write(htdocs.join("blog/static.txt"), "static\n").unwrap();
    let site = snippet("lighttpd-cgi.conf", &[]);
    let web = lighttpd(&dir, &site);
    let stderr = dir.join("lighttpd/logs/stdout.log");
    let log = || fs::read_to_string(&stderr).unwrap_or_default();

    cgi_mounts_at_blog_and_root(web.port, "/blog/mysite.fcgi");
    // The folder without its slash is the app's root (SCRIPT_NAME, no PATH_INFO).
    let j = http_request(web.port, "GET", "/blog", &[], Body::None).echo();
    assert_eq!(
        (&j["script_name"], &j["path_info"], &j["uri"]),
        (&json!("/blog"), &json!(""), &json!("/")),
        "{j}"
    );
    let r = http_request(web.port, "GET", "/blog/static.txt", &[], Body::None);
    assert_eq!((r.status, r.text().as_str()), (200, "static\n"), "{r:?}");
    cgi_site_checks(web.port, &log);
    streams_as_written(
        web.port,
        "/blog/stream?chunks=2&size=5&delay_ms=3000",
        b"aaaaa",
    );

    // A settings file the app cannot use: a 500 and exit status 1. lighttpd sends
    // SIGTERM to a CGI program as soon as its response is complete: the reason is
    // logged before the 500 is written (after it, 9 of 40 lines came).
    fs::write(htdocs.join("blog/mysite.fcgi.env"), "FCGI_THREADS=abc\n").unwrap();
    for i in 0..10 {
        let r = http_request(web.port, "GET", "/blog/x", &[], Body::None);
        assert_eq!(
            (r.status, r.text().as_str()),
            (500, "500 Internal Server Error\n"),
            "{r:?}"
        );
        let n = i + 1;
        assert!(
            wait_until(Duration::from_secs(5), || {
                log().matches("invalid FCGI_THREADS").count() >= n
            }),
            "request {n}: the reason is not in the log:\n{}",
            log()
        );
    }
    drop(web);
}

/// fcgiwrap on a Unix socket in `dir`, listening, with the echo site in `dir/cgi-bin`:
/// (fcgiwrap, the site's program, the socket).
fn fcgiwrap_with_echo(dir: &TempDir) -> (Group, PathBuf, PathBuf) {
    assert!(
        Path::new(FCGIWRAP).exists(),
        "{FCGIWRAP} is not installed (apt-get install fcgiwrap)"
    );
    let bin = dir.join("cgi-bin");
    fs::create_dir_all(&bin).unwrap();
    let exe = echo_site(&bin);
    let sock = dir.join("fcgiwrap.sock");
    let mut cmd = Command::new(FCGIWRAP);
    cmd.arg("-f")
        .arg("-s")
        .arg(format!("unix:{}", sock.display()));
    let wrap = spawn_group("fcgiwrap", &mut cmd, &dir.join("fcgiwrap.log"));
    assert!(
        wait_until(Duration::from_secs(10), || is_socket(&sock)),
        "fcgiwrap did not listen\n{}",
        wrap.logs()
    );
    (wrap, exe, sock)
}

/// servers/nginx-fcgiwrap.conf: nginx `fastcgi_pass` to fcgiwrap (`apt-get install
/// fcgiwrap`), which runs the app as plain CGI: at /blog/ and at the root, the prefix split off by
/// `fastcgi_split_path_info` and `SCRIPT_FILENAME` naming the program (outside the
/// web root). fcgiwrap passes nginx's params (SCRIPT_NAME=/blog, PATH_INFO=/posts/1,
/// CONTENT_LENGTH empty for a GET, CONTENT_LENGTH and HTTP_TRANSFER_ENCODING both for
/// a chunked upload nginx has read whole, where the app sees the length alone) on top
/// of its own environment, and with `-f`
/// (Debian's default) the program's stderr to nginx's error log.
#[test]
fn nginx_fcgiwrap_cgi() {
    let dir = TempDir::new("nginx-fcgiwrap");
    let (wrap, exe, sock) = fcgiwrap_with_echo(&dir);
    let web = nginx(&dir, &|port| {
        let mut site = snippet(
            "nginx-fcgiwrap.conf",
            &[
                ("{LISTEN}", &format!("127.0.0.1:{port}")),
                ("{APP}", &exe.to_string_lossy()),
                ("{FCGIWRAP}", &format!("unix:{}", sock.display())),
            ],
        );
        // The /blog/ location again at /live/, with the buffering off its comment
        // tells a streaming app to add.
        let start = site
            .find("    location /blog/ {")
            .expect("the /blog/ location");
        let len = site[start..].find("\n    }\n").expect("its end") + "\n    }\n".len();
        let live = site[start..start + len].replace("/blog", "/live").replacen(
            "{\n",
            "{\n        fastcgi_buffering off;\n",
            1,
        );
        site.insert_str(start, &live);
        site
    });
    let error_log = dir.join("nginx/logs/error.log");
    let log = || fs::read_to_string(&error_log).unwrap_or_default();

    cgi_mounts_at_blog_and_root(web.port, "/blog");
    // nginx redirects the folder without its slash.
    let r = http_request(web.port, "GET", "/blog", &[], Body::None);
    assert_eq!(r.status, 301, "{r:?}");
    assert!(
        r.header("location").is_some_and(|l| l.ends_with("/blog/")),
        "{r:?}"
    );
    cgi_site_checks(web.port, &log);
    // fcgiwrap passes the program's output on in 8 KiB pieces (a smaller flush waits
    // for more): chunks of 64 KiB show the app's flushes going through.
    streams_as_written(
        web.port,
        "/live/stream?chunks=2&size=65536&delay_ms=3000",
        &[b'a'; 4096],
    );
    drop(web);
    drop(wrap);
}

/// `{prefix}/redirect` answers with an absolute URL under the prefix that keeps the web
/// server's port.
fn redirects_keep_the_port_under(port: u16, prefix: &str) {
    let r = http_request(port, "GET", &format!("{prefix}/redirect"), &[], Body::None);
    assert_eq!(
        (r.status, r.header("location")),
        (
            302,
            Some(format!("http://127.0.0.1:{port}{prefix}/landed").as_str())
        ),
        "{r:?}"
    );
}

// ---- HTTP/2 (cleartext, prior knowledge) from the client ----

/// Uploads of 10 bytes and 5 MiB over h2c to `prefix`, with and without a
/// content-length: each one reaches the app whole, and says SERVER_PROTOCOL=HTTP/2.0.
fn h2c_uploads_are_whole(port: u16, prefix: &str) {
    for data in [noise(10, 21), noise(5 << 20, 22)] {
        for with_length in [true, false] {
            let what = format!("{} bytes, content-length: {with_length}", data.len());
            let (status, j) = curl_h2c(
                port,
                &format!("{prefix}/upload"),
                &[],
                Some((&data, with_length)),
            );
            assert_eq!(status, 200, "{what}: {j}");
            assert_whole_body(&j, &data, &what);
            assert_eq!(j["vars"]["SERVER_PROTOCOL"], "HTTP/2.0", "{j}");
        }
    }
}

/// nginx speaking h2c to the client and FastCGI to the app: the mount prefix, the
/// protocol, cookies sent as two h2 `cookie` fields (nginx joins them with `; `), and
/// uploads without any length (h2 streams them), with request buffering on and off.
#[test]
fn nginx_fastcgi_over_h2c() {
    need(NGINX);
    let dir = TempDir::new("nginx-h2c");
    let app = App::start(&dir, false, &[]);
    let backend = app.listen.nginx();
    let h2 = free_port();
    let web = nginx(&dir, &|port| {
        let loc = |path: &str, split: &str, extra: &str| {
            format!(
                "    location {path} {{
        {extra}
        fastcgi_split_path_info ^({split})(/.*)$;
        include fastcgi_params;
        fastcgi_param HTTP_HOST $host:$server_port;
        fastcgi_param PATH_INFO $fastcgi_path_info;
        fastcgi_pass {backend};
    }}
"
            )
        };
        format!(
            "server {{
    listen 127.0.0.1:{port};
    listen 127.0.0.1:{h2} http2;
    client_max_body_size 20m;
{}{}}}
",
            loc("/live/", "/live", "fastcgi_request_buffering off;"),
            loc("/", "", "")
        )
    });
    let _ = web.port;
    for prefix in ["", "/live"] {
        let (status, j) = curl_h2c(h2, &format!("{prefix}/posts/1?x=1"), &[], None);
        assert_eq!(status, 200, "{j}");
        assert_eq!(
            (&j["script_name"], &j["path_info"], &j["uri"]),
            (&json!(prefix), &json!("/posts/1"), &json!("/posts/1?x=1")),
            "{j}"
        );
        assert_eq!(j["vars"]["SERVER_PROTOCOL"], "HTTP/2.0", "{j}");
        let (_, j) = curl_h2c(
            h2,
            &format!("{prefix}/cookies"),
            &["cookie: a=1", "cookie: b=2"],
            None,
        );
        assert_eq!(j["headers"]["cookie"], "a=1; b=2", "{j}");
        h2c_uploads_are_whole(h2, prefix);
    }
    let (status, _) = curl_h2c(h2, "/panic", &[], None);
    assert_eq!(status, 500);
    drop(web);
}

/// lighttpd (bin-path) with h2c: uploads with a content-length arrive whole. One
/// without any (an h2 streamed upload) lighttpd before 1.4.78 refuses with 411 (curl
/// may see the stream reset instead); whatever the version, the app never gets a
/// short body as a whole one.
#[test]
fn lighttpd_bin_path_over_h2c() {
    let dir = TempDir::new("lighttpd-h2c");
    let exe = echo_site(&dir);
    let r = dir.join("lighttpd");
    let site = format!(
        r#"server.feature-flags += ( "server.h2proto" => "enable", "server.h2c" => "enable" )
server.modules += ( "mod_fastcgi" )
fastcgi.server += (
    "/blog" => (( "bin-path" => "{exe}", "socket" => "{r}/blog.sock", "max-procs" => 1, "check-local" => "disable" )),
    "/" => (( "bin-path" => "{exe}", "socket" => "{r}/root.sock", "max-procs" => 1, "check-local" => "disable", "fix-root-scriptname" => "enable" )),
)
"#,
        exe = exe.display(),
        r = r.display()
    );
    let web = lighttpd(&dir, &site);
    for prefix in ["", "/blog"] {
        let (status, j) = curl_h2c(web.port, &format!("{prefix}/posts/1?x=1"), &[], None);
        assert_eq!(status, 200, "{j}");
        assert_eq!(
            (&j["script_name"], &j["path_info"], &j["uri"]),
            (&json!(prefix), &json!("/posts/1"), &json!("/posts/1?x=1")),
            "{j}"
        );
        assert_eq!(j["vars"]["SERVER_PROTOCOL"], "HTTP/2.0", "{j}");
        for data in [noise(10, 23), noise(5 << 20, 24)] {
            let (status, j) = curl_h2c(
                web.port,
                &format!("{prefix}/upload"),
                &[],
                Some((&data, true)),
            );
            assert_eq!(status, 200, "{j}");
            assert_whole_body(&j, &data, "with a content-length");
            let (status, j) = curl_h2c(
                web.port,
                &format!("{prefix}/upload"),
                &[],
                Some((&data, false)),
            );
            match status {
                0 | 411 => {}
                200 => assert_whole_body(&j, &data, "without a content-length"),
                _ => panic!("{status}: {j}"),
            }
        }
    }
    drop(web);
}

/// Apache mod_proxy_fcgi with mod_http2 (h2c): an h2 upload without a length reaches
/// the app whole (Apache gives the small one a CONTENT_LENGTH, streams the large one
/// with none).
#[test]
fn apache_proxy_fcgi_over_h2c() {
    let dir = TempDir::new("apache-fcgi-h2c");
    let app = App::start(&dir, true, &[]);
    let port = app.listen.port().to_string();
    let site = format!(
        "<IfModule !http2_module>\n  LoadModule http2_module {APACHE_MODULES}/mod_http2.so\n</IfModule>\nProtocols h2c http/1.1\nH2Direct on\n{}",
        snippet("apache-proxy-fcgi.conf", &[("{PORT}", &port)])
    );
    let web = apache(&dir, &site);
    let (status, j) = curl_h2c(web.port, "/app/posts/1?x=1", &[], None);
    assert_eq!(status, 200, "{j}");
    assert_eq!(
        (&j["script_name"], &j["path_info"], &j["uri"]),
        (&json!("/app"), &json!("/posts/1"), &json!("/posts/1?x=1")),
        "{j}"
    );
    h2c_uploads_are_whole(web.port, "/app");
    drop(web);
}

/// nginx + fcgiwrap (CGI) with `fastcgi_request_buffering off`: an h2 upload with no
/// length arrives as CONTENT_LENGTH="" and no HTTP_TRANSFER_ENCODING (h2 has none),
/// with the whole body on stdin up to end of file. The app must read it, not take it
/// for an empty body.
#[test]
fn nginx_fcgiwrap_h2c_upload_without_length() {
    let dir = TempDir::new("nginx-fcgiwrap-h2c");
    let (wrap, exe, sock) = fcgiwrap_with_echo(&dir);
    let h2 = free_port();
    let web = nginx(&dir, &|port| {
        format!(
            "server {{
    listen 127.0.0.1:{port};
    listen 127.0.0.1:{h2} http2;
    client_max_body_size 20m;
    fastcgi_request_buffering off;
    location / {{
        fastcgi_split_path_info ^()(/.*)$;
        include fastcgi_params;
        fastcgi_param SCRIPT_FILENAME {};
        fastcgi_param PATH_INFO $fastcgi_path_info;
        fastcgi_pass unix:{};
    }}
}}
",
            exe.display(),
            sock.display()
        )
    });
    h2c_uploads_are_whole(h2, "");
    drop(web);
    drop(wrap);
}

// ---- HTTPS (TLS, HTTP/1.1 and HTTP/2 by ALPN) from the client ----

/// On the same server's plain port, the app at `prefix` is not on HTTPS (no `HTTPS`
/// sent, REQUEST_SCHEME=http), and its redirect says `http://` with that port.
fn plain_is_not_https(port: u16, prefix: &str) {
    let j = http_request(port, "GET", &format!("{prefix}/posts/1"), &[], Body::None).echo();
    assert_eq!(
        (
            &j["https"],
            &j["vars"]["HTTPS"],
            &j["vars"]["REQUEST_SCHEME"],
            &j["vars"]["SERVER_PORT"]
        ),
        (
            &json!(false),
            &Value::Null,
            &json!("http"),
            &json!(port.to_string())
        ),
        "{j}"
    );
    redirects_keep_the_port_under(port, prefix);
}

/// nginx with servers/nginx-fastcgi.conf as shipped, only a TLS `listen ... ssl http2`
/// and the certificate added beside its plain `listen`. Debian's fastcgi_params sends
/// `HTTPS $https if_not_empty` (`on` over TLS, nothing on the plain port) and
/// `REQUEST_SCHEME $scheme`; SERVER_PORT is the TLS port, SERVER_PROTOCOL `HTTP/2.0`
/// over h2. Redirects keep the TLS port through the snippet's
/// `fastcgi_param HTTP_HOST $host:$server_port` (Debian's own `$host` has no port):
/// the snippet needs no change for HTTPS.
#[test]
fn nginx_fastcgi_over_https() {
    need(NGINX);
    let dir = TempDir::new("nginx-tls");
    let (cert, key) = self_signed_cert(dir.path());
    let app = App::start(&dir, false, &[]);
    let backend = app.listen.nginx();
    let tls = free_port();
    let web = nginx(&dir, &|port| {
        // `listen {LISTEN};` in the snippet: the plain port, then the TLS one. On one
        // line, as {LISTEN} occurs in a comment too.
        let listen = format!(
            "127.0.0.1:{port}; listen 127.0.0.1:{tls} ssl http2; \
             ssl_certificate {}; ssl_certificate_key {}",
            cert.display(),
            key.display()
        );
        snippet(
            "nginx-fastcgi.conf",
            &[("{LISTEN}", &listen), ("{BACKEND}", &backend)],
        )
    });
    for prefix in ["", "/app"] {
        https_checks(tls, prefix);
        plain_is_not_https(web.port, prefix);
    }
    drop(web);
}

/// lighttpd with servers/lighttpd-bin-path.conf as shipped, and mod_openssl on a second
/// port (`$SERVER["socket"]`, `ssl.engine`), where lighttpd negotiates h2 by ALPN on
/// its own. lighttpd sends `HTTPS=on` and `REQUEST_SCHEME=https` over TLS (on the plain
/// port no HTTPS and `http`), SERVER_PORT the TLS port, the client's Host (with its
/// port) as HTTP_HOST, and SSL_PROTOCOL/SSL_CIPHER: the snippet needs no change for
/// HTTPS. (HTTP/2 is on by default, `server.h2proto`; lighttpd-mod-openssl is a
/// package of its own on Debian.)
#[test]
fn lighttpd_bin_path_over_https() {
    assert!(
        Path::new("/usr/lib/lighttpd/mod_openssl.so").exists(),
        "lighttpd's TLS module is not installed (apt-get install lighttpd-mod-openssl)"
    );
    let dir = TempDir::new("lighttpd-tls");
    let (cert, key) = self_signed_cert(dir.path());
    let exe = echo_site(&dir);
    let run = dir.join("run");
    fs::create_dir_all(&run).unwrap();
    let tls = free_port();
    let site = format!(
        "{}
server.modules += ( \"mod_openssl\" )
$SERVER[\"socket\"] == \"127.0.0.1:{tls}\" {{
    ssl.engine = \"enable\"
    ssl.pemfile = \"{}\"
    ssl.privkey = \"{}\"
}}
",
        snippet(
            "lighttpd-bin-path.conf",
            &[
                ("{APP}", &exe.to_string_lossy()),
                ("{ROOT}", &run.to_string_lossy()),
            ],
        ),
        cert.display(),
        key.display()
    );
    let web = lighttpd(&dir, &site);
    for prefix in ["", "/app"] {
        https_checks(tls, prefix);
        plain_is_not_https(web.port, prefix);
    }
    drop(web);
}
