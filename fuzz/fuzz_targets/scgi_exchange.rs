// One whole SCGI connection on a real socket pair: arbitrary bytes from the web server,
// answered by the fuzzing app (src/fuzzing.rs). Besides "no panic, no hang", the
// answer is nothing (a malformed head closes the connection) or one CGI response a web
// server can parse: a `Status: ` line and CRLF-ended header lines, and a body as long
// as its Content-Length says (or none: a HEAD's).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let out = fcgi_shim::fuzzing::exchange(data, fcgi_shim::fuzzing::Wire::Scgi);
    check_answer(&out);
});

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned()
}

fn check_answer(out: &[u8]) {
    if out.is_empty() {
        return;
    }
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("an answer's head without its end: {:?}", show(out)));
    let (head, body) = (&out[..end + 2], &out[end + 4..]);
    assert!(
        head.starts_with(b"Status: "),
        "first line of {:?}",
        show(head)
    );
    let mut length = None;
    for line in head.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = line
            .strip_suffix(b"\r")
            .unwrap_or_else(|| panic!("a head line not ended by CRLF in {:?}", show(head)));
        assert!(!line.contains(&b'\r'), "a bare CR in {:?}", show(head));
        assert!(
            line.contains(&b':'),
            "header line without a colon: {:?}",
            show(line)
        );
        if line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:") {
            assert!(length.is_none(), "Content-Length twice");
            let v = line[15..].trim_ascii();
            assert!(
                !v.is_empty() && v.iter().all(u8::is_ascii_digit),
                "{:?}",
                show(line)
            );
            length = std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse::<usize>().ok());
        }
    }
    if let Some(n) = length {
        assert!(
            body.len() == n || body.is_empty(),
            "a body of {} bytes, {n} declared",
            body.len()
        );
    }
}
