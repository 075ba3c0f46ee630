// The accept loop: worker threads over a listening socket, shutdown, max-requests, and
// exiting when the program file is replaced.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http::Request;

use crate::body::Body;
use crate::config::Config;
use crate::conn;
use crate::error::Error;
use crate::response::{self, Handler, Outcome, Sink};
use crate::sys::{self, Accepted, Listener, Wake};

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
    interval: Duration,
    last: Mutex<Instant>,
}

impl ExeWatch {
    fn new(interval: Duration) -> Option<ExeWatch> {
        let path = std::env::current_exe().ok()?;
        let id = file_id(&path)?;
        Some(ExeWatch {
            path,
            id,
            interval,
            last: Mutex::new(Instant::now()),
        })
    }

    /// True when the file at our path is no longer the one we started from (checked
    /// at most once per interval: one `stat` then, nothing on the other requests).
    fn replaced(&self) -> bool {
        let now = Instant::now();
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if now.duration_since(*last) < self.interval {
                return false;
            }
            *last = now;
        }
        file_id(&self.path) != Some(self.id)
    }
}

/// Per-process request accounting: max-requests and the binary watch.
pub(crate) struct Lifecycle {
    served: AtomicU64,
    max: Option<u64>,
    exe: Option<ExeWatch>,
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
                log::debug!("served {n} requests (max-requests {max}); exiting");
                sys::request_shutdown();
                return;
            }
        }
        if let Some(w) = &self.exe {
            if w.replaced() {
                log::info!(
                    "{} was replaced on disk; exiting so the web server starts the new one",
                    w.path.display()
                );
                sys::request_shutdown();
            }
        }
    }

    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

struct Pool {
    listener: Listener,
    app: Arc<dyn App>,
    cfg: Arc<Config>,
    life: Arc<Lifecycle>,
    accept_lock: Mutex<()>,
    idle: AtomicUsize,
    threads: AtomicUsize,
    handles: Mutex<Vec<JoinHandle<Result<(), Error>>>>,
}

/// Serves FastCGI on `listener` until a shutdown is requested (signal, max-requests,
/// binary replaced) and the requests in flight are done. Worker threads are started
/// as connections need them, up to `cfg.max_conns`; one of them is this thread.
pub(crate) fn serve_fastcgi(
    listener: Listener,
    app: Arc<dyn App>,
    cfg: Arc<Config>,
) -> Result<(), Error> {
    sys::install_shutdown_handlers().map_err(|e| Error::io("installing signal handlers", e))?;
    let life = Arc::new(Lifecycle::new(&cfg));
    let pool = Arc::new(Pool {
        listener,
        app,
        cfg,
        life,
        accept_lock: Mutex::new(()),
        idle: AtomicUsize::new(1),
        threads: AtomicUsize::new(1),
        handles: Mutex::new(Vec::new()),
    });
    let mut result = worker(&pool);
    loop {
        let h = pool.handles.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let Some(h) = h else { break };
        match h.join() {
            Ok(Err(e)) if result.is_ok() => result = Err(e),
            _ => {}
        }
    }
    match sys::shutdown_signal() {
        Some(sig) => log::debug!(
            "signal {sig}: stopped after {} requests",
            pool.life.served()
        ),
        None => log::debug!("stopped after {} requests", pool.life.served()),
    }
    result
}

fn worker(pool: &Arc<Pool>) -> Result<(), Error> {
    loop {
        let accepted = {
            let _leader = pool.accept_lock.lock().unwrap_or_else(|p| p.into_inner());
            match accept_one(pool) {
                Ok(a) => a,
                Err(e) => {
                    // The listener is unusable: stop every worker, report once.
                    sys::request_shutdown();
                    return Err(e);
                }
            }
        };
        let Some((sock, _peer)) = accepted else {
            return Ok(());
        };
        if pool.idle.fetch_sub(1, Ordering::AcqRel) == 1 {
            grow(pool);
        }
        conn::serve(sock, &*pool.app, &pool.cfg, &mut || {
            pool.life.after_request()
        });
        pool.idle.fetch_add(1, Ordering::AcqRel);
    }
}

/// Starts one more worker when every worker is busy and the cap allows.
fn grow(pool: &Arc<Pool>) {
    let n = pool.threads.fetch_add(1, Ordering::AcqRel);
    if n >= pool.cfg.max_conns {
        pool.threads.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    pool.idle.fetch_add(1, Ordering::AcqRel);
    let p = pool.clone();
    match std::thread::Builder::new()
        .name(format!("fcgi-worker-{n}"))
        .spawn(move || worker(&p))
    {
        Ok(h) => pool
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(h),
        Err(e) => {
            pool.threads.fetch_sub(1, Ordering::AcqRel);
            pool.idle.fetch_sub(1, Ordering::AcqRel);
            log::warn!("could not start a worker thread: {e}");
        }
    }
}

fn accept_one(pool: &Pool) -> Result<Option<(sys::Socket, Option<std::net::SocketAddr>)>, Error> {
    let fd = pool.listener.as_raw_fd();
    let mut backoff_logged = false;
    loop {
        if sys::shutdown_requested() {
            return Ok(None);
        }
        match sys::wait(fd, false, None, true) {
            Ok(Wake::Shutdown) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(Error::io("waiting for connections", e)),
        }
        match pool.listener.accept() {
            Ok(Accepted::Conn(s, addr)) => return Ok(Some((s, addr))),
            Ok(Accepted::Nothing) => {}
            Err(e) => match e.raw_os_error() {
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                    if !backoff_logged {
                        log::warn!("accept: {e}; retrying");
                        backoff_logged = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => return Err(Error::io("accepting connections", e)),
            },
        }
    }
}
