#!/usr/bin/env python3
"""An MCP client on the official MCP Python SDK, for hopgate's tests.

    client.py URL list                          prints the tool names, a JSON array
    client.py URL call TOOL '{"id":"T-1"}'      prints {"ok": true, "content": [...], ...}

A call (or a listing) the server or a proxy refused prints
{"ok": false, "code": ..., "message": ..., "data": ..., "http_status": ..., "http_body": ...}:
code, message and data are the JSON-RPC error as the SDK raised it; http_status and http_body are
what the HTTP response said (the body only for a status of 400 or more).

Options:
  --revision latest   2026-07-28, stateless: each request carries Mcp-Method, Mcp-Name (for
                      tools/call) and MCP-Protocol-Version, and _meta in the body; no initialize
  --revision auto     the SDK's default: a server/discover probe, then initialize if it fails
  --revision old      the initialize handshake (2025-11-25): only MCP-Protocol-Version and
                      Mcp-Session-Id headers, the tool name in the body alone
  --revision 2025-06-18 (or another handshake revision) the same handshake, offering that one
  --header K:V        an extra HTTP header on every request (repeatable)
  --log-level LEVEL   opt in to the server's log notifications (on 2026-07-28 they are per request)
  --timeout S         give up after S seconds (default 20): exit 2
  --no-list-after-call  send the tools/call alone: by default the SDK follows a successful call
                      of a tool it has not listed with a tools/list (to check the result against
                      the tool's output schema), and so does this client
  --trace FILE        append one JSON line per HTTP exchange to FILE: the request's method,
                      JSON-RPC method and id, all its headers, and the answer's status,
                      content type and headers (the body too, for a status of 400 or more)

Exit 0 when it ran, a refusal included; 2 when the harness itself failed (connection refused,
timeout, a malformed answer).
"""

import argparse
import json
import sys
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client import session as client_session
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_MODERN_VERSION


class Wire:
    """Remembers the HTTP status (and, for errors, the body) of each JSON-RPC request's answer."""

    def __init__(self, trace: str | None = None) -> None:
        self.answers: list[dict[str, Any]] = []
        self.trace = trace

    async def on_response(self, response: httpx2.Response) -> None:
        request = response.request
        method = rpc_id = None
        if request.method == "POST":
            try:
                body = json.loads(request.content)
                method, rpc_id = body.get("method"), body.get("id")
            except (ValueError, AttributeError, httpx2.RequestNotRead):
                pass
        answer: dict[str, Any] = {"http_method": request.method, "rpc_method": method, "id": rpc_id,
                                  "status": response.status_code,
                                  "content_type": response.headers.get("content-type"), "body": None}
        if response.status_code >= 400:
            # Read here, before the SDK does: it may drop a body it cannot parse. A read body is
            # cached, so the SDK's own read sees the same bytes.
            try:
                answer["body"] = (await response.aread()).decode("utf-8", "replace")[:4096]
            except httpx2.HTTPError:
                pass
        self.answers.append(answer)
        if self.trace:
            # One JSON line per HTTP exchange: what the SDK really sent, and how it was answered.
            line = {**answer, "url": str(request.url),
                    "request_headers": {k.lower(): v for k, v in request.headers.items()},
                    "response_headers": {k.lower(): v for k, v in response.headers.items()}}
            with open(self.trace, "a", encoding="utf-8") as f:
                f.write(json.dumps(line, sort_keys=True) + "\n")

    def last(self, rpc_method: str | None) -> dict[str, Any] | None:
        for answer in reversed(self.answers):
            if rpc_method is None or answer["rpc_method"] == rpc_method:
                return answer
        return None


def mcp_error(exc: BaseException) -> MCPError | None:
    """The MCPError in exc, or in the exception groups the SDK's task groups wrap it in."""
    if isinstance(exc, MCPError):
        return exc
    for inner in getattr(exc, "exceptions", None) or ():
        if (found := mcp_error(inner)) is not None:
            return found
    return None


def failure(err: MCPError, answer: dict[str, Any] | None) -> dict[str, Any]:
    out = {"ok": False, "code": err.code, "message": err.message, "data": err.data,
           "http_status": answer["status"] if answer else None,
           "http_body": answer["body"] if answer else None}
    return out


async def run(args: argparse.Namespace) -> dict[str, Any] | list[str]:
    headers = {}
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise SystemExit(f"client.py: --header wants K:V, got {h!r}")
        headers[name.strip()] = value.strip()

    if args.revision == "latest":
        mode = LATEST_MODERN_VERSION
    elif args.revision == "auto":
        mode = "auto"
    elif args.revision == "old" or args.revision in HANDSHAKE_PROTOCOL_VERSIONS:
        mode = "legacy"
        if args.revision != "old":
            # The SDK always offers its newest handshake revision; offering an older one is a
            # matter of the constant initialize() reads.
            client_session.LATEST_HANDSHAKE_VERSION = args.revision
    else:
        raise SystemExit(f"client.py: unknown --revision {args.revision!r}")

    wire = Wire(args.trace)
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(args.timeout),
                              event_hooks={"response": [wire.on_response]})
    rpc = "tools/list" if args.command == "list" else "tools/call"
    async with http:
        transport = streamable_http_client(args.url, http_client=http)
        client = Client(transport, mode=mode, read_timeout_seconds=args.timeout, log_level=args.log_level,
                        cache=None)
        try:
            await client.__aenter__()
        except BaseException as exc:
            # The handshake (initialize, or the discover probe and the initialize it falls back
            # to) was refused. Raised from inside the transport's task group, the MCPError comes
            # wrapped in an ExceptionGroup.
            err = mcp_error(exc)
            if err is None:
                raise
            return {**failure(err, wire.last(None)), "stage": "connect"}
        try:
            if args.command == "list":
                try:
                    result = await client.list_tools()
                except MCPError as err:
                    return failure(err, wire.last(rpc))
                return [tool.name for tool in result.tools]
            if args.no_list_after_call:
                # The SDK lists the tools after a successful call whose tool it has not listed yet,
                # to check the result against the tool's output schema. Marking the tool as
                # listed without a schema skips that (a private cache of mcp 2.3.0's session).
                client.session._tool_output_schemas[args.tool] = None
            try:
                result = await client.call_tool(args.tool, args.arguments)
            except MCPError as err:
                last = wire.last(None)
                if last and last["rpc_method"] == "tools/list" and (wire.last(rpc) or {}).get("status") == 200:
                    # The call went through; the listing the SDK sends after it was refused.
                    return {**failure(err, last), "stage": "list-after-call"}
                return failure(err, wire.last(rpc))
            return {"ok": True,
                    "content": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in result.content],
                    "text": "\n".join(getattr(c, "text", "") for c in result.content),
                    "is_error": bool(result.is_error),
                    "protocol_version": client.session.protocol_version,
                    "http_status": (wire.last(rpc) or {}).get("status"),
                    "content_type": (wire.last(rpc) or {}).get("content_type")}
        finally:
            await client.__aexit__(None, None, None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url")
    p.add_argument("command", choices=("list", "call"))
    p.add_argument("tool", nargs="?")
    p.add_argument("arguments", nargs="?", default="{}")
    p.add_argument("--revision", default="latest")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--log-level", default=None)
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--trace", default=None)
    p.add_argument("--no-list-after-call", action="store_true")
    args = p.parse_args()
    if args.command == "call":
        if not args.tool:
            p.error("call needs a TOOL")
        try:
            args.arguments = json.loads(args.arguments)
        except ValueError as e:
            p.error(f"the arguments are not JSON: {e}")
    try:
        out = anyio.run(lambda: with_deadline(args))
    except TimeoutError:
        print(f"client.py: no answer within {args.timeout}s", file=sys.stderr)
        sys.exit(2)
    except SystemExit:
        raise
    except BaseException as e:  # a harness failure: say what, exit non-zero
        for inner in getattr(e, "exceptions", None) or [e]:
            print(f"client.py: {type(inner).__name__}: {inner}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(out))


async def with_deadline(args: argparse.Namespace):
    with anyio.fail_after(args.timeout + 5):
        return await run(args)


if __name__ == "__main__":
    main()
