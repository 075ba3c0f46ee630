// The CGI variables of one request, as the web server sent them (FastCGI params or environment).

use std::fmt;

/// The raw CGI variables of one request: names and values as bytes, in the order the
/// web server sent them. Stored in one buffer; lookups are by exact name.
///
/// `HTTP_PROXY` is never present: it can only come from a client's `Proxy:` header
/// ("httpoxy"), and programs treat that name as their proxy setting.
#[derive(Clone, Default)]
pub struct Vars {
    buf: Vec<u8>,
    // (name start, name end, value end); the value starts where the name ends.
    spans: Vec<(u32, u32, u32)>,
}

impl Vars {
    pub fn new() -> Vars {
        Vars::default()
    }

    /// Builds from name-value pairs (e.g. `std::env::vars_os()` or a test table).
    pub fn from_pairs<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Vars
    where
        N: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut v = Vars::new();
        for (n, val) in pairs {
            v.push(n.as_ref(), val.as_ref());
        }
        v
    }

    /// Adds a variable. A later duplicate does not replace an earlier one; `get`
    /// returns the first, as a CGI environment would hold only one.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        if name == b"HTTP_PROXY" {
            return;
        }
        // Offsets are u32: a Vars is capped far below 4 GiB by the params limits.
        let start = self.buf.len();
        self.buf.extend_from_slice(name);
        let name_end = self.buf.len();
        self.buf.extend_from_slice(value);
        self.spans
            .push((start as u32, name_end as u32, self.buf.len() as u32));
    }

    /// Takes a complete FCGI_PARAMS stream without copying: FastCGI stores each name
    /// directly before its value, which is the layout `Vars` uses.
    pub(crate) fn from_fcgi_params(buf: Vec<u8>, max_count: usize) -> Result<Vars, ParamsError> {
        let mut spans = Vec::with_capacity(32);
        let mut too_many = false;
        crate::record::parse_pairs(&buf, |s| {
            if &buf[s.name.0..s.name.1] == b"HTTP_PROXY" {
                return true;
            }
            if spans.len() == max_count {
                too_many = true;
                return false;
            }
            spans.push((s.name.0 as u32, s.name.1 as u32, s.value.1 as u32));
            true
        })
        .map_err(ParamsError::Malformed)?;
        if too_many {
            return Err(ParamsError::TooMany(max_count));
        }
        Ok(Vars { buf, spans })
    }

    /// The value of `name`, if the web server sent it.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let name = name.as_bytes();
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The value of `name` if it is present and valid UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The value of `name` if it is present, valid UTF-8 and not empty.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get_str(name).filter(|s| !s.is_empty())
    }

    /// All variables, in the order received.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.spans.iter().map(move |&(s, ne, ve)| {
            (
                &self.buf[s as usize..ne as usize],
                &self.buf[ne as usize..ve as usize],
            )
        })
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Bytes of names and values together.
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }
}

impl fmt::Debug for Vars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (n, v) in self.iter() {
            m.entry(&String::from_utf8_lossy(n), &String::from_utf8_lossy(v));
        }
        m.finish()
    }
}

/// Why an FCGI_PARAMS stream was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParamsError {
    /// More variables than the limit allows.
    TooMany(usize),
    /// The name-value encoding is broken.
    Malformed(crate::record::PairError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_order() {
        let v = Vars::from_pairs([("A", "1"), ("B", ""), ("A", "2")]);
        assert_eq!(v.get("A"), Some(&b"1"[..]));
        assert_eq!(v.non_empty("B"), None);
        assert_eq!(v.get_str("B"), Some(""));
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn httpoxy_is_dropped() {
        let v = Vars::from_pairs([("HTTP_PROXY", "http://evil:3128"), ("HTTP_HOST", "x")]);
        assert_eq!(v.get("HTTP_PROXY"), None);
        assert_eq!(v.len(), 1);
    }
}
