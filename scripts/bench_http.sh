#!/usr/bin/env bash
# Installs wrk when missing, runs the HTTP overhead bench (unguarded vs #[rate_limit] vs
# tower_governor, without and with its headers; loopback only) and redraws
# docs/benchmarks/http_overhead.svg.
#
#   scripts/bench_http.sh
#   HTTP_BENCH_ROUNDS=7 HTTP_BENCH_SECONDS=5 HTTP_BENCH_CONNECTIONS=64 scripts/bench_http.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
  echo "==> installing wrk"
  apt-get update -qq
  apt-get install -y -qq wrk
fi

echo "==> load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench -p ratelimit-axum --bench http_overhead
python3 scripts/plot_http_overhead.py
