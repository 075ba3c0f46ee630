#!/usr/bin/env bash
# bench/run.sh: fcgi-shim against its peers (issue 5), side by side in one run.
#
#   bash bench/run.sh
#
# Installs what is missing (apt-get and pip, as root), builds fcgi-shim's hello and echo
# examples, the `fcgi-shim` tool and the peers in bench/peers/ into target/bench/, then
# measures (every load loop bounded in time):
#   1. FastCGI req/s, p50, p99 with the listening socket on fd 0, concurrency 1 and 8,
#      keep-conn off and on: fcgi-shim hello, libfcgi C, Go net/http/fcgi, php-cgi, flup;
#      fcgi-shim also without its spin (FCGI_SPIN_MICROS=0) and as 8 processes, and
#      its other builds (static, musl, profile-guided); then paired rounds of the
#      closest pairs (1b: 8 threads vs 8 processes; 1c: 1 thread vs 1 process at c=8;
#      1d: that pair again at the same offered load, 50 % and 75 % of libfcgi's)
#   2. CGI start-up (exec to complete response): fcgi-shim hello (each build), Go
#      net/http/cgi, php-cgi, a minimal C CGI
#   3. RSS of one FastCGI process, idle and after 10,000 requests
#   4. end to end through Apache 2.4 + mod_fcgid with wrk
#   5. 1 GiB up and down through the echo example, and its peak RSS
#   6. stripped binary sizes, system calls per request (strace -c)
# and writes target/bench/results.md (raw data: target/bench/raw.jsonl, logs:
# target/bench/logs/). About an hour on 2 cores, packages and builds included.
#
# Settings (environment): BENCH_SECS (seconds per load run, default 3), BENCH_ROUNDS
# (rounds of the FastCGI runs, default 5), BENCH_PAIR_ROUNDS (more rounds of 8 threads,
# dynamic and musl builds, against 8 libfcgi processes, default 30), BENCH_PAIR1_ROUNDS
# (more rounds of 1 thread against 1 libfcgi process at 8 clients, new connections,
# default 20), BENCH_RATE_ROUNDS (rounds of that pair at the same offered load, section
# 1d, default 12; 8 in the run of 28 Nov 12:04),
# BENCH_APACHE_ROUNDS (rounds of section 4, default 3), BENCH_CGI_RUNS
# (default 200, in 5 interleaved rounds), BENCH_SYSCALL_REQS (default 2000), BENCH_NOTE
# (a line printed at the top of the results), BENCH_ONLY (the sections to run, default
# "1 2 3 4 5 6"), BENCH_FCGID_CONF (extra mod_fcgid directives), BENCH_SKIP_INSTALL=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
B=$ROOT/target/bench
BIN=$B/bin
LOGS=$B/logs
RUN=$B/run
RAW=$B/raw.jsonl
HELPER=$ROOT/bench/helper.py
SECS=${BENCH_SECS:-3}
ROUNDS=${BENCH_ROUNDS:-5}
PAIR_ROUNDS=${BENCH_PAIR_ROUNDS:-30}
PAIR1_ROUNDS=${BENCH_PAIR1_ROUNDS:-20}
RATE_ROUNDS=${BENCH_RATE_ROUNDS:-12}
APACHE_ROUNDS=${BENCH_APACHE_ROUNDS:-3}
CGI_RUNS=${BENCH_CGI_RUNS:-200}
SYS_REQS=${BENCH_SYSCALL_REQS:-2000}
ONLY=" ${BENCH_ONLY:-1 2 3 4 5 6} "
T0=$(date +%s)

want() { [[ $ONLY == *" $1 "* ]]; }
say() { printf '[bench %4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
# One JSON object per line in raw.jsonl; helper.py report renders them.
jl() { printf '%s\n' "$1" >>"$RAW"; }
jstr() { printf '%s' "$1" | python3 "$HELPER" json-str; }
note() {
    say "NOTE: $*"
    jl "{\"kind\":\"note\",\"text\":$(jstr "$*")}"
}

# ---- 0. install ----

PKGS=(gcc libfcgi-dev golang-go php-cgi python3 python3-venv wrk apache2 libapache2-mod-fcgid strace binutils)
if [ "${BENCH_SKIP_INSTALL:-0}" != 1 ]; then
    missing=()
    for p in "${PKGS[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" = 0 ]; then
            say "installing ${missing[*]}"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        else
            echo "bench/run.sh: missing packages: ${missing[*]} (run as root to install them)" >&2
            exit 1
        fi
    fi
fi

# perf counts system calls without stopping the app at each one (strace does): section
# 6 uses it when it can. Optional: Debian's package; left out where it cannot be had.
if [ "${BENCH_SKIP_INSTALL:-0}" != 1 ] && ! command -v perf >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq --no-install-recommends linux-perf >/dev/null 2>&1 || true
fi

# ---- build ----

mkdir -p "$BIN" "$LOGS" "$RUN" "$B/www"
: >"$RAW"
rm -f "$LOGS"/*

say "building fcgi-shim (release profile) into target/bench/cargo"
cargo build --release --features cli --example hello --example hello_world --example echo \
    --bin fcgi-shim --target-dir "$B/cargo" 2>"$LOGS/cargo-build.log" || {
    cat "$LOGS/cargo-build.log" >&2
    exit 1
}
cp "$B/cargo/release/examples/hello" "$B/cargo/release/examples/hello_world" \
    "$B/cargo/release/examples/echo" "$B/cargo/release/fcgi-shim" "$BIN/"
TOOL=$BIN/fcgi-shim
# The same hello linked statically (glibc included): what the README suggests for
# shared hosts (no glibc version mismatch); bigger, but no dynamic loading at start.
say "building the static hello (RUSTFLAGS=-C target-feature=+crt-static)"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --example hello \
    --target x86_64-unknown-linux-gnu --target-dir "$B/cargo-static" 2>>"$LOGS/cargo-build.log" || {
    cat "$LOGS/cargo-build.log" >&2
    exit 1
}
cp "$B/cargo-static/x86_64-unknown-linux-gnu/release/examples/hello" "$BIN/hello-static"
# And with musl (static, small): needs the target (`rustup target add
# x86_64-unknown-linux-musl`); its rows are left out when it cannot be had.
rm -f "$BIN/hello-musl"
if ! rustc --print target-libdir --target x86_64-unknown-linux-musl 2>/dev/null | xargs -I{} test -d {}; then
    command -v rustup >/dev/null && rustup target add x86_64-unknown-linux-musl >>"$LOGS/cargo-build.log" 2>&1 || true
fi
say "building the musl hello (--target x86_64-unknown-linux-musl)"
if cargo build --release --example hello --target x86_64-unknown-linux-musl \
    --target-dir "$B/cargo-musl" 2>>"$LOGS/cargo-build.log"; then
    cp "$B/cargo-musl/x86_64-unknown-linux-musl/release/examples/hello" "$BIN/hello-musl"
else
    note "the x86_64-unknown-linux-musl target could not be built (see logs/cargo-build.log): no musl rows"
fi
# Profile-guided builds of hello, dynamic and musl (README, "Faster still"), trained by
# bench/pgo.sh on a mix of requests that is not the benchmark's own. They need the
# llvm-profdata of rustc's own LLVM (pgo.sh adds rustup's llvm-tools when missing);
# their rows are left out when it cannot be had.
rm -f "$BIN/hello-pgo" "$BIN/hello-musl-pgo"
say "building the profile-guided hello (bench/pgo.sh: a build, a 25 s training, a build)"
if pgo=$(bash bench/pgo.sh hello x86_64-unknown-linux-gnu 2>>"$LOGS/pgo.log"); then
    cp "$pgo" "$BIN/hello-pgo"
    if [ -x "$BIN/hello-musl" ]; then
        if pgo=$(bash bench/pgo.sh hello x86_64-unknown-linux-musl 2>>"$LOGS/pgo.log"); then
            cp "$pgo" "$BIN/hello-musl-pgo"
        else
            note "the profile-guided musl hello could not be built (see logs/pgo.log): no rows for it"
        fi
    fi
else
    note "the profile-guided hello could not be built (see logs/pgo.log): no PGO rows"
fi

say "building the peers"
gcc -O2 -o "$BIN/hello-libfcgi" bench/peers/hello-libfcgi.c -lfcgi
gcc -O2 -o "$BIN/hello-cgi" bench/peers/hello-cgi.c
(
    # Standard library only: no module download. Caches stay under target/bench.
    export GOCACHE=$B/go/cache GOPATH=$B/go/path GOTOOLCHAIN=local GO111MODULE=off GOFLAGS=
    go build -trimpath -o "$BIN/hello-go-fcgi" bench/peers/hello-go-fcgi.go
    go build -trimpath -o "$BIN/hello-go-cgi" bench/peers/hello-go-cgi.go
)
cp bench/peers/hello.php "$B/www/hello.php"
# As CGI, php-cgi is started through the script's #! line (how PHP runs under mod_cgi):
# the kernel runs `php-cgi hello-cgi.php`, and SCRIPT_FILENAME (which cgi-time sets to
# the program it runs) names the script, so php-cgi reads it.
{
    echo '#!/usr/bin/php-cgi'
    cat bench/peers/hello.php
} >"$B/www/hello-cgi.php"
chmod 755 "$B/www/hello-cgi.php"
cp bench/peers/hello-flup.py "$BIN/hello-flup.py"
if ! [ -x "$B/venv/bin/python" ] || ! "$B/venv/bin/python" -c 'import flup' 2>/dev/null; then
    python3 -m venv "$B/venv"
    "$B/venv/bin/pip" install -q flup
fi

# ---- machine ----

# The builds just loaded the CPU: let the 1-minute load average settle (2 minutes at most).
for _ in $(seq 60); do
    awk '{ exit !($1 < 0.5) }' /proc/loadavg && break
    sleep 2
done
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
NOTE=${BENCH_NOTE:-}
if [ -z "$NOTE" ] && awk -v l="${LOAD_START%% *}" 'BEGIN { exit !(l > 0.5) }'; then
    NOTE="The 1-minute load average was $LOAD_START when the run started: other work was using the CPU, so the figures are noisy."
fi
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
OS=$(. /etc/os-release && echo "$PRETTY_NAME")
VERSIONS="$(rustc --version | cut -d' ' -f1-2); $(go version | cut -d' ' -f3); $(php-cgi -v 2>/dev/null | sed -n 1p | cut -d' ' -f1-2); libfcgi $(dpkg-query -W -f '${Version}' libfcgi-dev 2>/dev/null || echo '?'); flup $("$B/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("flup"))'); $(/usr/sbin/apache2 -v 2>/dev/null | sed -n 1p | cut -d: -f2 | sed 's/^ *//'); mod_fcgid $(dpkg-query -W -f '${Version}' libapache2-mod-fcgid 2>/dev/null || echo '?'); $({ wrk --version 2>&1 || true; } | head -1 | cut -d' ' -f1-2)"
SETTINGS="BENCH_SECS=$SECS (plus 1 s warm-up per FastCGI run), BENCH_ROUNDS=$ROUNDS, BENCH_PAIR_ROUNDS=$PAIR_ROUNDS, BENCH_PAIR1_ROUNDS=$PAIR1_ROUNDS, BENCH_RATE_ROUNDS=$RATE_ROUNDS, BENCH_APACHE_ROUNDS=$APACHE_ROUNDS, BENCH_CGI_RUNS=$CGI_RUNS, BENCH_SYSCALL_REQS=$SYS_REQS, sections: $(echo $ONLY)"
jl "{\"kind\":\"meta\",\"command\":\"bash bench/run.sh\",\"settings\":$(jstr "$SETTINGS"),\"note\":$(jstr "$NOTE"),\"date\":$(jstr "$(date -u '+%Y-%m-%d %H:%M UTC')"),\"nproc\":$(nproc),\"cpu\":$(jstr "$CPU"),\"kernel\":$(jstr "$(uname -r)"),\"os\":$(jstr "$OS"),\"load\":$(jstr "$LOAD_START"),\"load_end\":\"@LOAD_END@\",\"versions\":$(jstr "$VERSIONS")}"

# ---- the FastCGI servers ----

# server KEY: sets SRV_NAME, SRV_ENV (NAME=VALUE...), SRV_ARGV, SRV_PATH.
server() {
    SRV_ENV=()
    SRV_PATH=/
    case $1 in
    shim)
        SRV_NAME="fcgi-shim hello"
        SRV_ENV=(FCGI_THREADS=1)
        SRV_ARGV=("$BIN/hello")
        ;;
    shimstatic | shimmusl | shimpgo | shimmuslpgo)
        # The other builds of hello: bin/hello-static, bin/hello-musl and the
        # profile-guided bin/hello-pgo, bin/hello-musl-pgo.
        local f=${1#shim} build=${1#shim}
        case $f in
        pgo) build=profile-guided ;;
        muslpgo) f=musl-pgo build="musl profile-guided" ;;
        esac
        SRV_NAME="fcgi-shim hello ($build build)"
        SRV_ENV=(FCGI_THREADS=1)
        SRV_ARGV=("$BIN/hello-$f")
        ;;
    shim8)
        SRV_NAME="fcgi-shim hello, FCGI_THREADS=8"
        SRV_ENV=(FCGI_THREADS=8)
        SRV_ARGV=("$BIN/hello")
        ;;
    shimmusl8)
        # The musl build with 8 threads: its malloc takes one process-wide lock, which
        # the examples' global allocator (fcgi_shim::ThreadCache) keeps them off.
        SRV_NAME="fcgi-shim hello (musl build), FCGI_THREADS=8"
        SRV_ENV=(FCGI_THREADS=8)
        SRV_ARGV=("$BIN/hello-musl")
        ;;
    shimw8)
        # examples/hello_world: the peers' own response (a fixed "Hello World" with a
        # Content-Type), where hello formats its mount path; like for like with them.
        SRV_NAME="fcgi-shim hello_world (the peers' response), FCGI_THREADS=8"
        SRV_ENV=(FCGI_THREADS=8)
        SRV_ARGV=("$BIN/hello_world")
        ;;
    shimpgo8 | shimmuslpgo8)
        # The profile-guided builds (bench/pgo.sh), with 8 threads.
        local f=hello-pgo what=""
        [ "$1" = shimmuslpgo8 ] && f=hello-musl-pgo what="musl "
        SRV_NAME="fcgi-shim hello (${what}profile-guided build), FCGI_THREADS=8"
        SRV_ENV=(FCGI_THREADS=8)
        SRV_ARGV=("$BIN/$f")
        ;;
    shimnospin)
        # Without the spin before sleeping (FCGI_SPIN_MICROS=0): what it changes.
        SRV_NAME="fcgi-shim hello, FCGI_SPIN_MICROS=0"
        SRV_ENV=(FCGI_THREADS=1 FCGI_SPIN_MICROS=0)
        SRV_ARGV=("$BIN/hello")
        ;;
    shim8p)
        # 8 one-thread processes on one socket, as libfcgi's 8 below: each spins on
        # its own, so this is where spinning could take CPU from the others.
        SRV_NAME="fcgi-shim hello, 8 processes"
        SRV_ENV=(FCGI_THREADS=1)
        SRV_ARGV=(python3 "$HELPER" prefork 8 "$BIN/hello")
        ;;
    shim8w)
        # fcgi-shim's own 8 worker processes (FCGI_PROCESSES, as php-cgi's
        # PHP_FCGI_CHILDREN): they know of each other, unlike the 8 above.
        SRV_NAME="fcgi-shim hello, FCGI_PROCESSES=8"
        SRV_ENV=(FCGI_THREADS=1 FCGI_PROCESSES=8)
        SRV_ARGV=("$BIN/hello")
        ;;
    libfcgi)
        SRV_NAME="libfcgi C"
        SRV_ARGV=("$BIN/hello-libfcgi")
        ;;
    libfcgi8)
        # 8 processes sharing the socket, as `spawn-fcgi -F 8` starts libfcgi apps.
        SRV_NAME="libfcgi C, 8 processes"
        SRV_ARGV=(python3 "$HELPER" prefork 8 "$BIN/hello-libfcgi")
        ;;
    go)
        SRV_NAME="Go net/http/fcgi"
        SRV_ARGV=("$BIN/hello-go-fcgi")
        ;;
    php)
        # One process (no children), no request limit. In FastCGI mode php-cgi runs
        # the script named by SCRIPT_FILENAME, which `fcgi-shim bench` fixes to
        # /var/www/hello.fcgi; with cgi.fix_pathinfo=0 and doc_root set, php-cgi runs
        # doc_root + PATH_INFO instead, so the request's path is /hello.php.
        SRV_NAME="php-cgi"
        SRV_ENV=(PHP_FCGI_CHILDREN=0 PHP_FCGI_MAX_REQUESTS=0)
        SRV_ARGV=(/usr/bin/php-cgi -d cgi.fix_pathinfo=0 -d "doc_root=$B/www")
        SRV_PATH=/hello.php
        ;;
    php8)
        # php-cgi's own process manager: a master and 8 children sharing the socket.
        SRV_NAME="php-cgi, PHP_FCGI_CHILDREN=8"
        SRV_ENV=(PHP_FCGI_CHILDREN=8 PHP_FCGI_MAX_REQUESTS=0)
        SRV_ARGV=(/usr/bin/php-cgi -d cgi.fix_pathinfo=0 -d "doc_root=$B/www")
        SRV_PATH=/hello.php
        ;;
    flup)
        SRV_NAME="flup (Python)"
        SRV_ARGV=("$B/venv/bin/python" "$BIN/hello-flup.py")
        ;;
    esac
}
PEERS=(shim libfcgi go php flup)
# The other builds of fcgi-shim's hello, where they were built.
BUILDS=(shimnospin shimstatic)
[ -x "$BIN/hello-musl" ] && BUILDS+=(shimmusl)
# Since 28 Nov 10:01 the profile-guided builds run through every row, not only 1b.
PGO1=()
[ -x "$BIN/hello-pgo" ] && PGO1+=(shimpgo)
[ -x "$BIN/hello-musl-pgo" ] && PGO1+=(shimmuslpgo)
BUILDS+=("${PGO1[@]}")

# Start server KEY with a listening socket on fd 0 at SOCK (bench/helper.py spawn);
# sets PID. Its stderr goes to the log.
start() {
    server "$1"
    rm -f "$2"
    env "${SRV_ENV[@]}" python3 "$HELPER" spawn "$2" "${SRV_ARGV[@]}" 2>>"$LOGS/servers.log" &
    PID=$!
}
# Wait until SOCK answers a request (10 s at most).
ready() {
    local i
    for i in $(seq 200); do
        if [ -S "$1" ] && timeout 5 "$TOOL" request --socket "$1" --path "$2" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}
stop() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 60); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
status_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

# ---- 1. FastCGI throughput ----

C8=(shim "${PGO1[@]}" shim8)
[ -x "$BIN/hello-musl" ] && C8+=(shimmusl8)
C8+=(shim8p shim8w libfcgi libfcgi8 go php php8 flup)
fcgi_run() { # KEY C KEEP(0|1) ROUND [KIND]; with RATE set, an open loop at RATE req/s
    server "$1"
    local args=(-c "$2" -d "$SECS" --warmup 1 --path "$SRV_PATH" --json) out keep=false extra=""
    if [ "$3" = 1 ]; then
        args+=(--keep-conn)
        keep=true
    fi
    if [ -n "${RATE:-}" ]; then
        args+=(--rate "$RATE")
        extra=",\"rate\":$RATE,\"load\":$LOAD"
    fi
    if out=$(env "${SRV_ENV[@]}" timeout $((SECS + 60)) "$TOOL" bench --spawn "${SRV_ARGV[@]}" -- "${args[@]}" 2>>"$LOGS/fcgi-bench.log"); then
        say "   round $4: $SRV_NAME c=$2 keep=$keep: $out"
    else
        out=null
        note "FastCGI run failed: $SRV_NAME, c=$2, keep-conn $keep (see target/bench/logs/fcgi-bench.log)"
    fi
    jl "{\"kind\":\"${5:-fcgi}\",\"server\":$(jstr "$SRV_NAME"),\"c\":$2,\"keep\":$keep,\"round\":$4$extra,\"r\":$out}"
}
# One paired round at c=8: every KEY in turn, starting one further along each round, so
# no server always runs first or after the same neighbour.
in_turn() { # ROUND KEEP(0|1) KIND KEY...
    local round=$1 keep=$2 kind=$3 i
    shift 3
    for i in $(seq 0 $(($# - 1))); do
        local at=$(((round + i) % $# + 1))
        fcgi_run "${!at}" 8 "$keep" "$round" "$kind"
    done
}
if want 1; then
    # Rounds take every server in turn, so a burst of load elsewhere (or a noisy
    # neighbour's steal time) hits them alike; the report gives each figure's median.
    say "1. FastCGI throughput: $ROUNDS rounds of concurrency 1 ($((${#BUILDS[@]} + ${#PEERS[@]})) servers), 8 (${#C8[@]}) x keep-conn off, on; ${SECS}s each"
    for round in $(seq "$ROUNDS"); do
        for c in 1 8; do
            for keep in 0 1; do
                keys=(shim "${BUILDS[@]}" "${PEERS[@]:1}")
                [ "$c" = 8 ] && keys=("${C8[@]}")
                for k in "${keys[@]}"; do
                    fcgi_run "$k" "$c" "$keep" "$round"
                done
            done
        done
    done
    # The closest pair, 8 threads against 8 libfcgi processes, has been level within
    # the rounds' spread: more rounds of just those, back to back, give its ratio a
    # confidence interval. The musl build (the one the README recommends) joins them
    # when it was built; each round starts one server further along.
    # Since 28 Nov 06:36 also hello_world, which answers what the peers answer: the
    # library like for like, without hello's formatting.
    PAIR=(shim8 libfcgi8)
    [ -x "$BIN/hello-musl" ] && PAIR+=(shimmusl8)
    PAIR+=(shimw8)
    # Since 28 Nov 08:50 the profile-guided builds too (README, "Faster still").
    [ -x "$BIN/hello-pgo" ] && PAIR+=(shimpgo8)
    [ -x "$BIN/hello-musl-pgo" ] && PAIR+=(shimmuslpgo8)
    say "1b. 8 threads vs 8 libfcgi processes, paired (${PAIR[*]}): $PAIR_ROUNDS rounds x keep-conn off, on; ${SECS}s each"
    for round in $(seq "$PAIR_ROUNDS"); do
        for keep in 0 1; do
            in_turn "$round" "$keep" fcgi-pair "${PAIR[@]}"
        done
    done
    # 1 thread against 1 libfcgi process at 8 clients with new connections: the 8
    # clients queue on a server that takes one connection at a time, and the p99 of
    # this pair has swung from met to 1.16x between runs of 5 rounds. Paired rounds
    # give it an interval too (since 28 Nov 10:01), for each build that serves 1:1.
    PAIR1=(shim libfcgi "${PGO1[@]}")
    say "1c. 1 thread vs 1 libfcgi process at c=8, paired (${PAIR1[*]}): $PAIR1_ROUNDS rounds, keep-conn off; ${SECS}s each"
    for round in $(seq "$PAIR1_ROUNDS"); do
        in_turn "$round" 0 fcgi-pair1 "${PAIR1[@]}"
    done
    # 1d (since 28 Nov 12:04). The same pair at the same offered load: an open loop
    # (`fcgi-shim bench --rate`) at 50 % and 75 % of what libfcgi served in 1c, latency
    # from when each request was due. In 1c's closed loop each server sets its own load
    # (fcgi-shim's is 1.5x libfcgi's), and the load generator, which shares the 2 CPUs,
    # is that much busier; here both get the same requests at the same times.
    RATEK=(shim libfcgi)
    [ -x "$BIN/hello-musl" ] && RATEK+=(shimmusl)
    RATEK+=("${PGO1[@]}")
    cap=$(python3 "$HELPER" median-rps "$RAW" "libfcgi C" 8 false fcgi-pair1 fcgi)
    [ -n "$cap" ] || note "1d skipped: libfcgi has no req/s at c=8, keep-conn off, in this run"
    for LOAD in ${cap:+0.5 0.75}; do
        RATE=$(python3 -c "print(round($cap * $LOAD))")
        say "1d. the same offered load, an open loop at $RATE req/s ($LOAD x libfcgi's $cap in 1c), c=8, keep-conn off (${RATEK[*]}): $RATE_ROUNDS rounds; ${SECS}s each"
        for round in $(seq "$RATE_ROUNDS"); do
            in_turn "$round" 0 fcgi-rate "${RATEK[@]}"
        done
    done
    RATE=""
fi

# ---- 2. CGI start-up ----

cgi_run() { # NAME PROGRAM ROUND
    local out
    if out=$(timeout 600 "$TOOL" cgi-time "$2" -n $((CGI_RUNS / 5)) --json 2>>"$LOGS/cgi.log"); then
        say "   $1, round $3: $out"
    else
        out=null
        note "CGI timing failed: $1, round $3 (see target/bench/logs/cgi.log)"
    fi
    jl "{\"kind\":\"cgi\",\"server\":$(jstr "$1"),\"round\":$3,\"r\":$out}"
}
if want 2; then
    say "2. CGI start-up ($CGI_RUNS runs each, in 5 interleaved rounds)"
    CGIS=("minimal C CGI|$BIN/hello-cgi" "fcgi-shim hello|$BIN/hello" "fcgi-shim hello (static build)|$BIN/hello-static")
    [ -x "$BIN/hello-musl" ] && CGIS+=("fcgi-shim hello (musl build)|$BIN/hello-musl")
    [ -x "$BIN/hello-pgo" ] && CGIS+=("fcgi-shim hello (profile-guided build)|$BIN/hello-pgo")
    [ -x "$BIN/hello-musl-pgo" ] && CGIS+=("fcgi-shim hello (musl profile-guided build)|$BIN/hello-musl-pgo")
    CGIS+=("Go net/http/cgi|$BIN/hello-go-cgi" "php-cgi (as CGI)|$B/www/hello-cgi.php")
    for p in "${CGIS[@]}"; do
        GATEWAY_INTERFACE=CGI/1.1 REQUEST_METHOD=GET REDIRECT_STATUS=200 SCRIPT_FILENAME="${p#*|}" "${p#*|}" </dev/null >/dev/null 2>&1 || true # page cache
    done
    for round in 1 2 3 4 5; do
        for p in "${CGIS[@]}"; do
            cgi_run "${p%%|*}" "${p#*|}" "$round"
        done
    done
fi

# ---- 3. RSS idle and after 10,000 requests ----

SOCK=$RUN/app.sock
want 3 && say "3. RSS idle and after 10,000 requests"
want 3 && for k in shim "${BUILDS[@]}" "${PEERS[@]:1}"; do
    start "$k" "$SOCK"
    sleep 1
    idle=$(status_kib "$PID" VmRSS)
    if ready "$SOCK" "$SRV_PATH"; then
        # The exact response, to show the peers do the same work.
        timeout 5 "$TOOL" request --socket "$SOCK" --path "$SRV_PATH" >"$LOGS/response-$k.txt" 2>/dev/null || true
        if out=$(timeout 120 "$TOOL" bench --socket "$SOCK" -n 10000 -c 1 --warmup 0 --path "$SRV_PATH" --json 2>>"$LOGS/rss.log"); then
            rss=$(status_kib "$PID" VmRSS)
            hwm=$(status_kib "$PID" VmHWM)
            threads=$(awk '$1 == "Threads:" { print $2 }' "/proc/$PID/status")
            say "   $SRV_NAME: idle $idle KiB, after $rss KiB (peak $hwm KiB), $threads threads"
            jl "{\"kind\":\"rss\",\"server\":$(jstr "$SRV_NAME"),\"path\":$(jstr "$SRV_PATH"),\"idle_rss_kib\":$idle,\"rss_kib\":$rss,\"hwm_kib\":$hwm,\"threads\":$threads,\"bench\":$out,\"response\":$(jstr "$(cat "$LOGS/response-$k.txt")")}"
        else
            note "RSS run failed: $SRV_NAME"
        fi
    else
        note "$SRV_NAME did not answer on its socket"
    fi
    stop "$PID"
done

# ---- 4. Apache + mod_fcgid ----

# Sets name, url and exe (the program mod_fcgid runs) of section 4's app $1.
ap_app() {
    case $1 in
    shim) name="fcgi-shim hello" ;;
    libfcgi) name="libfcgi C" ;;
    go) name="Go net/http/fcgi" ;;
    php) name="php-cgi (FcgidWrapper)" ;;
    esac
    url=http://127.0.0.1:$port/$1/hello.fcgi
    exe=$ap/public_html/$1/hello.fcgi
    if [ "$1" = php ]; then
        url=http://127.0.0.1:$port/php/hello.php
        exe=$(readlink -f /usr/bin/php-cgi)
    fi
}

apache_run() {
    local ap port conf apid k url out procs exe name started
    ap=$(mktemp -d /tmp/fcgi-shim-bench-apache.XXXXXX)
    chmod 755 "$ap"
    mkdir -p "$ap/run" "$ap/logs" "$ap/fcgid"
    if [ "$(id -u)" = 0 ]; then chown www-data:www-data "$ap/run" "$ap/fcgid"; fi
    local fcgid_ht=$'Options +ExecCGI\nAddHandler fcgid-script .fcgi\n'
    for k in shim libfcgi go php; do
        mkdir -p "$ap/public_html/$k"
        chmod 755 "$ap/public_html" "$ap/public_html/$k"
    done
    install -m 755 "$BIN/hello" "$ap/public_html/shim/hello.fcgi"
    install -m 755 "$BIN/hello-libfcgi" "$ap/public_html/libfcgi/hello.fcgi"
    install -m 755 "$BIN/hello-go-fcgi" "$ap/public_html/go/hello.fcgi"
    install -m 644 bench/peers/hello.php "$ap/public_html/php/hello.php"
    for k in shim libfcgi go; do printf '%s' "$fcgid_ht" >"$ap/public_html/$k/.htaccess"; done
    printf 'Options +ExecCGI\nAddHandler fcgid-script .php\nFcgidWrapper /usr/bin/php-cgi .php\n' >"$ap/public_html/php/.htaccess"
    chmod 644 "$ap"/public_html/*/.htaccess
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    conf=$ap/httpd.conf
    {
        echo "ServerRoot \"$ap\""
        echo "DefaultRuntimeDir \"$ap/run\""
        echo "PidFile \"$ap/run/httpd.pid\""
        echo "Mutex file:$ap/run default"
        echo "Listen 127.0.0.1:$port"
        echo "ServerName 127.0.0.1"
        for m in mpm_event:mod_mpm_event unixd:mod_unixd authz_core:mod_authz_core mime:mod_mime fcgid:mod_fcgid; do
            echo "<IfModule !${m%%:*}_module>"
            echo "  LoadModule ${m%%:*}_module /usr/lib/apache2/modules/${m#*:}.so"
            echo "</IfModule>"
        done
        if [ "$(id -u)" = 0 ]; then echo "User www-data"; echo "Group www-data"; fi
        cat <<EOF
StartServers 1
ServerLimit 2
ThreadsPerChild 16
MaxRequestWorkers 32
MinSpareThreads 4
MaxSpareThreads 32
Timeout 30
ErrorLog "$ap/logs/error.log"
LogLevel warn
TypesConfig /dev/null
FcgidIPCDir "$ap/fcgid"
FcgidProcessTableFile "$ap/fcgid/table"
# mod_fcgid defaults otherwise (processes per app started on demand, up to 100);
# php-cgi would exit after 500 requests without this.
FcgidInitialEnv PHP_FCGI_MAX_REQUESTS 0
FcgidIOTimeout 30
${BENCH_FCGID_CONF:-}
DocumentRoot "$ap/public_html"
<Directory />
  AllowOverride None
  Require all denied
</Directory>
<Directory "$ap/public_html">
  AllowOverride All
  Require all granted
</Directory>
EOF
    } >"$conf"
    setsid env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C \
        /usr/sbin/apache2 -f "$conf" -DFOREGROUND </dev/null >"$ap/logs/stdout.log" 2>&1 &
    apid=$!
    jl "{\"kind\":\"apache-meta\",\"desc\":$(jstr "Apache $(/usr/sbin/apache2 -v | sed -n 1p | cut -d/ -f2 | cut -d' ' -f1), event MPM, one directory per app with an .htaccess (AddHandler fcgid-script .fcgi; php: AddHandler fcgid-script .php + FcgidWrapper /usr/bin/php-cgi .php), the binaries as hello.fcgi, mod_fcgid defaults (FcgidMaxProcessesPerClass 100: mod_fcgid starts more processes of an app while all are busy, and gives each process one request at a time, so Go's concurrency does not come into play). Per app: mod_fcgid is first made to start 8 processes, one per wrk connection (bench/helper.py fcgid-prespawn: left to itself it settles at 5 to 8 under this load, and a request that finds every process busy sleeps a whole second in mod_fcgid, which was every app's p99), then \`wrk -t2 -c8 -d3s\` to warm up. Then ${APACHE_ROUNDS} rounds, each taking every app in turn (in reverse order in the even rounds), of \`wrk -t2 -c8 -d${SECS}s --latency http://127.0.0.1:PORT/APP/hello.fcgi\`; each figure is the median of the rounds, and fcgi-shim ÷ each app is also taken round by round. wrk, Apache and the apps share the 2 CPUs. 'app processes': how many mod_fcgid had running after the last round. CPU per request: on-CPU time (schedstat) over the wrk run of the app's processes, and in brackets of the rest of Apache's session (its processes and mod_fcgid's process manager), ÷ requests.")}"
    local ok=0 i
    for i in $(seq 100); do
        if python3 -c "import urllib.request,sys; sys.exit(0 if b'Hello' in urllib.request.urlopen('http://127.0.0.1:$port/shim/hello.fcgi', timeout=10).read() else 1)" 2>/dev/null; then
            ok=1
            break
        fi
        kill -0 "$apid" 2>/dev/null || break
        sleep 0.1
    done
    if [ "$ok" = 1 ]; then
        local apps=() round order i cpu0 cpu1
        declare -A ap_started=()
        # Each app is checked, given its 8 processes and warmed up once; then the rounds.
        for k in shim libfcgi go php; do
            ap_app "$k"
            if ! python3 -c "import urllib.request,sys; sys.exit(0 if b'Hello' in urllib.request.urlopen('$url', timeout=10).read() else 1)" 2>>"$LOGS/apache.log"; then
                note "Apache: $name at $url did not answer Hello; skipped (see target/bench/logs/apache-error.log)"
                continue
            fi
            # One process per wrk connection before measuring (see fcgid_prespawn).
            started=$(timeout 90 python3 "$HELPER" fcgid-prespawn "$url" 8 "$apid" "$exe" 2>>"$LOGS/apache.log") || started='?'
            ap_started[$k]=$started
            timeout 60 wrk -t2 -c8 -d3s "$url" >/dev/null 2>&1 || true
            apps+=("$k")
        done
        for round in $(seq "$APACHE_ROUNDS"); do
            order=("${apps[@]}")
            if [ $((round % 2)) = 0 ]; then
                order=()
                for ((i = ${#apps[@]} - 1; i >= 0; i--)); do order+=("${apps[i]}"); done
            fi
            for k in "${order[@]}"; do
                ap_app "$k"
                cpu0=$(python3 "$HELPER" session-cpu "$apid" "$exe")
                if out=$(timeout $((SECS + 60)) wrk -t2 -c8 -d"${SECS}s" --latency "$url" 2>&1); then
                    cpu1=$(python3 "$HELPER" session-cpu "$apid" "$exe")
                    printf '%s\n' "$out" >"$LOGS/wrk-$k-$round.txt"
                    out=$(printf '%s\n' "$out" | python3 "$HELPER" wrk)
                    procs=$(python3 "$HELPER" app-procs "$apid" "$exe")
                    # CPU per request of the app's processes and of Apache (with
                    # mod_fcgid's process manager), over the wrk run.
                    out=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); a=json.loads(sys.argv[2]); b=json.loads(sys.argv[3]); n=d.get("requests") or 0; d.update(app_cpu_us=round((b["app_ns"]-a["app_ns"])/n/1000, 2) if n and a["procs"]==b["procs"] else None, apache_cpu_us=round((b["other_ns"]-a["other_ns"])/n/1000, 2) if n else None); print(json.dumps(d))' "$out" "$cpu0" "$cpu1")
                    say "   round $round: Apache $name: $out, $procs processes (${ap_started[$k]} before the warm-up)"
                    jl "$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(kind="apache", server=sys.argv[2], procs=int(sys.argv[3]), round=int(sys.argv[4])); print(json.dumps(d))' "$out" "$name" "$procs" "$round")"
                else
                    note "Apache: wrk failed for $name in round $round"
                fi
            done
        done
    else
        note "Apache did not come up; section 4 skipped (see target/bench/logs/apache-error.log)"
    fi
    kill -TERM "$apid" 2>/dev/null || true
    for i in $(seq 100); do
        kill -0 "$apid" 2>/dev/null || break
        sleep 0.1
    done
    # Leftovers of Apache's session (its children, mod_fcgid's apps): all ours.
    kill -KILL -- "-$apid" 2>/dev/null || true
    wait "$apid" 2>/dev/null || true
    cp "$ap/logs/error.log" "$LOGS/apache-error.log" 2>/dev/null || true
    rm -rf "$ap"
}
if want 4; then
    say "4. Apache + mod_fcgid, wrk -t2 -c8 -d${SECS}s"
    apache_run
fi

# ---- 5. 1 GiB up and down through the echo example ----

want 5 && say "5. 1 GiB through the echo example"
GIB=1073741824
big_run() { # WHAT HOW
    local out hwm secs ok mib
    rm -f "$SOCK"
    python3 "$HELPER" spawn "$SOCK" "$BIN/echo" 2>>"$LOGS/servers.log" &
    PID=$!
    if ! ready "$SOCK" /; then
        note "echo did not start"
        stop "$PID"
        return
    fi
    case $1 in
    both)
        out=$(timeout 300 python3 "$HELPER" echo-body "$SOCK" "$GIB" 2>>"$LOGS/big.log") || out=null
        ;;
    up)
        out=$(timeout 300 "$TOOL" bench --socket "$SOCK" --path / --body-size "$GIB" -n 1 --warmup 0 --json 2>>"$LOGS/big.log") || out=null
        ;;
    down)
        out=$(timeout 300 "$TOOL" bench --socket "$SOCK" --path /stream --query 'chunks=16384&size=65536' -n 1 --warmup 0 --json 2>>"$LOGS/big.log") || out=null
        ;;
    esac
    hwm=$(status_kib "$PID" VmHWM)
    stop "$PID"
    say "   $1: $out, peak RSS $hwm KiB"
    jl "$(python3 - "$out" "$1" "$2" "$hwm" <<'EOF'
import json, sys
out, what, how, hwm = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
r = None if out == "null" else json.loads(out)
d = {"kind": "big", "how": how, "hwm_kib": hwm, "raw": r}
d["what"] = {"both": "up and down at once (/echo-body)", "up": "upload (POST /, the app reads and hashes it)", "down": "download (/stream, 16384 x 64 KiB)"}[what]
if r is None:
    d.update(ok=False, seconds=None, mib_s=None)
elif what == "both":
    d.update(ok=r["ok"], seconds=r["seconds"], mib_s=r["mib_per_s_each_way"])
else:
    ok = r["requests"] == 1 and r["errors"] == 0
    d.update(ok=ok, seconds=r["seconds"], mib_s=round(1024 / r["seconds"], 1) if r["seconds"] else None)
print(json.dumps(d))
EOF
)"
}
want 5 && big_run both "bench/helper.py echo-body: one thread writes the body while another reads the echo (the fcgi-shim tool writes the whole body before reading, which deadlocks against an app that streams the body back)"
want 5 && big_run up "fcgi-shim bench --socket S --path / --body-size 1073741824 -n 1 --warmup 0 (SHA-256 of the body in the app included)"
want 5 && big_run down "fcgi-shim bench --socket S --path /stream --query 'chunks=16384&size=65536' -n 1 --warmup 0"

# ---- 6. sizes and system calls ----

want 6 && say "6. stripped sizes, system calls per request"
mkdir -p "$B/stripped"
size_row() { # NAME FILE LINKED
    strip -o "$B/stripped/$(basename "$2")" "$2"
    jl "{\"kind\":\"size\",\"server\":$(jstr "$1"),\"bytes\":$(stat -c %s "$B/stripped/$(basename "$2")"),\"linked\":$(jstr "$3")}"
}
if want 6; then
LIBFCGI_SO=$(ldd "$BIN/hello-libfcgi" | awk '/libfcgi/ { print $3 }')
size_row "fcgi-shim hello" "$BIN/hello" "dynamic: libc, libgcc_s"
size_row "fcgi-shim hello (static build)" "$BIN/hello-static" "static: glibc included"
[ -x "$BIN/hello-musl" ] && size_row "fcgi-shim hello (musl build)" "$BIN/hello-musl" "static-pie: musl libc included"
[ -x "$BIN/hello-pgo" ] && size_row "fcgi-shim hello (profile-guided build)" "$BIN/hello-pgo" "dynamic: libc, libgcc_s"
[ -x "$BIN/hello-musl-pgo" ] && size_row "fcgi-shim hello (musl profile-guided build)" "$BIN/hello-musl-pgo" "static-pie: musl libc included"
size_row "libfcgi C" "$BIN/hello-libfcgi" "dynamic: libc + $(basename "$LIBFCGI_SO") ($(($(stat -L -c %s "$LIBFCGI_SO") / 1024)) KiB, not counted)"
size_row "Go net/http/fcgi" "$BIN/hello-go-fcgi" "static (Go runtime)"
size_row "minimal C CGI" "$BIN/hello-cgi" "dynamic: libc"
fi

# System calls per request, counted by strace, then without a tracer: strace stops
# the app at every call, so the load generator runs ahead of it and finds it in states
# it would rarely be in otherwise (the next connection already queued when a response
# goes out, say). perf counts the syscall tracepoints of the app's process as it runs.
PERF_EVENTS=raw_syscalls:sys_enter
for c in accept accept4 read recvfrom write sendto writev poll ppoll epoll_wait shutdown close futex; do
    PERF_EVENTS+=",syscalls:sys_enter_$c"
done
sys_run() { # KEY KEEP(0|1) strace|perf
    local keep=false f out args=(--socket "$SOCK" -n "$SYS_REQS" -c 1 --warmup 0)
    [ "$2" = 1 ] && keep=true && args+=(--keep-conn)
    start "$1" "$SOCK"
    if ! ready "$SOCK" "$SRV_PATH"; then
        note "$SRV_NAME did not start for $3"
        stop "$PID"
        return
    fi
    f=$LOGS/$3-$1-$keep.txt
    if [ "$3" = strace ]; then
        strace -c -f -p "$PID" -o "$f" 2>>"$LOGS/$3.log" &
    else
        perf stat -x, -e "$PERF_EVENTS" -p "$PID" -o "$f" 2>>"$LOGS/$3.log" &
    fi
    local tpid=$! i
    # strace has attached once the app shows a tracer; perf gives no such sign.
    if [ "$3" = strace ]; then
        for i in $(seq 100); do
            [ "$(awk '$1 == "TracerPid:" { print $2 }' "/proc/$PID/status")" != 0 ] && break
            sleep 0.05
        done
    else
        sleep 0.3
    fi
    sleep 0.2
    timeout 300 "$TOOL" bench "${args[@]}" --path "$SRV_PATH" --json >>"$LOGS/$3.log" 2>&1 || note "$3 run failed: $SRV_NAME"
    kill -INT "$tpid" 2>/dev/null || true
    wait "$tpid" 2>/dev/null || true
    stop "$PID"
    if [ "$3" = strace ]; then
        out=$(python3 "$HELPER" syscalls "$f" "$SYS_REQS") || out=null
        jl "{\"kind\":\"syscalls\",\"server\":$(jstr "$SRV_NAME"),\"keep\":$keep,\"r\":$out}"
    else
        out=$(python3 "$HELPER" perf-syscalls "$f" "$SYS_REQS") || out=null
        jl "{\"kind\":\"syscalls-perf\",\"server\":$(jstr "$SRV_NAME"),\"keep\":$keep,\"r\":$out}"
    fi
    say "   $SRV_NAME keep-conn $keep ($3): $out"
}
if want 6; then
    tracers=(strace)
    if perf stat -x, -e "$PERF_EVENTS" -o /dev/null true 2>/dev/null; then
        tracers+=(perf)
    else
        note "perf cannot count syscall tracepoints here (no linux-perf, or no tracefs): system calls counted with strace only"
    fi
    for t in "${tracers[@]}"; do
        for keep in 1 0; do
            for k in shim libfcgi; do
                sys_run "$k" "$keep" "$t"
            done
        done
    done
fi

# ---- report ----

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
sed -i "s/@LOAD_END@/$LOAD_END/" "$RAW"
python3 "$HELPER" report "$RAW" "$B/results.md"
say "done in $(($(date +%s) - T0)) s: target/bench/results.md"
