#!/usr/bin/env python3
"""Helpers for bench/run.sh (Python standard library only).

  helper.py spawn SOCKET PROGRAM [ARG...]
      Binds a Unix socket, listens, puts it on fd 0 and execs PROGRAM -- what
      mod_fcgid, lighttpd and spawn-fcgi do. The process keeps this process's pid,
      so the caller ($!) knows the pid to read /proc/PID/status or attach strace to.
  helper.py prefork N PROGRAM [ARG...]
      With the listening socket already on fd 0: starts N copies of PROGRAM sharing it
      (what `spawn-fcgi -F N` does for single-process servers such as libfcgi apps),
      forwards SIGTERM/SIGINT to them and waits for them.
  helper.py echo-body SOCKET BYTES
      One FastCGI request POST /echo-body with a body of BYTES, written by one thread
      while another reads the streamed-back response (upload and download at once).
      Prints one JSON object.
  helper.py syscalls STRACE_SUMMARY REQUESTS
      Turns an `strace -c` summary into JSON: total calls per request and the
      per-request count of each system call.
  helper.py perf-syscalls PERF_STAT_CSV REQUESTS
      The same from `perf stat -x,` counts of raw_syscalls:sys_enter (every call)
      and syscalls:sys_enter_NAME tracepoints (the rest is counted as `other`).
  helper.py app-procs SESSION EXE
      How many processes of SESSION run EXE (mod_fcgid's processes of one app).
  helper.py fcgid-prespawn URL N SESSION EXE
      Has mod_fcgid start N processes of the app at URL (EXE, in the session of the
      Apache whose pid is SESSION) before it is measured; prints how many it has.
  helper.py wrk < WRK_OUTPUT
      Parses `wrk --latency` output into JSON (req/s, p50/p99 in ms, errors).
  helper.py json-str < TEXT
      Prints stdin as one JSON string.
  helper.py report RAW.jsonl OUT.md
      Renders the Markdown results (figures, ratios, targets) from run.sh's raw data.
  helper.py check-report RAW.jsonl
      Renders RAW.jsonl (CI runs it on bench/last-run.jsonl, the raw data of the run
      BENCHMARKS.md quotes) and fails when a section is missing or a target row has no
      figure, so a change to the report cannot silently drop one.
"""

import json
import math
import os
import socket
import struct
import sys
import tempfile
import threading
import time

# ---- spawn ----


def spawn(args):
    path, argv = args[0], args[1:]
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(128)
    os.dup2(s.fileno(), 0)  # fd 0 is inheritable; s itself is close-on-exec
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.execvp(argv[0], argv)


def prefork(args):
    import signal

    n, argv = int(args[0]), args[1:]
    kids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os.execvp(argv[0], argv)
        kids.append(pid)

    def forward(sig, _frame):
        for k in kids:
            try:
                os.kill(k, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while kids:
        pid, _ = os.wait()
        if pid in kids:
            kids.remove(pid)


def session_pids(session):
    """Pids of the processes of session `session` (an Apache's, with mod_fcgid's apps)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[3]) == session:
                    found.append(int(d))
        except (OSError, ValueError, IndexError):
            pass
    return found


def runs(pid, exe):
    try:
        return os.readlink(f"/proc/{pid}/exe") == exe
    except OSError:
        return False


def app_procs(session, exe):
    """Pids of the processes of `session` running `exe` (mod_fcgid's apps, in the
    session of the Apache that started them)."""
    return [p for p in session_pids(session) if runs(p, exe)]


def count_app_procs(args):
    print(len(app_procs(int(args[0]), args[1])))


def task_cpu_ns(pid):
    """On-CPU time of every thread of `pid` (schedstat, ns); 0 once it is gone."""
    total = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return total


def session_cpu(args):
    """CPU time so far of the processes of session SESSION that run EXE (an app of
    mod_fcgid's) and of the rest of the session (Apache's processes, mod_fcgid's
    process manager), as JSON: taken before and after a wrk run, their differences
    divided by the requests are each side's CPU per request."""
    session, exe = int(args[0]), args[1]
    apps = app_ns = other_ns = 0
    for p in session_pids(session):
        if runs(p, exe):
            apps += 1
            app_ns += task_cpu_ns(p)
        else:
            other_ns += task_cpu_ns(p)
    print(json.dumps({"procs": apps, "app_ns": app_ns, "other_ns": other_ns}))


def fcgid_prespawn(args):
    """Makes mod_fcgid start N processes of one app before it is measured.

    mod_fcgid starts another process of an app only when a request has found every
    process busy, slept a whole second (fcgid_bridge.c) and still found none free;
    with fast requests that rarely happens, so under `wrk -c8` it settles at however
    many processes its start-up happened to leave (5 to 8 in these runs), and a request
    that finds them all busy waits a second: that second was every app's p99 here. So
    each process the app has is stopped (SIGSTOP) and given a request, which keeps it
    busy; one more request then finds none free and has mod_fcgid start another. At N
    processes all are continued and the held requests answered. Prints the count."""
    import signal
    import urllib.request

    url, n, session, exe = args[0], int(args[1]), int(args[2]), args[3]
    held = []

    def get():
        try:
            urllib.request.urlopen(url, timeout=60).read()
        except OSError as e:
            print(f"fcgid-prespawn: {url}: {e}", file=sys.stderr)

    def send():
        t = threading.Thread(target=get)
        t.start()
        held.append(t)

    deadline = time.monotonic() + 60
    holding = set()
    try:
        while time.monotonic() < deadline:
            have = app_procs(session, exe)
            if len(have) >= n:
                break
            fresh = [pid for pid in have if pid not in holding]
            for pid in fresh:
                os.kill(pid, signal.SIGSTOP)
            # Each idle (now stopped) process takes one request and holds it...
            for _ in fresh:
                send()
            holding.update(fresh)
            time.sleep(0.3)
            # ...so this one finds none free: after its second, a new process.
            send()
            while time.monotonic() < deadline and len(app_procs(session, exe)) <= len(have):
                time.sleep(0.05)
    finally:
        for pid in app_procs(session, exe):
            os.kill(pid, signal.SIGCONT)
    for t in held:
        t.join()
    print(len(app_procs(session, exe)))


# ---- FastCGI echo-body client ----

MAX_CHUNK = 65528  # a multiple of 8: full STDIN records need no padding


def record(rtype, content):
    pad = (-len(content)) % 8
    return struct.pack(">BBHHBx", 1, rtype, 1, len(content), pad) + content + b"\0" * pad


def pair(k, v):
    k, v = k.encode(), v.encode()

    def ln(n):
        return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)

    return ln(len(k)) + ln(len(v)) + k + v


def echo_body(args):
    path, size = args[0], int(args[1])
    params = b"".join(
        pair(k, v)
        for k, v in [
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("REQUEST_METHOD", "POST"),
            ("SCRIPT_NAME", "/echo.fcgi"),
            ("SCRIPT_FILENAME", "/var/www/echo.fcgi"),
            ("PATH_INFO", "/echo-body"),
            ("QUERY_STRING", ""),
            ("REQUEST_URI", "/echo.fcgi/echo-body"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("SERVER_NAME", "localhost"),
            ("SERVER_PORT", "80"),
            ("REMOTE_ADDR", "127.0.0.1"),
            ("HTTP_HOST", "localhost"),
            ("CONTENT_LENGTH", str(size)),
            ("CONTENT_TYPE", "application/octet-stream"),
        ]
    )
    head = record(1, struct.pack(">HB5x", 1, 0)) + record(4, params) + record(4, b"")
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(path)
    err = []

    def send():
        try:
            c.sendall(head)
            full = record(5, b"x" * MAX_CHUNK)
            left = size
            while left >= MAX_CHUNK:
                c.sendall(full)
                left -= MAX_CHUNK
            if left:
                c.sendall(record(5, b"x" * left))
            c.sendall(record(5, b""))
        except OSError as e:
            err.append(str(e))

    t0 = time.monotonic()
    th = threading.Thread(target=send)
    th.start()
    buf = bytearray(1 << 20)
    mv = memoryview(buf)
    hdr = bytearray()  # partial header
    content_left = pad_left = 0
    rtype = 0
    stdout = 0
    first = bytearray()  # the first bytes of STDOUT (status line)
    end = bytearray()
    done = False
    while not done:
        n = c.recv_into(buf)
        if n == 0:
            break
        i = 0
        while i < n:
            if content_left == 0 and pad_left == 0:
                take = min(8 - len(hdr), n - i)
                hdr += mv[i : i + take]
                i += take
                if len(hdr) == 8:
                    _, rtype, _, clen, plen, _ = struct.unpack(">BBHHBB", hdr)
                    hdr.clear()
                    content_left, pad_left = clen, plen
                    if rtype == 3 and clen == 0:
                        done = True
                continue
            if content_left:
                k = min(content_left, n - i)
                if rtype == 6:
                    stdout += k
                    if len(first) < 64:
                        first += mv[i : i + min(k, 64)]
                elif rtype == 3:
                    end += mv[i : i + k]
                content_left -= k
                i += k
            else:
                k = min(pad_left, n - i)
                pad_left -= k
                i += k
            if rtype == 3 and content_left == 0 and pad_left == 0:
                done = True
    secs = time.monotonic() - t0
    th.join()
    status_ok = not first.startswith(b"Status:") or first.startswith(b"Status: 200")
    ok = done and not err and status_ok and stdout >= size
    print(
        json.dumps(
            {
                "ok": ok,
                "bytes_up": size,
                "stdout_bytes": stdout,
                "seconds": round(secs, 3),
                "mib_per_s_each_way": round(size / secs / 1048576, 1),
                "errors": err,
            }
        )
    )


# ---- strace -c summary ----


def syscalls(args):
    path, n = args[0], int(args[1])
    calls = {}
    total = None
    for line in open(path):
        f = line.split()
        if len(f) < 5 or not f[0].replace(".", "").isdigit():
            continue
        try:
            count = int(f[3])
        except ValueError:
            continue
        if f[-1] == "total":
            total = count
        else:
            calls[f[-1]] = count
    if total is None:
        total = sum(calls.values())
    per = {k: round(v / n, 2) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])}
    print(json.dumps({"requests": n, "total_calls": total, "per_request": round(total / n, 2), "calls": per}))


def perf_syscalls(args):
    # `perf stat -x,` lines: count,unit,event,... ; raw_syscalls:sys_enter is every call.
    path, n = args[0], int(args[1])
    calls = {}
    total = None
    for line in open(path):
        f = line.strip().split(",")
        if len(f) < 3 or not f[0].isdigit():
            continue
        count, event = int(f[0]), f[2]
        if event == "raw_syscalls:sys_enter":
            total = count
        elif event.startswith("syscalls:sys_enter_"):
            calls[event[len("syscalls:sys_enter_"):]] = count
    if total is None:
        raise SystemExit("no raw_syscalls:sys_enter count in " + path)
    other = total - sum(calls.values())
    if other > 0:
        calls["other"] = other
    per = {k: round(v / n, 2) for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v}
    print(json.dumps({"requests": n, "total_calls": total, "per_request": round(total / n, 2), "calls": per}))


# ---- wrk output ----


def to_ms(v):
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60000.0)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return None


def wrk(_args):
    text = sys.stdin.read()
    r = {"rps": None, "p50_ms": None, "p99_ms": None, "errors": 0, "requests": None}
    for line in text.splitlines():
        f = line.split()
        if line.startswith("Requests/sec:"):
            r["rps"] = float(f[1])
        elif len(f) == 2 and f[0] == "50%":
            r["p50_ms"] = to_ms(f[1])
        elif len(f) == 2 and f[0] == "99%":
            r["p99_ms"] = to_ms(f[1])
        elif "requests in" in line:
            r["requests"] = int(f[0])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            r["errors"] += int(f[-1])
        elif line.strip().startswith("Socket errors:"):
            r["errors"] += sum(int(x.strip(",")) for x in f if x.strip(",").isdigit())
    print(json.dumps(r))


def json_str(_args):
    print(json.dumps(sys.stdin.buffer.read().decode("utf-8", "replace")))


# ---- report ----


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def fmt(x, nd=0):
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}"


def ratio(a, b, nd=2):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.{nd}f}×"


def median_interval(v, level=0.95):
    """A distribution-free confidence interval for the median of what `v` samples: the
    order statistics x(k), x(n+1-k) with the largest k for which
    P(Binomial(n, 1/2) < k) <= (1 - level) / 2. Returns (low, high, the level it has),
    or None when n is too small for any k >= 1 to qualify."""
    v = sorted(v)
    n = len(v)
    tail, k, best = 0.0, 0, None
    while k < n // 2 + 1:
        # tail = P(Binomial(n, 1/2) < k + 1) after adding the k term.
        tail += math.comb(n, k) / 2 ** n
        if tail > (1 - level) / 2:
            break
        k += 1
        best = k
    if best is None:
        return None
    return v[best - 1], v[n - best], 1 - 2 * sum(math.comb(n, i) for i in range(best)) / 2 ** n


def by_rounds(rows, kind, keys, summarize):
    """Rows of `kind` grouped by `keys` (first-seen order), each with `r` = summarize(the
    rounds' results), or None when no round produced one."""
    groups = []
    for r in rows:
        if r["kind"] != kind:
            continue
        g = next((x for x in groups if all(x[k] == r[k] for k in keys)), None)
        if g is None:
            g = {k: r[k] for k in keys}
            g["runs"] = []
            groups.append(g)
        if r.get("r"):
            g["runs"].append(r["r"])
    for g in groups:
        g["r"] = summarize(g["runs"]) if g["runs"] else None
    return groups


def report(args):
    raw, out = args[0], args[1]
    rows = [json.loads(l) for l in open(raw) if l.strip()]
    meta = next((r for r in rows if r["kind"] == "meta"), {})
    L = []
    w = L.append
    w("# fcgi-shim benchmark results\n")
    if meta.get("note"):
        w(f"**{meta['note']}**\n")
    w(f"- command: `{meta.get('command', 'bash bench/run.sh')}`")
    w(f"- settings: {meta.get('settings', '')}")
    w(f"- date: {meta.get('date', '')}")
    w(f"- machine: {meta.get('nproc', '?')} CPUs, {meta.get('cpu', '?')}, kernel {meta.get('kernel', '?')}, {meta.get('os', '')}")
    w(f"- load average when the run started: {meta.get('load', '?')}; at the end: {meta.get('load_end', '?')}")
    w(f"- versions: {meta.get('versions', '')}")
    w("")

    # ---- 1. FastCGI throughput ----
    # One row per (server, concurrency, keep-conn): the median of the rounds' figures.
    fc = by_rounds(rows, "fcgi", ("server", "c", "keep"), lambda runs: {
        "rps": median([x["rps"] for x in runs]),
        "p50_us": median([x["p50_us"] for x in runs]),
        "p99_us": median([x["p99_us"] for x in runs]),
        "errors": sum(x["errors"] for x in runs),
        "round_rps": [round(x["rps"]) for x in runs],
        "round_p99": [x["p99_us"] for x in runs],
        # CPU per request (µs) of the server (all threads and processes) and of the load
        # generator; older raw files lack it (-1 or missing: not shown).
        "cpu_us": median([x.get("server_cpu_us", -1) for x in runs]),
        "client_cpu_us": median([x.get("client_cpu_us", -1) for x in runs]),
        # Server CPU ÷ the load generator's, per round: the load generator does the same
        # work per request for every server, so this cancels the machine's speed of the
        # moment, which moves req/s by up to 2x between rounds on a noisy VM.
        "cpu_rel": median([x["server_cpu_us"] / x["client_cpu_us"] for x in runs
                           if x.get("server_cpu_us", -1) > 0 and x.get("client_cpu_us", -1) > 0] or [-1]),
    })
    SHIM, SHIM8 = "fcgi-shim hello", "fcgi-shim hello, FCGI_THREADS=8"

    def get(server, c, keep):
        for r in fc:
            if r["server"] == server and r["c"] == c and r["keep"] == keep:
                return r.get("r")
        return None

    def val(r, k):
        return None if r is None else r.get(k)

    def rel(r):
        x = val(r, "cpu_rel")
        return "" if x is None or x < 0 else f"{x:.3f}"

    def cpu(r):
        c, g = val(r, "cpu_us"), val(r, "client_cpu_us")
        if c is None or c < 0:
            return ""
        return f"{c:.1f} ({g:.1f})" if g is not None and g >= 0 else f"{c:.1f}"

    w("## 1. FastCGI on a listening socket on fd 0 (as mod_fcgid starts an app)\n")
    w("`fcgi-shim bench --spawn PROGRAM -- -c C [--keep-conn] -d SECS --warmup 1 --json`, "
      "repeated in BENCH_ROUNDS rounds that take every server in turn; each figure is the "
      "median of the rounds (req/s and p99 of each round in the last two columns): "
      "C client connections over a Unix socket; keep-conn off opens a connection per request "
      "(what mod_fcgid does), on reuses it (FCGI_KEEP_CONN, as nginx keepalive). "
      "Single-process servers (libfcgi, php-cgi with PHP_FCGI_CHILDREN=0, fcgi-shim's default "
      "FCGI_THREADS=1) serve one connection at a time, the other connections wait in the "
      "listen backlog; Go serves each connection in a goroutine; flup's default WSGIServer "
      "is threaded. At concurrency 8 the single-process servers are also run the way they "
      "serve concurrent connections: fcgi-shim with FCGI_THREADS=8, libfcgi as 8 processes "
      "sharing the socket (`bench/helper.py prefork 8`, what `spawn-fcgi -F 8` does), php-cgi "
      "with PHP_FCGI_CHILDREN=8; fcgi-shim also as 8 such processes and with its own 8 worker "
      "processes (FCGI_PROCESSES=8, which know of each other). php-cgi is asked for /hello.php "
      "(see the notes), the others for /.\n")
    w("**Concurrency 8 with keep-conn on, against a server that serves one connection at a "
      "time** (libfcgi and php-cgi as one process): the server keeps serving the first "
      "connection, and the other 7 clients wait in the listen backlog until the run ends and "
      "that connection closes. Those rows measure one connection (p50 equals the "
      "concurrency-1 figure); the 7 starved requests are counted once each, with the whole "
      "run as their latency, which p99 does not show. fcgi-shim with 1 thread (since 28 Nov, "
      "`7ba28cb`) parks a kept-alive connection between its requests and takes the next one "
      "that has a request or is new, so it serves all 8 in turn: its row measures 8 "
      "connections, each of whose requests waits for the others', and its p99 is not "
      "comparable with those one-connection rows. Compare the 8-thread / 8-process rows "
      "there.\n")
    w("Ratios: fcgi-shim ÷ that row (req/s: above 1× is fcgi-shim faster; p99: below 1× is "
      "fcgi-shim better). CPU µs / request: the server's CPU time (user + system, every thread "
      "and child process, from /proc/PID/task/*/schedstat) over the measured window ÷ requests, "
      "and in brackets the load generator's; both include the system calls and scheduling of "
      "each request, and both grow and shrink with the machine's speed of the moment. The load "
      "generator does the same work per request whatever the server, so 'CPU ÷ load "
      "generator's' (per round, median) cancels that speed: it is the steadiest efficiency "
      "figure here (lower is better; a one-connection-at-a-time server with 8 clients also "
      "spends CPU on the waiting connections' backlog).\n")
    servers = [SHIM, SHIM8]
    for r in fc:
        if r["server"] not in servers:
            servers.append(r["server"])
    for c in sorted({r["c"] for r in fc}):
        for keep in (False, True):
            w(f"### concurrency {c}, keep-conn {'on' if keep else 'off'}\n")
            shim_rows = [(SHIM, get(SHIM, c, keep))]
            if get(SHIM8, c, keep) is not None:
                shim_rows.append((SHIM8, get(SHIM8, c, keep)))
            hdr = "| server | req/s | p50 µs | p99 µs | CPU µs / request (load generator's) | CPU ÷ load generator's | errors | rounds' req/s | rounds' p99 µs |"
            sep = "|---|---:|---:|---:|---:|---:|---:|---|---|"
            for name, _ in shim_rows:
                tag = "8 threads" if name == SHIM8 else "1 thread"
                hdr += f" fcgi-shim ({tag}) req/s ÷ | p99 ÷ |"
                sep += "---:|---:|"
            w(hdr)
            w(sep)
            for s in servers:
                r = get(s, c, keep)
                if r is None and not any(x["server"] == s and x["c"] == c and x["keep"] == keep for x in fc):
                    continue
                rr = ", ".join(fmt(v) for v in (r or {}).get("round_rps", []))
                rp = ", ".join(fmt(v) for v in (r or {}).get("round_p99", []))
                line = f"| {s} | {fmt(val(r, 'rps'), 0)} | {fmt(val(r, 'p50_us'))} | {fmt(val(r, 'p99_us'))} | {cpu(r)} | {rel(r)} | {fmt(val(r, 'errors'))} | {rr} | {rp} |"
                for name, sr in shim_rows:
                    if s in (SHIM, SHIM8):
                        line += " | |"
                    else:
                        line += f" {ratio(val(sr, 'rps'), val(r, 'rps'))} | {ratio(val(sr, 'p99_us'), val(r, 'p99_us'))} |"
                w(line)
            w("")

    # Like for like, round by round: both servers of a pair run minutes apart at most
    # within one round, so the ratio of each round cancels the slow swings of the
    # machine's speed that the medians of the rounds keep.
    def round_ratios(a, b, c, keep, k):
        by = {}
        for r in rows:
            if r["kind"] == "fcgi" and r["c"] == c and r["keep"] == keep and r.get("r") and r.get("round"):
                by.setdefault(r["round"], {})[r["server"]] = r["r"].get(k)
        out = []
        for rnd in sorted(by):
            x, y = by[rnd].get(a), by[rnd].get(b)
            if x and y:
                out.append(x / y)
        return out

    LIB, LIB8 = "libfcgi C", "libfcgi C, 8 processes"
    SHIM8P, NOSPIN = "fcgi-shim hello, 8 processes", "fcgi-shim hello, FCGI_SPIN_MICROS=0"
    SHIM8W = "fcgi-shim hello, FCGI_PROCESSES=8"
    SHIMM8 = "fcgi-shim hello (musl build), FCGI_THREADS=8"
    SHIMW8 = "fcgi-shim hello_world (the peers' response), FCGI_THREADS=8"
    SHIMP8 = "fcgi-shim hello (profile-guided build), FCGI_THREADS=8"
    SHIMMP8 = "fcgi-shim hello (musl profile-guided build), FCGI_THREADS=8"
    SHIMP, SHIMMP = "fcgi-shim hello (profile-guided build)", "fcgi-shim hello (musl profile-guided build)"
    pairs = [(SHIM, LIB, 1, False, "1 thread vs 1 process, c=1, new connections"),
             (SHIM, LIB, 1, True, "1 thread vs 1 process, c=1, keep-conn"),
             (SHIM, LIB, 8, False, "1 thread vs 1 process, c=8, new connections"),
             (SHIM, LIB, 8, True, "1 thread vs 1 process, c=8, keep-conn (one connection)"),
             (SHIM8, LIB8, 8, False, "8 threads vs 8 processes, c=8, new connections"),
             (SHIM8, LIB8, 8, True, "8 threads vs 8 processes, c=8, keep-conn"),
             (SHIMM8, LIB8, 8, False, "8 threads (musl build) vs 8 processes, c=8, new connections"),
             (SHIMM8, LIB8, 8, True, "8 threads (musl build) vs 8 processes, c=8, keep-conn"),
             (SHIM8P, LIB8, 8, False, "8 processes vs 8 processes, c=8, new connections"),
             (SHIM8P, LIB8, 8, True, "8 processes vs 8 processes, c=8, keep-conn"),
             (SHIM8W, LIB8, 8, False, "FCGI_PROCESSES=8 vs 8 processes, c=8, new connections"),
             (SHIM8W, LIB8, 8, True, "FCGI_PROCESSES=8 vs 8 processes, c=8, keep-conn"),
             (NOSPIN, LIB, 1, False, "FCGI_SPIN_MICROS=0 (1 thread) vs 1 process, c=1, new connections"),
             (NOSPIN, LIB, 1, True, "FCGI_SPIN_MICROS=0 (1 thread) vs 1 process, c=1, keep-conn"),
             (SHIM, NOSPIN, 1, False, "spin (default) vs FCGI_SPIN_MICROS=0, c=1, new connections"),
             (SHIM, NOSPIN, 1, True, "spin (default) vs FCGI_SPIN_MICROS=0, c=1, keep-conn")]
    for name, build in ((SHIMP, "profile-guided"), (SHIMMP, "musl profile-guided")):
        pairs += [(name, LIB, 1, False, f"1 thread ({build} build) vs 1 process, c=1, new connections"),
                  (name, LIB, 1, True, f"1 thread ({build} build) vs 1 process, c=1, keep-conn"),
                  (name, LIB, 8, False, f"1 thread ({build} build) vs 1 process, c=8, new connections")]
    prs = [(d, round_ratios(a, b, c, keep, "rps"), round_ratios(a, b, c, keep, "p99_us"))
           for a, b, c, keep, d in pairs]
    if any(q for _, q, _ in prs):
        w("### fcgi-shim ÷ libfcgi (and spin ÷ no spin) round by round\n")
        w("Each round runs both servers of a pair within half a minute of each other, so the ratio taken "
          "in each round cancels the slower swings of the machine's speed that the medians "
          "above keep; the median of those ratios is the steadier like-for-like figure.\n")
        w("| pair | rounds' req/s ratios | median | rounds' p99 ratios | median |")
        w("|---|---|---:|---|---:|")
        for d, q, p99 in prs:
            if not q:
                continue
            w(f"| {d} | {', '.join(f'{x:.2f}' for x in q)} | {median(q):.2f}× | "
              f"{', '.join(f'{x:.2f}' for x in p99)} | {median(p99):.2f}× |" if p99 else
              f"| {d} | {', '.join(f'{x:.2f}' for x in q)} | {median(q):.2f}× | | |")
        w("")

    # The paired rounds of 8 threads against 8 libfcgi processes (section 1b), for each
    # build of fcgi-shim that took part (the dynamic one, and the musl one when built),
    # hello_world, the peers' own response, and the profile-guided builds; and of 1
    # thread against 1 libfcgi process at 8 clients, new connections (section 1c).
    paired = []
    # (server, its partner, keep) -> {"rps"/"p99_us": (shown, interval)}: the targets
    # judge these pairs by it.
    paired_ci = {}
    by = {}  # (kind, keep, round) -> {server: result}
    for r in rows:
        if r["kind"] in ("fcgi-pair", "fcgi-pair1") and r.get("r"):
            by.setdefault((r["kind"], r["keep"], r["round"]), {})[r["server"]] = r["r"]
    for kind, theirs, mine, build in (
            ("fcgi-pair", LIB8, SHIM8, "8 threads vs 8 processes"),
            ("fcgi-pair", LIB8, SHIMM8, "8 threads vs 8 processes, musl build"),
            ("fcgi-pair", LIB8, SHIMW8, "8 threads vs 8 processes, hello_world (the peers' response)"),
            ("fcgi-pair", LIB8, SHIMP8, "8 threads vs 8 processes, profile-guided build"),
            ("fcgi-pair", LIB8, SHIMMP8, "8 threads vs 8 processes, musl profile-guided build"),
            ("fcgi-pair1", LIB, SHIM, "1 thread vs 1 process"),
            ("fcgi-pair1", LIB, SHIMP, "1 thread vs 1 process, profile-guided build"),
            ("fcgi-pair1", LIB, SHIMMP, "1 thread vs 1 process, musl profile-guided build")):
        for keep, d in ((False, "new connections"), (True, "keep-conn")):
            rounds = [x for (kd, k, _), x in sorted(by.items())
                      if kd == kind and k == keep and mine in x and theirs in x]
            if rounds:
                paired.append((mine, theirs, keep, f"{build}: {d}", rounds))

    def show(v):
        # A list of per-round ratios as "median× [interval] (level)".
        if not v:
            return "n/a"
        ci = median_interval(v)
        inner = f" [{ci[0]:.2f}, {ci[1]:.2f}] ({ci[2] * 100:.0f} %)" if ci else ""
        return f"{median(v):.2f}×{inner}"

    if paired:
        w("### The closest pairs, paired rounds\n")
        w("The pairs that decide the targets at 8 connections, run again on their own. Section 1b: "
          "each round runs fcgi-shim's 8 threads (the dynamic build, and the musl build when it "
          "was built) and libfcgi's 8 processes back to back, each round starting with the next "
          "server, and the ratio is taken in each round. Section 1c (since 28 Nov 10:01): the "
          "same with 1 thread against 1 libfcgi process at 8 clients with new connections, where "
          "the clients queue on a server that takes one connection at a time. Since 28 Nov the "
          "dynamic build also runs "
          "`examples/hello_world`, which answers what the peers answer (a fixed Hello World), "
          "where `examples/hello` formats its mount path: the library like for like. "
          "Since 28 Nov 08:50 the profile-guided builds of hello run too (`bench/pgo.sh`, "
          "trained on a mix of requests that is not this benchmark's; README, \"Faster still\"). "
          "The interval is the distribution-free "
          "confidence interval of the median ratio (order statistics of the rounds' ratios, "
          "binomial coverage, level given); an interval that holds 1.00 means the two are not "
          "told apart by this run.\n")
        w("| c=8, pair | rounds | req/s ratio, median [interval] | rounds fcgi-shim ahead | p99 ratio, median [interval] | "
          "server CPU per request ratio, median | fcgi-shim / libfcgi req/s, medians |")
        w("|---|---:|---|---:|---|---:|---|")
        for mine, theirs, keep, d, rounds in paired:
            def rr(k):
                return [x[mine][k] / x[theirs][k] for x in rounds
                        if x[mine].get(k) and x[theirs].get(k)]
            q = rr("rps")
            cpu = rr("server_cpu_us")
            paired_ci[(mine, theirs, keep)] = {
                k: (show(v), median_interval(v)) if v else None
                for k, v in (("rps", q), ("p99_us", rr("p99_us")))}
            w(f"| {d} | {len(rounds)} | {show(q)} | {sum(1 for x in q if x > 1)} of {len(q)} | {show(rr('p99_us'))} | "
              f"{f'{median(cpu):.2f}×' if cpu else 'n/a'} | "
              f"{fmt(median([x[mine]['rps'] for x in rounds]))} / {fmt(median([x[theirs]['rps'] for x in rounds]))} |")
        w("")

    # ---- 1d. The same offered load ----
    # (server, load) -> (asked req/s, served req/s, p99 µs and libfcgi's (medians),
    # (shown, interval) of the per-round p99 ratio): the targets judge these too.
    rate_ci = {}
    rate_rows = [r for r in rows if r["kind"] == "fcgi-rate" and r.get("r")]
    if rate_rows:
        w("### The same offered load: an open loop (section 1d)\n")
        w("Since 28 Nov 12:04. In section 1 and 1c each client sends its next request as soon as "
          "the last is answered (a closed loop), so each server sets its own load: at 1 thread "
          "against 1 libfcgi process fcgi-shim serves some 1.5× as many requests, and the load "
          "generator, on the same 2 CPUs, is that much busier, which shows in the p99. Here both "
          "get the same requests at the same times: `fcgi-shim bench --rate R -c 8` sends R "
          "requests/s in all, on a schedule, whatever the server does, and each latency counts "
          "from when the request was due, so a server that falls behind shows its queue (as "
          "wrk2). R is 50 % and 75 % of libfcgi's median req/s in 1c, this run. Each round takes "
          "the servers in turn; the ratio is taken per round; the interval is as above.\n")
        w("| offered load | server | rounds | req/s asked / served (median) | p50 µs | p99 µs | max µs | "
          "p99 ÷ libfcgi's, median [interval] | rounds with the lower p99 | errors |")
        w("|---|---|---:|---|---:|---:|---:|---|---:|---:|")
        for load in sorted({r["load"] for r in rate_rows}):
            at = [r for r in rate_rows if r["load"] == load]
            asked = median([r["rate"] for r in at])
            by_round = {}
            for r in at:
                by_round.setdefault(r["round"], {})[r["server"]] = r["r"]
            servers = [LIB] + [sv for sv in dict.fromkeys(r["server"] for r in at) if sv != LIB]
            lib_p99 = median([x[LIB]["p99_us"] for x in by_round.values() if LIB in x] or [0])
            for sv in servers:
                runs = [x[sv] for x in by_round.values() if sv in x]
                if not runs:
                    continue
                served, p99 = median([x["rps"] for x in runs]), median([x["p99_us"] for x in runs])
                v = [x[sv]["p99_us"] / x[LIB]["p99_us"] for x in by_round.values()
                     if sv != LIB and sv in x and LIB in x and x[LIB]["p99_us"]]
                if v:
                    rate_ci[(sv, load)] = (asked, served, p99, lib_p99, show(v), median_interval(v))
                w(f"| {load * 100:.0f} % of libfcgi's | {sv} | {len(runs)} | {fmt(asked)} / {fmt(served)} | "
                  f"{fmt(median([x['p50_us'] for x in runs]))} | {fmt(p99)} | {fmt(median([x['max_us'] for x in runs]))} | "
                  f"{show(v) if v else ''} | {f'{sum(1 for x in v if x < 1)} of {len(v)}' if v else ''} | "
                  f"{sum(x['errors'] for x in runs)} |")
        w("")

    # ---- 2. CGI ----
    cg = by_rounds(rows, "cgi", ("server",), lambda rd: {
        "runs": sum(x["runs"] for x in rd),
        "median_us": median([x["median_us"] for x in rd]),
        "p90_us": median([x["p90_us"] for x in rd]),
        "round_medians": [x["median_us"] for x in rd],
    })
    w("## 2. CGI start-up: exec to complete response\n")
    w("`fcgi-shim cgi-time PROGRAM -n N/5 --json` (CGI environment, stdin /dev/null), in 5 rounds "
      "that take the programs in turn, so a burst of load elsewhere hits them alike; the figure "
      "is the median of the 5 rounds' medians (p90: of their p90s). php-cgi runs through the "
      "script's `#!/usr/bin/php-cgi` line, as under mod_cgi.\n")
    base = next((r.get("r") for r in cg if r["server"] == "minimal C CGI"), None)
    shim = next((r.get("r") for r in cg if r["server"] == "fcgi-shim hello"), None)
    w("| program | runs | median µs | p90 µs | round medians µs | ÷ minimal C CGI (median) | fcgi-shim ÷ this (median) |")
    w("|---|---:|---:|---:|---|---:|---:|")
    for r in cg:
        x = r.get("r")
        rm = ", ".join(str(v) for v in (x or {}).get("round_medians", []))
        w(f"| {r['server']} | {fmt(val(x, 'runs'))} | {fmt(val(x, 'median_us'))} | {fmt(val(x, 'p90_us'))} | {rm} | "
          f"{ratio(val(x, 'median_us'), val(base, 'median_us'))} | "
          f"{'' if r['server'] == 'fcgi-shim hello' else ratio(val(shim, 'median_us'), val(x, 'median_us'))} |")
    w("")

    # ---- 3. RSS ----
    rs = [r for r in rows if r["kind"] == "rss"]
    w("## 3. Memory of one FastCGI process\n")
    w("Started with a listening socket on fd 0 (`bench/helper.py spawn`); idle = VmRSS 1 s after "
      "start, before any request; then `fcgi-shim bench --socket S -n 10000 -c 1 --warmup 0` "
      "(a connection per request) and VmRSS / VmHWM from /proc/PID/status.\n")
    shim_rss = next((r for r in rs if r["server"] == SHIM), None)
    w("| server | idle RSS KiB | RSS after 10,000 requests KiB | peak (VmHWM) KiB | threads | fcgi-shim ÷ this (RSS after) |")
    w("|---|---:|---:|---:|---:|---:|")
    for r in rs:
        w(f"| {r['server']} | {fmt(r.get('idle_rss_kib'))} | {fmt(r.get('rss_kib'))} | {fmt(r.get('hwm_kib'))} | "
          f"{fmt(r.get('threads'))} | {'' if r['server'] == SHIM else ratio(val(shim_rss, 'rss_kib'), r.get('rss_kib'))} |")
    w("")
    if rs:
        w("The response each server gives (FastCGI STDOUT, `fcgi-shim request`):\n")
        w("| server | path | STDOUT |")
        w("|---|---|---|")
        for r in rs:
            resp = (r.get("response") or "").replace("\r", "\\r").replace("\n", "\\n").replace("|", "\\|")
            w(f"| {r['server']} | {r.get('path', '/')} | `{resp}` |")
        w("")

    # ---- 4. Apache ----
    ap = [r for r in rows if r["kind"] == "apache"]
    if ap:
        w("## 4. End to end: Apache 2.4 + mod_fcgid, `wrk` on loopback\n")
        am = next((r for r in rows if r["kind"] == "apache-meta"), {})
        w(am.get("desc", "") + "\n")
        # One row per app: the median of its rounds (a run before rounds has one each).
        servers = list(dict.fromkeys(r["server"] for r in ap))
        by_server = {sv: [r for r in ap if r["server"] == sv] for sv in servers}

        def med(sv, key):
            v = [r[key] for r in by_server[sv] if r.get(key) is not None]
            return median(v) if v else None

        def round_ratios(sv):
            # fcgi-shim ÷ this app, round by round (rounds both have).
            shim = {r.get("round", 1): r.get("rps") for r in by_server.get(SHIM, [])}
            out = []
            for r in by_server[sv]:
                a, b = shim.get(r.get("round", 1)), r.get("rps")
                if a and b:
                    out.append(a / b)
            return out

        def ap_cpu(sv):
            app, apache = med(sv, "app_cpu_us"), med(sv, "apache_cpu_us")
            return "n/a" if app is None else f"{app:.1f} ({fmt(apache, 1)})"

        w("| app | req/s | p50 ms | p99 ms | non-2xx / errors | app processes | CPU µs / request: app (Apache) "
          "| rounds' req/s | rounds' p99 ms | fcgi-shim ÷ this (req/s) | round by round | median |")
        w("|---|---:|---:|---:|---:|---:|---:|---|---|---:|---|---:|")
        for sv in servers:
            app_runs = by_server[sv]
            rr = [] if sv == SHIM else round_ratios(sv)
            w(f"| {sv} | {fmt(med(sv, 'rps'), 0)} | {fmt(med(sv, 'p50_ms'), 2)} | {fmt(med(sv, 'p99_ms'), 2)} | "
              f"{fmt(sum(r.get('errors') or 0 for r in app_runs))} | {fmt(app_runs[-1].get('procs'))} | "
              f"{ap_cpu(sv)} | "
              f"{', '.join(fmt(r.get('rps'), 0) for r in app_runs)} | {', '.join(fmt(r.get('p99_ms'), 2) for r in app_runs)} | "
              f"{'' if sv == SHIM else ratio(med(SHIM, 'rps') if SHIM in by_server else None, med(sv, 'rps'))} | "
              f"{', '.join(f'{x:.2f}' for x in rr)} | {f'{median(rr):.2f}×' if rr else ''} |")
        w("")

    # ---- 5. 1 GiB ----
    big = [r for r in rows if r["kind"] == "big"]
    w("## 5. 1 GiB through the echo example\n")
    w("The echo example on fd 0; throughput = 1 GiB ÷ seconds; peak RSS = VmHWM of the app process "
      "at the end.\n")
    w("| transfer | how | seconds | MiB/s | app peak RSS (VmHWM) KiB | ok |")
    w("|---|---|---:|---:|---:|---|")
    for r in big:
        w(f"| {r['what']} | {r['how']} | {fmt(r.get('seconds'), 2)} | {fmt(r.get('mib_s'), 0)} | {fmt(r.get('hwm_kib'))} | {r.get('ok')} |")
    w("")

    # ---- 6. size and syscalls ----
    sz = [r for r in rows if r["kind"] == "size"]
    w("## 6. Binary size and system calls per request\n")
    w("Stripped size (`strip` on a copy; fcgi-shim's release profile already strips).\n")
    shim_sz = next((r for r in sz if r["server"] == SHIM), None)
    w("| binary | stripped bytes | KiB | linked | fcgi-shim ÷ this |")
    w("|---|---:|---:|---|---:|")
    for r in sz:
        w(f"| {r['server']} | {fmt(r['bytes'])} | {fmt(r['bytes'] / 1024, 0)} | {r.get('linked', '')} | "
          f"{'' if r['server'] == SHIM else ratio(val(shim_sz, 'bytes'), r['bytes'])} |")
    w("")
    intros = {
        "syscalls": "System calls per request: `strace -c -f -p PID` attached to the spawned app during "
        "`fcgi-shim bench --socket S -n N -c 1 --warmup 0 [--keep-conn]`; total calls ÷ N "
        "(includes the few calls of start-up after attaching, spread over N).\n",
        "syscalls-perf": "The same without a tracer: `perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_… -p PID` "
        "on the app during the same `fcgi-shim bench` run, total calls ÷ N. strace stops the app at every "
        "call, so under it the load generator runs ahead and the app finds the next connection already "
        "queued more often than it would; these counts are what an untraced app makes.\n",
    }
    for kind, intro in intros.items():
        sc = [r for r in rows if r["kind"] == kind]
        if not sc:
            continue
        w(intro)
        w("| server | keep-conn | requests | syscalls / request | breakdown per request | fcgi-shim ÷ this |")
        w("|---|---|---:|---:|---|---:|")
        for r in sc:
            x = r.get("r") or {}
            br = ", ".join(f"{k} {v:g}" for k, v in x.get("calls", {}).items() if v >= 0.01)
            sh = next((y.get("r") for y in sc if y["server"] == SHIM and y["keep"] == r["keep"]), None)
            w(f"| {r['server']} | {'on' if r['keep'] else 'off'} | {fmt(x.get('requests'))} | {fmt(x.get('per_request'), 2)} | {br} | "
              f"{'' if r['server'] == SHIM else ratio(val(sh, 'per_request'), x.get('per_request'))} |")
        w("")

    # ---- targets ----
    w("## Targets (issue 5)\n")

    def mark(ok):
        return "n/a" if ok is None else ("met" if ok else "**missed**")

    def cmp(a, b, f):
        return None if a is None or b is None else f(a, b)

    def judge(ci, higher_is_better):
        # A lead only when the whole interval is on the right side of 1.00.
        if ci is None:
            return "n/a (too few paired rounds for an interval)"
        lo, hi, _ = ci
        if (lo > 1.0) if higher_is_better else (hi < 1.0):
            return f"met (ahead: the interval's {'low' if higher_is_better else 'high'} end is {lo if higher_is_better else hi:.3f})"
        if (hi < 1.0) if higher_is_better else (lo > 1.0):
            return "**missed** (behind)"
        return "**level** (the interval holds 1.00)"

    w("At concurrency 8 fcgi-shim is compared like for like: 1 thread with one libfcgi "
      "process, 8 threads with 8 libfcgi processes (with keep-conn on, the one-at-a-time "
      "pairing measures a single connection, see section 1); against Go, which always serves "
      "connections concurrently, the 8-thread row counts.\n")
    w("| target | measured | met? |")
    w("|---|---|---|")
    LIB8 = "libfcgi C, 8 processes"
    pairs = []
    for c in sorted({r["c"] for r in fc}):
        for keep in (False, True):
            kc = f"c={c}, keep-conn {'on' if keep else 'off'}"
            if c == 1:
                pairs.append((kc, "", SHIM, "libfcgi C", SHIM))
            else:
                pairs.append((kc, ", 1 thread vs 1 process", SHIM, "libfcgi C", SHIM8))
                pairs.append((kc, ", 8 threads vs 8 processes", SHIM8, LIB8, None))
                if any(r.get("server") == SHIMM8 for r in fc):
                    pairs.append((kc, ", 8 threads (musl build) vs 8 processes", SHIMM8, LIB8, None))
    # The profile-guided builds with 8 threads run in the paired rounds (1b) only.
    for name, build in ((SHIMP8, "profile-guided build"), (SHIMMP8, "musl profile-guided build")):
        for keep in (False, True):
            if (name, LIB8, keep) in paired_ci:
                pairs.append((f"c=8, keep-conn {'on' if keep else 'off'}",
                              f", 8 threads ({build}) vs 8 processes", name, LIB8, None))

    def against(mine, theirs, c, keep, label, suffix=""):
        # The throughput and p99 rows of one pair: section 1's medians where the pair
        # ran there; the pairs at c=8 are judged by their paired rounds when the run
        # has them, since section 1's medians of 5 rounds swing by more than the
        # difference between two.
        m, lib = get(mine, c, keep), get(theirs, c, keep)
        pr = paired_ci.get((mine, theirs, keep)) if c == 8 else None
        for k, what, better, unit in (("rps", "throughput ≥ 1.0× libfcgi C", True, " req/s"),
                                      ("p99_us", "p99 ≤ libfcgi's", False, " µs")):
            parts, verdict = [], mark(cmp(val(m, k), val(lib, k),
                                          (lambda a, b: a >= b) if better else (lambda a, b: a <= b)))
            if m is not None:
                parts.append(f"{ratio(val(m, k), val(lib, k))} ({fmt(val(m, k), 0)} vs {fmt(val(lib, k), 0)}{unit})")
            if pr and pr[k]:
                parts.append(f"paired rounds {pr[k][0]}")
                verdict = judge(pr[k][1], higher_is_better=better)
            w(f"| {what} ({label}) | {'; '.join(parts)}{suffix} | {verdict} |")

    for kc, how, mine, theirs, vs_go in pairs:
        c = int(kc.split(",")[0][2:])
        keep = kc.endswith("on")
        degenerate = " (one connection served; see section 1)" if (c > 1 and keep and mine == SHIM) else ""
        against(mine, theirs, c, keep, kc + how, degenerate)
        if vs_go:
            g, go = get(vs_go, c, keep), get("Go net/http/fcgi", c, keep)
            ok = cmp(val(g, "rps"), val(go, "rps"), lambda a, b: a >= 1.5 * b)
            tag = "1 thread" if vs_go == SHIM else "8 threads"
            w(f"| throughput ≥ 1.5× Go ({kc}, fcgi-shim {tag}) | {ratio(val(g, 'rps'), val(go, 'rps'))} "
              f"({fmt(val(g, 'rps'), 0)} vs {fmt(val(go, 'rps'), 0)} req/s) | {mark(ok)} |")
    # The other builds, one thread against one libfcgi process: c=1, and (where a build
    # ran there: the profile-guided ones) c=8 with new connections, judged by section
    # 1c's paired rounds when the run has them.
    BUILDS = [("", SHIM)] + [(f" ({b} build)", f"{SHIM} ({b} build)")
                             for b in ("static", "musl", "profile-guided", "musl profile-guided")
                             if any(r.get("server") == f"{SHIM} ({b} build)" for r in rows)]
    for build, name in BUILDS[1:]:
        for c, keep in ((1, False), (1, True), (8, False)):
            if get(name, c, keep) is not None:
                against(name, LIB, c, keep, f"c={c}, keep-conn {'on' if keep else 'off'}, {build.strip(' ()')}")
    # The same pairs at the same offered load (section 1d), judged by the paired p99
    # ratio; a server that did not serve 97 % of what was asked is missed outright.
    for (sv, load), (asked, served, p99, lib_p99, shown, ci) in rate_ci.items():
        build = next((b for b, n in BUILDS if n == sv), None)
        label = f"c=8, keep-conn off, 1 thread vs 1 process, an open loop at {load * 100:.0f} % of libfcgi's req/s"
        label += f", {build.strip(' ()')}" if build else ""
        verdict = judge(ci, higher_is_better=False)
        if served < 0.97 * asked:
            verdict = f"**missed** (served {fmt(served)} of {fmt(asked)} req/s)"
        w(f"| p99 ≤ libfcgi's at the same offered load ({label}) | paired rounds {shown} "
          f"({fmt(p99)} vs {fmt(lib_p99)} µs, medians) | {verdict} |")
    # The main build's rows always show (n/a when a section did not run); another
    # build's only where it took part (raw files from before 28 Nov 10:01 have the
    # profile-guided builds in sections 1b and 6 only).
    for build, name in BUILDS:
        x = next((r.get("r") for r in cg if r["server"] == name), None)
        if x is None and name != SHIM:
            continue
        ok = cmp(val(x, "median_us"), val(base, "median_us"), lambda a, b: a <= 1.3 * b)
        w(f"| CGI start-up ≤ 1.3× minimal C CGI{build} | {ratio(val(x, 'median_us'), val(base, 'median_us'))} "
          f"({fmt(val(x, 'median_us'))} vs {fmt(val(base, 'median_us'))} µs median) | {mark(ok)} |")
    lib_rss = next((r for r in rs if r["server"] == "libfcgi C"), None)
    for build, name in BUILDS:
        x = next((r for r in rs if r["server"] == name), None)
        if x is None and name != SHIM:
            continue
        a, b = val(x, "rss_kib"), val(lib_rss, "rss_kib")
        ok = cmp(a, b, lambda a, b: a <= 1.5 * b)
        w(f"| RSS after 10,000 requests ≤ 1.5× libfcgi C's{build} | {ratio(a, b)} ({fmt(a)} vs {fmt(b)} KiB) | {mark(ok)} |")
        ok = None if a is None else a < 4096
        w(f"| RSS after 10,000 requests < 4 MiB{build} | {fmt(a)} KiB | {mark(ok)} |")
    for r in big:
        ok = None if r.get("hwm_kib") is None else (r.get("ok") is True and r["hwm_kib"] < 16384)
        w(f"| 1 GiB {r['what']} with peak RSS < 16 MiB | {fmt(r.get('hwm_kib'))} KiB, {fmt(r.get('mib_s'), 0)} MiB/s, ok={r.get('ok')} | {mark(ok)} |")
    for build, name in BUILDS:
        b = val(next((r for r in sz if r["server"] == name), None), "bytes")
        ok = None if b is None else b <= 1048576
        w(f"| hello ≤ 1 MiB stripped{build} | {fmt(b)} bytes ({fmt(b / 1024 if b else None, 0)} KiB) | {mark(ok)} |")
    w("")
    w("## Notes\n")
    w("- php-cgi in FastCGI mode runs the file named by SCRIPT_FILENAME, which `fcgi-shim bench` "
      "always sends as /var/www/hello.fcgi. It is started with `-d cgi.fix_pathinfo=0 -d "
      "doc_root=target/bench/www`, so it runs doc_root + PATH_INFO, and asked for /hello.php.")
    w("- Idle RSS and the strace runs need the app's pid before any request: the app is started "
      "by `bench/helper.py spawn` (a listening Unix socket on fd 0, then exec, so the pid is "
      "known) and loaded with `fcgi-shim bench --socket`.")
    w("- The 1 GiB up-and-down run uses `bench/helper.py echo-body`, which reports the upload and "
      "download rates separately.")
    w("- Responses are equivalent, not identical: fcgi-shim's hello answers \"Hello from "
      "<script_name><path>\" with Status and Content-Length (it formats a string per request); "
      "the peers answer a fixed \"Hello World\" with Content-Type and Content-Length (Go adds "
      "Date). See the response table in section 3.")
    notes = [r for r in rows if r["kind"] == "note"]
    for r in notes:
        w(f"- {r['text']}")
    w("")
    open(out, "w").write("\n".join(L))


def median_rps(args):
    # median-rps RAW SERVER C KEEP(true|false) KIND...: the median req/s of SERVER's
    # runs at concurrency C in this run, from the first KIND that has any (nothing
    # printed when none does).
    raw, server, c, keep, kinds = args[0], args[1], int(args[2]), args[3] == "true", args[4:]
    rows = [json.loads(l) for l in open(raw) if l.strip()]
    for kind in kinds:
        v = [r["r"]["rps"] for r in rows if r["kind"] == kind and r.get("server") == server
             and r.get("c") == c and r.get("keep") == keep and r.get("r")]
        if v:
            print(round(median(v)))
            return


def check_report(args):
    raw = args[0]
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "results.md")
        report([raw, out])
        text = open(out, encoding="utf-8").read()
    kinds = {json.loads(line)["kind"] for line in open(raw, encoding="utf-8") if line.strip()}
    wanted = {"fcgi": "## 1.", "cgi": "## 2.", "rss": "## 3.", "apache": "## 4.",
              "big": "## 5.", "size": "## 6."}
    problems = [f"section {h!r} missing (the raw data has {k!r} rows)"
                for k, h in wanted.items() if k in kinds and h not in text]
    targets = text.split("## Targets", 1)
    if len(targets) < 2:
        problems.append("no Targets section")
    else:
        rows = [l for l in targets[1].split("\n## ", 1)[0].splitlines()
                if l.startswith("| ") and not l.startswith("| target")]
        if not rows:
            problems.append("the Targets table is empty")
        problems += [f"target row without a figure: {l}" for l in rows if "n/a" in l]
    for p in problems:
        print(f"check-report: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"check-report: ok ({raw}: {len(rows)} target rows, every one with its figure)")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "spawn": spawn,
        "prefork": prefork,
        "app-procs": count_app_procs,
        "session-cpu": session_cpu,
        "fcgid-prespawn": fcgid_prespawn,
        "echo-body": echo_body,
        "syscalls": syscalls,
        "perf-syscalls": perf_syscalls,
        "wrk": wrk,
        "json-str": json_str,
        "report": report,
        "check-report": check_report,
        "median-rps": median_rps,
    }[cmd](args)


if __name__ == "__main__":
    main()
