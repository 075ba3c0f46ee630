// The request body handed to the app: a stream (`std::io::Read`), never read whole by us.

use std::fmt;
use std::io::{self, Read};
use std::sync::Arc;

/// Where body bytes come from; implemented by a FastCGI connection.
pub(crate) trait BodySource: Send + Sync {
    /// Reads stdin bytes of request `seq`; `Ok(0)` at the end of the stream.
    fn read_body(&self, seq: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// The app dropped the body: whatever stdin is left may be discarded.
    fn detach(&self, seq: u64);
}

enum Source {
    Empty,
    Reader(Box<dyn Read + Send>),
    Conn(Arc<dyn BodySource>, u64),
}

/// The body of a request, read as a stream with [`std::io::Read`].
///
/// Under FastCGI the bytes arrive in `FCGI_STDIN` records as the app reads them; under
/// CGI they come from stdin, exactly `CONTENT_LENGTH` of them. When the request
/// declared a length and the stream ends short of it, `read` fails with
/// `UnexpectedEof` rather than handing the app a silently truncated upload. If the web
/// server aborts the request, `read` fails with `ConnectionAborted`. A body of no
/// declared length (chunked) read past [`Builder::max_body`](crate::Builder::max_body)
/// (`FCGI_MAX_BODY`) fails with `FileTooLarge`, for the app to answer 413 (a declared
/// length over it never reaches the app: it is answered 413 before).
///
/// For tests, a `Body` can be made from bytes: `Body::from("name=x")`.
pub struct Body {
    src: Source,
    declared: Option<u64>,
    remaining: Option<u64>,
    /// For a body of no declared length, the bytes it may still have (`FCGI_MAX_BODY`).
    cap: Option<u64>,
    /// It went past `cap`: every read fails.
    over: bool,
}

impl Body {
    /// A body with no bytes.
    pub fn empty() -> Body {
        Body {
            src: Source::Empty,
            declared: Some(0),
            remaining: Some(0),
            cap: None,
            over: false,
        }
    }

    /// A body read from `reader`; `len`, when given, is the declared length: reading
    /// stops there, and a reader that ends earlier is an error.
    pub fn from_reader(reader: impl Read + Send + 'static, len: Option<u64>) -> Body {
        Body {
            src: Source::Reader(Box::new(reader)),
            declared: len,
            remaining: len,
            cap: None,
            over: false,
        }
    }

    pub(crate) fn from_conn(src: Arc<dyn BodySource>, seq: u64, len: Option<u64>) -> Body {
        Body {
            src: Source::Conn(src, seq),
            declared: len,
            remaining: len,
            cap: None,
            over: false,
        }
    }

    /// Limits a body of no declared length to `max` bytes: a read past them fails.
    pub(crate) fn cap(&mut self, max: u64) {
        if self.declared.is_none() {
            self.cap = Some(max);
        }
    }

    /// The length the client declared (`CONTENT_LENGTH`), if it did.
    pub fn content_length(&self) -> Option<u64> {
        self.declared
    }

    fn read_source(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.src {
            Source::Empty => Ok(0),
            Source::Reader(r) => r.read(buf),
            Source::Conn(c, seq) => c.read_body(*seq, buf),
        }
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.over {
            return Err(over_limit());
        }
        let want = match self.remaining {
            Some(0) => return Ok(0),
            Some(r) => buf.len().min(usize::try_from(r).unwrap_or(usize::MAX)),
            // One byte past the cap is asked for, to tell a body that ends there from
            // one that goes on.
            None => match self.cap {
                Some(c) => buf
                    .len()
                    .min(usize::try_from(c.saturating_add(1)).unwrap_or(usize::MAX)),
                None => buf.len(),
            },
        };
        let n = self.read_source(&mut buf[..want])?;
        if let Some(c) = &mut self.cap {
            if n as u64 > *c {
                // What is within the limit is given; the next read fails.
                let within = *c as usize;
                *c = 0;
                self.over = true;
                if within > 0 {
                    return Ok(within);
                }
                return Err(over_limit());
            }
            *c -= n as u64;
        }
        if let Some(r) = &mut self.remaining {
            if n == 0 {
                let got = self.declared.unwrap_or(0) - *r;
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "request body ended after {got} of the {} bytes CONTENT_LENGTH declared",
                        self.declared.unwrap_or(0)
                    ),
                ));
            }
            *r -= n as u64;
        }
        Ok(n)
    }
}

/// Its own kind, not `InvalidData`, which `read_to_string` also gives for bytes that are
/// not UTF-8: an app tells the two apart by the kind alone.
fn over_limit() -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        "the request body is over FCGI_MAX_BODY",
    )
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Source::Conn(c, seq) = &self.src {
            c.detach(*seq);
        }
    }
}

impl Default for Body {
    fn default() -> Body {
        Body::empty()
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Body {
        let len = v.len() as u64;
        Body::from_reader(io::Cursor::new(v), Some(len))
    }
}

impl From<&'static [u8]> for Body {
    fn from(v: &'static [u8]) -> Body {
        Body::from(v.to_vec())
    }
}

impl From<&'static str> for Body {
    fn from(v: &'static str) -> Body {
        Body::from(v.as_bytes().to_vec())
    }
}

impl From<String> for Body {
    fn from(v: String) -> Body {
        Body::from(v.into_bytes())
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.src {
            Source::Empty => "empty",
            Source::Reader(_) => "reader",
            Source::Conn(..) => "fastcgi",
        };
        f.debug_struct("Body")
            .field("source", &kind)
            .field("content_length", &self.declared)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_at_declared_length() {
        let mut b = Body::from_reader(io::Cursor::new(b"hello world".to_vec()), Some(5));
        let mut s = String::new();
        b.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
    }

    #[test]
    fn short_body_is_an_error() {
        let mut b = Body::from_reader(io::Cursor::new(b"abc".to_vec()), Some(10));
        let mut v = Vec::new();
        let e = b.read_to_end(&mut v).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(v, b"abc");
    }

    /// FCGI_MAX_BODY on a body of no declared length: what is within the limit is
    /// read, then an error; a body that ends at the limit is whole.
    #[test]
    fn a_capped_body_fails_past_its_limit() {
        for (len, ok) in [(9usize, true), (10, true), (11, false), (100_000, false)] {
            let mut b = Body::from_reader(io::Cursor::new(vec![b'x'; len]), None);
            b.cap(10);
            let mut v = Vec::new();
            let r = b.read_to_end(&mut v);
            assert_eq!(r.is_ok(), ok, "{len}: {r:?}");
            assert_eq!(v.len(), len.min(10), "{len}");
            if let Err(e) = r {
                // Its own kind: `InvalidData` is also what non-UTF-8 bytes give.
                assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
                // And it stays failed.
                assert!(b.read(&mut [0u8; 4]).is_err());
            }
        }
        // A declared length is checked before the app runs, not capped here.
        let mut b = Body::from_reader(io::Cursor::new(vec![b'x'; 20]), Some(20));
        b.cap(10);
        let mut v = Vec::new();
        b.read_to_end(&mut v).unwrap();
        assert_eq!(v.len(), 20);
    }

    #[test]
    fn undeclared_length_reads_to_end() {
        let mut b = Body::from_reader(io::Cursor::new(b"abc".to_vec()), None);
        let mut v = Vec::new();
        b.read_to_end(&mut v).unwrap();
        assert_eq!(v, b"abc");
    }
}
