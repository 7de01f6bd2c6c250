#!/usr/bin/env python3
"""A stand-in for a refusing proxy, for selfcheck.sh: relays MCP to UPSTREAM, refuses tools/call.

    deny_proxy.py --upstream http://127.0.0.1:PORT/mcp [--port 0] [--status 403] [--plain]
                  [--methods tools/call,...|'*']

Every POST whose JSON-RPC method is one of --methods (tools/call; `*`: every request) is answered, without reaching the upstream, with
HTTP --status (403) and, as application/json,
    {"jsonrpc":"2.0","id":<the request's id>,"error":{"code":-32001,"message":"forbidden",
     "data":{"decision_id":"d-1","reason":"forbidden"}}}
or, with --plain, the text/plain body `forbidden`. Every other POST and every DELETE is relayed
to the upstream and its answer (JSON or SSE, read whole) relayed back; a GET (the handshake
revisions' server-to-client stream) gets 405, which the spec allows and the SDK client accepts.
Prints `listening <port>` once it accepts connections. Standard library only.
"""

import argparse
import http.client
import json
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "content-length", "host"}


def handler_for(args: argparse.Namespace) -> type[BaseHTTPRequestHandler]:
    upstream = urllib.parse.urlsplit(args.upstream)
    refused = set(args.methods.split(","))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_a) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("content-length") or 0))

        def _answer(self, status: int, body: bytes, content_type: str | None,
                    headers: list[tuple[str, str]] = ()) -> None:
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            if content_type:
                self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _relay(self, body: bytes | None) -> None:
            conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                conn.request(self.command, upstream.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()  # an SSE answer to a POST ends with the JSON-RPC response
                kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
                self._answer(resp.status, data, None, kept)
            finally:
                conn.close()

        def do_POST(self) -> None:
            body = self._body()
            try:
                msg = json.loads(body)
            except ValueError:
                msg = None
            method = msg.get("method") if isinstance(msg, dict) else None
            if method is not None and "id" in msg and ("*" in refused or method in refused):
                if args.plain:
                    self._answer(args.status, b"forbidden\n", "text/plain")
                    return
                err = {"jsonrpc": "2.0", "id": msg.get("id"),
                       "error": {"code": -32001, "message": "forbidden",
                                 "data": {"decision_id": "d-1", "reason": "forbidden"}}}
                self._answer(args.status, json.dumps(err).encode(), "application/json")
                return
            self._relay(body)

        def do_DELETE(self) -> None:
            self._relay(None)

        def do_GET(self) -> None:
            self._answer(405, b"", None, [("allow", "POST, DELETE")])

    return Handler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--status", type=int, default=403)
    p.add_argument("--plain", action="store_true")
    p.add_argument("--methods", default="tools/call", help="comma-separated methods to refuse; * for all")
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(args))
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
