#!/usr/bin/env bash
# One hop, side by side, on loopback: what hopgate costs next to a plain nginx mTLS hop.
#
#   direct   load ──http──▶ app (nginx, 1 KiB)
#   nginx    load ──http──▶ nginx A ══mTLS, client cert, TLS 1.3, pooled══▶ nginx B ──http──▶ app
#   hopgate  load ──http──▶ hopgate A outbound ══mTLS, h2, pooled══▶ hopgate B inbound ──http──▶ app
#            (full enforcement: SPIFFE on both ends, Cedar on both sides, a hop token minted by A
#             and verified by B on every request, an audit record per decision on each side,
#             a span per request on each side at 100% sampling, exported over OTLP/HTTP to a
#             local receiver that accepts every batch and runs on the load generator's core)
#   untraced the same hopgate pair with tracing off: the difference is what tracing costs
#   sealed   the traced hopgate pair with `telemetry.audit.sign: true`: the difference is what
#            sealing the audit log costs
#   before   with BEFORE_BIN=path/to/an/older/hopgate: the traced pair run by that binary, to
#            compare two builds in one run (BEFORE_STREAMS=off: its inbound side keeps no registry
#            of open requests, to measure the registry with BEFORE_BIN set to the same binary)
#   mcp      the traced hopgate pair reading MCP (`mcp: { paths: [/mcp] }` on both sides): a 1 KiB
#            JSON-RPC `tools/call` POSTed to /mcp with the 2026-07-28 headers, decided by its
#            tool on both sides (the app answers a fixed JSON-RPC result)
#   post     the traced hopgate pair with the same 1 KiB body POSTed to a plain path: the
#            difference to `mcp` is what MCP awareness costs a call
#   shared   the traced hopgate pair, every request sent with one `traceparent`: all of them one
#            transaction, so A reuses its hop token (no signature per request, B meets a token it
#            has seen). The load sends no `traceparent` otherwise, so each request of `hopgate`
#            and `untraced` is a transaction of its own.
#
# Runs, each configuration in turn (alternating), REPS times, medians reported:
#   wrk    HTTP/1.1, CONNS connections, SECS seconds
#   h2load HTTP/2 (h2c prior knowledge) to the first proxy, CONNS connections × 10 streams
#   rate   a fixed rate (RATE req/s, oha, HTTP/1.1, CONNS connections): latency at equal load
# The load generator is pinned to core 0, every server to core 1 (taskset; PIN=0 to not pin).
# CPU per request is the servers' user+system time over the requests served (both proxies of a
# pair); peak RSS is each proxy's VmHWM after all runs.
#
# Usage: bash benches/load/run.sh [secs=10] [reps=3] [conns=16]
#        RATE=2000 for the fixed-rate run; RUNS="wrk h2load rate" to choose runs;
#        CONFIGS="direct nginx hopgate shared untraced" to choose configurations (one alone, to
#        profile it).
#        CALLGRIND=1 runs the two hopgate pairs under valgrind's callgrind instead and counts
#        the instructions each sidecar executes per request (COUNT requests, default 20000, 16
#        connections, after a warm-up). Instruction counts repeat run to run whatever else the
#        machine does, where req/s on a shared VM can swing by a fifth: use them to tell
#        whether a change made the request path cheaper. CALLGRIND_OUT=DIR keeps the profiles
#        (for callgrind_annotate --inclusive=yes).
# Needs: nginx, wrk, h2load (installed from Debian when missing) and oha for the fixed-rate run
# (installed with `cargo install oha --locked` when missing and the run is asked for).
set -euo pipefail
cd "$(dirname "$0")/../.."

secs=${1:-10}
reps=${2:-3}
conns=${3:-16}
rate=${RATE:-2000}
runs=${RUNS:-"wrk h2load rate"}
wrap=()
if [ "${CALLGRIND:-0}" = 1 ]; then
  runs=instr
  CONFIGS=${CONFIGS:-"hopgate untraced"}
fi
gen_cpu="taskset -c 0"; srv_cpu="taskset -c 1"
if [ "${PIN:-1}" = 0 ]; then gen_cpu=""; srv_cpu=""; fi

missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
[ "$runs" = instr ] && { command -v valgrind >/dev/null 2>&1 || missing+=(valgrind); }
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
have_oha=1
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
if [[ " $runs " == *" rate "* ]] && ! command -v oha >/dev/null 2>&1; then
  cargo install oha --locked --quiet || true
fi
command -v oha >/dev/null 2>&1 || { have_oha=0; echo "note: oha could not be installed; skipping the fixed-rate run" >&2; }

cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/hopgate

work=$(mktemp -d)
pids=()
[ "$runs" = instr ] && wrap=(valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.%p")
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Ports: high and fixed; the script is for a quiet machine, not CI.
app=127.0.0.1:18280
ngx_a=127.0.0.1:18281; ngx_a_h2=127.0.0.1:18285; ngx_b=127.0.0.1:18282
hg_a=127.0.0.1:18291; hg_b=127.0.0.1:18292; admin_a=127.0.0.1:18293; admin_b=127.0.0.1:18294
ut_a=127.0.0.1:18296; ut_b=127.0.0.1:18297; admin_ut_a=127.0.0.1:18298; admin_ut_b=127.0.0.1:18299
sl_a=127.0.0.1:18286; sl_b=127.0.0.1:18287; admin_sl_a=127.0.0.1:18288; admin_sl_b=127.0.0.1:18289
bf_a=127.0.0.1:18276; bf_b=127.0.0.1:18277; admin_bf_a=127.0.0.1:18278; admin_bf_b=127.0.0.1:18279
mc_a=127.0.0.1:18271; mc_b=127.0.0.1:18272; admin_mc_a=127.0.0.1:18273; admin_mc_b=127.0.0.1:18274
host=b.bench

id_a=spiffe://bench.local/ns/bench/sa/a
id_b=spiffe://bench.local/ns/bench/sa/b
$bin dev-ca init "$work/ca" --trust-domain bench.local >/dev/null
$bin dev-ca issue "$work/ca" "$id_a" --out "$work/a" >/dev/null
$bin dev-ca issue "$work/ca" "$id_b" --out "$work/b" >/dev/null
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/1k"
chmod a+rx "$work"; chmod a+r "$work/1k"  # nginx workers run unprivileged

nginx_conf() { # name body
  cat > "$work/$1.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/$1.pid;
error_log $work/$1.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
$2
}
NGINX
}
# /post and /mcp answer a POST with a fixed body (the MCP one a JSON-RPC result), without
# reading a file.
result='{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}'
nginx_conf app "  server { listen $app; location / { root $work; try_files /1k =404; }
    location = /post { return 200 'ok'; }
    location = /mcp { default_type application/json; return 200 '$result'; } }"
# The reference pair: A originates mTLS with its client certificate (TLS 1.3, pooled keep-alive
# connections); B requires and verifies it against the bundle. nginx cannot check a SPIFFE ID,
# and an SVID has no DNS name, so A does not verify B's certificate: the reference does less
# than hopgate on that side.
nginx_conf nginx-a "  upstream b { server $ngx_b; keepalive 64; }
  server {
    listen $ngx_a;
    listen $ngx_a_h2 http2;  # nginx 1.22: a cleartext HTTP/2 listener takes prior knowledge only
    location / {
      proxy_pass https://b;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_ssl_certificate $work/a/svid.pem;
      proxy_ssl_certificate_key $work/a/svid_key.pem;
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_session_reuse on;
    }
  }"
nginx_conf nginx-b "  upstream app { server $app; keepalive 64; }
  server {
    listen $ngx_b ssl;
    ssl_certificate $work/b/svid.pem;
    ssl_certificate_key $work/b/svid_key.pem;
    ssl_client_certificate $work/ca/bundle.pem;
    ssl_verify_client on;
    ssl_protocols TLSv1.3;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header x-forwarded-client-cert \"URI=\$ssl_client_s_dn\";
    }
  }"

receiver=127.0.0.1:18295
# The hopgate pair, with everything on: Cedar on B's inbound and A's egress, tokens, audit.
mkdir -p "$work/policies"
cp examples/policies/schema.cedarschema "$work/policies/"
cat > "$work/policies/bench.cedar" <<CEDAR
@id("a-calls-b")
permit (principal == Hop::Workload::"$id_a", action == Hop::Action::"call", resource == Hop::Workload::"$id_b")
when { context.token.present && context.token has scope && context.token.scope.contains("bench.read") };
@id("no-deep-chains")
forbid (principal, action, resource) when { context.token has depth && context.token.depth > 4 };
CEDAR
# The MCP pair's own folder: a tool rule beside the plain one, so the other pairs' slices stay
# as they were.
mkdir -p "$work/policies-mcp"
cp "$work/policies/schema.cedarschema" "$work/policies/bench.cedar" "$work/policies-mcp/"
cat > "$work/policies-mcp/tools.cedar" <<CEDAR
@id("a-reads-tickets-on-b")
permit (principal == Hop::Workload::"$id_a", action == Hop::Action::"tools/call", resource == Hop::Workload::"$id_b")
when { context has mcp && context.mcp has name && context.mcp.name == "read_ticket" &&
       context.token.present && context.token has scope && context.token.scope.contains("bench.read") };
CEDAR
# A 1 KiB tools/call, and the same bytes for the plain POST.
python3 -c 'import json; print(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
  "params": {"name": "read_ticket", "arguments": {"id": "T-1", "note": "x" * 900}}}), end="")' \
  > "$work/call.json"
pair() { # name a-listen b-listen a-admin b-admin otlp
  cat > "$work/$1-a.yaml" <<YAML
identity:
  svid: { cert: a/svid.pem, key: a/svid_key.pem }
  bundles: { bench.local: ca/bundle.pem }
outbound:
  listen: $2
  routes:
    - { host: $host, address: $3, identity: $id_b, scopes: [bench.read] }
policy: { dir: policies, outbound: true }
telemetry: { log_format: json, service_name: bench-a $6 }
admin: { listen: $4 }
YAML
  cat > "$work/$1-b.yaml" <<YAML
identity:
  svid: { cert: b/svid.pem, key: b/svid_key.pem }
  bundles: { bench.local: ca/bundle.pem }
inbound:
  listen: $3
  app: $app
  require_token: true
policy: { dir: policies }
telemetry: { log_format: json, service_name: bench-b $6 }
admin: { listen: $5 }
YAML
}
pair hopgate "$hg_a" "$hg_b" "$admin_a" "$admin_b" ", otlp: { endpoint: \"http://$receiver\", protocol: http }"
pair untraced "$ut_a" "$ut_b" "$admin_ut_a" "$admin_ut_b" ""
pair before "$bf_a" "$bf_b" "$admin_bf_a" "$admin_bf_b" ", otlp: { endpoint: \"http://$receiver\", protocol: http }"
# BEFORE_STREAMS=off: the before pair's inbound side keeps no registry of open requests, so
# BEFORE_BIN=the same binary measures what the registry costs B.
if [ "${BEFORE_STREAMS:-on}" = off ]; then
  sed -i 's/^  require_token: true$/  require_token: true\n  streams: { reauthorize: false }/' "$work/before-b.yaml"
fi
pair sealed "$sl_a" "$sl_b" "$admin_sl_a" "$admin_sl_b" ", otlp: { endpoint: \"http://$receiver\", protocol: http }, audit: { sign: true }"
pair mcp "$mc_a" "$mc_b" "$admin_mc_a" "$admin_mc_b" ", otlp: { endpoint: \"http://$receiver\", protocol: http }"
for side in a b; do
  sed -i 's|dir: policies|dir: policies-mcp|' "$work/mcp-$side.yaml"
  echo "mcp: { paths: [/mcp] }" >> "$work/mcp-$side.yaml"
done

start() { # name command...
  local name=$1; shift
  $srv_cpu "$@" > "$work/$name.log" 2>&1 &
  pids+=($!)
  eval "pid_$name=$!"
}
# The collector: answers every export with an empty success, over keep-alive connections.
cat > "$work/receiver.py" <<'PY'
import http.server, sys
class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a collector does
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
host, port = sys.argv[1].split(":")
http.server.ThreadingHTTPServer((host, int(port)), Receiver).serve_forever()
PY
  # The collector is not part of the hop under test: it runs beside the load generator.
$gen_cpu python3 "$work/receiver.py" "$receiver" > "$work/receiver.log" 2>&1 &
pids+=($!)
start app nginx -c "$work/app.conf"
start nginx_a nginx -c "$work/nginx-a.conf"
start nginx_b nginx -c "$work/nginx-b.conf"
HOPGATE_LOG=warn start hopgate_a "${wrap[@]}" "$bin" run -c "$work/hopgate-a.yaml"
HOPGATE_LOG=warn start hopgate_b "${wrap[@]}" "$bin" run -c "$work/hopgate-b.yaml"
HOPGATE_LOG=warn start untraced_a "${wrap[@]}" "$bin" run -c "$work/untraced-a.yaml"
HOPGATE_LOG=warn start untraced_b "${wrap[@]}" "$bin" run -c "$work/untraced-b.yaml"
if [ -n "${BEFORE_BIN:-}" ]; then
  HOPGATE_LOG=warn start before_a "${wrap[@]}" "$BEFORE_BIN" run -c "$work/before-a.yaml"
  HOPGATE_LOG=warn start before_b "${wrap[@]}" "$BEFORE_BIN" run -c "$work/before-b.yaml"
fi
HOPGATE_LOG=warn start sealed_a "${wrap[@]}" "$bin" run -c "$work/sealed-a.yaml"
HOPGATE_LOG=warn start sealed_b "${wrap[@]}" "$bin" run -c "$work/sealed-b.yaml"
HOPGATE_LOG=warn start mcp_a "${wrap[@]}" "$bin" run -c "$work/mcp-a.yaml"
HOPGATE_LOG=warn start mcp_b "${wrap[@]}" "$bin" run -c "$work/mcp-b.yaml"
for _ in $(seq 1200); do
  curl -sf "http://$admin_a/ready" >/dev/null && curl -sf "http://$admin_b/ready" >/dev/null \
    && curl -sf "http://$admin_ut_a/ready" >/dev/null && curl -sf "http://$admin_ut_b/ready" >/dev/null \
    && curl -sf "http://$admin_sl_a/ready" >/dev/null && curl -sf "http://$admin_sl_b/ready" >/dev/null \
    && curl -sf "http://$admin_mc_a/ready" >/dev/null && curl -sf "http://$admin_mc_b/ready" >/dev/null \
    && curl -sf "http://$app/" >/dev/null && break
  sleep 0.1
done
check() { # name url [curl args]
  local name=$1 url=$2; shift 2
  # A few tries: under valgrind the first hop's handshakes can outlast a timeout.
  for _ in 1 2 3 4 5; do curl -sf "$@" "$url" -o /dev/null && return; sleep 1; done
  {
    echo "the $name path is not working:"; curl -sv "$@" "$url" 2>&1 | tail -20
    tail -n 20 "$work"/*.err "$work"/*.log || true
    exit 1
  }
}
check direct "http://$app/"
check nginx "http://$ngx_a/"
check hopgate "http://$hg_a/" -H "Host: $host"
check "nginx h2c" "http://$ngx_a_h2/" --http2-prior-knowledge
check "hopgate h2c" "http://$hg_a/" -H "Host: $host" --http2-prior-knowledge
check untraced "http://$ut_a/" -H "Host: $host"
check sealed "http://$sl_a/" -H "Host: $host"
check post "http://$hg_a/post" -H "Host: $host" --data-binary "@$work/call.json"
check mcp "http://$mc_a/mcp" -H "Host: $host" -H "content-type: application/json" \
  -H "mcp-method: tools/call" -H "mcp-name: read_ticket" --data-binary "@$work/call.json"
[ -n "${BEFORE_BIN:-}" ] && check before "http://$bf_a/" -H "Host: $host"

# The server processes of each configuration (their CPU time is charged to it).
procs_direct() { echo "$pid_app $(pgrep -P "$pid_app" | tr '\n' ' ')"; }
procs_nginx() { echo "$(procs_direct) $pid_nginx_a $(pgrep -P "$pid_nginx_a" | tr '\n' ' ') $pid_nginx_b $(pgrep -P "$pid_nginx_b" | tr '\n' ' ')"; }
procs_hopgate() { echo "$(procs_direct) $pid_hopgate_a $pid_hopgate_b"; }
procs_untraced() { echo "$(procs_direct) $pid_untraced_a $pid_untraced_b"; }
procs_shared() { procs_hopgate; }
procs_mcp() { echo "$(procs_direct) $pid_mcp_a $pid_mcp_b"; }
procs_post() { procs_hopgate; }
procs_sealed() { echo "$(procs_direct) $pid_sealed_a $pid_sealed_b"; }
procs_before() { echo "$(procs_direct) $pid_before_a $pid_before_b"; }
cpu_ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
tck=$(getconf CLK_TCK)

url_of() { case $1 in direct) echo "http://$app/";; nginx) echo "http://$ngx_a/";; hopgate|shared) echo "http://$hg_a/";; untraced) echo "http://$ut_a/";; sealed) echo "http://$sl_a/";; before) echo "http://$bf_a/";; post) echo "http://$hg_a/post";; mcp) echo "http://$mc_a/mcp";; esac; }
# The headers a configuration's load sends: the route's host to a hopgate pair, and for `shared`
# one `traceparent` on every request. $2 is how the tool names the authority (Host or :authority).
hdrs_of() {
  case $1 in
    hopgate|untraced|sealed|before) printf '%s\n' -H "$2: $host";;
    shared) printf '%s\n' -H "$2: $host" -H "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";;
    post) printf '%s\n' -H "$2: $host" -H "content-type: application/json";;
    mcp) printf '%s\n' -H "$2: $host" -H "content-type: application/json" -H "mcp-method: tools/call" \
      -H "mcp-name: read_ticket" -H "mcp-protocol-version: 2026-07-28";;
  esac
}
# The body a configuration's load POSTs (h2load's -d), if any.
body_of() { case $1 in post|mcp) printf '%s\n' -d "$work/call.json";; esac; }
# wrk POSTs through a script.
wrk_script() {
  case $1 in post|mcp)
    python3 -c 'import json, sys; print("wrk.method = \"POST\"\nwrk.body = " + json.dumps(open(sys.argv[1]).read()))' \
      "$work/call.json" > "$work/post.lua"
    printf '%s\n' -s "$work/post.lua";;
  esac
}
h2_url_of() { case $1 in nginx) echo "http://$ngx_a_h2/";; *) url_of "$1";; esac; }

# Each run prints "rps p50_us p99_us requests".
run_wrk() {
  local h=() s=(); mapfile -t h < <(hdrs_of "$1" Host); mapfile -t s < <(wrk_script "$1")
  $gen_cpu wrk -t1 -c"$conns" -d"${secs}s" --latency "${s[@]}" "${h[@]}" "$(url_of "$1")" | awk '
    function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return (v+0)*1000; if (v ~ /s$/) return (v+0)*1000000; return v }
    /^ +50%/ { p50 = us($2) } /^ +99%/ { p99 = us($2) } /^Requests\/sec/ { rps = $2 }
    /requests in/ { n = $1 }
    END { printf "%s %s %s %s\n", rps, p50, p99, n }'
}
run_h2load() {
  local h=() d=(); mapfile -t h < <(hdrs_of "$1" :authority); mapfile -t d < <(body_of "$1")
  # h2load reports request-time percentiles only per-run min/max/mean/sd; its mean is given as
  # p50 and its max as p99 here (labelled in the table).
  $gen_cpu h2load -c"$conns" -m10 -D"$secs" --warm-up-time=1 "${d[@]}" "${h[@]}" "$(h2_url_of "$1")" 2>/dev/null | awk '
    function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return (v+0)*1000; if (v ~ /s$/) return (v+0)*1000000; return v }
    /^finished in/ { rps = $4 } /^requests:/ { n = $8 } /^time for request:/ { mean = us($6); max = us($5) }
    END { printf "%s %s %s %s\n", rps, mean, max, n }'
}
run_rate() {
  local h=(); mapfile -t h < <(hdrs_of "$1" Host)
  $gen_cpu oha --no-tui -z "${secs}s" -q "$rate" -c "$conns" --latency-correction \
    "${h[@]}" --output-format json "$(url_of "$1")" 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
s, p = d["summary"], d["latencyPercentiles"]
n = sum(d["statusCodeDistribution"].values())
rps, p50, p99 = s["requestsPerSec"], p["p50"] * 1e6, p["p99"] * 1e6
print(f"{rps:.0f} {p50:.0f} {p99:.0f} {n}")'
}

# Instructions per request: the counters are zeroed after a warm-up and dumped after the run.
if [ "$runs" = instr ]; then
  count=${COUNT:-20000}
  printf "%-10s %16s %16s\n" config "Ir/req A" "Ir/req B"
  for cfg in $CONFIGS; do
    url=$(url_of "$cfg")
    pair=$cfg; [ "$cfg" = shared ] || [ "$cfg" = post ] && pair=hopgate  # the same processes, another load
    a=$(eval echo "\$pid_${pair}_a"); b=$(eval echo "\$pid_${pair}_b")
    h=(); mapfile -t h < <(hdrs_of "$cfg" :authority)
    d=(); mapfile -t d < <(body_of "$cfg")
    h2load --h1 -n 500 -c "$conns" "${d[@]}" "${h[@]}" "$url" >/dev/null
    for p in $a $b; do callgrind_control -z "$p" >/dev/null 2>&1; done
    out=$(h2load --h1 -n "$count" -c "$conns" "${d[@]}" "${h[@]}" "$url")
    grep -q " $count succeeded" <<<"$out" \
      || { echo "the $cfg pair did not answer all $count requests:" >&2; echo "$out" >&2; exit 1; }
    for p in $a $b; do callgrind_control -d "$p" >/dev/null 2>&1; done
    if [ -n "${CALLGRIND_OUT:-}" ]; then
      mkdir -p "$CALLGRIND_OUT"
      cp "$(ls -t "$work"/callgrind."$a".* | head -1)" "$CALLGRIND_OUT/$cfg-a.callgrind"
      cp "$(ls -t "$work"/callgrind."$b".* | head -1)" "$CALLGRIND_OUT/$cfg-b.callgrind"
    fi
    ir() { awk '/^(summary|totals):/ { print $2; exit }' "$(ls -t "$work"/callgrind."$1".* | head -1)"; }
    printf "%-10s %16.0f %16.0f\n" "$cfg" "$(($(ir "$a") / count))" "$(($(ir "$b") / count))"
  done
  exit 0
fi

results="$work/results"
: > "$results"
configs=${CONFIGS:-"direct nginx hopgate shared sealed untraced"}
for run in $runs; do
  [ "$run" = rate ] && [ "$have_oha" = 0 ] && continue
  for rep in $(seq "$reps"); do
    for cfg in $configs; do
      [ "$run" = h2load ] && [ "$cfg" = direct ] && continue  # the app speaks no h2c
      # shellcheck disable=SC2046
      before=$(cpu_ticks $(procs_$cfg))
      out=$(run_$run "$cfg")
      # shellcheck disable=SC2046
      after=$(cpu_ticks $(procs_$cfg))
      read -r rps p50 p99 n <<<"$out"
      cpu_us=$(awk -v d=$((after - before)) -v n="${n:-0}" -v t="$tck" 'BEGIN { if (n > 0) printf "%.1f", d / t * 1e6 / n; else print "nan" }')
      echo "$run $cfg $rep $rps $p50 $p99 $cpu_us" | tee -a "$results" >&2
    done
  done
done

rss() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
rss_nginx_a=$(rss "$(pgrep -P "$pid_nginx_a" | head -1)")
rss_nginx_b=$(rss "$(pgrep -P "$pid_nginx_b" | head -1)")
rss_hg_a=$(rss "$pid_hopgate_a"); rss_hg_b=$(rss "$pid_hopgate_b")
rss_ut_a=$(rss "$pid_untraced_a"); rss_ut_b=$(rss "$pid_untraced_b")
rss_sl_a=$(rss "$pid_sealed_a"); rss_sl_b=$(rss "$pid_sealed_b")
rss_bf_a=-; rss_bf_b=-
[ -n "${BEFORE_BIN:-}" ] && { rss_bf_a=$(rss "$pid_before_a"); rss_bf_b=$(rss "$pid_before_b"); }

echo
echo "hopgate load harness: $(date -u +%Y-%m-%d), $(nproc) cores, ${secs}s × $reps per cell, $conns connections, medians"
if [[ " $configs " == *" hopgate "* ]]; then
  echo "spans dropped by the traced pair: A $(curl -s "http://$admin_a/metrics" | awk '/^hopgate_telemetry_spans_dropped_total/ {print $2}'), B $(curl -s "http://$admin_b/metrics" | awk '/^hopgate_telemetry_spans_dropped_total/ {print $2}')"
fi
python3 - "$results" "$rss_nginx_a" "$rss_nginx_b" "$rss_hg_a" "$rss_hg_b" "$rss_ut_a" "$rss_ut_b" "$rss_sl_a" "$rss_sl_b" "$rss_bf_a" "$rss_bf_b" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    run, cfg, _, rps, p50, p99, cpu = line.split()
    rows.setdefault((run, cfg), []).append((float(rps), float(p50), float(p99), float(cpu)))
rss = {"nginx": f"{sys.argv[2]} / {sys.argv[3]}", "hopgate": f"{sys.argv[4]} / {sys.argv[5]}",
       "untraced": f"{sys.argv[6]} / {sys.argv[7]}", "direct": "-", "shared": "(as hopgate)",
       "sealed": f"{sys.argv[8]} / {sys.argv[9]}", "before": f"{sys.argv[10]} / {sys.argv[11]}",
       "post": "(as hopgate)", "mcp": "-"}
med = lambda xs, i: statistics.median(x[i] for x in xs)
label = {"wrk": "wrk h1", "h2load": "h2load h2 (mean / max)", "rate": "fixed rate"}
print(f"{'run':24} {'config':8} {'req/s':>9} {'p50 µs':>8} {'p99 µs':>8} {'CPU µs/req':>10}  peak RSS MiB (A / B)")
for run in ("wrk", "h2load", "rate"):
    for cfg in ("direct", "nginx", "before", "hopgate", "shared", "sealed", "untraced", "post", "mcp"):
        xs = rows.get((run, cfg))
        if not xs or med(xs, 0) == 0:  # the direct app speaks no h2c
            continue
        print(f"{label[run]:24} {cfg:8} {med(xs,0):9.0f} {med(xs,1):8.0f} {med(xs,2):8.0f} {med(xs,3):10.1f}  {rss[cfg]}")
    n, h = rows.get((run, "nginx")), rows.get((run, "hopgate"))
    if n and h:
        print(f"{'':24} {'ratio':8} {med(h,0)/med(n,0):9.2f}x {med(h,1)/med(n,1):7.2f}x {med(h,2)/med(n,2):7.2f}x {med(h,3)/med(n,3):9.2f}x  (hopgate / nginx)")
    b = rows.get((run, "before"))
    if h and b:
        print(f"{'':24} {'change':8} {100*(med(h,0)/med(b,0)-1):+8.1f}%  req/s against the BEFORE_BIN pair; {med(h,3)-med(b,3):+.1f} µs CPU per request")
    t = rows.get((run, "shared"))
    if h and t:
        print(f"{'':24} {'txn':8} {100*(1-med(h,0)/med(t,0)):8.1f}%  of the shared-trace pair's req/s: one transaction per request; +{med(h,3)-med(t,3):.1f} µs CPU per request")
    g = rows.get((run, "sealed"))
    if h and g:
        print(f"{'':24} {'sealing':8} {100*(1-med(g,0)/med(h,0)):8.1f}%  of the traced pair's req/s; +{med(g,3)-med(h,3):.1f} µs CPU per request")
    m, q = rows.get((run, "mcp")), rows.get((run, "post"))
    if m and q:
        print(f"{'':24} {'mcp':8} {100*(1-med(m,0)/med(q,0)):8.1f}%  of the plain POST's req/s; {med(m,3)-med(q,3):+.1f} µs CPU per request")
    u = rows.get((run, "untraced"))
    if h and u and run != "rate":
        print(f"{'':24} {'tracing':8} {100*(1-med(h,0)/med(u,0)):8.1f}%  of the untraced pair's req/s; +{med(h,3)-med(u,3):.1f} µs CPU per request")
PY
