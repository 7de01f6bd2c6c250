#!/usr/bin/env bash
# The MCP harness checked on its own, no proxy: crm_server.py and client.py on the MCP Python
# SDK, in every revision mode and response mode, then a refusal (deny_proxy.py answering a
# tools/call with 403 and a JSON-RPC error) as client.py reports it. Exits non-zero on any
# failure; the last line is `selfcheck: N passed, N failed`.
#
#   tests/mcp/selfcheck.sh      python: $HOPGATE_TEST_PYTHON, else `./test.sh mcp-venv` makes it
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

if [ -z "${HOPGATE_TEST_PYTHON:-}" ]; then
  HOPGATE_TEST_PYTHON=$("$root/test.sh" mcp-venv | sed -n 's/^mcp-venv: HOPGATE_TEST_PYTHON=//p')
fi
py=$HOPGATE_TEST_PYTHON
[ -x "$py" ] || { echo "selfcheck: no python at \`$py\`" >&2; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }

# start NAME SCRIPT ARGS...: runs SCRIPT, waits for `listening <port>`, sets port[NAME].
declare -A port=()
start() {
  local name=$1 script=$2
  shift 2
  "$py" "$here/$script" "$@" > "$tmp/$name.out" 2> "$tmp/$name.err" &
  pids+=("$!")
  for _ in $(seq 100); do
    if grep -q '^listening ' "$tmp/$name.out" 2>/dev/null; then
      port[$name]=$(sed -n 's/^listening //p' "$tmp/$name.out")
      return 0
    fi
    sleep 0.1
  done
  echo "selfcheck: $script $* did not start:" >&2
  cat "$tmp/$name.err" >&2
  exit 1
}

# expect WHAT JSON PYTHON-EXPR: EXPR, over `o` (the parsed JSON), is true.
expect() {
  local what=$1 json=$2 expr=$3
  if "$py" -c 'import json, sys; o = json.loads(sys.argv[1]); sys.exit(0 if eval(sys.argv[2]) else 1)' \
    "$json" "$expr" 2>/dev/null; then
    ok
  else
    bad "$what: \`$expr\` is false for: $json"
  fi
}

# client LABEL ARGS...: runs client.py; sets out (its stdout); a non-zero exit is a failure.
client() {
  local label=$1
  shift
  if ! out=$("$py" "$here/client.py" "$@" 2> "$tmp/client.err"); then
    bad "$label: client.py $* exited non-zero: $(cat "$tmp/client.err")"
    out='null'
  fi
}

# Log lines of FILE after line N, as one JSON array.
log_since() {
  tail -n +"$(($2 + 1))" "$1" 2>/dev/null | "$py" -c 'import json, sys; print(json.dumps([json.loads(l) for l in sys.stdin]))'
}
lines() { if [ -f "$1" ]; then wc -l < "$1"; else echo 0; fi; }
# same_lines WHAT FILE N: FILE still has N lines (nothing reached the tool).
same_lines() { if [ "$(lines "$2")" = "$3" ]; then ok; else bad "$1"; fi; }

tools='["read_ticket", "search_tickets", "write_ticket"]'

# --- servers: the response mode, stateful or stateless, resumable SSE
start json crm_server.py --response json --log "$tmp/json.log"
start sse crm_server.py --response sse --resumable --log "$tmp/sse.log"
start json_sl crm_server.py --response json --stateless --log "$tmp/json_sl.log"
start sse_sl crm_server.py --response sse --stateless --log "$tmp/sse_sl.log"

for server in json sse json_sl sse_sl; do
  url=http://127.0.0.1:${port[$server]}/mcp
  log=$tmp/$server.log
  case $server in sse*) sse=1 ;; *) sse=0 ;; esac
  case $server in *_sl) stateless=1 ;; *) stateless=0 ;; esac
  for revision in latest old auto 2025-06-18; do
    case $revision in
      latest | auto) version=2026-07-28 ;;
      old) version=2025-11-25 ;;
      *) version=$revision ;;
    esac
    label="$server/$revision"
    trace=$tmp/$server.$revision.trace
    rm -f "$trace"

    client "$label list" "$url" list --revision "$revision" --trace "$trace"
    expect "$label list" "$out" "o == $tools"

    before=$(lines "$log")
    client "$label call" "$url" call read_ticket '{"id":"T-1"}' --revision "$revision" \
      --log-level info --trace "$trace"
    expect "$label call" "$out" \
      "o['ok'] and o['text'] == 'ticket T-1: printer on fire' and not o['is_error'] and o['protocol_version'] == '$version' and o['http_status'] == 200"
    # JSON unless the server answers SSE; on 2026-07-28 only a request that opted in to logs
    # (--log-level) gets the tool's log line, and so SSE.
    if [ "$sse" = 1 ]; then want=text/event-stream; else want=application/json; fi
    expect "$label call content type" "$out" "o['content_type'] == '$want'"

    # The log: exactly this call, with the headers of its revision.
    got=$(log_since "$log" "$before")
    expect "$label log" "$got" \
      "len(o) == 1 and o[0]['tool'] == 'read_ticket' and o[0]['arguments'] == {'id': 'T-1'} and o[0]['protocol_version'] == '$version'"
    if [ "$version" = 2026-07-28 ]; then
      expect "$label headers" "$got" \
        "o[0]['mcp_method'] == 'tools/call' and o[0]['mcp_name'] == 'read_ticket' and o[0]['mcp_protocol_version'] == '2026-07-28' and o[0]['mcp_session_id'] is None"
    else
      expect "$label headers" "$got" \
        "o[0]['mcp_method'] is None and o[0]['mcp_name'] is None and o[0]['mcp_protocol_version'] == '$version'"
      if [ "$stateless" = 1 ]; then
        expect "$label no session" "$got" "o[0]['mcp_session_id'] is None"
      else
        expect "$label session" "$got" "isinstance(o[0]['mcp_session_id'], str) and len(o[0]['mcp_session_id']) > 0"
      fi
    fi

    # The trace: how each revision mode opens.
    first=$("$py" -c 'import json, sys; print(json.dumps(json.loads(open(sys.argv[1]).readline())))' "$trace")
    case $revision in
      latest) expect "$label opens" "$first" "o['rpc_method'] == 'tools/list' and 'mcp-session-id' not in o['request_headers']" ;;
      auto) expect "$label opens" "$first" "o['rpc_method'] == 'server/discover' and o['request_headers'].get('mcp-method') == 'server/discover'" ;;
      *) expect "$label opens" "$first" "o['rpc_method'] == 'initialize' and 'mcp-protocol-version' not in o['request_headers']" ;;
    esac

    # Another tool, and no tools/list after the call with --no-list-after-call.
    rm -f "$trace"
    client "$label search" "$url" call search_tickets '{"query":"vpn"}' --revision "$revision" \
      --no-list-after-call --trace "$trace"
    expect "$label search" "$out" "o['ok'] and o['text'] == 'ticket T-2: VPN drops every hour'"
    methods=$("$py" -c 'import json, sys; print(json.dumps([json.loads(l)["rpc_method"] for l in open(sys.argv[1])]))' "$trace")
    expect "$label no listing" "$methods" "'tools/list' not in o and o.count('tools/call') == 1"
  done
done

# --- the wire, below the SDK: SSE framing, priming events, header checks (raw HTTP)
wire=$(cat <<'PY'
import http.client, json, sys
port, which = int(sys.argv[1]), sys.argv[2]
meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}}
def post(body, headers):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = {"content-type": "application/json", "accept": "application/json, text/event-stream", **headers}
    c.request("POST", "/mcp", json.dumps(body), h)
    r = c.getresponse()
    return r.status, r.getheader("content-type"), r.getheader("mcp-session-id"), r.read().decode()
out = {}
if which == "modern-sse-list":
    out["status"], out["ct"], _, out["body"] = post(
        {"jsonrpc": "2.0", "id": 7, "method": "tools/list",
         "params": {"_meta": {**meta, "io.modelcontextprotocol/logLevel": "info"}}},
        {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"})
elif which == "modern-sse-list-no-opt-in":
    out["status"], out["ct"], _, out["body"] = post(
        {"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {"_meta": meta}},
        {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"})
elif which == "mismatch":
    out["status"], out["ct"], _, out["body"] = post(
        {"jsonrpc": "2.0", "id": 8, "method": "tools/call",
         "params": {"name": "write_ticket", "arguments": {"id": "T-1", "text": "x"}, "_meta": meta}},
        {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "read_ticket"})
elif which == "legacy-sse-list":
    _, _, sid, _ = post({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                         "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                    "clientInfo": {"name": "wire", "version": "0"}}}, {})
    h = {"mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"}
    post({"jsonrpc": "2.0", "method": "notifications/initialized"}, h)
    out["status"], out["ct"], _, out["body"] = post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, h)
print(json.dumps(out))
PY
)
out=$("$py" -c "$wire" "${port[sse]}" modern-sse-list)
expect "wire: 2026-07-28 tools/list with a log opt-in is SSE" "$out" \
  "o['status'] == 200 and o['ct'] == 'text/event-stream' and o['body'].startswith('event: message\r\ndata: {') and '\"method\":\"notifications/message\"' in o['body'].split('\r\n\r\n')[0] and '\"id\":7' in o['body'].split('\r\n\r\n')[1] and 'id:' not in o['body']"
out=$("$py" -c "$wire" "${port[sse]}" modern-sse-list-no-opt-in)
expect "wire: 2026-07-28 tools/list without an opt-in is JSON" "$out" \
  "o['status'] == 200 and o['ct'] == 'application/json' and json.loads(o['body'])['id'] == 7"
out=$("$py" -c "$wire" "${port[sse]}" legacy-sse-list)
expect "wire: a handshake tools/list on a resumable server: priming event, then ids" "$out" \
  "o['ct'] == 'text/event-stream' and o['body'].split('\r\n\r\n')[0].split('\r\n')[1] == 'data: ' and o['body'].split('\r\n\r\n')[0].startswith('id: ') and o['body'].split('\r\n\r\n')[1].split('\r\n')[:2][1] == 'event: message'"
before=$(lines "$tmp/json.log")
out=$("$py" -c "$wire" "${port[json]}" mismatch)
expect "wire: Mcp-Name against the body" "$out" \
  "o['status'] == 400 and json.loads(o['body'])['error']['code'] == -32020 and json.loads(o['body'])['id'] == 8"
same_lines "wire: the mismatched call reached the tool" "$tmp/json.log" "$before"

# --- a refusal: deny_proxy.py answers every tools/call with 403 and a JSON-RPC error
start deny deny_proxy.py --upstream "http://127.0.0.1:${port[json]}/mcp"
start deny_plain deny_proxy.py --upstream "http://127.0.0.1:${port[json]}/mcp" --plain
for revision in latest old auto; do
  label="deny/$revision"
  before=$(lines "$tmp/json.log")
  client "$label list" "http://127.0.0.1:${port[deny]}/mcp" list --revision "$revision"
  expect "$label list passes" "$out" "o == $tools"
  client "$label call" "http://127.0.0.1:${port[deny]}/mcp" call write_ticket '{"id":"T-1","text":"x"}' \
    --revision "$revision"
  expect "$label call" "$out" \
    "o['ok'] is False and o['code'] == -32001 and o['message'] == 'forbidden' and o['data']['decision_id'] == 'd-1' and o['http_status'] == 403 and json.loads(o['http_body'])['error']['data']['reason'] == 'forbidden'"
  client "$label plain" "http://127.0.0.1:${port[deny_plain]}/mcp" call write_ticket '{"id":"T-1","text":"x"}' \
    --revision "$revision"
  expect "$label plain" "$out" \
    "o['ok'] is False and o['code'] == -32603 and o['http_status'] == 403 and o['http_body'] == 'forbidden\n'"
  same_lines "$label: a refused call reached the tool" "$tmp/json.log" "$before"
done

# A refusal of the handshake itself (every request refused): `auto` falls back from the refused
# server/discover to initialize, and both report stage `connect`; `latest` has no handshake.
start deny_all deny_proxy.py --upstream "http://127.0.0.1:${port[json]}/mcp" --methods '*'
for revision in old auto; do
  label="deny-all/$revision"
  rm -f "$tmp/deny_all.trace"
  client "$label" "http://127.0.0.1:${port[deny_all]}/mcp" list --revision "$revision" \
    --trace "$tmp/deny_all.trace"
  expect "$label" "$out" \
    "o['ok'] is False and o['stage'] == 'connect' and o['code'] == -32001 and o['data']['decision_id'] == 'd-1' and o['http_status'] == 403"
  methods=$("$py" -c 'import json, sys; print(json.dumps([json.loads(l)["rpc_method"] for l in open(sys.argv[1])]))' \
    "$tmp/deny_all.trace")
  if [ "$revision" = auto ]; then want='["server/discover", "initialize"]'; else want='["initialize"]'; fi
  expect "$label requests" "$methods" "o == $want"
done

echo "selfcheck: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
