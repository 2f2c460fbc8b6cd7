#!/usr/bin/env bash
# End-to-end cost per request against the bare server, measured side by side: in each round the
# bare server and the configuration run at the same time, both pinned to CPU 0, each driven by
# its own wrk on CPU 1. The two share the one core under the same load from the rest of the
# machine, so what the machine does to one it does to the other, and a ratio holds to about
# 2 % where benches/load.sh's rounds (one server after the other) swing by 20 %.
#
#   bash benches/paired.sh        # noop, memory, noop-around, memory-around, tower-sessions
#   ROUNDS=5 DURATION=8 bash benches/paired.sh memory
#
# Printed per round: each server's requests per second, and its CPU time per request
# (user + system, from /proc/<pid>/stat), the share of bare's that is user space (the rest
# is the kernel's work on loopback), and how much of CPU 0 the two servers used (near 100 % on
# an otherwise quiet machine: the servers, not the two wrks on CPU 1, set the pace). "cpu ratio" is bare's CPU time per request over the
# configuration's: the share of the bare server's throughput the configuration keeps on a core
# of its own. "rps ratio" is the configuration's requests over bare's in the same seconds; it
# equals the cpu ratio when the scheduler splits the core evenly. Only 127.0.0.1 is a target,
# on ports the kernel hands out free. A round that answered anything but 2xx aborts.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONNECTIONS=${CONNECTIONS:-32}
configs=("$@")
[ ${#configs[@]} -eq 0 ] && configs=(noop memory noop-around memory-around tower-sessions)
[ "$(nproc)" -ge 2 ] || { echo "needs two CPUs: servers on CPU 0, wrk on CPU 1" >&2; exit 1; }

# shellcheck source=benches/lib.sh
source benches/lib.sh
need_tools wrk curl
cargo build --release -j 1 --quiet --example bench_server --features redis,postgres,sqlite
server_bin=target/release/examples/bench_server
ticks=$(getconf CLK_TCK)

pids=()
ports=()
cookies=()
cookie=
result=
stop_servers() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
trap stop_servers EXIT

# CPU time of a process so far, in clock ticks: "user system".
cpu_ticks() {
  awk '{ print $14, $15 }' "/proc/$1/stat"
}

# Both wrks at once, one per server, for $1; each one's output in $2.<index>.
drive() {
  local -a wrks=()
  for i in 0 1; do
    taskset -c 1 wrk -t1 -c "$CONNECTIONS" -d "$1" -H "Cookie: ${cookies[$i]}" \
      "http://127.0.0.1:${ports[$i]}/" >"$2.$i" &
    wrks+=($!)
  done
  for wrk in "${wrks[@]}"; do
    wait "$wrk"
  done
}

# One round: bare and $1 side by side. Sets `result` to "bare_rps config_rps cpu0_busy
# bare_user_share bare_us config_us cpu_ratio rps_ratio". Runs in this shell, so a failure stops its servers on
# the way out.
round() {
  local config=$1 name port
  local -a names=(bare "$config") started=()
  ports=()
  cookies=()
  for name in "${names[@]}"; do
    port=$(free_port)
    BENCH_CONFIG=$name PORT=$port WORKERS=1 taskset -c 0 "$server_bin" \
      2>"target/bench_server-paired-$name.log" &
    pids+=($!)
    started+=($!)
    ports+=("$port")
  done
  for i in 0 1; do
    sign_in "${names[$i]}" "${ports[$i]}"
    cookies+=("$cookie")
  done
  drive 1s target/paired-warmup
  local bare_user0 bare_system0 user0 system0 bare_user1 bare_system1 user1 system1
  read -r bare_user0 bare_system0 < <(cpu_ticks "${started[0]}")
  read -r user0 system0 < <(cpu_ticks "${started[1]}")
  drive "${DURATION}s" target/paired
  read -r bare_user1 bare_system1 < <(cpu_ticks "${started[0]}")
  read -r user1 system1 < <(cpu_ticks "${started[1]}")
  stop_servers
  local requests=()
  for i in 0 1; do
    if grep -Eq "Non-2xx|Socket errors" "target/paired.$i"; then
      echo "${names[$i]} answered non-2xx responses or lost connections:" >&2
      cat "target/paired.$i" >&2
      exit 1
    fi
    requests+=("$(awk '/ requests in / { print $1 }' "target/paired.$i")")
  done
  local bare_user=$((bare_user1 - bare_user0))
  local bare_ticks=$((bare_user + bare_system1 - bare_system0))
  local ticks_used=$((user1 - user0 + system1 - system0))
  result=$(awk -v rb="${requests[0]}" -v rc="${requests[1]}" -v tb="$bare_ticks" \
    -v tc="$ticks_used" -v ub="$bare_user" -v d="$DURATION" -v hz="$ticks" 'BEGIN {
      printf "%.0f %.0f %.0f%% %.2f %.2f %.2f %.3f %.3f\n", rb / d, rc / d, 100 * (tb + tc) / hz / d,
        ub / tb, 1e6 * tb / hz / rb, 1e6 * tc / hz / rc, (tb / rb) / (tc / rc), rc / rb }')
}

echo "# bare and each configuration side by side on CPU 0, wrk -t1 -c $CONNECTIONS -d ${DURATION}s each on CPU 1, one Tokio worker, $ROUNDS rounds"
echo
echo "| configuration | round | bare req/s | configuration req/s | CPU 0 busy | bare's user share | bare µs CPU/req | configuration µs CPU/req | cpu ratio | rps ratio |"
echo "|---|---|---|---|---|---|---|---|---|---|"
summary=()
for config in "${configs[@]}"; do
  ratios=()
  for r in $(seq 1 "$ROUNDS"); do
    round "$config"
    read -r bare_rps rps busy user_share bare_us us cpu_ratio rps_ratio <<<"$result"
    echo "| $config | $r | $bare_rps | $rps | $busy | $user_share | $bare_us | $us | $cpu_ratio | $rps_ratio |"
    ratios+=("$cpu_ratio")
  done
  sorted=$(printf '%s\n' "${ratios[@]}" | sort -n | tr '\n' ' ')
  median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{ r[NR] = $1 } END { print (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2 }')
  summary+=("| $config | $median | $sorted|")
done
echo
echo "| configuration | median cpu ratio | cpu ratios, sorted |"
echo "|---|---|---|"
printf '%s\n' "${summary[@]}"
