// Blocking reads and writes with timeouts over a non-blocking socket, for the
// protocols that read a stream directly (SCGI, the HTTP development server).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use crate::sys::{self, Socket, Wake, Watch};

/// The first byte a peer sends, without consuming it; `None` if it closes, fails or
/// stays silent past `timeout`. Once the process is stopping, the byte gets the short
/// grace a request head gets, so a silent peer cannot hold the exit.
pub(crate) fn peek_first(sock: &Socket, timeout: Option<Duration>) -> Option<u8> {
    let mut b = [0u8; 1];
    let mut deadline = timeout.map(|t| std::time::Instant::now() + t);
    let mut stopping = false;
    loop {
        // SAFETY: recv into a one-byte buffer we own.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                b.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n == 1 {
            return Some(b[0]);
        }
        if n == 0 {
            return None;
        }
        match io::Error::last_os_error().kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
                let watch = if stopping {
                    Watch::Nothing
                } else {
                    Watch::Drain
                };
                match sys::wait(sock.as_raw_fd(), false, left, watch) {
                    Ok(Wake::Ready) => {}
                    Ok(Wake::Stop) => {
                        stopping = true;
                        deadline = Some(sys::stop_grace(deadline));
                    }
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
}

/// A socket shared by a request's body reader and its response writer.
#[derive(Clone)]
pub(crate) struct SockIo {
    sock: Arc<Socket>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// While a request head is being read: when it must be complete.
    head: Arc<std::sync::Mutex<HeadState>>,
}

#[derive(Default, Clone, Copy)]
struct HeadState {
    /// A request head is being read.
    reading: bool,
    /// By when it must be complete (the read timeout from its start; 1 s once the
    /// process is stopping).
    by: Option<std::time::Instant>,
}

impl SockIo {
    pub fn new(
        sock: Socket,
        read_timeout: Option<Duration>,
        write_timeout: Option<Duration>,
    ) -> SockIo {
        SockIo {
            sock: Arc::new(sock),
            read_timeout,
            write_timeout,
            head: Arc::default(),
        }
    }

    /// Reads must complete by the head timeout from now (`true`: the read timeout, 10 s
    /// at most), or each within `read_timeout` again (`false`): a request head must
    /// arrive whole in time, so a peer trickling a byte at a time cannot hold a worker.
    pub fn head_deadline(&self, on: bool) {
        let by = if on {
            Some(std::time::Instant::now() + crate::config::head_timeout(self.read_timeout))
        } else {
            None
        };
        *self.head_state() = HeadState { reading: on, by };
    }

    fn head_state(&self) -> std::sync::MutexGuard<'_, HeadState> {
        self.head.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }

    /// Waits for the first byte of a request: `Ok(false)` when the peer closed, the
    /// idle timeout passed or a shutdown asks idle connections to end.
    pub fn wait_first(&self, idle_timeout: Option<Duration>) -> io::Result<bool> {
        match sys::wait(self.sock.as_raw_fd(), false, idle_timeout, Watch::Drain)? {
            Wake::Ready => Ok(true),
            Wake::TimedOut | Wake::Stop => Ok(false),
        }
    }

    fn block(&self, writable: bool) -> io::Result<()> {
        if writable {
            return match sys::wait(
                self.sock.as_raw_fd(),
                true,
                self.write_timeout,
                Watch::Nothing,
            )? {
                Wake::TimedOut => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "timed out waiting for the peer to take the response",
                )),
                _ => Ok(()),
            };
        }
        loop {
            // A request head must arrive whole by its deadline, and gets 1 s once the
            // process is stopping (as under FastCGI), so a peer trickling it cannot
            // hold a worker, nor the exit.
            let head = {
                let mut h = self.head_state();
                if h.reading && sys::shutdown_requested() {
                    h.by = Some(sys::stop_grace(h.by));
                }
                *h
            };
            let mut t = self.read_timeout;
            if let Some(by) = head.by {
                let left = by.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(head_timed_out());
                }
                t = Some(t.map_or(left, |t| t.min(left)));
            }
            let watch = if head.reading && !sys::shutdown_requested() {
                Watch::Drain
            } else {
                Watch::Nothing
            };
            match sys::wait(self.sock.as_raw_fd(), false, t, watch)? {
                Wake::Ready => return Ok(()),
                // Stopping while the head arrives: on with the grace.
                Wake::Stop => {}
                Wake::TimedOut if head.by.is_some() => return Err(head_timed_out()),
                Wake::TimedOut => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "timed out waiting for the peer to send",
                    ));
                }
            }
        }
    }

    /// Half-closes and drains briefly, so closing does not reset a response the peer
    /// has not read yet.
    /// While stopping it waits 200 ms at most, so the exit is not held up.
    /// Closes with a TCP reset (no effect on a Unix socket): how a response cut short
    /// is told apart from a complete one where nothing else frames it.
    pub fn reset_close(&self) {
        let _ = self.sock.reset_on_close();
    }

    pub fn linger_close(&self) {
        let _ = self.sock.shutdown_write();
        let mut stopping = sys::shutdown_requested();
        let mut deadline = std::time::Instant::now()
            + if stopping {
                sys::STOP_LINGER
            } else {
                Duration::from_secs(2)
            };
        let mut buf = [0u8; 8192];
        let mut total = 0usize;
        while total < 16 * 1024 * 1024 {
            match self.sock.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => total += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return;
                    }
                    let watch = if stopping {
                        Watch::Nothing
                    } else {
                        Watch::Drain
                    };
                    match sys::wait(self.sock.as_raw_fd(), false, Some(left), watch) {
                        Ok(Wake::Ready) => {}
                        Ok(Wake::Stop) => {
                            stopping = true;
                            deadline = deadline.min(std::time::Instant::now() + sys::STOP_LINGER);
                        }
                        _ => return,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

fn head_timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "timed out waiting for the request head",
    )
}

impl Read for SockIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.sock.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.block(false)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }
}

impl Write for SockIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.sock.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.block(true)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
