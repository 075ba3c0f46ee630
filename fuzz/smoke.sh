#!/usr/bin/env bash
# Fuzz smoke test: builds the cargo-fuzz targets and runs each for ~30 s; fails on any
# crash, timeout or OOM. Skips (exit 0, with the reason) when nightly Rust or cargo-fuzz
# is missing. About 5-6 minutes in all, most of it the first build.
#
#   bash fuzz/smoke.sh            # every target
#   SMOKE_SECONDS=10 bash fuzz/smoke.sh connection
set -euo pipefail

cd "$(dirname "$0")"
seconds="${SMOKE_SECONDS:-30}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(record_pairs connection cgi_request response_head scgi http scgi_exchange)
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz smoke: skipped, no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz smoke: skipped, cargo-fuzz is not installed (cargo install cargo-fuzz)"
    exit 0
fi

# Seeds (fuzz/corpus/ is gitignored); the generator only adds files.
if command -v python3 >/dev/null 2>&1; then
    python3 gen_corpus.py
else
    echo "fuzz smoke: python3 not found, starting without seed corpora"
fi

cargo +nightly fuzz build

failed=()
for t in "${targets[@]}"; do
    dict=()
    case "$t" in
        connection | cgi_request | record_pairs | scgi | scgi_exchange) dict=(-dict=fastcgi.dict) ;;
        http) dict=(-dict=http.dict) ;;
    esac
    echo "== fuzz smoke: $t for ${seconds}s"
    if ! cargo +nightly fuzz run "$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
        -timeout=10 ${dict[@]+"${dict[@]}"} 2>&1 | tail -n 25; then
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz smoke: FAILED: ${failed[*]} (reproducer in fuzz/artifacts/<target>/)" >&2
    exit 1
fi
echo "fuzz smoke: ok (${targets[*]})"
