#!/usr/bin/env bash
# The test command: installs what the tests drive for real, then runs the whole suite.
# Run it as a newcomer would (`./test.sh`); CI (.ci/run) calls this same script.
set -euo pipefail
cd "$(dirname "$0")"

# System packages the tests drive for real: curl (HTTP/1.1 and HTTP/2 client with client certs),
# openssl (inspecting the certificates `hopgate dev-ca` issues), and iptables and iproute2 (the
# transparent-mode tests: a network namespace with an iptables REDIRECT rule).
need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${need[@]}"
fi

cargo test --workspace "$@"
