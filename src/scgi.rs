// SCGI (one request per connection): a netstring of NUL-separated headers with
// CONTENT_LENGTH first, the body, then a CGI-style response and close.

use std::io::{self, BufRead, BufReader};

use http::StatusCode;

use crate::body::Body;
use crate::config::Config;
use crate::context::Mode;
use crate::record::Role;
use crate::request::{self, DeclaredLength};
use crate::response::{self, Outcome, WriteSink};
use crate::server::App;
use crate::sockio::SockIo;
use crate::vars::Vars;

/// Why an SCGI request head was not accepted.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// Not SCGI: closed with a log line.
    Malformed(String),
    /// Over the params limits: answered 431.
    TooLarge(String),
    Io(io::Error),
}

/// Reads the netstring `<len>:<headers>,` and decodes the headers.
pub(crate) fn read_head(r: &mut impl BufRead, cfg: &Config) -> Result<Vars, HeadError> {
    let mut len: usize = 0;
    let mut digits = 0;
    loop {
        let mut b = [0u8; 1];
        r.read_exact(&mut b).map_err(HeadError::Io)?;
        match b[0] {
            b'0'..=b'9' if digits < 10 => {
                len = len * 10 + usize::from(b[0] - b'0');
                digits += 1;
            }
            b':' if digits > 0 => break,
            b'0'..=b'9' => {
                return Err(HeadError::Malformed(
                    "netstring length has more than 10 digits".into(),
                ));
            }
            other => {
                return Err(HeadError::Malformed(format!(
                    "netstring length has byte {other:#04x}"
                )));
            }
        }
    }
    if len > cfg.limits.max_params_bytes {
        return Err(HeadError::TooLarge(format!(
            "SCGI headers of {len} bytes exceed {} (raise FCGI_MAX_PARAMS_BYTES)",
            cfg.limits.max_params_bytes
        )));
    }
    let mut buf = vec![0u8; len + 1];
    r.read_exact(&mut buf).map_err(HeadError::Io)?;
    if buf.pop() != Some(b',') {
        return Err(HeadError::Malformed(
            "netstring does not end with ','".into(),
        ));
    }
    // NUL-terminated strings, names and values in turn.
    let Some((&0, strings)) = buf.split_last() else {
        return Err(HeadError::Malformed(if buf.is_empty() {
            "no headers".into()
        } else {
            "headers do not end with NUL".into()
        }));
    };
    let mut vars = Vars::new();
    let mut fields = strings.split(|&b| b == 0);
    let mut first = true;
    while let Some(name) = fields.next() {
        let Some(value) = fields.next() else {
            return Err(HeadError::Malformed("a header name without a value".into()));
        };
        if name.is_empty() {
            return Err(HeadError::Malformed("an empty header name".into()));
        }
        if first && name != b"CONTENT_LENGTH" {
            return Err(HeadError::Malformed(
                "CONTENT_LENGTH is not the first header".into(),
            ));
        }
        if !first && name == b"CONTENT_LENGTH" {
            // The body is framed by the first; a second could only disagree.
            return Err(HeadError::Malformed("CONTENT_LENGTH given twice".into()));
        }
        first = false;
        if vars.len() == cfg.limits.max_params {
            return Err(HeadError::TooLarge(format!(
                "more than {} SCGI headers (raise FCGI_MAX_PARAMS)",
                cfg.limits.max_params
            )));
        }
        vars.push(name, value);
    }
    if vars.is_empty() {
        return Err(HeadError::Malformed("no headers".into()));
    }
    if vars.get("SCGI") != Some(b"1") {
        log::debug!("SCGI request without SCGI=1");
    }
    Ok(vars)
}

/// SCGI has no end-of-body marker, so CONTENT_LENGTH must be the whole body. nginx with
/// `scgi_request_buffering off` sends only what it has read so far (while passing the
/// client's `Content-Length` as `HTTP_CONTENT_LENGTH`): the app would get a short body
/// with no error. Refused instead, with the reason in the log.
fn check_client_length(vars: &Vars, len: u64) -> Result<(), request::Rejection> {
    let client = vars
        .get_str("HTTP_CONTENT_LENGTH")
        .and_then(|v| v.trim().parse::<u64>().ok());
    match client {
        Some(c) if c != len && vars.get("HTTP_TRANSFER_ENCODING").is_none() => {
            Err(request::Rejection::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "SCGI CONTENT_LENGTH is {len} but the client sent Content-Length {c}; the \
                     body would be cut (nginx sends this with scgi_request_buffering off: \
                     leave it on)"
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Serves the one request of an SCGI connection.
pub(crate) fn serve(io: SockIo, app: &dyn App, cfg: &Config) {
    let mut rd = BufReader::with_capacity(8192, io.clone());
    let mut out = WriteSink::new(io.clone()).watching(io.raw_fd());
    io.head_deadline(true);
    let head = read_head(&mut rd, cfg);
    io.head_deadline(false);
    let vars = match head {
        Ok(v) => v,
        Err(HeadError::Io(e)) => {
            log::info!("SCGI connection ended before its headers: {e}");
            return;
        }
        Err(HeadError::Malformed(m)) => {
            log::warn!("malformed SCGI request: {m}; closing the connection");
            return;
        }
        Err(HeadError::TooLarge(m)) => {
            log::warn!("{m}; answered 431");
            response::send_error(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, &mut out);
            let _ = std::io::Write::flush(&mut out);
            io.linger_close();
            return;
        }
    };
    let built = request::content_length(&vars).and_then(|len| {
        // SCGI always sends CONTENT_LENGTH; absent would mean "no body".
        let len = match len {
            DeclaredLength::Exact(n) => n,
            DeclaredLength::Absent => 0,
            // The body is framed by the length alone: "to the end" cannot end.
            DeclaredLength::Unknown => {
                return Err(request::Rejection::new(
                    StatusCode::LENGTH_REQUIRED,
                    "SCGI CONTENT_LENGTH -1: the body has no end",
                ));
            }
        };
        check_client_length(&vars, len)?;
        let body = if len == 0 {
            Body::empty()
        } else {
            Body::from_reader(rd, Some(len))
        };
        request::build(vars, body, Mode::Scgi, Role::Responder, &cfg.map)
    });
    let outcome = match built {
        Ok(req) => app.serve(req, &mut out),
        Err(rej) => {
            log::warn!("{}; answered {}", rej.reason, rej.status.as_u16());
            response::send_error(rej.status, &mut out)
        }
    };
    // Taken after every response that did not end complete, so that none is left
    // over on this thread for a later request's line.
    let failed_on = (outcome != Outcome::Complete)
        .then(response::take_failed_request)
        .flatten();
    let what = || {
        failed_on
            .as_ref()
            .map_or(String::new(), |w| format!(" {w}"))
    };
    if let Err(e) = std::io::Write::flush(&mut out) {
        log::info!("SCGI{}: writing the response: {e}", what());
        return;
    }
    if outcome == Outcome::Gone {
        // The web server closed the connection (its client went away): the same line
        // FastCGI gives, naming the request.
        log::info!(
            "SCGI{}: the web server closed the connection before the response was complete",
            what()
        );
    }
    if outcome.is_cut() {
        // SCGI ends a response with the close: on TCP a reset says it was cut short.
        io.reset_close();
        return;
    }
    io.linger_close();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &[u8]) -> Result<Vars, HeadError> {
        read_head(&mut &s[..], &Config::default())
    }

    #[test]
    fn parses_a_netstring() {
        let h = b"25:CONTENT_LENGTH\x0027\x00SCGI\x001\x00,";
        let v = head(h).unwrap();
        assert_eq!(v.get("CONTENT_LENGTH"), Some(&b"27"[..]));
        assert_eq!(v.get("SCGI"), Some(&b"1"[..]));
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(head(b"x:"), Err(HeadError::Malformed(_))));
        assert!(matches!(head(b"5:SCGI\x00,"), Err(HeadError::Malformed(_))));
        assert!(matches!(
            head(b"7:SCGI\x001\x00,"),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(head(b"3:A\x00B,"), Err(HeadError::Malformed(_))));
        // A name without its value, an empty name, CONTENT_LENGTH twice.
        assert!(matches!(
            head(b"26:CONTENT_LENGTH\x000\x00SCGI\x001\x00X\x00,"),
            Err(HeadError::Malformed(m)) if m.contains("without a value")
        ));
        assert!(matches!(
            head(b"27:CONTENT_LENGTH\x000\x00\x00v\x00SCGI\x001\x00,"),
            Err(HeadError::Malformed(m)) if m.contains("empty header name")
        ));
        assert!(matches!(
            head(b"34:CONTENT_LENGTH\x005\x00CONTENT_LENGTH\x000\x00,"),
            Err(HeadError::Malformed(m)) if m.contains("twice")
        ));
        assert!(matches!(head(b"0:,"), Err(HeadError::Malformed(m)) if m == "no headers"));
        assert!(matches!(head(b"1:\x00,"), Err(HeadError::Malformed(_))));
        assert!(matches!(
            head(b"99999999999:"),
            Err(HeadError::Malformed(m)) if m == "netstring length has more than 10 digits"
        ));
        assert!(matches!(head(b"9999999:"), Err(HeadError::TooLarge(_))));
        assert!(matches!(head(b"10:CONTENT_L"), Err(HeadError::Io(_))));
    }
}
