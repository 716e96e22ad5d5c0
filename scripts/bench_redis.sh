#!/usr/bin/env bash
# Runs the Redis throughput bench (RedisBackend vs redis-benchmark, loopback only) and redraws
# docs/benchmarks/redis_throughput.svg. Installs redis-server / redis-tools when missing, and
# starts a throwaway redis-server (no persistence) when none answers at REDIS_URL; that one is
# stopped again at the end.
#
#   scripts/bench_redis.sh
#   REDIS_BENCH_ROUNDS=7 REDIS_BENCH_SECONDS=3 scripts/bench_redis.sh
#   REDIS_URL=redis://127.0.0.1:6390 scripts/bench_redis.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"

if ! command -v redis-benchmark >/dev/null 2>&1 || ! command -v redis-server >/dev/null 2>&1; then
  echo "==> installing redis-server and redis-tools"
  apt-get update -qq
  apt-get install -y -qq redis-server redis-tools
fi

started_server=""
if ! redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1; then
  port="$(sed -E 's#^[a-z]+://([^@/]*@)?[^:/]+:?([0-9]*).*#\2#' <<<"$REDIS_URL")"
  port="${port:-6379}"
  echo "==> no Redis at $REDIS_URL; starting one on 127.0.0.1:$port"
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize no \
    --logfile "" >/dev/null &
  started_server=$!
  trap 'kill "$started_server" 2>/dev/null || true' EXIT
  for _ in $(seq 50); do
    redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

echo "==> machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "==> $(redis-server --version)"
echo "==> $(redis-benchmark --version)"
echo "==> uptime before: $(uptime)"
cargo bench -p ratelimit-core --features redis --bench redis_throughput
echo "==> uptime after: $(uptime)"
python3 scripts/plot_redis.py
