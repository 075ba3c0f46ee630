#!/bin/bash
# An experiment, not part of bench/run.sh: how many distinct 4 KiB pages (and 64-byte
# lines) of code and of data a FastCGI app touches per request. Each page is a TLB
# entry; on a machine whose CPU has no PCID (this VM's AMD EPYC) every switch to
# another process empties the TLB, and in a VM each refill is a two-level page walk
# (BENCHMARKS.md, "Where the targets are missed", 28 Nov 08:00).
#
# Usage (from the project root, after bench/run.sh has built target/bench/):
#   bash bench/experiments/pages-touched.sh PROGRAM [ARG...]
# e.g.
#   bash bench/experiments/pages-touched.sh target/bench/bin/hello
#   bash bench/experiments/pages-touched.sh target/bench/bin/hello-libfcgi
#
# Runs PROGRAM under valgrind's lackey (every instruction fetch and data access),
# sends it 400 kept-alive requests at c=1, and counts what a slice of the trace from
# the steady state (70-75 % of the way through: about 20 requests, past start-up and
# before the exit) touches. Requests repeat the same path, so that is about what one
# request touches. Needs valgrind; takes about 15 s and 100 MB in a temporary folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] || { echo "usage: $0 PROGRAM [ARG...]" >&2; exit 2; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
target/bench/bin/fcgi-shim bench --spawn valgrind --tool=lackey --trace-mem=yes \
    --log-file="$dir/trace" "$@" -- -c 1 --keep-conn -n 400 --warmup 0 --timeout 120 \
    >/dev/null
python3 - "$dir/trace" <<'EOF'
import sys

path = sys.argv[1]
with open(path) as f:
    total = sum(1 for _ in f)
start, end = int(total * 0.70), int(total * 0.75)
code_pages, code_lines, data_pages, data_lines = set(), set(), set(), set()
with open(path) as f:
    for i, line in enumerate(f):
        if i < start:
            continue
        if i > end:
            break
        # lackey: "I  addr,size" for a fetch; " L", " S" or " M" for a data access.
        kind = line[:2]
        if kind not in ("I ", " L", " S", " M"):
            continue
        addr = int(line[3:].split(",")[0], 16)
        if kind == "I ":
            code_pages.add(addr >> 12)
            code_lines.add(addr >> 6)
        else:
            data_pages.add(addr >> 12)
            data_lines.add(addr >> 6)
print(f"code: {len(code_pages)} pages, {len(code_lines)} lines")
print(f"data: {len(data_pages)} pages, {len(data_lines)} lines")
print(f"pages in all: {len(code_pages) + len(data_pages)}")
EOF
