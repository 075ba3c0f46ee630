// The few system calls std does not wrap: socket checks on fd 0, accept4, poll, signals.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
use std::time::{Duration, Instant};

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_size(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// True when `fd` is a socket in the listening state: `getpeername` fails with
/// `ENOTCONN` *and* `SO_ACCEPTCONN` is set. An unbound or merely connected socket, a
/// pipe, a file or a terminal is not a listener.
pub fn is_listening_socket(fd: RawFd) -> bool {
    // SAFETY: getpeername/getsockopt only write into the buffers we pass, sized by len.
    unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getpeername(fd, (&raw mut addr).cast(), &mut len) == 0 {
            return false;
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::ENOTCONN) {
            return false;
        }
        let mut val: libc::c_int = 0;
        let mut vlen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&raw mut val).cast(),
            &mut vlen,
        ) == 0
            && val != 0
    }
}

/// True when `fd`'s open file description has `O_NONBLOCK` (false if it cannot be read).
pub fn is_nonblocking(fd: RawFd) -> bool {
    // SAFETY: plain fcntl on an fd we hold.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    flags >= 0 && flags & libc::O_NONBLOCK != 0
}

pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: plain fcntl on an fd we hold.
    unsafe {
        let flags = cvt(libc::fcntl(fd, libc::F_GETFL))?;
        let new = if on {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        if new != flags {
            cvt(libc::fcntl(fd, libc::F_SETFL, new))?;
        }
    }
    Ok(())
}

/// Closes the descriptors above 2 that came from whoever started us (those without
/// `FD_CLOEXEC`: ours are all opened with it, and inherited ones survived an `exec`
/// only because they lack it), except `keep`.
pub fn close_inherited_fds(keep: &[RawFd]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2 && !keep.contains(&fd))
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/close on a descriptor number; one that is gone (the
        // directory's own) fails harmlessly.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::close(fd);
            }
        }
    }
}

pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain fcntl on an fd we hold.
    unsafe {
        let flags = cvt(libc::fcntl(fd, libc::F_GETFD))?;
        cvt(libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC))?;
    }
    Ok(())
}

fn sockaddr_to_std(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match addr.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(addr as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 =
                unsafe { &*(addr as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be(a.sin6_port)))
        }
        _ => None,
    }
}

/// A connected stream socket (Unix or TCP). The descriptor is in blocking mode, but
/// every read and write asks not to wait (`MSG_DONTWAIT`), so waiting is always
/// explicit: `poll` with a timeout, or — between requests on a kept-alive connection —
/// one blocking `recv` ([`Socket::idle_read`]), which saves a system call per request.
/// Writes use `MSG_NOSIGNAL`, so a web server that went away is an `EPIPE` error,
/// never a `SIGPIPE` death.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
}

impl Socket {
    pub fn from_owned(fd: OwnedFd) -> Socket {
        Socket { fd }
    }

    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reads at most buf.len() bytes into buf.
        cvt_size(unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        })
    }

    /// Waits for the next request on a kept-alive connection with a plain blocking
    /// `recv`. `Ok(None)`: a shutdown was requested. The waiting thread is woken by a
    /// signal; should the signal land just before the `recv`, its handler (which runs
    /// on this very thread) shuts the socket's reading side, so the `recv` cannot
    /// block: no timeout (and no kernel timer per request) is needed as a backstop.
    pub fn idle_read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let fd = self.fd.as_raw_fd();
        let Some(slot) = IdleSlot::take() else {
            // Every slot is in use: let the caller poll instead.
            return Err(io::ErrorKind::WouldBlock.into());
        };
        IDLE_FD.set(fd);
        let asked = PARK_ASKED.load(Ordering::Acquire);
        let r = loop {
            if DRAIN.is_raised() {
                // A request that has already arrived is still served.
                // SAFETY: reads at most buf.len() bytes into buf.
                let n = unsafe {
                    libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
                };
                break Ok((n > 0).then_some(n as usize));
            }
            // SAFETY: reads at most buf.len() bytes into buf.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 || (n == 0 && !DRAIN.is_raised()) {
                break Ok(Some(n as usize));
            }
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    // A receive timeout the socket took from a listener that blocks in
                    // `accept` passed.
                    break Err(io::ErrorKind::TimedOut.into());
                }
                if e.kind() != io::ErrorKind::Interrupted {
                    break Err(e);
                }
                if PARK_ASKED.load(Ordering::Acquire) != asked {
                    // [`ask_idle_readers_to_park`]: the caller looks whether to.
                    break Err(io::ErrorKind::TimedOut.into());
                }
            }
            // The wake-up signal (or the end of stream it caused): look at the flag.
        };
        IDLE_FD.set(-1);
        drop(slot);
        r
    }

    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: reads at most buf.len() bytes from buf.
        cvt_size(unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        })
    }

    pub fn write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: IoSlice is ABI-compatible with iovec; the kernel only reads them.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
            // MSG_DONTWAIT as every other read and write: a web server that stops
            // reading must meet the write timeout (and a shutdown), not block us.
            cvt_size(libc::sendmsg(
                self.fd.as_raw_fd(),
                &msg,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            ))
        }
    }

    /// The local address of a TCP socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        // SAFETY: getsockname writes at most len bytes into addr.
        unsafe {
            let mut addr: libc::sockaddr_storage = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            if libc::getsockname(self.fd.as_raw_fd(), (&raw mut addr).cast(), &mut len) != 0 {
                return None;
            }
            sockaddr_to_std(&addr)
        }
    }

    /// A second descriptor of the same connection (close-on-exec).
    pub fn duplicate(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// Half-closes the sending side (`shutdown(SHUT_WR)`).
    pub fn shutdown_write(&self) -> io::Result<()> {
        // SAFETY: plain shutdown on an fd we own.
        cvt(unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) }).map(drop)
    }

    /// Makes the close send a TCP reset instead of a FIN (`SO_LINGER` 0): the peer's
    /// read then fails instead of seeing an orderly end. No effect on a Unix socket.
    pub fn reset_on_close(&self) -> io::Result<()> {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt with a pointer to a live `linger` and its exact size.
        cvt(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        })
        .map(drop)
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A listening socket, non-blocking, that may be shared with other processes
/// (lighttpd `max-procs`, spawn-fcgi `-F`, prefork workers).
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
}

pub enum Accepted {
    Conn(Socket, Option<SocketAddr>),
    /// Another process or thread took the connection, or the peer gave up.
    Nothing,
}

impl Listener {
    /// Takes ownership of a listening socket fd and makes it non-blocking.
    pub fn from_owned(fd: OwnedFd) -> io::Result<Listener> {
        set_nonblocking(fd.as_raw_fd(), true)?;
        set_cloexec(fd.as_raw_fd())?;
        Ok(Listener { fd })
    }

    /// Takes fd 0 (as mod_fcgid, lighttpd and spawn-fcgi pass it) and leaves
    /// `/dev/null` in its place, so nothing else reads the socket as stdin.
    pub fn take_stdin() -> io::Result<Listener> {
        // SAFETY: dup the fd we were given; the duplicate is owned by the OwnedFd.
        let dup = cvt(unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) })?;
        let owned = unsafe { OwnedFd::from_raw_fd(dup) };
        // SAFETY: open + dup2 over fd 0; fd 0 stays a valid descriptor throughout.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            if null >= 0 {
                libc::dup2(null, 0);
                libc::close(null);
            }
        }
        Listener::from_owned(owned)
    }

    /// A second handle on the same listening socket (for a prefork worker).
    pub fn try_clone(&self) -> io::Result<Listener> {
        // SAFETY: duplicating an fd we hold; the new one is owned by the OwnedFd.
        let fd = cvt(unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
        Ok(Listener {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Makes `accept` wait for a connection, for at most `timeout` (`SO_RCVTIMEO`,
    /// which Linux's `accept` honours; with it set, a signal handler never restarts an
    /// interrupted `accept`, which returns `EINTR`). `O_NONBLOCK` belongs to the open
    /// file description, so processes sharing the socket (`spawn-fcgi -F` copies) wait
    /// the same way; `accept` wakes one waiter per connection.
    pub fn set_blocking_accept(&self, timeout: Duration) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        let tv = libc::timeval {
            // `as _`: the field types (libc's `time_t`, `suseconds_t`), whose names
            // libc deprecates on musl.
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as _,
            tv_usec: timeout.subsec_micros() as _,
        };
        // SAFETY: setsockopt on a descriptor we hold; tv is fully initialised and sized
        // as passed.
        cvt(unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        })?;
        set_nonblocking(fd, false)
    }

    /// A blocking [`accept`](Self::accept) (see [`set_blocking_accept`]) that a
    /// shutdown request interrupts: the thread is registered as an idle one, which
    /// [`request_shutdown`] and the signal handlers signal. A request that lands just
    /// before the `accept` starts is seen at the receive timeout.
    pub fn accept_or_stop(&self) -> io::Result<Accepted> {
        let _slot = IdleSlot::take();
        if DRAIN.is_raised() {
            return Ok(Accepted::Nothing);
        }
        self.accept()
    }

    pub fn accept(&self) -> io::Result<Accepted> {
        // SAFETY: accept4 writes at most len bytes of address into addr.
        unsafe {
            let mut addr: libc::sockaddr_storage = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            let fd = libc::accept4(
                self.fd.as_raw_fd(),
                (&raw mut addr).cast(),
                &mut len,
                libc::SOCK_CLOEXEC,
            );
            if fd < 0 {
                let e = io::Error::last_os_error();
                // accept(2): network errors already pending on the new connection
                // come back from accept itself, and for TCP are to be treated like
                // EAGAIN; the listener is fine.
                return match e.raw_os_error() {
                    Some(
                        libc::EAGAIN
                        | libc::EINTR
                        | libc::ECONNABORTED
                        | libc::EPROTO
                        | libc::ENETDOWN
                        | libc::ENOPROTOOPT
                        | libc::EHOSTDOWN
                        | libc::ENONET
                        | libc::EHOSTUNREACH
                        | libc::EOPNOTSUPP
                        | libc::ENETUNREACH,
                    ) => Ok(Accepted::Nothing),
                    _ => Err(e),
                };
            }
            let sock = Socket::from_owned(OwnedFd::from_raw_fd(fd));
            Ok(Accepted::Conn(sock, sockaddr_to_std(&addr)))
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// What `wait` saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    Ready,
    TimedOut,
    /// The flag being watched was raised.
    Stop,
}

/// Which stop flag a `wait` also watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    Nothing,
    /// Shutdown requested (signal, max-requests, binary replaced): idle connections end.
    Drain,
    /// Stop accepting: listeners end.
    Accept,
}

impl Watch {
    /// The process-wide flag this watch stands for.
    pub fn flag(self) -> Option<&'static Flag> {
        match self {
            Watch::Nothing => None,
            Watch::Drain => Some(&DRAIN),
            Watch::Accept => Some(&ACCEPT),
        }
    }
}

/// A poll(2) timeout in milliseconds, rounded up so a sub-millisecond remainder never
/// turns into a busy loop.
fn poll_ms(left: Duration) -> libc::c_int {
    left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
}

/// Blocks until `fd` is readable (or writable), `timeout` passes, or the watched flag
/// is raised. A deadline that has already passed still gets one non-blocking look.
pub fn wait(
    fd: RawFd,
    writable: bool,
    timeout: Option<Duration>,
    watch: Watch,
) -> io::Result<Wake> {
    let events = if writable {
        libc::POLLOUT
    } else {
        libc::POLLIN
    };
    wait_for(fd, events, timeout, watch, -1)
}

/// Blocks until `fd` is writable or readable, or `timeout` passes: for a writer that
/// also has input to take meanwhile.
pub fn wait_out_or_in(fd: RawFd, timeout: Option<Duration>) -> io::Result<Wake> {
    wait_for(
        fd,
        libc::POLLOUT | libc::POLLIN,
        timeout,
        Watch::Nothing,
        -1,
    )
}

/// Blocks until `out` is writable (`Ready`) or `inp` is readable (`Stop`), or
/// `timeout` passes: for a writer that must keep another descriptor's input moving
/// while it waits (a CGI response out while the web server still writes the request).
pub fn wait_out_or_other_in(out: RawFd, inp: RawFd, timeout: Option<Duration>) -> io::Result<Wake> {
    wait_for(out, libc::POLLOUT, timeout, Watch::Nothing, inp)
}

/// The wait behind [`wait`]: `fd` for `events` (`Ready`), the watched flag or `also`
/// readable (`Stop`; -1 for none), or the timeout.
fn wait_for(
    fd: RawFd,
    events: libc::c_short,
    timeout: Option<Duration>,
    watch: Watch,
    also: RawFd,
) -> io::Result<Wake> {
    // One clock read per wait: the first poll gets the whole timeout, and only a poll
    // that has to be resumed (a signal, a spurious wake) works out what is left.
    let timed = timeout.map(|t| (t, Instant::now()));
    let flag = watch.flag();
    let mut first = true;
    loop {
        if flag.is_some_and(Flag::is_raised) {
            return Ok(Wake::Stop);
        }
        let mut fds = [
            libc::pollfd {
                fd,
                events,
                revents: 0,
            },
            libc::pollfd {
                fd: flag.map_or(-1, |f| f.rd.load(Ordering::Relaxed)),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: also,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = match timed {
            Some((t, start)) => poll_ms(left_of(t, start, &mut first)),
            None => -1,
        };
        // SAFETY: fds is a valid array of three pollfd; negative fds are ignored.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 3, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[0].revents != 0 {
            return Ok(Wake::Ready);
        }
        if fds[1].revents != 0 || fds[2].revents != 0 {
            return Ok(Wake::Stop);
        }
        // poll's timeout is rounded up to whole milliseconds, so 0 means it has passed.
        if r == 0 && timed.is_some() {
            return Ok(Wake::TimedOut);
        }
    }
}

/// What is left of `timeout` begun at `start`: all of it the first time (no clock
/// read), the remainder after that.
fn left_of(timeout: Duration, start: Instant, first: &mut bool) -> Duration {
    if std::mem::take(first) {
        timeout
    } else {
        timeout.saturating_sub(start.elapsed())
    }
}

/// One worker thread's wait for a connection: its own epoll set, which holds the
/// listener with `EPOLLEXCLUSIVE` while the thread sleeps in [`wait`](Self::wait), so a
/// new connection wakes one waiting thread (or process, under prefork) rather than
/// every one of them; and the stop flag's pipe, which wakes them all.
///
/// The listener is in the set only during the wait. Each set that holds it is an entry
/// on the listener's wait queue, and each connection the web server makes runs the
/// entries' callbacks in the web server's `connect` until one wakes a thread: with 8
/// threads busy under load that was 8 callbacks per connection, whatever the threads
/// were doing, about 3 % of the load generator's CPU per request at 8:8
/// (BENCHMARKS.md). A blocking `accept` (libfcgi's wait) leaves an entry only while it
/// sleeps; so does this. Under load a connection is usually queued and the thread
/// accepts it without waiting, so the add and the removal are paid only by a thread
/// that sleeps anyway.
pub struct AcceptWait {
    ep: OwnedFd,
    listener: RawFd,
    flag: Option<&'static Flag>,
}

impl AcceptWait {
    /// `parked`: a [`ParkLot`]'s descriptor, which wakes the wait too when one of its
    /// connections has something to read.
    pub fn new(listener: RawFd, watch: Watch, parked: Option<RawFd>) -> io::Result<AcceptWait> {
        // SAFETY: epoll_create1 returns a new fd or -1.
        let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: ep is a fresh fd that we own.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        let flag = watch.flag();
        if let Some(p) = parked {
            // Not EPOLLEXCLUSIVE, which an epoll descriptor inside another refuses
            // (EINVAL): every waiting worker wakes, and one takes the connection.
            epoll_add(ep.as_raw_fd(), p, libc::EPOLLIN as u32, 2)?;
        }
        if let Some(f) = flag {
            let rd = f.rd.load(Ordering::Acquire);
            if rd >= 0 {
                epoll_add(ep.as_raw_fd(), rd, libc::EPOLLIN as u32, 1)?;
            }
        }
        Ok(AcceptWait { ep, listener, flag })
    }

    /// True once the watched flag is raised: accept no more.
    pub fn stopped(&self) -> bool {
        self.flag.is_some_and(Flag::is_raised)
    }

    /// Waits until a connection may be queued (`Ready`), the flag is raised (`Stop`), or
    /// `timeout` has passed (`TimedOut`).
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<Wake> {
        if self.stopped() {
            return Ok(Wake::Stop);
        }
        // Added here, the listener is reported at once if a connection came since the
        // caller's last `accept` (the add looks at it), so none is missed.
        let ep = self.ep.as_raw_fd();
        epoll_add(
            ep,
            self.listener,
            (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32,
            0,
        )?;
        let woke = self.sleep(timeout);
        // SAFETY: the listener was added above; removing it takes no event argument.
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, self.listener, std::ptr::null_mut()) };
        woke
    }

    fn sleep(&self, timeout: Option<Duration>) -> io::Result<Wake> {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 2];
        let ms = timeout.map_or(-1, |t| t.as_millis().clamp(1, i32::MAX as u128) as i32);
        loop {
            if self.stopped() {
                return Ok(Wake::Stop);
            }
            // SAFETY: evs has room for the 2 events asked for.
            let n = unsafe { libc::epoll_wait(self.ep.as_raw_fd(), evs.as_mut_ptr(), 2, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if self.stopped() {
                return Ok(Wake::Stop);
            }
            if n > 0 {
                return Ok(Wake::Ready);
            }
            if ms >= 0 {
                return Ok(Wake::TimedOut);
            }
        }
    }
}

/// Adds `fd` to the epoll set `ep` for `events`, tagged `tag`.
fn epoll_add(ep: RawFd, fd: RawFd, events: u32, tag: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: tag };
    // SAFETY: epoll_ctl reads one epoll_event.
    cvt(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(drop)
}

// ---- kept-alive connections parked while idle ----

/// Kept-alive connections idle between requests, held here instead of by a thread of
/// their own when every thread is taken and another connection waits: a web server
/// that keeps more connections open than we have threads (H2O's pool has no limit,
/// nginx's `keepalive` is per worker process) would otherwise keep the others queued
/// until its keep-alive timeout. Each is in an epoll set, armed once
/// (`EPOLLONESHOT`): a thread waiting for connections wakes when one of them has
/// something to read, and takes it back.
pub struct ParkLot {
    ep: OwnedFd,
    /// The parked descriptors, and when each was parked ([`coarse_ms`]).
    parked: Mutex<std::collections::HashMap<RawFd, (OwnedFd, u64)>>,
    count: AtomicUsize,
    max: usize,
}

impl ParkLot {
    /// A lot for at most `max` connections.
    pub fn new(max: usize) -> io::Result<ParkLot> {
        // SAFETY: epoll_create1 returns a new fd or -1.
        let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(ParkLot {
            // SAFETY: ep is a fresh fd that we own.
            ep: unsafe { OwnedFd::from_raw_fd(ep) },
            parked: Mutex::new(std::collections::HashMap::new()),
            count: AtomicUsize::new(0),
            max,
        })
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.ep.as_raw_fd()
    }

    /// No connection is parked (one atomic load: the accept path asks on every
    /// connection).
    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    /// A parked connection has something to read (or was closed): a look that does
    /// not wait.
    pub fn has_ready(&self) -> bool {
        !self.is_empty() && !nothing_to_read(self.ep.as_raw_fd())
    }

    /// Takes `fd`, a kept-alive connection with nothing unread. When the lot is full,
    /// the connection parked longest with nothing to read is closed to make room (as a
    /// web server's own pool drops its least recently used connection); gives `fd`
    /// back when every parked one has a request waiting, or the descriptor cannot be
    /// watched.
    pub fn park(&self, fd: OwnedFd) -> Result<(), OwnedFd> {
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        if parked.len() >= self.max {
            let oldest_idle = parked
                .iter()
                .filter(|(raw, _)| nothing_to_read(**raw))
                .min_by_key(|(_, (_, at))| *at)
                .map(|(raw, _)| *raw);
            match oldest_idle {
                // Dropping it closes it, which takes it out of the epoll set too.
                Some(raw) => drop(parked.remove(&raw)),
                None => return Err(fd),
            }
        }
        let raw = fd.as_raw_fd();
        // raw stays open while it is in the set (dropping it closes it, which takes it out).
        let events = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32;
        if epoll_add(self.ep.as_raw_fd(), raw, events, raw as u64).is_err() {
            return Err(fd);
        }
        parked.insert(raw, (fd, coarse_ms()));
        self.count.store(parked.len(), Ordering::Release);
        Ok(())
    }

    /// A parked connection that has something to read, taken out of the lot.
    pub fn claim(&self) -> Option<Socket> {
        if self.is_empty() {
            return None;
        }
        let mut ev = [libc::epoll_event { events: 0, u64: 0 }; 1];
        // SAFETY: ev has room for the one event asked for; no wait.
        let n = unsafe { libc::epoll_wait(self.ep.as_raw_fd(), ev.as_mut_ptr(), 1, 0) };
        if n != 1 {
            return None;
        }
        let raw = ev[0].u64 as RawFd;
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        // Swept meanwhile (closed for its idle timeout): nothing to take.
        let (fd, _) = parked.remove(&raw)?;
        self.count.store(parked.len(), Ordering::Release);
        // SAFETY: fd is still open; removing it from the set before handing it on.
        unsafe {
            libc::epoll_ctl(
                self.ep.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                raw,
                std::ptr::null_mut(),
            )
        };
        Some(Socket::from_owned(fd))
    }

    /// Closes the connections parked for longer than `idle` (`FCGI_IDLE_TIMEOUT`) with
    /// nothing to read (one whose next request has come is no longer idle: it waits for
    /// a thread); returns how many.
    pub fn close_idle(&self, idle: Duration) -> usize {
        if self.is_empty() {
            return 0;
        }
        let now = coarse_ms();
        let limit = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        let before = parked.len();
        // Dropping the descriptor closes it, which also takes it out of the epoll set.
        parked.retain(|raw, (_, at)| now.saturating_sub(*at) < limit || !nothing_to_read(*raw));
        self.count.store(parked.len(), Ordering::Release);
        before - parked.len()
    }

    /// Closes every parked connection (the server is stopping: idle kept-alive
    /// connections are closed then, as those a thread holds are).
    pub fn close_all(&self) {
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        parked.clear();
        self.count.store(0, Ordering::Release);
    }
}

// ---- spinning before sleeping ----

/// How long a thread that has just answered looks for the next piece of work (the next
/// request on a kept-alive connection, the web server's close, the next connection)
/// before it goes to sleep, in nanoseconds; 0: never. Set once per server from
/// `FCGI_SPIN_MICROS`.
static SPIN_NS: AtomicU64 = AtomicU64::new(0);
/// Connections this process is serving now: a thread spins only while it is the only
/// one at work, so spinning never takes a CPU another of our threads could use.
static OPEN_CONNS: AtomicUsize = AtomicUsize::new(0);
/// The pause between two looks of a spin.
const SPIN_PAUSE: Duration = Duration::from_micros(2);
/// How often a spin looks again whether a task waits for a CPU.
const SPIN_RECHECK: Duration = Duration::from_micros(10);

/// `/proc/loadavg`, kept open (-1: not opened, or not there), and the CPUs this
/// process may run on: spinning is for a machine with a CPU to spare.
static LOADAVG: AtomicI32 = AtomicI32::new(-1);
static CPUS: AtomicUsize = AtomicUsize::new(1);

pub fn set_spin(d: Duration) {
    if !d.is_zero() && LOADAVG.load(Ordering::Relaxed) < 0 {
        // SAFETY: a NUL-terminated path; the fd is kept for the life of the process.
        let fd = unsafe { libc::open(c"/proc/loadavg".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        LOADAVG.store(fd, Ordering::Relaxed);
        // SAFETY: an all-zero cpu_set_t is a valid empty set; the call fills it in.
        let cpus = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
                libc::CPU_COUNT(&set).max(1) as usize
            } else {
                1
            }
        };
        CPUS.store(cpus, Ordering::Relaxed);
    }
    SPIN_NS.store(
        d.as_nanos().min(u128::from(u64::MAX)) as u64,
        Ordering::Relaxed,
    );
}

/// True when no task on the machine waits for a CPU: the runnable tasks now (the
/// fourth field of /proc/loadavg, `RUNNING/TOTAL`, ourselves included) are no more than
/// our CPUs. Without /proc, false.
fn cpu_to_spare() -> bool {
    let fd = LOADAVG.load(Ordering::Relaxed);
    if fd < 0 {
        return false;
    }
    let mut buf = [0u8; 128];
    // SAFETY: reads at most buf.len() bytes into buf.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    let Ok(n) = usize::try_from(n) else {
        return false;
    };
    running_tasks(&buf[..n]).is_some_and(|r| r <= CPUS.load(Ordering::Relaxed))
}

/// The tasks runnable now, from the text of /proc/loadavg (`0.52 0.58 0.59 2/345 1234`).
fn running_tasks(loadavg: &[u8]) -> Option<usize> {
    let field = loadavg.split(|&b| b == b' ').nth(3)?;
    let running = field.split(|&b| b == b'/').next()?;
    std::str::from_utf8(running).ok()?.parse().ok()
}

/// Counts one connection as being served while it lives.
pub struct OpenConn(());

impl OpenConn {
    pub fn new() -> OpenConn {
        OPEN_CONNS.fetch_add(1, Ordering::Relaxed);
        OpenConn(())
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        OPEN_CONNS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// After a spin that found nothing, how many of the next spins to leave out: 1, then
/// 2, 4 ... 64 after each miss in a row, none after a find. A site whose requests come
/// seconds apart spins once in 65 waits; a busy one, whose spins find work, every time.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct Backoff {
    skip: u8,
    penalty: u8,
}

impl Backoff {
    /// True when this spin is one to leave out.
    fn skip(&mut self) -> bool {
        if self.skip == 0 {
            return false;
        }
        self.skip -= 1;
        true
    }

    fn found(&mut self) {
        *self = Backoff::default();
    }

    fn missed(&mut self) {
        self.penalty = self.penalty.saturating_mul(2).clamp(1, 64);
        self.skip = self.penalty;
    }
}

thread_local! {
    static SPIN_BACKOFF: Cell<Backoff> = const { Cell::new(Backoff { skip: 0, penalty: 0 }) };
}

/// Polls `fds` (pairs of descriptor and poll events; -1 is left out) without sleeping,
/// for up to the spin time, while at most `conns` connections are open in this process
/// (the caller's own). True when one is ready: the caller's wait would not sleep.
///
/// Going to sleep and being woken costs more than the wait itself when the next piece
/// of work comes within tens of microseconds (a kept-alive connection's next request,
/// the web server's close after a response): on an idle CPU the wake-up has to bring
/// the CPU out of its idle state first (in a virtual machine, a trip through the
/// hypervisor). BENCHMARKS.md has the figures.
pub fn spin(fds: &[(RawFd, libc::c_short)], conns: usize) -> bool {
    let ns = SPIN_NS.load(Ordering::Relaxed);
    if ns == 0 || OPEN_CONNS.load(Ordering::Relaxed) > conns {
        return false;
    }
    let mut backoff = SPIN_BACKOFF.get();
    let skip = backoff.skip();
    let found = !skip && cpu_to_spare() && spin_poll(fds, Duration::from_nanos(ns), cpu_to_spare);
    if found {
        backoff.found();
    } else if !skip {
        backoff.missed();
    }
    SPIN_BACKOFF.set(backoff);
    found
}

/// The looks of [`spin`]: true when one of `fds` is ready within `limit`; false as
/// soon as `spare` (asked every [`SPIN_RECHECK`]) says the CPU is wanted elsewhere.
fn spin_poll(
    fds: &[(RawFd, libc::c_short)],
    limit: Duration,
    mut spare: impl FnMut() -> bool,
) -> bool {
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 2];
    let n = fds.len().min(pfds.len());
    for (p, &(fd, events)) in pfds.iter_mut().zip(&fds[..n]) {
        p.fd = fd;
        p.events = events;
    }
    let start = Instant::now();
    let mut recheck = SPIN_RECHECK;
    loop {
        // Between looks a pause, not a system call: fewer calls, and the other
        // hyperthread of the core keeps its share.
        let pause = start.elapsed() + SPIN_PAUSE;
        while start.elapsed() < pause {
            std::hint::spin_loop();
        }
        // SAFETY: pfds holds n valid pollfd; negative fds are ignored.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), n as libc::nfds_t, 0) };
        if r > 0 {
            return true;
        }
        let spent = start.elapsed();
        if r < 0 || spent >= limit || DRAIN.is_raised() {
            return false;
        }
        // A task that became runnable meanwhile gets the CPU back within 10 µs.
        if spent >= recheck {
            if !spare() {
                return false;
            }
            recheck = spent + SPIN_RECHECK;
        }
    }
}

thread_local! {
    /// The listening socket of this thread's one-worker pool (-1: none, or several
    /// workers), which its lingering closes watch.
    static LISTENER: Cell<RawFd> = const { Cell::new(-1) };
    /// Whether that listener is a Unix socket.
    static LISTENER_UNIX: Cell<bool> = const { Cell::new(false) };
}

/// Records the listener of the calling thread's one-worker pool, for
/// [`wait_readable_or_backlog`]: no other worker would take a connection queued there.
pub fn set_thread_listener(fd: RawFd) {
    LISTENER.set(fd);
    LISTENER_UNIX.set(fd >= 0 && is_unix_socket(fd));
}

/// True when the listener [`set_thread_listener`] recorded is a Unix socket.
pub fn thread_listener_is_unix() -> bool {
    LISTENER_UNIX.get()
}

/// Whether the peer of a Unix stream socket whose read side has ended only shut its
/// sending side (`shutdown(SHUT_WR)`) and can still read. A peer that closed shows as
/// a hang-up as well; on TCP a close and a half-close look the same (a FIN) until a
/// write fails, so there the answer is always no.
pub fn only_half_closed(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one pollfd we own; a zero timeout does not wait.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r == 1
        && p.revents & libc::POLLRDHUP != 0
        && p.revents & (libc::POLLHUP | libc::POLLERR) == 0
        && is_unix_socket(fd)
}

fn is_unix_socket(fd: RawFd) -> bool {
    // SAFETY: getsockname writes at most `len` bytes into the zeroed storage.
    unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        libc::getsockname(fd, (&raw mut addr).cast(), &mut len) == 0
            && i32::from(addr.ss_family) == libc::AF_UNIX
    }
}

/// True when nothing can be read from `fd` now, not even its end: a look that does
/// not wait.
pub fn nothing_to_read(fd: RawFd) -> bool {
    matches!(
        wait_for(fd, libc::POLLIN, Some(Duration::ZERO), Watch::Nothing, -1),
        Ok(Wake::TimedOut)
    )
}

/// The listener [`set_thread_listener`] recorded, which this thread's lingering
/// closes watch, or -1.
pub fn thread_listener() -> RawFd {
    LISTENER.get()
}

/// This thread's epoll set for the waits of its lingering closes, made at the first
/// one: the listener with `EPOLLEXCLUSIVE`, the stop flag's pipe, and the lingering
/// connection while it waits. `ep` -1: not made yet; -2: it could not be made, and the
/// waits poll instead. `listener`: the one it was made for (a thread that serves
/// another listener later gets a new set). Closed when the thread ends.
struct LingerSet {
    ep: Cell<RawFd>,
    listener: Cell<RawFd>,
}

impl LingerSet {
    fn close(&self) {
        let fd = self.ep.replace(-1);
        if fd >= 0 {
            // SAFETY: the set is this thread's own descriptor, closed once (replaced
            // by -1 above).
            unsafe { libc::close(fd) };
        }
    }
}

impl Drop for LingerSet {
    fn drop(&mut self) {
        self.close();
    }
}

thread_local! {
    static LINGER_SET: LingerSet = const {
        LingerSet {
            ep: Cell::new(-1),
            listener: Cell::new(-1),
        }
    };
}

/// The tags of the linger set's entries.
const LINGER_LISTENER: u64 = 0;
const LINGER_STOP: u64 = 1;
const LINGER_CONN: u64 = 2;

/// The calling thread's linger set, made on first use, or None where it cannot be
/// (no listener, no stop pipe, out of descriptors).
fn linger_set() -> Option<RawFd> {
    LINGER_SET.with(|set| {
        let listener = LISTENER.get();
        if set.listener.get() == listener {
            match set.ep.get() {
                -2 => return None,
                -1 => {}
                ep => return Some(ep),
            }
        } else {
            set.close();
            set.listener.set(listener);
        }
        let made = (|| {
            let stop = DRAIN.rd.load(Ordering::Acquire);
            if listener < 0 || stop < 0 {
                return None;
            }
            // SAFETY: epoll_create1 returns a new fd or -1.
            let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }).ok()?;
            // SAFETY: ep is the fresh fd made above; owned here until stored.
            let owned = unsafe { OwnedFd::from_raw_fd(ep) };
            for (fd, events, tag) in [
                (
                    listener,
                    libc::EPOLLIN | libc::EPOLLEXCLUSIVE,
                    LINGER_LISTENER,
                ),
                (stop, libc::EPOLLIN, LINGER_STOP),
            ] {
                epoll_add(ep, fd, events as u32, tag).ok()?;
            }
            Some(owned.into_raw_fd())
        })();
        if made.is_none() {
            log::debug!("lingering closes poll the listener: no epoll set for them");
        }
        set.ep.set(made.unwrap_or(-2));
        made
    })
}

/// Waits until `fd` is readable (`Ready`), a connection is queued on this thread's
/// listener or a shutdown is requested (`Stop`), or `timeout` passes. `in_set` starts
/// false for each lingering connection and is kept across its waits.
///
/// The wait is an `epoll_wait` on a set that holds the listener with `EPOLLEXCLUSIVE`,
/// as the wait for a connection does: a new connection wakes one sleeping process,
/// whichever it is, rather than every lingering one. With several one-thread
/// processes on one socket that know nothing of each other (`spawn-fcgi -F`; workers
/// of `FCGI_PROCESSES` do not watch at all) a `poll` of the listener woke each of them
/// for every new connection. The connection is in the set
/// with `EPOLLONESHOT`: it is re-armed for each wait and, once closed, can wake a later
/// wait once at most should another process still hold it open.
pub fn wait_readable_or_backlog(
    fd: RawFd,
    timeout: Duration,
    in_set: &mut bool,
) -> io::Result<Wake> {
    // The stop flag's pipe too: a signal may be handled on another thread, which
    // leaves this poll asleep, so the pipe is what wakes it.
    let poll = |t| wait_for(fd, libc::POLLIN, Some(t), Watch::Drain, LISTENER.get());
    // A look first, which costs no more than the sleeping wait would have: the close
    // has often come by now, or (with one process under load) a connection is
    // queued, and then the set is not needed.
    match poll(Duration::ZERO)? {
        Wake::TimedOut => {}
        woke => return Ok(woke),
    }
    let Some(ep) = linger_set() else {
        return poll(timeout);
    };
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLONESHOT) as u32,
        u64: LINGER_CONN,
    };
    let op = if *in_set {
        libc::EPOLL_CTL_MOD
    } else {
        libc::EPOLL_CTL_ADD
    };
    // SAFETY: epoll_ctl reads one epoll_event.
    let mut r = unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) };
    if r < 0
        && op == libc::EPOLL_CTL_ADD
        && io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST)
    {
        // SAFETY: as above.
        r = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_MOD, fd, &mut ev) };
    }
    cvt(r)?;
    *in_set = true;
    let start = Instant::now();
    let mut first = true;
    loop {
        if DRAIN.is_raised() {
            return Ok(Wake::Stop);
        }
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 3];
        let ms = poll_ms(left_of(timeout, start, &mut first));
        // SAFETY: evs has room for the 3 events asked for.
        let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 3, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let evs = &evs[..n as usize];
        if evs.iter().any(|e| e.u64 == LINGER_CONN) {
            return Ok(Wake::Ready);
        }
        if !evs.is_empty() {
            return Ok(Wake::Stop);
        }
        // epoll's timeout is rounded up to whole milliseconds, as poll's.
        return Ok(Wake::TimedOut);
    }
}

// ---- stopping: a flag plus a self-pipe that stays readable once raised ----

/// A process-wide flag that `wait` can watch: once raised, its pipe stays readable,
/// so every waiter wakes and every later wait returns at once.
pub struct Flag {
    raised: AtomicBool,
    rd: AtomicI32,
    wr: AtomicI32,
}

impl Flag {
    const fn new() -> Flag {
        Flag {
            raised: AtomicBool::new(false),
            rd: AtomicI32::new(-1),
            wr: AtomicI32::new(-1),
        }
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Raises the flag. Async-signal-safe.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        let fd = self.wr.load(Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: write(2) of one byte; async-signal-safe. A full pipe is fine: it is
            // already readable.
            unsafe {
                libc::write(fd, [1u8].as_ptr().cast(), 1);
            }
        }
    }

    /// Gives the flag a fresh pipe, lowered (at start-up, and in a child after fork so
    /// the parent's flags are not shared).
    fn reset(&self) -> io::Result<()> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
        let old_rd = self.rd.swap(fds[0], Ordering::AcqRel);
        let old_wr = self.wr.swap(fds[1], Ordering::AcqRel);
        self.raised.store(false, Ordering::Release);
        for fd in [old_rd, old_wr] {
            if fd >= 0 {
                // SAFETY: closing the pipe ends this flag owned.
                unsafe { libc::close(fd) };
            }
        }
        Ok(())
    }
}

/// Raised by SIGCHLD in a prefork parent (see [`watch_child_exits`]), so that a worker
/// that exits (max-requests, a crash) is replaced at once rather than at the parent's
/// next look.
static CHILD_EXITED: Flag = Flag::new();

extern "C" fn on_child_exit(_: libc::c_int) {
    // SAFETY: only async-signal-safe work: errno save/restore and `Flag::raise`.
    unsafe {
        let errno = *libc::__errno_location();
        CHILD_EXITED.raise();
        *libc::__errno_location() = errno;
    }
}

/// SIGCHLD's action before [`watch_child_exits`] replaced it (the app's, or what the
/// process was started with), given back to each worker in [`reset_after_fork`].
static SIGCHLD_BEFORE: std::sync::OnceLock<libc::sigaction> = std::sync::OnceLock::new();

/// While it lives, the prefork parent's SIGCHLD handler is installed; dropped, SIGCHLD's
/// earlier action is back (for the app's code after `run` returns, and for a program
/// `exec`ed in place, which keeps an ignored SIGCHLD ignored).
pub struct ChildExitWatch(());

impl Drop for ChildExitWatch {
    fn drop(&mut self) {
        restore_sigchld();
    }
}

/// SIGCHLD's action from before [`watch_child_exits`], or the default.
fn restore_sigchld() {
    // SAFETY: installing a saved action, or the default one.
    unsafe {
        match SIGCHLD_BEFORE.get() {
            Some(before) => libc::sigaction(libc::SIGCHLD, before, std::ptr::null_mut()),
            None => {
                libc::signal(libc::SIGCHLD, libc::SIG_DFL);
                0
            }
        };
    }
}

/// For a prefork parent: a worker's exit wakes [`wait_for_child_exit`] while the
/// returned watch lives. Installed before the first fork; a worker gets SIGCHLD's
/// earlier action back in [`reset_after_fork`], so an app's own child processes are
/// none of this.
pub fn watch_child_exits() -> io::Result<ChildExitWatch> {
    if CHILD_EXITED.rd.load(Ordering::Relaxed) < 0 {
        CHILD_EXITED.reset()?;
    }
    // SAFETY: installing a handler that only raises a flag. SA_RESTART keeps other
    // calls going; SA_NOCLDSTOP: a stopped worker is not an exited one.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_child_exit as *const () as usize;
        sa.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut before: libc::sigaction = std::mem::zeroed();
        cvt(libc::sigaction(libc::SIGCHLD, &sa, &mut before))?;
        if before.sa_sigaction != on_child_exit as *const () as usize {
            let _ = SIGCHLD_BEFORE.set(before);
        }
    }
    Ok(ChildExitWatch(()))
}

/// The prefork parent's sleep: until a worker exits (with [`watch_child_exits`]
/// installed), a shutdown is requested, or `timeout` passes. Lowers the exit flag, so
/// the caller reaps after each return.
pub fn wait_for_child_exit(timeout: Duration) -> io::Result<()> {
    let rd = CHILD_EXITED.rd.load(Ordering::Relaxed);
    if !CHILD_EXITED.raised.swap(false, Ordering::AcqRel) {
        wait_for(-1, 0, Some(timeout), Watch::Drain, rd)?;
        CHILD_EXITED.raised.store(false, Ordering::Release);
    }
    if rd >= 0 {
        // Empty the pipe (non-blocking): an exit after this read raises it again.
        let mut buf = [0u8; 64];
        // SAFETY: reading into a local buffer from our own pipe.
        while unsafe { libc::read(rd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
    Ok(())
}

/// Threads blocked in [`Socket::idle_read`]: woken with a signal when a shutdown is
/// requested. 0 is a free slot.
static IDLE_THREADS: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

/// A thread's registration as an idle reader; removed on drop.
struct IdleSlot(usize);

impl IdleSlot {
    fn take() -> Option<IdleSlot> {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() } as u64;
        IDLE_THREADS
            .iter()
            .position(|s| {
                s.compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
            .map(IdleSlot)
    }
}

impl Drop for IdleSlot {
    fn drop(&mut self) {
        IDLE_THREADS[self.0].store(0, Ordering::Release);
    }
}

/// The signal that interrupts an idle reader's `recv` (its handler does nothing and is
/// installed without SA_RESTART). A real-time signal the C library leaves free.
fn wake_signal() -> libc::c_int {
    libc::SIGRTMIN() + 5
}

thread_local! {
    /// The socket this thread is blocked on in [`Socket::idle_read`], or -1.
    static IDLE_FD: Cell<RawFd> = const { Cell::new(-1) };
}

/// The wake-up signal's handler, on the thread it was sent to: a thread about to
/// block (or blocked) in an idle `recv` gets its socket's reading side shut, so that
/// `recv` returns at once even if the signal came before it started. Only that thread
/// uses the descriptor, so it cannot be closed or reused meanwhile.
extern "C" fn on_wake(_: libc::c_int) {
    let fd = IDLE_FD.get();
    if fd >= 0 && DRAIN.is_raised() {
        // SAFETY: shutdown is async-signal-safe; errno is saved and restored.
        unsafe {
            let errno = *libc::__errno_location();
            libc::shutdown(fd, libc::SHUT_RD);
            *libc::__errno_location() = errno;
        }
    }
}

/// Raised by [`ask_idle_readers_to_park`]; an idle read that an interruption finds
/// changed returns `TimedOut`.
static PARK_ASKED: AtomicU64 = AtomicU64::new(0);

/// Interrupts the threads blocked on an idle kept-alive connection, so each looks
/// whether to give its thread to a connection that waits (the pool's watch calls it,
/// 4 times a second at most). A read the signal misses (it lands just before the
/// `recv`) is asked again at the next look.
pub fn ask_idle_readers_to_park() {
    PARK_ASKED.fetch_add(1, Ordering::AcqRel);
    wake_idle_readers();
}

/// Interrupts every idle reader. Async-signal-safe (atomic loads and pthread_kill).
fn wake_idle_readers() {
    for s in &IDLE_THREADS {
        let t = s.load(Ordering::Acquire);
        if t != 0 {
            // SAFETY: the thread registered itself and unregisters before it exits; a
            // stale id at worst signals a thread that ignores it.
            unsafe { libc::pthread_kill(t as libc::pthread_t, wake_signal()) };
        }
    }
}

/// Milliseconds of `CLOCK_MONOTONIC_COARSE` (the kernel's tick-granular clock, read
/// from the vDSO without a system call or a TSC read): for checks that run on every
/// request but only need to know roughly when.
pub fn coarse_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

/// Shutdown requested: finish what is in flight, close idle connections, exit 0.
pub static DRAIN: Flag = Flag::new();
/// Stop accepting connections (at once under a web server; after the handover
/// window in a standalone server that owns its socket).
pub static ACCEPT: Flag = Flag::new();
static SHUTDOWN_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// True once a shutdown has been requested by a signal or by `request_shutdown`.
pub fn shutdown_requested() -> bool {
    DRAIN.is_raised()
}

/// Once stopping, how long a lingering close of a request not read to its end still
/// waits for the peer: long enough for it to read the response, short enough not to
/// hold the exit.
pub const STOP_LINGER: Duration = Duration::from_millis(200);

/// Once stopping, the deadline of a request head still arriving (due by `by`): 1 s
/// from now at most, so a stalled peer cannot hold the exit (mod_fcgid kills 3 s after
/// SIGTERM) while a web server's head, sent at once, still arrives.
pub fn stop_grace(by: Option<Instant>) -> Instant {
    let grace = Instant::now() + Duration::from_secs(1);
    by.map_or(grace, |d| d.min(grace))
}

/// What a prefork parent and its workers share, in a page of memory mapped before the
/// first fork (zero-filled: not stopping, no ends counted).
#[repr(C)]
struct SharedWithWorkers {
    /// The parent is stopping.
    stopping: AtomicBool,
    /// Workers that have ended on their own after serving at least one request
    /// (max-requests): how the parent tells such an exit from a worker that exits 0
    /// without ever serving (an app that ends its process as a worker starts), which
    /// would otherwise be forked again as fast as it exits.
    ends_after_serving: AtomicU64,
}

/// The page shared with forked worker processes (null until the parent sets it up).
static SHARED: AtomicPtr<SharedWithWorkers> = AtomicPtr::new(std::ptr::null_mut());

/// The shared page, when this process is a prefork parent or worker.
fn shared() -> Option<&'static SharedWithWorkers> {
    let p = SHARED.load(Ordering::Acquire);
    // SAFETY: set up by share_stopping_with_workers, zero-filled (a valid value of the
    // struct, whose fields are atomics) and never unmapped.
    unsafe { p.as_ref() }
}

/// Prefork parent, before forking: sets up the page its workers will share.
pub fn share_stopping_with_workers() -> io::Result<()> {
    const _: () = assert!(std::mem::size_of::<SharedWithWorkers>() <= 4096);
    // SAFETY: a fresh anonymous shared mapping of one page, zero-filled, never
    // unmapped: the pointer stays valid in the parent and every child.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    SHARED.store(p.cast(), Ordering::Release);
    Ok(())
}

/// Prefork parent, stopping: its workers now say they are draining when a new server
/// asks, so it takes the socket over at once while they finish what they have.
pub fn tell_workers_stopping() {
    if let Some(s) = shared() {
        s.stopping.store(true, Ordering::Release);
    }
}

/// A prefork worker about to end on its own, after serving `served` requests: counted
/// for the parent when there was at least one (see [`worker_ends_after_serving`]).
pub fn note_worker_end(served: u64) {
    if let Some(s) = shared().filter(|_| served > 0) {
        s.ends_after_serving.fetch_add(1, Ordering::AcqRel);
    }
}

/// Prefork parent: how many workers have ended after serving (a count that a worker
/// raises before it exits, so it is up to date once the worker is reaped).
pub fn worker_ends_after_serving() -> u64 {
    shared().map_or(0, |s| s.ends_after_serving.load(Ordering::Acquire))
}

/// What a probing server is told: this process (or, for a prefork worker, its
/// parent) is shutting down.
pub fn draining() -> bool {
    shutdown_requested() || shared().is_some_and(|s| s.stopping.load(Ordering::Acquire))
}

/// The signal that asked for shutdown, if one did.
pub fn shutdown_signal() -> Option<libc::c_int> {
    match SHUTDOWN_SIGNAL.load(Ordering::Relaxed) {
        0 => None,
        s => Some(s),
    }
}

/// Asks every worker to exit after its request in flight.
pub fn request_shutdown() {
    arm_stop_deadline();
    DRAIN.raise();
    wake_idle_readers();
}

/// Seconds a stop may take before the process exits without its requests in flight
/// (0: no limit), and whether that clock is running.
static STOP_DEADLINE_SECS: AtomicU32 = AtomicU32::new(0);
/// What a worker process starts from (see `extend_stop_deadline`).
static STOP_DEADLINE_BASE: AtomicU32 = AtomicU32::new(0);
static STOP_DEADLINE_ARMED: AtomicBool = AtomicBool::new(false);
/// The line said when the deadline passes, made before any signal can come (the
/// handler may only `write` it): the program's name before the pid, and the rest
/// after it, remade when the deadline is extended so that it names the interval the
/// clock runs for. Each tail is leaked (a few made per process), so a pointer once
/// published stays valid.
static STOP_DEADLINE_HEAD: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
static STOP_DEADLINE_TAIL: AtomicPtr<Vec<u8>> = AtomicPtr::new(std::ptr::null_mut());
/// The tail for FCGI_STOP_TIMEOUT alone: a worker process's own clock.
static STOP_DEADLINE_BASE_TAIL: AtomicPtr<Vec<u8>> = AtomicPtr::new(std::ptr::null_mut());
/// What `extend_stop_deadline` added: the restart window, and a prefork parent's margin.
static STOP_DEADLINE_WINDOW: AtomicU32 = AtomicU32::new(0);
static STOP_DEADLINE_MARGIN: AtomicU32 = AtomicU32::new(0);

/// What the deadline's line says after the pid: the whole interval, and what it is
/// made of when more than FCGI_STOP_TIMEOUT.
fn stop_deadline_tail(base: u32, window: u32, margin: u32) -> Vec<u8> {
    let total = base.saturating_add(window).saturating_add(margin);
    // Integers only: formatting a float here would link float printing into every
    // program (26 KB of the binary).
    let why = if window == 0 && margin == 0 {
        "(FCGI_STOP_TIMEOUT)".to_owned()
    } else {
        let mut parts = Vec::new();
        if window > 0 {
            parts.push(format!("the {window}s restart window"));
        }
        if margin > 0 {
            parts.push(format!("{margin}s for the workers to stop first"));
        }
        format!("({} and FCGI_STOP_TIMEOUT={base})", parts.join(", "))
    };
    format!(
        "]: ERROR: requests still running {total}s after the stop began {why}; exiting without them\n"
    )
    .into_bytes()
}

fn publish_tail(slot: &AtomicPtr<Vec<u8>>, tail: Vec<u8>) {
    slot.store(Box::into_raw(Box::new(tail)), Ordering::Release);
}

/// Sets how long a stop may take (`FCGI_STOP_TIMEOUT`; a standalone server adds its
/// restart window with `extend_stop_deadline`) and installs the handler that ends the
/// process when it is over.
pub fn set_stop_deadline(timeout: Option<Duration>, program: &str) -> io::Result<()> {
    let Some(t) = timeout else {
        return Ok(());
    };
    let secs = t.as_secs_f64().ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
    let _ = STOP_DEADLINE_HEAD.set(format!("{program}[").into_bytes());
    publish_tail(&STOP_DEADLINE_TAIL, stop_deadline_tail(secs, 0, 0));
    publish_tail(&STOP_DEADLINE_BASE_TAIL, stop_deadline_tail(secs, 0, 0));
    STOP_DEADLINE_SECS.store(secs, Ordering::Relaxed);
    STOP_DEADLINE_BASE.store(secs, Ordering::Relaxed);
    // SAFETY: installing a handler that only does async-signal-safe work.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_stop_deadline as *const () as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        cvt(libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()))?;
    }
    Ok(())
}

/// `run` has returned: what the process does from here (an app's own clean-up after
/// `run`, its runtime's end) is the app's, so a stop's clock that is running is
/// stopped, and none starts later.
pub fn end_stop_deadline() {
    STOP_DEADLINE_SECS.store(0, Ordering::Relaxed);
    if STOP_DEADLINE_ARMED.load(Ordering::Relaxed) {
        // SAFETY: alarm(0) only cancels a pending alarm.
        unsafe { libc::alarm(0) };
    }
}

/// Starts the stop's clock, once (async-signal-safe: an atomic swap and `alarm`).
fn arm_stop_deadline() {
    let secs = STOP_DEADLINE_SECS.load(Ordering::Relaxed);
    if secs > 0 && !STOP_DEADLINE_ARMED.swap(true, Ordering::Relaxed) {
        // SAFETY: alarm is async-signal-safe.
        unsafe { libc::alarm(secs) };
    }
}

extern "C" fn on_stop_deadline(_sig: libc::c_int) {
    // SAFETY: only async-signal-safe calls: getpid, write, _exit; the line's parts
    // were made before the handler was installed or the clock started, and a tail once
    // published is never changed or freed.
    unsafe {
        let tail = STOP_DEADLINE_TAIL.load(Ordering::Acquire);
        if let (Some(head), Some(tail)) = (STOP_DEADLINE_HEAD.get(), tail.as_ref()) {
            let mut pid = [0u8; 12];
            let mut i = pid.len();
            let mut n = libc::getpid() as u32;
            loop {
                i -= 1;
                pid[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            for part in [&head[..], &pid[i..], &tail[..]] {
                libc::write(2, part.as_ptr().cast(), part.len());
            }
        }
        libc::_exit(1);
    }
}

/// Why a stop gets more time than FCGI_STOP_TIMEOUT.
#[derive(Debug, Clone, Copy)]
pub enum StopExtra {
    /// A standalone server's restart window (it still accepts then).
    RestartWindow,
    /// A prefork parent's margin, so its workers, each with its own clock, say what
    /// was cut short and the parent then ends as usual.
    WorkerMargin,
}

/// More time for this process's stop, not for the worker processes it forks; the
/// line said when it is over names the whole interval.
pub fn extend_stop_deadline(secs: u32, why: StopExtra) {
    let cur = STOP_DEADLINE_SECS.load(Ordering::Relaxed);
    // Once the clock runs (a stop during start-up) its interval is set, and so is what
    // the line says.
    if cur == 0 || STOP_DEADLINE_ARMED.load(Ordering::Relaxed) {
        return;
    }
    STOP_DEADLINE_SECS.store(cur.saturating_add(secs), Ordering::Relaxed);
    let slot = match why {
        StopExtra::RestartWindow => &STOP_DEADLINE_WINDOW,
        StopExtra::WorkerMargin => &STOP_DEADLINE_MARGIN,
    };
    slot.fetch_add(secs, Ordering::Relaxed);
    publish_tail(
        &STOP_DEADLINE_TAIL,
        stop_deadline_tail(
            STOP_DEADLINE_BASE.load(Ordering::Relaxed),
            STOP_DEADLINE_WINDOW.load(Ordering::Relaxed),
            STOP_DEADLINE_MARGIN.load(Ordering::Relaxed),
        ),
    );
}

/// In a child after fork: its own stop clock (an alarm is not inherited).
fn reset_stop_deadline_after_fork() {
    STOP_DEADLINE_ARMED.store(false, Ordering::Relaxed);
    STOP_DEADLINE_SECS.store(
        STOP_DEADLINE_BASE.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    STOP_DEADLINE_WINDOW.store(0, Ordering::Relaxed);
    STOP_DEADLINE_MARGIN.store(0, Ordering::Relaxed);
    STOP_DEADLINE_TAIL.store(
        STOP_DEADLINE_BASE_TAIL.load(Ordering::Acquire),
        Ordering::Release,
    );
}

extern "C" fn on_signal(sig: libc::c_int) {
    // SAFETY: only async-signal-safe calls: errno save/restore, write, _exit.
    unsafe {
        let errno = *libc::__errno_location();
        if sig == libc::SIGINT && SHUTDOWN_SIGNAL.load(Ordering::Relaxed) == libc::SIGINT {
            // A second Ctrl-C: the user means it. (Not a first one that comes while
            // stopping for another reason, SIGTERM or max-requests: that one drains.)
            libc::_exit(130);
        }
        SHUTDOWN_SIGNAL.store(sig, Ordering::Relaxed);
        arm_stop_deadline();
        DRAIN.raise();
        wake_idle_readers();
        *libc::__errno_location() = errno;
    }
}

/// Creates the flags' pipes and installs the handlers for SIGTERM (mod_fcgid,
/// lighttpd, systemd, `kill`), SIGUSR1 (Apache's graceful convention) and SIGINT
/// (Ctrl-C). Each asks for a shutdown.
pub fn install_shutdown_handlers() -> io::Result<()> {
    for f in [&DRAIN, &ACCEPT] {
        if f.wr.load(Ordering::Relaxed) < 0 {
            let was = f.is_raised();
            f.reset()?;
            if was {
                f.raise();
            }
        }
    }
    for sig in [libc::SIGTERM, libc::SIGUSR1, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: installing a handler that only does async-signal-safe work; reading
        // the current disposition first.
        unsafe {
            if sig == libc::SIGHUP {
                // SIGHUP (a closed terminal, or a restart request as flup takes it)
                // stops us like SIGTERM, unless we were started with it ignored
                // (`nohup`), which stays so.
                let mut old: libc::sigaction = std::mem::zeroed();
                cvt(libc::sigaction(sig, std::ptr::null(), &mut old))?;
                if old.sa_sigaction == libc::SIG_IGN {
                    continue;
                }
            }
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            cvt(libc::sigaction(sig, &sa, std::ptr::null_mut()))?;
        }
    }
    // SAFETY: a handler that does nothing; no SA_RESTART, so it interrupts `recv`.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_wake as *const () as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        cvt(libc::sigaction(wake_signal(), &sa, std::ptr::null_mut()))?;
    }
    Ok(())
}

/// In a child after fork: fresh, lowered flags, so a signal to the parent does not
/// reach the child through the shared pipes.
pub fn reset_after_fork() -> io::Result<()> {
    SHUTDOWN_SIGNAL.store(0, Ordering::Relaxed);
    reset_stop_deadline_after_fork();
    if CHILD_EXITED.rd.load(Ordering::Relaxed) >= 0 {
        // A prefork worker: its own children (an app's `Command`) are its own business.
        restore_sigchld();
        for fd in [&CHILD_EXITED.rd, &CHILD_EXITED.wr] {
            let fd = fd.swap(-1, Ordering::AcqRel);
            // SAFETY: the parent's pipe, which this process has no use for.
            unsafe { libc::close(fd) };
        }
    }
    for s in &IDLE_THREADS {
        s.store(0, Ordering::Relaxed);
    }
    DRAIN.reset()?;
    ACCEPT.reset()
}

/// Our executable's path, read once: `/proc/self/exe` costs a path walk per read,
/// and start-up (the settings file, the logger's prefix, the mount check, the
/// replaced-binary watch) needs it four times, which a CGI request pays on every hit.
/// Read before anything could replace the file, it names the file we started from.
pub fn current_exe() -> Option<&'static std::path::Path> {
    static EXE: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    EXE.get_or_init(|| std::env::current_exe().ok()).as_deref()
}

/// The path we were started by when it is a symlink to our executable (a deploy that
/// points `public_html/mysite.fcgi` at `releases/v2/app`, and switches it with
/// `ln -sfn`): `argv[0]`, which the web server sets to the script's absolute path.
/// Otherwise [`current_exe`]. Its name is the script's (for the mount path), the
/// settings file is beside it, and the binary watch follows it, so switching the link
/// counts as a new upload.
pub fn invoked_exe() -> Option<&'static std::path::Path> {
    static INVOKED: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    INVOKED
        .get_or_init(|| {
            let exe = current_exe()?;
            let mut arg0 = std::path::PathBuf::from(std::env::args_os().next()?);
            // Started by hand as `./mysite.fcgi` (a web server gives the absolute
            // path); a bare name was looked up in PATH, and is not a path here.
            if arg0.is_relative() && arg0.components().count() > 1 {
                if let Ok(cwd) = std::env::current_dir() {
                    arg0 = cwd.join(arg0);
                }
            }
            let is_link = arg0.is_absolute()
                && std::fs::symlink_metadata(&arg0).is_ok_and(|m| m.file_type().is_symlink());
            if is_link && std::fs::canonicalize(&arg0).is_ok_and(|t| t == exe) {
                Some(arg0)
            } else {
                Some(exe.to_path_buf())
            }
        })
        .as_deref()
}

/// The file name we were started by (`mysite.fcgi`), lossily as UTF-8.
pub fn exe_file_name() -> Option<String> {
    invoked_exe()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
}

/// Resets SIGPIPE to "ignore": a web server that closes early must be an `EPIPE`
/// on our side, whatever the app did to the disposition.
pub fn ignore_sigpipe() {
    // SAFETY: setting a disposition to SIG_IGN.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

#[cfg_attr(not(feature = "tower"), allow(dead_code))]
/// A non-blocking look at a stream socket: closed by the peer (`Gone`), nothing to
/// read (`Drained`), or data waiting for whoever reads it (`Stuck`).
pub fn peek_check(fd: RawFd) -> crate::response::Check {
    use crate::response::Check;
    let mut b = [0u8; 1];
    // SAFETY: recv into a one-byte buffer we own.
    let n = unsafe {
        libc::recv(
            fd,
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 if only_half_closed(fd) => Check::HalfClosed,
        0 => Check::Gone,
        n if n > 0 => Check::Stuck,
        _ => match io::Error::last_os_error().kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Check::Drained,
            _ => Check::Gone,
        },
    }
}

/// True when fd is a terminal.
pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the fd.
    unsafe { libc::isatty(fd) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_deadline_line_names_the_whole_interval() {
        let line = |b, w, m| String::from_utf8(stop_deadline_tail(b, w, m)).unwrap();
        assert_eq!(
            line(30, 0, 0),
            "]: ERROR: requests still running 30s after the stop began (FCGI_STOP_TIMEOUT); exiting without them\n"
        );
        assert_eq!(
            line(1, 2, 0),
            "]: ERROR: requests still running 3s after the stop began (the 2s restart window and FCGI_STOP_TIMEOUT=1); exiting without them\n"
        );
        assert!(
            line(1, 2, 2).contains(
                "5s after the stop began (the 2s restart window, 2s for the workers to stop first and FCGI_STOP_TIMEOUT=1)"
            ),
            "{}",
            line(1, 2, 2)
        );
    }
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn the_lot_hands_back_a_connection_once_it_has_something_to_read() {
        use std::io::{Read, Write};
        let lot = ParkLot::new(2).unwrap();
        assert!(lot.is_empty() && lot.claim().is_none());
        let (ours1, mut peer1) = UnixStream::pair().unwrap();
        let (ours2, mut peer2) = UnixStream::pair().unwrap();
        let (ours3, mut peer3) = UnixStream::pair().unwrap();
        lot.park(OwnedFd::from(ours1)).unwrap();
        lot.park(OwnedFd::from(ours2)).unwrap();
        // Nothing to read on either yet.
        assert!(!lot.has_ready() && lot.claim().is_none());
        peer1.write_all(b"next").unwrap();
        assert!(lot.has_ready());
        // Full: the one parked longest with nothing to read (the second: the first has
        // a request) is closed to make room for the third.
        std::thread::sleep(Duration::from_millis(20));
        let mut buf = [0u8; 8];
        lot.park(OwnedFd::from(ours3)).unwrap();
        assert_eq!(peer2.read(&mut buf).unwrap(), 0, "the second was closed");
        let s = lot.claim().expect("the connection with a request");
        assert_eq!(s.read(&mut buf).unwrap(), 4);
        // Taken once only; the third still waits.
        assert!(lot.claim().is_none() && !lot.is_empty());
        // Idle past a limit of 0 with nothing to read: closed; one whose request has
        // come stays, to be served.
        let (ours5, mut peer5) = UnixStream::pair().unwrap();
        lot.park(OwnedFd::from(ours5)).unwrap();
        peer5.write_all(b"req").unwrap();
        assert_eq!(lot.close_idle(Duration::ZERO), 1);
        assert_eq!(peer3.read(&mut buf).unwrap(), 0, "the third was closed");
        assert!(lot.claim().is_some());
        assert!(lot.is_empty());
        // Full of connections that all have a request waiting: refused.
        let full = ParkLot::new(1).unwrap();
        let (a, mut pa) = UnixStream::pair().unwrap();
        full.park(OwnedFd::from(a)).unwrap();
        pa.write_all(b"x").unwrap();
        let (b, _pb) = UnixStream::pair().unwrap();
        assert!(full.park(OwnedFd::from(b)).is_err());
        // close_all closes what is left: the peer reads the end.
        let (ours4, mut peer4) = UnixStream::pair().unwrap();
        lot.park(OwnedFd::from(ours4)).unwrap();
        lot.close_all();
        assert!(lot.is_empty());
        assert_eq!(peer4.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn spinning_reads_the_running_tasks_and_backs_off_after_misses() {
        assert_eq!(running_tasks(b"0.52 0.58 0.59 2/345 1234\n"), Some(2));
        assert_eq!(running_tasks(b"10.07 5.95 6.94 11/80 5128"), Some(11));
        assert_eq!(running_tasks(b"0.52 0.58 0.59"), None);
        assert_eq!(running_tasks(b"a b c x/1 2"), None);

        let mut b = Backoff::default();
        assert!(!b.skip(), "the first spin is taken");
        // Misses in a row leave out 1, 2, 4 ... then 64 spins each time.
        let mut left_out = Vec::new();
        for _ in 0..8 {
            b.missed();
            let mut n = 0;
            while b.skip() {
                n += 1;
            }
            left_out.push(n);
        }
        assert_eq!(left_out, [1, 2, 4, 8, 16, 32, 64, 64]);
        b.missed();
        b.found();
        assert!(!b.skip(), "a find takes the next spin at once");
        b.missed();
        assert!(b.skip());
        assert!(!b.skip(), "after a find, a miss starts at 1 again");
    }

    /// The linger set watches the listener the thread serves now: a thread that
    /// serves another listener later gets a set for that one.
    #[test]
    fn the_linger_set_follows_the_thread_listener() {
        std::thread::spawn(|| {
            if DRAIN.rd.load(Ordering::Acquire) < 0 {
                DRAIN.reset().unwrap();
            }
            let dir = std::env::temp_dir().join(format!("fcgi-shim-linger-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let (pa, pb) = (dir.join("a.sock"), dir.join("b.sock"));
            let _ = std::fs::remove_file(&pa);
            let _ = std::fs::remove_file(&pb);
            let (a, b) = (
                UnixListener::bind(&pa).unwrap(),
                UnixListener::bind(&pb).unwrap(),
            );
            let ready = |ep: RawFd| {
                let mut evs = [libc::epoll_event { events: 0, u64: 9 }; 2];
                // SAFETY: evs has room for the 2 events asked for.
                let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 2, 0) };
                evs[..n.max(0) as usize]
                    .iter()
                    .map(|e| e.u64)
                    .collect::<Vec<_>>()
            };
            set_thread_listener(a.as_raw_fd());
            let ep = linger_set().expect("a linger set");
            assert_eq!(linger_set(), Some(ep), "made once per listener");
            let _c = UnixStream::connect(&pa).unwrap();
            assert_eq!(ready(ep), [LINGER_LISTENER]);
            set_thread_listener(b.as_raw_fd());
            let ep = linger_set().expect("a linger set");
            assert_eq!(ready(ep), Vec::<u64>::new(), "the new set watches a");
            let _d = UnixStream::connect(&pb).unwrap();
            assert_eq!(ready(ep), [LINGER_LISTENER]);
            let _ = std::fs::remove_dir_all(&dir);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_spin_sees_what_is_ready_and_gives_up_after_its_time() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let fds = [(b.as_raw_fd(), libc::POLLIN)];
        let t = Instant::now();
        assert!(!spin_poll(&fds, Duration::from_micros(300), || true));
        assert!(t.elapsed() >= Duration::from_micros(300));
        std::io::Write::write_all(&mut a, b"x").unwrap();
        assert!(spin_poll(&fds, Duration::from_micros(300), || true));
        // A CPU wanted elsewhere ends the spin at its first recheck.
        let (_e, f) = UnixStream::pair().unwrap();
        let t = Instant::now();
        let mut asked = 0;
        let ended = !spin_poll(
            &[(f.as_raw_fd(), libc::POLLIN)],
            Duration::from_secs(5),
            || {
                asked += 1;
                false
            },
        );
        assert!(ended && asked == 1 && t.elapsed() < Duration::from_secs(1));
        // Two descriptors: the second one ready is enough; -1 is left out.
        let (c, _d) = UnixStream::pair().unwrap();
        assert!(spin_poll(
            &[(c.as_raw_fd(), libc::POLLIN), (b.as_raw_fd(), libc::POLLIN)],
            Duration::from_micros(300),
            || true
        ));
        assert!(!spin_poll(
            &[(c.as_raw_fd(), libc::POLLIN), (-1, libc::POLLIN)],
            Duration::from_micros(300),
            || true
        ));
    }

    #[test]
    fn listener_detection() {
        let dir = std::env::temp_dir().join(format!("fcgi-shim-sys-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("s");
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        assert!(is_listening_socket(l.as_raw_fd()));
        let c = UnixStream::connect(&path).unwrap();
        assert!(!is_listening_socket(c.as_raw_fd()));
        // an unbound, unconnected socket: getpeername says ENOTCONN, but it is not listening
        let raw = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
        let unbound = unsafe { OwnedFd::from_raw_fd(raw) };
        assert!(!is_listening_socket(unbound.as_raw_fd()));
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(!is_listening_socket(f.as_raw_fd()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The race an idle reader must survive: the wake-up signal lands after the
    /// thread looked at the shutdown flag and before it entered `recv`. Played out in a
    /// child process (the flag is process-wide); the handler is called where the signal
    /// would land. A 3 s alarm kills the child if `recv` blocks.
    #[test]
    fn a_wake_up_just_before_the_recv_still_ends_it() {
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        // SAFETY: the child only makes async-signal-safe calls and atomic stores, then
        // _exits; the parent waits for it.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                libc::alarm(3);
                DRAIN.wr.store(-1, Ordering::Relaxed);
                IDLE_FD.set(fd);
                // The flag was still down when the reader looked, then the signal came:
                DRAIN.raise();
                on_wake(wake_signal());
                let mut buf = [0u8; 16];
                let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                libc::_exit(if n == 0 { 0 } else { 1 });
            }
            let mut st = 0;
            assert_eq!(libc::waitpid(pid, &mut st, 0), pid);
            assert!(
                libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
                "the recv blocked or read data: status {st:#x}"
            );
        }
    }
}
