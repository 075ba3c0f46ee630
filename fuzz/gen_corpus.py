#!/usr/bin/env python3
"""Writes seed inputs for the fuzz targets into fuzz/corpus/<target>/ (gitignored).

Standard library only. Run from anywhere: `python3 fuzz/gen_corpus.py`. Existing files
are kept (seeds are named by content hash, so reruns add nothing twice).

connection seeds are `chunk (2 bytes, big endian; the target uses 1 + n % 4096)`,
`threads (1 byte; 1 + n % 16)`, then the bytes a web server sends: BEGIN_REQUEST,
PARAMS (REQUEST_METHOD, PATH_INFO, QUERY_STRING, CONTENT_LENGTH, ...), STDIN, with
FCGI_KEEP_CONN on and off, GET_VALUES, ABORT_REQUEST, a second BEGIN on a busy
connection, unknown types and roles, large records. The fuzzing app (src/fuzzing.rs)
reacts to paths starting with /stream, /panic, /noread and /log.

cgi_request seeds are a byte choosing FORCE_SCRIPT_NAME, then an FCGI_PARAMS block;
record_pairs seeds the same blocks; response_head seeds a status and `name\0value\0`
pieces; scgi seeds SCGI request heads (netstring, CONTENT_LENGTH first), valid and not.
"""

import hashlib
import os
import struct
import sys

BEGIN, ABORT, END, PARAMS, STDIN, STDOUT, STDERR, DATA, GET_VALUES = range(1, 10)
RESPONDER, AUTHORIZER, FILTER = 1, 2, 3
KEEP_CONN = 1


def record(rtype, rid, content=b"", padding=None):
    if padding is None:
        padding = (8 - len(content) % 8) % 8
    return struct.pack(">BBHHBx", 1, rtype, rid, len(content), padding) + content + b"\0" * padding


def length(n):
    return bytes([n]) if n < 0x80 else struct.pack(">I", n | 0x80000000)


def pairs(items):
    out = b""
    for name, value in items:
        name, value = name.encode(), value.encode() if isinstance(value, str) else value
        out += length(len(name)) + length(len(value)) + name + value
    return out


def cgi_vars(method="GET", path="/", query="", body_len=None, extra=()):
    v = [
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_METHOD", method),
        ("SCRIPT_NAME", "/blog/mysite.fcgi"),
        ("PATH_INFO", path),
        ("QUERY_STRING", query),
        ("REQUEST_URI", "/blog" + path + ("?" + query if query else "")),
        ("SCRIPT_URL", "/blog" + path),
        ("HTTP_HOST", "example.com"),
        ("REMOTE_ADDR", "127.0.0.1"),
    ]
    if body_len is not None:
        v += [("CONTENT_LENGTH", str(body_len)), ("CONTENT_TYPE", "text/plain")]
    return v + list(extra)


def request(rid, vars_, body=b"", keep=False, role=RESPONDER, split_params=False, end_stdin=True,
            stdin_record=5000):
    flags = KEEP_CONN if keep else 0
    out = record(BEGIN, rid, struct.pack(">HB5x", role, flags))
    block = pairs(vars_)
    if split_params and len(block) > 3:
        out += record(PARAMS, rid, block[:3]) + record(PARAMS, rid, block[3:])
    elif block:
        out += record(PARAMS, rid, block)
    out += record(PARAMS, rid)
    for i in range(0, len(body), stdin_record):
        out += record(STDIN, rid, body[i:i + stdin_record])
    if end_stdin:
        out += record(STDIN, rid)
    return out


def connection_seeds():
    body = b"hello world"
    get_values = record(GET_VALUES, 0, pairs([
        ("FCGI_MAX_CONNS", ""), ("FCGI_MAX_REQS", ""), ("FCGI_MPXS_CONNS", ""), ("FCGI_SHIM_DRAINING", ""),
        ("OTHER", "")]))
    streams = {
        "get_close": request(1, cgi_vars(query="a=1&b=%20")),
        "post_keep_twice": request(1, cgi_vars("POST", "/echo", "x=1", len(body)), body, keep=True)
        + request(1, cgi_vars("POST", "/echo", "", len(body)), body, keep=True, split_params=True),
        "post_no_length": request(2, cgi_vars("POST", "/up"), b"x" * 300),
        "post_short_body": request(3, cgi_vars("POST", "/up", body_len=100), b"short"),
        "get_values": get_values + request(1, cgi_vars(), keep=True) + get_values,
        "unknown_management": record(12, 0, b"abc") + request(1, cgi_vars(), keep=True),
        "abort_in_params": record(BEGIN, 1, struct.pack(">HB5x", RESPONDER, KEEP_CONN))
        + record(PARAMS, 1, pairs(cgi_vars())) + record(ABORT, 1) + request(2, cgi_vars()),
        "abort_running": request(1, cgi_vars("POST", "/noread", body_len=20), end_stdin=False,
                                 keep=True)
        + record(ABORT, 1) + request(1, cgi_vars("GET", "/after")),
        "abort_stream": request(1, cgi_vars("GET", "/stream/a/long/path/for/more/output"),
                                keep=True) + record(ABORT, 1),
        "stream": request(1, cgi_vars("GET", "/stream/x")),
        "panic": request(1, cgi_vars("GET", "/panic"), keep=True) + request(2, cgi_vars()),
        "log": request(1, cgi_vars("GET", "/log"), keep=True)
        + request(2, cgi_vars("GET", "/log/stream"), keep=True) + request(3, cgi_vars()),
        "cant_mpx": record(BEGIN, 1, struct.pack(">HB5x", RESPONDER, KEEP_CONN))
        + record(BEGIN, 2, struct.pack(">HB5x", RESPONDER, 0))
        + record(PARAMS, 1, pairs(cgi_vars())) + record(PARAMS, 1) + record(STDIN, 1),
        "filter_role": request(1, cgi_vars(), role=FILTER, keep=True) + request(2, cgi_vars()),
        "authorizer": request(1, [("REMOTE_USER", "bob"), ("PATH_INFO", "/auth")], role=AUTHORIZER),
        "long_params": request(1, cgi_vars(path="/" + "p" * 200, extra=[
            ("HTTP_COOKIE", "c" * 300), ("FORCE_SCRIPT_NAME", "/blog"), ("HTTP_PROXY", "x")])),
        "stray_records": record(STDIN, 9, b"stray") + record(DATA, 1, b"d")
        + request(1, cgi_vars(), keep=True) + record(STDOUT, 1, b"??"),
        "odd_padding": record(BEGIN, 1, struct.pack(">HB5x", RESPONDER, 0), padding=3)
        + record(PARAMS, 1, pairs(cgi_vars("PUT", "/p", body_len=4)), padding=0)
        + record(PARAMS, 1, padding=255) + record(STDIN, 1, b"abcd", padding=0) + record(STDIN, 1),
        # Large records: STDIN read straight into the app's buffer, responses over one
        # record (65528 bytes), a long stream; each followed by a request so it completes.
        "large_body": request(1, cgi_vars("POST", "/echo", body_len=70000), b"b" * 70000,
                              keep=True, stdin_record=65535) + request(2, cgi_vars()),
        "large_response": request(1, cgi_vars("GET", "/" + "r" * 700), keep=True)
        + request(2, cgi_vars()),
        "long_stream": request(1, cgi_vars("GET", "/stream/" + "s" * 92), keep=True)
        + request(2, cgi_vars()),
        "bad_content_length": request(1, cgi_vars("POST", "/", body_len=None,
                                                  extra=[("CONTENT_LENGTH", "-1")])),
    }
    seeds = {}
    for name, stream in streams.items():
        for chunk, threads in ((4095, 0), (0, 3), (6, 0)):  # 4096, 1 and 7 bytes per read
            seeds[f"{name}-{chunk + 1}"] = struct.pack(">HB", chunk, threads) + stream
    return seeds


def cgi_request_seeds():
    tables = {
        "apache_subdir": cgi_vars("GET", "/posts/1", "a=1"),
        "apache_root": [("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "/mysite.fcgi"),
                        ("PATH_INFO", "/x"), ("REQUEST_URI", "/x"), ("REDIRECT_URL", "/x")],
        "nginx_unsplit": [("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "/app/a/b"),
                          ("PATH_INFO", ""), ("REQUEST_URI", "/app/a/b?q")],
        "lighttpd_root": [("REQUEST_METHOD", "POST"), ("SCRIPT_NAME", "/posts"),
                          ("PATH_INFO", "/1"), ("REQUEST_URI", "/posts/1"),
                          ("CONTENT_LENGTH", "3")],
        "forced": [("REQUEST_METHOD", "GET"), ("FORCE_SCRIPT_NAME", "/x/"),
                   ("SCRIPT_NAME", "/x/y"), ("PATH_INFO", "/z"), ("REQUEST_URI", "/x/y/z")],
        "forwarded": [("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "/mysite.fcgi"),
                      ("PATH_INFO", "/p"), ("REQUEST_URI", "/p"),
                      ("HTTP_X_FORWARDED_PREFIX", "/proxied/"),
                      ("HTTP_X_FORWARDED_PROTO", "https"), ("HTTP_X_FORWARDED_HOST", "h"),
                      ("HTTP_X_FORWARDED_FOR", "10.0.0.1, 10.0.0.2")],
        "dots": [("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "/a/mysite.fcgi"),
                 ("PATH_INFO", "/../b/./c//"), ("REQUEST_URI", "/a/%2e%2e/b/c%2F?x=%zz")],
        # mod_rewrite cut PATH_INFO at a decoded %23 (the CutByRewrite repair).
        "hash_cut": [("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "/blog/mysite.fcgi"),
                     ("PATH_INFO", "/a"), ("REDIRECT_URL", "/blog/a#b"),
                     ("QUERY_STRING", ""), ("REQUEST_URI", "/blog/a%23b?q=1")],
        "hash_cut_bare": [("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "mysite.fcgi"),
                          ("PATH_INFO", "/zz"), ("REDIRECT_URL", "/x"),
                          ("REQUEST_URI", "/a%23b")],
    }
    seeds = {}
    for name, t in tables.items():
        for forced in range(4):
            seeds[f"{name}-{forced}"] = bytes([forced]) + pairs(t)
    return seeds


def response_head_seeds():
    def head(status, hs):
        return struct.pack(">H", status) + b"".join(n + b"\0" + v + b"\0" for n, v in hs)
    return {
        "ok": head(200, [(b"content-type", b"text/html"), (b"set-cookie", b"a=1"),
                         (b"set-cookie", b"b=2")]),
        "redirect": head(200, [(b"location", b"/x")]),
        "bytes": head(404, [(b"x-raw", bytes(range(0x80, 0x90))), (b"content-length", b"5")]),
        "odd_status": head(599, [(b"variable-user", b"bob")]),
    }


def scgi_seeds():
    def head(items, body=b"", length=None, comma=b","):
        block = b"".join(n.encode() + b"\0" + v.encode() + b"\0" for n, v in items)
        n = str(len(block) if length is None else length).encode()
        return n + b":" + block + comma + body
    base = [("CONTENT_LENGTH", "5"), ("SCGI", "1"), ("REQUEST_METHOD", "POST"),
            ("REQUEST_URI", "/app/x?y=1"), ("SCRIPT_NAME", "/app"), ("PATH_INFO", "/x"),
            ("QUERY_STRING", "y=1"), ("HTTP_HOST", "example.com")]
    return {
        "nginx_post": head(base, b"hello"),
        "get": head([("CONTENT_LENGTH", "0"), ("SCGI", "1"), ("REQUEST_METHOD", "GET"),
                     ("REQUEST_URI", "/")]),
        "no_scgi_var": head([("CONTENT_LENGTH", "0"), ("REQUEST_METHOD", "GET")]),
        "length_not_first": head([("SCGI", "1"), ("CONTENT_LENGTH", "0")]),
        "empty_value_and_proxy": head([("CONTENT_LENGTH", ""), ("HTTP_PROXY", "x"),
                                       ("", "v"), ("REQUEST_METHOD", "GET")]),
        "short": head(base, length=20),
        "no_comma": head(base, comma=b";"),
        "too_long": b"99999:" + b"A" * 64,
        "ten_digits": b"1234567890:",
        "empty": b"0:,",
    }


def scgi_exchange_seeds():
    seeds = dict(scgi_seeds())
    for path in ["/stream/abc", "/panic", "/noread", "/log"]:
        block = [("CONTENT_LENGTH", "4"), ("SCGI", "1"), ("REQUEST_METHOD", "POST"),
                 ("REQUEST_URI", path), ("PATH_INFO", path)]
        raw = b"".join(n.encode() + b"\0" + v.encode() + b"\0" for n, v in block)
        seeds["path" + path.replace("/", "_")] = str(len(raw)).encode() + b":" + raw + b",body"
    return seeds


def http_seeds():
    def req(line, headers=(), body=b""):
        h = b"".join(n + b": " + v + b"\r\n" for n, v in headers)
        return line + b"\r\n" + h + b"\r\n" + body
    host = (b"Host", b"localhost")
    get = req(b"GET /hello?x=1 HTTP/1.1", [host])
    return {
        "get": get,
        "pipelined": get + req(b"HEAD / HTTP/1.1", [host]) + req(b"GET /noread HTTP/1.1", [host, (b"Connection", b"close")]),
        "post_length": req(b"POST /echo HTTP/1.1", [host, (b"Content-Length", b"5")], b"hello"),
        "post_chunked": req(b"POST /x HTTP/1.1", [host, (b"Transfer-Encoding", b"chunked")],
                            b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n"),
        "expect": req(b"PUT /up HTTP/1.1", [host, (b"Expect", b"100-continue"), (b"Content-Length", b"3")], b"abc"),
        "noread_body": req(b"POST /noread HTTP/1.1", [host, (b"Content-Length", b"10")], b"0123456789") + get,
        "stream": req(b"GET /stream/abc HTTP/1.1", [host]) + get,
        "stream_head": req(b"HEAD /stream HTTP/1.1", [host]) + get,
        "panic": req(b"GET /panic HTTP/1.1", [host]) + get,
        "http10": req(b"GET /a HTTP/1.0", [(b"Connection", b"keep-alive")]) + req(b"GET /stream HTTP/1.0"),
        "absolute": req(b"GET http://localhost/abs/path?q HTTP/1.1", [host]),
        "options": req(b"OPTIONS * HTTP/1.1", [host]),
        "dots": req(b"GET /a/../../etc/%2e%2e/x%2Fy HTTP/1.1", [host]),
        "both_framings": req(b"POST /x HTTP/1.1", [host, (b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked")], b"0\r\n\r\n"),
        "two_lengths": req(b"POST /x HTTP/1.1", [host, (b"Content-Length", b"3"), (b"Content-Length", b"4")], b"abcd"),
        "folded": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n",
        "bare_lf": b"GET / HTTP/1.1\nHost: a\n\n",
        "bad_line": b"GET\r\n\r\n",
        "http2_preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "long_header": req(b"GET / HTTP/1.1", [host, (b"X-Long", b"v" * 9000)]),
        "fastcgi_byte": b"\x01\x01\x00\x01\x00\x08\x00\x00",
    }


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    sets = {
        "connection": connection_seeds(),
        "cgi_request": cgi_request_seeds(),
        "record_pairs": {k: v[1:] for k, v in cgi_request_seeds().items()},
        "response_head": response_head_seeds(),
        "scgi": scgi_seeds(),
        "http": http_seeds(),
        "scgi_exchange": scgi_exchange_seeds(),
    }
    for target, seeds in sets.items():
        d = os.path.join(root, target)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            h = hashlib.sha1(data).hexdigest()[:12]
            with open(os.path.join(d, f"seed-{name}-{h}"), "wb") as f:
                f.write(data)
        print(f"{d}: {len(seeds)} seeds", file=sys.stderr)


if __name__ == "__main__":
    main()
