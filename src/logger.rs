// Our `log` backend: short prefixed lines on stderr (or syslog), and per-request capture
// so a FastCGI request's log lines reach the web server as FCGI_STDERR.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::sync::OnceLock;

use log::{LevelFilter, Log, Metadata, Record};

use crate::config::LogTarget;

struct Logger {
    prefix: String,
    target: LogTarget,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Caps what one request can queue for FCGI_STDERR; beyond it lines go to stderr.
const CAPTURE_MAX: usize = 64 * 1024;

thread_local! {
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static CAPTURED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Installs our logger unless the app installed one first (then we leave logging
/// entirely to it).
pub(crate) fn init(level: LevelFilter, target: LogTarget) {
    let prefix = crate::sys::exe_file_name().unwrap_or_else(|| "fcgi-shim".to_owned());
    // Without the feature, syslog is stderr in every way (a request's lines go to the
    // web server with it); only code can ask for it then: the setting is refused.
    let fell_back = cfg!(not(feature = "syslog")) && target == LogTarget::Syslog;
    let target = if fell_back { LogTarget::Stderr } else { target };
    #[cfg(feature = "syslog")]
    if target == LogTarget::Syslog {
        syslog::open(&prefix);
    }
    let logger = LOGGER.get_or_init(|| Logger { prefix, target });
    // The level is ours to set only for our own logger: an app that installed its
    // own (env_logger at debug, say) keeps the level it chose.
    let ours = log::set_logger(logger).is_ok()
        || std::ptr::addr_eq(
            log::logger() as *const dyn log::Log,
            logger as *const Logger,
        );
    if ours {
        log::set_max_level(level);
        if fell_back {
            log::warn!("LogTarget::Syslog needs the `syslog` feature; logging to stderr");
        }
    }
}

/// Starts capturing this thread's log lines for the current request.
pub(crate) fn capture_begin() {
    CAPTURING.with(|c| c.set(true));
}

/// Stops capturing; lines not sent to the web server go to stderr, prefixed as ours.
pub(crate) fn capture_end() {
    CAPTURING.with(|c| c.set(false));
    if let Some(rest) = take_captured() {
        let prefix = LOGGER.get().map_or("fcgi-shim", |l| l.prefix.as_str());
        let pid = std::process::id();
        let mut out = Vec::with_capacity(rest.len() + 64);
        for line in rest.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(format!("{prefix}[{pid}]: ").as_bytes());
            out.extend_from_slice(line);
        }
        let _ = std::io::stderr().write_all(&out);
    }
}

/// What was logged on this thread during the request, if anything.
pub(crate) fn take_captured() -> Option<Vec<u8>> {
    CAPTURED.with(|b| {
        let mut b = b.borrow_mut();
        if b.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut *b))
        }
    })
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        // Under a web server a request's lines go to it as FCGI_STDERR (its error log,
        // with the request's client), unless the system log was chosen: that choice
        // holds during requests too.
        let captured = self.target == LogTarget::Stderr
            && CAPTURING.with(Cell::get)
            && CAPTURED.with(|b| {
                let mut b = b.borrow_mut();
                if b.len() >= CAPTURE_MAX {
                    return false;
                }
                let mut line = format!("{}: ", r.level());
                push_escaped(&mut line, r.args());
                line.push('\n');
                b.extend_from_slice(line.as_bytes());
                true
            });
        if captured {
            return;
        }
        match self.target {
            #[cfg(feature = "syslog")]
            LogTarget::Syslog => {
                let mut msg = String::new();
                push_escaped(&mut msg, r.args());
                syslog::send(r.level(), &msg);
            }
            _ => {
                // One write per line, so lines from several processes do not interleave.
                let mut line = format!("{}[{}]: {}: ", self.prefix, std::process::id(), r.level());
                push_escaped(&mut line, r.args());
                line.push('\n');
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// Appends a log message with its control characters escaped (`\n`, `\r`, `\t`,
/// `\xHH`, `\u{HHHH}`): one message is one line in a log, whatever a client put into
/// it (a newline in a logged path or body could otherwise forge a line of its own).
fn push_escaped(out: &mut String, msg: &std::fmt::Arguments<'_>) {
    struct Escaping<'a>(&'a mut String);
    impl std::fmt::Write for Escaping<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let mut rest = s;
            while let Some(i) = rest.find(char::is_control) {
                self.0.push_str(&rest[..i]);
                let c = rest[i..].chars().next().unwrap_or_default();
                match c {
                    '\n' => self.0.push_str("\\n"),
                    '\r' => self.0.push_str("\\r"),
                    '\t' => self.0.push_str("\\t"),
                    c if c.is_ascii() => write!(self.0, "\\x{:02x}", c as u32)?,
                    c => write!(self.0, "\\u{{{:04x}}}", c as u32)?,
                }
                rest = &rest[i + c.len_utf8()..];
            }
            self.0.push_str(rest);
            Ok(())
        }
    }
    let _ = std::fmt::Write::write_fmt(&mut Escaping(out), *msg);
}

#[cfg(feature = "syslog")]
mod syslog {
    use std::ffi::CString;

    pub(super) fn open(ident: &str) {
        let ident = CString::new(ident).unwrap_or_else(|_| c"fcgi-shim".to_owned());
        // openlog keeps the pointer: the string must live as long as the process.
        let ident: &'static std::ffi::CStr = Box::leak(ident.into_boxed_c_str());
        // SAFETY: ident is a valid NUL-terminated string that is never freed.
        unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_USER) };
    }

    pub(super) fn send(level: log::Level, msg: &str) {
        let prio = match level {
            log::Level::Error => libc::LOG_ERR,
            log::Level::Warn => libc::LOG_WARNING,
            log::Level::Info => libc::LOG_INFO,
            log::Level::Debug | log::Level::Trace => libc::LOG_DEBUG,
        };
        let msg = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
        // SAFETY: a constant format string with one %s argument that is a valid C string.
        unsafe { libc::syslog(prio, c"%s".as_ptr(), msg.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::push_escaped;

    fn esc(args: std::fmt::Arguments<'_>) -> String {
        let mut s = String::from("x: ");
        push_escaped(&mut s, &args);
        s
    }

    #[test]
    fn control_characters_are_escaped_so_a_message_stays_one_line() {
        let client = "/a\nfcgi-shim[1]: ERROR: forged\r\n";
        assert_eq!(
            esc(format_args!("GET {client} done")),
            "x: GET /a\\nfcgi-shim[1]: ERROR: forged\\r\\n done"
        );
        assert_eq!(
            esc(format_args!(
                "{}",
                "tab\there, bell\x07, del\x7f, c1\u{85}, é ok"
            )),
            "x: tab\\there, bell\\x07, del\\x7f, c1\\u{0085}, é ok"
        );
        assert_eq!(esc(format_args!("plain")), "x: plain");
        assert_eq!(esc(format_args!("{}{}", "\n", 7)), "x: \\n7");
    }
}
