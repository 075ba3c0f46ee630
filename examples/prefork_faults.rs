// A test fixture for tests/standalone.rs (prefork workers and their processes), not an
// example to copy.
//
// - PREFORK_FAULTS_EXIT0=1: every worker process ends itself with status 0 as it
//   starts, before it serves anything (from a `pthread_atfork` child handler);
// - PREFORK_FAULTS_SIGCHLD=1: the app installs a SIGCHLD handler of its own before
//   `run`;
// - /: `pid=PID sigchld=own|default|other`, the SIGCHLD action the worker has;
// - /cmd: runs `sh -c 'exit 3'` and says the status the app got;
// - once `run` returns, `after run: sigchld=...` on stderr, as `/` says it.

extern "C" fn worker_starts() {
    if std::env::var_os("PREFORK_FAULTS_EXIT0").is_some() {
        // SAFETY: ending the child process at once.
        unsafe { libc::_exit(0) };
    }
}

extern "C" fn own_sigchld(_: libc::c_int) {}

fn sigchld() -> &'static str {
    // SAFETY: reading the current action into a zeroed struct.
    let handler = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut sa);
        sa.sa_sigaction
    };
    match handler {
        h if h == own_sigchld as *const () as usize => "own",
        libc::SIG_DFL => "default",
        _ => "other",
    }
}

fn app(req: http::Request<fcgi_shim::Body>) -> http::Response<String> {
    let pid = std::process::id();
    http::Response::new(match req.uri().path() {
        "/cmd" => {
            let status = std::process::Command::new("sh")
                .args(["-c", "exit 3"])
                .status();
            format!("pid={pid} status={:?}", status.map(|s| s.code()))
        }
        _ => format!("pid={pid} sigchld={}", sigchld()),
    })
}

fn main() -> Result<(), fcgi_shim::Error> {
    if std::env::var_os("PREFORK_FAULTS_SIGCHLD").is_some() {
        // SAFETY: installing a handler that does nothing.
        unsafe { libc::signal(libc::SIGCHLD, own_sigchld as *const () as usize) };
    }
    // SAFETY: registering a child handler that is async-signal-safe.
    unsafe { libc::pthread_atfork(None, None, Some(worker_starts)) };
    let result = fcgi_shim::run(app);
    eprintln!("after run: sigchld={}", sigchld());
    result
}
