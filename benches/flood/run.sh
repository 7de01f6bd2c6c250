#!/usr/bin/env bash
# Floods: the hopgate pair of benches/load/run.sh held at its connection and stream caps while
# legitimate probes keep calling through it, checking that the probes are served, that the caps
# hold and that memory stays bounded.
#
#   probes ──http──▶ hopgate A outbound ══mTLS, h2, pooled══▶ hopgate B inbound ──http──▶ app
#   (SPIFFE on both ends, Cedar on A's egress and B's inbound, a hop token minted by A and
#    verified by B on every request, an audit record per decision on each side; tracing off,
#    as the `untraced` pair; the app is nginx serving 1 KiB)
#
# Phases, in turn (PHASES to choose):
#   conns    CONNS h2c connections (prior knowledge) to A's outbound listener, A at its default
#            max_connections (10,000), opened with at most 256 connects in flight (flood.py):
#            each sends a GET at once and one every 10 s after its answer, and all are held until
#            HOLD + 5 s after the start. With the keep-alive probe's connection the cap is passed
#            by one: the probes' places matter. (Not h2load: with `-D`, its `--rps` sent nothing
#            here (nghttp2 1.52), and without it `-D` sends back to back instead of holding.)
#   conns1k  the same against A1k, a second A with `max_connections: 1000`: the excess waits in
#            the kernel's backlog, unaccepted, while the keep-alive probe (a place taken before
#            the flood) goes on.
#   streams  STREAM_CONNS h2c connections to A, each sending STREAMS HEADERS frames (GET,
#            END_STREAM) back to back right after the preface, without waiting for the server's
#            SETTINGS_MAX_CONCURRENT_STREAMS (100): 200s, RST_STREAM codes and GOAWAY counted per
#            connection. Then `h2load -c STREAM_CONNS -m STREAMS -D 10` (which keeps to the cap)
#            for the throughput.
#   silent   CONNS TCP connections to B's inbound listener that never start TLS, B at its default
#            max_connections (10,000): the cap full of connections without a request head (CONNS
#            less the places A's pooled connections to B hold, so the cap is filled exactly),
#            which give their places to new connections, oldest first (DOS-04), or are closed at
#            header_read (10 s). One that loses its place comes back 100 ms later during the
#            first 9 s, so the cap stays full. Counted from both ends: the client's close times,
#            and B's log.
#
# Probes, started before each flood and stopped after it (the load generators are pinned to
# core 0, the servers to core 1; PIN=0 to not pin):
#   keepalive  oha, PROBE_RATE req/s over one HTTP/1.1 keep-alive connection to A (A1k in conns1k)
#   newconn    curl, NEWCONN_RATE req/s, a new HTTP/1.1 connection per request, to A (A1k)
#   direct     (silent) curl over mTLS straight to B, a new connection per request, NEWCONN_RATE
#              req/s, with a probe SVID that B's policy permits without a hop token
# Each probe reports requests sent, 200s, failures, p50 and p99; curl waits up to 60 s, so a
# new connection held in the backlog by a cap counts as slow, not as failed. VmRSS, VmHWM and
# open fds of each sidecar are sampled before, during and after each phase.
#
# Exit 1 if any probe request failed (not a 200) in any phase, if a sidecar died or logged a
# panic, or if a sidecar's VmRSS after a phase is over RSS_LIMIT_MIB; the figures are printed
# anyway (and kept in OUT/summary.txt).
#
# The PKI, the app and the pair's configs are copied from benches/load/run.sh (which runs
# everything at its top level with fixed ports, so it cannot be sourced), trimmed: keep them
# in step. B does not set `require_token` here, so the direct probe can call it with its own
# SVID; A's calls are still permitted only with a hop token, by the policy.
#
# Usage: bash benches/flood/run.sh
#        PHASES="conns conns1k streams silent"  which phases (default all, in that order)
#        CONNS=10000   connections of the conns, conns1k and silent floods
#        HOLD=20       seconds each conns flood connection is held (after a 5 s ramp)
#        STREAMS=1000  STREAM_CONNS=10   the streams flood
#        PROBE_RATE=20 NEWCONN_RATE=5    the probes' req/s
#        RSS_LIMIT_MIB=512  OUT=DIR (default: a new folder under /tmp, kept and printed)
#        LOG_FILTER=...  the sidecars' HOPGATE_LOG (default: warnings, and the debug lines above)
#        SIDECAR_WRAP="env MALLOC_ARENA_MAX=1"  a command prefix for the sidecars (diagnostics:
#                      an allocator by LD_PRELOAD, say; it must exec, so the pid stays hopgate's)
# Needs: nginx, curl, h2load (installed from Debian when missing), oha (installed with
# `cargo install oha --locked` when missing), python3 (standard library only: flood.py). Raises
# `ulimit -n` to the hard limit; run as root on a machine where that is at least 2 × CONNS.
# Fixed ports 18380-18399 on loopback: a quiet machine, not CI. About 2.5 minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/../.."

phases=${PHASES:-"conns conns1k streams silent"}
conns=${CONNS:-10000}
hold=${HOLD:-20}
streams=${STREAMS:-1000}
stream_conns=${STREAM_CONNS:-10}
probe_rate=${PROBE_RATE:-20}
newconn_rate=${NEWCONN_RATE:-5}
rss_limit=${RSS_LIMIT_MIB:-512}
gen_cpu="taskset -c 0"; srv_cpu="taskset -c 1"
if [ "${PIN:-1}" = 0 ]; then gen_cpu=""; srv_cpu=""; fi

hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=1048576
ulimit -n "$hard"
if [ "$(ulimit -n)" -lt $((2 * conns)) ]; then
  echo "note: ulimit -n is $(ulimit -n), under 2 × CONNS ($((2 * conns))): expect accept errors" >&2
fi

missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
command -v oha >/dev/null 2>&1 || cargo install oha --locked --quiet

cargo build --release --quiet --bin hopgate
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/hopgate
flood_py=(python3 "$PWD/benches/flood/flood.py")

out=${OUT:-$(mktemp -d /tmp/flood.XXXXXX)}
mkdir -p "$out"
work=$out/work
rm -rf "$work"; mkdir -p "$work"
pids=()
declare -A pid
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

app=127.0.0.1:18380
hg_a=127.0.0.1:18391; admin_a=127.0.0.1:18393
hg_k=127.0.0.1:18396; admin_k=127.0.0.1:18398; in_k=127.0.0.1:18397
hg_b=127.0.0.1:18392; admin_b=127.0.0.1:18394
host=b.bench

id_a=spiffe://bench.local/ns/bench/sa/a
id_b=spiffe://bench.local/ns/bench/sa/b
id_p=spiffe://bench.local/ns/bench/sa/probe
$bin dev-ca init "$work/ca" --trust-domain bench.local >/dev/null
$bin dev-ca issue "$work/ca" "$id_a" --out "$work/a" >/dev/null
# B's SVID also names `localhost`, for curl's host-name check of the direct probe.
$bin dev-ca issue "$work/ca" "$id_b" --out "$work/b" --dns localhost >/dev/null
$bin dev-ca issue "$work/ca" "$id_p" --out "$work/probe" >/dev/null
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/1k"
chmod a+rx "$out" "$work"; chmod a+r "$work/1k"  # nginx workers run unprivileged

cat > "$work/app.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/app.pid;
error_log $work/app.err;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen $app; location / { root $work; try_files /1k =404; } }
}
NGINX

mkdir -p "$work/policies"
cp examples/policies/schema.cedarschema "$work/policies/"
cat > "$work/policies/bench.cedar" <<CEDAR
@id("a-calls-b")
permit (principal == Hop::Workload::"$id_a", action == Hop::Action::"call", resource == Hop::Workload::"$id_b")
when { context.token.present && context.token has scope && context.token.scope.contains("bench.read") };
@id("probe-calls-b")
permit (principal == Hop::Workload::"$id_p", action == Hop::Action::"call", resource == Hop::Workload::"$id_b");
@id("no-deep-chains")
forbid (principal, action, resource) when { context.token has depth && context.token.depth > 4 };
CEDAR
side_a() { # name listen admin [extra]
  cat > "$work/$1.yaml" <<YAML
identity:
  svid: { cert: a/svid.pem, key: a/svid_key.pem }
  bundles: { bench.local: ca/bundle.pem }
outbound:
  listen: $2
  routes:
    - { host: $host, address: $hg_b, identity: $id_b, scopes: [bench.read] }
policy: { dir: policies, outbound: true }
telemetry: { log_format: json, service_name: flood-$1 }
admin: { listen: $3 }
${4:-}
YAML
}
side_a a "$hg_a" "$admin_a"
# The outbound listener's limits are `inbound.limits`, which need an inbound section.
side_a a1k "$hg_k" "$admin_k" "inbound: { listen: $in_k, app: $app, limits: { max_connections: 1000 } }"
cat > "$work/b.yaml" <<YAML
identity:
  svid: { cert: b/svid.pem, key: b/svid_key.pem }
  bundles: { bench.local: ca/bundle.pem }
inbound:
  listen: $hg_b
  app: $app
policy: { dir: policies }
telemetry: { log_format: json, service_name: flood-b }
admin: { listen: $admin_b }
YAML

# A sidecar's stdout: audit records are counted (OUT/audit-<name>.count, at exit), the rest
# kept; the debug lines of the listener and of the two accept loops say who gave its place.
log_filter=${LOG_FILTER:-"warn,hopgate_proxy::hop=info,hopgate_proxy::connection=debug,hopgate_proxy::listener=debug,hopgate_proxy::outbound=debug,hopgate_proxy::inbound::accept=debug"}
start_sidecar() { # name
  (cd "$work" && HOPGATE_LOG=$log_filter exec $srv_cpu ${SIDECAR_WRAP:-} "$bin" run -c "$1.yaml") \
    > >(awk -v count="$out/audit-$1.count" '
          /"target":"hopgate::audit"/ { n++; next } { print; fflush() }
          END { print n + 0 > count }' > "$out/$1.log") 2>&1 &
  pids+=($!)
  pid[$1]=$!
}
(exec $srv_cpu nginx -c "$work/app.conf") > "$out/app.log" 2>&1 &
pids+=($!)
start_sidecar a; start_sidecar a1k; start_sidecar b
for _ in $(seq 300); do
  curl -sf "http://$admin_a/ready" >/dev/null && curl -sf "http://$admin_k/ready" >/dev/null \
    && curl -sf "http://$admin_b/ready" >/dev/null && curl -sf "http://$app/" >/dev/null && break
  sleep 0.1
done
for p in "${pid[@]}"; do
  [ "$(cat "/proc/$p/comm" 2>/dev/null)" = hopgate ] \
    || { echo "error: a sidecar is not running:" >&2; tail -n 20 "$out"/*.log >&2; exit 1; }
done
direct=(-s -o /dev/null --max-time 60 --cacert "$work/ca/bundle.pem" --cert "$work/probe/svid.pem"
  --key "$work/probe/svid_key.pem" --resolve "localhost:${hg_b##*:}:127.0.0.1" "https://localhost:${hg_b##*:}/")
for url in "$hg_a" "$hg_k"; do
  curl -sf -o /dev/null -H "Host: $host" "http://$url/" \
    || { echo "error: the path through $url does not work" >&2; tail -n 20 "$out"/*.log >&2; exit 1; }
done
curl -sf "${direct[@]}" || { echo "error: the direct probe to B does not work" >&2; exit 1; }

# One line per sample: phase when side VmRSS_KiB VmHWM_KiB fds cpu_ticks
: > "$out/samples.txt"
sample() { # phase when
  local name p
  for name in a a1k b; do
    p=${pid[$name]}
    [ -r "/proc/$p/status" ] || { echo "$1 $2 $name dead dead dead dead" >> "$out/samples.txt"; continue; }
    echo "$1 $2 $name $(awk '/^VmRSS/ { r = $2 } /^VmHWM/ { h = $2 } END { print r, h }' "/proc/$p/status") $(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 | wc -l) $(awk '{ print $14 + $15 }' "/proc/$p/stat")" >> "$out/samples.txt"
  done
}
# What the sidecars logged about the cap: places given by head-less connections, and silent
# connections closed at header_read (`tls handshake failed`, reason timeout; B only).
: > "$out/counts.txt"
counts() { # phase when
  local name
  for name in a a1k b; do
    echo "$1 $2 $name $(grep -c 'gave its place' "$out/$name.log" || true) $(grep -c 'connection closed at the cap' "$out/$name.log" || true) $(grep 'tls handshake failed' "$out/$name.log" | grep -c '"timeout"' || true) $(grep -ci 'panicked' "$out/$name.log" || true)" >> "$out/counts.txt"
  done
}

# A probe opening a new connection per request, every 1/NEWCONN_RATE s, until STOP exists;
# each request's line: start (epoch s), curl's exit status, HTTP status, seconds.
newconn() { # stop file curl-args...
  local stop=$1 file=$2; shift 2
  : > "$file"
  while [ ! -e "$stop" ]; do
    (
      t0=$(date +%s.%N)
      res=$(curl -w '%{http_code} %{time_total}' "$@" 2>/dev/null) && rc=0 || rc=$?
      echo "$t0 $rc ${res:-000 0}" >> "$file"
    ) &
    sleep "$(awk -v r="$newconn_rate" 'BEGIN { print 1 / r }')"
  done
  wait
}
flood() { # phase
  case $1 in
    conns) $gen_cpu "${flood_py[@]}" hold --target "$hg_a" --conns "$conns" --hold $((hold + 5)) --every 10;;
    conns1k) $gen_cpu "${flood_py[@]}" hold --target "$hg_k" --conns "$conns" --hold $((hold + 5)) --every 10;;
    streams)
      $gen_cpu "${flood_py[@]}" streams --target "$hg_a" --conns "$stream_conns" --streams "$streams" --timeout 30
      $gen_cpu h2load -c "$stream_conns" -m "$streams" -D 10 -H ":authority: $host" "http://$hg_a/" \
        > "$out/streams.h2load.txt" 2>&1;;
    silent)
      # The cap is filled exactly: the places A's pooled connections to B hold are left out, or
      # the flood would keep evicting itself.
      local held
      held=$(ss -Htnp state established "( dport = :${hg_b##*:} )" | grep -c '"hopgate"' || true)
      echo "$held" > "$out/silent.held"
      $gen_cpu "${flood_py[@]}" silent --target "$hg_b" --conns $((conns - held)) --wait 20 --header-read 10;;
  esac
}
pin_gen() { [ -z "$gen_cpu" ] || taskset -apc 0 "$1" >/dev/null; }
# run_phase PHASE OUTBOUND-ADDR PROBE-SECS MID-SAMPLE-AFTER
run_phase() {
  local phase=$1 addr=$2 secs=$3 mid=$4 oha_pid nc_pid dp_pid="" flood_pid
  echo "== $phase" >&2
  sample "$phase" before; counts "$phase" before
  rm -f "$out/$phase.stop"
  $gen_cpu oha --no-tui -z "${secs}s" -q "$probe_rate" -c 1 --http-version 1.1 -w \
    -t 60s -H "Host: $host" --output-format json "http://$addr/" \
    > "$out/$phase.keepalive.json" 2> "$out/$phase.keepalive.err" &
  oha_pid=$!
  newconn "$out/$phase.stop" "$out/$phase.newconn" -s -o /dev/null --max-time 60 -H "Host: $host" "http://$addr/" &
  nc_pid=$!; pin_gen "$nc_pid"
  if [ "$phase" = silent ]; then
    newconn "$out/$phase.stop" "$out/$phase.direct" "${direct[@]}" &
    dp_pid=$!; pin_gen "$dp_pid"
  fi
  sleep 2  # the keep-alive probe's connection is open before the flood
  flood "$phase" > "$out/$phase.flood.json" 2> "$out/$phase.flood.err" &
  flood_pid=$!
  sleep "$mid"; sample "$phase" during
  wait "$flood_pid" || echo "note: the $phase flood exited $?" >&2
  sleep 5
  touch "$out/$phase.stop"
  wait "$nc_pid"
  if [ -n "$dp_pid" ]; then wait "$dp_pid"; fi
  wait "$oha_pid" || echo "note: oha exited $?" >&2
  sleep 1
  sample "$phase" after; counts "$phase" after
}
metric_timeouts() { curl -s "http://$admin_b/metrics" | awk '/^hopgate_tls_handshake_failures_total\{reason="timeout"\}/ { print $2 }'; }

for phase in $phases; do
  case $phase in
    conns) run_phase conns "$hg_a" $((hold + 12)) $((hold / 2 + 3));;
    conns1k) run_phase conns1k "$hg_k" $((hold + 12)) $((hold / 2 + 3));;
    streams) run_phase streams "$hg_a" 30 14;;
    silent)
      before=$(metric_timeouts)
      run_phase silent "$hg_a" 30 6
      echo "$(metric_timeouts) ${before:-0}" > "$out/silent.metric";;
    *) echo "error: unknown phase \`$phase\` (conns, conns1k, streams, silent)" >&2; exit 78;;
  esac
done

echo
set +e
python3 - "$out" "$phases" "$rss_limit" "$conns" <<'PY' | tee "$out/summary.txt"
import json, os, sys
out, phases, limit, conns = sys.argv[1], sys.argv[2].split(), float(sys.argv[3]), int(sys.argv[4])
bad = []
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")
def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
print(f"hopgate flood: {os.popen('date -u +%Y-%m-%d').read().strip()}, {os.cpu_count()} cores, {conns} connections")
print(f"{'phase':8} {'probe':10} {'sent':>6} {'200':>6} {'failed':>6} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
for ph in phases:
    oha = load(f"{out}/{ph}.keepalive.json")
    if oha is None:
        print(f"{ph:8} keepalive  no result"); bad.append(f"{ph}: keepalive probe gave no result")
    else:
        codes = {k: v for k, v in oha.get("statusCodeDistribution", {}).items()}
        errs = oha.get("errorDistribution", {})
        ok = codes.get("200", 0)
        sent = sum(codes.values()) + sum(errs.values())
        lp = oha.get("latencyPercentiles", {})
        mx = oha.get("summary", {}).get("slowest")
        f = lambda v: f"{v * 1000:9.1f}" if isinstance(v, (int, float)) else f"{'-':>9}"
        print(f"{ph:8} {'keepalive':10} {sent:6} {ok:6} {sent - ok:6} {f(lp.get('p50'))} {f(lp.get('p99'))} {f(mx)}")
        if sent - ok:
            bad.append(f"{ph}: keepalive probe {sent - ok} failed {dict(codes)} {errs}")
    for probe in ("newconn", "direct"):
        path = f"{out}/{ph}.{probe}"
        if not os.path.exists(path):
            continue
        rows = [l.split() for l in open(path) if l.strip()]
        ok = [r for r in rows if r[1] == "0" and r[2] == "200"]
        lat = [float(r[3]) * 1000 for r in ok]
        print(f"{ph:8} {probe:10} {len(rows):6} {len(ok):6} {len(rows) - len(ok):6} {pct(lat, 50):9.1f} {pct(lat, 99):9.1f} {max(lat, default=float('nan')):9.1f}")
        if len(rows) != len(ok):
            fails = sorted({(r[1], r[2]) for r in rows if r not in ok})
            bad.append(f"{ph}: {probe} probe {len(rows) - len(ok)} failed (curl exit, status: {fails})")
        if ph == "silent" and probe == "direct":
            fl = load(f"{out}/silent.flood.json") or {}
            lo, hi = fl.get("full_from_epoch", 0), fl.get("full_until_epoch", 0)
            inside = [r for r in rows if lo <= float(r[0]) <= hi]
            print(f"{'':8} {'':10} {len(inside)} of them sent while every silent connection was established and none had reached header_read ({hi - lo:.1f} s), {sum(1 for r in inside if r in ok)} answered 200")
print()
print(f"{'phase':8} {'side':4} {'VmRSS MiB before/during/after':>31} {'VmHWM MiB':>10} {'fds before/during/after':>25} {'CPU s':>6}")
samples = {}
for line in open(f"{out}/samples.txt"):
    ph, when, side, *vals = line.split()
    samples[(ph, when, side)] = vals
tck = os.sysconf("SC_CLK_TCK")
for ph in phases:
    for side in ("a1k",) if ph == "conns1k" else ("a", "b"):
        s = [samples.get((ph, w, side), ["dead"] * 4) for w in ("before", "during", "after")]
        if any(x[0] == "dead" for x in s):
            print(f"{ph:8} {side:4} dead"); bad.append(f"{ph}: sidecar {side} died"); continue
        mib = lambda k: f"{int(k) / 1024:.1f}"
        cpu = (int(s[2][3]) - int(s[0][3])) / tck
        print(f"{ph:8} {side:4} {' / '.join(mib(x[0]) for x in s):>31} {mib(s[2][1]):>10} {' / '.join(x[2] for x in s):>25} {cpu:6.1f}")
        if int(s[2][0]) / 1024 > limit:
            bad.append(f"{ph}: {side} VmRSS after {int(s[2][0]) / 1024:.1f} MiB > {limit} MiB")
counts = {}
for line in open(f"{out}/counts.txt"):
    ph, when, side, gave, closed, timeouts, panics = line.split()
    counts[(ph, when, side)] = tuple(map(int, (gave, closed, timeouts, panics)))
print()
for ph in phases:
    fl = load(f"{out}/{ph}.flood.json")
    d = {}
    for side in ("a", "a1k", "b"):
        b, a = counts.get((ph, "before", side)), counts.get((ph, "after", side))
        if a and b:
            d[side] = tuple(x - y for x, y in zip(a, b))
            if a[3]:
                bad.append(f"{ph}: {side} logged {a[3]} panic line(s)")
    caps = ", ".join(f"{s} {v[0]} given / {v[1]} closed at the cap" for s, v in d.items() if v[0] or v[1])
    if ph in ("conns", "conns1k") and fl:
        keys = ["connected", "served", "requests", "status_200", "unanswered_at_deadline",
                "closed_by_server_served", "closed_by_server_unserved", "connect_timeout",
                "connect_error", "peak_open", "all_served_by_s", "connect_ms_p50", "connect_ms_p99",
                "latency_ms_p50", "latency_ms_p99", "latency_ms_max"]
        print(f"{ph} flood: " + ", ".join(f"{k} {fl.get(k, 0)}" for k in keys) + (f"; {caps}" if caps else ""))
        print(f"  others: " + ", ".join(f"{k} {v}" for k, v in fl.items() if k not in keys and k not in ("conns", "secs")))
    elif ph == "streams" and fl:
        tot = {}
        for row in fl["per_conn"]:
            for k, v in row.items():
                if isinstance(v, int) and k != "conn":
                    tot[k] = tot.get(k, 0) + v
            for k, v in row["rst"].items():
                tot[f"rst_{k}"] = tot.get(f"rst_{k}", 0) + v
        print(f"streams flood ({fl['conns']} × {fl['streams']}): totals {tot}")
        for row in fl["per_conn"]:
            print(f"  conn {row['conn']}: {row.get('status_200', 0)} × 200, rst {row['rst']}, goaway {row['goaway']}, unresolved {row['unresolved']}, {row['secs']} s; " + ", ".join(f"{k} {v}" for k, v in row.items() if k.startswith(("status_", "error_")) and k != "status_200"))
        try:
            h2 = open(f"{out}/streams.h2load.txt").read().splitlines()
            print("  h2load: " + " | ".join(l.strip() for l in h2 if l.startswith(("finished in", "requests:", "status codes:", "time for request:"))))
        except OSError:
            pass
    elif ph == "silent" and fl:
        try:
            now, before = open(f"{out}/silent.metric").read().split()
            metric = float(now) - float(before)
        except (OSError, ValueError):
            metric = float("nan")
        try:
            held = open(f"{out}/silent.held").read().strip()
        except OSError:
            held = "?"
        print(f"silent flood: {fl['conns']} silent + {held} places held by A's pooled connections; connections made {fl.get('connected', 0)} (of them {fl.get('reopened', 0)} reopened after losing their place), the first {fl['conns']} established after {fl.get('all_established_s')} s; closed by B before header_read {fl.get('closed_early', 0)} (open {fl.get('early_open_s_max')} s at most), at header_read {fl.get('closed_at_header_read', 0)}, later {fl.get('closed_late', 0)}, still open at the end {fl.get('still_open', 0)}, connect failures {fl.get('connect_error', 0) + fl.get('connect_timeout', 0)}")
        if "b" in d:
            print(f"  B's log: {d['b'][0]} places given by head-less connections, {d['b'][1]} connections closed at the cap, {d['b'][2]} handshakes timed out (metric: {metric:.0f})")
print()
if bad:
    print("FAILED:"); [print("  " + b) for b in bad]
    sys.exit(1)
print("ok: every probe request answered 200, no sidecar died or panicked, VmRSS after each phase under the limit")
PY
rc=${PIPESTATUS[0]}
echo "results, logs and samples in $out" >&2
exit "$rc"
