// CGI mode and launch detection: the built example run with a CGI environment (as
// Apache mod_cgi runs it), and started the ways that are not a web server.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// Runs the echo example as CGI with `vars` and `stdin`; returns (head, body, output).
fn cgi(vars: &[(&str, &str)], stdin: &[u8]) -> (String, Vec<u8>, Output) {
    let mut cmd = Command::new(example("echo"));
    cmd.env_clear()
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let w = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    w.join().unwrap();
    let pos = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {:?}", String::from_utf8_lossy(&out.stdout)));
    let head = String::from_utf8_lossy(&out.stdout[..pos + 2]).into_owned();
    let body = out.stdout[pos + 4..].to_vec();
    (head, body, out)
}

fn base<'a>(
    method: &'a str,
    path: &'a str,
    query: &'a str,
    uri: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_METHOD", method),
        ("SCRIPT_NAME", "/blog/mysite.fcgi"),
        ("SCRIPT_FILENAME", "/var/www/blog/mysite.fcgi"),
        ("PATH_INFO", path),
        ("QUERY_STRING", query),
        ("REQUEST_URI", uri),
        ("REDIRECT_URL", "/blog/posts/1"),
        ("SERVER_NAME", "example.com"),
        ("SERVER_PORT", "80"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REMOTE_ADDR", "203.0.113.9"),
        ("HTTP_HOST", "example.com"),
    ]
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(body)))
}

#[test]
fn get_with_query_and_mount_prefix() {
    let vars = base("GET", "/posts/1", "x=1&y=%20", "/blog/posts/1?x=1&y=%20");
    let (head, body, out) = cgi(&vars, b"");
    assert!(out.status.success());
    assert!(head.starts_with("Status: 200 OK\r\n"), "{head}");
    assert!(head.contains("content-type: application/json\r\n"));
    let j = json(&body);
    assert_eq!(j["mode"], "cgi");
    assert_eq!(j["script_name"], "/blog");
    assert_eq!(j["path_info"], "/posts/1");
    assert_eq!(j["uri"], "/posts/1?x=1&y=%20");
    assert_eq!(j["query"], "x=1&y=%20");
    assert_eq!(j["original_uri"], "/blog/posts/1?x=1&y=%20");
    assert_eq!(j["remote_addr"], "203.0.113.9");
    assert_eq!(j["https"], false);
}

#[test]
fn post_reads_exactly_content_length() {
    let mut vars = base("POST", "/posts/1", "", "/blog/posts/1");
    vars.push(("CONTENT_LENGTH", "5"));
    vars.push(("CONTENT_TYPE", "text/plain"));
    // More bytes on stdin than declared: only CONTENT_LENGTH of them are the body.
    let (_, body, _) = cgi(&vars, b"helloEXTRA");
    let j = json(&body);
    assert_eq!(j["body_len"], 5);
    assert_eq!(j["body_sha256"], sha256_hex(b"hello"));
    assert_eq!(j["headers"]["content-type"], "text/plain");
}

#[test]
fn missing_content_length_means_no_body_and_no_hang() {
    let vars = base("POST", "/posts/1", "", "/blog/posts/1");
    let mut child = Command::new(example("echo"))
        .env_clear()
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // stdin stays open and silent: RFC 3875 says there is no body to read.
    let _keep_open = child.stdin.take();
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    let s = String::from_utf8_lossy(&out);
    assert!(s.contains("\"body_len\":0"), "{s}");
}

#[test]
fn bad_content_length_is_400() {
    for bad in ["abc", "-5", "1e3"] {
        let mut vars = base("POST", "/x", "", "/blog/x");
        vars.push(("CONTENT_LENGTH", bad));
        let (head, _, out) = cgi(&vars, b"data");
        assert!(
            head.starts_with("Status: 400 Bad Request\r\n"),
            "{bad}: {head}"
        );
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("CONTENT_LENGTH"));
    }
}

#[test]
fn chunked_body_without_length_reads_to_eof() {
    let mut vars = base("POST", "/x", "", "/blog/x");
    vars.push(("HTTP_TRANSFER_ENCODING", "chunked"));
    let (_, body, _) = cgi(&vars, b"chunked body");
    assert_eq!(json(&body)["body_len"], 12);
    // `CONTENT_LENGTH=-1` (a Go server's unknown length) reads to the end too.
    let mut vars = base("POST", "/x", "", "/blog/x");
    vars.push(("CONTENT_LENGTH", "-1"));
    let (_, body, _) = cgi(&vars, b"unknown length");
    assert_eq!(json(&body)["body_len"], 14);
    // ... and is not passed on as a `content-length: -1` header.
    let headers = &json(&body)["headers"];
    assert!(headers.get("content-length").is_none(), "{headers}");
}

/// HTTP/2 has no Transfer-Encoding: a streamed upload reaches a CGI program with no
/// CONTENT_LENGTH (fcgiwrap behind nginx with `fastcgi_request_buffering off` passes
/// it so, CONTENT_LENGTH empty) and is read to its end. A GET's stdin is not read, and
/// over HTTP/1.1 no CONTENT_LENGTH and no chunking is still no body (RFC 3875).
#[test]
fn an_http2_body_without_length_reads_to_eof() {
    for (method, protocol, expected) in [
        ("POST", "HTTP/2.0", 10),
        ("PUT", "HTTP/3", 10),
        ("GET", "HTTP/2.0", 0),
        ("POST", "HTTP/1.1", 0),
    ] {
        let mut vars = base(method, "/x", "", "/blog/x");
        vars.push(("SERVER_PROTOCOL", protocol));
        vars.push(("CONTENT_LENGTH", ""));
        let (head, body, _) = cgi(&vars, b"0123456789");
        assert!(
            head.starts_with("Status: 200"),
            "{method} {protocol}: {head}"
        );
        assert_eq!(json(&body)["body_len"], expected, "{method} {protocol}");
    }
}

/// FCGI_MAX_BODY: a declared length over it is answered 413 before the app runs; a
/// body of no declared length (chunked) fails the app's read past it.
#[test]
fn a_body_over_the_max_body_setting_is_refused() {
    let mut vars = base("POST", "/x", "", "/blog/x");
    vars.push(("FCGI_MAX_BODY", "10"));
    let mut over = vars.clone();
    over.push(("CONTENT_LENGTH", "12"));
    let (head, body, out) = cgi(&over, b"twelve bytes");
    assert!(
        head.starts_with("Status: 413 Payload Too Large\r\n"),
        "{head}"
    );
    assert_eq!(body, b"413 Payload Too Large\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a request body of 12 bytes is over FCGI_MAX_BODY (10)"),
        "{err}"
    );
    let mut within = vars.clone();
    within.push(("CONTENT_LENGTH", "10"));
    let (_, body, _) = cgi(&within, b"ten bytes!");
    assert_eq!(json(&body)["body_len"], 10);
    let mut chunked = vars.clone();
    chunked.push(("HTTP_TRANSFER_ENCODING", "chunked"));
    let (head, body, _) = cgi(&chunked, b"chunked body");
    assert!(head.starts_with("Status: 413"), "{head}");
    assert!(
        json(&body)["error"]
            .as_str()
            .is_some_and(|e| e.contains("over FCGI_MAX_BODY")),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (_, body, _) = cgi(&chunked, b"chunked!");
    assert_eq!(json(&body)["body_len"], 8);
}

#[test]
fn short_body_is_reported_not_truncated_silently() {
    let mut vars = base("POST", "/x", "", "/blog/x");
    vars.push(("CONTENT_LENGTH", "10"));
    let (head, body, _) = cgi(&vars, b"abc");
    assert!(head.starts_with("Status: 400"), "{head}");
    let j = json(&body);
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("after 3 of the 10 bytes"),
        "{j}"
    );
}

#[test]
fn httpoxy_header_never_reaches_the_app() {
    let mut vars = base("GET", "/x", "", "/blog/x");
    vars.push(("HTTP_PROXY", "http://evil.example:3128"));
    let (_, body, _) = cgi(&vars, b"");
    let j = json(&body);
    assert_eq!(j["env_http_proxy"], serde_json::Value::Null);
    assert!(j["headers"].get("proxy").is_none());
    assert!(j["vars"].get("HTTP_PROXY").is_none());
}

#[test]
fn cookies_redirect_status_and_panic() {
    let (head, _, _) = cgi(&base("GET", "/cookies", "", "/blog/cookies"), b"");
    let cookies: Vec<&str> = head
        .lines()
        .filter(|l| l.starts_with("set-cookie: "))
        .collect();
    assert_eq!(
        cookies,
        [
            "set-cookie: first=1; Path=/",
            "set-cookie: second=2; Path=/"
        ]
    );

    let mut vars = base("GET", "/redirect", "", "/blog/redirect");
    vars.retain(|(k, _)| *k != "REDIRECT_URL");
    vars.push(("REDIRECT_URL", "/blog/redirect"));
    let (head, _, _) = cgi(&vars, b"");
    assert!(head.starts_with("Status: 302 Found\r\n"), "{head}");
    assert!(
        head.contains("location: http://example.com/blog/landed\r\n"),
        "{head}"
    );

    // A Host that is no host and port is not put into a URL: SERVER_NAME is.
    for bad in [
        "example.com:abc",
        "example.com:80:90",
        "example.com:99999",
        "[::1",
    ] {
        let mut vars = base("GET", "/redirect", "", "/blog/redirect");
        vars.retain(|(k, _)| *k != "REDIRECT_URL" && *k != "HTTP_HOST");
        vars.push(("REDIRECT_URL", "/blog/redirect"));
        vars.push(("HTTP_HOST", bad));
        let (head, _, _) = cgi(&vars, b"");
        assert!(
            head.contains("location: http://example.com/blog/landed\r\n"),
            "{bad}: {head}"
        );
    }

    let (head, _, _) = cgi(&base("GET", "/status/404", "", "/blog/status/404"), b"");
    assert!(head.starts_with("Status: 404 Not Found\r\n"), "{head}");
    // RFC 9110 15.3.6: a 205 has no content, whatever the app wrote.
    let (head, body, _) = cgi(&base("GET", "/status/205", "", "/blog/status/205"), b"");
    assert!(head.starts_with("Status: 205 Reset Content\r\n"), "{head}");
    assert!(head.contains("Content-Length: 0\r\n"), "{head}");
    assert!(body.is_empty(), "{:?}", String::from_utf8_lossy(&body));

    let (head, body, out) = cgi(&base("GET", "/panic", "", "/blog/panic"), b"");
    assert!(
        head.starts_with("Status: 500 Internal Server Error\r\n"),
        "{head}"
    );
    assert_eq!(body, b"500 Internal Server Error\n");
    assert!(
        out.status.success(),
        "exit status after a panic: {:?}",
        out.status
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one log line: {err}");
    // The URL as the client sent it (REQUEST_URI), as in the web server's access log.
    assert!(err.contains("panicked on GET /blog/panic:"), "{err}");
}

/// The standalone settings are not acted on under CGI, but they are checked (README,
/// "How it decides"): a listener address that is not one is a 500 with the reason in
/// the log, as `FCGI_PROTOCOL=bogus` is (it used to be passed over: a 200).
#[test]
fn a_bad_listener_setting_under_cgi_is_a_500() {
    for var in ["FCGI_LISTEN", "FCGI_HTTP"] {
        let mut vars = base("GET", "/x", "", "/blog/x");
        vars.push((var, "garbage"));
        let (head, _, out) = cgi(&vars, b"");
        assert!(
            head.starts_with("Status: 500 Internal Server Error\r\n"),
            "{var}: {head}"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("invalid {var}=\"garbage\"")), "{err}");
    }
}

/// A query that is not UTF-8 (a Latin-1 form sent with GET) reaches the app
/// percent-encoded, in the URI and in `Context::query_string` alike.
#[test]
fn a_query_that_is_not_utf8_is_kept_percent_encoded() {
    use std::os::unix::ffi::OsStrExt;
    let mut cmd = Command::new(example("echo"));
    cmd.env_clear();
    for (k, v) in base("GET", "/x", "", "/blog/x") {
        if k != "QUERY_STRING" {
            cmd.env(k, v);
        }
    }
    cmd.env(
        "QUERY_STRING",
        std::ffi::OsStr::from_bytes(b"name=caf\xe9&b=1"),
    );
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let pos = text.find("\r\n\r\n").unwrap_or_else(|| panic!("{text}"));
    let v = json(text[pos + 4..].as_bytes());
    assert_eq!(v["query"], "name=caf%E9&b=1", "{v}");
    assert_eq!(v["uri"], "/x?name=caf%E9&b=1", "{v}");
}

#[test]
fn log_lines_go_to_stderr_not_stdout() {
    let (head, body, out) = cgi(&base("GET", "/log", "", "/blog/log"), b"");
    assert!(head.starts_with("Status: 200"));
    assert!(json(&body)["mode"] == "cgi");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WARN: echo: /log was requested"), "{err}");
}

#[test]
fn head_request_gets_headers_only() {
    let (head, body, _) = cgi(&base("HEAD", "/x", "", "/blog/x"), b"");
    assert!(head.contains("Content-Length: "), "{head}");
    assert!(body.is_empty());
}

// ---- launch detection ----

fn run_with_stdin(stdin: Stdio, env: &[(&str, &str)]) -> (Option<i32>, String, Vec<u8>, Duration) {
    let t0 = Instant::now();
    let mut child = Command::new(example("hello"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.stdout,
        t0.elapsed(),
    )
}

#[test]
fn started_by_hand_explains_and_exits_2() {
    // stdin /dev/null, a pipe left open, a connected socket, an unbound socket: none is
    // a web server, and none may make it hang waiting for input.
    let (a, _b) = UnixStream::pair().unwrap();
    // SAFETY: socket(2) returns a new fd we own.
    let unbound = unsafe {
        OwnedFd::from_raw_fd(libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        ))
    };
    let (pipe_r, pipe_w) = std::io::pipe().unwrap();
    let cases: Vec<(&str, Stdio)> = vec![
        ("/dev/null", Stdio::null()),
        ("an open pipe", Stdio::from(pipe_r)),
        ("a connected socket", Stdio::from(OwnedFd::from(a))),
        ("an unbound socket", Stdio::from(unbound)),
    ];
    for (what, stdin) in cases {
        let (code, err, out, took) = run_with_stdin(stdin, &[]);
        assert_eq!(code, Some(2), "{what}: {err}");
        assert!(err.contains("htaccess/"), "{what}: {err}");
        assert!(
            err.contains("FastCGI") && err.contains("CGI"),
            "{what}: {err}"
        );
        assert!(out.is_empty(), "{what}: wrote to stdout");
        assert!(took < Duration::from_secs(5), "{what}: took {took:?}");
    }
    drop(pipe_w);
}

#[test]
fn started_from_a_terminal_explains_and_exits_2() {
    // `script` (util-linux, always on Debian) gives the program a terminal.
    let exe = example("hello");
    let out = Command::new("script")
        .args(["-qec", &exe.display().to_string(), "/dev/null"])
        .env_remove("GATEWAY_INTERFACE")
        .stdin(Stdio::null())
        .output()
        .expect("run script(1)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("started from a terminal"), "{text}");
}

/// An app that owns its command line (`Builder::ignore_args`) gets
/// `Error::NotLaunchedByWebServer` back, not our explanation and exit; as CGI it serves.
#[test]
fn an_app_with_its_own_command_line_gets_the_error_back() {
    let out = Command::new(example("own_cli"))
        .env_remove("GATEWAY_INTERFACE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("own_cli: upload me"), "{err}");
    assert!(!err.contains("htaccess/"), "the library explained: {err}");
    let out = Command::new(example("own_cli"))
        .args(["--http", "127.0.0.1:1"])
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", "GET")
        .env("SCRIPT_NAME", "/my blog/own.cgi")
        .env("PATH_INFO", "/x")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.ends_with("own_cli at /my%20blog/own.cgi/x\n"),
        "{text}"
    );
    // A bad FCGI_* setting comes back too, for the app to report: not logged by us.
    let out = Command::new(example("own_cli"))
        .env_remove("GATEWAY_INTERFACE")
        .env("FCGI_THREADS", "lots")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("own_cli: invalid FCGI_THREADS=\"lots\""),
        "{err}"
    );
    assert_eq!(err.matches("FCGI_THREADS").count(), 1, "{err}");
}

#[test]
fn force_cgi_wins_over_a_listening_socket() {
    let dir = TempDir::new("forcecgi");
    let l = UnixListener::bind(dir.join("s")).unwrap();
    let env = [
        ("FCGI_FORCE_CGI", "1"),
        ("REQUEST_METHOD", "GET"),
        ("PATH_INFO", "/forced"),
        ("SCRIPT_NAME", "/hello"),
    ];
    let (code, err, out, _) = run_with_stdin(Stdio::from(OwnedFd::from(l)), &env);
    assert_eq!(code, Some(0), "{err}");
    let s = String::from_utf8_lossy(&out);
    assert!(
        s.starts_with("Status: 200 OK\r\n") && s.ends_with("Hello from /hello/forced\n"),
        "{s}"
    );
}

#[test]
fn bad_setting_answers_500_and_names_the_variable() {
    let mut vars = base("GET", "/x", "", "/blog/x");
    vars.push(("FCGI_MAX_REQUESTS", "ten"));
    let (head, _, out) = cgi(&vars, b"");
    assert!(head.starts_with("Status: 500"), "{head}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid FCGI_MAX_REQUESTS=\"ten\""), "{err}");
    // Said once: a log line, not the log line and then main's `Error: ...` again.
    assert_eq!(err.matches("FCGI_MAX_REQUESTS").count(), 1, "{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
}

#[cfg(feature = "syslog")]
#[test]
fn syslog_target_sends_log_lines_away_from_stderr() {
    let mut vars = base("GET", "/log", "", "/blog/log");
    vars.push(("FCGI_LOG_TARGET", "syslog"));
    let (head, _, out) = cgi(&vars, b"");
    assert!(head.starts_with("Status: 200"), "{head}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("/log was requested"), "went to stderr: {err}");
}

#[cfg(not(feature = "syslog"))]
#[test]
fn syslog_target_without_the_feature_is_a_clear_error() {
    let mut vars = base("GET", "/log", "", "/blog/log");
    vars.push(("FCGI_LOG_TARGET", "syslog"));
    let (head, _, out) = cgi(&vars, b"");
    assert!(head.starts_with("Status: 500"), "{head}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("`syslog` feature"));
}

// ---- a body the app does not read ----

/// Runs the echo example as CGI the way Apache mod_cgi(d) does: the whole of `body` is
/// written to its stdin (the write's result is returned) before any of its stdout is
/// read. `hold` keeps stdin open after the body (a client that stalls).
fn cgi_body_first(
    vars: &[(&str, &str)],
    body: Vec<u8>,
    hold: bool,
) -> (std::io::Result<()>, Vec<u8>, String, Duration) {
    let exe = example("echo");
    let t0 = Instant::now();
    let mut child = Command::new(exe)
        .env_clear()
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = input.write_all(&body);
        let _ = tx.send(r);
        if hold {
            std::thread::sleep(Duration::from_secs(20));
        }
        drop(input);
    });
    let written = match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(r) => r,
        Err(_) => {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the body could not be written in 15 s (the app waits for its response to be read):\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{:?}\n{err}", out.status);
    (written, out.stdout, err, t0.elapsed())
}

/// An app that answers without reading the body (a 404, a rejection): the rest of the
/// body is read and dropped before the process exits, as php-cgi does. Apache writes
/// the whole body before it reads the response, and a write that meets a closed pipe
/// (EPIPE) made it drop the response: the client got an empty reply.
#[test]
fn an_unread_body_is_drained_before_exit() {
    let body = vec![b'u'; 2 * 1024 * 1024];
    let len = body.len().to_string();
    for chunked in [false, true] {
        let mut vars = base("POST", "/stream", "chunks=1&size=10", "/blog/stream");
        vars.push(("FCGI_LOG", "debug"));
        if chunked {
            vars.push(("HTTP_TRANSFER_ENCODING", "chunked"));
        } else {
            vars.push(("CONTENT_LENGTH", &len));
        }
        let (written, stdout, err, _) = cgi_body_first(&vars, body.clone(), false);
        assert!(written.is_ok(), "chunked={chunked}: {written:?}\n{err}");
        let text = String::from_utf8_lossy(&stdout);
        assert!(text.starts_with("Status: 200 OK\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\naaaaaaaaaa"), "{text}");
        assert!(
            err.contains("dropped 2097152 bytes of the request body the app did not read"),
            "chunked={chunked}: {err}"
        );
    }
}

/// The same with a response larger than the pipe: it goes out while the body is
/// dropped, rather than both sides waiting for each other.
#[test]
fn an_unread_body_and_a_large_response() {
    let body = vec![b'u'; 2 * 1024 * 1024];
    let len = body.len().to_string();
    let mut vars = base("POST", "/stream", "chunks=64&size=65536", "/blog/stream");
    vars.push(("CONTENT_LENGTH", &len));
    let (written, stdout, err, took) = cgi_body_first(&vars, body, false);
    assert!(written.is_ok(), "{written:?}\n{err}");
    let pos = stdout.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(stdout.starts_with(b"Status: 200 OK\r\n"));
    assert_eq!(stdout.len() - pos - 4, 64 * 65536);
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// A client that stops sending its body does not keep the process: each read of what
/// is dropped waits FCGI_READ_TIMEOUT at most.
#[test]
fn an_unread_body_that_stalls_is_given_up_after_the_read_timeout() {
    let mut vars = base("POST", "/stream", "chunks=1&size=10", "/blog/stream");
    vars.push(("CONTENT_LENGTH", "1000000"));
    vars.push(("FCGI_READ_TIMEOUT", "1"));
    vars.push(("FCGI_LOG", "debug"));
    let (written, stdout, err, took) = cgi_body_first(&vars, vec![b'u'; 1000], true);
    assert!(written.is_ok(), "{written:?}");
    assert!(stdout.starts_with(b"Status: 200 OK\r\n"));
    assert!(took < Duration::from_secs(10), "{took:?}\n{err}");
    assert!(
        err.contains("stopped dropping the unread request body"),
        "{err}"
    );
}
