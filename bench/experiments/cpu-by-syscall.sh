#!/bin/bash
# An experiment, not part of bench/run.sh: where a FastCGI app's CPU goes per request,
# split into user space and each system call, from `perf record -e cpu-clock` (a
# software clock: it works in a VM without hardware counters). Run it for fcgi-shim
# and for a peer and compare the columns (BENCHMARKS.md, "Where the targets are
# missed", 28 Nov 05:50).
#
# Usage (from the project root, after bench/run.sh has built target/bench/):
#   bash bench/experiments/cpu-by-syscall.sh [-c N] [--keep-conn] -- PROGRAM [ARG...]
# e.g.
#   FCGI_THREADS=8 bash bench/experiments/cpu-by-syscall.sh -c 8 -- target/bench/bin/hello
#   bash bench/experiments/cpu-by-syscall.sh -c 8 -- \
#       python3 bench/helper.py prefork 8 target/bench/bin/hello-libfcgi
#
# Prints, per request: CPU µs in user space, in each system call (by the C library
# function that made it), and in other kernel work (interrupts, softirqs). perf's
# sampling costs the app some speed; compare apps measured the same way only.
set -euo pipefail
cd "$(dirname "$0")/../.."
opts=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
[ $# -gt 1 ] || { echo "usage: $0 [bench options] -- PROGRAM [ARG...]" >&2; exit 2; }
shift
bench=target/bench/bin/fcgi-shim
dir=$(mktemp -d)
trap 'kill "$top" 2>/dev/null; pkill -P "$top" 2>/dev/null; rm -rf "$dir"' EXIT
sock=$dir/app.sock
python3 bench/helper.py spawn "$sock" "$@" &
top=$!
sleep 0.7
"$bench" bench --socket "$sock" "${opts[@]}" -d 1 >/dev/null
pids=$(echo "$top" $(pgrep -P "$top" || true) | tr ' ' ,)
perf record -q -e cpu-clock -F 10000 -g -p "$pids" -o "$dir/perf.data" -- \
    "$bench" bench --socket "$sock" "${opts[@]}" -d 5 --warmup 0 --json >"$dir/run.json"
perf script -i "$dir/perf.data" -F comm,ip,sym,dso 2>/dev/null >"$dir/stacks.txt"
python3 - "$dir/run.json" "$dir/stacks.txt" <<'EOF'
import collections, json, sys

run = json.load(open(sys.argv[1]))
requests, seconds = run["requests"], run["seconds"]
# perf script: a header line (comm), then one frame a line: "ip symbol (dso)".
# A frame's dso says kernel or user; the first user-space frame under the kernel's
# system-call entry is the C library function that made the call.
where = collections.Counter()
samples = 0
for block in open(sys.argv[2]).read().split("\n\n"):
    frames = [l.strip() for l in block.strip().split("\n")[1:] if l.strip()]
    if not frames:
        continue
    samples += 1
    kernel = ["[kernel.kallsyms]" in f for f in frames]
    names = [f.split(None, 1)[-1].rsplit(" (", 1)[0] for f in frames]
    if not kernel[0]:
        where["user space"] += 1
    elif any("entry_SYSCALL" in n for n in names):
        user = [n for n, k in zip(names, kernel) if not k]
        where["syscall " + (user[0] if user else "?")] += 1
    else:
        where["other kernel work"] += 1
# 10,000 samples a second per CPU the app ran on: a sample is 100 µs of CPU.
print(f"{requests} requests in {seconds:.1f} s ({run['rps']:.0f}/s under perf), "
      f"{samples} samples")
print(f"{'where':40s} {'CPU µs a request':>16s} {'share':>7s}")
for name, n in where.most_common():
    print(f"{name:40s} {n * 100 / requests:16.2f} {n / samples:7.1%}")
print(f"{'total':40s} {samples * 100 / requests:16.2f}")
EOF
