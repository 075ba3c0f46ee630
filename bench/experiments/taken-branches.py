#!/usr/bin/env python3
"""An experiment, not part of bench/run.sh: the branches a request takes, and where.

A taken branch sends the front end of the CPU somewhere other than the next line of
code; with the branch predictor cold (after the kernel's work for a request's system
calls, or a switch to another of 8 threads) each one costs a stall. The profile-guided
build takes half as many per request as the plain one, at about the same instruction
count, and spends 2 us less user time a request at 8:8 (BENCHMARKS.md, "Where the
targets are missed", 28 Nov 14:10). Unlike a timing, the count is the same from run to
run, so a change to the request path can be judged by it.

Usage (from the project root, after bench/run.sh has built target/bench/):
  FCGI_THREADS=8 target/bench/bin/fcgi-shim bench --spawn valgrind --tool=callgrind \\
      --dump-instr=yes --collect-jumps=yes --callgrind-out-file=/tmp/app.cg APP \\
      -- -c 8 -n 10000 --warmup 0 --timeout 200
  python3 bench/experiments/taken-branches.py /tmp/app.cg 10000 [APP]

Prints the taken branches a request (unconditional jumps, and conditional ones that
were taken, of all executed), by function. With APP, also the sites in APP's own code
taken most, with the source lines they come from (`addr2line`): build APP with
CARGO_PROFILE_RELEASE_STRIP=none CARGO_PROFILE_RELEASE_DEBUG=line-tables-only for
them, and for a profile-guided build the profile must come from a build with those
same settings (otherwise the compiler ignores it, without a warning).
"""
import collections
import os
import re
import subprocess
import sys


def pos(tok, last):
    """A position of callgrind's compressed format: absolute, relative, or the same."""
    if tok == "*":
        return last
    if tok[0] in "+-":
        return last + int(tok)
    return int(tok, 16) if tok.startswith("0x") else int(tok)


def parse(path, own_object):
    """Per function: [jumps, conditional taken, conditional executed]; and per source
    address in `own_object` (a file name): [taken, executed]."""
    names, objects = {}, {}
    per_fn = collections.defaultdict(lambda: [0, 0, 0])
    per_site = collections.defaultdict(lambda: [0, 0])
    fn, ob, last, pending = "?", None, 0, None
    with open(path) as f:
        for line in f:
            head = line[:4]
            m = re.match(r"(c?fn|c?ob)=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
            if m:
                # A name is given once, then only its id; fn/cfn share ids, ob/cob too.
                table = names if m.group(1).endswith("fn") else objects
                if m.group(3):
                    table[m.group(2)] = m.group(3)
                if m.group(1) == "fn":
                    fn = names.get(m.group(2), "?")
                elif m.group(1) == "ob":
                    ob = objects.get(m.group(2))
                continue
            if head.startswith("jump") or head.startswith("jcnd"):
                # The target's position is relative to the jump's, which is the
                # position of the line that follows (usually "*": the last one).
                kind, count = line.split("=", 1)
                count = count.split()[0]
                if kind == "jump":
                    taken = executed = int(count)
                    per_fn[fn][0] += taken
                else:
                    taken, executed = (int(x) for x in count.split("/"))
                    per_fn[fn][1] += taken
                    per_fn[fn][2] += executed
                pending = (taken, executed)
                continue
            if line[0] in "+-*0123456789":
                last = pos(line.split()[0], last)
                if pending is not None:
                    if own_object and ob and os.path.basename(ob) == own_object:
                        per_site[last][0] += pending[0]
                        per_site[last][1] += pending[1]
                    pending = None
                continue
            pending = None
    return per_fn, per_site


def sources(binary, addrs):
    """Each address's source line and the two it was inlined into (innermost first)."""
    out = subprocess.run(["addr2line", "-a", "-i", "-e", binary] + [hex(a) for a in addrs],
                         capture_output=True, text=True).stdout.splitlines()
    where, cur = {}, None
    for line in out:
        if line.startswith("0x"):
            cur = int(line, 16)
            where[cur] = []
        elif cur is not None:
            line = re.sub(r" \(discriminator \d+\)", "", line)
            # Shortened: crates.io's crates from their name, std from its crate, this
            # crate from src/ (or examples/).
            line = re.sub(r"^.*?/registry/src/[^/]+/", "", line)
            line = re.sub(r"^.*?/library/", "", line)
            line = re.sub(r"^/\S*?/(src|examples)/", r"\1/", line)
            where[cur].append(line)
    return {a: " <- ".join(w[:3]) for a, w in where.items()}


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, requests = sys.argv[1], int(sys.argv[2])
    binary = sys.argv[3] if len(sys.argv) > 3 else None
    per_fn, per_site = parse(path, os.path.basename(binary) if binary else None)
    jumps = sum(v[0] for v in per_fn.values()) / requests
    taken = sum(v[1] for v in per_fn.values()) / requests
    executed = sum(v[2] for v in per_fn.values()) / requests
    print(f"taken branches a request: {jumps + taken:.0f} "
          f"(jumps {jumps:.0f}; conditional {taken:.0f} taken of {executed:.0f})")
    print("  jumps  taken / run  function")
    for name, (j, t, e) in sorted(per_fn.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:15]:
        print(f"  {j / requests:5.0f}  {t / requests:5.0f} / {e / requests:3.0f}  {name[:90]}")
    if binary:
        top = sorted(per_site.items(), key=lambda kv: -kv[1][0])[:25]
        where = sources(binary, [a for a, _ in top])
        print(f"\nthe sites in {os.path.basename(binary)} taken most (taken / run a request):")
        for a, (t, e) in top:
            print(f"  {t / requests:5.1f} / {e / requests:5.1f}  {where.get(a, '?')[:150]}")


if __name__ == "__main__":
    main()
