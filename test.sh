#!/usr/bin/env bash
# The test command: installs what the tests drive for real, checks the docs, then runs every
# test. A newcomer runs `./test.sh`; CI (.ci/run) calls this same script.
#
# Run it as root (or with passwordless sudo): the system tests (tests/system/) create network
# namespaces and iptables rules, and the Quickstart check runs the README's block in a fresh
# namespace. HOPGATE_SKIP_SYSTEM=1 skips both, saying so, where that is not possible.
set -euo pipefail
cd "$(dirname "$0")"

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then as_root=(sudo -n); else as_root=(); fi
fi
have_root() { [ "$(id -u)" -eq 0 ] || [ "${#as_root[@]}" -gt 0 ]; }
skip_system=${HOPGATE_SKIP_SYSTEM:-0}

# --- what the tests drive: curl (HTTP/1.1 and HTTP/2 with client certs), openssl (inspecting
# dev-ca certificates), iptables and iproute2 (transparent mode in a network namespace),
# python3 (the Quickstart's app).
need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ "${#need[@]}" -gt 0 ]; then
  if ! have_root; then
    echo "test.sh: missing ${need[*]}; run as root (or install them) to continue" >&2
    exit 1
  fi
  "${as_root[@]}" apt-get update
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${need[@]}"
fi

# --- the docs: the repository stands alone.
fail=0
readme_lines=$(wc -l < README.md)
if [ "$readme_lines" -gt 250 ]; then
  echo "docs: README.md has $readme_lines lines; keep it to 250 (the rest belongs in docs/)" >&2
  fail=1
fi
# No citation of a document the repository does not hold.
if git grep -n -I -E 'DESIGN\.md|SECURITY-RULES|STYLE\.md|\.\./shared/' -- . ':!test.sh'; then
  echo "docs: the lines above cite documents this repository does not hold" >&2
  fail=1
fi
# Every relative link in the Markdown files leads to a file that exists.
while IFS= read -r file; do
  dir=$(dirname "$file")
  while IFS= read -r target; do
    path=${target%%#*}
    [ -z "$path" ] && continue
    if [ ! -e "$dir/$path" ]; then
      echo "docs: $file links to \`$target\`, which does not exist" >&2
      fail=1
    fi
  done < <(grep -oE '\]\([^)]+\)' "$file" | sed -E 's/^\]\((.*)\)$/\1/' | grep -vE '^(https?|mailto):' || true)
done < <(git ls-files '*.md')
[ "$fail" -eq 0 ] || exit 1

# --- the unit, end-to-end and command-line tests.
cargo test --workspace "$@"

# --- the system tests and the Quickstart: root, network namespaces, iptables.
if [ "$skip_system" = 1 ]; then
  echo "test.sh: HOPGATE_SKIP_SYSTEM=1: skipping tests/system and the Quickstart check" >&2
  exit 0
fi
if ! have_root; then
  echo "test.sh: the system tests and the Quickstart check need root (network namespaces," \
    "iptables); run \`sudo ./test.sh\`, or set HOPGATE_SKIP_SYSTEM=1 to skip them" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  cargo test --test system "$@"
else
  cargo test --test system --no-run
  # Only the test binary runs as root, not cargo.
  bin=$(cargo test --test system --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
  "${as_root[@]}" "$bin"
fi

# The release binary ships: keep it small (line tables only; see Cargo.toml).
cargo build --release
size=$(stat -c %s "${CARGO_TARGET_DIR:-target}/release/hopgate")
if [ "$size" -gt $((40 * 1024 * 1024)) ]; then
  echo "release: target/release/hopgate is $((size / 1024 / 1024)) MiB; ship at most 40" >&2
  exit 1
fi

# The README's Quickstart block, verbatim, in a fresh network namespace (so its fixed ports
# cannot clash with anything running here), as the user running this script; it must print 200.
block=$(mktemp)
awk '/^## Quickstart/ { q = 1 } q && /^```sh$/ { f = 1; next } f && /^```$/ { exit } f' \
  README.md > "$block"
chmod 644 "$block"
ns="hopgate-qs-$$"
"${as_root[@]}" ip netns add "$ns"
trap '"${as_root[@]}" ip netns delete "$ns" 2>/dev/null || true; rm -f "$block"' EXIT
"${as_root[@]}" ip netns exec "$ns" ip link set lo up
as_me=()
[ "$(id -u)" -eq 0 ] || as_me=(sudo -n -u "$(id -un)")
out=$("${as_root[@]}" ip netns exec "$ns" "${as_me[@]}" env "PATH=$PATH" "HOME=$HOME" \
  bash -e "$block" 2>&1) || {
  echo "$out" >&2
  echo "Quickstart: the README block failed" >&2
  exit 1
}
if [ "$(printf '%s\n' "$out" | tail -1)" != 200 ]; then
  echo "$out" >&2
  echo "Quickstart: the README block did not print 200" >&2
  exit 1
fi
echo "Quickstart: the README block printed 200 (release binary: $((size / 1024 / 1024)) MiB)"
