#!/usr/bin/env python3
"""An experiment, not part of bench/run.sh: how much machine code a request runs.

Counts the distinct 64-byte lines of code an app executes about once a request or more,
from a callgrind profile taken with --dump-instr=yes, and lists the functions that hold
them. A path that runs from cold caches (after the kernel's work for each request's
system calls has evicted it) pays for each such line, whatever the instruction count;
unlike a timing, the count is the same from run to run (BENCHMARKS.md, "Where the
targets are missed", 28 Nov 05:50).

Usage (from the project root, after bench/run.sh has built target/bench/):
  FCGI_THREADS=8 target/bench/bin/fcgi-shim bench --spawn valgrind --tool=callgrind \\
      --dump-instr=yes --callgrind-out-file=/tmp/app.cg target/bench/bin/hello \\
      -- -c 8 -n 10000 --warmup 0 --timeout 60
  python3 bench/experiments/hot-code.py /tmp/app.cg 10000 [FUNCTIONS]

Build the app with symbols (CARGO_PROFILE_RELEASE_STRIP=none) for the function names.
"""
import collections
import re
import sys


def parse(path):
    """Per instruction address: how often it ran (callgrind's Ir at that address), and
    the function it belongs to."""
    runs = collections.Counter()
    owner = {}
    names = {}
    fn = None
    addr = 0
    call_cost_next = False
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            if line[0].isalpha():
                # fn=(id) name / cfn=(id) name: a name is given once, then its id.
                m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
                if m:
                    if m.group(3):
                        names[m.group(2)] = m.group(3)
                    if m.group(1) == "fn":
                        fn = names.get(m.group(2), "?")
                # The cost line after calls= is the call's inclusive cost.
                call_cost_next = line.startswith("calls=")
                continue
            fields = line.split()
            pos = fields[0]
            if pos.startswith("0x"):
                addr = int(pos, 16)
            elif pos[0] in "+-":
                addr += int(pos)
            elif pos != "*":
                continue
            if call_cost_next:
                call_cost_next = False
                continue
            if len(fields) > 2 and fields[2].isdigit():
                runs[addr] += int(fields[2])
                owner[addr] = fn
    return runs, owner


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, requests = sys.argv[1], int(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 25
    runs, owner = parse(path)
    # A line is entered at least as often as its most-run instruction runs.
    line_runs = collections.Counter()
    for a, n in runs.items():
        line_runs[a >> 6] = max(line_runs[a >> 6], n)
    hot = {ln for ln, n in line_runs.items() if n >= requests / 2}
    print(f"code lines run at least once in two requests: {len(hot)} "
          f"({len(hot) * 64 / 1024:.1f} KiB)")
    by_fn = collections.defaultdict(set)
    for a, fn in owner.items():
        if a >> 6 in hot:
            by_fn[fn].add(a >> 6)
    for fn, lines in sorted(by_fn.items(), key=lambda kv: -len(kv[1]))[:top]:
        print(f"{len(lines):6d}  {fn}")


if __name__ == "__main__":
    main()
