#!/usr/bin/env bash
# Soak: the traced hopgate pair of benches/load/run.sh under a steady load for a long time,
# while its policies are reloaded and its SVIDs rotated, checking that nothing fails and that
# memory and file descriptors stay flat.
#
#   oha ──http/1.1──▶ hopgate A outbound ══mTLS, h2, pooled══▶ hopgate B inbound ──http──▶ app
#   (the `hopgate` configuration of benches/load/run.sh: SPIFFE on both ends, Cedar on B's
#    inbound and A's egress, a hop token minted by A and required by B, an audit record per
#    decision on each side, a span per request on each side at 100% sampling exported over
#    OTLP/HTTP to a local receiver that accepts every batch; the app is nginx serving 1 KiB)
#
# While oha sends RATE req/s for DURATION (HTTP/1.1, CONNS connections, every response kept):
#   every RELOAD_EVERY  policies/bench.cedar (the folder both sidecars' policy.dir names) is
#                       rewritten as an operator would, a temp file renamed over it, with an
#                       equivalent content: a new comment, and every other time a duplicate of
#                       the `a-calls-b` permit under another id. Confirmed when `/policy` on both
#                       admin ports shows the new digest with `last_reload.result` ok.
#   every ROTATE_EVERY  a fresh SVID (new key, same SPIFFE ID, same dev CA) for A and for B,
#                       renamed over the watched svid_key.pem then svid.pem, back to back (the
#                       identity watch waits 250 ms for the files to go quiet). Confirmed when
#                       `/identity` shows the new notAfter with `last_update.result` ok, and
#                       B's inbound listener serves the new certificate's serial.
#   every SAMPLE_EVERY  VmRSS and open fds of each sidecar, to OUT/samples.csv.
# At the end: a summary (also OUT/summary.txt). It fails (exit 1) on any non-200 response or
# oha error, fewer than 90% of RATE × DURATION requests sent, a reload or rotation not
# confirmed, a reload error counted by either sidecar, a sidecar that died, last RSS more than
# 20% above the RSS at BASELINE, or last fds more than 10 above the fds at BASELINE. BASELINE
# is past warm-up: B's relay set fills after token.relay_cache / RATE seconds (65,536 / 500 =
# 131 s) and takes its final size then; growth after that is what a leak looks like.
#
# Not a CI test: it runs for half an hour. The PKI, the nginx app, the policies, the pair's
# configs and the OTLP receiver are copied from benches/load/run.sh (which runs everything at
# its top level with fixed ports, so it cannot be sourced): keep the two in step.
#
# Usage: bash benches/soak/run.sh
#        DURATION=30m  how long the load runs (s, m or h; default 30m)
#        RATE=500      requests per second        CONNS=4        oha's connections
#        RELOAD_EVERY=30s  ROTATE_EVERY=2m  SAMPLE_EVERY=10s  BASELINE=5m (the flatness reference)
#        OUT=DIR       where samples.csv, oha.json, summary.txt and the logs go (default: a new
#                      folder under /tmp, kept and printed)
#        HOPGATE_LOG   the sidecars' log filter (default info: the reload lines are kept; the
#                      audit records are counted, not kept)
# Needs: nginx, curl, jq, openssl (installed from Debian when missing) and oha (installed with
# `cargo install oha --locked` when missing). Ports are picked free on loopback.
set -euo pipefail
cd "$(dirname "$0")/../.."

secs_of() { # 90 | 90s | 30m | 1h -> seconds
  [[ $1 =~ ^([0-9]+)(s|m|h)?$ ]] || { echo "error: bad duration \`$1\` (e.g. 30s, 2m, 1h)" >&2; exit 78; }
  local n=${BASH_REMATCH[1]}
  case ${BASH_REMATCH[2]} in m) n=$((n * 60));; h) n=$((n * 3600));; esac
  [ "$n" -gt 0 ] || { echo "error: \`$1\` must be more than 0" >&2; exit 78; }
  echo "$n"
}
duration=$(secs_of "${DURATION:-30m}")
reload_every=$(secs_of "${RELOAD_EVERY:-30s}")
rotate_every=$(secs_of "${ROTATE_EVERY:-2m}")
sample_every=$(secs_of "${SAMPLE_EVERY:-10s}")
baseline=$(secs_of "${BASELINE:-5m}")
rate=${RATE:-500}
conns=${CONNS:-4}

missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
command -v oha >/dev/null 2>&1 || cargo install oha --locked --quiet

cargo build --release --quiet --bin hopgate
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/hopgate

out=${OUT:-$(mktemp -d /tmp/hopgate-soak.XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Free loopback ports, all bound at once so that none is handed out twice.
mapfile -t ports < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks: s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))')
app=127.0.0.1:${ports[0]}
hg_a=127.0.0.1:${ports[1]}; hg_b=127.0.0.1:${ports[2]}
admin_a=127.0.0.1:${ports[3]}; admin_b=127.0.0.1:${ports[4]}
receiver=127.0.0.1:${ports[5]}
host=b.bench

# --- From benches/load/run.sh: the PKI, the app, the policies, the `hopgate` pair, the receiver.
id_a=spiffe://bench.local/ns/bench/sa/a
id_b=spiffe://bench.local/ns/bench/sa/b
$bin dev-ca init "$work/ca" --trust-domain bench.local >/dev/null
$bin dev-ca issue "$work/ca" "$id_a" --out "$work/a" >/dev/null
$bin dev-ca issue "$work/ca" "$id_b" --out "$work/b" >/dev/null
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/1k"
chmod a+rx "$work"; chmod a+r "$work/1k"  # nginx workers run unprivileged
cat > "$work/app.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/app.pid;
error_log $work/app.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen $app; location / { root $work; try_files /1k =404; } }
}
NGINX

mkdir -p "$work/policies"
cp examples/policies/schema.cedarschema "$work/policies/"
policy() { # reload-number: bench.cedar, with a comment naming the reload and, on odd ones, a
           # duplicate permit (the same decisions, one more policy id)
  cat <<CEDAR
@id("a-calls-b")
permit (principal == Hop::Workload::"$id_a", action == Hop::Action::"call", resource == Hop::Workload::"$id_b")
when { context.token.present && context.token has scope && context.token.scope.contains("bench.read") };
@id("no-deep-chains")
forbid (principal, action, resource) when { context.token has depth && context.token.depth > 4 };
CEDAR
  [ "$1" -gt 0 ] && echo "// soak: reload $1"
  if [ $(($1 % 2)) = 1 ]; then
    cat <<CEDAR
@id("a-calls-b-again")
permit (principal == Hop::Workload::"$id_a", action == Hop::Action::"call", resource == Hop::Workload::"$id_b")
when { context.token.present && context.token has scope && context.token.scope.contains("bench.read") };
CEDAR
  fi
}
policy 0 > "$work/policies/bench.cedar"

otlp=", otlp: { endpoint: \"http://$receiver\", protocol: http }"
cat > "$work/hopgate-a.yaml" <<YAML
identity:
  svid: { cert: a/svid.pem, key: a/svid_key.pem }
  bundles: { bench.local: ca/bundle.pem }
outbound:
  listen: $hg_a
  routes:
    - { host: $host, address: $hg_b, identity: $id_b, scopes: [bench.read] }
policy: { dir: policies, outbound: true }
telemetry: { log_format: json, service_name: bench-a $otlp }
admin: { listen: $admin_a }
YAML
cat > "$work/hopgate-b.yaml" <<YAML
identity:
  svid: { cert: b/svid.pem, key: b/svid_key.pem }
  bundles: { bench.local: ca/bundle.pem }
inbound:
  listen: $hg_b
  app: $app
  require_token: true
policy: { dir: policies }
telemetry: { log_format: json, service_name: bench-b $otlp }
admin: { listen: $admin_b }
YAML

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
# --- End of what comes from benches/load/run.sh.

python3 "$work/receiver.py" "$receiver" > "$out/receiver.log" 2>&1 &
pids+=($!)
nginx -c "$work/app.conf" > "$out/app.log" 2>&1 &
pids+=($!)
# A sidecar's stdout: the audit records are counted (OUT/audit-<side>.count, at exit), the log
# lines kept (OUT/hopgate-<side>.log). $! is the sidecar itself, not the filter.
declare -A pid
for side in a b; do
  HOPGATE_LOG=${HOPGATE_LOG:-info} "$bin" run -c "$work/hopgate-$side.yaml" \
    > >(awk -v count="$out/audit-$side.count" '
          /"target":"hopgate::audit"/ { n++; next } { print; fflush() }
          END { print n + 0 > count }' > "$out/hopgate-$side.log") 2>&1 &
  pids+=($!)
  pid[$side]=$!
done
[ "$(cat "/proc/${pid[a]}/comm")$(cat "/proc/${pid[b]}/comm")" = hopgatehopgate ] \
  || { echo "error: the sidecars' pids are not hopgate's" >&2; exit 1; }
for _ in $(seq 300); do
  curl -sf "http://$admin_a/ready" >/dev/null && curl -sf "http://$admin_b/ready" >/dev/null \
    && curl -sf "http://$app/" >/dev/null && break
  sleep 0.1
done
curl -sf -H "Host: $host" "http://$hg_a/" -o /dev/null || {
  echo "the hopgate path is not working:"; curl -sv -H "Host: $host" "http://$hg_a/" 2>&1 | tail -20
  tail -n 20 "$out"/*.log "$work/app.err" || true
  exit 1
} >&2

admin_of() { case $1 in a) echo "$admin_a";; b) echo "$admin_b";; esac; }
id_of() { case $1 in a) echo "$id_a";; b) echo "$id_b";; esac; }
get() { curl -sf --max-time 5 "http://$(admin_of "$1")$2"; } # side path
ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); } # now, in milliseconds
elapsed() { echo $(($(ms) - t0)); }                          # since the load started, ms
log() { local e; e=$(elapsed); printf '%s [%4d.%ds] %s\n' "$(date -u +%H:%M:%S)" $((e / 1000)) $((e % 1000 / 100)) "$*" >&2; }
# Polls until `cond` (a function of the side) holds for both sides, for up to 15 s: past the
# event (~100 ms for policies, ~250 ms for identity) and past the 10 s safety net.
wait_both() { # cond
  local deadline=$(( $(date +%s) + 15 )) side ok
  while :; do
    ok=1
    for side in a b; do "$1" "$side" || { ok=0; break; }; done
    [ "$ok" = 1 ] && return 0
    [ "$(date +%s)" -ge "$deadline" ] && return 1
    sleep 0.1
  done
}

# --- Policy reloads.
reloads=0; reloads_ok=0; failures=()
declare -A digest_was
policy_changed() { # side: a new digest, and the reload that brought it went well
  local p; p=$(get "$1" /policy) || return 1
  jq -e --arg was "${digest_was[$1]}" \
    '.digest != $was and .last_reload.result == "ok" and .last_reload.error == null' <<<"$p" >/dev/null
}
reload() {
  local side n=$((reloads + 1))
  for side in a b; do digest_was[$side]=$(get "$side" /policy | jq -r .digest) || digest_was[$side]=none; done
  mkdir -p "$work/staging"
  policy "$n" > "$work/staging/bench.cedar"
  mv "$work/staging/bench.cedar" "$work/policies/bench.cedar"
  reloads=$n
  if wait_both policy_changed; then
    local da db; da=$(get a /policy | jq -r .digest) || true; db=$(get b /policy | jq -r .digest) || true
    if [ "$da" = "$db" ]; then
      reloads_ok=$((reloads_ok + 1)); log "reload $n confirmed (digest ${da:0:12})"
    else
      failures+=("reload $n: A and B report different digests ($da, $db)"); log "reload $n: digests differ"
    fi
  else
    failures+=("reload $n not confirmed within 15 s")
    log "reload $n NOT confirmed: A $(get a /policy) B $(get b /policy)"
  fi
}

# --- SVID rotations.
rotations=0; rotations_ok=0
declare -A not_after_was serial_new
served_serial() { # B's inbound listener: the serial of the certificate it presents now
  openssl s_client -connect "$hg_b" -cert "$work/a/svid.pem" -key "$work/a/svid_key.pem" \
    -CAfile "$work/ca/bundle.pem" </dev/null 2>/dev/null | openssl x509 -noout -serial | cut -d= -f2
}
identity_changed() { # side: a new notAfter, and the update that brought it went well
  local i; i=$(get "$1" /identity) || return 1
  jq -e --argjson was "${not_after_was[$1]}" --arg id "$(id_of "$1")" \
    '.not_after_unix != $was and .spiffe_id == $id and .last_update.result == "ok" and .last_update.error == null' \
    <<<"$i" >/dev/null || return 1
  # B serves what it loaded: the next handshake presents the new certificate.
  [ "$1" = a ] || [ "$(served_serial)" = "${serial_new[b]}" ]
}
rotate() {
  local side n=$((rotations + 1))
  for side in a b; do
    not_after_was[$side]=$(get "$side" /identity | jq .not_after_unix) || not_after_was[$side]=0
    rm -rf "$work/stage-$side"
    $bin dev-ca issue "$work/ca" "$(id_of "$side")" --out "$work/stage-$side" >/dev/null
    serial_new[$side]=$(openssl x509 -in "$work/stage-$side/svid.pem" -noout -serial | cut -d= -f2)
  done
  # A second passes, so the new notAfter (whole seconds) differs from one issued just before.
  sleep 1
  for side in a b; do
    mv "$work/stage-$side/svid_key.pem" "$work/$side/svid_key.pem"
    mv "$work/stage-$side/svid.pem" "$work/$side/svid.pem"
  done
  rotations=$n
  if wait_both identity_changed; then
    rotations_ok=$((rotations_ok + 1)); log "rotation $n confirmed (B serves serial ${serial_new[b]})"
  else
    failures+=("rotation $n not confirmed within 15 s")
    log "rotation $n NOT confirmed: A $(get a /identity) B $(get b /identity) B serves $(served_serial)"
  fi
}

# --- Samples.
echo "elapsed_s,a_rss_kb,a_fds,b_rss_kb,b_fds" > "$out/samples.csv"
sample() {
  local row side p rss fds
  row=$(($(elapsed) / 1000))
  for side in a b; do
    p=${pid[$side]}
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null) \
      || { failures+=("sidecar $side (pid $p) is gone"); return 1; }
    fds=$(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    row+=",$rss,$fds"
  done
  echo "$row" >> "$out/samples.csv"
}

echo "soak: ${duration}s at $rate req/s over $conns connections; reload every ${reload_every}s," \
  "rotate every ${rotate_every}s, sample every ${sample_every}s; output in $out" >&2
oha --no-tui -z "${duration}s" -q "$rate" -c "$conns" --http-version 1.1 -w \
  -H "Host: $host" --output-format json "http://$hg_a/" > "$out/oha.json" 2> "$out/oha.err" &
oha_pid=$!
pids+=("$oha_pid")
t0=$(ms)
# Deadlines in ms since t0, each advanced by its period (events never drift with the work
# they do). No reload or rotation in the last 5 s: the load would end before it is confirmed.
next_sample=0; next_reload=$((reload_every * 1000)); next_rotate=$((rotate_every * 1000))
last_event=$(((duration - 5) * 1000)); alive=1
while kill -0 "$oha_pid" 2>/dev/null; do
  el=$(elapsed)
  if [ "$alive" = 1 ] && [ "$el" -ge "$next_sample" ]; then
    sample || { alive=0; log "a sidecar died"; }
    next_sample=$((next_sample + sample_every * 1000))
  fi
  if [ "$alive" = 1 ] && [ "$el" -ge "$next_rotate" ] && [ "$el" -lt "$last_event" ]; then
    rotate; next_rotate=$((next_rotate + rotate_every * 1000))
  fi
  if [ "$alive" = 1 ] && [ "$el" -ge "$next_reload" ] && [ "$el" -lt "$last_event" ]; then
    reload; next_reload=$((next_reload + reload_every * 1000))
  fi
  sleep 0.2
done
oha_rc=0; wait "$oha_pid" || oha_rc=$?
[ "$oha_rc" = 0 ] || failures+=("oha exited $oha_rc: $(head -c 500 "$out/oha.err")")

# What the sidecars counted: responses by code and reload errors.
for side in a b; do
  get "$side" /metrics > "$out/metrics-$side.txt" || failures+=("sidecar $side: no /metrics at the end")
done
metric() { # side name filter: the sum of a metric's series whose labels match filter
  awk -v name="$1" -v f="$3" '$1 ~ "^" name "([{]|$)" && $1 ~ f { s += $2 } END { print s + 0 }' "$out/metrics-$2.txt" 2>/dev/null
}
a_200=$(metric hopgate_requests_total a 'code="200"'); a_all=$(metric hopgate_requests_total a '')
b_200=$(metric hopgate_requests_total b 'code="200"'); b_all=$(metric hopgate_requests_total b '')
id_err=$(( $(metric hopgate_identity_reloads_total a 'result="error"') + $(metric hopgate_identity_reloads_total b 'result="error"') ))
pol_err=$(( $(metric hopgate_policy_reloads_total a 'result="error"') + $(metric hopgate_policy_reloads_total b 'result="error"') ))
dropped="A $(metric hopgate_telemetry_spans_dropped_total a ''), B $(metric hopgate_telemetry_spans_dropped_total b '')"
[ "$id_err" = 0 ] || failures+=("$id_err identity reload error(s) counted by the sidecars")
[ "$pol_err" = 0 ] || failures+=("$pol_err policy reload error(s) counted by the sidecars")
kill -0 "${pid[a]}" 2>/dev/null || failures+=("sidecar a is gone at the end")
kill -0 "${pid[b]}" 2>/dev/null || failures+=("sidecar b is gone at the end")

printf '%s\n' "${failures[@]}" > "$work/failures"
python3 - "$out/oha.json" "$out/samples.csv" "$work/failures" "$rate" "$duration" "$baseline" \
  "$reloads" "$reloads_ok" "$rotations" "$rotations_ok" "$a_200" "$a_all" "$b_200" "$b_all" \
  "$dropped" "$conns" <<'PY' | tee "$out/summary.txt"
import csv, json, sys
(oha_json, samples_csv, failures_file, rate, duration, baseline, reloads, reloads_ok,
 rotations, rotations_ok, a_200, a_all, b_200, b_all, dropped, conns) = sys.argv[1:]
rate, duration, baseline = int(rate), int(duration), int(baseline)
failures = [l for l in open(failures_file).read().splitlines() if l]
try:
    d = json.load(open(oha_json))
except (OSError, ValueError) as e:
    d = {}
    failures.append(f"no oha report: {e}")
codes = {int(k): v for k, v in d.get("statusCodeDistribution", {}).items()}
errors = d.get("errorDistribution", {})
responses = sum(codes.values())
n_err = sum(errors.values())
non_200 = responses - codes.get(200, 0)
requests = responses + n_err
print(f"hopgate soak: {duration}s at {rate} req/s, {conns} connections (HTTP/1.1)")
s = d.get("summary", {})
lat = d.get("latencyPercentiles", {})
if s:
    print(f"requests      {requests} ({s.get('requestsPerSec', 0):.1f} req/s), "
          f"p50 {lat.get('p50', 0) * 1e3:.2f} ms, p99 {lat.get('p99', 0) * 1e3:.2f} ms, "
          f"max {s.get('slowest', 0) * 1e3:.1f} ms")
print(f"non-200       {non_200}" + (f"  {dict(sorted(codes.items()))}" if non_200 else ""))
print(f"errors        {n_err}" + (f"  {errors}" if n_err else ""))
print(f"sidecars      A outbound {a_200}/{a_all} answered 200, B inbound {b_200}/{b_all}; spans dropped {dropped}")
if non_200 or n_err:
    failures.append(f"{non_200} non-200 response(s) and {n_err} error(s)")
if requests < 0.9 * rate * duration:
    failures.append(f"only {requests} requests sent, under 90% of {rate * duration}")
print(f"reloads       {reloads} done, {reloads_ok} confirmed")
print(f"rotations     {rotations} done, {rotations_ok} confirmed")
rows = [[int(x) for x in r] for r in list(csv.reader(open(samples_csv)))[1:]]
if len(rows) < 2:
    failures.append("fewer than two samples")
else:
    base = next((r for r in rows if r[0] >= baseline), rows[-1])
    print(f"samples       {len(rows)}, t={rows[0][0]}s to t={rows[-1][0]}s; baseline at t={base[0]}s")
    print(f"{'':14}{'first':>9}{'min':>9}{'max':>9}{'last':>9}{'base':>9}")
    for side, (ri, fi) in (("A", (1, 2)), ("B", (3, 4))):
        rss = [r[ri] for r in rows]; fds = [r[fi] for r in rows]
        mib = lambda kb: f"{kb / 1024:9.1f}"
        print(f"RSS {side} MiB    " + "".join(mib(x) for x in (rss[0], min(rss), max(rss), rss[-1], base[ri])))
        print(f"fds {side}        " + "".join(f"{x:9d}" for x in (fds[0], min(fds), max(fds), fds[-1], base[fi])))
        if rss[-1] > 1.2 * base[ri]:
            failures.append(f"RSS {side} grew {100 * (rss[-1] / base[ri] - 1):.0f}% since t={base[0]}s (limit 20%)")
        if fds[-1] > base[fi] + 10:
            failures.append(f"fds {side} grew by {fds[-1] - base[fi]} since t={base[0]}s (limit 10)")
    print(f"flatness      RSS last ≤ base +20%, fds last ≤ base +10: "
          + ("ok" if not any(f.startswith(("RSS", "fds")) for f in failures) else "NOT flat"))
for f in failures:
    print(f"FAIL          {f}")
print("verdict       " + ("PASS" if not failures else f"FAIL ({len(failures)} problem(s))"))
sys.exit(1 if failures else 0)
PY
