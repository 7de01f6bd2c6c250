#!/usr/bin/env bash
# Makes docs/jaeger-trace.png: the trace of `hopgate demo`'s first step (alice → support-agent →
# inference → crm, the delegated call) as Jaeger's UI shows it, crm's `hopgate.inbound` span
# opened on its attributes.
#
#   docs/screenshots/jaeger-trace.sh
#
# What it runs, all on this machine's loopback:
# - Jaeger all-in-one 1.75.0 (OTLP in, memory storage, the query API and the UI out) on free
#   ports, serving the Jaeger UI that `./test.sh jaeger-ui` builds once with npm (a
#   `go install`ed jaeger has only a placeholder page; test.sh says why). It clones the UI's
#   source from its repository, or from the git repository JAEGER_UI_SRC names;
# - `cargo run -q -- demo --otlp`, which sends every span to that Jaeger before it exits;
# - headless Chromium (Debian's `chromium`), which takes the screenshot. Where it is missing the
#   script installs it with `apt-get install -y chromium`, as root or through `sudo -n`.
# The trace is the first one the demo prints (step 1); the URL's `uiFind=<span id>` makes the UI
# open that span's details, and a UI config script (Jaeger's `ui.config_file`) opens its Tags.
set -euo pipefail
cd "$(dirname "$0")/../.."

out=docs/jaeger-trace.png
target=${CARGO_TARGET_DIR:-target}
jaeger=$target/tools/jaeger-1.75.0/bin/jaeger
ui=$target/tools/jaeger-ui-1.74.0

# --- the tools: Jaeger and its UI (built once, cached under $target/tools/), and Chromium.
./test.sh jaeger-ui
if ! command -v chromium >/dev/null 2>&1; then
  echo "jaeger-trace.sh: installing Debian's chromium (sudo apt-get install -y chromium)"
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo -n)
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi

work=$(mktemp -d)
jaeger_pid=
cleanup() {
  if [ -n "$jaeger_pid" ]; then
    # SIGTERM, then SIGKILL after 2 s: its graceful stop can take 10 s, and memory storage
    # holds nothing to keep.
    kill "$jaeger_pid" 2>/dev/null || true
    for _ in $(seq 20); do
      kill -0 "$jaeger_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$jaeger_pid" 2>/dev/null || true
    wait "$jaeger_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# --- Jaeger on four loopback ports nothing listens on now.
read -r otlp_grpc otlp_http query query_grpc < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')
# Opens the Tags of the span the URL's uiFind opened, as a click on "Tags" would; once.
cat > "$work/ui-config.js" <<'JS'
function UIConfig() {
  if (!window.hopgateOpenTags) {
    window.hopgateOpenTags = setInterval(function () {
      var tags = document.querySelector('.AccordianKeyValues--header');
      if (tags) {
        clearInterval(window.hopgateOpenTags);
        tags.click();
      }
    }, 100);
  }
  return {};
}
JS
cat > "$work/jaeger.yaml" <<YAML
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    ui:
      assets_path: $(cd "$ui" && pwd)
      config_file: $work/ui-config.js
    http:
      endpoint: 127.0.0.1:$query
    grpc:
      endpoint: 127.0.0.1:$query_grpc
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 1000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$otlp_grpc
      http:
        endpoint: 127.0.0.1:$otlp_http
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
YAML
"$jaeger" --config "$work/jaeger.yaml" > "$work/jaeger.log" 2>&1 &
jaeger_pid=$!
api=http://127.0.0.1:$query
for _ in $(seq 300); do
  curl -sf "$api/api/services" >/dev/null 2>&1 && break
  if ! kill -0 "$jaeger_pid" 2>/dev/null; then
    cat "$work/jaeger.log" >&2
    echo "jaeger-trace.sh: Jaeger exited" >&2
    exit 1
  fi
  sleep 0.1
done
if ! curl -sf "$api/search" | grep -q '<title>Jaeger UI</title>'; then
  cat "$work/jaeger.log" >&2
  echo "jaeger-trace.sh: $api/search is not the Jaeger UI" >&2
  exit 1
fi

# --- the demo, exporting over OTLP gRPC; its first trace is step 1's delegated call.
if ! cargo run -q -- demo --otlp "http://127.0.0.1:$otlp_grpc" > "$work/demo.out" 2>&1; then
  cat "$work/demo.out" >&2
  echo "jaeger-trace.sh: the demo failed" >&2
  exit 1
fi
trace=$(sed -n 's/^ *trace \([0-9a-f]\{32\}\)$/\1/p' "$work/demo.out" | head -1)
if [ -z "$trace" ]; then
  cat "$work/demo.out" >&2
  echo "jaeger-trace.sh: the demo printed no trace id" >&2
  exit 1
fi
# The four spans of the chain, once Jaeger holds them all; crm's inbound one is opened.
span=
for _ in $(seq 100); do
  span=$(curl -sf "$api/api/traces/$trace" | python3 -c '
import json, sys
trace = json.load(sys.stdin)["data"][0]
service = {k: p["serviceName"] for k, p in trace["processes"].items()}
spans = trace["spans"]
if len(spans) >= 4 and {"support-agent", "inference", "crm"} <= set(service.values()):
    print(next(s["spanID"] for s in spans
               if s["operationName"] == "hopgate.inbound" and service[s["processID"]] == "crm"))
' 2>/dev/null || true)
  [ -n "$span" ] && break
  sleep 0.1
done
if [ -z "$span" ]; then
  echo "jaeger-trace.sh: trace $trace did not reach Jaeger with its four spans" >&2
  exit 1
fi

# --- the screenshot. The virtual time budget lets the UI fetch the trace and lay it out.
chromium --headless --disable-gpu --no-sandbox \
  --user-data-dir="$work/chromium" --window-size=1600,1000 \
  --screenshot="$out" --virtual-time-budget=10000 \
  "$api/trace/$trace?uiFind=$span" > "$work/chromium.log" 2>&1 || {
  cat "$work/chromium.log" >&2
  echo "jaeger-trace.sh: chromium failed" >&2
  exit 1
}
if command -v optipng >/dev/null 2>&1; then
  optipng -quiet -o2 "$out"
fi
echo "jaeger-trace.sh: $out ($(stat -c %s "$out") bytes): trace $trace, span $span"
