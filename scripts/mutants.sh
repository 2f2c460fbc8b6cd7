#!/usr/bin/env bash
# Mutation testing: which small changes to src/ no test notices. Starts the servers the store
# tests talk to (as .ci/test does), installs cargo-mutants when it is missing, and runs it over
# src/ with every feature, so the Redis and SQL stores' tests count.
#
# The whole crate takes hours on two cores; narrow it with --file (repeatable), and with the
# test targets that exercise that file. Give those with -C (cargo-mutants passes them to both
# the build and the test command; after `--` they would reach only `cargo test`, and every
# mutant would build all 30-odd test binaries), and, after `-- --`, filters for the test
# binaries (here: skip the other stores' cases in the model and race tests):
#
#   bash scripts/mutants.sh --in-place --timeout 15 --file src/store/memory.rs \
#     -C --test=memory_store -C --test=model -C --test=races \
#     -- -- --skip redis --skip sqlite --skip postgres
#
# Other arguments go to `cargo mutants` as they are (--in-place reuses target/ and implies one
# job; --timeout stops a mutant that makes a loop endless, counted as caught; --list lists the
# mutants without testing them). Results land in mutants.out/: missed.txt is the work list.
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
