#!/usr/bin/env bash
# User-space instructions per request of the whole server (hyper, axum, the layer), counted by
# callgrind: examples/bench_server.rs under valgrind, answering 1,000 and then, in a second
# run, 6,000 `GET /` on its session over 8 keep-alive connections; the difference of the two
# totals over 5,000 leaves start-up and sign-in out. Nearly deterministic: the count moves by
# about 1 % with the machine's load (the runtime's own work between requests), so compare
# configurations counted in one run.
#
#   bash benches/server_instructions.sh                     # bare noop memory tower-sessions
#   bash benches/server_instructions.sh memory
#
# Under valgrind sha2 runs its software SHA-256 (about 3,480 instructions for a session id's one
# block) where this CPU runs SHA-NI (192): BENCHMARKS.md section 1.
set -euo pipefail
cd "$(dirname "$0")/.."

configs=("$@")
[ ${#configs[@]} -eq 0 ] && configs=(bare noop memory tower-sessions)
# shellcheck source=benches/lib.sh
source benches/lib.sh
need_tools valgrind curl
cargo build --release -j 1 --quiet --example bench_server --features redis,postgres,sqlite

server_pid=
cookie=
stop_server() {
  if [ -n "$server_pid" ]; then
    # valgrind writes its counts when the program ends; SIGTERM ends the server.
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap stop_server EXIT

# Sets `total` to the instructions of a server of configuration $1 that answered $2 requests.
# Runs in this shell (not in `$(...)`), so a failure exits and the trap stops the server.
total() {
  local config=$1 requests=$2 port out=target/callgrind.server.$1.$2
  port=$(free_port)
  BENCH_CONFIG=$config PORT=$port WORKERS=1 valgrind --tool=callgrind --callgrind-out-file="$out" \
    target/release/examples/bench_server 2>"target/bench_server-callgrind-$config.log" &
  server_pid=$!
  sign_in "$config" "$port" 60 # valgrind starts slowly
  python3 - "$port" "$cookie" "$requests" <<'PY'
import socket, sys
port, cookie, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n".encode()
for i in range(n):
    connection = connections[i % 8]
    connection.sendall(request)
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = connection.recv(4096)
        if not chunk:
            sys.exit("the server closed the connection")
        answer += chunk
    head, body = answer.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    if lines[0] != b"HTTP/1.1 200 OK":
        sys.exit(f"not 200: {head!r}")
    length = next(int(line.split(b":", 1)[1]) for line in lines[1:]
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = connection.recv(4096)
        if not chunk:
            sys.exit("the server closed the connection")
        body += chunk
PY
  stop_server
  total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  [ -n "$total" ] || { echo "no count for $config in $out" >&2; exit 1; }
}

echo "| configuration | instructions per request |"
echo "|---|---|"
total=
for config in "${configs[@]}"; do
  total "$config" 1000
  few=$total
  total "$config" 6000
  echo "| $config | $(( (total - few) / 5000 )) |"
done
