// One FastCGI connection: records in, requests assembled, the app called, records out.
//
// The connection is not multiplexed (FCGI_MPXS_CONNS is 0): one request at a time, the
// app runs on the connection's thread, and its request body pulls FCGI_STDIN records
// from the socket as it reads. Management records, a second BEGIN_REQUEST and an
// ABORT_REQUEST are handled whenever they arrive: while waiting for a request, while the
// app reads its body, and between chunks of a streamed response.

use std::io::{self, IoSlice, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::body::{Body, BodySource};
use crate::config::Config;
use crate::context::Mode;
use crate::logger;
use crate::record::{
    self, BeginRequest, HEADER_LEN, Header, MAX_CHUNK, NULL_REQUEST_ID, ProtocolStatus, RecordType,
    Role,
};
use crate::request::{self, DeclaredLength};
use crate::response::{self, Check, Outcome, Sink};
use crate::server::App;
use crate::sys::{self, Wake, Watch};
use crate::vars::{ParamsError, Vars};

/// What a connection reads from and writes to. Reads and writes may return
/// `WouldBlock`; `wait` then blocks until progress is possible.
pub(crate) trait Transport: Send {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Blocks until readable (`writable == false`) or writable, the timeout passes, or
    /// (with `watch_shutdown`) a shutdown is requested.
    fn wait(
        &mut self,
        writable: bool,
        timeout: Option<Duration>,
        watch_shutdown: bool,
    ) -> io::Result<Wake>;
    /// Blocks until writable, or readable (more of the request came), or the timeout.
    fn wait_out_or_in(&mut self, timeout: Option<Duration>) -> io::Result<Wake> {
        self.wait(true, timeout, false)
    }
    /// Half-closes our sending side; used for a lingering close.
    fn shutdown_write(&mut self) {}
    /// Makes the coming close an abortive one (a TCP reset), where there is such a thing.
    fn reset_on_close(&mut self) {}
    /// Blocks for the next request on an idle kept-alive connection, without a poll;
    /// `Ok(None)` on shutdown. `WouldBlock`: not supported, poll instead.
    fn idle_read(&mut self, _buf: &mut [u8]) -> io::Result<Option<usize>> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    /// The descriptor to watch for readiness, if there is one.
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// A second descriptor of the connection, to park it.
    fn duplicate(&self) -> Option<std::os::fd::OwnedFd> {
        None
    }
}

impl Transport for sys::Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sys::Socket::read(self, buf)
    }
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sys::Socket::write(self, buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        sys::Socket::write_vectored(self, bufs)
    }
    fn wait(
        &mut self,
        writable: bool,
        timeout: Option<Duration>,
        watch_shutdown: bool,
    ) -> io::Result<Wake> {
        use std::os::fd::AsRawFd;
        let watch = if watch_shutdown {
            Watch::Drain
        } else {
            Watch::Nothing
        };
        sys::wait(self.as_raw_fd(), writable, timeout, watch)
    }
    fn wait_out_or_in(&mut self, timeout: Option<Duration>) -> io::Result<Wake> {
        use std::os::fd::AsRawFd;
        sys::wait_out_or_in(self.as_raw_fd(), timeout)
    }
    fn shutdown_write(&mut self) {
        let _ = sys::Socket::shutdown_write(self);
    }
    fn reset_on_close(&mut self) {
        let _ = sys::Socket::reset_on_close(self);
    }
    fn idle_read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        sys::Socket::idle_read(self, buf)
    }
    fn duplicate(&self) -> Option<std::os::fd::OwnedFd> {
        sys::Socket::duplicate(self).ok()
    }
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        Some(self.as_raw_fd())
    }
}

/// Why a connection stopped.
#[derive(Debug)]
pub(crate) enum ConnError {
    /// The web server closed the connection between requests: the normal end.
    Closed,
    /// We are shutting down and the connection was idle.
    Shutdown,
    /// A rejected request asked us to close (`FCGI_KEEP_CONN` off).
    Done,
    /// The web server sent something that is not FastCGI.
    Protocol(String),
    /// A well-formed request this connection may not make (a peer FCGI_WEB_SERVER_ADDRS
    /// does not list, a FastCGI request on an SCGI or HTTP port): the reason.
    Refused(String),
    /// The web server closed the connection in the middle of a record or request.
    Truncated(String),
    /// Nothing arrived in time.
    TimedOut(&'static str),
    /// A socket error (the web server went away mid-request, ...).
    Io(io::Error),
    /// Idle between requests while every thread is taken and another connection
    /// waits: the connection goes to the pool's [`Parking`] lot.
    Park,
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Closed => f.write_str("connection closed by the web server"),
            ConnError::Shutdown => f.write_str("shutting down"),
            ConnError::Done => f.write_str("request rejected, connection closed"),
            ConnError::Park => f.write_str("parked while idle"),
            ConnError::Protocol(m) => write!(f, "malformed FastCGI input: {m}"),
            ConnError::Refused(m) => f.write_str(m),
            ConnError::Truncated(m) => write!(f, "the web server closed the connection {m}"),
            ConnError::TimedOut(what) => write!(f, "timed out waiting for {what}"),
            ConnError::Io(e) => write!(f, "connection error: {e}"),
        }
    }
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> ConnError {
        ConnError::Io(e)
    }
}

impl ConnError {
    fn to_io(&self) -> io::Error {
        match self {
            ConnError::Io(e) => io::Error::new(e.kind(), e.to_string()),
            ConnError::Closed | ConnError::Truncated(_) => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the web server closed the connection mid-request",
            ),
            ConnError::TimedOut(_) => io::Error::new(io::ErrorKind::TimedOut, self.to_string()),
            _ => io::Error::new(io::ErrorKind::InvalidData, self.to_string()),
        }
    }
}

/// A hint for a connection that starts with something other than FastCGI: SCGI (a
/// netstring: digits, then ':') or HTTP (a method, then a space). Empty otherwise.
fn other_protocol_hint(head: &[u8]) -> &'static str {
    let digits = head.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 0 && head.get(digits) == Some(&b':') {
        return ": this looks like SCGI (is the web server set to scgi_pass or \
                mod_proxy_scgi while this server speaks FastCGI? Start it with \
                --protocol scgi, or use fastcgi_pass)";
    }
    let letters = head.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if (3..=7).contains(&letters) && head.get(letters) == Some(&b' ') {
        return ": this looks like HTTP (is the web server set to proxy_pass or \
                ProxyPass http:// while this server speaks FastCGI? Use fastcgi_pass \
                or ProxyPass fcgi://)";
    }
    ""
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Receiving FCGI_PARAMS.
    Params,
    /// PARAMS complete; the app is running.
    Running,
}

struct Active {
    id: u16,
    keep_conn: bool,
    role: Role,
    phase: Phase,
    params: Vec<u8>,
    params_over: bool,
    stdin_done: bool,
    /// Body bytes still due before an empty FCGI_STDIN ends the stream, for an HTTP/2
    /// or 3 request with a declared length (0 otherwise): mod_fcgid turns the empty
    /// pieces mod_http2 hands it into empty FCGI_STDIN records, before and between
    /// the body's, though the spec makes an empty one the end.
    stdin_due: u64,
    aborted: bool,
    body_attached: bool,
}

/// The record whose content is being consumed.
#[derive(Debug, Clone, Copy)]
struct Cur {
    record_type: RecordType,
    id: u16,
    left: usize,
}

/// A request whose params are complete.
struct Ready {
    id: u16,
    role: Role,
    keep_conn: bool,
    /// The raw FCGI_PARAMS stream; `None` when it was over the size cap.
    params: Option<Vec<u8>>,
}

/// What one processed record meant for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Nothing,
    /// The active request's PARAMS stream ended.
    RequestReady,
    /// `cur` is an FCGI_STDIN record of the active request with content to read.
    StdinData,
    StdinEnd,
    Aborted,
}

/// Where an idle kept-alive connection can wait without a thread (the pool's lot).
pub(crate) trait Parking: Send + Sync {
    /// Another connection (a new one, or a parked one with a request) waits for a
    /// thread, and none is free.
    fn pressure(&self) -> bool;
    /// Connections are parked already and every thread is taken: a connection that
    /// goes idle parks at once (atomic loads only: asked after every response).
    fn crowded(&self) -> bool;
    /// Every thread the pool may have is started (an atomic load): only then can a
    /// connection wait for one.
    fn full(&self) -> bool;
    /// Takes a kept-alive connection with nothing unread; gives it back when it
    /// cannot.
    fn park(&self, fd: std::os::fd::OwnedFd) -> Result<(), std::os::fd::OwnedFd>;
    /// A connection is idle after a response, kept alive (asked after every such
    /// response once every thread is started).
    fn kept_alive(&self);
}

/// How often an idle kept-alive connection that could be parked is made to look
/// whether another connection waits for its thread (the pool's watch, or the slices of
/// a polling wait).
pub(crate) const PARK_CHECK: Duration = Duration::from_millis(250);
/// How often a busy connection looks, after a response, whether a new connection
/// waits for a thread, in milliseconds.
const PRESSURE_LOOK_MS: u64 = 100;

/// Responses between two reads of the clock for that look.
const PRESSURE_LOOK_EVERY: u32 = 8;

/// True at most every `PRESSURE_LOOK_MS` since `looked.0`, and only every
/// `PRESSURE_LOOK_EVERY`th response (counted in `looked.1`): the clock (the coarse
/// one, without a system call) is read only then.
fn pressure_due(looked: &mut (u64, u32)) -> bool {
    looked.1 += 1;
    if looked.1 < PRESSURE_LOOK_EVERY {
        return false;
    }
    looked.1 = 0;
    let now = sys::coarse_ms();
    if now.saturating_sub(looked.0) < PRESSURE_LOOK_MS {
        return false;
    }
    looked.0 = now;
    true
}

const RBUF: usize = 16 * 1024;
/// Coalesced output is sent once this much is buffered.
const FLUSH_AT: usize = 32 * 1024;
/// An unread body one look at the socket may read and drop while it keeps coming
/// (16 MiB: about 10 ms of copying, so a write of the app's is never held long).
const DISCARD_PER_LOOK: usize = 16 << 20;
/// App writes at least this large skip the coalescing buffer (no copy).
const DIRECT: usize = 16 * 1024;

/// A read and a write buffer, kept per thread between connections.
type Buffers = (Box<[u8]>, Vec<u8>);

thread_local! {
    static SPARE: std::cell::RefCell<Option<Buffers>> = const { std::cell::RefCell::new(None) };
}

pub(crate) struct Conn<T: Transport> {
    t: T,
    cfg: Arc<Config>,
    rbuf: Box<[u8]>,
    rpos: usize,
    rend: usize,
    cur: Option<Cur>,
    pad_left: usize,
    wbuf: Vec<u8>,
    /// Offset in `wbuf` of the header of the STDOUT record being filled.
    open: Option<usize>,
    stderr_used: bool,
    active: Option<Active>,
    seq: u64,
    /// Set on the first I/O or protocol error; the connection is then unusable.
    failure: Option<String>,
    peer_closed: bool,
    /// The web server shut its sending side after the whole request (see
    /// `check_incoming`).
    peer_half_closed: bool,
    /// A look at the socket read its end (see `check_incoming`).
    read_ended: bool,
    /// Shutting down: serve a request only if it has already arrived.
    draining: bool,
    /// The next idle read follows a response: poll before reading.
    poll_first: bool,
    /// A request has been answered on this connection.
    served_any: bool,
    /// A request head is arriving (or due, on a fresh connection): it must be
    /// complete within the read timeout from the first time we wait for it.
    head_pending: bool,
    /// That deadline, set at the first wait (a head that arrives in one read, the
    /// usual case, costs no clock read).
    head_deadline: Option<std::time::Instant>,
    /// Management records only (a FastCGI connection on an SCGI or HTTP port, where
    /// the restart probe is the only FastCGI a peer may send): a request is refused,
    /// since whoever can reach that port could set every CGI variable with it.
    /// `Some(why)`: the refusal, logged with any request.
    management_only: Option<String>,
    /// Where this connection may wait while idle, without its thread.
    parking: Option<Arc<dyn Parking>>,
    /// When this connection last looked, after a response, whether another waits for
    /// its thread ([`sys::coarse_ms`]), and the responses since it last read the clock.
    pressure_looked: (u64, u32),
}

impl<T: Transport> Drop for Conn<T> {
    fn drop(&mut self) {
        let rbuf = std::mem::take(&mut self.rbuf);
        let mut wbuf = std::mem::take(&mut self.wbuf);
        if rbuf.len() == RBUF && wbuf.capacity() <= 4 * FLUSH_AT {
            wbuf.clear();
            SPARE.with(|s| *s.borrow_mut() = Some((rbuf, wbuf)));
        }
    }
}

impl<T: Transport> Conn<T> {
    pub(crate) fn new(t: T, cfg: Arc<Config>) -> Conn<T> {
        let (rbuf, wbuf) = SPARE.with(|s| s.borrow_mut().take()).unwrap_or_else(|| {
            (
                vec![0u8; RBUF].into_boxed_slice(),
                Vec::with_capacity(FLUSH_AT + 1024),
            )
        });
        Conn {
            t,
            cfg,
            rbuf,
            rpos: 0,
            rend: 0,
            cur: None,
            pad_left: 0,
            wbuf,
            open: None,
            stderr_used: false,
            active: None,
            seq: 0,
            failure: None,
            peer_closed: false,
            peer_half_closed: false,
            read_ended: false,
            draining: false,
            poll_first: false,
            served_any: false,
            head_pending: true,
            head_deadline: None,
            management_only: None,
            parking: None,
            pressure_looked: (0, 0),
        }
    }

    /// True when this connection, idle between requests with nothing unread, should
    /// give its thread to another connection that waits.
    fn may_park(&self) -> bool {
        self.parking
            .as_ref()
            .is_some_and(|p| self.parkable() && p.pressure())
    }

    /// Idle between requests with nothing unread, nothing failed, not stopping.
    fn parkable(&self) -> bool {
        self.served_any
            && !self.draining
            && self.active.is_none()
            && self.cur.is_none()
            && self.rpos == self.rend
            && self.failure.is_none()
            && !self.peer_closed
    }

    /// Moves what is buffered and unread to the front of the read buffer.
    fn compact_rbuf(&mut self) {
        if self.rpos == self.rend {
            self.rpos = 0;
            self.rend = 0;
        } else if self.rpos > 0 {
            self.rbuf.copy_within(self.rpos..self.rend, 0);
            self.rend -= self.rpos;
            self.rpos = 0;
        }
    }

    fn avail(&self) -> usize {
        self.rend - self.rpos
    }

    fn fail(&mut self, e: &ConnError) {
        if self.failure.is_none() {
            self.failure = Some(e.to_string());
        }
    }

    /// Waits until the socket is readable (or the idle/read timeout, or a shutdown).
    /// A fresh connection always gets its first request served, even while shutting
    /// down: the web server connected expecting an answer (and a restarted server's
    /// probe arrives this way). Only a kept-alive connection idles.
    fn wait_readable(&mut self, idle: bool) -> Result<(), ConnError> {
        let idle = idle && self.served_any;
        if idle && !self.draining && self.parking.is_some() {
            return self.wait_idle_or_park();
        }
        // Once the process is stopping, a request head still on its way gets a short
        // grace instead of the whole read timeout: a web server sends a head at once,
        // a stalled one must not hold the exit (mod_fcgid kills 3 s after SIGTERM).
        if self.head_pending && !idle && sys::shutdown_requested() {
            self.cap_head_deadline();
        }
        let timeout = match (idle, self.draining) {
            (true, true) => Some(Duration::ZERO),
            (true, false) => self.cfg.idle_timeout,
            (false, _) => {
                // A request head must arrive whole within the head timeout (the read
                // timeout, 10 s at most), so a peer trickling a byte at a time, or
                // sending nothing, cannot hold a worker.
                let left = if self.head_pending && self.head_deadline.is_none() {
                    // The head's clock starts now: all of its time is left.
                    let t = crate::config::head_timeout(self.cfg.read_timeout);
                    self.head_deadline = Some(std::time::Instant::now() + t);
                    Some(t)
                } else {
                    self.head_deadline
                        .map(|d| d.saturating_duration_since(std::time::Instant::now()))
                };
                match (self.cfg.read_timeout, left) {
                    (Some(t), Some(l)) => Some(t.min(l)),
                    (t, None) => t,
                    (None, l) => l,
                }
            }
        };
        let head_watch = self.head_pending && !idle && !sys::shutdown_requested();
        match self
            .t
            .wait(false, timeout, (idle && !self.draining) || head_watch)?
        {
            Wake::Ready => Ok(()),
            // Stopping while a head arrives: go on waiting, within the grace.
            Wake::Stop if !idle => {
                self.cap_head_deadline();
                Ok(())
            }
            Wake::Stop => Err(ConnError::Shutdown),
            Wake::TimedOut if idle => Err(ConnError::Closed),
            Wake::TimedOut if self.head_deadline.is_some() => Err(ConnError::TimedOut(
                "the request head (FCGI_BEGIN_REQUEST and FCGI_PARAMS) to arrive",
            )),
            Wake::TimedOut => Err(ConnError::TimedOut(
                "the web server to send more of the request",
            )),
        }
    }

    /// [`wait_readable`](Self::wait_readable) for an idle kept-alive connection that may
    /// be parked: the wait is cut into `PARK_CHECK` slices, and between them the
    /// connection is parked if another waits for its thread.
    fn wait_idle_or_park(&mut self) -> Result<(), ConnError> {
        let deadline = self.cfg.idle_timeout.map(|t| std::time::Instant::now() + t);
        loop {
            let slice = match deadline {
                Some(d) => d
                    .saturating_duration_since(std::time::Instant::now())
                    .min(PARK_CHECK),
                None => PARK_CHECK,
            };
            match self.t.wait(false, Some(slice), true)? {
                Wake::Ready => return Ok(()),
                Wake::Stop => return Err(ConnError::Shutdown),
                Wake::TimedOut => {
                    if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                        return Err(ConnError::Closed);
                    }
                    if self.may_park() {
                        return Err(ConnError::Park);
                    }
                }
            }
        }
    }

    /// Shortens the deadline of a request head still arriving to the grace it gets
    /// once the process is stopping.
    fn cap_head_deadline(&mut self) {
        self.head_deadline = Some(sys::stop_grace(self.head_deadline));
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    fn fill(&mut self, idle: bool) -> Result<usize, ConnError> {
        if self.rpos == self.rend {
            self.rpos = 0;
            self.rend = 0;
        } else if self.rbuf.len() - self.rend < 4096 {
            self.rbuf.copy_within(self.rpos..self.rend, 0);
            self.rend -= self.rpos;
            self.rpos = 0;
        }
        if idle && std::mem::take(&mut self.poll_first) {
            // Right after a response, with connections parked and every thread taken:
            // the others are served sooner if this one waits in the lot at once. With
            // every thread taken and none parked, a look (10 a second at most per
            // connection) whether a new connection waits: a connection whose requests
            // come back to back never idles, and would keep its thread for good.
            // (Until every thread is started, one atomic load: nothing can wait.)
            if let Some(p) = self.parking.as_ref().filter(|p| p.full()) {
                p.kept_alive();
                let crowded = p.crowded();
                if (crowded || pressure_due(&mut self.pressure_looked))
                    && self.parkable()
                    && (crowded || p.pressure())
                {
                    return Err(ConnError::Park);
                }
            }
            if !self.draining && self.served_any {
                if let Some(fd) = self.t.raw_fd() {
                    // Found or not, the wait below decides: it returns at once if so.
                    sys::spin(&[(fd, libc::POLLIN)], 1);
                }
            }
            // Right after a response the next request is rarely there yet. Without an
            // idle timeout, block in one recv (one system call, as libfcgi does);
            // otherwise poll first instead of a read that would only say EAGAIN.
            if self.cfg.idle_timeout.is_none() && !self.draining && self.served_any {
                loop {
                    match self.t.idle_read(&mut self.rbuf[self.rend..]) {
                        Ok(Some(n)) => {
                            self.rend += n;
                            if n == 0 {
                                self.peer_closed = true;
                            }
                            return Ok(n);
                        }
                        Ok(None) => return Err(ConnError::Shutdown),
                        // Woken by the pool's watch (a connection waits and every
                        // thread is taken): give the thread away if this one still
                        // can, else read on.
                        Err(e) if e.kind() == io::ErrorKind::TimedOut && self.parking.is_some() => {
                            if self.may_park() {
                                return Err(ConnError::Park);
                            }
                        }
                        // No blocking read here (or a receive timeout the socket took
                        // from its listener): wait the usual way.
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) =>
                        {
                            self.wait_readable(idle)?;
                            break;
                        }
                        Err(e) => return Err(ConnError::Io(e)),
                    }
                }
            } else {
                self.wait_readable(idle)?;
            }
        }
        loop {
            match self.t.read(&mut self.rbuf[self.rend..]) {
                Ok(n) => {
                    self.rend += n;
                    if n == 0 {
                        self.peer_closed = true;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_readable(idle)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
    }

    /// After the app is done with its body: discards this request's FCGI_STDIN that is
    /// already buffered, stopping at anything else. True when the stream's end was seen
    /// (then nothing of this request is left to arrive).
    fn consume_buffered_stdin(&mut self) -> bool {
        loop {
            let Some(a) = self.active.as_ref() else {
                return true;
            };
            if a.stdin_done {
                return true;
            }
            if a.body_attached {
                return false;
            }
            let id = a.id;
            if let Some(cur) = self.cur {
                if cur.record_type != RecordType::Stdin || cur.id != id {
                    return false;
                }
                let n = cur.left.min(self.avail());
                self.rpos += n;
                self.consume(n);
                if self.cur.is_some() {
                    return false;
                }
            }
            let need = self.pad_left + HEADER_LEN;
            if self.avail() < need {
                return false;
            }
            let at = self.rpos + self.pad_left;
            let mut hb = [0u8; HEADER_LEN];
            hb.copy_from_slice(&self.rbuf[at..at + HEADER_LEN]);
            let h = Header::parse(&hb);
            if h.version != record::VERSION_1
                || h.record_type != RecordType::Stdin
                || h.request_id != id
            {
                return false;
            }
            // Whole header (and padding before it) is buffered: this cannot block.
            match self.step(false) {
                Ok(Step::StdinEnd) => return true,
                Ok(_) => {}
                Err(e) => {
                    self.fail(&e);
                    return false;
                }
            }
        }
    }

    /// Discards the rest of the current record and its padding, then reads the next
    /// header. `Ok(None)`: the peer closed cleanly at a record boundary while `idle`.
    fn next_header(&mut self, idle: bool) -> Result<Option<Header>, ConnError> {
        if self.cur.is_some() {
            self.skip_content()?;
        }
        while self.pad_left > 0 {
            if self.avail() == 0 && self.fill(false)? == 0 {
                return Err(ConnError::Truncated("inside a record's padding".into()));
            }
            let n = self.pad_left.min(self.avail());
            self.rpos += n;
            self.pad_left -= n;
        }
        while self.avail() < HEADER_LEN {
            let at_boundary = self.avail() == 0;
            if self.fill(idle && at_boundary)? == 0 {
                if at_boundary {
                    return Ok(None);
                }
                return Err(ConnError::Truncated(format!(
                    "after {} bytes of a record header",
                    self.avail()
                )));
            }
        }
        let mut hb = [0u8; HEADER_LEN];
        hb.copy_from_slice(&self.rbuf[self.rpos..self.rpos + HEADER_LEN]);
        self.rpos += HEADER_LEN;
        let h = Header::parse(&hb);
        if h.version != record::VERSION_1 {
            // On a fresh connection, say what the bytes look like: the web server set
            // to another protocol is the usual cause.
            let hint = if self.served_any || self.active.is_some() {
                ""
            } else {
                other_protocol_hint(&hb)
            };
            return Err(ConnError::Protocol(format!(
                "record version {} (only FastCGI version 1 exists){hint}",
                h.version
            )));
        }
        // A record with no content has nothing left to consume.
        self.cur = (h.content_length > 0).then_some(Cur {
            record_type: h.record_type,
            id: h.request_id,
            left: h.content_length as usize,
        });
        self.pad_left = h.padding_length as usize;
        Ok(Some(h))
    }

    /// Copies content of the current record into `buf`.
    fn read_content(&mut self, buf: &mut [u8]) -> Result<usize, ConnError> {
        let Some(cur) = self.cur else { return Ok(0) };
        let want = buf.len().min(cur.left);
        if want == 0 {
            return Ok(0);
        }
        let n = if self.avail() > 0 {
            let n = want.min(self.avail());
            buf[..n].copy_from_slice(&self.rbuf[self.rpos..self.rpos + n]);
            self.rpos += n;
            n
        } else if want >= RBUF / 2 {
            // Large read with an empty buffer: straight into the caller's memory.
            loop {
                match self.t.read(&mut buf[..want]) {
                    Ok(0) => {
                        self.peer_closed = true;
                        return Err(ConnError::Truncated("inside a record".into()));
                    }
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        match self.t.wait(false, self.cfg.read_timeout, false)? {
                            Wake::Ready | Wake::Stop => {}
                            Wake::TimedOut => {
                                return Err(ConnError::TimedOut("the request body"));
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(ConnError::Io(e)),
                }
            }
        } else {
            if self.fill(false)? == 0 {
                return Err(ConnError::Truncated("inside a record".into()));
            }
            let n = want.min(self.avail());
            buf[..n].copy_from_slice(&self.rbuf[self.rpos..self.rpos + n]);
            self.rpos += n;
            n
        };
        self.consume(n);
        Ok(n)
    }

    fn consume(&mut self, n: usize) {
        if let Some(cur) = &mut self.cur {
            cur.left -= n;
            if cur.left == 0 {
                self.cur = None;
            }
        }
    }

    /// Appends the rest of the current record's content to `out`.
    fn read_content_into(&mut self, out: &mut Vec<u8>) -> Result<(), ConnError> {
        while let Some(cur) = self.cur {
            if self.avail() == 0 && self.fill(false)? == 0 {
                return Err(ConnError::Truncated("inside a record".into()));
            }
            let n = cur.left.min(self.avail());
            out.extend_from_slice(&self.rbuf[self.rpos..self.rpos + n]);
            self.rpos += n;
            self.consume(n);
        }
        Ok(())
    }

    /// Fills `out` from the current record's content (the caller checked that the record
    /// holds at least that much) and skips the rest of it.
    fn read_content_prefix(&mut self, out: &mut [u8]) -> Result<(), ConnError> {
        let mut got = 0;
        while got < out.len() {
            let Some(cur) = self.cur else { break };
            if self.avail() == 0 && self.fill(false)? == 0 {
                return Err(ConnError::Truncated("inside a record".into()));
            }
            let n = cur.left.min(self.avail()).min(out.len() - got);
            out[got..got + n].copy_from_slice(&self.rbuf[self.rpos..self.rpos + n]);
            self.rpos += n;
            got += n;
            self.consume(n);
        }
        self.skip_content()
    }

    fn skip_content(&mut self) -> Result<(), ConnError> {
        while let Some(cur) = self.cur {
            if self.avail() == 0 && self.fill(false)? == 0 {
                return Err(ConnError::Truncated("inside a record".into()));
            }
            let n = cur.left.min(self.avail());
            self.rpos += n;
            self.consume(n);
        }
        Ok(())
    }

    /// Reads and handles one record.
    fn step(&mut self, idle: bool) -> Result<Step, ConnError> {
        let Some(h) = self.next_header(idle)? else {
            if let Some(a) = &self.active {
                return Err(ConnError::Truncated(format!(
                    "before request {} was complete",
                    a.id
                )));
            }
            return Err(ConnError::Closed);
        };
        let id = h.request_id;
        let len = h.content_length as usize;
        log::trace!("record {:?} id {id} content {len}", h.record_type);
        if id == NULL_REQUEST_ID {
            self.management(h)?;
            return Ok(Step::Nothing);
        }
        let is_active = self.active.as_ref().is_some_and(|a| a.id == id);
        match h.record_type {
            RecordType::BeginRequest => {
                if len < 8 {
                    return Err(ConnError::Protocol(format!(
                        "BEGIN_REQUEST body of {len} bytes (it is 8)"
                    )));
                }
                // The spec fixes the body at 8 bytes; anything after them is skipped.
                let mut body = [0u8; 8];
                self.read_content_prefix(&mut body)?;
                let begin = BeginRequest::parse(&body)
                    .ok_or_else(|| ConnError::Protocol("short BEGIN_REQUEST body".into()))?;
                if is_active {
                    return Err(ConnError::Protocol(format!(
                        "BEGIN_REQUEST for request {id}, which is already in flight"
                    )));
                }
                if let Some(why) = &self.management_only {
                    return Err(ConnError::Refused(format!(
                        "{why}; only the restart probe (FCGI_GET_VALUES) is answered there"
                    )));
                }
                if self.active.is_some() {
                    // Spec 5.1/5.5: a second request on a non-multiplexed connection.
                    self.end_request_record(id, 0, ProtocolStatus::CantMpxConn);
                    self.flush_out()?;
                    return Ok(Step::Nothing);
                }
                match Role::from_u16(begin.role) {
                    Some(role @ (Role::Responder | Role::Authorizer)) => {
                        self.head_pending = true;
                        self.active = Some(Active {
                            id,
                            keep_conn: begin.keep_conn(),
                            role,
                            phase: Phase::Params,
                            params: Vec::new(),
                            params_over: false,
                            stdin_done: false,
                            stdin_due: 0,
                            aborted: false,
                            body_attached: false,
                        });
                    }
                    _ => {
                        log::warn!(
                            "FastCGI role {} is not supported (FILTER and unknown roles are answered UNKNOWN_ROLE)",
                            begin.role
                        );
                        self.end_request_record(id, 0, ProtocolStatus::UnknownRole);
                        self.flush_out()?;
                        if !begin.keep_conn() {
                            return Err(ConnError::Done);
                        }
                    }
                }
                Ok(Step::Nothing)
            }
            RecordType::AbortRequest if is_active => {
                self.skip_content()?;
                let Some(a) = self.active.as_mut() else {
                    return Ok(Step::Nothing);
                };
                if a.phase == Phase::Params {
                    // The app never saw it: answer at once. The head it was waiting
                    // for is no longer due (its deadline must not carry over to the
                    // next request), and the connection may idle as after any answer.
                    let keep = a.keep_conn;
                    self.active = None;
                    self.head_pending = false;
                    self.head_deadline = None;
                    self.served_any = true;
                    self.end_request_record(id, 0, ProtocolStatus::RequestComplete);
                    self.flush_out()?;
                    if !keep {
                        return Err(ConnError::Done);
                    }
                    return Ok(Step::Nothing);
                }
                a.aborted = true;
                Ok(Step::Aborted)
            }
            RecordType::Params if is_active => {
                let max = self.cfg.limits.max_params_bytes;
                let Some(a) = self.active.as_mut() else {
                    return Ok(Step::Nothing);
                };
                if a.phase != Phase::Params {
                    // Skipped here, so that nothing stays in the way of what follows
                    // (an abort seen while the response streams out).
                    log::debug!("ignoring FCGI_PARAMS after the end of the params stream");
                    self.skip_content()?;
                    return Ok(Step::Nothing);
                }
                if len == 0 {
                    a.phase = Phase::Running;
                    self.head_pending = false;
                    self.head_deadline = None;
                    return Ok(Step::RequestReady);
                }
                if a.params_over || a.params.len() + len > max {
                    a.params_over = true;
                    a.params = Vec::new();
                    self.skip_content()?;
                } else {
                    let mut params = std::mem::take(&mut a.params);
                    let r = self.read_content_into(&mut params);
                    if let Some(a) = self.active.as_mut() {
                        a.params = params;
                    }
                    r?;
                }
                Ok(Step::Nothing)
            }
            RecordType::Stdin if is_active => {
                let Some(a) = self.active.as_mut() else {
                    return Ok(Step::Nothing);
                };
                if a.phase == Phase::Params {
                    return Err(ConnError::Protocol(
                        "FCGI_STDIN before the end of FCGI_PARAMS".into(),
                    ));
                }
                if a.stdin_done {
                    log::debug!("ignoring FCGI_STDIN after the end of the stream");
                    self.skip_content()?;
                    return Ok(Step::Nothing);
                }
                if len == 0 {
                    if a.stdin_due > 0 {
                        log::debug!(
                            "request {id}: an empty FCGI_STDIN {} bytes before the declared length; not taken as the end (mod_fcgid over HTTP/2)",
                            a.stdin_due
                        );
                        self.skip_content()?;
                        return Ok(Step::Nothing);
                    }
                    a.stdin_done = true;
                    return Ok(Step::StdinEnd);
                }
                a.stdin_due = a.stdin_due.saturating_sub(len as u64);
                Ok(Step::StdinData)
            }
            other => {
                // The spec says to ignore records for request ids not in flight; FCGI_DATA
                // (FILTER only) and stray types are skipped too.
                if !is_active || other != RecordType::Data {
                    log::debug!("ignoring {other:?} record for request {id}");
                }
                self.skip_content()?;
                Ok(Step::Nothing)
            }
        }
    }

    /// A record with request id 0: GET_VALUES is answered, anything else gets
    /// UNKNOWN_TYPE (spec 4.1, 4.2).
    fn management(&mut self, h: Header) -> Result<(), ConnError> {
        if h.record_type == RecordType::GetValues {
            let mut q = Vec::with_capacity(h.content_length as usize);
            self.read_content_into(&mut q)?;
            let mut reply = Vec::new();
            let conns = self
                .cfg
                .advertised_conns
                .unwrap_or(self.cfg.max_conns)
                .to_string();
            // Answers beyond one record's content are dropped (a query repeating the
            // same names thousands of times).
            let r = record::parse_pairs(&q, |s| {
                let name = &q[s.name.0..s.name.1];
                let value: &[u8] = match name {
                    b"FCGI_MAX_CONNS" | b"FCGI_MAX_REQS" => conns.as_bytes(),
                    b"FCGI_MPXS_CONNS" => b"0",
                    // Our own: lets a restarted server tell a draining one from a live one.
                    crate::listen::DRAINING_VAR if sys::draining() => b"1",
                    crate::listen::DRAINING_VAR => b"0",
                    _ => return true,
                };
                if reply.len() + name.len() + value.len() + 10 > record::MAX_CONTENT_LEN {
                    return false;
                }
                record::push_pair(&mut reply, name, value);
                true
            });
            if let Err(e) = r {
                return Err(ConnError::Protocol(format!("FCGI_GET_VALUES: {e}")));
            }
            self.close_open();
            record::push_record(&mut self.wbuf, RecordType::GetValuesResult, 0, &reply);
        } else {
            self.skip_content()?;
            self.close_open();
            let body = record::unknown_type_body(h.record_type.as_u8());
            record::push_record(&mut self.wbuf, RecordType::UnknownType, 0, &body);
        }
        self.flush_out()
    }

    // ---- output ----

    fn end_request_record(&mut self, id: u16, app_status: u32, status: ProtocolStatus) {
        self.close_open();
        let body = record::end_request_body(app_status, status);
        record::push_record(&mut self.wbuf, RecordType::EndRequest, id, &body);
    }

    /// Finishes the STDOUT record being filled: patches its header, adds padding.
    fn close_open(&mut self) {
        if let Some(at) = self.open.take() {
            let id = self.active.as_ref().map_or(0, |a| a.id);
            let len = self.wbuf.len() - at - HEADER_LEN;
            let h = Header::new(RecordType::Stdout, id, len);
            self.wbuf[at..at + HEADER_LEN].copy_from_slice(&h.to_bytes());
            let pad = h.padding_length as usize;
            self.wbuf.extend_from_slice(&[0u8; 8][..pad]);
        }
    }

    /// Sends everything buffered.
    fn flush_out(&mut self) -> Result<(), ConnError> {
        self.close_open();
        // Out of `self` while it goes out, so a blocked write can take input meanwhile.
        let wbuf = std::mem::take(&mut self.wbuf);
        let mut pos = 0;
        let mut drop_body = true;
        let mut stalled = None;
        let r = loop {
            if pos == wbuf.len() {
                break Ok(());
            }
            match self.t.write(&wbuf[pos..]) {
                Ok(0) => break Err(ConnError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    pos += n;
                    stalled = None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = self.wait_to_write(&mut drop_body, &mut stalled) {
                        break Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(ConnError::Io(e)),
            }
        };
        self.wbuf = wbuf;
        self.wbuf.clear();
        if let Err(e) = &r {
            self.fail(e);
        }
        r
    }

    /// Waits until the socket takes more of the response. Meanwhile a body the app
    /// can no longer read is read and dropped as it arrives: mod_fcgid sends the whole
    /// request before it reads any of the response, so a response that does not fit
    /// the socket's buffer would wait for a web server that waits for us (until
    /// FcgidIOTimeout, then a 500). `drop_body` turns false, for the rest of this
    /// write, once there is nothing more to drop that way.
    ///
    /// The write timeout counts from `stalled`, when the socket last took nothing
    /// (the caller sets it back to `None` when a write goes through): body bytes
    /// coming in wake the wait without any of the response going out, and must not
    /// start the timeout over, or a web server that sends its request a byte at a
    /// time while it reads none of the response would hold the worker for as long as
    /// the body lasts.
    fn wait_to_write(
        &mut self,
        drop_body: &mut bool,
        stalled: &mut Option<Instant>,
    ) -> Result<(), ConnError> {
        const WHAT: &str = "the web server to read the response";
        *drop_body = *drop_body
            && !self.peer_closed
            && self
                .active
                .as_ref()
                .is_some_and(|a| !a.body_attached && !a.stdin_done && !a.aborted);
        let timeout = match self.cfg.write_timeout {
            Some(t) => {
                let left = t.saturating_sub(stalled.get_or_insert_with(Instant::now).elapsed());
                if left.is_zero() {
                    return Err(ConnError::TimedOut(WHAT));
                }
                Some(left)
            }
            None => None,
        };
        let woke = if *drop_body {
            self.t.wait_out_or_in(timeout)
        } else {
            self.t.wait(true, timeout, false)
        };
        match woke {
            Ok(Wake::TimedOut) => return Err(ConnError::TimedOut(WHAT)),
            Ok(_) => {}
            Err(e) => return Err(ConnError::Io(e)),
        }
        if *drop_body {
            *drop_body = self.drop_unread_body();
        }
        Ok(())
    }

    /// Without blocking, reads what the web server sent and drops the active request's
    /// FCGI_STDIN from it (the app no longer holds the body). False when nothing more
    /// can be dropped this way: the body ended, the web server closed, or something
    /// other than FCGI_STDIN fills the read buffer (it waits for the response to be
    /// out, when the usual reading resumes).
    fn drop_unread_body(&mut self) -> bool {
        self.compact_rbuf();
        if self.rend < self.rbuf.len() {
            match self.t.read(&mut self.rbuf[self.rend..]) {
                Ok(0) => {
                    self.peer_closed = true;
                    return false;
                }
                Ok(n) => self.rend += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return false,
            }
        }
        let before = self.avail();
        if self.consume_buffered_stdin() {
            return false;
        }
        self.avail() < before || self.rend < self.rbuf.len()
    }

    /// Sends `data` as FCGI_STDOUT (or STDERR) records straight from the caller's
    /// memory, after whatever is buffered, with vectored writes.
    fn write_direct(&mut self, rtype: RecordType, id: u16, data: &[u8]) -> Result<(), ConnError> {
        self.close_open();
        const BATCH: usize = 16;
        let mut chunks = data.chunks(MAX_CHUNK).peekable();
        let mut first = true;
        // Out of `self` while it goes out, as in `flush_out`.
        let wbuf = std::mem::take(&mut self.wbuf);
        let mut drop_body = true;
        let mut stalled = None;
        while chunks.peek().is_some() {
            let batch: Vec<&[u8]> = chunks.by_ref().take(BATCH).collect();
            let heads: Vec<[u8; 8]> = batch
                .iter()
                .map(|c| Header::new(rtype, id, c.len()).to_bytes())
                .collect();
            let zeros = [0u8; 8];
            let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(1 + batch.len() * 3);
            if first && !wbuf.is_empty() {
                iov.push(IoSlice::new(&wbuf));
            }
            first = false;
            for (h, c) in heads.iter().zip(&batch) {
                iov.push(IoSlice::new(h));
                iov.push(IoSlice::new(c));
                let pad = record::padding_for(c.len());
                if pad > 0 {
                    iov.push(IoSlice::new(&zeros[..pad]));
                }
            }
            let mut slices = &mut iov[..];
            let r = loop {
                if slices.is_empty() {
                    break Ok(());
                }
                match self.t.write_vectored(slices) {
                    Ok(0) => break Err(ConnError::Io(io::ErrorKind::WriteZero.into())),
                    Ok(n) => {
                        IoSlice::advance_slices(&mut slices, n);
                        stalled = None;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if let Err(e) = self.wait_to_write(&mut drop_body, &mut stalled) {
                            break Err(e);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(ConnError::Io(e)),
                }
            };
            if let Err(e) = r {
                self.wbuf = wbuf;
                self.wbuf.clear();
                self.fail(&e);
                return Err(e);
            }
        }
        self.wbuf = wbuf;
        self.wbuf.clear();
        Ok(())
    }

    fn gone(&self) -> bool {
        self.failure.is_some() || self.active.as_ref().is_none_or(|a| a.aborted)
    }

    fn gone_error(&self) -> io::Error {
        if self.active.as_ref().is_some_and(|a| a.aborted) {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the web server aborted the request",
            )
        } else {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                self.failure
                    .clone()
                    .unwrap_or_else(|| "the request is over".into()),
            )
        }
    }

    fn stdout_write(&mut self, mut data: &[u8]) -> io::Result<()> {
        if self.gone() {
            return Err(self.gone_error());
        }
        let id = self.active.as_ref().map_or(0, |a| a.id);
        if data.len() >= DIRECT {
            self.write_direct(RecordType::Stdout, id, data)
                .map_err(|e| e.to_io())?;
            let _ = self.check_incoming();
            return Ok(());
        }
        while !data.is_empty() {
            let at = match self.open {
                Some(at) => at,
                None => {
                    let at = self.wbuf.len();
                    self.wbuf.extend_from_slice(&[0u8; HEADER_LEN]);
                    self.open = Some(at);
                    at
                }
            };
            let room = MAX_CHUNK - (self.wbuf.len() - at - HEADER_LEN);
            let n = room.min(data.len());
            self.wbuf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if n == room {
                self.close_open();
            }
        }
        if self.wbuf.len() >= FLUSH_AT {
            self.flush_out().map_err(|e| e.to_io())?;
            let _ = self.check_incoming();
        }
        Ok(())
    }

    fn stdout_flush(&mut self) -> io::Result<()> {
        if self.gone() {
            return Err(self.gone_error());
        }
        self.push_stderr_capture();
        self.flush_out().map_err(|e| e.to_io())?;
        let _ = self.check_incoming();
        if self.gone() {
            return Err(self.gone_error());
        }
        Ok(())
    }

    /// Sends lines the app logged during this request as FCGI_STDERR records, which
    /// the web server writes to its error log with the request's context.
    fn push_stderr_capture(&mut self) {
        if self.failure.is_some() {
            // Nobody to send them to: they go to our stderr when the capture ends.
            return;
        }
        let Some(text) = logger::take_captured() else {
            return;
        };
        let Some(id) = self.active.as_ref().map(|a| a.id) else {
            return;
        };
        self.close_open();
        for chunk in text.chunks(MAX_CHUNK) {
            record::push_record(&mut self.wbuf, RecordType::Stderr, id, chunk);
        }
        self.stderr_used = true;
    }

    /// Without blocking, reads what the web server sent meanwhile and handles complete
    /// records up to the next FCGI_STDIN the app may still read: notices an ABORT_REQUEST
    /// (or a closed connection) while a response streams out or an async app waits.
    fn check_incoming(&mut self) -> Check {
        let check = self.look_at_incoming();
        if !std::mem::take(&mut self.read_ended) {
            return check;
        }
        // The web server's side has ended. When the whole request is here and it only
        // shut its sending side, it still reads the answer, which goes out whole (as
        // libfcgi, which never looks, sends it); otherwise it is gone.
        if check != Check::Gone
            && self.active.as_ref().is_some_and(|a| a.stdin_done)
            && self.t.raw_fd().is_some_and(sys::only_half_closed)
        {
            log::debug!("the web server shut its sending side after the request; answering on");
            self.peer_half_closed = true;
            return Check::HalfClosed;
        }
        self.peer_closed = true;
        if check != Check::Gone {
            self.fail(&ConnError::Closed);
        }
        Check::Gone
    }

    fn look_at_incoming(&mut self) -> Check {
        if self.gone() || self.peer_closed {
            return Check::Gone;
        }
        if self.peer_half_closed {
            return Check::HalfClosed;
        }
        let body_attached = self.active.as_ref().is_some_and(|a| a.body_attached);
        if self.cur.is_some() && body_attached {
            return Check::Stuck;
        }
        let mut state = Check::Stuck;
        // How much of a body the app left unread one look may drop while more keeps
        // coming (see the discarding below); the rest waits for the next look.
        let mut discard_budget = DISCARD_PER_LOOK;
        'look: loop {
            if self.rend < self.rbuf.len() || self.rpos > 0 {
                self.compact_rbuf();
                state = match self.t.read(&mut self.rbuf[self.rend..]) {
                    // The end of what the web server sends: what was read before it
                    // (the end of the body, an abort) is handled first, below, then
                    // `check_incoming` tells a close from a half-close.
                    Ok(0) => {
                        self.read_ended = true;
                        Check::Drained
                    }
                    Ok(n) => {
                        self.rend += n;
                        Check::Progress
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Check::Drained,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => Check::Progress,
                    Err(e) => {
                        self.fail(&ConnError::Io(e));
                        return Check::Gone;
                    }
                };
            }
            loop {
                // Discard stdin the app can no longer read.
                if let Some(cur) = self.cur {
                    if cur.record_type == RecordType::Stdin && !body_attached {
                        let n = cur.left.min(self.avail());
                        self.rpos += n;
                        self.consume(n);
                        if self.cur.is_some() {
                            // All that was read is dropped and more of the body is due:
                            // read on while it comes, so an abort or the next request
                            // behind a large unread body is seen now, and the web server's
                            // upload is not held to one buffer per look.
                            if state == Check::Progress && discard_budget > n {
                                discard_budget -= n;
                                continue 'look;
                            }
                            return state;
                        }
                    } else {
                        return Check::Stuck;
                    }
                }
                let need = self.pad_left + HEADER_LEN;
                if self.avail() < need {
                    return state;
                }
                let at = self.rpos + self.pad_left;
                let mut hb = [0u8; HEADER_LEN];
                hb.copy_from_slice(&self.rbuf[at..at + HEADER_LEN]);
                let h = Header::parse(&hb);
                let is_active = self.active.as_ref().is_some_and(|a| a.id == h.request_id);
                // FCGI_STDIN for the active request after its end is a stray record,
                // handled whole like any other; before it, its content is the app's body.
                let body_open = is_active && self.active.as_ref().is_some_and(|a| !a.stdin_done);
                if h.record_type == RecordType::Stdin
                    && body_open
                    && body_attached
                    && h.content_length > 0
                {
                    // The app's body comes next: nothing behind it is handled until it
                    // is read. (The empty record that ends the body is taken here: the
                    // body reads its end from the request's state, and an abort or a
                    // close behind it is then seen, as for a GET whose handler never
                    // reads the body.) An abort already read in behind it is seen,
                    // though: the request is over, and the app need not read on.
                    if self.abort_buffered_behind(at, h.request_id) {
                        if let Some(a) = self.active.as_mut() {
                            a.aborted = true;
                        }
                        return Check::Gone;
                    }
                    return Check::Stuck;
                }
                let whole = need
                    + if h.record_type == RecordType::Stdin && body_open {
                        0
                    } else {
                        h.body_len()
                    };
                // A record that fits the buffer is handled once it is all there, so this
                // look never blocks. One that cannot fit (a web server's record of up to
                // 64 KiB for another request, say) would hide what follows it for good:
                // the web server is in the middle of sending it, so it is read (or skipped)
                // to its end now, within the read timeout.
                if self.avail() < whole && whole <= self.rbuf.len() {
                    return state;
                }
                if let Err(e) = self.step(false) {
                    self.fail(&e);
                    return Check::Gone;
                }
                if self.gone() {
                    return Check::Gone;
                }
            }
        }
    }

    /// Whether an FCGI_ABORT_REQUEST for request `id` is in the read buffer behind
    /// body records of the same request, from the record header at `at` on. Only what
    /// is buffered is looked at: a body larger than the buffer hides what follows it
    /// until the app reads it (a close behind it still shows as the peer's hang-up).
    fn abort_buffered_behind(&self, mut at: usize, id: u16) -> bool {
        while at + HEADER_LEN <= self.rend {
            let mut hb = [0u8; HEADER_LEN];
            hb.copy_from_slice(&self.rbuf[at..at + HEADER_LEN]);
            let h = Header::parse(&hb);
            if h.request_id != id {
                return false;
            }
            match h.record_type {
                RecordType::Stdin => at += HEADER_LEN + h.body_len(),
                RecordType::AbortRequest => return true,
                _ => return false,
            }
        }
        false
    }

    /// Ends the active request: stream terminators, END_REQUEST, flush.
    fn finish_request(&mut self, outcome: Outcome) {
        self.push_stderr_capture();
        let Some(a) = self.active.as_ref() else {
            return;
        };
        let id = a.id;
        if self.failure.is_none() && outcome == Outcome::Cut {
            // What the app wrote goes out, but neither the end of FCGI_STDOUT nor
            // END_REQUEST: the connection closes under the response, which is how a
            // web server learns that a response is incomplete (nginx then ends the
            // client's response without its last chunk; a cache does not keep it).
            // Without FCGI_KEEP_CONN, nginx takes an orderly close for the end of the
            // response, so on TCP the close is a reset, which it cannot.
            self.close_open();
            let _ = self.flush_out();
            self.t.reset_on_close();
            self.failure =
                Some("the app's response was cut short, so it ends without END_REQUEST".into());
        }
        if self.failure.is_none() {
            self.close_open();
            record::push_record(&mut self.wbuf, RecordType::Stdout, id, &[]);
            if self.stderr_used {
                record::push_record(&mut self.wbuf, RecordType::Stderr, id, &[]);
            }
            let app_status = match outcome {
                Outcome::Complete => 0,
                Outcome::AppFailed | Outcome::Cut | Outcome::CutShort | Outcome::Gone => 1,
            };
            self.end_request_record(id, app_status, ProtocolStatus::RequestComplete);
            let _ = self.flush_out();
        }
        self.stderr_used = false;
        self.active = None;
        // A body the app kept past its response (moved into a thread or task) reads
        // nothing from here on, not even before the next request is set up.
        self.seq += 1;
    }

    /// Waits for the next request whose params are complete. Handles management
    /// records and rejections on the way.
    fn wait_request(&mut self) -> Result<Ready, ConnError> {
        loop {
            let idle = self.active.is_none() && self.cur.is_none();
            if let Step::RequestReady = self.step(idle)? {
                let Some(a) = self.active.as_mut() else {
                    continue;
                };
                let params = if a.params_over {
                    None
                } else {
                    Some(std::mem::take(&mut a.params))
                };
                return Ok(Ready {
                    id: a.id,
                    role: a.role,
                    keep_conn: a.keep_conn,
                    params,
                });
            }
        }
    }

    /// After a response with FCGI_KEEP_CONN off: half-close, then wait (2 s at most,
    /// as libfcgi) for the web server to close its side, draining what it still sends
    /// (the rest of a body the app did not read), so closing never resets the
    /// connection under the response just sent. When the request was read to its end,
    /// the wait also stops on a shutdown and, in a one-worker pool, as soon as another
    /// connection is queued on the listener and the worker is the only one that could
    /// take it, so lingering never keeps a request waiting. (With several workers the
    /// others accept it, as several libfcgi processes on one socket do.) Waiting for the
    /// web server's close measured a lower p99 than closing at once (BENCHMARKS.md). Not
    /// while stopping: then a request read to its end closes at once, and one that was
    /// not lingers 200 ms at most, so the exit is not held up.
    fn linger(&mut self, stdin_done: bool) {
        if self.peer_closed || self.failure.is_some() {
            return;
        }
        // A connection already queued ends the wait below at once; looking for one
        // here first would cost a poll on every close, to save a shutdown on few.
        if stdin_done && sys::shutdown_requested() {
            return;
        }
        // A one-worker pool on a Unix socket, the request read to its end and nothing
        // more sent: there the close resets nothing (only input left unread makes a
        // Unix socket's close a reset), so there is nothing to wait for, and waiting
        // costs a sleep and a wake-up more per request. Under mod_fcgid, which gives
        // each process a socket of its own and closes its end only once it has passed
        // the response on, the wait took the app's CPU per request from 32 to 43 µs
        // (BENCHMARKS.md, "Behind Apache"). Several workers keep lingering (there
        // closing at once cost p99), and so does TCP.
        if stdin_done && sys::thread_listener() >= 0 && sys::thread_listener_is_unix() {
            if let Some(fd) = self.t.raw_fd() {
                if sys::nothing_to_read(fd) {
                    return;
                }
            }
        }
        self.t.shutdown_write();
        const LINGER: Duration = Duration::from_secs(2);
        // Stopping with the request not read to its end: the exit must not wait the
        // whole linger, but the web server gets a moment to read the response before
        // closing with its input unread resets a TCP connection.
        let mut limit = if sys::shutdown_requested() {
            sys::STOP_LINGER
        } else {
            LINGER
        };
        // Read at the first wait, which gets the whole limit; later waits get what is left.
        let mut start: Option<std::time::Instant> = None;
        let mut drained = 0usize;
        // Wait before the first read: right after the response the web server has
        // rarely closed its side yet, and a read would only say EAGAIN (98 times in
        // 100, with one client and with eight; BENCHMARKS.md). A poll and a read
        // are one system call fewer than a read, a poll and a read.
        let mut wait = true;
        let mut in_linger_set = false;
        // The listener this close gives way to (one-worker pool, request read to its
        // end), or -1.
        let listener = if stdin_done {
            sys::thread_listener()
        } else {
            -1
        };
        if let Some(fd) = self.t.raw_fd() {
            // As in `fill`: the wait below returns at once if the spin found the close
            // (or, in a one-worker pool, a queued connection).
            sys::spin(&[(fd, libc::POLLIN), (listener, libc::POLLIN)], 1);
        }
        while drained < 64 * 1024 * 1024 {
            if wait {
                let left = match start {
                    None => limit,
                    Some(s) => limit.saturating_sub(s.elapsed()),
                };
                if left.is_zero() {
                    return;
                }
                start.get_or_insert_with(std::time::Instant::now);
                let woke = match self.t.raw_fd() {
                    Some(fd) if listener >= 0 => {
                        sys::wait_readable_or_backlog(fd, left, &mut in_linger_set)
                    }
                    _ => self.t.wait(false, Some(left), limit == LINGER),
                };
                match woke {
                    Ok(Wake::Ready) => {}
                    // Read to its end, the request leaves nothing to reset: close
                    // now. Otherwise the short grace above.
                    Ok(Wake::Stop) if !stdin_done => {
                        limit = sys::STOP_LINGER.min(left);
                        start = Some(std::time::Instant::now());
                    }
                    Ok(Wake::TimedOut) => {
                        log::debug!(
                            "the web server kept the connection open 2 s after the response; closing it"
                        );
                        return;
                    }
                    _ => return,
                }
            }
            match self.t.read(&mut self.rbuf) {
                Ok(0) => return,
                Ok(n) => {
                    drained += n;
                    wait = false;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => wait = false,
                Err(_) => return,
            }
        }
    }
}

fn lock<T: Transport>(m: &Mutex<Conn<T>>) -> MutexGuard<'_, Conn<T>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<T: Transport + 'static> BodySource for Mutex<Conn<T>> {
    fn read_body(&self, seq: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut c = lock(self);
        if c.seq != seq {
            return Ok(0);
        }
        loop {
            let Some(a) = c.active.as_ref() else {
                return Ok(0);
            };
            if a.aborted {
                return Err(c.gone_error());
            }
            if let Some(f) = &c.failure {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, f.clone()));
            }
            if a.stdin_done {
                return Ok(0);
            }
            let id = a.id;
            if let Some(cur) = c.cur {
                if cur.record_type == RecordType::Stdin && cur.id == id && cur.left > 0 {
                    return c.read_content(buf).map_err(|e| {
                        c.fail(&e);
                        e.to_io()
                    });
                }
            }
            if let Err(e) = c.step(false) {
                c.fail(&e);
                return Err(e.to_io());
            }
        }
    }

    fn detach(&self, seq: u64) {
        let mut c = lock(self);
        if c.seq == seq {
            if let Some(a) = c.active.as_mut() {
                a.body_attached = false;
            }
        }
    }
}

/// The response writer handed to the app's body: FCGI_STDOUT records.
struct StdoutSink<'a, T: Transport> {
    conn: &'a Mutex<Conn<T>>,
}

impl<T: Transport> Write for StdoutSink<'_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(self.conn).stdout_write(buf)?;
        Ok(buf.len())
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        lock(self.conn).stdout_write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        lock(self.conn).stdout_flush()
    }
}

impl<T: Transport> Sink for StdoutSink<'_, T> {
    fn gone(&self) -> bool {
        lock(self.conn).gone()
    }
    fn watch_fd(&self) -> Option<std::os::fd::RawFd> {
        self.raw_fd()
    }
    fn check(&mut self) -> Check {
        lock(self.conn).check_incoming()
    }
}

impl<T: Transport> StdoutSink<'_, T> {
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        lock(self.conn).t.raw_fd()
    }
}

/// How a connection ended, for the server's bookkeeping.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnStats {
    pub requests: u64,
}

/// A FastCGI connection whose requests are not to be served (on an SCGI or HTTP port,
/// or from a local peer that FCGI_WEB_SERVER_ADDRS does not list): answers management
/// records (the probe of a server starting on the same port: are we draining?) and
/// refuses a request with a log line saying `why`, as its variables would come from
/// whoever reached the port.
pub(crate) fn serve_management_only<T: Transport + 'static>(t: T, cfg: &Arc<Config>, why: String) {
    let mut conn = Conn::new(t, cfg.clone());
    conn.management_only = Some(why);
    match conn.wait_request() {
        Err(ConnError::Closed | ConnError::Shutdown | ConnError::Done) => {}
        Err(e @ (ConnError::Protocol(_) | ConnError::Refused(_))) => {
            log::warn!("{e}; closing the connection")
        }
        Err(e) => log::info!("{e}; closing the connection"),
        Ok(_) => {}
    }
}

/// Whether a response whose body ended short of its declared `Content-Length` ends
/// with END_REQUEST rather than a close: from nginx without `fastcgi_keep_conn`
/// (`SERVER_SOFTWARE`, read only for such a response). The length tells nginx that
/// the body is short, and it closes its client's connection at once; after a close
/// over a Unix socket it took the close for the end and left its client waiting for
/// the rest until its keep-alive timeout (after a reset on TCP it dropped what it had
/// not sent yet). With `fastcgi_keep_conn` it is the other way about.
///
/// Everywhere else a close is the better ending. Under Apache, whose filters
/// (mod_deflate, on by default in Debian) drop the app's length and end the reply
/// cleanly after an END_REQUEST, a close makes mod_fcgid answer 500 while nothing
/// has reached the client; lighttpd, too, leaves its client waiting after an
/// END_REQUEST and not after a close.
fn ends_short(keep_conn: bool) -> bool {
    !keep_conn && response::failed_request_var_starts_with("SERVER_SOFTWARE", b"nginx")
}

/// Serves one FastCGI connection until the web server closes it, a request without
/// FCGI_KEEP_CONN completes, a shutdown is requested, or the input is malformed.
/// Every way it ends is logged at most once; nothing here panics on input.
pub(crate) fn serve<T, A>(
    t: T,
    app: &A,
    cfg: &Arc<Config>,
    after_request: &mut dyn FnMut(),
    parking: Option<Arc<dyn Parking>>,
    resumed: bool,
) -> ConnStats
where
    T: Transport + 'static,
    A: App + ?Sized,
{
    let mut c = Conn::new(t, cfg.clone());
    c.parking = parking;
    if resumed {
        // A kept-alive connection taken back from the lot: between requests, and
        // woken because it has something to read (the next request, or its end).
        c.served_any = true;
        c.head_pending = false;
    }
    let conn = Arc::new(Mutex::new(c));
    let mut stats = ConnStats::default();
    loop {
        let waited = lock(&conn).wait_request();
        let Ready {
            id,
            role,
            keep_conn,
            params,
        } = match waited {
            Ok(r) => r,
            Err(ConnError::Closed | ConnError::Shutdown) => break,
            Err(ConnError::Park) => {
                let c = lock(&conn);
                // Parked: the duplicate keeps the connection open after this handle's
                // close below.
                if let (Some(p), Some(fd)) = (&c.parking, c.t.duplicate()) {
                    if p.park(fd).is_ok() {
                        break;
                    }
                }
                // Not parked: every parked connection has a request waiting (or no
                // descriptor is left). This one is idle and another waits for its
                // thread: it is closed, as a web server's pool closes one it cannot
                // keep (the web server opens a new one when it needs it).
                log::info!(
                    "more kept-alive connections than can wait for a thread; closing an idle one"
                );
                break;
            }
            // Answered without the app (UNKNOWN_ROLE, or aborted before its params
            // were complete) with keep-conn off: the web server may still be sending
            // what it had for that request, so close as after a response, not under it
            // (a reset could lose the END_REQUEST just sent).
            Err(ConnError::Done) => {
                lock(&conn).linger(false);
                break;
            }
            Err(e @ (ConnError::Protocol(_) | ConnError::Refused(_))) => {
                log::warn!("{e}; closing the connection");
                break;
            }
            Err(e) => {
                log::info!("{e}; closing the connection");
                break;
            }
        };
        let seq = {
            let mut c = lock(&conn);
            c.seq += 1;
            if let Some(a) = c.active.as_mut() {
                // An authorizer is sent no body (spec 6.3; mod_fcgid sends it no
                // FCGI_STDIN at all, not even the empty record), so its body is empty
                // and any FCGI_STDIN a web server does send is drained as unread.
                a.body_attached = role != Role::Authorizer;
            }
            c.seq
        };
        let built = match params {
            None => Err(request::Rejection::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "request {id}: FastCGI params exceed {} bytes (raise FCGI_MAX_PARAMS_BYTES); answered 431",
                    cfg.limits.max_params_bytes
                ),
            )),
            Some(buf) => match Vars::from_fcgi_params(buf, cfg.limits.max_params) {
                Ok(vars) => match request::content_length(&vars) {
                    Ok(len) => {
                        let len = match len {
                            DeclaredLength::Exact(n) => Some(n),
                            DeclaredLength::Absent | DeclaredLength::Unknown => None,
                        };
                        if let Some(n) = len.filter(|&n| n > 0 && request::over_http2(&vars)) {
                            if let Some(a) = lock(&conn).active.as_mut() {
                                a.stdin_due = n;
                            }
                        }
                        let body = if role == Role::Authorizer {
                            Body::empty()
                        } else {
                            Body::from_conn(conn.clone(), seq, len)
                        };
                        request::build(vars, body, Mode::FastCgi, role, &cfg.map)
                    }
                    Err(r) => Err(r),
                },
                Err(ParamsError::TooMany(n)) => Err(request::Rejection::new(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    format!(
                        "request {id}: more than {n} FastCGI params (raise FCGI_MAX_PARAMS); answered 431"
                    ),
                )),
                Err(ParamsError::Malformed(e)) => {
                    log::warn!("request {id}: FCGI_PARAMS: {e}; closing the connection");
                    break;
                }
            },
        };
        logger::capture_begin();
        let outcome = {
            let mut sink = StdoutSink { conn: &conn };
            match built {
                Ok(req) => app.serve(req, &mut sink),
                Err(rej) => {
                    log::warn!("{}", rej.reason);
                    response::send_error(rej.status, &mut sink)
                }
            }
        };
        let outcome = match outcome {
            Outcome::CutShort if !ends_short(keep_conn) => Outcome::Cut,
            o => o,
        };
        let mut c = lock(&conn);
        let stdin_done = c.consume_buffered_stdin();
        c.finish_request(outcome);
        c.poll_first = true;
        c.served_any = true;
        logger::capture_end();
        stats.requests += 1;
        after_request();
        // Taken after every response that did not end complete, so none is left over
        // for a later request's line.
        let failed_on = (outcome != Outcome::Complete)
            .then(response::take_failed_request)
            .flatten();
        if let Some(f) = &c.failure {
            if outcome != Outcome::Complete || !c.peer_closed {
                match failed_on {
                    Some(what) => log::info!("{what}: {f}; closing the connection"),
                    None => log::info!("request {id}: {f}; closing the connection"),
                }
            }
            break;
        }
        if !keep_conn {
            c.linger(stdin_done);
            break;
        }
        if sys::shutdown_requested() {
            // The web server may have sent the next request on this kept-alive
            // connection already: serve that one, then close.
            if c.draining {
                break;
            }
            c.draining = true;
        }
    }
    stats
}
