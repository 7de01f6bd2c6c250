#!/usr/bin/env bash
# What the inbound sidecar adds to one request, measured on loopback with wrk.
#
#   direct:  wrk ──http──▶ haproxy ──http──────────────────────────▶ nginx (1 KiB)
#   sidecar: wrk ──http──▶ haproxy ══mTLS, client SVID══▶ hopgate ──http──▶ nginx (1 KiB)
#   nginx:   wrk ──http──▶ haproxy ══mTLS, client SVID══▶ nginx (mTLS, pooled proxy_pass) ──http──▶ nginx
#
# The third line is the reference: a plain TLS-terminating reverse proxy (nginx, verifying the
# client certificate against the same bundle) in hopgate's place.
#
# wrk cannot present a client certificate, so haproxy originates the mTLS hop with a pooled
# keep-alive connection in both setups; the difference between the two is hopgate plus TLS.
# The load generator is pinned to core 0, the servers to core 1 (taskset). Configurations
# alternate, each run REPS times; the medians are reported.
#
# Usage: bash benches/load/inbound.sh [connections=1] [seconds=10] [reps=3]
#        PIN=0 to let the scheduler place the processes instead of pinning them.
set -euo pipefail
cd "$(dirname "$0")/../.."

gen_cpu="taskset -c 0"; srv_cpu="taskset -c 1"
if [ "${PIN:-1}" = 0 ]; then gen_cpu=""; srv_cpu=""; fi
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
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/hopgate

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# Ports: high and fixed; the script is for a quiet machine, not CI.
app=127.0.0.1:18180; sidecar=127.0.0.1:18106; admin=127.0.0.1:18100
front_direct=127.0.0.1:18181; front_sidecar=127.0.0.1:18182
ngx_tls=127.0.0.1:18107; front_nginx=127.0.0.1:18183

$bin dev-ca init "$work/ca" --trust-domain bench.local >/dev/null
$bin dev-ca issue "$work/ca" spiffe://bench.local/ns/bench/sa/server --out "$work/server" >/dev/null
$bin dev-ca issue "$work/ca" spiffe://bench.local/ns/bench/sa/client --out "$work/client" >/dev/null
cat "$work/client/svid.pem" "$work/client/svid_key.pem" > "$work/client.pem"
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/1k"
chmod a+rx "$work"; chmod a+r "$work/1k"  # nginx workers run unprivileged

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

# The reference proxy is its own nginx process, as hopgate is its own process.
cat > "$work/nginx-tls.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx-tls.pid;
error_log $work/nginx-tls.err;
events { worker_connections 1024; }
http {
  access_log off;
  upstream app { server $app; keepalive 16; }
  server {
    listen $ngx_tls ssl;
    ssl_certificate $work/server/svid.pem;
    ssl_certificate_key $work/server/svid_key.pem;
    ssl_client_certificate $work/ca/bundle.pem;
    ssl_verify_client on;
    ssl_protocols TLSv1.3;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header x-forwarded-client-cert "URI=\$ssl_client_s_dn";
    }
  }
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
frontend nginx
  bind $front_nginx
  default_backend nginxtls
backend app
  server app $app
backend hopgate
  server hopgate $sidecar ssl crt $work/client.pem verify none alpn http/1.1
backend nginxtls
  server nginx $ngx_tls ssl crt $work/client.pem verify none alpn http/1.1
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

$srv_cpu nginx -c "$work/nginx.conf" & pids+=($!)
$srv_cpu nginx -c "$work/nginx-tls.conf" & pids+=($!)
HOPGATE_LOG=warn $srv_cpu "$bin" run -c "$work/hopgate.yaml" > "$work/hopgate.log" 2>&1 & pids+=($!)
hopgate_pid=$!
$srv_cpu haproxy -f "$work/haproxy.cfg" -db > "$work/haproxy.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do
  curl -sf "http://$admin/ready" >/dev/null && curl -sf "http://$front_direct/" >/dev/null && break
  sleep 0.1
done
curl -sf "http://$front_nginx/" -o /dev/null || { echo "nginx reference path is not working"; cat "$work/nginx-tls.err"; exit 1; }
curl -sf "http://$front_sidecar/" -o /dev/null || { echo "sidecar path is not working"; cat "$work/hopgate.log" "$work/haproxy.log"; curl -sv "http://$front_sidecar/"; exit 1; }

# Parses wrk --latency output into "rps p50_us p99_us".
measure() {
  $gen_cpu wrk -t1 -c"$conns" -d"${secs}s" --latency "http://$1/" | awk '
    function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return (v+0)*1000; if (v ~ /s$/) return (v+0)*1000000; return v }
    /^ +50%/ { p50 = us($2) } /^ +99%/ { p99 = us($2) } /^Requests\/sec/ { rps = $2 }
    END { printf "%s %s %s\n", rps, p50, p99 }'
}

# Warm both paths (connection pools, page cache) before measuring.
$gen_cpu wrk -t1 -c"$conns" -d2s "http://$front_direct/" >/dev/null
$gen_cpu wrk -t1 -c"$conns" -d2s "http://$front_sidecar/" >/dev/null
$gen_cpu wrk -t1 -c"$conns" -d2s "http://$front_nginx/" >/dev/null

: > "$work/direct"; : > "$work/sidecar"; : > "$work/nginx"
for r in $(seq "$reps"); do
  measure "$front_direct" >> "$work/direct"
  measure "$front_sidecar" >> "$work/sidecar"
  measure "$front_nginx" >> "$work/nginx"
done
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
col() { awk -v c="$2" '{ print $c }' "$1" | median; }

printf '\n%s connection(s), %ss x %s reps, medians (%s)\n' "$conns" "$secs" "$reps" "$(date -u +%F)"
printf '%-10s %12s %10s %10s\n' setup req/s p50_us p99_us
for s in direct sidecar nginx; do
  printf '%-10s %12s %10s %10s\n' "$s" "$(col "$work/$s" 1)" "$(col "$work/$s" 2)" "$(col "$work/$s" 3)"
done
d50=$(col "$work/direct" 2); s50=$(col "$work/sidecar" 2); n50=$(col "$work/nginx" 2)
awk -v d="$d50" -v s="$s50" -v n="$n50" \
  'BEGIN { printf "hopgate adds %.0f us at p50 over direct; nginx terminating mTLS adds %.0f us\n", s - d, n - d }'

# STRACE=1: count hopgate's system calls over 1000 sidecar requests (to see per-request I/O).
if [ -n "${STRACE:-}" ]; then
  strace -f ${STRACE_ARGS:--c} -p "$hopgate_pid" -o "$work/strace" &
  strace_pid=$!
  sleep 0.5
  $gen_cpu wrk -t1 -c1 -d2s "http://$front_sidecar/" | grep -E "requests in"
  kill -INT "$strace_pid"; wait "$strace_pid" || true
  head -${STRACE_LINES:-20} "$work/strace"
fi

# PROFILE=out.data: one more sidecar run under `perf record` (cpu-clock, call graphs) of hopgate.
if [ -n "${PROFILE:-}" ]; then
  perf record -e cpu-clock -F 4999 -g -p "$hopgate_pid" -o "$PROFILE" -- sleep "$secs" &
  perf_pid=$!
  measure "$front_sidecar" > /dev/null
  wait "$perf_pid"
  echo "profile written to $PROFILE (perf report -i $PROFILE --no-children)"
fi
