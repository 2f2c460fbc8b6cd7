#!/usr/bin/env bash
# Side by side, in one run (issue 15): the bare server, this crate and tower-sessions 0.14
# (with tower-sessions-redis-store 0.16 and tower-sessions-sqlx-store 0.15) on memory, Redis
# and PostgreSQL, with one hot session and with 10,000 sessions round robin. Each
# configuration alternates with the bare server (benches/load.sh); the last table divides
# ours by tower-sessions on the same store and load. Loopback only; about 30 minutes.
#
#   PIN=1 bash benches/compare.sh                  # server on CPU 0, wrk on CPU 1
#   ROUNDS=1 DURATION=2s bash benches/compare.sh   # a quick look
#
# Ours runs each store as the docs recommend for production: `redis-near` and
# `postgres-near` (near cache, 60 s touch interval); `redis` and `postgres` are the same
# stores without the cache, for reference.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/services.sh >/dev/null

# A warm-up long enough for a near cache to hold all 10,000 sessions before the measurement.
export ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-3s} WARMUP=${WARMUP:-4s}
# CONFIGS="postgres-near postgres peer-postgres" runs a part (the summary keeps the pairs it has).
read -r -a configs <<<"${CONFIGS:-memory peer-memory redis-near redis peer-redis postgres-near postgres peer-postgres}"
out=target/compare.md
: >"$out"
for sessions in 1 10000; do
  echo "## $sessions session(s)" | tee -a "$out"
  SESSIONS=$sessions bash benches/load.sh "${configs[@]}" | tee -a "$out"
  echo | tee -a "$out"
done

# The summary rows: | config | mean bare | mean req/s | ratio of means | median |
echo "## Ours against tower-sessions (ratio of mean req/s)" | tee -a "$out"
echo | tee -a "$out"
echo "| store | sessions | ours | req/s | tower-sessions req/s | ours / tower-sessions | ours / bare |" | tee -a "$out"
echo "|---|---|---|---|---|---|---|" | tee -a "$out"
awk -F'|' '
  /^## [0-9]+ session/ { sessions = $0; sub(/^## /, "", sessions); sub(/ session.*/, "", sessions) }
  NF == 7 && $2 ~ /[a-z]/ && $3 ~ /^ *[0-9]+ *$/ {
    gsub(/ /, "", $2); rate[sessions, $2] = $4 + 0; ratio[sessions, $2] = $5 + 0
  }
  END {
    split("memory:memory:peer-memory redis:redis-near:peer-redis redis:redis:peer-redis postgres:postgres-near:peer-postgres postgres:postgres:peer-postgres", rows, " ")
    for (s = 1; s <= 2; s++) {
      n = (s == 1) ? 1 : 10000
      for (i = 1; i <= 5; i++) {
        split(rows[i], part, ":")
        ours = rate[n, part[2]]; theirs = rate[n, part[3]]
        if (ours && theirs)
          printf "| %s | %d | %s | %.0f | %.0f | %.2f | %.3f |\n", part[1], n, part[2], ours, theirs, ours / theirs, ratio[n, part[2]]
      }
    }
  }' "$out" | tee -a "$out.summary"
cat "$out.summary" >>"$out"
rm -f "$out.summary"
