#!/bin/bash
# bench/pgo.sh: a profile-guided build of an example app (README, "Faster still: a
# profile-guided build"), trained on a mix of requests that is not the benchmark's
# own, so the benchmark does not grade its own training. bench/run.sh builds
# bin/hello-pgo and bin/hello-musl-pgo with it.
#
# Usage (from the project root, once target/bench/bin/fcgi-shim is built):
#   bash bench/pgo.sh [EXAMPLE] [TARGET]
# e.g.
#   bash bench/pgo.sh                              # hello, x86_64-unknown-linux-gnu
#   bash bench/pgo.sh hello x86_64-unknown-linux-musl
#
# Needs llvm-profdata of the compiler's own LLVM: `rustup component add llvm-tools`,
# which it runs when the tool is missing.
# Writes target/bench/pgo/EXAMPLE-TARGET, the trained binary, stripped as the release
# profile strips. The training, about 25 s, runs the instrumented build under
# `fcgi-shim bench --spawn` as mod_fcgid would start it:
#   - 1 and 8 clients, a connection per request and kept-alive;
#   - a blog-like mount (/blog/mysite.fcgi after a rewrite) and the root;
#   - paths with segments, escapes and queries;
#   - a browser's headers (cookies, languages, forwarded-for);
#   - small and 64 KiB POST bodies;
#   - 8 threads and one.
# The benchmark's own request (GET / with three headers) is not in it.
set -euo pipefail
cd "$(dirname "$0")/.."
example=${1:-hello}
target=${2:-x86_64-unknown-linux-gnu}
bench=target/bench/bin/fcgi-shim
out=target/bench/pgo
dir=$out/work-$example-$target
profdata=$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-profdata
if ! [ -x "$profdata" ] && command -v rustup >/dev/null; then
    rustup component add llvm-tools >&2 || true
fi
[ -x "$profdata" ] || { echo "needs llvm-profdata: rustup component add llvm-tools" >&2; exit 1; }
[ -x "$bench" ] || { echo "needs $bench (bench/run.sh builds it)" >&2; exit 1; }
rm -rf "$dir"
mkdir -p "$dir/profiles"

# --target keeps RUSTFLAGS off the build scripts and proc-macros.
build() {
    RUSTFLAGS="$1" cargo build --release --example "$example" --target "$target" \
        --target-dir "$dir/cargo" >"$dir/cargo.log" 2>&1 ||
        { tail -20 "$dir/cargo.log" >&2; exit 1; }
}
build "-Cprofile-generate=$PWD/$dir/profiles"
app=$dir/cargo/$target/release/examples/$example

blog=(--param SCRIPT_NAME=/blog/mysite.fcgi --param SCRIPT_FILENAME=/home/u/public_html/blog/mysite.fcgi)
browser=(--header "Cookie=session=3f9a1c; theme=dark" --header "Accept-Language=en-GB,en;q=0.9"
         --header "Accept-Encoding=gzip, deflate, br" --header "Referer=https://example.org/blog/"
         --header "X-Forwarded-For=203.0.113.9" --header "Sec-Fetch-Mode=navigate"
         --header "Upgrade-Insecure-Requests=1")
train() {
    local threads=$1
    shift
    FCGI_THREADS=$threads "$bench" bench --spawn "$app" -- -d 2 --warmup 0 "$@" >/dev/null
}
for threads in 8 1; do
    for keep in "" --keep-conn; do
        train "$threads" -c 8 $keep "${blog[@]}" --param REQUEST_URI=/blog/posts/17?page=2 \
            --path /posts/17 --query page=2 "${browser[@]}"
        train "$threads" -c 1 $keep --path "/café/a b" --query "q=x%20y&n=3" \
            --param "REQUEST_URI=/caf%C3%A9/a%20b?q=x%20y&n=3" "${browser[@]}"
        train "$threads" -c 8 $keep "${blog[@]}" --param REQUEST_URI=/blog/comments \
            --path /comments --body-size 2000 --header "Content-Type=application/x-www-form-urlencoded"
    done
done
train 1 -c 2 --path /upload --body-size 65536

"$profdata" merge -o "$dir/merged.profdata" "$dir/profiles" >/dev/null
build "-Cprofile-use=$PWD/$dir/merged.profdata"
mkdir -p "$out"
cp "$app" "$out/$example-$target"
echo "$out/$example-$target"
