//! The FastCGI 1.0 wire format, with no I/O: record headers, types, roles, name-value
//! pairs.
//!
//! Section numbers refer to the FastCGI Specification, Open Market, 1996.

use std::fmt;

/// `FCGI_VERSION_1`, the only version the spec defines (section 8).
pub const VERSION_1: u8 = 1;
/// Every record starts with an 8-byte header (section 3.3).
pub const HEADER_LEN: usize = 8;
/// `contentLength` is a 16-bit field.
pub const MAX_CONTENT_LEN: usize = 65535;
/// The largest content we put in one stream record: the largest multiple of 8
/// not above 65535, so that full records need no padding.
pub const MAX_CHUNK: usize = 65528;
/// `FCGI_NULL_REQUEST_ID`: management records (section 3.3).
pub const NULL_REQUEST_ID: u16 = 0;
/// `FCGI_KEEP_CONN`, the only flag of `FCGI_BeginRequestBody` (section 5.1).
pub const KEEP_CONN: u8 = 1;

/// Record types (section 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordType {
    /// `FCGI_BEGIN_REQUEST` (1): starts a request, with its role and flags.
    BeginRequest,
    /// `FCGI_ABORT_REQUEST` (2): the web server gives up on a request.
    AbortRequest,
    /// `FCGI_END_REQUEST` (3): the application's last record of a request.
    EndRequest,
    /// `FCGI_PARAMS` (4): the stream of the request's name-value pairs.
    Params,
    /// `FCGI_STDIN` (5): the stream of the request body.
    Stdin,
    /// `FCGI_STDOUT` (6): the stream of the response.
    Stdout,
    /// `FCGI_STDERR` (7): the stream of error output, for the web server's log.
    Stderr,
    /// `FCGI_DATA` (8): the filter role's extra stream.
    Data,
    /// `FCGI_GET_VALUES` (9): a management query for the application's limits.
    GetValues,
    /// `FCGI_GET_VALUES_RESULT` (10): the answer to `FCGI_GET_VALUES`.
    GetValuesResult,
    /// `FCGI_UNKNOWN_TYPE` (11): the answer to a management record of a type the
    /// application does not know.
    UnknownType,
    /// A type this version of the spec does not define.
    Other(u8),
}

impl RecordType {
    /// The type for a header's `type` byte; an undefined one is [`RecordType::Other`].
    pub fn from_u8(b: u8) -> RecordType {
        match b {
            1 => RecordType::BeginRequest,
            2 => RecordType::AbortRequest,
            3 => RecordType::EndRequest,
            4 => RecordType::Params,
            5 => RecordType::Stdin,
            6 => RecordType::Stdout,
            7 => RecordType::Stderr,
            8 => RecordType::Data,
            9 => RecordType::GetValues,
            10 => RecordType::GetValuesResult,
            11 => RecordType::UnknownType,
            other => RecordType::Other(other),
        }
    }

    /// The `type` byte for the header.
    pub fn as_u8(self) -> u8 {
        match self {
            RecordType::BeginRequest => 1,
            RecordType::AbortRequest => 2,
            RecordType::EndRequest => 3,
            RecordType::Params => 4,
            RecordType::Stdin => 5,
            RecordType::Stdout => 6,
            RecordType::Stderr => 7,
            RecordType::Data => 8,
            RecordType::GetValues => 9,
            RecordType::GetValuesResult => 10,
            RecordType::UnknownType => 11,
            RecordType::Other(b) => b,
        }
    }
}

/// The role a request asks the application to play (section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// `FCGI_RESPONDER`: the CGI/1.1 role, an ordinary HTTP request.
    Responder,
    /// `FCGI_AUTHORIZER`: decide whether a request may proceed. On 200 the web server
    /// uses only the `Variable-*` response headers; any other status goes to the client.
    Authorizer,
    /// `FCGI_FILTER`: a responder that also receives a file on the `FCGI_DATA` stream.
    Filter,
}

impl Role {
    /// The role of a `FCGI_BeginRequestBody`'s `role` field, or `None` for a value the
    /// spec does not define (answered `FCGI_UNKNOWN_ROLE`).
    pub fn from_u16(v: u16) -> Option<Role> {
        match v {
            1 => Some(Role::Responder),
            2 => Some(Role::Authorizer),
            3 => Some(Role::Filter),
            _ => None,
        }
    }

    /// The `role` field's value.
    pub fn as_u16(self) -> u16 {
        match self {
            Role::Responder => 1,
            Role::Authorizer => 2,
            Role::Filter => 3,
        }
    }
}

/// `protocolStatus` of `FCGI_EndRequestBody` (section 5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProtocolStatus {
    /// `FCGI_REQUEST_COMPLETE` (0): the request ran; its outcome is the app status.
    RequestComplete,
    /// `FCGI_CANT_MPX_CONN` (1): a second request on a connection that has one running.
    CantMpxConn,
    /// `FCGI_OVERLOADED` (2): the application is out of a resource.
    Overloaded,
    /// `FCGI_UNKNOWN_ROLE` (3): a role the application does not play.
    UnknownRole,
}

impl ProtocolStatus {
    /// The `protocolStatus` byte.
    pub fn as_u8(self) -> u8 {
        match self {
            ProtocolStatus::RequestComplete => 0,
            ProtocolStatus::CantMpxConn => 1,
            ProtocolStatus::Overloaded => 2,
            ProtocolStatus::UnknownRole => 3,
        }
    }
}

/// A record header (section 3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `version`: [`VERSION_1`] in every record a conforming web server sends.
    pub version: u8,
    /// `type`.
    pub record_type: RecordType,
    /// `requestId`: the request the record belongs to, or [`NULL_REQUEST_ID`] for a
    /// management record.
    pub request_id: u16,
    /// `contentLength`: the bytes of content that follow the header.
    pub content_length: u16,
    /// `paddingLength`: the bytes after the content that carry nothing.
    pub padding_length: u8,
}

impl Header {
    /// Decodes the 8 header bytes. Any version is decoded; the caller decides what to accept.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            version: b[0],
            record_type: RecordType::from_u8(b[1]),
            request_id: u16::from_be_bytes([b[2], b[3]]),
            content_length: u16::from_be_bytes([b[4], b[5]]),
            padding_length: b[6],
        }
    }

    /// A version-1 header for `content_len` bytes of content, padded to a multiple of 8
    /// ("we recommend that records be placed on boundaries that are multiples of eight bytes").
    pub fn new(record_type: RecordType, request_id: u16, content_len: usize) -> Header {
        debug_assert!(content_len <= MAX_CONTENT_LEN);
        Header {
            version: VERSION_1,
            record_type,
            request_id,
            content_length: content_len as u16,
            padding_length: padding_for(content_len) as u8,
        }
    }

    /// The 8 header bytes, as they go on the wire.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let id = self.request_id.to_be_bytes();
        let len = self.content_length.to_be_bytes();
        [
            self.version,
            self.record_type.as_u8(),
            id[0],
            id[1],
            len[0],
            len[1],
            self.padding_length,
            0,
        ]
    }

    /// Content plus padding: how many bytes follow the header.
    pub fn body_len(&self) -> usize {
        self.content_length as usize + self.padding_length as usize
    }
}

/// Padding that brings `content_len` to a multiple of 8.
pub fn padding_for(content_len: usize) -> usize {
    (8 - content_len % 8) % 8
}

const ZEROS: [u8; 8] = [0; 8];

/// Appends one complete record (header, content, padding) to `out`.
pub fn push_record(out: &mut Vec<u8>, record_type: RecordType, request_id: u16, content: &[u8]) {
    let h = Header::new(record_type, request_id, content.len());
    out.extend_from_slice(&h.to_bytes());
    out.extend_from_slice(content);
    out.extend_from_slice(&ZEROS[..h.padding_length as usize]);
}

/// `FCGI_BeginRequestBody` (section 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeginRequest {
    /// The raw role number; see [`Role::from_u16`].
    pub role: u16,
    /// `flags`: [`KEEP_CONN`] or not.
    pub flags: u8,
}

impl BeginRequest {
    /// Decodes the body. The spec fixes it at 8 bytes; a shorter one is malformed,
    /// extra bytes are ignored.
    pub fn parse(content: &[u8]) -> Option<BeginRequest> {
        if content.len() < 8 {
            return None;
        }
        Some(BeginRequest {
            role: u16::from_be_bytes([content[0], content[1]]),
            flags: content[2],
        })
    }

    /// Whether the web server asks to keep the connection open after the request.
    pub fn keep_conn(&self) -> bool {
        self.flags & KEEP_CONN != 0
    }

    /// The 8 body bytes (the last five reserved, zero).
    pub fn to_bytes(self) -> [u8; 8] {
        let r = self.role.to_be_bytes();
        [r[0], r[1], self.flags, 0, 0, 0, 0, 0]
    }
}

/// `FCGI_EndRequestBody` (section 5.5).
pub fn end_request_body(app_status: u32, status: ProtocolStatus) -> [u8; 8] {
    let a = app_status.to_be_bytes();
    [a[0], a[1], a[2], a[3], status.as_u8(), 0, 0, 0]
}

/// `FCGI_UnknownTypeBody` (section 4.2).
pub fn unknown_type_body(record_type: u8) -> [u8; 8] {
    [record_type, 0, 0, 0, 0, 0, 0, 0]
}

/// Why a block of name-value pairs could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairError {
    /// A length runs past the end of the block (section 3.4).
    Truncated,
}

impl fmt::Display for PairError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PairError::Truncated => f.write_str("name-value pair runs past the end of the stream"),
        }
    }
}

/// One decoded pair, as offsets into the block it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairSpan {
    /// The name's start and end in the block.
    pub name: (usize, usize),
    /// The value's start and end in the block.
    pub value: (usize, usize),
}

/// Decodes a complete block of name-value pairs (section 3.4): each length is one byte
/// when its high bit is clear, else four bytes with the high bit masked off.
///
/// Calls `each` with the spans of every pair in order; stops at the first pair `each`
/// refuses (returns `false`). Does not allocate.
pub fn parse_pairs(block: &[u8], mut each: impl FnMut(PairSpan) -> bool) -> Result<(), PairError> {
    let mut pos = 0;
    while pos < block.len() {
        let (name_len, p) = read_len(block, pos)?;
        let (value_len, p) = read_len(block, p)?;
        let Some(name_end) = p.checked_add(name_len) else {
            return truncated();
        };
        let Some(value_end) = name_end.checked_add(value_len) else {
            return truncated();
        };
        if value_end > block.len() {
            return truncated();
        }
        if !each(PairSpan {
            name: (p, name_end),
            value: (name_end, value_end),
        }) {
            return Ok(());
        }
        pos = value_end;
    }
    Ok(())
}

/// The error of a block that ends inside a pair (out of line: a web server never
/// sends one, so the compiler lays the loop out for the pairs that are whole).
#[cold]
fn truncated<T>() -> Result<T, PairError> {
    Err(PairError::Truncated)
}

#[inline(always)]
fn read_len(block: &[u8], pos: usize) -> Result<(usize, usize), PairError> {
    match block.get(pos) {
        Some(&first) if first & 0x80 == 0 => Ok((first as usize, pos + 1)),
        _ => read_long_len(block, pos),
    }
}

/// A four-byte length (128 bytes or more: a long cookie or user agent), or the end of
/// the block. Out of line, so the loop is laid out for the one-byte lengths most
/// names and values have.
#[cold]
#[inline(never)]
fn read_long_len(block: &[u8], pos: usize) -> Result<(usize, usize), PairError> {
    let Some(b) = block.get(pos..pos + 4) else {
        return truncated();
    };
    let len = u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]);
    Ok((len as usize, pos + 4))
}

/// Appends one name-value pair, choosing 1- or 4-byte lengths as the spec requires.
///
/// Lengths above 2^31-1 cannot be encoded; callers pass names and values far smaller.
pub fn push_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    push_len(out, name.len());
    push_len(out, value.len());
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        debug_assert!(len <= 0x7fff_ffff);
        out.extend_from_slice(&((len as u32) | 0x8000_0000).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip() {
        let h = Header::new(RecordType::Stdout, 0x1234, 13);
        assert_eq!(h.to_bytes(), [1, 6, 0x12, 0x34, 0, 13, 3, 0]);
        assert_eq!(Header::parse(&h.to_bytes()), h);
    }

    #[test]
    fn padding_is_to_eight() {
        assert_eq!(padding_for(0), 0);
        assert_eq!(padding_for(1), 7);
        assert_eq!(padding_for(8), 0);
        assert_eq!(padding_for(MAX_CHUNK), 0);
        assert_eq!(padding_for(MAX_CONTENT_LEN), 1);
    }

    #[test]
    fn pairs_short_and_long_lengths() {
        let mut block = Vec::new();
        push_pair(&mut block, b"A", b"1");
        let long = vec![b'x'; 200];
        push_pair(&mut block, b"LONG", &long);
        assert_eq!(&block[..4], &[1, 1, b'A', b'1']);
        assert_eq!(&block[4..9], &[4, 0x80, 0, 0, 200]);
        let mut seen = Vec::new();
        parse_pairs(&block, |s| {
            seen.push((
                block[s.name.0..s.name.1].to_vec(),
                block[s.value.0..s.value.1].len(),
            ));
            true
        })
        .unwrap();
        assert_eq!(seen, vec![(b"A".to_vec(), 1), (b"LONG".to_vec(), 200)]);
    }

    #[test]
    fn pairs_truncated_everywhere() {
        let mut block = Vec::new();
        push_pair(&mut block, b"NAME", &[b'v'; 300]);
        for cut in 1..block.len() {
            assert_eq!(
                parse_pairs(&block[..cut], |_| true),
                Err(PairError::Truncated),
                "prefix of {cut} bytes"
            );
        }
    }

    #[test]
    fn pairs_huge_declared_length_is_an_error_not_an_allocation() {
        // name length 2^31-1 declared, nothing behind it
        let block = [0xff, 0xff, 0xff, 0xff, 0x01, b'a'];
        assert_eq!(parse_pairs(&block, |_| true), Err(PairError::Truncated));
    }
}
