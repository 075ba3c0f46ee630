// The library's error type: what `run` and the builder can fail with.

use std::fmt;
use std::io;

/// Why the server could not start or keep running.
///
/// Per-request problems (a malformed record, a client that went away, a panicking
/// handler) never end up here while serving: they end that request or connection with
/// a log line and the server goes on. (Building a request yourself, with
/// [`crate::request_from_vars`], can fail with [`Error::BadRequest`].)
#[non_exhaustive]
pub enum Error {
    /// A setting (environment variable, command-line option or builder value) has a
    /// value that cannot be used.
    Setting {
        /// The setting's name as the user wrote it (`FCGI_MAX_REQUESTS`, `--threads`).
        name: String,
        /// What was given.
        value: String,
        /// What is expected instead.
        expected: &'static str,
    },
    /// A setting in the settings file beside the program (`mysite.fcgi.env`) has a
    /// value that cannot be used: `source` (an [`Error::Setting`]) says which.
    SettingsFile {
        /// The settings file.
        path: std::path::PathBuf,
        /// What is wrong in it.
        source: Box<Error>,
    },
    /// The settings file beside the program cannot be used as a whole: it cannot be
    /// read, others may write it, or a line is not `NAME=value`.
    SettingsFileUnusable {
        /// The settings file.
        path: std::path::PathBuf,
        /// What is wrong with it and what is expected instead (`mode 664: writable by
        /// group or others; expected ...`, `line 4: ...; expected NAME=value lines`).
        problem: String,
    },
    /// A system call failed while setting up or accepting.
    Io {
        /// What we were doing, e.g. "installing signal handlers".
        op: &'static str,
        /// The system call's error.
        source: io::Error,
    },
    /// The program was not started by a web server (no listening socket on fd 0, no
    /// `GATEWAY_INTERFACE`) and was given nothing to serve.
    NotLaunchedByWebServer,
    /// [`crate::request_from_vars`]: the variables make no request; a web server's
    /// would be answered with `status`.
    BadRequest {
        /// The status the request would be answered with.
        status: http::StatusCode,
        /// Why.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, source: io::Error) -> Error {
        Error::Io { op, source }
    }

    pub(crate) fn setting(
        name: impl Into<String>,
        value: impl Into<String>,
        expected: &'static str,
    ) -> Error {
        Error::Setting {
            name: name.into(),
            value: value.into(),
            expected,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Setting {
                name,
                value,
                expected,
            } => write!(f, "invalid {name}={value:?}: expected {expected}"),
            Error::SettingsFile { path, source } => write!(f, "{}: {source}", path.display()),
            Error::SettingsFileUnusable { path, problem } => {
                write!(f, "{}: {problem}", path.display())
            }
            Error::Io { op, source } => write!(f, "{op}: {source}"),
            Error::NotLaunchedByWebServer => f.write_str(
                "not started by a web server: no listening socket on fd 0 and no GATEWAY_INTERFACE",
            ),
            Error::BadRequest { status, reason } => {
                write!(f, "{reason} (a web server's request would get {status})")
            }
        }
    }
}

/// The same text as `Display`: `fn main() -> Result<(), fcgi_shim::Error>` prints the
/// error with `Debug`, and that line is what lands in the web server's error log.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::SettingsFile { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_stays_small() {
        assert!(std::mem::size_of::<Error>() <= 64);
    }

    #[test]
    fn messages_name_the_fix() {
        let e = Error::setting("FCGI_MAX_REQUESTS", "ten", "a whole number");
        assert_eq!(
            e.to_string(),
            "invalid FCGI_MAX_REQUESTS=\"ten\": expected a whole number"
        );
    }
}
