#!/usr/bin/env bash
# hopgate end to end on loopback: a dev CA, two SVIDs, the sidecar in front of a tiny echo app,
# and curl calling through it with a client SVID over HTTP/1.1 and HTTP/2.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet
bin=target/debug/hopgate
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

app_port=${APP_PORT:-18080}
inbound_port=${INBOUND_PORT:-15006}
admin_port=${ADMIN_PORT:-15000}

echo "== dev CA and SVIDs in $work"
$bin dev-ca init "$work/ca" --trust-domain example.org
$bin dev-ca issue "$work/ca" spiffe://example.org/ns/prod/sa/api --dns localhost
$bin dev-ca issue "$work/ca" spiffe://example.org/ns/prod/sa/client

cat > "$work/hopgate.yaml" <<YAML
identity:
  svid: { cert: ca/api/svid.pem, key: ca/api/svid_key.pem }
  bundles: { example.org: ca/bundle.pem }
inbound:
  listen: 127.0.0.1:$inbound_port
  app: 127.0.0.1:$app_port
telemetry:
  log_format: text
admin:
  listen: 127.0.0.1:$admin_port
YAML

echo "== check-config"
$bin check-config "$work/hopgate.yaml"

echo "== the app: echoes the headers it received"
python3 - "$app_port" <<'PY' &
import http.server, json, sys
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}, indent=1).encode()
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
PY
pids+=($!)
for _ in $(seq 50); do curl -sf "127.0.0.1:$app_port/" >/dev/null && break; sleep 0.1; done

echo "== hopgate run"
$bin run -c "$work/hopgate.yaml" > "$work/hopgate.log" 2>&1 &
hopgate_pid=$!
pids+=($hopgate_pid)
for _ in $(seq 50); do curl -sf "127.0.0.1:$admin_port/ready" >/dev/null && break; sleep 0.1; done
curl -s "127.0.0.1:$admin_port/ready"; echo

# curl checks the sidecar's certificate against the dev CA by the DNS name `--dns` put in it
# (an SVID names a SPIFFE ID, which curl cannot check); hopgate checks the client's SVID.
client=(--cacert "$work/ca/bundle.pem" --cert "$work/ca/client/svid.pem" --key "$work/ca/client/svid_key.pem")
echo "== HTTP/1.1 with a client SVID: the app sees the verified caller in x-forwarded-client-cert"
curl -s --http1.1 "${client[@]}" -H 'x-forwarded-client-cert: URI=spiffe://example.org/admin' \
  "https://localhost:$inbound_port/hello"
echo
echo "== HTTP/2 with a client SVID"
curl -s --http2 "${client[@]}" -o /dev/null -w 'status %{http_code}, http/%{http_version}\n' \
  "https://localhost:$inbound_port/hello"
echo "== no client certificate: refused in the handshake"
if curl -s --cacert "$work/ca/bundle.pem" "https://localhost:$inbound_port/hello" -o /dev/null; then
  echo "unexpected: the call without a certificate went through" >&2; exit 1
else
  echo "refused (curl exit $?)"
fi
echo "== /identity"
curl -s "127.0.0.1:$admin_port/identity"; echo

echo "== SIGTERM: drain and exit"
kill -TERM "$hopgate_pid"
wait "$hopgate_pid" && echo "hopgate exited 0"
