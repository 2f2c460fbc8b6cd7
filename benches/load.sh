#!/usr/bin/env bash
# End-to-end requests per second over loopback: wrk against examples/bench_server.rs, each
# configuration alternated with the bare server in the same run (bare, X, bare, X, ...), and
# the ratios printed. Only 127.0.0.1 is ever a target; every run is bounded by DURATION.
#
#   bash benches/load.sh                              # memory and tower-sessions
#   bash benches/load.sh memory tower-sessions redis postgres sqlite
#   ROUNDS=5 DURATION=5s CONNECTIONS=32 bash benches/load.sh memory
#   TOUCH_INTERVAL_SECS=60 bash benches/load.sh postgres sqlite   # the servers read it
#   SESSIONS=10000 bash benches/load.sh redis-near peer-redis      # 10,000 sessions, round robin
#
# Every request carries `Cookie: <a session begun by GET /login on that server>`; with
# SESSIONS=N, N sessions are begun and the requests take their cookies in turn
# (benches/rotate.lua). A run that answered anything but 2xx is reported as failed (a 440 would
# be a fake speed-up). Configurations named `peer-<store>` are tower-sessions 0.14 on that
# store (`memory`, `redis`, `postgres`), served by benches/peer_server; the others are
# examples/bench_server.rs's.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
CONNECTIONS=${CONNECTIONS:-32}
SESSIONS=${SESSIONS:-1}
THREADS=${THREADS:-1}
WORKERS=${WORKERS:-1}
PORT=${PORT:-3100}
# PIN=1: the server on CPU 0 and wrk on CPU 1 (taskset), so they do not trade cores.
PIN=${PIN:-0}
server_cpu=()
wrk_cpu=()
if [ "$PIN" = 1 ]; then
  server_cpu=(taskset -c 0)
  wrk_cpu=(taskset -c 1)
fi
configs=("$@")
[ ${#configs[@]} -eq 0 ] && configs=(memory tower-sessions)

if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk (Debian package)" >&2
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
if ! command -v curl >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq curl >/dev/null
fi

cargo build --release -j 1 --quiet --example bench_server --features redis,postgres,sqlite
server_bin=target/release/examples/bench_server
peer_bin=target/peers/release/peer-server
for config in "${configs[@]}"; do
  if [[ $config == peer-* ]]; then
    CARGO_TARGET_DIR=target/peers cargo build --release -j 1 --quiet \
      --manifest-path benches/peer_server/Cargo.toml
    break
  fi
done
cookies_file=target/load-cookies.txt
url="http://127.0.0.1:${PORT}"
server_pid=

stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap stop_server EXIT

# Prints the requests per second of one configuration: start its server, sign in, warm up,
# measure, stop it.
measure() {
  local config=$1
  if [[ $config == peer-* ]]; then
    PEER_STORE=${config#peer-} PORT=$PORT WORKERS=$WORKERS "${server_cpu[@]}" "$peer_bin" 2>"target/bench_server-$config.log" &
  else
    BENCH_CONFIG=$config PORT=$PORT WORKERS=$WORKERS "${server_cpu[@]}" "$server_bin" 2>"target/bench_server-$config.log" &
  fi
  server_pid=$!
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$url/" 2>/dev/null && break
    sleep 0.1
  done
  # One connection signs in SESSIONS times (curl's URL range), the cookies one a line.
  curl -fsS -i "$url/login?n=[1-$SESSIONS]" | tr -d '\r' \
    | sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\).*/\1/p' >"$cookies_file"
  local begun
  begun=$(sort -u "$cookies_file" | wc -l)
  [ "$begun" -eq "$SESSIONS" ] || { echo "$config began $begun sessions of $SESSIONS" >&2; exit 1; }
  local session=(-H "Cookie: $(head -n 1 "$cookies_file")")
  [ "$SESSIONS" -gt 1 ] && session=(-s benches/rotate.lua)
  COOKIES=$cookies_file "${wrk_cpu[@]}" wrk -t "$THREADS" -c "$CONNECTIONS" -d "$WARMUP" "${session[@]}" "$url/" >/dev/null
  local out
  out=$(COOKIES=$cookies_file "${wrk_cpu[@]}" wrk -t "$THREADS" -c "$CONNECTIONS" -d "$DURATION" "${session[@]}" "$url/")
  stop_server
  if grep -q "Non-2xx" <<<"$out"; then
    echo "$config answered non-2xx responses:" >&2
    echo "$out" >&2
    exit 1
  fi
  awk '/^Requests\/sec:/ { print $2 }' <<<"$out"
}

echo "# wrk -t $THREADS -c $CONNECTIONS -d $DURATION, server with $WORKERS Tokio worker(s), $(nproc) cores, ${ROUNDS} rounds, $SESSIONS session(s)"
echo
echo "| configuration | round | bare req/s | configuration req/s | ratio |"
echo "|---|---|---|---|---|"
summary=()
ratios_of=()
for config in "${configs[@]}"; do
  bare_sum=0
  config_sum=0
  for round in $(seq 1 "$ROUNDS"); do
    bare=$(measure bare)
    rate=$(measure "$config")
    bare_sum=$(awk -v a="$bare_sum" -v b="$bare" 'BEGIN { print a + b }')
    config_sum=$(awk -v a="$config_sum" -v b="$rate" 'BEGIN { print a + b }')
    ratio=$(awk -v a="$rate" -v b="$bare" 'BEGIN { printf "%.3f", a / b }')
    echo "| $config | $round | $bare | $rate | $ratio |"
    ratios_of+=("$ratio")
  done
  median=$(printf '%s\n' "${ratios_of[@]}" | sort -n | awk '{ r[NR] = $1 } END { print (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2 }')
  ratios_of=()
  summary+=("| $config | $(awk -v a="$bare_sum" -v n="$ROUNDS" 'BEGIN { printf "%.0f", a / n }') | $(awk -v a="$config_sum" -v n="$ROUNDS" 'BEGIN { printf "%.0f", a / n }') | $(awk -v a="$config_sum" -v b="$bare_sum" 'BEGIN { printf "%.3f", a / b }') | $median |")
done
echo
echo "| configuration | mean bare req/s | mean req/s | ratio of means | median of round ratios |"
echo "|---|---|---|---|---|"
printf '%s\n' "${summary[@]}"
