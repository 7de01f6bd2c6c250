#!/usr/bin/env bash
# Runs every cargo-fuzz target (`cargo fuzz list`) for SECONDS each, one after another, from its
# committed seeds, and prints per target the executions, the coverage and the crashes. Exits 1
# when any target crashed (a panic, a timeout, an out-of-memory) or could not run.
#
#   fuzz/run.sh SECONDS [TARGET...]   e.g. fuzz/run.sh 10 (CI's smoke), fuzz/run.sh 600 (a long
#                                     run), fuzz/run.sh 600 jwks mcp_body (those two only)
#
# Each target starts from the seeds in corpus/<target>/ with a descriptive name, copied into a
# scratch corpus (target/run-corpus/<target>/, emptied first) that libFuzzer grows: committed
# seeds stay as they are, and libFuzzer's own finds (40-hex names) left in corpus/ by a plain
# `cargo fuzz run` are not used. A crashing input is in artifacts/<target>/; the log of each
# target is in target/run-logs/<target>.log. No nightly needed: RUSTC_BOOTSTRAP=1 lets the
# stable toolchain take cargo-fuzz's flags. cargo-fuzz is installed when missing.
set -euo pipefail

usage() {
  echo "usage: $0 SECONDS [TARGET...]   (fuzz every target, or those named, for SECONDS each)" >&2
  exit 2
}
[[ $# -ge 1 && $1 =~ ^[1-9][0-9]*$ ]] || usage
secs=$1
shift

cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

# Build every target once, so each target's SECONDS are spent fuzzing.
cargo fuzz build
targets=$(cargo fuzz list)
if [[ $# -gt 0 ]]; then
  for wanted in "$@"; do
    grep -qx -- "$wanted" <<<"$targets" || { echo "no fuzz target named $wanted" >&2; usage; }
  done
  targets="$*"
fi
scratch=target/run-corpus
logs=target/run-logs
mkdir -p "$scratch" "$logs"

failed=()
rows=()
for target in $targets; do
  corpus="$scratch/$target"
  rm -rf "$corpus"
  mkdir -p "$corpus"
  seeds=0
  for seed in "corpus/$target"/*; do
    [[ -f $seed && ! ${seed##*/} =~ ^[0-9a-f]{40}$ ]] || continue
    cp "$seed" "$corpus/"
    seeds=$((seeds + 1))
  done
  log="$logs/$target.log"
  echo "== $target: ${secs}s from $seeds seeds" >&2
  # The targets' scratch files (a JWKS file, a config folder) go to a TMPDIR of their own,
  # removed afterwards.
  tmp="$PWD/target/run-tmp/$target"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  status=0
  # -timeout: an input that runs for 10 s is a hang, reported as a failure.
  TMPDIR="$tmp" cargo fuzz run "$target" "$corpus" -- \
    -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
  rm -rf "$tmp"

  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2 || true)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2 || true)
  units=$(grep -o 'corp: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2 || true)
  crashes=$(grep -cE 'Test unit written to .*(crash|oom|timeout|leak)-' "$log" || true)
  if [[ $status -ne 0 ]]; then
    failed+=("$target")
    # A run that failed without writing an input (a build error, a bad flag) still counts.
    [[ $crashes -gt 0 ]] || crashes="?"
    {
      echo "-- $target failed (exit $status); $log:"
      grep -A 2 'panicked at' "$log" || true
      grep -E 'ERROR: libFuzzer|SUMMARY|Test unit written to|^Base64:' "$log" || tail -n 20 "$log"
    } >&2
  fi
  rows+=("$(printf '%-14s %12s %10s %7s %7s %7s %8s' "$target" "${execs:--}" "${speed:--}" \
    "${cov:--}" "${ft:--}" "${units:--}" "$crashes")")
done

echo
printf '%-14s %12s %10s %7s %7s %7s %8s\n' target execs exec/s cov ft corpus crashes
for row in "${rows[@]}"; do
  echo "$row"
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "FAILED: ${failed[*]} (inputs in fuzz/artifacts/<target>/, logs in fuzz/$logs/)" >&2
  exit 1
fi
echo "every target ran ${secs}s without a crash"
