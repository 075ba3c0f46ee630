// The `fcgi-shim` tool (feature `cli`): a FastCGI load generator and request sender,
// usable against any FastCGI app — ours, libfcgi, Go, php-cgi, flup — started the way
// mod_fcgid starts it (a listening socket on fd 0) or already listening.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use fcgi_shim::record::{self, BeginRequest, Header, RecordType};

const USAGE: &str = "\
fcgi-shim: tools for FastCGI apps

  fcgi-shim bench TARGET [options]     load-test a FastCGI app
  fcgi-shim request TARGET [options]   send one request, print the response
  fcgi-shim cgi-time PROGRAM [options] time CGI start-up: exec to complete response

TARGET: --socket PATH | --tcp HOST:PORT | --spawn PROGRAM [ARG...] --
  (--spawn starts PROGRAM with a listening Unix socket on fd 0, as mod_fcgid,
  lighttpd and spawn-fcgi do, and stops it afterwards, with every process it
  started: a wrapper such as `sh -c`, `strace -f` or `perf stat` may come first)

bench options:
  -c, --concurrency N   connections at once (default 1)
  --param NAME=VALUE    set (or override) a FastCGI param, e.g. SCRIPT_FILENAME=/x.php
  --keep-conn           reuse each connection (FCGI_KEEP_CONN, as nginx keepalive);
                        default: a new connection per request (as mod_fcgid)
  -d, --duration SECS   how long to measure (default 5)
  -n, --requests N      send exactly N measured requests instead (in the output,
                        requests + errors = N)
  --rate R              an open loop: R requests/s in all, each connection sending
                        on its own schedule (every N/R s) whether or not the app has
                        kept up; latency counts from when a request was due, so a
                        late app's queue shows in it (as wrk2). Default: a closed
                        loop, each connection sending as soon as its last answer came
  --warmup SECS         send requests this long before measuring (default 1); they
                        are not counted, but reported as warm-up requests
  --path PATH           PATH_INFO (default /)
  --body-size BYTES     POST a body of this many 'x' bytes (default: GET, no body)
  --body-file PATH      POST the contents of PATH as the body (- : standard input,
                        read once); the same body with every request
  --json                one JSON object on stdout
  --timeout SECS        how long a read or write may wait for the app (default 30);
                        longer is an error
  An error is a request that got no END_REQUEST (a connection refused or closed,
  the timeout), a protocol status other than 0, or a status of 400 or more. With no
  request answered at all, bench says so and exits 1.
request options: --path, --query, --method, --body-size, --body-file, --param,
  --timeout, --header NAME=VALUE (as HTTP_NAME; Content-Type and Content-Length
  become CONTENT_TYPE and CONTENT_LENGTH, as a web server sends them). The response
  is printed as it arrives; one cut short (no END_REQUEST) exits 1 after what came.
A body is sent as FCGI_STDIN with CONTENT_LENGTH set to its length and CONTENT_TYPE
application/octet-stream unless --header Content-Type says otherwise; the method is
POST unless --method says otherwise. --header Content-Length must match the body
(--param CONTENT_LENGTH=N sends any value). --param overrides every variable.
cgi-time options: -n N (default 200), --path PATH, --env NAME=VALUE; prints the median
  and p90
Bodies above 1 MiB are written by a second thread while the response is read, so a
streaming echo cannot deadlock. --json adds max latency, per-connection request counts,
and with --spawn the app's pid and its RSS before the first request. With --spawn,
the CPU time per request of the app (every thread and child process) and of the load
generator is reported too.
";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fcgi-shim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args[0] == "--help" || args[0] == "-h" {
        print!("{USAGE}");
        return Ok(());
    }
    let cmd = args.remove(0);
    let run: fn(Opts) -> Result<()> = match cmd.as_str() {
        "bench" => bench,
        "request" => request,
        "cgi-time" => cgi_time,
        other => bail!("unknown command {other:?}; try --help"),
    };
    let o = Opts::parse(args)?;
    if o.help {
        print!("{USAGE}");
        return Ok(());
    }
    run(o)
}

#[derive(Debug, Default)]
struct Opts {
    socket: Option<PathBuf>,
    tcp: Option<String>,
    spawn: Vec<String>,
    program: Option<String>,
    concurrency: usize,
    keep_conn: bool,
    duration: Duration,
    requests: Option<u64>,
    /// `--rate`: requests/s in all, sent on a schedule (an open loop).
    rate: Option<f64>,
    warmup: Duration,
    path: String,
    query: String,
    method: Option<String>,
    body: Body,
    headers: Vec<(String, String)>,
    params: Vec<(String, String)>,
    /// `--help` after the command: the usage, and nothing else.
    help: bool,
    env: Vec<(String, String)>,
    json: bool,
    /// How long a read or write may wait for the app (`--timeout`).
    timeout: Duration,
}

impl Opts {
    fn parse(args: Vec<String>) -> Result<Opts> {
        let mut o = Opts {
            concurrency: 1,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
            path: "/".into(),
            ..Opts::default()
        };
        let (mut body_size, mut body_file) = (None::<usize>, None::<String>);
        let mut it = args.into_iter();
        let secs = |v: Option<String>, n: &str| -> Result<Duration> {
            let s: f64 = v.with_context(|| format!("{n} needs a value"))?.parse()?;
            Duration::try_from_secs_f64(s)
                .with_context(|| format!("{n} {s}: not a number of seconds"))
        };
        while let Some(a) = it.next() {
            match a.as_str() {
                "--socket" => o.socket = Some(it.next().context("--socket PATH")?.into()),
                "--tcp" => o.tcp = Some(it.next().context("--tcp HOST:PORT")?),
                "--spawn" => {
                    for x in it.by_ref() {
                        if x == "--" {
                            break;
                        }
                        o.spawn.push(x);
                    }
                }
                "-c" | "--concurrency" => o.concurrency = it.next().context("-c N")?.parse()?,
                "--keep-conn" => o.keep_conn = true,
                "-d" | "--duration" => o.duration = secs(it.next(), "--duration")?,
                "-n" | "--requests" => o.requests = Some(it.next().context("-n N")?.parse()?),
                "--warmup" => o.warmup = secs(it.next(), "--warmup")?,
                "--rate" => o.rate = Some(it.next().context("--rate R")?.parse()?),
                "--timeout" => o.timeout = secs(it.next(), "--timeout")?,
                "--path" => o.path = it.next().context("--path PATH")?,
                "--query" => o.query = it.next().context("--query Q")?,
                "--method" => o.method = Some(it.next().context("--method M")?),
                "--body-size" => body_size = Some(it.next().context("--body-size N")?.parse()?),
                "--body-file" => body_file = Some(it.next().context("--body-file PATH")?),
                "--header" => {
                    let h = it.next().context("--header NAME=VALUE")?;
                    let (k, v) = h.split_once('=').context("--header NAME=VALUE")?;
                    o.headers.push((k.to_owned(), v.to_owned()));
                }
                "--param" | "--env" => {
                    let kv = it.next().with_context(|| format!("{a} NAME=VALUE"))?;
                    let (k, v) = kv
                        .split_once('=')
                        .with_context(|| format!("{a} NAME=VALUE"))?;
                    let list = if a == "--param" {
                        &mut o.params
                    } else {
                        &mut o.env
                    };
                    list.push((k.to_owned(), v.to_owned()));
                }
                "--json" => o.json = true,
                p if !p.starts_with('-') && o.program.is_none() => o.program = Some(p.to_owned()),
                "-h" | "--help" => o.help = true,
                other => bail!("unknown option {other:?}; try --help"),
            }
        }
        if o.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        if o.timeout.is_zero() {
            bail!("--timeout must be above 0");
        }
        if o.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            bail!("--rate must be a number of requests per second above 0");
        }
        // Each connection sends every N/R s; past an hour is a typo, and past what a
        // Duration holds would not be representable at all.
        if o.rate.is_some_and(|r| o.concurrency as f64 / r > 3600.0) {
            bail!("--rate is too low: each connection would wait over an hour between requests");
        }
        o.body = match (body_size, body_file) {
            (Some(_), Some(_)) => bail!("give --body-size or --body-file, not both"),
            (Some(0) | None, None) => Body::None,
            (Some(n), None) => Body::Filler(n),
            (None, Some(f)) if f == "-" => {
                let mut b = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut b)
                    .context("reading the body from standard input")?;
                Body::Bytes(b.into())
            }
            (None, Some(f)) => Body::Bytes(
                std::fs::read(&f)
                    .with_context(|| format!("reading {f}"))?
                    .into(),
            ),
        };
        // The body's length is what CONTENT_LENGTH says; a header cannot contradict it.
        for (k, v) in &o.headers {
            if cgi_header(k) == "CONTENT_LENGTH"
                && v.trim().parse::<usize>().ok() != Some(o.body.len())
            {
                bail!(
                    "--header {k}={v} is not the length of the body ({} bytes); CONTENT_LENGTH \
                     is set from the body (--param CONTENT_LENGTH=N sends any value)",
                    o.body.len()
                );
            }
        }
        Ok(o)
    }
}

/// The request body: none, `--body-size` filler bytes or `--body-file`'s contents.
#[derive(Debug, Default, Clone)]
enum Body {
    #[default]
    None,
    Filler(usize),
    Bytes(Arc<[u8]>),
}

/// Bodies above this are written by a second thread, record by record, while the
/// response is read; smaller ones go out with the request's other records.
const INLINE_BODY: usize = 1 << 20;

impl Body {
    /// Whether a body is sent (POST by default; CONTENT_LENGTH and CONTENT_TYPE).
    fn given(&self) -> bool {
        !matches!(self, Body::None)
    }

    fn len(&self) -> usize {
        match self {
            Body::None => 0,
            Body::Filler(n) => *n,
            Body::Bytes(b) => b.len(),
        }
    }

    /// Writes the FCGI_STDIN stream: the body in records of at most `MAX_CHUNK` bytes,
    /// then the empty record that ends it (sent even without a body, as web servers do).
    fn write_stdin(&self, w: &mut impl Write) -> std::io::Result<()> {
        let len = self.len();
        let filler = match self {
            Body::Filler(_) => vec![b'x'; len.min(record::MAX_CHUNK)],
            _ => Vec::new(),
        };
        let mut rec = Vec::with_capacity(len.min(record::MAX_CHUNK) + 16);
        let mut off = 0;
        while off < len {
            let n = (len - off).min(record::MAX_CHUNK);
            let chunk = match self {
                Body::Bytes(b) => &b[off..off + n],
                _ => &filler[..n],
            };
            rec.clear();
            record::push_record(&mut rec, RecordType::Stdin, 1, chunk);
            w.write_all(&rec)?;
            off += n;
        }
        rec.clear();
        record::push_record(&mut rec, RecordType::Stdin, 1, &[]);
        w.write_all(&rec)
    }
}

/// A header's CGI name without the `HTTP_` prefix: `Content-Type` is `CONTENT_TYPE`.
fn cgi_header(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

// ---- the target ----

enum Target {
    Unix(PathBuf),
    Tcp(String),
}

/// A program started with a listening socket on fd 0; stopped on drop, and on
/// SIGINT, SIGTERM or SIGHUP (see [`stop_on_signals`]).
struct Spawned {
    child: Child,
    dir: PathBuf,
}

/// The spawned program's pid and directory, while it runs: whoever takes them (the
/// drop, or the thread that waits for signals) stops it, holding the lock until done.
static SPAWNED: Mutex<Option<(u32, PathBuf)>> = Mutex::new(None);

fn spawned_slot() -> std::sync::MutexGuard<'static, Option<(u32, PathBuf)>> {
    SPAWNED.lock().unwrap_or_else(|e| e.into_inner())
}

impl Spawned {
    fn start(argv: &[String]) -> Result<(Spawned, PathBuf)> {
        stop_on_signals()?;
        let dir = std::env::temp_dir().join(format!("fcgi-shim-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let sock = dir.join("app.sock");
        let _ = std::fs::remove_file(&sock);
        let l = UnixListener::bind(&sock).with_context(|| format!("binding {}", sock.display()))?;
        // Held across the spawn: a signal now waits for the program to be recorded.
        let mut slot = spawned_slot();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::from(OwnedFd::from(l)))
            .stdout(Stdio::null())
            .env_remove("GATEWAY_INTERFACE");
        // The signals this process blocks for its signal thread would stay blocked in
        // the program (a mask survives exec, and `Command` leaves it), which then
        // could not be stopped by SIGTERM: it gets the empty mask a web server gives.
        // SAFETY: sigemptyset and sigprocmask are async-signal-safe, with a set on the
        // child's own stack.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            cmd.pre_exec(|| {
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = cmd.spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e).with_context(|| format!("starting {}", argv[0]));
            }
        };
        *slot = Some((child.id(), dir.clone()));
        Ok((Spawned { child, dir }, sock))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Spawned {
    /// Stops the program and every process it started: a wrapper that does not `exec`
    /// (a shell script, `strace`, `perf stat`) would otherwise leave the app running,
    /// on the socket and with its binary busy. The tree is read before the first
    /// signal, while the app is still the wrapper's child and can be told apart.
    fn drop(&mut self) {
        let mut slot = spawned_slot();
        if slot.take().is_none() {
            // Stopped already, by the signal thread.
            return;
        }
        stop_tree(self.child.id(), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGTERM to `root` and every process it started, then SIGKILL to those still there
/// after 3 s but `root`, which `reaped` waits for and which the caller then kills.
fn stop_tree(root: u32, mut reaped: impl FnMut() -> bool) {
    let others: Vec<u32> = process_tree(root)
        .unwrap_or_default()
        .into_iter()
        .filter(|&p| p != root)
        .collect();
    for &pid in std::iter::once(&root).chain(&others) {
        // SAFETY: kill(2) on a process of the tree we started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    // Gone, or a zombie that its new parent has yet to reap.
    let gone = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut done = false;
    while Instant::now() < deadline {
        done = done || reaped();
        if done && others.iter().all(|&p| gone(p)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for &pid in &others {
        if !gone(pid) {
            // SAFETY: as above.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// With `--spawn`, SIGINT, SIGTERM and SIGHUP stop the program as a normal exit does
/// (its whole tree, and its socket's directory) before the tool dies of the signal:
/// a CI harness's timeout or a `kill` of the tool alone left the app running for good.
/// The signals are blocked here, in the main thread before any other thread starts,
/// so every thread inherits that and only the one thread waiting for them gets them.
/// (The program starts with none blocked: `Command` clears the mask in the child.)
fn stop_on_signals() -> Result<()> {
    // SAFETY: a sigset_t is plain data, filled in by sigemptyset/sigaddset.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        set
    };
    // SAFETY: pthread_sigmask on the calling thread, with a valid set.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        bail!(
            "blocking signals: {}",
            std::io::Error::from_raw_os_error(rc)
        );
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: sigwait with a valid set, every signal of which is blocked.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                return;
            }
            // Held to the end: a drop running now waits, and the process ends first.
            let mut slot = spawned_slot();
            if let Some((pid, dir)) = slot.take() {
                let pid_t = pid as libc::pid_t;
                let mut reaped = false;
                stop_tree(pid, || {
                    let mut st = 0;
                    // SAFETY: waitpid on our own child, without blocking.
                    reaped =
                        reaped || unsafe { libc::waitpid(pid_t, &mut st, libc::WNOHANG) } == pid_t;
                    reaped
                });
                if !reaped {
                    let mut st = 0;
                    // SAFETY: kill and a blocking waitpid on our own child.
                    unsafe {
                        libc::kill(pid_t, libc::SIGKILL);
                        libc::waitpid(pid_t, &mut st, 0);
                    }
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
            // Die of the signal, as the tool did before it waited for it.
            // SAFETY: the default action back, the signal unblocked in this thread,
            // and raised in it.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::raise(sig);
            }
            std::process::exit(128 + sig);
        })
        .context("starting the signal thread")?;
    Ok(())
}

enum Conn {
    Unix(UnixStream),
    Tcp(std::net::TcpStream),
}

impl Conn {
    /// Connects; a read or write that waits longer than `timeout` fails, so an app
    /// that never answers cannot hold the tool for good.
    fn open(t: &Target, timeout: Duration) -> Result<Conn> {
        Ok(match t {
            Target::Unix(p) => {
                let s = UnixStream::connect(p)
                    .with_context(|| format!("connecting to {}", p.display()))?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                Conn::Unix(s)
            }
            Target::Tcp(a) => {
                let s = std::net::TcpStream::connect(a)
                    .with_context(|| format!("connecting to {a}"))?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                Conn::Tcp(s)
            }
        })
    }
}

impl Read for Conn {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(b),
            Conn::Tcp(s) => s.read(b),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(b),
            Conn::Tcp(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn resolve(o: &Opts) -> Result<(Target, Option<Spawned>)> {
    if !o.spawn.is_empty() {
        let (mut sp, sock) = Spawned::start(&o.spawn)?;
        wait_ready(&mut sp, &sock, &o.spawn[0])?;
        return Ok((Target::Unix(sock), Some(sp)));
    }
    if let Some(p) = &o.socket {
        return Ok((Target::Unix(p.clone()), None));
    }
    if let Some(a) = &o.tcp {
        return Ok((Target::Tcp(a.clone()), None));
    }
    Err(anyhow!(
        "no target: give --socket, --tcp or --spawn (see --help)"
    ))
}

/// Waits until the spawned app answers FCGI_GET_VALUES on its socket: a management
/// record, not a request, so the app serves nothing for it (the user's request, sent
/// as the probe, used to reach the app twice; a bench's count was off by one).
fn wait_ready(sp: &mut Spawned, sock: &Path, name: &str) -> Result<()> {
    let mut q = Vec::new();
    record::push_pair(&mut q, b"FCGI_MPXS_CONNS", b"");
    let mut probe = Vec::new();
    record::push_record(
        &mut probe,
        RecordType::GetValues,
        record::NULL_REQUEST_ID,
        &q,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut c) = UnixStream::connect(sock) {
            if c.write_all(&probe).is_ok() && answered(&mut c, sp, deadline)? {
                return Ok(());
            }
        }
        if let Some(status) = sp.child.try_wait()? {
            bail!("{name} exited ({status}) before it answered on its socket");
        }
        if Instant::now() > deadline {
            bail!("{name} did not answer FCGI_GET_VALUES on its socket within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a record came back for the probe: GET_VALUES_RESULT, or UNKNOWN_TYPE from
/// an app without management records; either way it reads its connections. The whole
/// record is read: closing a Unix socket with unread data resets the app's end.
fn answered(c: &mut UnixStream, sp: &mut Spawned, deadline: Instant) -> Result<bool> {
    c.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut buf = vec![0u8; record::HEADER_LEN];
    let mut have = 0;
    while Instant::now() <= deadline {
        match c.read(&mut buf[have..]) {
            Ok(0) => return Ok(false),
            Ok(n) => have += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                if sp.child.try_wait()?.is_some() {
                    return Ok(false);
                }
                continue;
            }
            Err(_) => return Ok(false),
        }
        if have < buf.len() {
            continue;
        }
        let mut hb = [0u8; record::HEADER_LEN];
        hb.copy_from_slice(&buf[..record::HEADER_LEN]);
        let h = Header::parse(&hb);
        let whole = record::HEADER_LEN + h.body_len();
        if have < whole {
            buf.resize(whole, 0);
            continue;
        }
        return Ok(h.version == record::VERSION_1
            && matches!(
                h.record_type,
                RecordType::GetValuesResult | RecordType::UnknownType
            ));
    }
    Ok(false)
}

// ---- requests ----

fn build_request(o: &Opts, keep: bool) -> std::io::Result<Vec<u8>> {
    let method = o.method.clone().unwrap_or_else(|| {
        if o.body.given() {
            "POST".into()
        } else {
            "GET".into()
        }
    });
    let uri = if o.query.is_empty() {
        o.path.clone()
    } else {
        format!("{}?{}", o.path, o.query)
    };
    let mut p = Vec::new();
    let mut vars: Vec<(String, String)> = vec![
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        ("SERVER_SOFTWARE".into(), "fcgi-shim-bench".into()),
        ("REQUEST_METHOD".into(), method),
        ("SCRIPT_NAME".into(), "/hello.fcgi".into()),
        ("SCRIPT_FILENAME".into(), "/var/www/hello.fcgi".into()),
        ("PATH_INFO".into(), o.path.clone()),
        ("QUERY_STRING".into(), o.query.clone()),
        ("REQUEST_URI".into(), uri),
        ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
        ("SERVER_NAME".into(), "localhost".into()),
        ("SERVER_PORT".into(), "80".into()),
        ("REMOTE_ADDR".into(), "127.0.0.1".into()),
        ("REMOTE_PORT".into(), "50000".into()),
        ("HTTP_HOST".into(), "localhost".into()),
        ("HTTP_USER_AGENT".into(), "fcgi-shim-bench".into()),
        ("HTTP_ACCEPT".into(), "*/*".into()),
    ];
    // Content-Type and Content-Length travel as CONTENT_TYPE and CONTENT_LENGTH, as a
    // web server sends them (the library ignores HTTP_CONTENT_*, as servers never send
    // them); Content-Length was checked against the body.
    let content_type = o
        .headers
        .iter()
        .rev()
        .find(|(k, _)| cgi_header(k) == "CONTENT_TYPE");
    let given_len = o
        .headers
        .iter()
        .any(|(k, _)| cgi_header(k) == "CONTENT_LENGTH");
    if o.body.given() || given_len {
        vars.push(("CONTENT_LENGTH".into(), o.body.len().to_string()));
    }
    match content_type {
        Some((_, t)) => vars.push(("CONTENT_TYPE".into(), t.clone())),
        None if o.body.given() => {
            vars.push(("CONTENT_TYPE".into(), "application/octet-stream".into()));
        }
        None => {}
    }
    // --header: the first of a name replaces a built-in one (Host, User-Agent,
    // Accept); repeats are joined with ", ", as web servers pass repeated headers.
    let mut given: Vec<String> = Vec::new();
    for (k, v) in &o.headers {
        let name = cgi_header(k);
        if name == "CONTENT_TYPE" || name == "CONTENT_LENGTH" {
            continue;
        }
        let var = format!("HTTP_{name}");
        let repeat = given.contains(&var);
        match vars.iter_mut().find(|(n, _)| *n == var) {
            Some(slot) if repeat => {
                slot.1.push_str(", ");
                slot.1.push_str(v);
            }
            Some(slot) => slot.1 = v.clone(),
            None => vars.push((var.clone(), v.clone())),
        }
        given.push(var);
    }
    // --param: replaces a variable of the same name, or adds one.
    for (k, v) in &o.params {
        match vars.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v.clone(),
            None => vars.push((k.clone(), v.clone())),
        }
    }
    for (k, v) in &vars {
        record::push_pair(&mut p, k.as_bytes(), v.as_bytes());
    }
    let mut out = Vec::new();
    let begin = BeginRequest {
        role: 1,
        flags: if keep { record::KEEP_CONN } else { 0 },
    };
    record::push_record(&mut out, RecordType::BeginRequest, 1, &begin.to_bytes());
    for c in p.chunks(record::MAX_CHUNK) {
        record::push_record(&mut out, RecordType::Params, 1, c);
    }
    record::push_record(&mut out, RecordType::Params, 1, &[]);
    // A body over INLINE_BODY is written separately, record by record (`exchange`).
    if o.body.len() <= INLINE_BODY {
        o.body.write_stdin(&mut out)?;
    }
    Ok(out)
}

impl Conn {
    fn try_clone(&self) -> std::io::Result<Conn> {
        Ok(match self {
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
        })
    }
}

/// Sends one request and reads its response; a body above 1 MiB is written by a
/// second thread meanwhile (an app that streams the body back would otherwise block
/// on a full socket while we block writing). `big_body`: the body to write after
/// `req`, when it is not in `req` (above INLINE_BODY).
fn exchange(
    c: &mut Conn,
    req: &[u8],
    big_body: Option<Body>,
    out: Option<&mut dyn Write>,
) -> Result<Resp> {
    if big_body.is_none() && req.len() <= 64 * 1024 {
        c.write_all(req)?;
        return read_response(c, out);
    }
    let mut w = c.try_clone()?;
    let req = req.to_vec();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        w.write_all(&req)?;
        if let Some(body) = big_body {
            body.write_stdin(&mut w)?;
        }
        Ok(())
    });
    let r = read_response(c, out);
    let wr = writer
        .join()
        .map_err(|_| anyhow!("writer thread panicked"))?;
    let resp = r?;
    wr?;
    Ok(resp)
}

/// What came back for one request.
#[derive(Default)]
struct Resp {
    stdout_len: u64,
    stderr: Vec<u8>,
    status_ok: bool,
    app_status: u32,
    proto_status: u8,
}

/// Reads records until END_REQUEST for id 1. STDOUT goes to `out` as it comes (for
/// `request`); the bench has none and counts it.
fn read_response(c: &mut Conn, out: Option<&mut dyn Write>) -> Result<Resp> {
    // One read buffer per thread, kept between requests: a new zeroed 64 KiB for each
    // request cost the load generator a 64 KiB memset (or fresh pages) every time,
    // CPU the server under test then did not get.
    thread_local! {
        static BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut buf = BUF.take();
    if buf.len() < 64 * 1024 {
        buf.resize(64 * 1024, 0);
    }
    let r = read_records(c, out, &mut buf);
    // One grown for a record larger than 64 KiB (at most 8 + 65,535 + 255 bytes) is
    // kept too; anything else would be a bug above, not worth keeping.
    if buf.len() <= 128 * 1024 {
        BUF.set(buf);
    }
    r
}

/// Whether a response head is a success: no `Status:` line (200), or a status below
/// 400 (a redirect, a 204 or a 304 is an answer too).
fn status_ok(head: &[u8]) -> bool {
    let Some(rest) = head.strip_prefix(b"Status:") else {
        return true;
    };
    let code = rest
        .trim_ascii_start()
        .get(..3)
        .and_then(|d| std::str::from_utf8(d).ok());
    code.and_then(|d| d.parse::<u16>().ok())
        .is_some_and(|c| (100..400).contains(&c))
}

fn read_records(c: &mut Conn, mut out: Option<&mut dyn Write>, buf: &mut Vec<u8>) -> Result<Resp> {
    let mut have = 0usize;
    let mut resp = Resp::default();
    let mut first = true;
    loop {
        // Parse whole records in the buffer.
        let mut pos = 0;
        while have - pos >= record::HEADER_LEN {
            let mut hb = [0u8; 8];
            hb.copy_from_slice(&buf[pos..pos + 8]);
            let h = Header::parse(&hb);
            let total = 8 + h.body_len();
            if have - pos < total {
                if total > buf.len() {
                    buf.resize(total, 0);
                }
                break;
            }
            let content = &buf[pos + 8..pos + 8 + h.content_length as usize];
            match h.record_type {
                RecordType::Stdout => {
                    if first && !content.is_empty() {
                        resp.status_ok = status_ok(content);
                        first = false;
                    }
                    resp.stdout_len += content.len() as u64;
                    if let Some(w) = out.as_mut() {
                        w.write_all(content)?;
                        w.flush()?;
                    }
                }
                RecordType::Stderr => resp.stderr.extend_from_slice(content),
                RecordType::EndRequest if h.request_id == 1 => {
                    // The peer's record: its length is checked, not assumed.
                    let &[a, b, c, d, proto, ..] = content else {
                        bail!("END_REQUEST with {} bytes of content, not 8", content.len());
                    };
                    resp.app_status = u32::from_be_bytes([a, b, c, d]);
                    resp.proto_status = proto;
                    return Ok(resp);
                }
                _ => {}
            }
            pos += total;
        }
        buf.copy_within(pos..have, 0);
        have -= pos;
        let n = match c.read(&mut buf[have..]) {
            Ok(0) => 0,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                bail!(
                    "no answer within the timeout (--timeout){}",
                    app_said(&resp.stderr)
                )
            }
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            bail!(
                "connection closed before END_REQUEST{}",
                app_said(&resp.stderr)
            );
        }
        have += n;
    }
}

/// The app's FCGI_STDERR, for an error message: what it said before things went wrong.
fn app_said(stderr: &[u8]) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(
            "; the app's FCGI_STDERR: {}",
            String::from_utf8_lossy(stderr).trim_end()
        )
    }
}

// ---- commands ----

fn request(o: Opts) -> Result<()> {
    let (target, _spawned) = resolve(&o)?;
    let mut c = Conn::open(&target, o.timeout)?;
    let big = (o.body.len() > INLINE_BODY).then(|| o.body.clone());
    // The response as it comes: a stream shows as it streams, and what arrived
    // before a cut is there to see (the error then says so).
    let mut stdout = std::io::stdout().lock();
    let r = exchange(&mut c, &build_request(&o, false)?, big, Some(&mut stdout))
        .context("the response is incomplete (what arrived is above)")?;
    if !r.stderr.is_empty() {
        eprint!("{}", String::from_utf8_lossy(&r.stderr));
    }
    eprintln!(
        "[END_REQUEST appStatus {} protocolStatus {}]",
        r.app_status, r.proto_status
    );
    Ok(())
}

struct Stats {
    latencies: Vec<u32>, // microseconds
    errors: u64,
    bytes: u64,
    /// Requests this connection (thread) completed while measuring.
    per_conn: Vec<u64>,
}

fn bench(o: Opts) -> Result<()> {
    let (target, spawned) = resolve(&o)?;
    let idle = spawned.as_ref().and_then(|s| proc_status(s.pid()));
    let target = Arc::new(target);
    let req = Arc::new(build_request(&o, o.keep_conn)?);
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(o.warmup.is_zero()));
    // Measured requests started (with -n: no more than N are), and warm-up requests.
    let started = Arc::new(AtomicU64::new(0));
    let warm = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(o.concurrency + 1));
    let big = (o.body.len() > INLINE_BODY).then(|| o.body.clone());
    // With --rate, connection i's first request is due i/R s after the start, then
    // one every N/R s: together R requests/s, evenly spread.
    let schedule = o.rate.map(|r| {
        (
            Duration::from_secs_f64(1.0 / r),
            Duration::from_secs_f64(o.concurrency as f64 / r),
        )
    });
    let mut handles = Vec::new();
    for i in 0..o.concurrency {
        let (target, req, stop, measuring, started, warm, barrier) = (
            target.clone(),
            req.clone(),
            stop.clone(),
            measuring.clone(),
            started.clone(),
            warm.clone(),
            barrier.clone(),
        );
        let limit = o.requests;
        let keep = o.keep_conn;
        let timeout = o.timeout;
        let big = big.clone();
        handles.push(std::thread::spawn(move || {
            let mut st = Stats {
                latencies: Vec::with_capacity(1 << 16),
                errors: 0,
                bytes: 0,
                per_conn: Vec::new(),
            };
            let mut conn: Option<Conn> = None;
            if schedule.is_some() {
                // Wake on time, not up to 50 µs late (the default timer slack), so the
                // schedule's own error stays small beside the latencies it measures.
                unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
            }
            barrier.wait();
            let mut due = schedule.map(|(stagger, _)| Instant::now() + stagger * i as u32);
            while !stop.load(Ordering::Relaxed) {
                if let Some(at) = due {
                    // Sleep in short steps, so a stop is seen within 50 ms at any rate.
                    let now = Instant::now();
                    if at > now {
                        std::thread::sleep((at - now).min(Duration::from_millis(50)));
                        continue;
                    }
                }
                // A request belongs to the measurement if it starts in it; with -n,
                // each takes one of the N places first, so exactly N are sent.
                let counted = measuring.load(Ordering::Relaxed);
                if counted && limit.is_some_and(|l| started.fetch_add(1, Ordering::Relaxed) >= l) {
                    break;
                }
                // Open loop: from when the request was due, which is earlier than
                // now when the app (or this thread) has fallen behind.
                let t0 = match (due.as_mut(), schedule) {
                    (Some(at), Some((_, every))) => {
                        let was = *at;
                        *at += every;
                        was
                    }
                    _ => Instant::now(),
                };
                let r = (|| -> Result<Resp> {
                    if conn.is_none() {
                        conn = Some(Conn::open(&target, timeout)?);
                    }
                    let c = conn.as_mut().context("connection")?;
                    exchange(c, &req, big.clone(), None)
                })();
                let took = t0.elapsed();
                if !keep {
                    conn = None;
                }
                match r {
                    Ok(resp) if resp.status_ok && resp.proto_status == 0 => {
                        if counted {
                            st.latencies
                                .push(took.as_micros().min(u32::MAX as u128) as u32);
                            st.bytes += resp.stdout_len;
                        } else {
                            warm.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    r => {
                        if conn.is_none() || r.is_err() {
                            // No connection, or none that answers: not a loop of
                            // failures as fast as the CPU goes.
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        conn = None;
                        if counted {
                            st.errors += 1;
                        }
                    }
                }
            }
            st.per_conn = vec![st.latencies.len() as u64];
            st
        }));
    }
    barrier.wait();
    if !o.warmup.is_zero() {
        std::thread::sleep(o.warmup);
        measuring.store(true, Ordering::Relaxed);
    }
    let t0 = Instant::now();
    let cpu0 = (
        spawned.as_ref().map(|s| tree_cpu_ns(s.pid())),
        self_cpu_ns(),
    );
    if o.requests.is_none() {
        std::thread::sleep(o.duration);
        stop.store(true, Ordering::Relaxed);
    }
    let mut all = Stats {
        latencies: Vec::new(),
        errors: 0,
        bytes: 0,
        per_conn: Vec::new(),
    };
    // The load threads stop after their request in flight; CPU is read once they have.
    let mut joined = Vec::new();
    for h in handles {
        joined.push(h.join().map_err(|_| anyhow!("a load thread panicked"))?);
    }
    let cpu1 = (
        spawned.as_ref().map(|s| tree_cpu_ns(s.pid())),
        self_cpu_ns(),
    );
    for st in joined {
        all.latencies.extend(st.latencies);
        all.errors += st.errors;
        all.bytes += st.bytes;
        all.per_conn.extend(st.per_conn);
    }
    let (conn_min, conn_max) = (
        all.per_conn.iter().copied().min().unwrap_or(0),
        all.per_conn.iter().copied().max().unwrap_or(0),
    );
    let max_us = all.latencies.iter().copied().max().unwrap_or(0);
    let secs = t0.elapsed().as_secs_f64();
    all.latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.latencies.is_empty() {
            return 0.0;
        }
        let i = ((all.latencies.len() as f64 - 1.0) * p).round() as usize;
        f64::from(all.latencies[i])
    };
    let n = all.latencies.len();
    let warm = warm.load(Ordering::Relaxed);
    let rss = spawned.as_ref().and_then(|s| proc_status(s.pid()));
    // CPU time per request (µs), the server's (its process and every descendant, all
    // threads) and this load generator's, over the measured window: unlike req/s it does
    // not move when a neighbour takes the machine's CPUs for a while.
    let per_req = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if n > 0 => b.saturating_sub(a) as f64 / 1000.0 / n as f64,
        _ => -1.0,
    };
    let server_cpu = per_req(cpu0.0.flatten(), cpu1.0.flatten());
    let client_cpu = per_req(cpu0.1, cpu1.1);
    if o.json {
        println!(
            "{{\"requests\":{n},\"errors\":{},\"warmup_requests\":{warm},\"seconds\":{secs:.3},\"rps\":{:.1},\"p50_us\":{},\"p99_us\":{},\"max_us\":{max_us},\"conn_min\":{conn_min},\"conn_max\":{conn_max},\"mib_per_s\":{:.1},\"pid\":{},\"idle_rss_kib\":{},\"rss_kib\":{},\"hwm_kib\":{},\"server_cpu_us\":{server_cpu:.2},\"client_cpu_us\":{client_cpu:.2}}}",
            all.errors,
            n as f64 / secs,
            pct(0.50),
            pct(0.99),
            all.bytes as f64 / secs / 1048576.0,
            spawned.as_ref().map_or(-1, |s| i64::from(s.pid())),
            idle.map_or(-1, |r| r.0 as i64),
            rss.map_or(-1, |r| r.0 as i64),
            rss.map_or(-1, |r| r.1 as i64),
        );
    } else {
        let after_warmup = if warm > 0 {
            format!(" (after {warm} warm-up requests)")
        } else {
            String::new()
        };
        println!(
            "{n} requests in {secs:.2} s{after_warmup}: {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs, max {max_us} µs, {} errors, per connection {conn_min}..{conn_max} requests, {:.1} MiB/s{}",
            n as f64 / secs,
            pct(0.50),
            pct(0.99),
            all.errors,
            all.bytes as f64 / secs / 1048576.0,
            rss.map_or(String::new(), |r| format!(
                ", RSS {} KiB (peak {} KiB){}",
                r.0,
                r.1,
                if n > 0 {
                    format!(
                        ", CPU per request {server_cpu:.1} µs (load generator {client_cpu:.1} µs)"
                    )
                } else {
                    String::new()
                }
            )),
        );
    }
    if n == 0 && all.errors > 0 {
        bail!(
            "no request was answered ({} errors; `fcgi-shim request` with the same options shows why)",
            all.errors
        );
    }
    Ok(())
}

/// Process `root` and every process descended from it (a prefork parent's children, a
/// wrapper's program), from the parent of each process in `/proc`; `None` when `/proc`
/// cannot be read.
fn process_tree(root: u32) -> Option<Vec<u32>> {
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The fields after the command name (which may hold spaces): state, ppid, ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut tree = Vec::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        tree.push(pid);
        todo.extend(children.get(&pid).into_iter().flatten());
    }
    Some(tree)
}

/// CPU time (ns, user + system) of process `root`, every thread of it and of every
/// process descended from it, from `/proc/PID/task/TID/schedstat`.
fn tree_cpu_ns(root: u32) -> Option<u64> {
    let mut total = 0u64;
    let mut seen_root = false;
    for pid in process_tree(root)? {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        seen_root |= pid == root;
        for t in tasks.flatten() {
            let path = t.path().join("schedstat");
            if let Some(ns) = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            {
                total += ns;
            }
        }
    }
    seen_root.then_some(total)
}

/// This process's CPU time (ns, user + system, all threads).
fn self_cpu_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (r == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// (VmRSS, VmHWM) in KiB.
fn proc_status(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        s.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn cgi_time(o: Opts) -> Result<()> {
    let program = o.program.clone().context("cgi-time PROGRAM")?;
    let n = o.requests.unwrap_or(200);
    // A median of no runs is none (it used to panic on the empty list).
    if n == 0 {
        bail!("-n must be at least 1");
    }
    if !Path::new(&program).exists() {
        bail!("{program} does not exist");
    }
    let mut times = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t0 = Instant::now();
        let out = Command::new(&program)
            .env_clear()
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("REQUEST_METHOD", "GET")
            .env("SCRIPT_NAME", "/hello.cgi")
            .env("SCRIPT_FILENAME", &program)
            .env("PATH_INFO", &o.path)
            .env("QUERY_STRING", "")
            .env("REQUEST_URI", &o.path)
            .env("SERVER_PROTOCOL", "HTTP/1.1")
            .env("SERVER_NAME", "localhost")
            .env("SERVER_PORT", "80")
            .env("REMOTE_ADDR", "127.0.0.1")
            .env("REDIRECT_STATUS", "200")
            .env("HTTP_HOST", "localhost")
            .envs(o.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .with_context(|| format!("running {program}"))?;
        let took = t0.elapsed();
        if out.stdout.is_empty() {
            bail!("{program} wrote no response");
        }
        times.push(took.as_micros() as u64);
    }
    times.sort_unstable();
    let med = times[times.len() / 2];
    let p90 = times[times.len() * 9 / 10];
    if o.json {
        println!("{{\"runs\":{n},\"median_us\":{med},\"p90_us\":{p90}}}");
    } else {
        println!("{n} runs: median {med} µs, p90 {p90} µs");
    }
    Ok(())
}
