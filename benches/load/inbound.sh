#!/usr/bin/env bash
# What the inbound sidecar adds to one request, measured on loopback with wrk.
#
#   direct:  wrk ──http──▶ haproxy ──http──────────────────────────▶ nginx (1 KiB)
#   sidecar: wrk ──http──▶ haproxy ══mTLS, client SVID══▶ hopgate ──http──▶ nginx (1 KiB)
#
# wrk cannot present a client certificate, so haproxy originates the mTLS hop with a pooled
# keep-alive connection in both setups; the difference between the two is hopgate plus TLS.
# The load generator is pinned to core 0, the servers to core 1 (taskset). Configurations
# alternate, each run REPS times; the medians are reported.
#
# Usage: bash benches/load/inbound.sh [connections=1] [seconds=10] [reps=3]
set -euo pipefail
cd "$(dirname "$0")/../.."

conns=${1:-1}
secs=${2:-10}
reps=${3:-3}

missing=()
for tool in nginx wrk haproxy taskset; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx wrk haproxy util-linux
fi
cargo build --release --quiet
bin=$PWD/target/release/hopgate

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# Ports: high and fixed; the script is for a quiet machine, not CI.
app=127.0.0.1:18180; sidecar=127.0.0.1:18106; admin=127.0.0.1:18100
front_direct=127.0.0.1:18181; front_sidecar=127.0.0.1:18182

$bin dev-ca init "$work/ca" --trust-domain bench.local >/dev/null
$bin dev-ca issue "$work/ca" spiffe://bench.local/ns/bench/sa/server --out "$work/server" >/dev/null
$bin dev-ca issue "$work/ca" spiffe://bench.local/ns/bench/sa/client --out "$work/client" >/dev/null
cat "$work/client/svid.pem" "$work/client/svid_key.pem" > "$work/client.pem"
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/1k"

cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen $app; location / { root $work; try_files /1k =404; } }
}
NGINX

cat > "$work/haproxy.cfg" <<HAP
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend direct
  bind $front_direct
  default_backend app
frontend sidecar
  bind $front_sidecar
  default_backend hopgate
backend app
  server app $app
backend hopgate
  server hopgate $sidecar ssl crt $work/client.pem verify none alpn http/1.1
HAP

cat > "$work/hopgate.yaml" <<YAML
identity:
  svid: { cert: server/svid.pem, key: server/svid_key.pem }
  bundles: { bench.local: ca/bundle.pem }
inbound:
  listen: $sidecar
  app: $app
telemetry: { log_format: text }
admin: { listen: $admin }
YAML

taskset -c 1 nginx -c "$work/nginx.conf" & pids+=($!)
HOPGATE_LOG=warn taskset -c 1 "$bin" run -c "$work/hopgate.yaml" > "$work/hopgate.log" 2>&1 & pids+=($!)
taskset -c 1 haproxy -f "$work/haproxy.cfg" -db > "$work/haproxy.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -sf "http://$admin/ready" >/dev/null && break; sleep 0.1; done
curl -sf "http://$front_sidecar/" -o /dev/null || { echo "sidecar path is not working"; cat "$work/hopgate.log"; exit 1; }

# Parses wrk --latency output into "rps p50_us p99_us".
measure() {
  taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" --latency "http://$1/" | awk '
    function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return (v+0)*1000; if (v ~ /s$/) return (v+0)*1000000; return v }
    /^ +50%/ { p50 = us($2) } /^ +99%/ { p99 = us($2) } /^Requests\/sec/ { rps = $2 }
    END { printf "%s %s %s\n", rps, p50, p99 }'
}

# Warm both paths (connection pools, page cache) before measuring.
taskset -c 0 wrk -t1 -c"$conns" -d2s "http://$front_direct/" >/dev/null
taskset -c 0 wrk -t1 -c"$conns" -d2s "http://$front_sidecar/" >/dev/null

: > "$work/direct"; : > "$work/sidecar"
for r in $(seq "$reps"); do
  measure "$front_direct" >> "$work/direct"
  measure "$front_sidecar" >> "$work/sidecar"
done
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
col() { awk -v c="$2" '{ print $c }' "$1" | median; }

printf '\n%s connection(s), %ss x %s reps, medians (%s)\n' "$conns" "$secs" "$reps" "$(date -u +%F)"
printf '%-10s %12s %10s %10s\n' setup req/s p50_us p99_us
for s in direct sidecar; do
  printf '%-10s %12s %10s %10s\n' "$s" "$(col "$work/$s" 1)" "$(col "$work/$s" 2)" "$(col "$work/$s" 3)"
done
d50=$(col "$work/direct" 2); s50=$(col "$work/sidecar" 2)
awk -v d="$d50" -v s="$s50" 'BEGIN { printf "sidecar adds %.0f us at p50\n", s - d }'
