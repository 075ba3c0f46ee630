// The accept loop: worker threads over a listening socket, shutdown, max-requests, and
// exiting when the program file is replaced.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use http::Request;

use crate::body::Body;
use crate::config::Config;
use crate::conn;
use crate::error::Error;
use crate::listen;
use crate::response::{self, Handler, Outcome, Sink};
use crate::sockio::{self, SockIo};
use crate::standalone::Protocol;
use crate::sys::{self, Accepted, Listener, Wake, Watch};
use crate::{http1, scgi};

/// What the servers call per request; the sync handler API implements it (and the
/// tower adapter does too), so every protocol and launch mode has one code path.
pub(crate) trait App: Send + Sync + 'static {
    fn serve(&self, req: Request<Body>, out: &mut dyn Sink) -> Outcome;
}

/// A plain handler as an [`App`].
pub(crate) struct SyncApp<H>(pub H);

impl<H: Handler> App for SyncApp<H> {
    fn serve(&self, req: Request<Body>, out: &mut dyn Sink) -> Outcome {
        response::serve(&self.0, req, out)
    }
}

/// Identity of a file on disk, to notice it being replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    mtime: i64,
    mtime_nsec: i64,
    size: u64,
}

fn file_id(path: &std::path::Path) -> Option<FileId> {
    let m = fs::metadata(path).ok()?;
    Some(FileId {
        dev: m.dev(),
        ino: m.ino(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
        size: m.size(),
    })
}

struct ExeWatch {
    path: PathBuf,
    id: FileId,
    interval_ms: u64,
    /// When the file was last looked at, in [`sys::coarse_ms`].
    last_ms: AtomicU64,
}

impl ExeWatch {
    fn new(interval: Duration) -> Option<ExeWatch> {
        // The path we were started by: through a symlink, a switched link counts too.
        let path = sys::invoked_exe()?.to_path_buf();
        let id = file_id(&path)?;
        Some(ExeWatch {
            path,
            id,
            interval_ms: interval.as_millis().try_into().unwrap_or(u64::MAX),
            last_ms: AtomicU64::new(sys::coarse_ms()),
        })
    }

    /// True when the file at our path is no longer the one we started from (checked
    /// at most once per interval: one `stat` then; on the other requests one read of
    /// the coarse clock, which needs neither a lock nor a system call).
    fn replaced(&self) -> bool {
        let now = sys::coarse_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < self.interval_ms
            || self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        file_id(&self.path) != Some(self.id)
    }

    /// What happened to the file, for the log line.
    fn change(&self) -> &'static str {
        match file_id(&self.path) {
            None => "was removed",
            Some(now) if (now.dev, now.ino) != (self.id.dev, self.id.ino) => "was replaced",
            Some(_) => "changed on disk (written in place or touched)",
        }
    }
}

/// For a prefork parent under a web server, which serves no requests: true once the
/// program file is no longer the one it started from and has stayed the same between
/// two looks (an upload written in place has ended), looked at most once per
/// `interval`. `None` when the file cannot be watched.
pub(crate) fn binary_watch(interval: Duration) -> Option<impl Fn() -> bool> {
    let w = ExeWatch::new(interval)?;
    let seen: std::cell::Cell<Option<Option<FileId>>> = std::cell::Cell::new(None);
    Some(move || {
        if !w.replaced() {
            return false;
        }
        let now = file_id(&w.path);
        let settled = seen.get() == Some(now);
        seen.set(Some(now));
        settled
    })
}

/// Why the program file at `path` could not be run, as far as can be told without
/// running it: not executable by us, or neither a script (`#!`) nor an ELF program
/// for this machine (a build for another system, or a text file). `None`: it looks
/// runnable. What `execv` would still refuse (a script's missing interpreter, say)
/// is found by trying, and so is a file that is gone.
pub(crate) fn cannot_run(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return Some("a NUL byte in its path".to_owned());
    };
    // SAFETY: faccessat with a NUL-terminated path; AT_EACCESS checks with the
    // effective ids, as execve does.
    if unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::X_OK, libc::AT_EACCESS) } != 0 {
        let e = std::io::Error::last_os_error();
        // Removed (or a link to nothing): the program is gone, not refused; the
        // process goes as for any replacement.
        if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) {
            return None;
        }
        return Some(if e.raw_os_error() == Some(libc::EACCES) {
            "not executable (chmod 755 it)".to_owned()
        } else {
            format!("not executable: {e}")
        });
    }
    // The ELF identity (class, byte order) and the machine field, or the first bytes.
    let head = |p: &std::path::Path| -> Option<[u8; 20]> {
        let mut h = [0u8; 20];
        let mut f = fs::File::open(p).ok()?;
        let mut n = 0;
        while n < h.len() {
            match f.read(&mut h[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(_) => return None,
            }
        }
        Some(h)
    };
    let Some(h) = head(path) else {
        return Some("it cannot be read".to_owned());
    };
    if h.starts_with(b"#!") {
        return None;
    }
    if !h.starts_with(b"\x7fELF") {
        return Some("not a program (neither ELF nor a #! script)".to_owned());
    }
    // Against the running program's own header: a build for another machine (an
    // arm64 binary on x86-64) fails the same way.
    match head(std::path::Path::new("/proc/self/exe")) {
        Some(me) if (me[4], me[5], me[18], me[19]) != (h[4], h[5], h[18], h[19]) => {
            Some("an ELF program for another kind of machine".to_owned())
        }
        _ => None,
    }
}

/// Says, once per file, why a replaced program file cannot be run.
#[derive(Default)]
pub(crate) struct Unrunnable(std::sync::Mutex<Option<(Option<FileId>, String)>>);

impl Unrunnable {
    /// True when the file at `path` cannot be run ([`cannot_run`]), with an error
    /// logged the first time for this file and reason. Looked at again at every
    /// check, so a `chmod` or the next upload ends the refusal.
    pub(crate) fn refuse(&self, path: &std::path::Path) -> bool {
        let Some(why) = cannot_run(path) else {
            return false;
        };
        let key = (file_id(path), why);
        let mut said = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if said.as_ref() != Some(&key) {
            log::error!(
                "{} was replaced on disk, but the new file cannot be run: {}; serving on with the program already running",
                path.display(),
                key.1
            );
            *said = Some(key);
        }
        true
    }
}

/// Per-process request accounting: max-requests and the binary watch.
pub(crate) struct Lifecycle {
    served: AtomicU64,
    max: Option<u64>,
    exe: Option<ExeWatch>,
    /// When the binary was found replaced: the time to exit, in [`sys::coarse_ms`]
    /// (0: not replaced).
    exit_at_ms: AtomicU64,
    /// A replaced file found unrunnable, said once.
    refused: Unrunnable,
    /// A prefork worker, replaced when it exits.
    worker: bool,
}

/// How long after noticing its binary replaced a process exits: 0, 2 or 4 s by its
/// pid. The processes of one program (lighttpd's `max-procs`, spawn-fcgi's children)
/// all notice within a second; exiting together, they would leave lighttpd with no
/// backend until it restarted them (a burst of 503s), while staggered, one serves
/// while another restarts.
fn replaced_exit_delay_ms() -> u64 {
    u64::from(std::process::id() % 3) * 2000
}

impl Lifecycle {
    pub(crate) fn new(cfg: &Config) -> Lifecycle {
        Lifecycle {
            served: AtomicU64::new(0),
            max: cfg.max_requests,
            exe: if cfg.watch_binary {
                ExeWatch::new(cfg.binary_check_interval)
            } else {
                None
            },
            exit_at_ms: AtomicU64::new(0),
            refused: Unrunnable::default(),
            worker: cfg.sibling_workers,
        }
    }

    /// Called after every request.
    pub(crate) fn after_request(&self) {
        let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        if sys::shutdown_requested() {
            return;
        }
        if let Some(max) = self.max {
            if n >= max {
                // A prefork worker's exit is routine (it is replaced at once); a whole
                // server's is said, or a standalone site would vanish unexplained.
                if self.worker {
                    log::debug!("served {n} requests (max-requests {max}); exiting");
                } else {
                    log::info!("served {n} requests (max-requests {max}); exiting");
                }
                sys::request_shutdown();
                return;
            }
        }
        self.check_binary();
    }

    /// How often a worker waiting for a connection wakes to look at the program file
    /// (`None`: it is not watched). An idle process notices a new upload too, and exits
    /// without waiting for a request: under mod_fcgid, whose requests go to processes
    /// of the new file from then on, the old one would otherwise idle until
    /// `FcgidIdleTimeout`, holding its memory.
    pub(crate) fn idle_check_interval(&self) -> Option<Duration> {
        self.exe
            .as_ref()
            .map(|w| Duration::from_millis(w.interval_ms.max(100)))
    }

    /// The program-file check: asks for the exit once it is replaced (after the
    /// process's stagger delay).
    pub(crate) fn check_binary(&self) {
        if sys::shutdown_requested() {
            return;
        }
        if let Some(w) = &self.exe {
            let exit_at = self.exit_at_ms.load(Ordering::Relaxed);
            if exit_at != 0 {
                if sys::coarse_ms() >= exit_at {
                    sys::request_shutdown();
                }
            } else if w.replaced() {
                // A new file that cannot be run: the process serves on. Under lighttpd
                // `bin-path` the server would fail to start the new file and answer 503
                // until it is fixed; mod_fcgid sends nothing more to the old process,
                // which goes at its idle timeout.
                if self.refused.refuse(&w.path) {
                    return;
                }
                let delay = replaced_exit_delay_ms();
                log::info!(
                    "{} {}; exiting {} so the web server starts the new one",
                    w.path.display(),
                    w.change(),
                    if delay == 0 {
                        "now".to_owned()
                    } else {
                        format!("in {} s", delay / 1000)
                    }
                );
                if delay == 0 {
                    sys::request_shutdown();
                } else {
                    self.exit_at_ms
                        .store(sys::coarse_ms() + delay, Ordering::Relaxed);
                }
            }
        }
    }

    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// True once max-requests is reached: accept no more connections (with several
    /// threads, requests already accepted may still take it a little past the limit).
    pub(crate) fn exhausted(&self) -> bool {
        self.max.is_some_and(|m| self.served() >= m)
    }
}

/// How a listener is served.
#[derive(Clone)]
pub(crate) struct ServeOpts {
    pub protocol: Protocol,
    /// Standalone with a socket of our own: after a shutdown request, keep accepting
    /// until a new server takes the socket over or the window ends. `None` under a
    /// web server (mod_fcgid, lighttpd, spawn-fcgi, systemd keep the socket).
    pub handover: Option<Arc<dyn Fn() + Send + Sync>>,
    /// On stop, accept and serve what is already queued on the listener.
    pub drain_backlog: Drain,
}

/// When a stopping worker serves the connections queued on its listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drain {
    /// The listener outlives us (a web server's, systemd's): leave them to it.
    Never,
    /// We own the listener: nobody else will.
    Always,
    /// A prefork worker: when the whole server stops (a signal), not when only this
    /// worker is replaced (max-requests) and its siblings go on accepting.
    OnSignal,
    /// Under a web server: when we end ourselves (max-requests, the binary replaced),
    /// since the web server still takes us for alive and may have connected already
    /// (closing would reset those connections: a 500 under mod_fcgid, and lighttpd
    /// takes the backend out of service); not on its signal, which comes when it has
    /// decided to stop us.
    OnOwnExit,
}

impl ServeOpts {
    pub(crate) fn under_web_server(protocol: Protocol) -> ServeOpts {
        ServeOpts {
            protocol,
            handover: None,
            drain_backlog: Drain::OnOwnExit,
        }
    }
}

struct Pool {
    listener: Listener,
    app: Arc<dyn App>,
    cfg: Arc<Config>,
    life: Arc<Lifecycle>,
    opts: ServeOpts,
    /// Workers waiting to accept: when none is left, one more is started.
    idle: AtomicUsize,
    threads: AtomicUsize,
    handles: Mutex<Vec<JoinHandle<Result<(), Error>>>>,
    /// Kept-alive FastCGI connections idle while every thread is taken. A pool of one
    /// thread has one too: behind nginx's `keepalive` its one idle connection would
    /// otherwise keep the thread from every other for good (not `--processes N` alone,
    /// whose siblings take what waits).
    lot: Option<sys::ParkLot>,
    /// The watch over the lot ([`watch_for_waiting_connections`]) is started.
    watching: std::sync::atomic::AtomicBool,
    /// This pool, for the watch a one-thread pool starts when a connection is first
    /// kept alive.
    me: std::sync::Weak<Pool>,
}

/// The most connections one process parks (each is a descriptor and an epoll entry);
/// past it, the one parked longest with nothing to read is closed to make room.
const PARK_MAX: usize = 1024;

impl conn::Parking for Pool {
    fn pressure(&self) -> bool {
        let Some(lot) = &self.lot else {
            return false;
        };
        // A free worker takes whatever waits, and one more can still be started.
        if self.idle.load(Ordering::Acquire) > 0
            || self.threads.load(Ordering::Acquire) < self.cfg.max_conns
        {
            return false;
        }
        lot.has_ready() || !sys::nothing_to_read(self.listener.as_raw_fd())
    }

    fn crowded(&self) -> bool {
        self.lot.as_ref().is_some_and(|lot| !lot.is_empty())
            && self.idle.load(Ordering::Acquire) == 0
            && self.full()
    }

    fn full(&self) -> bool {
        self.lot.is_some() && self.threads.load(Ordering::Acquire) >= self.cfg.max_conns
    }

    fn park(&self, fd: std::os::fd::OwnedFd) -> Result<(), std::os::fd::OwnedFd> {
        match &self.lot {
            Some(lot) => lot.park(fd),
            None => Err(fd),
        }
    }

    fn kept_alive(&self) {
        // A pool of several threads starts its watch once every thread is started. A
        // one-thread pool starts it here, so that processes under mod_fcgid, which
        // keeps no connection alive, never run it.
        if self.cfg.max_conns == 1 && !self.watching.load(Ordering::Acquire) {
            if let Some(p) = self.me.upgrade() {
                start_watch(&p);
            }
        }
    }
}

/// What a worker got to serve.
enum Work {
    New(sys::Socket, Option<std::net::SocketAddr>),
    /// A parked kept-alive connection with something to read.
    Parked(sys::Socket),
}

/// How many threads this process serves requests on at most: 1 until a server
/// starts (CGI), then its thread count.
static SERVING_THREADS: AtomicUsize = AtomicUsize::new(1);

/// How many threads this process serves requests on at most (1 under CGI).
#[cfg_attr(not(feature = "tower"), allow(dead_code))]
pub(crate) fn serving_threads() -> usize {
    SERVING_THREADS.load(Ordering::Relaxed)
}

/// Serves `listener` until a shutdown is requested (signal, max-requests, binary
/// replaced) and the requests in flight are done. Worker threads are started as
/// connections need them, up to `cfg.max_conns`. Under a web server this thread is
/// one of the workers; a standalone server that owns its socket keeps this thread to
/// run the restart handover.
pub(crate) fn serve(
    listener: Listener,
    app: Arc<dyn App>,
    cfg: Arc<Config>,
    opts: ServeOpts,
) -> Result<(), Error> {
    sys::install_shutdown_handlers().map_err(|e| Error::io("installing signal handlers", e))?;
    sys::set_spin(cfg.spin);
    SERVING_THREADS.store(cfg.max_conns, Ordering::Relaxed);
    let life = Arc::new(Lifecycle::new(&cfg));
    let coordinated = opts.handover.is_some();
    let lot = if (cfg.max_conns > 1 || !cfg.sibling_workers) && opts.protocol == Protocol::FastCgi {
        sys::ParkLot::new(PARK_MAX)
            .map_err(|e| log::debug!("no lot for idle connections: {e}"))
            .ok()
    } else {
        None
    };
    let pool = Arc::new_cyclic(|me| Pool {
        listener,
        app,
        cfg,
        life,
        opts,
        idle: AtomicUsize::new(0),
        threads: AtomicUsize::new(0),
        handles: Mutex::new(Vec::new()),
        lot,
        watching: std::sync::atomic::AtomicBool::new(false),
        me: me.clone(),
    });
    let mut result = Ok(());
    if coordinated {
        // This thread only coordinates: without a worker nothing would be served,
        // and connections would hang rather than fail.
        if let Err(e) = grow(&pool) {
            return Err(Error::io("starting a worker thread", e));
        }
        // Wake on a shutdown request, then hold the socket open for a new server: a
        // restart signals us. The process's own exit (max-requests, a replaced
        // binary) has no new server coming, and its workers have stopped accepting:
        // holding the socket would only queue connections to be reset at the close.
        while !sys::shutdown_requested() {
            let _ = sys::wait(-1, false, None, Watch::Drain);
        }
        if sys::shutdown_signal().is_some() {
            if let Some(h) = &pool.opts.handover {
                // The new server asks on the listener whether we are draining. With
                // every worker busy (long requests, long polls) nobody would answer
                // within its second, and the restart would be refused as beside a live
                // server: one more worker for the window answers it.
                let _ = grow_to(&pool, pool.cfg.max_conns + 1);
                h();
            }
        }
        sys::ACCEPT.raise();
    } else {
        pool.threads.store(1, Ordering::Release);
        pool.idle.store(1, Ordering::Release);
        result = worker(&pool);
    }
    loop {
        let h = pool.handles.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let Some(h) = h else { break };
        match h.join() {
            Ok(Err(e)) if result.is_ok() => result = Err(e),
            _ => {}
        }
    }
    // Connections made while the last workers finished are served, not reset.
    if coordinated && pool.opts.drain_backlog == Drain::Always {
        drain_backlog(&pool);
    }
    // Parked connections are idle ones: closed at the stop, as those a thread holds,
    // after a request that has already arrived on one is served (as on those; each
    // worker served such ones as it stopped, and FCGI_STOP_TIMEOUT bounds it all).
    if let Some(lot) = &pool.lot {
        serve_parked_requests(&pool, lot);
        lot.close_all();
    }
    match sys::shutdown_signal() {
        Some(sig) => log::debug!(
            "signal {sig}: stopped after {} requests",
            pool.life.served()
        ),
        None => log::debug!("stopped after {} requests", pool.life.served()),
    }
    if result.is_ok() {
        sys::note_worker_end(pool.life.served());
    }
    result
}

/// The longest a blocking `accept` waits before it looks at the stop flag and the
/// program file again.
const BLOCKING_ACCEPT_TIMEOUT: Duration = Duration::from_millis(250);

fn worker(pool: &Arc<Pool>) -> Result<(), Error> {
    // The listener is unusable: stop every worker, report once.
    let fail = |e: Error| {
        sys::request_shutdown();
        sys::ACCEPT.raise();
        Err(e)
    };
    // One worker: a lingering close must give way to a queued connection, which no
    // other thread of ours would take (other processes on the socket might: the wait
    // wakes one sleeping process per connection, see `wait_readable_or_backlog`).
    // With several threads, or several worker processes of our own, the others take
    // it: giving way there only cut lingering closes short, and cost one-thread
    // processes under load a third of their p99 (BENCHMARKS.md).
    if pool.cfg.max_conns == 1 && !pool.cfg.sibling_workers {
        sys::set_thread_listener(pool.listener.as_raw_fd());
    }
    // One worker alone in its pool, on a socket no handover shares: it waits for
    // connections in a blocking `accept`, as libfcgi does. An `epoll_wait` and a second
    // `accept4` per connection cost it 6 us more CPU per request behind Apache +
    // mod_fcgid, where each process waits for every request (BENCHMARKS.md). The
    // receive timeout bounds the wait: the program-file check, and a stop signal that
    // lands between the last look at the stop flag and the `accept` (a window of a few
    // instructions) is seen within it.
    let blocking = pool.cfg.max_conns == 1
        && !pool.cfg.sibling_workers
        && pool.opts.handover.is_none()
        && pool
            .listener
            .set_blocking_accept(
                BLOCKING_ACCEPT_TIMEOUT.min(
                    pool.life
                        .idle_check_interval()
                        .unwrap_or(BLOCKING_ACCEPT_TIMEOUT),
                ),
            )
            .map_err(|e| log::debug!("waiting in accept: {e}; polling instead"))
            .is_ok();
    let waiter = match sys::AcceptWait::new(
        pool.listener.as_raw_fd(),
        accept_watch(pool),
        pool.lot.as_ref().map(sys::ParkLot::as_raw_fd),
    ) {
        Ok(w) => w,
        // Out of descriptors (each worker has its own epoll descriptor) when the pool
        // grows: the workers there are serve on, as when a thread cannot be started.
        Err(e) if pool.threads.load(Ordering::Acquire) > 1 => {
            log::warn!("could not start one more worker: {e}; serving on with the others");
            pool.threads.fetch_sub(1, Ordering::AcqRel);
            pool.idle.fetch_sub(1, Ordering::AcqRel);
            return Ok(());
        }
        Err(e) => return fail(Error::io("waiting for connections", e)),
    };
    loop {
        // A one-thread pool with connections parked waits on the lot as well as on the
        // listener, which the blocking `accept` cannot.
        let parked = pool.lot.as_ref().is_some_and(|l| !l.is_empty());
        let accepted = match if blocking && !parked {
            accept_blocking(pool, &waiter)
        } else {
            accept_one(pool, &waiter, blocking)
        } {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        let Some(work) = accepted else {
            // Requests already sent on parked connections are answered, by every
            // stopping worker at once.
            if let Some(lot) = &pool.lot {
                serve_parked_requests(pool, lot);
            }
            let drain = match pool.opts.drain_backlog {
                Drain::Never => false,
                Drain::Always => true,
                Drain::OnSignal => sys::shutdown_signal().is_some(),
                Drain::OnOwnExit => sys::shutdown_signal().is_none(),
            };
            if drain {
                drain_backlog(pool);
            }
            return Ok(());
        };
        if pool.idle.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Logged there; the workers there serve on.
            let _ = grow(pool);
        }
        match work {
            Work::New(sock, peer) => serve_guarded(pool, sock, peer),
            Work::Parked(sock) => resume_guarded(pool, sock),
        }
        pool.idle.fetch_add(1, Ordering::AcqRel);
    }
}

/// Accepts and serves what is queued on the listener when we stop, so connections a
/// web server made just before will not be reset.
fn drain_backlog(pool: &Arc<Pool>) {
    // Bounded: under steady load a web server may go on connecting while we drain.
    let until = std::time::Instant::now() + Duration::from_secs(2);
    for _ in 0..256 {
        // A blocking listener would wait out its timeout once the backlog is empty.
        if sys::nothing_to_read(pool.listener.as_raw_fd()) {
            return;
        }
        match pool.listener.accept() {
            Ok(Accepted::Conn(sock, peer)) => serve_guarded(pool, sock, peer),
            _ => return,
        }
        if std::time::Instant::now() > until {
            return;
        }
    }
}

/// [`serve_connection`], for a worker or the backlog drain. Apps' panics are caught
/// where they run; this is for one that escapes all the same: that connection is
/// closed, and the thread lives on.
fn serve_guarded(pool: &Arc<Pool>, sock: sys::Socket, peer: Option<std::net::SocketAddr>) {
    if let Err(msg) = crate::response::guarded(|| serve_connection(pool, sock, peer)) {
        log::error!("panic while serving a connection: {msg}; the connection was closed");
    }
}

/// Serves the parked connections that have a request (or their end) waiting; each is
/// served until it is idle again, which while stopping closes it.
fn serve_parked_requests(pool: &Arc<Pool>, lot: &sys::ParkLot) {
    while let Some(sock) = lot.claim() {
        resume_guarded(pool, sock);
    }
}

/// A parked connection taken back ([`serve_guarded`] for it: its address was checked
/// when it was accepted, and only FastCGI connections are parked).
fn resume_guarded(pool: &Arc<Pool>, sock: sys::Socket) {
    let run = || {
        let _open = sys::OpenConn::new();
        serve_fastcgi(pool, sock, true);
    };
    if let Err(msg) = crate::response::guarded(run) {
        log::error!("panic while serving a connection: {msg}; the connection was closed");
    }
}

/// A FastCGI connection, new or taken back from the lot (`resumed`).
fn serve_fastcgi(pool: &Arc<Pool>, sock: sys::Socket, resumed: bool) {
    let parking = pool
        .lot
        .is_some()
        .then(|| pool.clone() as Arc<dyn conn::Parking>);
    conn::serve(
        sock,
        &*pool.app,
        &pool.cfg,
        &mut || pool.life.after_request(),
        parking,
        resumed,
    );
}

/// One accepted connection: the address filter, then the protocol.
fn serve_connection(pool: &Arc<Pool>, sock: sys::Socket, peer: Option<std::net::SocketAddr>) {
    let _open = sys::OpenConn::new();
    let cfg = &pool.cfg;
    if let (Some(allowed), Some(p)) = (&cfg.web_server_addrs, peer) {
        if !listen::addr_allowed(allowed, p.ip()) {
            // From this machine, it may be a server starting on this port asking
            // whether we are draining (a restart, or a second server to refuse): that
            // question is answered, and nothing else. (Its answer tells nothing a
            // local user could not see in the process list.)
            let local = p.ip().is_loopback() || sock.local_addr().is_some_and(|l| l.ip() == p.ip());
            if local && first_byte_is_fastcgi(pool, &sock) {
                conn::serve_management_only(
                    sock,
                    cfg,
                    format!("refused a request from {p}: not in FCGI_WEB_SERVER_ADDRS"),
                );
            } else {
                log::warn!("refused a connection from {p}: not in FCGI_WEB_SERVER_ADDRS");
            }
            return;
        }
    }
    let after = &mut || pool.life.after_request();
    match pool.opts.protocol {
        Protocol::FastCgi => serve_fastcgi(pool, sock, false),
        Protocol::Scgi => {
            // A FastCGI record (version byte 1) on an SCGI socket is a new server
            // asking whether we are draining; SCGI starts with a digit.
            // The first byte is part of the head: the head's timeout (10 s at most).
            let head = crate::config::head_timeout(cfg.read_timeout);
            match sockio::peek_first(&sock, Some(head)) {
                Some(1) => conn::serve_management_only(sock, cfg, on_other_port()),
                Some(_) => {
                    scgi::serve(
                        SockIo::new(sock, cfg.read_timeout, cfg.write_timeout),
                        &*pool.app,
                        cfg,
                    );
                    after();
                }
                None => {}
            }
        }
        Protocol::Http => {
            // As on an SCGI socket: a FastCGI record is a new server asking whether we
            // are draining (so a second server is refused, and a restart takes over).
            match sockio::peek_first(&sock, Some(http1::idle_limit(cfg))) {
                Some(1) => conn::serve_management_only(sock, cfg, on_other_port()),
                Some(_) => {
                    let local = sock.local_addr();
                    let io = SockIo::new(sock, cfg.read_timeout, cfg.write_timeout);
                    http1::serve(io, peer, local, &*pool.app, cfg, after);
                }
                None => {}
            }
        }
    }
}

fn on_other_port() -> String {
    "a FastCGI request on an SCGI or HTTP port".to_owned()
}

/// True when a connection starts with a FastCGI record (version byte 1): on a FastCGI
/// port, always (a request is refused by the record, with its log line); on an SCGI or
/// HTTP port, looked at within the head's timeout.
fn first_byte_is_fastcgi(pool: &Pool, sock: &sys::Socket) -> bool {
    match pool.opts.protocol {
        Protocol::FastCgi => true,
        Protocol::Scgi | Protocol::Http => {
            let head = crate::config::head_timeout(pool.cfg.read_timeout);
            sockio::peek_first(sock, Some(head)) == Some(1)
        }
    }
}

/// Starts the watch over waiting connections, once, when the pool has a lot and every
/// thread it may have is started (before, a connection that waits gets a new thread).
fn start_watch(pool: &Arc<Pool>) {
    if pool.lot.is_none() || pool.watching.swap(true, Ordering::AcqRel) {
        return;
    }
    let p = pool.clone();
    match std::thread::Builder::new()
        .name("fcgi-watch".to_owned())
        .spawn(move || {
            watch_for_waiting_connections(&p);
            Ok(())
        }) {
        // Joined with the workers when the server stops.
        Ok(h) => pool
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(h),
        Err(e) => log::warn!("could not start the watch over idle connections: {e}"),
    }
}

/// Every `PARK_CHECK`, while every thread is taken: when a connection waits (a new one,
/// or a parked one with a request), the threads blocked on idle kept-alive connections
/// are interrupted, and those still idle give their thread up. Threads between two
/// requests of a busy connection look for themselves (`conn`), and those idle look
/// only when asked: a timer on each of their reads cost 5–7 % of the kept-alive
/// throughput at 8 threads (BENCHMARKS.md). Also applies `FCGI_IDLE_TIMEOUT` to
/// parked connections.
fn watch_for_waiting_connections(pool: &Pool) {
    loop {
        match sys::wait(-1, false, Some(conn::PARK_CHECK), Watch::Drain) {
            Ok(Wake::Stop) | Err(_) => return,
            _ => {}
        }
        if sys::shutdown_requested() || sys::ACCEPT.is_raised() || pool.life.exhausted() {
            return;
        }
        if conn::Parking::pressure(pool) {
            sys::ask_idle_readers_to_park();
        }
        sweep_parked(pool);
    }
}

/// Starts one more worker when every worker is busy and the cap allows. A thread that
/// cannot be started is logged; the error is returned for the caller that has no
/// worker otherwise.
fn grow(pool: &Arc<Pool>) -> std::io::Result<()> {
    grow_to(pool, pool.cfg.max_conns)
}

/// [`grow`] with a cap of `cap` threads.
fn grow_to(pool: &Arc<Pool>, cap: usize) -> std::io::Result<()> {
    let n = pool.threads.fetch_add(1, Ordering::AcqRel);
    if n >= cap {
        pool.threads.fetch_sub(1, Ordering::AcqRel);
        return Ok(());
    }
    pool.idle.fetch_add(1, Ordering::AcqRel);
    let p = pool.clone();
    match std::thread::Builder::new()
        .name(format!("fcgi-worker-{n}"))
        .spawn(move || worker(&p))
    {
        Ok(h) => {
            pool.handles
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(h);
            if n + 1 >= pool.cfg.max_conns {
                start_watch(pool);
            }
            Ok(())
        }
        Err(e) => {
            pool.threads.fetch_sub(1, Ordering::AcqRel);
            pool.idle.fetch_sub(1, Ordering::AcqRel);
            log::warn!("could not start a worker thread: {e}");
            Err(e)
        }
    }
}

/// Standalone with a handover: accepting stops when the coordinator says so;
/// otherwise as soon as a shutdown is requested.
fn accept_watch(pool: &Pool) -> Watch {
    if pool.opts.handover.is_some() {
        Watch::Accept
    } else {
        Watch::Drain
    }
}

/// [`accept_one`] for a worker whose listener blocks in `accept`: a look that does not
/// wait, the spin when nothing is queued, then `accept` until a connection comes, a
/// shutdown is requested, or the receive timeout (the program-file check) passes.
fn accept_blocking(pool: &Pool, waiter: &sys::AcceptWait) -> Result<Option<Work>, Error> {
    let fd = pool.listener.as_raw_fd();
    let mut backoff_logged = false;
    let mut first = true;
    loop {
        if pool.life.exhausted() || waiter.stopped() {
            return Ok(None);
        }
        if std::mem::take(&mut first) && sys::nothing_to_read(fd) {
            // Not queued yet: the next one may be on its way (the same client again).
            sys::spin(&[(fd, libc::POLLIN)], 0);
            continue;
        }
        match pool.listener.accept_or_stop() {
            Ok(Accepted::Conn(s, addr)) => return Ok(Some(Work::New(s, addr))),
            // Timed out, interrupted, or a connection aborted before it was taken.
            Ok(Accepted::Nothing) => {
                pool.life.check_binary();
                // Another process on the socket (a copy starting up, or one with several
                // threads) may have made the listener non-blocking again, and then this
                // accept did not wait: wait on the epoll set instead of spinning.
                if sys::is_nonblocking(fd) {
                    match waiter.wait(Some(BLOCKING_ACCEPT_TIMEOUT)) {
                        Ok(Wake::Stop) => return Ok(None),
                        Ok(_) => {}
                        Err(e) => return Err(Error::io("waiting for connections", e)),
                    }
                }
            }
            Err(e) => accept_failed(e, &mut backoff_logged)?,
        }
    }
}

/// An `accept` error: out of descriptors or memory is waited out (logged once per
/// wait); anything else means the listener is unusable.
fn accept_failed(e: std::io::Error, backoff_logged: &mut bool) -> Result<(), Error> {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            if !*backoff_logged {
                log::warn!("accept: {e}; retrying");
                *backoff_logged = true;
            }
            std::thread::sleep(Duration::from_millis(100));
            Ok(())
        }
        _ => Err(Error::io("accepting connections", e)),
    }
}

/// Takes a new connection, or a parked one with something to read, waiting for either.
/// `listener_blocks`: the listener is in blocking mode (a one-thread pool with
/// connections parked), so an `accept` is made only when a connection is queued.
fn accept_one(
    pool: &Pool,
    waiter: &sys::AcceptWait,
    listener_blocks: bool,
) -> Result<Option<Work>, Error> {
    let fd = pool.listener.as_raw_fd();
    let accept = || {
        if listener_blocks && sys::nothing_to_read(fd) {
            Ok(Accepted::Nothing)
        } else {
            pool.listener.accept()
        }
    };
    let mut backoff_logged = false;
    // Under load a connection is usually queued already: try before polling.
    if pool.life.exhausted() {
        return Ok(None);
    }
    let mut spun = false;
    if !waiter.stopped() {
        // A new connection first: a parked one was served before, and may be back at
        // once with its next request (a connection parked by the pressure look).
        if let Ok(Accepted::Conn(s, addr)) = accept() {
            return Ok(Some(Work::New(s, addr)));
        }
        if let Some(s) = claim_parked(pool) {
            return Ok(Some(Work::Parked(s)));
        }
        // Not queued yet: the next one may be on its way (the same client again).
        spun = sys::spin(&[(pool.listener.as_raw_fd(), libc::POLLIN)], 0);
    }
    loop {
        // A spin that found a connection is as good as the wait, unless accepting
        // stopped meanwhile.
        if !std::mem::take(&mut spun) || waiter.stopped() {
            match waiter.wait(pool.life.idle_check_interval()) {
                Ok(Wake::Stop) => return Ok(None),
                Ok(Wake::TimedOut) => {
                    // Idle: look at the program file; a replaced one stops accepting.
                    pool.life.check_binary();
                    continue;
                }
                Ok(_) => {}
                Err(e) => return Err(Error::io("waiting for connections", e)),
            }
        }
        if pool.life.exhausted() {
            return Ok(None);
        }
        match accept() {
            Ok(Accepted::Conn(s, addr)) => return Ok(Some(Work::New(s, addr))),
            Ok(Accepted::Nothing) => {}
            Err(e) => accept_failed(e, &mut backoff_logged)?,
        }
        if let Some(s) = claim_parked(pool) {
            return Ok(Some(Work::Parked(s)));
        }
    }
}

/// A parked connection with something to read, if any (one atomic load when none is
/// parked).
fn claim_parked(pool: &Pool) -> Option<sys::Socket> {
    pool.lot.as_ref()?.claim()
}

/// Closes parked connections idle past `FCGI_IDLE_TIMEOUT` (the watch does it, 4 times
/// a second: it runs whenever a connection can be parked, since parking needs every
/// thread started).
fn sweep_parked(pool: &Pool) {
    if let (Some(lot), Some(idle)) = (&pool.lot, pool.cfg.idle_timeout) {
        let n = lot.close_idle(idle);
        if n > 0 {
            log::debug!("closed {n} parked connections idle for FCGI_IDLE_TIMEOUT");
        }
    }
}
