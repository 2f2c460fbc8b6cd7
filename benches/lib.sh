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
