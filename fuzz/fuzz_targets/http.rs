// One plain-HTTP connection to the `--http` development server, on a real socket pair:
// arbitrary bytes from the client, answered by the fuzzing app (src/fuzzing.rs).
// Besides "no panic, no hang", every answer must be HTTP/1.1 a client can frame: a
// status line and CRLF-ended `name: value` lines, one framing (a digits-only
// Content-Length, or chunked with well-formed chunks, or `Connection: close` and the
// rest of the stream), nothing after a `Connection: close` answer, and only
// `100 Continue` as an interim answer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let out = fcgi_shim::fuzzing::exchange(data, fcgi_shim::fuzzing::Wire::Http);
    check_answers(&out);
});

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned()
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The next answer that follows a body-less one (a HEAD's, whose Content-Length tells
/// the size of the body it would have had): the stream ends, or the next answer starts.
/// The fuzzing app's bodies and the error pages never start so.
fn next_answer_or_end(rest: &[u8]) -> bool {
    rest.is_empty() || rest.starts_with(b"HTTP/1.1 ")
}

struct Head {
    status: u16,
    length: Option<usize>,
    chunked: bool,
    close: bool,
}

fn parse_head(head: &[u8]) -> Head {
    // Lines end in CRLF, with no other CR or LF in them (`head` is without its last
    // line's CRLF and the empty line).
    let pieces: Vec<&[u8]> = head.split(|&b| b == b'\n').collect();
    let mut lines = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let line = if i + 1 < pieces.len() {
            piece
                .strip_suffix(b"\r")
                .unwrap_or_else(|| panic!("a head line not ended by CRLF in {:?}", show(head)))
        } else {
            piece
        };
        assert!(!line.contains(&b'\r'), "a bare CR in {:?}", show(head));
        lines.push(line);
    }
    let status_line = lines[0];
    let code = status_line
        .strip_prefix(b"HTTP/1.1 ")
        .unwrap_or_else(|| panic!("status line {:?}", show(status_line)));
    assert!(
        code.len() >= 3
            && code[..3].iter().all(u8::is_ascii_digit)
            && (code.len() == 3 || code[3] == b' '),
        "status line {:?}",
        show(status_line)
    );
    let status = std::str::from_utf8(&code[..3])
        .ok()
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..=599).contains(c))
        .unwrap_or_else(|| panic!("status {:?}", show(status_line)));
    let mut h = Head {
        status,
        length: None,
        chunked: false,
        close: false,
    };
    let mut lengths = 0;
    for line in &lines[1..] {
        let at = line
            .iter()
            .position(|&b| b == b':')
            .unwrap_or_else(|| panic!("header line without a colon: {:?}", show(line)));
        let (name, value) = (&line[..at], line[at + 1..].trim_ascii());
        assert!(
            !name.is_empty() && name.iter().all(|&b| is_tchar(b)),
            "header name {:?}",
            show(name)
        );
        let name = name.to_ascii_lowercase();
        match &name[..] {
            b"content-length" => {
                lengths += 1;
                assert!(
                    !value.is_empty() && value.iter().all(u8::is_ascii_digit),
                    "Content-Length {:?}",
                    show(value)
                );
                h.length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
                assert!(h.length.is_some(), "Content-Length {:?}", show(value));
            }
            b"transfer-encoding" => {
                assert_eq!(value, b"chunked", "Transfer-Encoding {:?}", show(value));
                assert!(!h.chunked, "Transfer-Encoding twice");
                h.chunked = true;
            }
            b"connection" => {
                h.close |= value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
            }
            _ => {}
        }
    }
    assert!(lengths <= 1, "{lengths} Content-Length headers");
    assert!(
        !(h.chunked && h.length.is_some()),
        "Content-Length beside Transfer-Encoding"
    );
    h
}

/// Takes a chunked body off the front of `rest`: size lines in hex, each chunk's data
/// and CRLF, the last chunk `0`, no trailers.
fn take_chunked(mut rest: &[u8]) -> &[u8] {
    loop {
        let end =
            find(rest, b"\r\n").unwrap_or_else(|| panic!("chunk size line cut: {:?}", show(rest)));
        let line = &rest[..end];
        assert!(
            !line.is_empty() && line.len() <= 16 && line.iter().all(u8::is_ascii_hexdigit),
            "chunk size line {:?}",
            show(line)
        );
        let size = usize::from_str_radix(std::str::from_utf8(line).unwrap_or("x"), 16)
            .unwrap_or_else(|_| panic!("chunk size {:?}", show(line)));
        rest = &rest[end + 2..];
        if size == 0 {
            return rest
                .strip_prefix(b"\r\n")
                .unwrap_or_else(|| panic!("last chunk not ended by CRLF: {:?}", show(rest)));
        }
        assert!(rest.len() >= size + 2, "a chunk of {size} bytes cut short");
        assert_eq!(
            &rest[size..size + 2],
            b"\r\n",
            "chunk data not ended by CRLF"
        );
        rest = &rest[size + 2..];
    }
}

fn check_answers(out: &[u8]) {
    let mut rest = out;
    while !rest.is_empty() {
        let end = find(rest, b"\r\n\r\n")
            .unwrap_or_else(|| panic!("an answer's head without its end: {:?}", show(rest)));
        let h = parse_head(&rest[..end]);
        rest = &rest[end + 4..];
        if h.status < 200 {
            assert_eq!(h.status, 100, "interim answer {}", h.status);
            assert!(h.length.is_none() && !h.chunked && !h.close);
            // A final answer follows, unless the client's side ended first.
            continue;
        }
        if h.status == 204 || h.status == 304 {
            assert!(!h.chunked, "chunked framing on a {}", h.status);
        } else if h.chunked {
            rest = take_chunked(rest);
        } else if let Some(n) = h.length {
            if n > 0 && next_answer_or_end(rest) {
                // A HEAD's answer (a body cut to nothing looks the same).
            } else {
                assert!(
                    rest.len() >= n,
                    "a body of {} bytes, {n} declared",
                    rest.len()
                );
                rest = &rest[n..];
            }
        } else if h.close {
            // Framed by the close: the rest is the body.
            rest = &[];
        } else {
            // No framing and the connection kept: only a body-less (HEAD) answer.
            assert!(
                next_answer_or_end(rest),
                "an unframed body on a kept connection"
            );
        }
        if h.close {
            assert!(
                rest.is_empty(),
                "{} bytes after a Connection: close answer",
                rest.len()
            );
        }
    }
}
