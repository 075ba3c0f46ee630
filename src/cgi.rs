// One CGI request (RFC 3875): variables from the environment, body from stdin, the
// response on stdout.

use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStringExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::body::Body;
use crate::config::Config;
use crate::context::Mode;
use crate::record::Role;
use crate::request::{self, DeclaredLength};
use crate::response::{self, WriteSink};
use crate::server::App;
use crate::sys::{self, Wake, Watch};
use crate::vars::Vars;

/// A standard fd used without taking ownership (it is never closed by us).
struct RawStdio(ManuallyDrop<File>);

impl RawStdio {
    fn new(fd: i32) -> RawStdio {
        // SAFETY: fds 0 and 1 exist for the life of the process; ManuallyDrop means we
        // never close them.
        RawStdio(ManuallyDrop::new(unsafe { File::from_raw_fd(fd) }))
    }
}

impl Read for RawStdio {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for RawStdio {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Bytes a write to stdout carries while an unread body may still be coming: at most
/// PIPE_BUF, which a pipe (mod_cgi) or a socket (mod_cgid) that polls writable takes
/// without blocking.
const SMALL_WRITE: usize = 4096;
/// What one read of an unread body takes at most.
const DRAIN_READ: usize = 64 * 1024;

/// The request body on stdin and how much of it the app has taken, shared between the
/// app's [`Body`] and this module: what the app leaves unread is dropped, since a web
/// server writes the whole body before it reads the response (Apache mod_cgi(d) gets
/// EPIPE writing to a program that exited without reading it, and drops the response).
struct Unread {
    /// The declared length; `None` for a body that ends at the end of stdin.
    len: Option<u64>,
    taken: AtomicU64,
    /// Stdin ended (or failed): nothing more will come.
    ended: AtomicBool,
    /// The app dropped its body: the rest is ours to drop.
    released: AtomicBool,
}

impl Unread {
    fn new(len: Option<u64>) -> Unread {
        Unread {
            len,
            taken: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            released: AtomicBool::new(false),
        }
    }

    /// How much the next read may take (0: the body is all read).
    fn want(&self, buf: usize) -> usize {
        if self.ended.load(Ordering::Relaxed) {
            return 0;
        }
        match self.len {
            Some(len) => {
                let left = len.saturating_sub(self.taken.load(Ordering::Relaxed));
                usize::try_from(left).map_or(buf, |l| l.min(buf))
            }
            None => buf,
        }
    }

    /// One read from stdin, counted.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let r = RawStdio::new(0).read(buf);
        match &r {
            Ok(0) if !buf.is_empty() => self.ended.store(true, Ordering::Relaxed),
            Ok(n) => {
                self.taken.fetch_add(*n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.ended.store(true, Ordering::Relaxed),
        }
        r
    }

    /// Reads and drops one buffer's worth of the unread body; the bytes dropped.
    fn drop_some(&self, scratch: &mut Vec<u8>) -> u64 {
        let want = self.want(DRAIN_READ);
        if want == 0 {
            return 0;
        }
        scratch.resize(DRAIN_READ, 0);
        match self.read(&mut scratch[..want]) {
            Ok(n) => n as u64,
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::debug!("reading the unread request body to drop it: {e}");
                }
                0
            }
        }
    }
}

/// The app's side of stdin: reads are counted in the shared [`Unread`].
struct Stdin(Arc<Unread>);

impl Read for Stdin {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Drop for Stdin {
    fn drop(&mut self) {
        self.0.released.store(true, Ordering::Relaxed);
    }
}

/// Stdout. While the app has dropped a body the web server is still writing, a write
/// waits for stdout *or* stdin, and drops what comes on stdin meanwhile: the web
/// server reads no response before the whole body is written, so a response larger
/// than the pipe would otherwise wait for it forever (Apache's `Timeout`).
struct Stdout {
    fd: RawStdio,
    unread: Option<Arc<Unread>>,
    scratch: Vec<u8>,
    dropped: u64,
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(u) = &self.unread {
            while u.released.load(Ordering::Relaxed) && u.want(1) > 0 {
                match sys::wait_out_or_other_in(1, 0, None)? {
                    Wake::Ready => return self.fd.write(&buf[..buf.len().min(SMALL_WRITE)]),
                    _ => self.dropped += u.drop_some(&mut self.scratch),
                }
            }
        }
        self.fd.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// After the response: reads and drops what is left of the body, each read waiting at
/// most `timeout` (a client that stalls does not keep the process).
fn drain(u: &Unread, timeout: Option<Duration>, scratch: &mut Vec<u8>) -> u64 {
    let mut dropped = 0;
    while u.want(1) > 0 {
        match sys::wait(0, false, timeout, Watch::Nothing) {
            Ok(Wake::TimedOut) => {
                let t = timeout.unwrap_or_default();
                log::debug!("stopped dropping the unread request body: nothing came for {t:?}");
                break;
            }
            Ok(_) => dropped += u.drop_some(scratch),
            Err(e) => {
                log::debug!("waiting for the unread request body: {e}");
                break;
            }
        }
    }
    dropped
}

/// True when a body of no declared length may follow on stdin, to its end of file: the
/// client sent it chunked (HTTP/1.1), or over HTTP/2 or 3, which have no
/// Transfer-Encoding, with no length (a streamed upload; fcgiwrap behind nginx with
/// `fastcgi_request_buffering off` passes one on so, with CONTENT_LENGTH empty). A GET
/// or HEAD over HTTP/2 is taken to have none; the servers close its stdin at once
/// anyway (Apache mod_cgid, lighttpd mod_cgi and fcgiwrap, measured).
fn unframed_body(vars: &Vars) -> bool {
    let chunked = vars
        .get_str("HTTP_TRANSFER_ENCODING")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    chunked
        || (request::over_http2(vars)
            && !matches!(vars.get("REQUEST_METHOD"), Some(b"GET" | b"HEAD")))
}

/// Serves the one request this process was started for.
pub(crate) fn serve_one(app: &dyn App, cfg: &Config) {
    // httpoxy: a client's `Proxy:` header arrives as HTTP_PROXY, the name HTTP clients
    // read their proxy from. It must not survive into the app's environment.
    // SAFETY: we are in a CGI process, before the app's handler runs; the only
    // concurrent environment readers would be threads the app started before `run`.
    unsafe { std::env::remove_var("HTTP_PROXY") };
    let vars = Vars::from_pairs(std::env::vars_os().map(|(k, v)| (k.into_vec(), v.into_vec())));
    // RFC 3875 4.1.2: no CONTENT_LENGTH means no body, unless the body has no length
    // to declare (chunked, or a streamed HTTP/2 upload).
    let len = request::content_length(&vars).map(|len| match len {
        DeclaredLength::Exact(n) => Some(n),
        DeclaredLength::Absent if unframed_body(&vars) => None,
        DeclaredLength::Unknown => None,
        DeclaredLength::Absent => Some(0),
    });
    let unread = match len {
        Ok(Some(0)) | Err(_) => None,
        Ok(len) => Some(Arc::new(Unread::new(len))),
    };
    let mut out = WriteSink::new(Stdout {
        fd: RawStdio::new(1),
        unread: unread.clone(),
        scratch: Vec::new(),
        dropped: 0,
    });
    let built = len.and_then(|_| {
        let body = match &unread {
            None => Body::empty(),
            Some(u) => Body::from_reader(Stdin(u.clone()), u.len),
        };
        request::build(vars, body, Mode::Cgi, Role::Responder, &cfg.map)
    });
    match built {
        Ok(req) => {
            app.serve(req, &mut out);
        }
        Err(rej) => {
            log::warn!("{}; answered {}", rej.reason, rej.status.as_u16());
            response::send_error(rej.status, &mut out);
        }
    }
    if let Err(e) = out.flush() {
        log::info!("writing the response: {e}");
    }
    if let Some(u) = unread {
        let o = out.get_mut();
        let dropped = o.dropped + drain(&u, cfg.read_timeout, &mut o.scratch);
        if dropped > 0 {
            log::debug!("dropped {dropped} bytes of the request body the app did not read");
        }
    }
}

/// Answers a CGI request with an error status when the app cannot run at all.
pub(crate) fn answer_error(status: http::StatusCode) {
    let mut out = RawStdio::new(1);
    let _ = out.write_all(&response::error_head_and_body(status));
}
