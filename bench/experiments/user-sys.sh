#!/bin/bash
# An experiment, not part of bench/run.sh: a FastCGI app's CPU per request in user
# space and in the kernel, from the app's own resource usage (getrusage of the
# process after it exits, with every process it waited for), over one
# `fcgi-shim bench` run, warm-up included. No perf or counters needed. It told the
# profile-guided build's 8:8 lead apart: 2 us less user time a request
# (BENCHMARKS.md, "Where the targets are missed", 28 Nov 14:10).
#
# Usage (from the project root, after bench/run.sh has built target/bench/):
#   bash bench/experiments/user-sys.sh [bench options] -- PROGRAM [ARG...]
# e.g.
#   FCGI_THREADS=8 bash bench/experiments/user-sys.sh -c 8 -d 3 -- target/bench/bin/hello
#   bash bench/experiments/user-sys.sh -c 8 -d 3 -- \
#       python3 bench/helper.py prefork 8 target/bench/bin/hello-libfcgi
#
# Prints req/s, p99, and user and system CPU µs per request. Run the apps to compare
# in turns, a few rounds each: a round's figures move by 5-10 % on this VM.
set -euo pipefail
cd "$(dirname "$0")/../.."
opts=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
[ $# -gt 1 ] || { echo "usage: $0 [bench options] -- PROGRAM [ARG...]" >&2; exit 2; }
shift
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# The wrapper runs PROGRAM as its child (which inherits the listening socket on fd 0),
# sits out the stop signal bench sends the group, waits, and writes the child's usage.
cat >"$dir/rusage.py" <<'EOF'
import os, resource, signal, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
signal.signal(signal.SIGTERM, lambda *a: None)
signal.signal(signal.SIGINT, lambda *a: None)
while True:
    try:
        os.waitpid(pid, 0)
        break
    except InterruptedError:
        continue
r = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    f.write(f"{r.ru_utime} {r.ru_stime}\n")
EOF
target/bench/bin/fcgi-shim bench --spawn python3 "$dir/rusage.py" "$dir/usage" "$@" -- \
    "${opts[@]}" --json >"$dir/out.json"
python3 - "$dir/out.json" "$dir/usage" <<'EOF'
import json, sys
o = json.load(open(sys.argv[1]))
user, system = (float(x) for x in open(sys.argv[2]).read().split())
n = o["requests"] + o["warmup_requests"]
print(f"{o['rps']:.0f} req/s, p99 {o['p99_us']} us; per request: "
      f"user {user * 1e6 / n:.2f} us, system {system * 1e6 / n:.2f} us")
EOF
