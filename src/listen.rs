// Listening sockets a standalone server opens itself: a Unix socket path (stale files
// replaced, live servers refused, a draining one taken over without a gap), a TCP
// address, or the socket systemd passed; and the FCGI_WEB_SERVER_ADDRS filter.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::record::{self, RecordType};
use crate::sys::{self, Listener};

/// The GET_VALUES name a fcgi-shim server answers with "1" while it is shutting down
/// and "0" while it serves: a new server uses it to tell a restart (take over the
/// socket) from a mistake (two servers on one socket).
pub(crate) const DRAINING_VAR: &[u8] = b"FCGI_SHIM_DRAINING";

/// A listener we opened, and what to clean up when we stop.
pub(crate) struct Bound {
    pub listener: Listener,
    pub file: SocketFile,
}

/// The socket file we created and its identity: removed at exit if still ours, and
/// watched during a restart to see a new server take it over. Empty for TCP.
#[derive(Debug, Clone, Default)]
pub(crate) struct SocketFile {
    pub path: Option<(PathBuf, (u64, u64))>,
}

impl SocketFile {
    /// True while the socket file still is the one we bound (no new server has
    /// renamed its own over it).
    pub fn is_ours(&self) -> bool {
        match &self.path {
            Some((p, id)) => file_ident(p) == Some(*id),
            None => true,
        }
    }

    /// Removes our socket file, unless another server has replaced it.
    pub fn remove_if_ours(&self) {
        if let Some((p, _)) = &self.path {
            if self.is_ours() {
                let _ = fs::remove_file(p);
            }
        }
    }
}

fn file_ident(p: &Path) -> Option<(u64, u64)> {
    fs::symlink_metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// `--listen` values: `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT`, or a bare `PORT`,
/// which means 127.0.0.1 — never every interface by surprise. Addresses, not host
/// names: a listener binds an interface (and resolving names would pull the whole
/// name-service machinery into a static binary). `name` is the option or variable the
/// value came from (`--http`, `FCGI_LISTEN`, flup's `port`), for the error.
pub(crate) fn parse_listen(name: &str, s: &str) -> Result<SocketAddr, Error> {
    let bad = || {
        Error::setting(
            name,
            s,
            "IP:PORT, [IPv6]:PORT, localhost:PORT or a port number",
        )
    };
    let s = s.trim();
    // A bare port, or `:PORT` (one colon: `::1` is an address, not port 1).
    if let Ok(port) = s.strip_prefix(':').unwrap_or(s).parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        return port
            .parse::<u16>()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .map_err(|_| bad());
    }
    s.parse::<SocketAddr>().map_err(|_| bad())
}

/// `FCGI_WEB_SERVER_ADDRS`: comma-separated IPv4/IPv6 addresses allowed to connect;
/// at least one (an empty list would refuse every connection).
pub(crate) fn parse_addrs(s: &str) -> Result<Vec<IpAddr>, Error> {
    let addrs = parse_addr_list(s)?;
    if addrs.is_empty() {
        return Err(Error::setting(
            "FCGI_WEB_SERVER_ADDRS",
            s,
            "comma-separated IP addresses, at least one, e.g. 127.0.0.1,::1",
        ));
    }
    Ok(addrs)
}

fn parse_addr_list(s: &str) -> Result<Vec<IpAddr>, Error> {
    s.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .map_err(|_| {
                    Error::setting(
                        "FCGI_WEB_SERVER_ADDRS",
                        s,
                        "comma-separated IP addresses, e.g. 127.0.0.1,::1",
                    )
                })
        })
        .collect()
}

/// Whether `peer` is in `allowed` (an IPv4 peer on an IPv6 socket counts as IPv4).
pub(crate) fn addr_allowed(allowed: &[IpAddr], peer: IpAddr) -> bool {
    let canon = |a: IpAddr| match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        a => a,
    };
    let peer = canon(peer);
    allowed.iter().any(|&a| canon(a) == peer)
}

/// What is at an address already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Occupant {
    /// Nobody listens (a stale socket file, or a free port).
    Nobody,
    /// A fcgi-shim server that is shutting down: take over.
    Draining,
    /// A fcgi-shim server that is serving.
    Serving,
    /// Something else answers there.
    Other,
}

fn probe_stream(mut s: impl Read + Write) -> Occupant {
    let mut q = Vec::new();
    record::push_pair(&mut q, DRAINING_VAR, b"");
    let mut rec = Vec::new();
    record::push_record(&mut rec, RecordType::GetValues, 0, &q);
    if s.write_all(&rec).is_err() {
        return Occupant::Other;
    }
    let mut h = [0u8; 8];
    if s.read_exact(&mut h).is_err() {
        return Occupant::Other;
    }
    let h = record::Header::parse(&h);
    if h.version != record::VERSION_1 || h.record_type != RecordType::GetValuesResult {
        return Occupant::Other;
    }
    let mut body = vec![0u8; h.body_len()];
    if s.read_exact(&mut body).is_err() {
        return Occupant::Other;
    }
    let content = &body[..h.content_length as usize];
    let mut found = Occupant::Other;
    let _ = record::parse_pairs(content, |p| {
        if &content[p.name.0..p.name.1] == DRAINING_VAR {
            found = if &content[p.value.0..p.value.1] == b"1" {
                Occupant::Draining
            } else {
                Occupant::Serving
            };
        }
        true
    });
    found
}

fn probe_unix(path: &Path) -> Occupant {
    match UnixStream::connect(path) {
        Ok(s) => {
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
            probe_stream(s)
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
            ) =>
        {
            Occupant::Nobody
        }
        Err(_) => Occupant::Other,
    }
}

fn probe_tcp(addr: SocketAddr) -> Occupant {
    let target = match addr.ip() {
        // A wildcard bind is reached through loopback.
        IpAddr::V4(v) if v.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        IpAddr::V6(v) if v.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    };
    match TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
        Ok(s) => {
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
            probe_stream(s)
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Occupant::Nobody,
        Err(_) => Occupant::Other,
    }
}

/// Looks at what occupies an address; a serving fcgi-shim gets a moment to notice the
/// signal that a restart script sent it just before starting us.
fn occupant(mut probe: impl FnMut() -> Occupant) -> Occupant {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let o = probe();
        if o != Occupant::Serving || Instant::now() >= deadline {
            return o;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Binds a Unix socket at `path`. A stale socket file (nobody listening) is replaced;
/// a fcgi-shim server that is shutting down is taken over (our socket is renamed over
/// its file, so no connection attempt finds the path missing); anything live is
/// refused with an error naming the path. The file's mode follows the process umask.
pub(crate) fn bind_unix(path: &Path) -> Result<Bound, Error> {
    let name = format!("unix:{}", path.display());
    let max = max_socket_path();
    if path.as_os_str().len() > max {
        return Err(Error::io(
            "binding the socket",
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: a socket path holds at most {max} bytes and this one has {}; choose a shorter --socket",
                    path.display(),
                    path.as_os_str().len()
                ),
            ),
        ));
    }
    // From the look at the path to the rename into place, no other fcgi-shim binds in
    // this directory (released when this returns).
    let _lock = lock_dir(path);
    match fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(Error::setting(
                "--socket",
                path.display().to_string(),
                "a path that is free or holds a socket (it holds another kind of file)",
            ));
        }
        Ok(_) => match occupant(|| probe_unix(path)) {
            Occupant::Nobody | Occupant::Draining => {}
            Occupant::Serving | Occupant::Other => {
                return Err(Error::io(
                    "binding the socket",
                    io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "{} is in use by a running server; stop it first (kill $(cat PIDFILE)) or choose another --socket",
                            path.display()
                        ),
                    ),
                ));
            }
        },
        Err(_) => {}
    }
    let (l, tmp) = bind_beside(path)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("binding the socket", with_path(e, path)));
    }
    let id = file_ident(path).ok_or_else(|| {
        Error::io(
            "binding the socket",
            io::Error::other(format!("{} vanished", path.display())),
        )
    })?;
    let listener =
        Listener::from_owned(OwnedFd::from(l)).map_err(|e| Error::io("binding the socket", e))?;
    log::info!("listening on {name}");
    Ok(Bound {
        listener,
        file: SocketFile {
            path: Some((path.to_path_buf(), id)),
        },
    })
}

/// The longest path a Unix socket address holds (`sun_path` less its NUL): 107 bytes
/// on Linux, 103 on the BSDs and macOS.
fn max_socket_path() -> usize {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_path.len() - 1
}

/// Binds a socket beside `path` (in its directory), to be renamed over it: a client
/// connecting meanwhile finds the old socket or the new one, never no file. The name is
/// `<name>.<pid>.tmp` where that fits in a socket address; for a path near the limit,
/// a shorter name no longer than the path's own file name (`.<pid in base 36>` cut to
/// fit, or one character), found free by bind itself, which never replaces a file.
/// The directory lock keeps other fcgi-shims from binding here meanwhile.
fn bind_beside(path: &Path) -> Result<(UnixListener, PathBuf), Error> {
    let file_name = path.file_name().unwrap_or(OsStr::new("sock"));
    let mut long = file_name.to_os_string();
    long.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(&long);
    if tmp.as_os_str().len() <= max_socket_path() {
        let _ = fs::remove_file(&tmp);
        let l = UnixListener::bind(&tmp)
            .map_err(|e| Error::io("binding the socket", with_path(e, path)))?;
        return Ok((l, tmp));
    }
    // The path itself fits (checked by the caller), so a name as long as its file name
    // does too.
    let room = file_name.len().max(1);
    for tmp_name in short_tmp_names(std::process::id(), room) {
        if tmp_name.as_str() == file_name {
            continue;
        }
        let tmp = path.with_file_name(&tmp_name);
        match UnixListener::bind(&tmp) {
            Ok(l) => return Ok((l, tmp)),
            // Someone's file: leave it and try another name.
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(Error::io("binding the socket", with_path(e, path))),
        }
    }
    Err(Error::io(
        "binding the socket",
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{}: no free temporary name of {room} bytes beside it to bind before renaming into place; choose a shorter --socket",
                path.display()
            ),
        ),
    ))
}

/// Temporary file names of at most `room` bytes: `.<pid + i in base 36>` (its last
/// digits when it must be cut), or with one byte of room, single letters and digits.
fn short_tmp_names(pid: u32, room: usize) -> impl Iterator<Item = String> {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..DIGITS.len() as u32).map(move |i| {
        if room < 2 {
            return char::from(DIGITS[i as usize]).to_string();
        }
        let mut n = pid.wrapping_add(i);
        let mut digits = Vec::new();
        while digits.len() < room - 1 {
            digits.push(DIGITS[(n % 36) as usize]);
            n /= 36;
            if n == 0 {
                break;
            }
        }
        digits.push(b'.');
        digits.reverse();
        String::from_utf8_lossy(&digits).into_owned()
    })
}

/// An exclusive `flock` on the directory of a socket path, held (until the descriptor
/// is dropped) while a server looks at the path and binds it. Two servers started at
/// once on one path would otherwise both find it free, and the second's rename would
/// leave the first listening on a socket nobody can reach, serving nothing and saying
/// nothing. Locking the directory leaves no lock file behind; where it cannot be
/// locked (some network file systems), binding goes on as before.
fn lock_dir(socket: &Path) -> Option<OwnedFd> {
    let dir = match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let fd = OwnedFd::from(fs::File::open(dir).ok()?);
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Some(fd);
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return None;
        }
    }
}

fn with_path(e: io::Error, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

/// Binds a TCP listener (SO_REUSEADDR, and SO_REUSEPORT so a restarted server can
/// bind while the old one drains). A serving fcgi-shim on the port is refused.
pub(crate) fn bind_tcp(addr: SocketAddr) -> Result<Bound, Error> {
    let name = addr.to_string();
    match occupant(|| probe_tcp(addr)) {
        Occupant::Nobody | Occupant::Draining => {}
        Occupant::Serving => {
            return Err(Error::io(
                "binding the socket",
                io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{name} is in use by a running server; stop it first or choose another --listen"
                    ),
                ),
            ));
        }
        // Something else: let bind say what (it fails unless that program also asked
        // to share the port).
        Occupant::Other => {}
    }
    let fd = tcp_listener(addr).map_err(|e| {
        Error::io(
            "binding the socket",
            io::Error::new(e.kind(), format!("{name}: {e}")),
        )
    })?;
    // The address as bound: port 0 asks the system for a free port, and the log says
    // which.
    let std_listener = std::net::TcpListener::from(fd);
    let bound = std_listener.local_addr().map_or(name, |a| a.to_string());
    let listener = Listener::from_owned(OwnedFd::from(std_listener))
        .map_err(|e| Error::io("binding the socket", e))?;
    log::info!("listening on {bound}");
    Ok(Bound {
        listener,
        file: SocketFile::default(),
    })
}

fn tcp_listener(addr: SocketAddr) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket calls on a descriptor we own; the address structures are
    // fully initialised and sized as passed.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let one: libc::c_int = 1;
        for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                opt,
                (&raw const one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let r = match addr {
            SocketAddr::V4(a) => {
                let mut sa: libc::sockaddr_in = std::mem::zeroed();
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_port = a.port().to_be();
                sa.sin_addr.s_addr = u32::from(*a.ip()).to_be();
                libc::bind(
                    raw,
                    (&raw const sa).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(a) => {
                let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
                sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sa.sin6_port = a.port().to_be();
                sa.sin6_addr.s6_addr = a.ip().octets();
                sa.sin6_scope_id = a.scope_id();
                libc::bind(
                    raw,
                    (&raw const sa).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        };
        if r < 0 || libc::listen(raw, libc::SOMAXCONN) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }
}

/// The listener systemd passed (socket activation: `LISTEN_PID` is us and
/// `LISTEN_FDS` ≥ 1; the socket is fd 3). The variables are removed so the app's
/// child processes do not take them for their own.
pub(crate) fn systemd_listener() -> Option<Listener> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.trim().parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.trim().parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    if !sys::is_listening_socket(3) {
        // Said before the usual "not started by a web server": a socket unit with
        // `Accept=yes` passes a connection, not a listener.
        log::error!(
            "LISTEN_FDS is set for this process, but fd 3 is not a listening socket \
             (a socket unit needs Accept=no)"
        );
        return None;
    }
    // SAFETY: at start-up, before any thread of ours exists.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    // SAFETY: systemd hands us fd 3 as the first passed socket; we take ownership.
    let fd = unsafe { OwnedFd::from_raw_fd(3) };
    match Listener::from_owned(fd) {
        Ok(l) => Some(l),
        Err(e) => {
            log::error!("the socket systemd passed (fd 3) cannot be used: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_temporary_names_fit_their_room() {
        for room in 1..12 {
            let names: Vec<String> = short_tmp_names(4_194_303, room).collect();
            assert!(names.len() >= 30, "{room}");
            for n in &names {
                assert!(!n.is_empty() && n.len() <= room, "{room}: {n:?}");
                assert!(n != "." && n != ".." && !n.contains('/'), "{n:?}");
            }
            let distinct: std::collections::HashSet<_> = names.iter().collect();
            assert!(distinct.len() >= 30, "{room}: {names:?}");
        }
        assert_eq!(short_tmp_names(36, 8).next().as_deref(), Some(".10"));
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen("--listen", "9000").unwrap(),
            "127.0.0.1:9000".parse().unwrap()
        );
        assert_eq!(
            parse_listen("--listen", ":9000").unwrap(),
            "127.0.0.1:9000".parse().unwrap()
        );
        assert_eq!(
            parse_listen("--listen", "0.0.0.0:80").unwrap(),
            "0.0.0.0:80".parse().unwrap()
        );
        assert_eq!(
            parse_listen("--listen", "[::1]:9000").unwrap(),
            "[::1]:9000".parse().unwrap()
        );
        assert!(parse_listen("--listen", "nonsense:port").is_err());
        // An IPv6 address without a port is not "port 1 on 127.0.0.1".
        assert!(parse_listen("--listen", "::1").is_err());
        assert!(parse_listen("--listen", "::9000").is_err());
    }

    #[test]
    fn address_filter() {
        let allowed = parse_addrs("127.0.0.1, ::1,[fe80::1]").unwrap();
        assert!(addr_allowed(&allowed, "127.0.0.1".parse().unwrap()));
        assert!(addr_allowed(&allowed, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(addr_allowed(&allowed, "::1".parse().unwrap()));
        assert!(addr_allowed(&allowed, "fe80::1".parse().unwrap()));
        assert!(!addr_allowed(&allowed, "10.0.0.1".parse().unwrap()));
        assert!(parse_addrs("127.0.0.1,nope").is_err());
        // A list of nothing would refuse every connection.
        assert!(parse_addrs(",").is_err());
        assert!(parse_addrs(" ").is_err());
    }
}
