#!/usr/bin/env bash
# Mutation testing: which small changes to src/ no test notices. Starts the servers the store
# tests talk to (as .ci/test does), installs cargo-mutants when it is missing, and runs it over
# src/ with every feature, so the Redis and SQL stores' tests count.
#
# The whole crate takes hours on two cores; narrow it with --file (repeatable), and, to save
# the build, with the test targets that exercise that file (after `--`, for cargo test):
#
#   bash scripts/mutants.sh --file src/store/memory.rs -- --lib --test memory_store --test model
#
# Other arguments go to `cargo mutants` as they are (--in-place reuses target/, --list lists
# the mutants without testing them). Results land in mutants.out/: missed.txt is the work list.
set -euo pipefail
cd "$(dirname "$0")/.."

bash .ci/services.sh

if ! cargo mutants --version >/dev/null 2>&1; then
  echo "installing cargo-mutants"
  cargo install --locked cargo-mutants
fi

# Every file under src/ unless the caller picked files.
scope=(--file 'src/**/*.rs')
in_place=false
for arg in "$@"; do
  case "$arg" in
    --) break ;;
    -f | --file | --file=*) scope=() ;;
    --in-place) in_place=true ;;
  esac
done

status=0
cargo mutants --all-features "${scope[@]}" "$@" || status=$?
if $in_place; then
  # Failures proptest saw were the mutants' (the baseline passed): not regressions to keep.
  git checkout -- 'tests/*.proptest-regressions'
fi
exit "$status"
