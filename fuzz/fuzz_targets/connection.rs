// One FastCGI connection over arbitrary bytes from the "web server", read in chunks of
// 1..=4096 bytes, answered by the fuzzing app (src/fuzzing.rs). Besides "no panic, no
// hang", the output is checked: it must be well-formed FastCGI a web server can parse,
// answer only what the input asked, and stop after a request without FCGI_KEEP_CONN.
//
// Input: 2 bytes chunk size, 1 byte thread count, then the byte stream.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(([c0, c1, t], stream)) = data.split_first_chunk::<3>() else {
        return;
    };
    let chunk = 1 + usize::from(u16::from_be_bytes([*c0, *c1])) % 4096;
    let threads = 1 + usize::from(*t % 16);
    let out = fcgi_shim::fuzzing::connection(stream, chunk, threads);
    check_output(&out, &Asked::read(stream), threads);
});

/// What the input asks for, read leniently: every record up to the first header that
/// is not version 1 (where the connection stops too).
#[derive(Default)]
struct Asked {
    /// Per request id, each BEGIN_REQUEST body in order: (role, keep_conn).
    begins: HashMap<u16, Vec<(u16, bool)>>,
    /// The type of each record with the null request id, in order.
    management: Vec<u8>,
}

impl Asked {
    fn read(input: &[u8]) -> Asked {
        let mut asked = Asked::default();
        let mut pos = 0;
        while let Some(h) = input.get(pos..pos + 8) {
            if h[0] != 1 {
                break;
            }
            let id = u16::from_be_bytes([h[2], h[3]]);
            let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
            let body = input.get(pos + 8..pos + 8 + len);
            if id == 0 {
                asked.management.push(h[1]);
            } else if let (1, Some(b)) = (h[1], body.filter(|b| b.len() >= 8)) {
                let begin = (u16::from_be_bytes([b[0], b[1]]), b[2] & 1 == 1);
                asked.begins.entry(id).or_default().push(begin);
            }
            pos += 8 + len + usize::from(h[6]);
        }
        asked
    }
}

/// The answer being written to one request id.
#[derive(Default)]
struct Answer {
    /// Answers started for this id so far; the n-th answers the n-th BEGIN_REQUEST.
    answers: usize,
    /// STDOUT/STDERR sent and no END_REQUEST yet.
    open: bool,
    stdout_ended: bool,
    stderr_ended: bool,
    stderr_data: bool,
    stdout: Vec<u8>,
}

fn check_output(out: &[u8], asked: &Asked, threads: usize) {
    let mut ids: HashMap<u16, Answer> = HashMap::new();
    // The request whose STDOUT/STDERR is being written: the connection is not multiplexed.
    let mut current: Option<u16> = None;
    let mut management = asked.management.iter();
    let mut pos = 0;
    while pos < out.len() {
        let h = out
            .get(pos..pos + 8)
            .unwrap_or_else(|| panic!("partial record header at {pos} of {}", out.len()));
        let (version, rtype) = (h[0], h[1]);
        let id = u16::from_be_bytes([h[2], h[3]]);
        let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
        let pad = usize::from(h[6]);
        assert_eq!(version, 1, "record version at {pos}");
        assert!(pad < 8, "padding {pad} at {pos}");
        assert_eq!((len + pad) % 8, 0, "record at {pos} not padded to 8");
        let end = pos + 8 + len + pad;
        assert!(end <= out.len(), "record at {pos} runs past the output");
        let body = &out[pos + 8..pos + 8 + len];
        pos = end;

        if rtype == 10 || rtype == 11 {
            // The n-th management answer is for the n-th record with the null id.
            assert_eq!(id, 0, "management record type {rtype} with id {id}");
            let &asked_type = management.next().expect("management answer nobody asked for");
            if rtype == 11 {
                assert_ne!(asked_type, 9, "GET_VALUES answered UNKNOWN_TYPE");
                assert_eq!(body, [asked_type, 0, 0, 0, 0, 0, 0, 0], "UNKNOWN_TYPE body");
            } else {
                assert_eq!(asked_type, 9, "GET_VALUES_RESULT for a type {asked_type} record");
                check_values(body, threads);
            }
            continue;
        }
        assert!(matches!(rtype, 3 | 6 | 7), "record type {rtype} sent by the app");
        assert_ne!(id, 0, "type {rtype} record with the null request id");
        let begins = asked.begins.get(&id).map_or(&[][..], Vec::as_slice);
        let a = ids.entry(id).or_default();
        if !a.open {
            // A new answer for this id: STDOUT/STDERR, or a bare END_REQUEST.
            a.answers += 1;
            assert!(
                a.answers <= begins.len(),
                "answer {} for request {id}, which the input began {} times",
                a.answers,
                begins.len()
            );
            *a = Answer {
                answers: a.answers,
                open: true,
                ..Answer::default()
            };
        }
        let (role, keep_conn) = begins[a.answers - 1];
        match rtype {
            6 | 7 => {
                if let Some(c) = current {
                    assert_eq!(c, id, "STDOUT/STDERR of request {id} inside the answer to {c}");
                }
                current = Some(id);
                assert!(matches!(role, 1 | 2), "output for request {id} with role {role}");
                if rtype == 6 {
                    assert!(!a.stdout_ended, "STDOUT after the end of STDOUT (request {id})");
                    a.stdout_ended = len == 0;
                    a.stdout.extend_from_slice(body);
                } else {
                    assert!(!a.stderr_ended, "STDERR after the end of STDERR (request {id})");
                    a.stderr_ended = len == 0;
                    a.stderr_data |= len > 0;
                }
            }
            _ => {
                assert_eq!(len, 8, "END_REQUEST content");
                let app_status = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                let protocol_status = body[4];
                assert!(app_status <= 1, "appStatus {app_status}");
                assert_eq!(body[5..], [0; 3]);
                match protocol_status {
                    0 => assert!(matches!(role, 1 | 2), "REQUEST_COMPLETE for role {role}"),
                    1 => assert!(a.stdout.is_empty(), "CANT_MPX_CONN after output"),
                    3 => assert!(!matches!(role, 1 | 2), "UNKNOWN_ROLE for role {role}"),
                    s => panic!("protocolStatus {s}"),
                }
                if current == Some(id) {
                    assert!(a.stdout_ended, "END_REQUEST before the end of STDOUT ({id})");
                    assert!(!a.stderr_data || a.stderr_ended, "STDERR not ended ({id})");
                    current = None;
                }
                check_response(&a.stdout, app_status == 0);
                a.open = false;
                if protocol_status != 1 && !keep_conn {
                    assert_eq!(pos, out.len(), "output after a request without FCGI_KEEP_CONN");
                }
            }
        }
    }
}

/// The STDOUT of one answer: a CGI head starting with `Status: `; when the app
/// completed and sent a body, `Content-Length` (if any) is the body's length.
fn check_response(stdout: &[u8], complete: bool) {
    if stdout.is_empty() {
        return;
    }
    assert!(stdout.starts_with(b"Status: "), "response head {:?}", &stdout[..stdout.len().min(40)]);
    let Some(end) = stdout.windows(4).position(|w| w == b"\r\n\r\n") else {
        assert!(!complete, "complete response without the end of its head");
        return;
    };
    let body = &stdout[end + 4..];
    let declared = stdout[..end]
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"Content-Length: "))
        .map(|v| String::from_utf8_lossy(v).trim().parse::<usize>().expect("Content-Length"));
    if let (true, false, Some(n)) = (complete, body.is_empty(), declared) {
        assert_eq!(body.len(), n, "body length against Content-Length");
    }
}

/// GET_VALUES_RESULT: pairs with one-byte lengths, only the names we know (the spec's
/// three, and ours telling a restarted server whether this one drains).
fn check_values(mut body: &[u8], threads: usize) {
    let threads = threads.to_string();
    while !body.is_empty() {
        assert!(body.len() >= 2, "GET_VALUES_RESULT truncated");
        let (n, v) = (usize::from(body[0]), usize::from(body[1]));
        assert!(body.len() >= 2 + n + v, "GET_VALUES_RESULT pair truncated");
        let (name, value) = (&body[2..2 + n], &body[2 + n..2 + n + v]);
        let want: &[u8] = match name {
            b"FCGI_MAX_CONNS" | b"FCGI_MAX_REQS" => threads.as_bytes(),
            b"FCGI_MPXS_CONNS" => b"0",
            // No shutdown is ever requested in the fuzzing process.
            b"FCGI_SHIM_DRAINING" => b"0",
            _ => panic!("GET_VALUES_RESULT name {:?}", String::from_utf8_lossy(name)),
        };
        assert_eq!(value, want, "GET_VALUES_RESULT value");
        body = &body[2 + n + v..];
    }
}
