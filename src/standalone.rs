// The standalone server (`--socket`, `--listen`, `--http`, systemd): options from the
// command line and the environment, daemonizing, the pidfile, and prefork workers.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Builder;
use crate::error::Error;
use crate::sys;

/// The wire protocol a standalone listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// FastCGI, the default.
    #[default]
    FastCgi,
    /// SCGI (nginx `scgi_pass`, Apache `mod_proxy_scgi`, lighttpd `mod_scgi`).
    Scgi,
    /// Plain HTTP/1.1: the development server.
    Http,
}

/// Options that make the program a standalone server, and how it runs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Standalone {
    pub socket: Option<PathBuf>,
    pub listen: Option<String>,
    pub http: Option<String>,
    pub protocol: Option<Protocol>,
    pub processes: Option<usize>,
    pub pidfile: Option<PathBuf>,
    pub daemonize: bool,
    pub workdir: Option<PathBuf>,
    pub umask: Option<u32>,
    pub outlog: Option<PathBuf>,
    pub errlog: Option<PathBuf>,
    /// `--threads` given on the command line or builder (it also applies under a web
    /// server, so it lives in the config; this only records it was asked for).
    pub help: bool,
}

impl Standalone {
    /// True when options ask for a server of our own.
    pub fn wants_listener(&self) -> bool {
        self.socket.is_some() || self.listen.is_some() || self.http.is_some()
    }
}

pub(crate) const USAGE: &str = "\
Options (also as environment variables, shown in brackets):
  --socket PATH         serve on a Unix socket [FCGI_SOCKET]
  --listen HOST:PORT    serve on TCP; a bare PORT means 127.0.0.1:PORT [FCGI_LISTEN]
  --protocol fastcgi|scgi                     [FCGI_PROTOCOL] (default fastcgi)
  --http HOST:PORT      plain HTTP/1.1 development server, NOT for production [FCGI_HTTP]
  --threads N           connections served at once per process [FCGI_THREADS]
  --processes N         prefork N worker processes sharing the socket [FCGI_PROCESSES]
  --max-requests N      a process exits after N requests (replaced under --processes)
                        [FCGI_MAX_REQUESTS]
  --pidfile PATH        written once the socket is ready, removed on exit [FCGI_PIDFILE]
  --daemonize           detach; stdio to /dev/null or --outlog/--errlog [FCGI_DAEMONIZE]
  --outlog PATH, --errlog PATH                [FCGI_OUTLOG, FCGI_ERRLOG]
  --workdir DIR         chdir first; relative paths are relative to it [FCGI_WORKDIR]
  --umask MODE          e.g. 0002: socket file group-writable [FCGI_UMASK]
  --help
flup/runfcgi spellings work too: socket=PATH host=H port=P protocol=scgi
method=threaded|prefork maxrequests=N maxchildren=N daemonize=true|false
pidfile=PATH workdir=DIR umask=0002 outlog=PATH errlog=PATH, and `help`. With
socket= or host=/port=, runfcgi's defaults hold: method=prefork (4 processes) and
daemonize=true, unless given.
Stop with SIGTERM (kill $(cat PIDFILE)): requests in flight finish, the socket file and
the pidfile are removed; a new server started at once takes the socket over.
";

fn need<'a>(name: &str, v: Option<&'a str>) -> Result<&'a str, Error> {
    v.ok_or_else(|| Error::setting(name, "", "a value"))
}

fn parse_num<T: std::str::FromStr>(
    name: &str,
    v: &str,
    expected: &'static str,
) -> Result<T, Error> {
    v.trim()
        .parse()
        .map_err(|_| Error::setting(name, v, expected))
}

fn parse_bool(name: &str, v: &str) -> Result<bool, Error> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::setting(name, v, "true or false")),
    }
}

fn parse_umask(name: &str, v: &str) -> Result<u32, Error> {
    u32::from_str_radix(v.trim().trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| Error::setting(name, v, "an octal mode such as 0002 or 022"))
}

fn parse_protocol(name: &str, v: &str) -> Result<Protocol, Error> {
    match v.trim().to_ascii_lowercase().as_str() {
        "fastcgi" | "fcgi" => Ok(Protocol::FastCgi),
        "scgi" => Ok(Protocol::Scgi),
        _ => Err(Error::setting(name, v, "fastcgi or scgi")),
    }
}

impl Builder {
    /// Applies one option. `name` is the canonical long name without dashes.
    fn apply_option(&mut self, name: &str, shown: &str, v: Option<&str>) -> Result<(), Error> {
        let sa = &mut self.sa;
        match name {
            // One listener: the last one given wins, so the command line (applied after
            // the environment and the settings file) overrides them, whichever kind each
            // names. (Two kinds on one command line are refused by `apply_args`.)
            "socket" | "listen" | "http" => {
                let v = need(shown, v)?;
                // Checked now, named as given, as the other options are: not only when
                // the server starts, under another option's name.
                if name != "socket" {
                    crate::listen::parse_listen(shown, v)?;
                }
                sa.socket = (name == "socket").then(|| PathBuf::from(v));
                sa.listen = (name == "listen").then(|| v.to_owned());
                sa.http = (name == "http").then(|| v.to_owned());
            }
            "protocol" => sa.protocol = Some(parse_protocol(shown, need(shown, v)?)?),
            "threads" => {
                let n: usize = parse_num(shown, need(shown, v)?, "a whole number from 1 to 1024")?;
                if !(1..=1024).contains(&n) {
                    return Err(Error::setting(
                        shown,
                        v.unwrap_or(""),
                        "a whole number from 1 to 1024",
                    ));
                }
                self.cfg.max_conns = n;
                self.threads_explicit = true;
            }
            "processes" => {
                let n: usize = parse_num(shown, need(shown, v)?, "a whole number from 1 to 256")?;
                if !(1..=256).contains(&n) {
                    return Err(Error::setting(
                        shown,
                        v.unwrap_or(""),
                        "a whole number from 1 to 256",
                    ));
                }
                sa.processes = Some(n);
            }
            "max-requests" => {
                let n: u64 = parse_num(shown, need(shown, v)?, "a whole number (0 for no limit)")?;
                self.cfg.max_requests = (n > 0).then_some(n);
            }
            "pidfile" => sa.pidfile = Some(PathBuf::from(need(shown, v)?)),
            "daemonize" => sa.daemonize = v.map_or(Ok(true), |v| parse_bool(shown, v))?,
            "workdir" => sa.workdir = Some(PathBuf::from(need(shown, v)?)),
            "umask" => sa.umask = Some(parse_umask(shown, need(shown, v)?)?),
            "outlog" => sa.outlog = Some(PathBuf::from(need(shown, v)?)),
            "errlog" => sa.errlog = Some(PathBuf::from(need(shown, v)?)),
            "help" => sa.help = true,
            _ => unreachable!("option names are checked by the caller"),
        }
        Ok(())
    }

    /// Parses the command line: `--name value`, `--name=value`, and flup's
    /// `name=value` spellings. Unknown arguments are an error naming them.
    pub(crate) fn apply_args(
        &mut self,
        args: impl IntoIterator<Item = OsString>,
    ) -> Result<(), Error> {
        let args: Vec<String> = args
            .into_iter()
            .map(|a| {
                a.into_string()
                    .map_err(|a| Error::setting("argument", a.to_string_lossy(), "UTF-8 text"))
            })
            .collect::<Result<_, _>>()?;
        const LONG: &[&str] = &[
            "socket",
            "listen",
            "http",
            "protocol",
            "threads",
            "processes",
            "max-requests",
            "pidfile",
            "daemonize",
            "workdir",
            "umask",
            "outlog",
            "errlog",
            "help",
        ];
        const FLAGS: &[&str] = &["daemonize", "help"];
        let mut host: Option<String> = None;
        let mut port: Option<String> = None;
        let mut maxchildren: Option<String> = None;
        let mut threaded = false;
        // Django's runfcgi defaults, for a command line in its spelling: prefork
        // unless `method=` says otherwise, and in the background once a socket or a
        // port is given, unless `daemonize=false` (its restart script relies on it).
        let mut method_given = false;
        let mut daemonize_given = false;
        let mut flup_socket = false;
        let mut pool_given = false;
        // A listener named on this command line (`--socket`, `--listen`, `--http`,
        // `socket=`): Django's runfcgi took `socket=` over `host=`/`port=`.
        let mut listener_named = false;
        // The kinds of listener this command line names, as first written: only one
        // can be served, so two kinds are refused rather than one silently ignored.
        let mut kinds: Vec<(&'static str, String)> = Vec::new();
        fn note_kind(kinds: &mut Vec<(&'static str, String)>, kind: &'static str, shown: &str) {
            if !kinds.iter().any(|(k, _)| *k == kind) {
                kinds.push((kind, shown.to_owned()));
            }
        }
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            i += 1;
            if let Some(opt) = a.strip_prefix("--") {
                let (name, inline) = match opt.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (opt, None),
                };
                if !LONG.contains(&name) {
                    return Err(Error::setting("option", a, "one of the options in --help"));
                }
                let value = if inline.is_some() || FLAGS.contains(&name) {
                    inline.map(str::to_owned)
                } else {
                    let v = args.get(i).cloned();
                    i += 1;
                    v
                };
                listener_named |= matches!(name, "socket" | "listen" | "http");
                match name {
                    "socket" => note_kind(&mut kinds, "socket", "--socket"),
                    "listen" => note_kind(&mut kinds, "listen", "--listen"),
                    "http" => note_kind(&mut kinds, "http", "--http"),
                    _ => {}
                }
                pool_given |= matches!(name, "threads" | "processes");
                daemonize_given |= name == "daemonize";
                self.apply_option(name, a, value.as_deref())?;
            } else if a == "-h" || a == "help" {
                // `help`: as `manage.py runfcgi help`.
                self.sa.help = true;
            } else if let Some((k, v)) = a.split_once('=') {
                // flup / Django runfcgi
                match k {
                    "host" => {
                        note_kind(&mut kinds, "listen", "host=");
                        host = Some(v.to_owned());
                    }
                    "port" => {
                        note_kind(&mut kinds, "listen", "port=");
                        port = Some(v.to_owned());
                    }
                    // Django's runfcgi also took `thread` and `fork`.
                    "method" => {
                        method_given = true;
                        match v {
                            "threaded" | "thread" => threaded = true,
                            "prefork" | "fork" => {
                                threaded = false;
                                self.sa.processes.get_or_insert(4);
                            }
                            _ => return Err(Error::setting(k, v, "threaded or prefork")),
                        }
                    }
                    "maxrequests" => self.apply_option("max-requests", k, Some(v))?,
                    // Processes under prefork, threads under threaded (flup's
                    // maxChildren / maxThreads), once the method is known.
                    "maxchildren" => maxchildren = Some(v.to_owned()),
                    "maxspare" | "minspare" | "debug" => {
                        log::debug!("ignoring runfcgi option {k}={v}");
                    }
                    "socket" | "protocol" | "pidfile" | "daemonize" | "workdir" | "umask"
                    | "outlog" | "errlog" => {
                        listener_named |= k == "socket";
                        flup_socket |= k == "socket";
                        if k == "socket" {
                            note_kind(&mut kinds, "socket", "socket=");
                        }
                        daemonize_given |= k == "daemonize";
                        self.apply_option(k, k, Some(v))?;
                    }
                    _ => return Err(Error::setting("argument", a, "an option listed in --help")),
                }
            } else {
                return Err(Error::setting("argument", a, "an option listed in --help"));
            }
        }
        let flup_listener = flup_socket || host.is_some() || port.is_some();
        if flup_socket && (host.is_some() || port.is_some()) {
            // As Django's runfcgi: "Invalid combination of host, port, socket."
            return Err(Error::setting(
                "argument",
                "socket= with host=/port=",
                "socket= or host= with port=, not both (Django's runfcgi refuses both too)",
            ));
        }
        if let [(_, first), (_, second), ..] = &kinds[..] {
            return Err(Error::setting(
                "argument",
                format!("{first} with {second}"),
                "one listener: --socket, --listen or --http, not two (only one would be served)",
            ));
        }
        if flup_listener && !method_given && !pool_given {
            // runfcgi's default method.
            self.sa.processes.get_or_insert(4);
        }
        if flup_listener && !daemonize_given {
            self.sa.daemonize = true;
        }
        if let Some(n) = maxchildren {
            let name = if threaded { "threads" } else { "processes" };
            self.apply_option(name, "maxchildren", Some(&n))?;
        }
        let addr = match (host, port) {
            // An IPv6 host (`host=::1`) in brackets, as a socket address writes it.
            (Some(h), Some(p)) if h.contains(':') && !h.starts_with('[') => format!("[{h}]:{p}"),
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (None, Some(p)) => p,
            (Some(h), None) => return Err(Error::setting("host", h, "host= with port=")),
            (None, None) => return Ok(()),
        };
        // Like `--listen`: it replaces a listener from the environment or the settings
        // file (an `FCGI_SOCKET`), but not one named on this command line.
        if !listener_named {
            self.apply_option("listen", "port", Some(&addr))?;
        }
        Ok(())
    }

    /// The standalone options from the environment (see the usage text).
    pub(crate) fn apply_standalone_env(
        &mut self,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), Error> {
        for (var, name) in [
            ("FCGI_SOCKET", "socket"),
            ("FCGI_LISTEN", "listen"),
            ("FCGI_HTTP", "http"),
            ("FCGI_PROTOCOL", "protocol"),
            ("FCGI_PROCESSES", "processes"),
            ("FCGI_PIDFILE", "pidfile"),
            ("FCGI_DAEMONIZE", "daemonize"),
            ("FCGI_WORKDIR", "workdir"),
            ("FCGI_UMASK", "umask"),
            ("FCGI_OUTLOG", "outlog"),
            ("FCGI_ERRLOG", "errlog"),
        ] {
            if let Some(v) = get(var).filter(|v| !v.trim().is_empty()) {
                self.apply_option(name, var, Some(&v))?;
            }
        }
        Ok(())
    }
}

// ---- pidfile ----

/// Writes our pid to `path` (atomically, via a temporary file and rename).
///
/// Written beside it under a temporary name and renamed over it. The temporary file is
/// created new (`O_EXCL`: never through a symlink someone planted under that name in a
/// shared directory), mode 0644 whatever the umask allows beyond it, so nobody else can
/// point the pidfile at another process.
pub(crate) fn write_pidfile(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: io::Error| {
        Error::io(
            "writing the pidfile",
            io::Error::new(e.kind(), format!("{}: {e}", path.display())),
        )
    };
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for attempt in 0..8u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.{nanos:x}{attempt}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp);
        let mut file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                last = e;
                continue;
            }
            Err(e) => return Err(fail(e)),
        };
        let written = file
            .write_all(format!("{}\n", std::process::id()).as_bytes())
            .and_then(|()| fs::rename(&tmp, path));
        return written.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            fail(e)
        });
    }
    Err(fail(last))
}

/// Removes the pidfile if it still names us (a new server may have written its own).
pub(crate) fn remove_pidfile(path: &Path) {
    if let Ok(s) = fs::read_to_string(path) {
        if s.trim() == std::process::id().to_string() {
            let _ = fs::remove_file(path);
        }
    }
}

// ---- daemonizing ----

/// The daemon's way to tell the waiting foreground process that it is ready (or why
/// it failed), so `--daemonize` returns only once the server serves.
pub(crate) struct Ready(Option<OwnedFd>);

impl Ready {
    pub fn none() -> Ready {
        Ready(None)
    }

    pub fn ok(&mut self) {
        if let Some(fd) = self.0.take() {
            let _ = fs::File::from(fd).write_all(b"ok");
        }
    }

    pub fn fail(&mut self, msg: &str) {
        if let Some(fd) = self.0.take() {
            let _ = fs::File::from(fd).write_all(msg.as_bytes());
        }
    }
}

fn open_log(path: Option<&Path>) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = match path {
        // 0640 at most: `--umask 0002` (for the socket's group) must not make the logs
        // writable by that group.
        Some(p) => fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(p)?,
        None => fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?,
    };
    Ok(OwnedFd::from(f))
}

/// Detaches from the terminal: fork, setsid, fork; stdio to /dev/null or the logs.
/// The original process waits until the daemon reports ready, then exits 0 (or 1 with
/// the daemon's error). Must run before any thread is started.
pub(crate) fn daemonize(
    outlog: Option<&Path>,
    errlog: Option<&Path>,
    listener: std::os::fd::RawFd,
) -> Result<Ready, Error> {
    // Descriptors inherited from whoever started us (a shell's redirections, a
    // supervisor's pipes) would stay open in the daemon for its whole life.
    sys::close_inherited_fds(&[listener]);
    let out = open_log(outlog).map_err(|e| Error::io("opening --outlog", e))?;
    let err = open_log(errlog).map_err(|e| Error::io("opening --errlog", e))?;
    let null = open_log(None).map_err(|e| Error::io("opening /dev/null", e))?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::io("daemonizing", io::Error::last_os_error()));
    }
    // SAFETY: the fds were just created.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: single-threaded at this point (documented precondition); the child only
    // continues normal Rust execution.
    match unsafe { libc::fork() } {
        -1 => return Err(Error::io("daemonizing", io::Error::last_os_error())),
        0 => {}
        child => {
            drop(wr);
            let mut msg = Vec::new();
            let _ = fs::File::from(rd).read_to_end(&mut msg);
            let mut status = 0;
            // SAFETY: reaping the intermediate child we forked.
            unsafe { libc::waitpid(child, &mut status, 0) };
            if msg == b"ok" {
                std::process::exit(0);
            }
            let why = if msg.is_empty() {
                "the daemon exited before it was ready".to_owned()
            } else {
                String::from_utf8_lossy(&msg).into_owned()
            };
            eprintln!("{why}");
            std::process::exit(1);
        }
    }
    drop(rd);
    // SAFETY: in the child: a new session, then a second fork so the daemon is not a
    // session leader and can never acquire a terminal.
    unsafe {
        libc::setsid();
        match libc::fork() {
            -1 => libc::_exit(1),
            0 => {}
            _ => libc::_exit(0),
        }
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(out.as_raw_fd(), 1);
        libc::dup2(err.as_raw_fd(), 2);
    }
    Ok(Ready(Some(wr)))
}

// ---- prefork ----

/// What the prefork parent needs from the caller: start one worker in a child.
pub(crate) trait Worker {
    /// Runs a worker process to completion; returns its exit code.
    fn run_child(&self) -> i32;
}

/// Keeps `n` worker processes alive until a shutdown is requested (or `stop` says so,
/// asked every 100 ms); then runs `handover` if there is one (the restart window,
/// while workers still serve), stops the workers with SIGTERM and waits for them. A
/// worker that exits (max-requests, crash) is replaced.
pub(crate) fn prefork(
    n: usize,
    worker: &dyn Worker,
    handover: Option<&dyn Fn()>,
    stop: &dyn Fn() -> bool,
) -> Result<(), Error> {
    let mut children: Vec<libc::pid_t> = Vec::new();
    let mut recent_deaths: Vec<Instant> = Vec::new();
    // The shared count of workers that ended after serving, when last looked at, and
    // those of them not yet matched with a reaped worker.
    let mut ends_seen = 0;
    let mut served_ends = 0u64;
    // Each worker keeps its own stop clock (reset after the fork, below).
    sys::extend_stop_deadline(2, sys::StopExtra::WorkerMargin);
    // Without the shared page, restarts wait out the handover window, and every clean
    // exit counts as one after serving.
    let shared = sys::share_stopping_with_workers()
        .map_err(|e| log::warn!("could not share the stop flag with the workers: {e}"))
        .is_ok();
    // Held to the end: SIGCHLD is the app's again when this returns.
    let _watch = sys::watch_child_exits()
        .map_err(|e| {
            // Then an exited worker is replaced at the next look, within 100 ms.
            log::warn!("could not watch for exiting workers: {e}");
        })
        .ok();
    // SAFETY: getpid cannot fail.
    let parent = unsafe { libc::getpid() };
    let spawn = |children: &mut Vec<libc::pid_t>| -> Result<(), Error> {
        // Signals wait until the child has its own flags: one handled between the
        // fork and `reset_after_fork` would be lost (the reset lowers it) or written
        // into the parent's pipe. Blocked ones are delivered once unblocked.
        // SAFETY: sigset_t is plain data that sigfillset initialises; pthread_sigmask
        // with valid pointers.
        let old = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            old
        };
        // SAFETY: restoring the mask saved above.
        let unblock = || unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        };
        // SAFETY: the prefork parent is single-threaded; the child runs the worker
        // and exits without returning into the parent's code.
        match unsafe { libc::fork() } {
            -1 => {
                let e = io::Error::last_os_error();
                unblock();
                Err(Error::io("starting a worker process", e))
            }
            0 => {
                // A worker must not outlive its parent (killed with SIGKILL, say): it
                // would serve on as an orphan and keep a restarted server off the socket.
                // SAFETY: prctl and getppid with valid arguments.
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    if libc::getppid() != parent {
                        libc::_exit(0);
                    }
                }
                let reset = sys::reset_after_fork();
                unblock();
                let code = match reset {
                    Ok(()) => worker.run_child(),
                    Err(e) => {
                        log::error!("worker setup: {e}");
                        1
                    }
                };
                std::process::exit(code);
            }
            pid => {
                unblock();
                children.push(pid);
                Ok(())
            }
        }
    };
    for _ in 0..n {
        if let Err(e) = spawn(&mut children) {
            // With none at all there is nothing to serve; with some, they serve and the
            // rest are started below once the system lets us.
            if children.is_empty() {
                return Err(e);
            }
            log::warn!("{e}; starting with {} of {n} workers", children.len());
            break;
        }
    }
    log::info!("{} worker processes started", children.len());
    // When the next missing worker may be started: a failed fork (EAGAIN under a
    // host's process limit) is retried every second, while the others serve on.
    let mut next_spawn = Instant::now();
    let mut fork_failing = false;
    // Stopping for the new program (see below), not for good.
    let mut replacing = false;
    loop {
        // Reap.
        loop {
            let mut status = 0;
            // SAFETY: non-blocking reap of any child.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if !children.contains(&pid) {
                // A worker of the program this one replaced, done with the request it
                // was finishing.
                log::debug!("worker {pid} of the previous program has ended");
                continue;
            }
            children.retain(|&c| c != pid);
            if sys::shutdown_requested() {
                continue;
            }
            if libc::WIFSIGNALED(status) {
                log::warn!(
                    "worker {pid} was killed by signal {}; replacing it",
                    libc::WTERMSIG(status)
                );
            } else {
                log::debug!(
                    "worker {pid} exited ({}); replacing it",
                    libc::WEXITSTATUS(status)
                );
            }
            // A clean exit after serving (max-requests) is replaced at once; a worker
            // crashing in a loop, or exiting 0 in one without serving (an app that
            // ends its process as a worker starts), is not forked again as fast as it
            // dies. Each worker ending after serving raised the shared count before
            // its exit; a clean exit takes one of the ends counted since, and one that
            // finds none served nothing (two reaped together may take each other's
            // turn, which a loop, where none serves, never does).
            let ends = sys::worker_ends_after_serving();
            served_ends += ends.wrapping_sub(ends_seen);
            ends_seen = ends;
            let clean = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            let served = clean && (served_ends > 0 || !shared);
            served_ends -= u64::from(served);
            if !served {
                let now = Instant::now();
                recent_deaths.retain(|t| now.duration_since(*t) < Duration::from_secs(10));
                recent_deaths.push(now);
                if recent_deaths.len() > 4 * n {
                    next_spawn = next_spawn.max(now + Duration::from_millis(500));
                }
            }
        }
        if sys::shutdown_requested() {
            break;
        }
        if stop() {
            sys::request_shutdown();
            replacing = true;
            break;
        }
        while children.len() < n && Instant::now() >= next_spawn {
            match spawn(&mut children) {
                Ok(()) if fork_failing => {
                    fork_failing = false;
                    log::info!("worker processes: {} of {n} again", children.len());
                }
                Ok(()) => {}
                Err(e) => {
                    if !fork_failing {
                        log::warn!(
                            "{e}; serving with {} of {n} workers, retrying every second",
                            children.len()
                        );
                        fork_failing = true;
                    }
                    next_spawn = Instant::now() + Duration::from_secs(1);
                }
            }
        }
        // Wake when a worker exits, on shutdown, or every 100 ms to ask `stop`.
        let _ = sys::wait_for_child_exit(Duration::from_millis(100));
    }
    sys::tell_workers_stopping();
    if let Some(h) = handover {
        // The new server asks on the socket whether we are draining. With every worker
        // busy (long requests, long polls) nobody would answer within its second, and
        // the restart would be refused as beside a live server: one more worker for
        // the window answers it (it says it is draining, as the others do).
        if let Err(e) = spawn(&mut children) {
            log::debug!("{e}; the restart window has the workers there are");
        }
        h();
    }
    for &pid in &children {
        // SAFETY: signalling our own children.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    if replacing {
        // The idle workers end at once. One still in a request (a long poll, a slow
        // report) finishes it beside the new program, which starts its own workers
        // now rather than after the longest request in flight: no one would accept
        // meanwhile. It stays our child, through the `exec`, and the new program
        // reaps it.
        let until = Instant::now() + Duration::from_millis(500);
        while !children.is_empty() && Instant::now() < until {
            children.retain(|&pid| {
                let mut status = 0;
                // SAFETY: non-blocking wait for our own child.
                unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 }
            });
            std::thread::sleep(Duration::from_millis(5));
        }
        if !children.is_empty() {
            log::info!(
                "{} worker(s) still finishing a request; the new program starts beside them",
                children.len()
            );
        }
        return Ok(());
    }
    for pid in children {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Builder, Error> {
        let mut b = Builder::new();
        b.apply_args(args.iter().map(OsString::from))?;
        Ok(b)
    }

    /// The command line overrides the environment and the settings file, also when
    /// they name a different kind of listener (FCGI_SOCKET there, --listen here).
    #[test]
    fn the_command_line_listener_wins_over_the_environments() {
        let env = |name: &str| match name {
            "FCGI_SOCKET" => Some("/from/env.sock".to_owned()),
            "FCGI_PROCESSES" => Some("2".to_owned()),
            _ => None,
        };
        for (args, socket, listen, http) in [
            (
                &["--listen", "127.0.0.1:9000"][..],
                None,
                Some("127.0.0.1:9000"),
                None,
            ),
            (
                &["--http", "127.0.0.1:8000"][..],
                None,
                None,
                Some("127.0.0.1:8000"),
            ),
            (&[][..], Some("/from/env.sock"), None, None),
            // flup's spelling replaces it too.
            (
                &["host=127.0.0.1", "port=9001"][..],
                None,
                Some("127.0.0.1:9001"),
                None,
            ),
        ] {
            let mut b = Builder::new();
            b.apply_standalone_env(&env).unwrap();
            b.apply_args(args.iter().map(OsString::from)).unwrap();
            assert_eq!(b.sa.socket.as_deref(), socket.map(Path::new), "{args:?}");
            assert_eq!(b.sa.listen.as_deref(), listen, "{args:?}");
            assert_eq!(b.sa.http.as_deref(), http, "{args:?}");
            // The other settings from the environment stay.
            assert_eq!(b.sa.processes, Some(2), "{args:?}");
        }
        // Both `socket=` and `host=`/`port=`: refused, as Django's runfcgi refuses it,
        // and so are two kinds of listener in any spelling.
        for args in [
            &["port=9001", "socket=/a.sock"][..],
            &["socket=/a.sock", "host=h", "port=1"],
            &["--socket", "/a.sock", "--listen", "127.0.0.1:9000"],
            &["--listen", "9000", "--socket=/a.sock"],
            &["--http", "8000", "--listen", "9000"],
            &["--socket", "/a.sock", "port=9000"],
            &["socket=/a.sock", "--http", "8000"],
        ] {
            let mut b = Builder::new();
            assert!(
                b.apply_args(args.iter().map(OsString::from)).is_err(),
                "{args:?}"
            );
        }
    }

    #[test]
    fn long_options() {
        let b = parse(&[
            "--socket",
            "/tmp/s",
            "--threads=4",
            "--max-requests",
            "9",
            "--daemonize",
        ])
        .unwrap();
        assert_eq!(b.sa.socket.as_deref(), Some(Path::new("/tmp/s")));
        assert_eq!(b.cfg.max_conns, 4);
        assert_eq!(b.cfg.max_requests, Some(9));
        assert!(b.sa.daemonize);
        let b = parse(&["--listen", "9000", "--protocol", "scgi", "--umask", "0002"]).unwrap();
        assert_eq!(b.sa.listen.as_deref(), Some("9000"));
        assert_eq!(b.sa.protocol, Some(Protocol::Scgi));
        assert_eq!(b.sa.umask, Some(0o002));
    }

    #[test]
    fn runfcgi_spellings() {
        let b = parse(&[
            "method=prefork",
            "socket=/home/u/s.sock",
            "pidfile=django.pid",
            "maxrequests=1",
            "daemonize=false",
        ])
        .unwrap();
        assert_eq!(b.sa.processes, Some(4));
        assert_eq!(b.sa.pidfile.as_deref(), Some(Path::new("django.pid")));
        assert_eq!(b.cfg.max_requests, Some(1));
        assert!(!b.sa.daemonize);
        let b = parse(&[
            "method=threaded",
            "host=127.0.0.1",
            "port=3033",
            "protocol=scgi",
        ])
        .unwrap();
        assert_eq!(b.sa.listen.as_deref(), Some("127.0.0.1:3033"));
        assert_eq!(b.sa.protocol, Some(Protocol::Scgi));
        // maxchildren: processes under prefork (the default), threads under threaded,
        // in either order; Django's `fork` and `thread` spellings.
        let b = parse(&["maxchildren=6", "method=threaded"]).unwrap();
        assert_eq!((b.sa.processes, b.cfg.max_conns), (None, 6));
        let b = parse(&["method=thread", "maxchildren=3"]).unwrap();
        assert_eq!((b.sa.processes, b.cfg.max_conns), (None, 3));
        let b = parse(&["method=fork", "maxchildren=5"]).unwrap();
        assert_eq!(b.sa.processes, Some(5));
        let b = parse(&["maxchildren=2"]).unwrap();
        assert_eq!(b.sa.processes, Some(2));
        // runfcgi's defaults once a socket or port is given: prefork, in the background.
        let b = parse(&["socket=/s.sock", "maxrequests=1"]).unwrap();
        assert_eq!((b.sa.processes, b.sa.daemonize), (Some(4), true));
        let b = parse(&["host=127.0.0.1", "port=3033", "daemonize=false"]).unwrap();
        assert_eq!((b.sa.processes, b.sa.daemonize), (Some(4), false));
        let b = parse(&["socket=/s.sock", "method=threaded"]).unwrap();
        assert_eq!((b.sa.processes, b.sa.daemonize), (None, true));
        // Our own options keep theirs: threads, in the foreground.
        let b = parse(&["--socket", "/s.sock", "maxrequests=1"]).unwrap();
        assert_eq!((b.sa.processes, b.sa.daemonize), (None, false));
        let b = parse(&["socket=/s.sock", "--threads", "4"]).unwrap();
        assert_eq!(b.sa.processes, None);
        assert!(parse(&["help"]).unwrap().sa.help);
        // An IPv6 host is bracketed (`:::9000` bound 127.0.0.1:9000).
        for (host, want) in [
            ("::", "[::]:9000"),
            ("::1", "[::1]:9000"),
            ("[::1]", "[::1]:9000"),
        ] {
            let b = parse(&[&format!("host={host}"), "port=9000"]).unwrap();
            assert_eq!(b.sa.listen.as_deref(), Some(want), "{host}");
            assert!(
                crate::listen::parse_listen("--listen", want)
                    .unwrap()
                    .is_ipv6(),
                "{host}"
            );
        }
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse(&["--sockt", "x"]).unwrap_err().to_string();
        assert!(e.contains("--sockt"), "{e}");
        assert!(parse(&["--threads", "0"]).is_err());
        assert!(parse(&["--umask", "999"]).is_err());
        assert!(parse(&["--socket"]).is_err());
        assert!(parse(&["stray"]).is_err());
        assert!(parse(&["host=x"]).is_err());
    }
}
