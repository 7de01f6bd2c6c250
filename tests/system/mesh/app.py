"""The mesh test's apps: the demo's three workloads as plain HTTP servers that know nothing of
hopgate. They call each other by name (http://inference.ml:8080/..., http://crm.tools:8080/...),
with no proxy settings: each host's `hopgate iptables apply` captures the connections.

    python3 app.py ROLE LOG     ROLE: agent | inference | crm; LOG: a JSON line per request

agent:      GET /ask        -> inference /generate (intent-action: generate), relaying
                               `authorization` and `x-demo-crm-action`
            GET /direct-crm -> crm /tickets/42 (intent-action: read_ticket)
inference:  GET /generate   -> crm /tickets/42 (intent-action: read_ticket, or the
                               x-demo-crm-action it got), relaying the hop token and trace context
crm:        GET /tickets/42 -> a ticket
"""

import json
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROLE, LOG = sys.argv[1], sys.argv[2]
# Proxies from the environment are ignored: capture is transparent or it is nothing.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(url, headers):
    request = urllib.request.Request(url, headers=headers)
    try:
        with OPENER.open(request, timeout=20) as rsp:
            return rsp.status, rsp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except Exception as err:  # the caller sees why, as a 502 of the app's own
        return 502, json.dumps({"app_error": str(err)}).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        seen = {k.lower(): v for k, v in self.headers.items()}
        with open(LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps({"path": self.path, "headers": seen}) + "\n")
        if ROLE == "agent" and self.path == "/direct-crm":
            status, body = call("http://crm.tools:8080/tickets/42", {"intent-action": "read_ticket"})
        elif ROLE == "agent":
            headers = {"intent-action": "generate", "intent-purpose": "support"}
            for name in ("authorization", "x-demo-crm-action"):
                if name in seen:
                    headers[name] = seen[name]
            status, body = call("http://inference.ml:8080/generate", headers)
        elif ROLE == "inference":
            headers = {"intent-action": seen.get("x-demo-crm-action", "read_ticket")}
            for name in ("hop-token", "traceparent", "tracestate"):
                if name in seen:
                    headers[name] = seen[name]
            status, body = call("http://crm.tools:8080/tickets/42", headers)
        else:
            status = 200
            body = json.dumps({"ticket": "42", "status": "open", "summary": "printer on fire"}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 8080), Handler)
print("listening", flush=True)
server.serve_forever()
