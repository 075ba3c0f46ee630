// How we were started, and serving accordingly: a listening socket on fd 0 (FastCGI
// under a web server), options for a server of our own, systemd socket activation, or
// none of these (a person at a terminal, who gets an explanation).

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Builder;
use crate::error::Error;
use crate::listen::{self, SocketFile};
use crate::server::{self, App, Drain, ServeOpts};
use crate::standalone::{self, Protocol, Ready};
use crate::sys::{self, Listener};

/// Serves after the CGI cases are ruled out (see `Builder::run_app`).
/// Started from a terminal with nothing to serve: an explanation and exit status 2
/// when the process is ours (`owns_process`), else the error, for the app to handle.
pub(crate) fn run(
    b: Builder,
    app: Arc<dyn App>,
    fd0: bool,
    program: &str,
    owns_process: bool,
) -> Result<(), Error> {
    let protocol = b.sa.protocol.unwrap_or_default();
    if b.sa.wants_listener() {
        return run_standalone(b, app, None);
    }
    if let Some(l) = listen::systemd_listener() {
        return run_standalone(b, app, Some(l));
    }
    if fd0 {
        let l = Listener::take_stdin().map_err(|e| Error::io("taking the socket on fd 0", e))?;
        let processes = b.sa.processes.unwrap_or(1);
        if processes > 1 {
            return prefork_under_web_server(b.cfg, processes, l, app, protocol);
        }
        let cfg = Arc::new(b.cfg);
        return server::serve(l, app, cfg, ServeOpts::under_web_server(protocol));
    }
    if !owns_process {
        return Err(Error::NotLaunchedByWebServer);
    }
    eprint!("{}", explanation(program));
    std::process::exit(2);
}

/// `FCGI_PROCESSES` under a web server (lighttpd `bin-path`, spawn-fcgi), as php-cgi's
/// `PHP_FCGI_CHILDREN`: this process keeps the web server's socket and N workers accept
/// on it. A worker that exits (max-requests, a crash) is replaced while the others
/// serve, so the web server never sees its backend gone, where a single process that
/// exits makes lighttpd answer 503 until it has restarted it. The parent watches the
/// program file instead of the workers (a worker forked from the old program would
/// never run the new one): once it has been replaced (and stayed the same for a look,
/// so an upload has ended), the idle workers stop and the process runs the new
/// program in its place (`exec`, same pid, same socket: connections made meanwhile
/// wait in the listen backlog), while a worker still in a request finishes it beside
/// the new program's workers; should the `exec` fail, it exits for the web server to
/// start the program anew.
fn prefork_under_web_server(
    mut cfg: crate::config::Config,
    processes: usize,
    listener: Listener,
    app: Arc<dyn App>,
    protocol: Protocol,
) -> Result<(), Error> {
    sys::install_shutdown_handlers().map_err(|e| Error::io("installing signal handlers", e))?;
    let replaced = if cfg.watch_binary {
        server::binary_watch(cfg.binary_check_interval)
    } else {
        None
    };
    cfg.watch_binary = false;
    cfg.advertised_conns = Some(cfg.max_conns * processes);
    cfg.sibling_workers = processes > 1;
    let worker = PreforkWorker {
        listener,
        app,
        cfg: Arc::new(cfg),
        protocol,
        // A worker that exits leaves what is queued to the others (or, when the
        // program is replaced, to the new one); the web server's signal is its
        // decision to stop us.
        drain: Drain::Never,
    };
    let was_replaced = std::cell::Cell::new(false);
    let refused = server::Unrunnable::default();
    let stop = || {
        if !replaced.as_ref().is_some_and(|f| f()) {
            return false;
        }
        // A new file that cannot be run (uploaded without its execute bit, a build for
        // another system): the workers serve on with the program they have, as a web
        // server keeps its workers when a reload fails.
        if sys::invoked_exe().is_some_and(|exe| refused.refuse(exe)) {
            return false;
        }
        log::info!(
            "the program file was replaced on disk; the workers finish what they have, then the new program takes over"
        );
        was_replaced.set(true);
        true
    };
    standalone::prefork(processes, &worker, None, &stop)?;
    if was_replaced.get() && sys::shutdown_signal().is_none() {
        let e = run_in_place(&worker.listener);
        log::error!(
            "could not start the new program in this process ({e}); exiting, for the web server to start it"
        );
    }
    Ok(())
}

/// Replaces this process with the program file it was started by, the listening socket
/// on fd 0 as the web server gave it, the same arguments and environment, and no
/// blocked signals. Returns only on failure.
fn run_in_place(listener: &Listener) -> std::io::Error {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let Some(exe) = sys::invoked_exe() else {
        return std::io::Error::other("the program's path is unknown");
    };
    let c = |s: &std::ffi::OsStr| CString::new(s.as_bytes());
    let (Ok(path), Ok(args)) = (
        c(exe.as_os_str()),
        std::env::args_os()
            .map(|a| c(&a))
            .collect::<Result<Vec<_>, _>>(),
    ) else {
        return std::io::Error::other("a NUL byte in the program's path or arguments");
    };
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: dup2 onto fd 0 (which drops its close-on-exec flag); an emptied signal
    // mask; execv with NUL-terminated strings and a null-terminated argv that outlive
    // the call. The process is single-threaded here (the prefork parent).
    unsafe {
        if libc::dup2(listener.as_raw_fd(), 0) < 0 {
            return std::io::Error::last_os_error();
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // The stop's clock was started for the old program; an alarm outlives exec.
        libc::alarm(0);
        libc::execv(path.as_ptr(), argv.as_ptr());
    }
    std::io::Error::last_os_error()
}

/// A server of our own: `--socket`, `--listen`, `--http`, or the socket systemd passed.
fn run_standalone(b: Builder, app: Arc<dyn App>, systemd: Option<Listener>) -> Result<(), Error> {
    let Builder {
        mut cfg,
        sa,
        threads_explicit,
        ..
    } = b;
    if let Some(d) = &sa.workdir {
        std::env::set_current_dir(d).map_err(|e| {
            Error::io(
                "changing to --workdir",
                std::io::Error::new(e.kind(), format!("{}: {e}", d.display())),
            )
        })?;
    }
    if let Some(m) = sa.umask {
        // SAFETY: umask(2) cannot fail.
        unsafe { libc::umask(m as libc::mode_t) };
    }
    if !threads_explicit {
        // Threaded: 8 connections at once. Prefork: one per worker process, as flup's
        // prefork server, so each worker's max-requests is exact.
        cfg.max_conns = if sa.processes.unwrap_or(1) > 1 { 1 } else { 8 };
    }
    // Nobody restarts a standalone server for us when its file is replaced.
    cfg.watch_binary = false;
    if let (Some(n), None, None) = (cfg.max_requests, sa.processes.filter(|&p| p > 1), &systemd) {
        // Documented, but easy to miss: max-requests recycles a prefork worker; the
        // one process of a server without workers ends, and only a supervisor (systemd
        // with a socket unit) would start it again.
        log::warn!(
            "max-requests {n} without worker processes: this server exits after {n} requests \
             and nothing here restarts it (add --processes N to recycle workers instead)"
        );
    }
    let (protocol, listener, file, tcp) = if let Some(l) = systemd {
        (sa.protocol.unwrap_or_default(), l, None, false)
    } else if let Some(h) = &sa.http {
        let b = listen::bind_tcp(listen::parse_listen("--http", h)?)?;
        (Protocol::Http, b.listener, Some(b.file), true)
    } else if let Some(p) = &sa.socket {
        let b = listen::bind_unix(p)?;
        (
            sa.protocol.unwrap_or_default(),
            b.listener,
            Some(b.file),
            false,
        )
    } else {
        let addr = sa.listen.as_deref().unwrap_or_default();
        let b = listen::bind_tcp(listen::parse_listen("--listen", addr)?)?;
        (
            sa.protocol.unwrap_or_default(),
            b.listener,
            Some(b.file),
            true,
        )
    };
    if protocol == Protocol::Http {
        log::warn!("the --http server is for trying the app locally, not for production");
    }
    sys::install_shutdown_handlers().map_err(|e| Error::io("installing signal handlers", e))?;
    let mut ready = if sa.daemonize {
        standalone::daemonize(
            sa.outlog.as_deref(),
            sa.errlog.as_deref(),
            listener.as_raw_fd(),
        )?
    } else {
        Ready::none()
    };
    if let Some(p) = &sa.pidfile {
        if let Err(e) = standalone::write_pidfile(p) {
            ready.fail(&e.to_string());
            if let Some(f) = &file {
                f.remove_if_ours();
            }
            return Err(e);
        }
    }
    ready.ok();

    // systemd keeps its socket (and queues for the next start): no handover, no drain.
    let owned = file.is_some();
    let handover = file
        .clone()
        .map(|f| handover_window(f, tcp, cfg.restart_grace));
    if handover.is_some() {
        // The restart window, during which a stopping server still accepts, comes
        // before the stop's own clock.
        sys::extend_stop_deadline(
            cfg.restart_grace.as_secs_f64().ceil() as u32,
            sys::StopExtra::RestartWindow,
        );
    }
    let processes = sa.processes.unwrap_or(1);
    let result = if processes > 1 {
        cfg.advertised_conns = Some(cfg.max_conns * processes);
        cfg.sibling_workers = true;
        let cfg = Arc::new(cfg);
        let worker = PreforkWorker {
            listener,
            app,
            cfg,
            protocol,
            drain: if owned { Drain::OnSignal } else { Drain::Never },
        };
        standalone::prefork(
            processes,
            &worker,
            handover.as_deref().map(|h| h as &dyn Fn()),
            &|| false,
        )
    } else {
        let opts = ServeOpts {
            protocol,
            handover,
            drain_backlog: if owned { Drain::Always } else { Drain::Never },
        };
        server::serve(listener, app, Arc::new(cfg), opts)
    };
    if let Some(f) = &file {
        f.remove_if_ours();
    }
    if let Some(p) = &sa.pidfile {
        standalone::remove_pidfile(p);
    }
    result
}

/// The restart window of a stopping server that owns its socket: it keeps accepting
/// until a new server has renamed its socket over ours (Unix), or `grace` passes.
fn handover_window(file: SocketFile, tcp: bool, grace: Duration) -> Arc<dyn Fn() + Send + Sync> {
    Arc::new(move || {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !tcp && !file.is_ours() {
                log::debug!("a new server took over the socket");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

struct PreforkWorker {
    listener: Listener,
    app: Arc<dyn App>,
    cfg: Arc<crate::config::Config>,
    protocol: Protocol,
    drain: Drain,
}

impl standalone::Worker for PreforkWorker {
    fn run_child(&self) -> i32 {
        let l = match self.listener.try_clone() {
            Ok(l) => l,
            Err(e) => {
                log::error!("worker: {e}");
                return 1;
            }
        };
        let opts = ServeOpts {
            protocol: self.protocol,
            handover: None,
            drain_backlog: self.drain,
        };
        match server::serve(l, self.app.clone(), self.cfg.clone(), opts) {
            Ok(()) => 0,
            Err(e) => {
                log::error!("worker: {e}");
                1
            }
        }
    }
}

/// What we print when started by hand: what this program is and how to deploy it.
pub(crate) fn explanation(program: &str) -> String {
    let tty = if sys::is_terminal(0) {
        "a terminal"
    } else {
        "something that is not a web server"
    };
    format!(
        "{program}: this is a web application built with fcgi-shim (FastCGI and CGI).
It was started from {tty}, so there is nothing to serve.

A web server starts it:
  - Apache mod_fcgid or mod_fastcgi, lighttpd `bin-path`, spawn-fcgi: they pass a
    listening socket on stdin and it serves FastCGI on it;
  - any CGI-capable server (Apache mod_cgi, ...): it sets GATEWAY_INTERFACE and it
    answers one request.

To deploy on shared hosting: upload it as public_html/{program} (mode 755), and
copy the matching .htaccess from fcgi-shim's htaccess/ folder next to it
(htaccess/fcgid-root.htaccess for the site root, fcgid-subdir.htaccess for a
subdirectory, cgi-fallback.htaccess where only CGI is allowed).

To try it in a browser here:  ./{program} --http 127.0.0.1:8000
To run it behind nginx etc.:  ./{program} --socket /path/to/app.sock  (see --help)
"
    )
}

/// `--help`.
pub(crate) fn usage(program: &str) -> String {
    format!(
        "{program}: a web application built with fcgi-shim.

Under a web server it needs no arguments: Apache mod_fcgid/mod_fastcgi, lighttpd and
spawn-fcgi start it with a listening socket on stdin; CGI servers set
GATEWAY_INTERFACE. To run it as a server of its own (behind nginx, Apache
mod_proxy_fcgi, lighttpd \"socket\", or systemd socket activation):

  {program} --socket /home/user/mysite.sock --pidfile mysite.pid
  {program} --listen 127.0.0.1:3033 --threads 8
  {program} --http 127.0.0.1:8000        # try it in a browser

{}",
        standalone::USAGE
    )
}
