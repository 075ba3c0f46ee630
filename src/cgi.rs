// One CGI request (RFC 3875): variables from the environment, body from stdin, the
// response on stdout.

use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStringExt;

use crate::body::Body;
use crate::config::Config;
use crate::context::Mode;
use crate::record::Role;
use crate::request::{self, DeclaredLength};
use crate::response::{self, WriteSink};
use crate::server::App;
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

/// True when the client sent a chunked body: the server then passes it on stdin
/// without a CONTENT_LENGTH, and it ends at end of file.
fn chunked(vars: &Vars) -> bool {
    vars.get_str("HTTP_TRANSFER_ENCODING")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
}

/// Serves the one request this process was started for.
pub(crate) fn serve_one(app: &dyn App, cfg: &Config) {
    // httpoxy: a client's `Proxy:` header arrives as HTTP_PROXY, the name HTTP clients
    // read their proxy from. It must not survive into the app's environment.
    // SAFETY: we are in a CGI process, before the app's handler runs; the only
    // concurrent environment readers would be threads the app started before `run`.
    unsafe { std::env::remove_var("HTTP_PROXY") };
    let vars = Vars::from_pairs(std::env::vars_os().map(|(k, v)| (k.into_vec(), v.into_vec())));
    let mut out = WriteSink::new(RawStdio::new(1));
    let built = request::content_length(&vars).and_then(|len| {
        // RFC 3875 4.1.2: no CONTENT_LENGTH means no body, unless the body is chunked.
        let len = match len {
            DeclaredLength::Exact(n) => Some(n),
            DeclaredLength::Absent if chunked(&vars) => None,
            DeclaredLength::Unknown => None,
            DeclaredLength::Absent => Some(0),
        };
        let body = match len {
            Some(0) => Body::empty(),
            len => Body::from_reader(RawStdio::new(0), len),
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
}

/// Answers a CGI request with an error status when the app cannot run at all.
pub(crate) fn answer_error(status: http::StatusCode) {
    let mut out = RawStdio::new(1);
    let _ = out.write_all(&response::error_head_and_body(status));
}
