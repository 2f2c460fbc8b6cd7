# Shell helpers sourced by benches/paired.sh and benches/server_instructions.sh.

# Installs from Debian's packages each named tool that is missing.
need_tools() {
  for tool in "$@"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "installing $tool (Debian package)" >&2
      apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null
    fi
  done
}

# A loopback port the kernel has free now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to $3 seconds (default 10) for the bench server of configuration $1 on port $2 to
# answer, then begins a session there: sets `cookie` to its "name=value", or exits.
sign_in() {
  local config=$1 port=$2 seconds=${3:-10}
  for _ in $(seq 1 $((seconds * 10))); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break
    sleep 0.1
  done
  cookie=$(curl -fsS -i "http://127.0.0.1:$port/login" | tr -d '\r' \
    | sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\).*/\1/p')
  [ -n "$cookie" ] || { echo "$config began no session" >&2; exit 1; }
}
