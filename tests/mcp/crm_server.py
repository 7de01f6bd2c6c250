#!/usr/bin/env python3
"""A small MCP tool server (a ticket "CRM") on the official MCP Python SDK, for hopgate's tests.

Streamable HTTP at /mcp on 127.0.0.1. It answers every protocol revision the SDK speaks: the
2026-07-28 stateless revision (a request whose MCP-Protocol-Version header names it) and the
handshake revisions (initialize first; with --stateless no Mcp-Session-Id is issued).

    crm_server.py --port 0 --response json|sse [--stateless] [--resumable] [--log FILE]

Prints `listening <port>` on stdout once it accepts connections. Every tools/call that reaches a
tool is appended to --log as one JSON line (method, tool, arguments, protocol version and the
request's headers), so a test can prove that a denied call never got here. GET /health is a plain
200 outside MCP.
"""

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import sys
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import PlainTextResponse

TICKETS = {
    "T-1": "printer on fire",
    "T-2": "VPN drops every hour",
    "T-3": "coffee machine empty",
}

# The headers a test is most likely to ask about; the log line carries all of them anyway.
WATCHED = ("hop-token", "x-forwarded-client-cert", "mcp-method", "mcp-name", "mcp-protocol-version", "mcp-session-id")


class MemoryEventStore(EventStore):
    """Keeps every SSE event in memory, so the SDK sends priming events and event ids (--resumable)."""

    def __init__(self) -> None:
        self._events: list[tuple[str, str, Any]] = []
        self._ids = itertools.count(1)

    async def store_event(self, stream_id, message):
        event_id = str(next(self._ids))
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id, send_callback: EventCallback):
        ids = [e[0] for e in self._events]
        if last_event_id not in ids:
            return None
        stream_id = self._events[ids.index(last_event_id)][1]
        for event_id, sid, message in self._events[ids.index(last_event_id) + 1 :]:
            if sid == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


class CrmServer(MCPServer):
    """An MCPServer whose tools/list, in SSE mode, logs one line before it answers.

    On 2026-07-28 the SDK answers a request as SSE only once its handler emits a notification
    (else, within 15 s, as plain JSON), so without this a listing would never be SSE on the
    wire there. MCPServer hands its own `_handle_list_tools` to the low-level server in
    __init__, so overriding it here is enough (a private hook of mcp 2.3.0).
    """

    def __init__(self, *args: Any, sse: bool, **kwargs: Any) -> None:
        self._sse = sse
        super().__init__(*args, **kwargs)

    async def _handle_list_tools(self, ctx, params):  # type: ignore[override]
        if self._sse:
            await Context(request_context=ctx, mcp_server=self).log("info", "listing tools")
        return await super()._handle_list_tools(ctx, params)


def build(args: argparse.Namespace) -> MCPServer:
    sse = args.response == "sse"
    mcp = CrmServer("crm", version="1.0.0", sse=sse)

    def record(tool: str, arguments: dict[str, Any], ctx: Context) -> None:
        if not args.log:
            return
        headers = {k.lower(): v for k, v in (ctx.headers or {}).items()}
        line = {
            "method": "tools/call",
            "tool": tool,
            "arguments": arguments,
            "protocol_version": ctx.protocol_version,
            "headers": headers,
            **{h.replace("-", "_"): headers.get(h) for h in WATCHED},
        }
        with open(args.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")

    async def progress_note(ctx: Context, text: str) -> None:
        # In SSE mode a tool logs one line before it answers, so the response stream carries a
        # notification ahead of the result (on 2026-07-28 only when the request opted in to logs).
        if sse:
            await ctx.log("info", text)

    @mcp.tool(description="Read one ticket by id")
    async def read_ticket(id: str, ctx: Context) -> str:
        record("read_ticket", {"id": id}, ctx)
        await progress_note(ctx, f"reading {id}")
        return f"ticket {id}: {TICKETS.get(id, 'not found')}"

    @mcp.tool(description="Search tickets by text")
    async def search_tickets(query: str, ctx: Context) -> str:
        record("search_tickets", {"query": query}, ctx)
        await progress_note(ctx, f"searching {query}")
        hits = [f"ticket {k}: {v}" for k, v in sorted(TICKETS.items()) if query.lower() in v.lower()]
        return "\n".join(hits) if hits else "no tickets match"

    @mcp.tool(description="Replace a ticket's text")
    async def write_ticket(id: str, text: str, ctx: Context) -> str:
        record("write_ticket", {"id": id, "text": text}, ctx)
        await progress_note(ctx, f"writing {id}")
        return f"ticket {id} updated: {text}"

    @mcp.custom_route("/health", methods=["GET"])
    async def health(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    return mcp


async def serve(args: argparse.Namespace) -> None:
    import uvicorn

    app = build(args).streamable_http_app(
        streamable_http_path="/mcp",
        json_response=args.response == "json",
        stateless_http=args.stateless,
        event_store=MemoryEventStore() if args.resumable else None,
        # A proxy in front may forward its own Host; the loopback-only DNS-rebinding check would
        # then answer 421. The server binds 127.0.0.1 only, so the check buys nothing here.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task  # raises what made it fail
            sys.exit("crm_server: the server stopped before it started")
        await asyncio.sleep(0.02)
    print(f"listening {port}", flush=True)
    await task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 picks a free one")
    p.add_argument("--response", choices=("json", "sse"), default="json", help="answer POSTs as JSON or SSE")
    p.add_argument("--stateless", action="store_true", help="handshake revisions: issue no Mcp-Session-Id")
    p.add_argument("--resumable", action="store_true", help="SSE with event ids and priming events")
    p.add_argument("--log", help="append one JSON line per tools/call executed to this file")
    args = p.parse_args()
    # SIGTERM ends the process at once (a test's kill), without uvicorn's graceful drain.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
