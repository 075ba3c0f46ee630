// The CGI variables of one request, as the web server sent them (FastCGI params or environment).

use std::fmt;
use std::ops::Range;

use bytes::Bytes;

/// The raw CGI variables of one request: names and values as bytes, in the order the
/// web server sent them. Stored in one buffer; lookups are by exact name.
///
/// `HTTP_PROXY` is never present: it can only come from a client's `Proxy:` header
/// ("httpoxy"), and programs treat that name as their proxy setting.
#[derive(Clone, Default)]
pub struct Vars {
    // Shared, so header values can point into it instead of being copied.
    buf: Bytes,
    // (name start, name end, value end); the value starts where the name ends.
    spans: Vec<(u32, u32, u32)>,
    // For the variables every request looks up: 1 + the index of the last span with
    // that name, 0 when absent. Saves a scan of every variable per look-up.
    known: [u32; KNOWN],
}

/// How many names [`known_slot`] indexes.
const KNOWN: usize = 14;

/// The indexed names, in slot order (the tests check `known_slot` against it).
#[cfg(test)]
const KNOWN_NAMES: [&str; KNOWN] = [
    "CONTENT_LENGTH",
    "FORCE_SCRIPT_NAME",
    "HTTP_TRANSFER_ENCODING",
    "PATH_INFO",
    "QUERY_STRING",
    "REDIRECT_FORCE_SCRIPT_NAME",
    "REDIRECT_URL",
    "REQUEST_METHOD",
    "REQUEST_URI",
    "SCRIPT_FILENAME",
    "SCRIPT_NAME",
    "SCRIPT_URL",
    "SERVER_PROTOCOL",
    "REDIRECT_HTTP_AUTHORIZATION",
];

/// The slot of a variable that request building reads on every request. Called for
/// every variable received, so it dispatches on the length and then compares
/// fixed-size arrays (inline compares, no `memcmp` calls).
#[inline(always)]
fn known_slot(name: &[u8]) -> Option<usize> {
    fn is<const N: usize>(name: &[u8], s: &[u8; N]) -> bool {
        <&[u8; N]>::try_from(name).is_ok_and(|a| a == s)
    }
    let either = |a: bool, i: usize, b: bool, j: usize| {
        if a {
            Some(i)
        } else if b {
            Some(j)
        } else {
            None
        }
    };
    match name.len() {
        9 => is(name, b"PATH_INFO").then_some(3),
        10 => is(name, b"SCRIPT_URL").then_some(11),
        11 => either(is(name, b"REQUEST_URI"), 8, is(name, b"SCRIPT_NAME"), 10),
        12 => either(is(name, b"QUERY_STRING"), 4, is(name, b"REDIRECT_URL"), 6),
        14 => either(
            is(name, b"CONTENT_LENGTH"),
            0,
            is(name, b"REQUEST_METHOD"),
            7,
        ),
        15 => either(
            is(name, b"SCRIPT_FILENAME"),
            9,
            is(name, b"SERVER_PROTOCOL"),
            12,
        ),
        17 => is(name, b"FORCE_SCRIPT_NAME").then_some(1),
        22 => is(name, b"HTTP_TRANSFER_ENCODING").then_some(2),
        26 => is(name, b"REDIRECT_FORCE_SCRIPT_NAME").then_some(5),
        27 => is(name, b"REDIRECT_HTTP_AUTHORIZATION").then_some(13),
        _ => None,
    }
}

impl Vars {
    /// An empty set.
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

    /// Adds a variable. A later duplicate overrides an earlier one for `get`, as in
    /// nginx's `include fastcgi_params;` followed by a `fastcgi_param` of one of its
    /// names (Go's `net/http/fcgi`, PHP-FPM and flup keep the last too).
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        if name == b"HTTP_PROXY" {
            return;
        }
        // Offsets are u32: a Vars is capped far below 4 GiB by the params limits.
        // Building from pairs (CGI, tests) is not on the hot path: the buffer goes back
        // to a Vec (without a copy while nothing else shares it) to grow.
        let mut buf: Vec<u8> = std::mem::take(&mut self.buf).into();
        let start = buf.len();
        buf.extend_from_slice(name);
        let name_end = buf.len();
        buf.extend_from_slice(value);
        self.spans
            .push((start as u32, name_end as u32, buf.len() as u32));
        self.buf = buf.into();
        Self::index(&mut self.known, name, self.spans.len());
    }

    /// Records the `n`th variable (1-based) under its slot: the last of a name wins.
    // Inlined into the params loop: a call per variable cost more than the look-up.
    #[inline(always)]
    fn index(known: &mut [u32; KNOWN], name: &[u8], n: usize) {
        if let Some(k) = known_slot(name) {
            known[k] = n as u32;
        }
    }

    /// Takes a complete FCGI_PARAMS stream without copying: FastCGI stores each name
    /// directly before its value, which is the layout `Vars` uses.
    pub(crate) fn from_fcgi_params(buf: Vec<u8>, max_count: usize) -> Result<Vars, ParamsError> {
        let mut spans = Vec::with_capacity(32);
        let mut known = [0; KNOWN];
        let mut too_many = false;
        crate::record::parse_pairs(&buf, |s| {
            let name = &buf[s.name.0..s.name.1];
            if name == b"HTTP_PROXY" {
                return true;
            }
            if spans.len() == max_count {
                too_many = true;
                return false;
            }
            spans.push((s.name.0 as u32, s.name.1 as u32, s.value.1 as u32));
            Self::index(&mut known, name, spans.len());
            true
        })
        .map_err(ParamsError::Malformed)?;
        if too_many {
            return Err(ParamsError::TooMany(max_count));
        }
        Ok(Vars {
            buf: buf.into(),
            spans,
            known,
        })
    }

    /// The value of `name`, if the web server sent it; of the last, if it sent it twice.
    // Inlined so that a constant name's slot is worked out at compile time.
    #[inline(always)]
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let name = name.as_bytes();
        if let Some(k) = known_slot(name) {
            let n = self.known[k] as usize;
            let &(_, ne, ve) = self.spans.get(n.checked_sub(1)?)?;
            return Some(&self.buf[ne as usize..ve as usize]);
        }
        self.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The value of `name` if it is present and valid UTF-8.
    #[inline]
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The value of `name` if it is present, valid UTF-8 and not empty.
    #[inline]
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get_str(name).filter(|s| !s.is_empty())
    }

    /// All variables, in the order received (duplicates included).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&[u8], &[u8])> + '_ {
        self.spans.iter().map(move |&(s, ne, ve)| {
            (
                &self.buf[s as usize..ne as usize],
                &self.buf[ne as usize..ve as usize],
            )
        })
    }

    /// All variables as (name, where the value is), for [`Vars::shared`].
    pub(crate) fn iter_ranges(&self) -> impl Iterator<Item = (&[u8], Range<usize>)> + '_ {
        self.spans
            .iter()
            .map(move |&(s, ne, ve)| (&self.buf[s as usize..ne as usize], ne as usize..ve as usize))
    }

    /// Where the value of an indexed variable is in the buffer (for [`Vars::shared`]).
    #[inline(always)]
    pub(crate) fn known_range(&self, name: &str) -> Option<Range<usize>> {
        let k = known_slot(name.as_bytes())?;
        let n = self.known[k] as usize;
        let &(_, ne, ve) = self.spans.get(n.checked_sub(1)?)?;
        Some(ne as usize..ve as usize)
    }

    /// Bytes of the buffer that share it rather than copy (header values).
    pub(crate) fn shared(&self, r: Range<usize>) -> Bytes {
        self.buf.slice(r)
    }

    /// The number of variables (a repeated name counts each time).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when there are none.
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
        assert_eq!(v.get("A"), Some(&b"2"[..]), "the last of a name wins");
        assert_eq!(v.non_empty("B"), None);
        assert_eq!(v.get_str("B"), Some(""));
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn each_indexed_name_has_its_own_slot() {
        for (i, name) in KNOWN_NAMES.iter().enumerate() {
            assert_eq!(known_slot(name.as_bytes()), Some(i), "{name}");
        }
        assert_eq!(known_slot(b"HTTP_HOST"), None);
    }

    #[test]
    fn indexed_names_answer_like_a_scan() {
        let table = [
            ("SCRIPT_NAME", "/blog/mysite.fcgi"),
            ("PATH_INFO", ""),
            ("SCRIPT_NAME", "/second"),
            ("HTTP_HOST", "example.org"),
            ("QUERY_STRING", "a=1"),
            ("REQUEST_METHOD", "GET"),
            ("CONTENT_LENGTH", "0"),
            ("CONTENT_LENGTH", "5"),
        ];
        let mut params = Vec::new();
        for (n, v) in table {
            crate::record::push_pair(&mut params, n.as_bytes(), v.as_bytes());
        }
        let from_params = Vars::from_fcgi_params(params, 100).unwrap();
        for v in [Vars::from_pairs(table), from_params] {
            for name in KNOWN_NAMES {
                let scan = v
                    .iter()
                    .rev()
                    .find(|(n, _)| *n == name.as_bytes())
                    .map(|p| p.1);
                assert_eq!(v.get(name), scan, "{name}");
            }
            assert_eq!(v.get("SCRIPT_NAME"), Some(&b"/second"[..]));
            assert_eq!(v.get("CONTENT_LENGTH"), Some(&b"5"[..]));
            assert_eq!(v.get("PATH_INFO"), Some(&b""[..]));
            assert_eq!(v.get("REQUEST_URI"), None);
            assert_eq!(v.get("SCRIPT_URL"), None);
            assert_eq!(v.get("HTTP_HOST"), Some(&b"example.org"[..]));
        }
    }

    #[test]
    fn httpoxy_is_dropped() {
        let v = Vars::from_pairs([("HTTP_PROXY", "http://evil:3128"), ("HTTP_HOST", "x")]);
        assert_eq!(v.get("HTTP_PROXY"), None);
        assert_eq!(v.len(), 1);
    }
}
