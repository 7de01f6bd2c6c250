#!/usr/bin/env bash
# The test command: installs what the tests drive for real, checks the docs, then runs every
# test. A newcomer runs `./test.sh`; CI (.ci/run) runs the same phases, one by one.
#
#   ./test.sh                  every phase, in order
#   ./test.sh PHASE...         only these: setup docs unit deploy system release quickstart
#   ./test.sh jaeger-ui        not a test phase, and never run by default: builds the Jaeger UI
#                              that docs/screenshots/jaeger-trace.sh serves (once; npm)
#   ./test.sh mcp-venv         not a test phase: makes (once) the virtualenv with the MCP Python
#                              SDK that tests/mcp/ runs on, and prints its python (system does it)
#
# deploy checks deploy/kubernetes/ offline: every manifest strictly against the Kubernetes
# schemas, the pod's shape, and the config and policies inside it against the binary
# (tests/deploy/check_manifests.py, in a virtualenv that setup makes).
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

# Whether every `*.md` a tracked file names is a file of the repository, and every `../` path
# stays inside it (run by phase_docs).
refs_check=$(cat <<'PY'
import os, re, subprocess, sys
files = subprocess.run(["git", "ls-files", "-z"], capture_output=True, check=True).stdout.decode().split("\0")
files = [f for f in files if f and os.path.isfile(f)]
names = {os.path.basename(f) for f in files}
md = re.compile(r"(?<![\w/.:-])((?:[\w.-]+/)*[\w-]+\.md)\b")
up = re.compile(r"(?<![\w.])((?:\.\./)+[\w.-]+(?:/[\w.-]+)*)")
bad = 0
for f in files:
    if f.endswith((".lock", ".png", ".der")):
        continue
    try:
        text = open(f, encoding="utf-8").read()
    except (UnicodeDecodeError, OSError):
        continue
    for n, line in enumerate(text.splitlines(), 1):
        for m in md.finditer(line):
            if os.path.basename(m.group(1)) not in names:
                print(f"{f}:{n}: `{m.group(1)}` is not a file of this repository"); bad = 1
        for m in up.finditer(line):
            target = os.path.normpath(os.path.join(os.path.dirname(f), m.group(1)))
            if target.startswith(".."):
                print(f"{f}:{n}: `{m.group(1)}` points outside the repository"); bad = 1
sys.exit(bad)
PY
)

needs_root() {
  if [ "$skip_system" = 1 ]; then
    echo "test.sh: HOPGATE_SKIP_SYSTEM=1: skipping $1" >&2
    return 1
  fi
  if ! have_root; then
    echo "test.sh: $1 needs root (network namespaces, iptables); run \`sudo ./test.sh\`," \
      "or set HOPGATE_SKIP_SYSTEM=1 to skip it" >&2
    exit 1
  fi
}

phase_setup() {
  # --- what the tests drive: curl (HTTP/1.1 and HTTP/2 with client certs), openssl (inspecting
  # dev-ca certificates), iptables and iproute2 (transparent mode in a network namespace),
  # python3 (the Quickstart's app, and the deploy check in a virtualenv: Debian keeps venv's
  # pip bootstrap in python3-venv).
  need=()
  command -v curl >/dev/null 2>&1 || need+=(curl)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  command -v iptables >/dev/null 2>&1 || need+=(iptables)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  if ! command -v python3 >/dev/null 2>&1; then
    need+=(python3 python3-venv)
  elif ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    need+=(python3-venv)
  fi
  # setpriv (util-linux) runs a command as another uid: the SPIRE tests fetch SVIDs as the
  # workload uids their entries select. gcc builds SPIRE's SQLite datastore (cgo).
  command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
  command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
  # Go builds SPIRE (below). Debian's golang-go only if it is new enough: bookworm's is not.
  if ! find_go && go_candidate_ok; then need+=(golang-go); fi
  if [ "${#need[@]}" -gt 0 ]; then
    if ! have_root; then
      echo "test.sh: missing ${need[*]}; run as root (or install them) to continue" >&2
      exit 1
    fi
    "${as_root[@]}" apt-get update
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends "${need[@]}"
  fi
  python_tools
  build_spire
  build_jaeger
}

# --- the tests' Python tools, in a virtualenv of their own (PyPI, never the system's
# site-packages): kubernetes-validate for the deploy check, and the official MCP Python SDK for
# the MCP tool server and client that the system tests route through the proxy (tests/mcp/).
# Made once; later runs find the pinned versions there and install only what is missing.
kubernetes_validate_version=1.37.0
mcp_version=2.3.0
venv=${CARGO_TARGET_DIR:-target}/tools/venv

python_tools() {
  if ! { [ -x "$venv/bin/python" ] && "$venv/bin/python" -c \
    "import yaml, kubernetes_validate as k; assert k.__version__ == '$kubernetes_validate_version'" \
    2>/dev/null; }; then
    echo "test.sh: installing kubernetes-validate $kubernetes_validate_version into $venv (once)"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    if ! python3 -m venv "$venv"; then
      echo "test.sh: \`python3 -m venv\` failed; install python3-venv (\`./test.sh setup\` as root does)" >&2
      exit 1
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      "kubernetes-validate==$kubernetes_validate_version" PyYAML
  fi
  # The SDK's own version, as pip recorded it: `mcp` has no __version__.
  if ! "$venv/bin/python" -c \
    "import importlib.metadata as m, mcp; assert m.version('mcp') == '$mcp_version'" 2>/dev/null; then
    echo "test.sh: installing mcp $mcp_version (the MCP Python SDK) into $venv (once)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "mcp==$mcp_version"
  fi
}

# The venv ready, and HOPGATE_TEST_PYTHON set to its python (an absolute path) for the system
# tests, which start tests/mcp/crm_server.py and tests/mcp/client.py with it.
mcp_venv() {
  python_tools
  HOPGATE_TEST_PYTHON=$(cd "$venv/bin" && pwd)/python
  export HOPGATE_TEST_PYTHON
}

phase_mcp_venv() {
  mcp_venv
  echo "mcp-venv: HOPGATE_TEST_PYTHON=$HOPGATE_TEST_PYTHON"
}

# --- SPIRE: the system tests (tests/system/spire.rs) run a real spire-server and spire-agent.
spire_version=1.13.3
# SPIRE 1.13.3's go.mod says `go 1.25.3`; older toolchains refuse to build it.
go_min=1.25.3
spire_bin=${CARGO_TARGET_DIR:-target}/tools/spire-$spire_version/bin

# Whether `go` is on PATH, or where the official tarball puts it (then it is added to PATH).
find_go() {
  command -v go >/dev/null 2>&1 && return 0
  [ -x /usr/local/go/bin/go ] || return 1
  PATH=$PATH:/usr/local/go/bin
}

# Whether version $1 (1.25.3, 1.19, ...) is at least $go_min.
go_new_enough() {
  [ "$(printf '%s\n%s\n' "$go_min" "$1" | sort -V | head -1)" = "$go_min" ]
}

# Whether Debian's golang-go candidate is new enough to build SPIRE (apt-cache says 2:1.19~1).
go_candidate_ok() {
  have_root || return 1
  "${as_root[@]}" apt-get update >/dev/null
  candidate=$(apt-cache policy golang-go | sed -n 's/^ *Candidate: *\(.*\)$/\1/p')
  candidate=${candidate#*:}
  candidate=${candidate%%[~+-]*}
  [ -n "$candidate" ] && [ "$candidate" != "(none)" ] && go_new_enough "$candidate"
}

# Builds spire-server and spire-agent once into $spire_bin; later runs find them there.
build_spire() {
  if [ -x "$spire_bin/spire-server" ] && [ -x "$spire_bin/spire-agent" ]; then
    return 0
  fi
  if ! find_go; then
    echo "test.sh: building SPIRE $spire_version needs Go >= $go_min, and there is no \`go\`" \
      "(Debian's golang-go is older); install Go $go_min or later and run \`./test.sh setup\`" >&2
    exit 1
  fi
  have=$(go env GOVERSION)
  have=${have#go}
  if ! go_new_enough "$have"; then
    echo "test.sh: building SPIRE $spire_version needs Go >= $go_min; \`go\` is $have" >&2
    exit 1
  fi
  echo "test.sh: building spire-server and spire-agent $spire_version (once; cached in $spire_bin)"
  # A scratch module pins SPIRE as a tool dependency: its go.sum records every module the build
  # resolved, and both commands build in one `go install`, sharing the compiled packages.
  # GOTOOLCHAIN=local: build with the Go found above, never fetch another toolchain.
  # CGO_ENABLED=1: the sql datastore's SQLite driver is cgo.
  build=${CARGO_TARGET_DIR:-target}/tools/spire-build
  mkdir -p "$build" "$spire_bin"
  spire_bin=$(cd "$spire_bin" && pwd)
  (
    cd "$build"
    export GOTOOLCHAIN=local CGO_ENABLED=1 GOFLAGS=-buildvcs=false
    [ -f go.mod ] || go mod init spirebuild
    go get -tool "github.com/spiffe/spire/cmd/spire-server@v$spire_version"
    go get -tool "github.com/spiffe/spire/cmd/spire-agent@v$spire_version"
    GOBIN=$spire_bin go install github.com/spiffe/spire/cmd/spire-server \
      github.com/spiffe/spire/cmd/spire-agent
  )
  "$spire_bin/spire-server" --version
}

# --- Jaeger: the system tests (tests/system/jaeger.rs) export spans to a real Jaeger
# all-in-one (in-memory storage) and read them back from its query API.
jaeger_version=1.75.0
jaeger_bin=${CARGO_TARGET_DIR:-target}/tools/jaeger-$jaeger_version/bin

# Builds `jaeger` once into $jaeger_bin from the Go module proxy, as SPIRE is built.
build_jaeger() {
  if [ -x "$jaeger_bin/jaeger" ]; then
    return 0
  fi
  echo "test.sh: building Jaeger $jaeger_version (once; cached in $jaeger_bin)"
  local build=${CARGO_TARGET_DIR:-target}/tools/jaeger-build
  mkdir -p "$build" "$jaeger_bin"
  jaeger_bin=$(cd "$jaeger_bin" && pwd)
  (
    cd "$build"
    [ -f go.mod ] || go mod init jaegerbuild
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@v$jaeger_version"
    GOBIN=$jaeger_bin go install github.com/jaegertracing/jaeger/cmd/jaeger
  )
  [ -x "$jaeger_bin/jaeger" ]
}

# --- The Jaeger UI, for docs/screenshots/jaeger-trace.sh only (`./test.sh jaeger-ui`; no test
# needs it, so setup does not build it). A `go install`ed jaeger serves a placeholder page: the
# UI's assets are embedded only in Jaeger's release builds. So the UI is built from its source
# with npm, once, into $jaeger_ui_dir, and jaeger's query extension serves that folder
# (`jaeger_query: ui: assets_path:`). The version is the one Jaeger 1.75.0 pins: its jaeger-ui
# submodule is at this commit, tagged v1.74.0.
jaeger_ui_version=1.74.0
jaeger_ui_commit=4606e0e7aba353224c0a7d1d2588366da3993f24
jaeger_ui_dir=${CARGO_TARGET_DIR:-target}/tools/jaeger-ui-$jaeger_ui_version

# Builds the UI once into $jaeger_ui_dir. The source: the git repository JAEGER_UI_SRC names (a
# clone of jaeger-ui holding the tag), or else jaeger-ui's own repository, cloned.
build_jaeger_ui() {
  if [ -f "$jaeger_ui_dir/index.html" ]; then
    return 0
  fi
  local node_major
  node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if [ "$node_major" -lt 20 ]; then
    echo "test.sh: building the Jaeger UI needs Node.js >= 20 and npm (Debian: nodejs npm)" >&2
    exit 1
  fi
  local src=${JAEGER_UI_SRC:-https://github.com/jaegertracing/jaeger-ui.git}
  local build=${CARGO_TARGET_DIR:-target}/tools/jaeger-ui-build
  echo "test.sh: building the Jaeger UI $jaeger_ui_version from $src (once; cached in $jaeger_ui_dir)"
  rm -rf "$build"
  mkdir -p "$build"
  # A git work tree, not an export: the UI's `prepare` (husky) and its version stamp run git.
  # A local clone shares the objects (hard links), and --depth would be ignored there.
  local depth=(--depth 1)
  [ ! -d "$src" ] || depth=()
  git -c advice.detachedHead=false clone -q "${depth[@]}" --branch "v$jaeger_ui_version" \
    "$src" "$build/repo"
  local have
  have=$(git -C "$build/repo" rev-parse HEAD)
  if [ "$have" != "$jaeger_ui_commit" ]; then
    echo "test.sh: jaeger-ui v$jaeger_ui_version is $have there, not $jaeger_ui_commit" >&2
    exit 1
  fi
  (
    cd "$build/repo"
    export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
    # npm 10 (the one of the Node 22 the UI's .nvmrc names): its lock file lists the optional
    # native bindings of one platform only, which npm 11's `npm ci` refuses as out of sync.
    npm exec --yes --package=npm@10.9.4 -- npm ci
    cd packages/jaeger-ui
    npm run build
  )
  rm -rf "$jaeger_ui_dir.tmp"
  cp -r "$build/repo/packages/jaeger-ui/build" "$jaeger_ui_dir.tmp"
  mv "$jaeger_ui_dir.tmp" "$jaeger_ui_dir"
  # The source and its node_modules (~700 MB) are not kept: the built folder is all that runs.
  rm -rf "$build"
}

phase_jaeger_ui() {
  find_go || true
  build_jaeger
  build_jaeger_ui
  echo "jaeger-ui: $jaeger_ui_dir"
}

phase_docs() {
  # --- the docs: the repository stands alone.
  fail=0
  readme_lines=$(wc -l < README.md)
  if [ "$readme_lines" -gt 250 ]; then
    echo "docs: README.md has $readme_lines lines; keep it to 250 (the rest belongs in docs/)" >&2
    fail=1
  fi
  # No citation of a document the repository does not hold: every `*.md` a tracked file names
  # is a file of the repository, and every `../` path stays inside it.
  if ! python3 -c "$refs_check"
  then
    echo "docs: the lines above cite documents or paths this repository does not hold" >&2
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
  echo "docs: ok"
}

# The unit, end-to-end and command-line tests.
phase_unit() {
  cargo test --workspace
}

# deploy/kubernetes/ without a cluster: the manifests against the Kubernetes 1.33 schemas and
# the pod's shape, then the config and policies in its ConfigMaps through the debug binary.
phase_deploy() {
  python_tools
  cargo build
  "$venv/bin/python" tests/deploy/check_manifests.py \
    --hopgate "${CARGO_TARGET_DIR:-target}/debug/hopgate"
}

phase_system() {
  needs_root "the system tests" || return 0
  # The MCP tool server and client (tests/mcp/) run on the venv's python: HOPGATE_TEST_PYTHON.
  mcp_venv
  # --- the system tests and the Quickstart: root, network namespaces, iptables.
  if [ "$(id -u)" -eq 0 ]; then
    cargo test --test system
  else
    cargo test --test system --no-run
    # Only the test binary runs as root, not cargo.
    bin=$(cargo test --test system --no-run --message-format=json 2>/dev/null \
      | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
    "${as_root[@]}" env "HOPGATE_TEST_PYTHON=$HOPGATE_TEST_PYTHON" "$bin"
  fi
}

phase_release() {
  # The release binary ships: keep it small (symbols, no DWARF; see Cargo.toml).
  cargo build --release
  size=$(stat -c %s "${CARGO_TARGET_DIR:-target}/release/hopgate")
  if [ "$size" -gt $((40 * 1024 * 1024)) ]; then
    echo "release: target/release/hopgate is $((size / 1024 / 1024)) MiB; ship at most 40" >&2
    exit 1
  fi
  echo "release: target/release/hopgate is $((size / 1024 / 1024)) MiB"
}

phase_quickstart() {
  needs_root "the Quickstart check" || return 0
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
  echo "Quickstart: the README block printed 200"
}

phases=("$@")
[ "${#phases[@]}" -gt 0 ] || phases=(setup docs unit deploy system release quickstart)
for phase in "${phases[@]}"; do
  case "$phase" in
    setup | docs | unit | deploy | system | release | quickstart) "phase_$phase" ;;
    jaeger-ui) phase_jaeger_ui ;;
    mcp-venv) phase_mcp_venv ;;
    *)
      echo "test.sh: unknown phase \`$phase\`; phases: setup docs unit deploy system release quickstart" \
        "(and jaeger-ui, mcp-venv)" >&2
      exit 2
      ;;
  esac
done
