#!/usr/bin/env python3
"""Flood clients for benches/flood/run.sh: Python 3 standard library only.

  hold     CONNS h2c connections (prior knowledge), each sending a GET as soon as it is
           connected and one every EVERY seconds after its answer, all held open until HOLD
           seconds after the start.
  streams  CONNS h2c connections, each sending STREAMS HEADERS frames (GET, END_STREAM) back to
           back right after the preface, without waiting for the server's SETTINGS (and so for
           its SETTINGS_MAX_CONCURRENT_STREAMS); counts per connection the 200s, the other
           statuses, the RST_STREAMs by error code and the GOAWAY.
  silent   CONNS TCP connections that never send a byte (no TLS ClientHello), each waiting for
           the server to close it; sorted by how long it was open: under HEADER_READ - 1 s
           (it gave its place to a new connection at the cap), about HEADER_READ (closed at the
           timeout), or still open at WAIT seconds. One closed early is opened again after
           REOPEN_DELAY s during the first REOPEN_FOR s, so that the cap stays full.

Each prints one JSON object on stdout. One thread and one epoll loop over non-blocking
sockets: asyncio's streams cost too much per connection to open 10,000 of them in a few
seconds on a small VM. The frames are built by hand as in tests/e2e/slow_heads.rs: HPACK
static indexes and a literal `:authority` without indexing. The client's SETTINGS set
HEADER_TABLE_SIZE to 0, so the server's response heads use no dynamic table and `:status` can
be read without one.
"""

import argparse
import collections
import errno
import heapq
import json
import select
import socket
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0, 1, 3, 4, 6, 7
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
ERRORS = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
          5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM", 8: "CANCEL",
          11: "ENHANCE_YOUR_CALM"}
STATIC_STATUS = {8: "200", 9: "204", 10: "206", 11: "304", 12: "400", 13: "404", 14: "500"}
# RFC 7541 Appendix B, the digits only: enough for `:status`.
HUFFMAN_DIGITS = {"00000": "0", "00001": "1", "00010": "2", "011001": "3", "011010": "4",
                  "011011": "5", "011100": "6", "011101": "7", "011110": "8", "011111": "9"}


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


# HEADER_TABLE_SIZE 0, ENABLE_PUSH 0; then a connection window big enough for every body.
CLIENT_PREFACE = (PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HIHI", 1, 0, 2, 0))
                  + frame(8, 0, 0, struct.pack(">I", 1 << 30)))


def get_headers(stream, authority):
    # :method GET, :path /, :scheme http (static indexes), :authority a literal without indexing.
    block = bytes([0x82, 0x84, 0x86, 0x01, len(authority)]) + authority.encode()
    return frame(HEADERS, END_STREAM | END_HEADERS, stream, block)


def hpack_int(block, pos, bits):
    mask = (1 << bits) - 1
    value = block[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        b = block[pos]
        pos += 1
        value += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def huffman_digits(raw):
    out, code = [], ""
    for bit in "".join(f"{b:08b}" for b in raw):
        code += bit
        if code in HUFFMAN_DIGITS:
            out.append(HUFFMAN_DIGITS[code])
            code = ""
    return "".join(out)


def status_of(block):
    """`:status` of a response head (its first field, as RFC 9113 requires), or `?`."""
    pos = 0
    try:
        while pos < len(block):
            b = block[pos]
            if b & 0x80:
                index, pos = hpack_int(block, pos, 7)
                return STATIC_STATUS.get(index, "?")
            if b & 0xE0 == 0x20:  # a dynamic table size update
                _, pos = hpack_int(block, pos, 5)
                continue
            name, pos = hpack_int(block, pos, 6 if b & 0xC0 == 0x40 else 4)
            if not 8 <= name <= 14:
                return "?"
            huffman = block[pos] & 0x80
            length, pos = hpack_int(block, pos, 7)
            raw = block[pos:pos + length]
            return huffman_digits(raw) if huffman else raw.decode(errors="replace")
    except IndexError:
        pass
    return "?"


class Conn:
    """One client connection: its socket, what it has read, and its HTTP/2 streams."""

    __slots__ = ("sock", "fd", "started", "connected", "rbuf", "open", "status", "resets",
                 "goaway", "closed", "next_sid", "served")

    def __init__(self, sock, started):
        self.sock, self.fd, self.started = sock, sock.fileno(), started
        self.connected = None
        self.rbuf = bytearray()
        self.open = {}  # stream id -> when its HEADERS were sent
        self.status = {}
        self.resets = collections.Counter()
        self.goaway = None
        self.closed = None  # why the server ended it: "eof" or "reset"
        self.next_sid = 1
        self.served = False

    def send(self, data):
        try:
            self.sock.sendall(data)  # small writes into an empty socket buffer
        except BlockingIOError:
            pass  # a full buffer on a connection the server does not read: dropped
        except OSError:
            self.closed = self.closed or "reset"

    def read(self, on_done):
        """Reads what is there and handles whole frames; on_done(conn, sid, status, error)."""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                self.closed = "reset"
                break
            if not chunk:
                self.closed = "eof"
                break
            self.rbuf += chunk
        buf, pos, out = self.rbuf, 0, []
        while len(buf) - pos >= 9:
            length = int.from_bytes(buf[pos:pos + 3], "big")
            if len(buf) - pos < 9 + length:
                break
            kind, flags = buf[pos + 3], buf[pos + 4]
            sid = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            payload = bytes(buf[pos + 9:pos + 9 + length])
            pos += 9 + length
            if kind == HEADERS:
                if flags & PADDED:
                    payload = payload[1:len(payload) - payload[0]]
                if flags & PRIORITY_FLAG:
                    payload = payload[5:]
                self.status.setdefault(sid, status_of(payload))
                if flags & END_STREAM:
                    on_done(self, sid, self.status[sid], None)
            elif kind == DATA:
                if flags & END_STREAM:
                    on_done(self, sid, self.status.get(sid, "?"), None)
            elif kind == RST_STREAM:
                code = ERRORS.get(int.from_bytes(payload[:4], "big"), "other")
                self.resets[code] += 1
                on_done(self, sid, None, code)
            elif kind == SETTINGS and not flags & ACK:
                out.append(frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                out.append(frame(PING, ACK, 0, payload))
            elif kind == GOAWAY:
                last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                self.goaway = {"last_stream": last,
                               "code": ERRORS.get(int.from_bytes(payload[4:8], "big"), "other")}
                for s in [s for s in self.open if s > last]:
                    on_done(self, s, None, "GOAWAY")
        del buf[:pos]
        if out:
            self.send(b"".join(out))
        if self.closed:
            for s in list(self.open):
                on_done(self, s, None, self.closed)


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def ms(x):
    return None if x is None else round(x * 1000, 1)


class Loop:
    """Opens CONNS connections (a batch per turn, so early ones progress while later ones are
    still being opened) and dispatches their events until the deadline."""

    def __init__(self, target, conns, deadline, pending=256):
        host, port = target.rsplit(":", 1)
        self.addr = (host, int(port))
        self.to_open, self.deadline = conns, deadline
        # At most this many connects in flight: a burst of SYNs beyond the listener's backlog
        # would measure the kernel's SYN cookies, not the server.
        self.max_pending, self.pending = pending, 0
        self.started, self.last_connect = time.monotonic(), None
        self.reopen_at = []  # when to open one more connection (silent --reopen)
        self.ep = select.epoll()
        self.conns = {}
        self.timers = []  # (when, seq, fd)
        self.seq = 0
        self.st = collections.Counter()

    def open_some(self, n=200):
        for _ in range(min(n, self.to_open, self.max_pending - self.pending)):
            self.to_open -= 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = sock.connect_ex(self.addr)
            if err not in (0, errno.EINPROGRESS):
                self.st["connect_error"] += 1
                sock.close()
                continue
            conn = Conn(sock, time.monotonic())
            self.pending += 1
            self.conns[conn.fd] = conn
            self.ep.register(conn.fd, select.EPOLLOUT)

    def at(self, when, conn):
        self.seq += 1
        heapq.heappush(self.timers, (when, self.seq, conn.fd))

    def drop(self, conn):
        if conn.connected is None:
            self.pending -= 1
        self.conns.pop(conn.fd, None)
        try:
            self.ep.unregister(conn.fd)
        except OSError:
            pass
        conn.sock.close()

    def run(self, on_connect, on_readable, on_timer):
        while time.monotonic() < self.deadline and (self.conns or self.to_open or self.reopen_at):
            while self.reopen_at and self.reopen_at[0] <= time.monotonic():
                heapq.heappop(self.reopen_at)
                self.to_open += 1
            if self.to_open and self.pending < self.max_pending:
                self.open_some()
            for fd, _ in self.ep.poll(0.001 if self.to_open else 0.05):
                conn = self.conns.get(fd)
                if conn is None:
                    continue
                if conn.connected is None:
                    err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        self.st["connect_error"] += 1
                        self.st[f"connect_error_{errno.errorcode.get(err, err)}"] += 1
                        self.drop(conn)
                        continue
                    conn.connected = self.last_connect = time.monotonic()
                    self.pending -= 1
                    self.ep.modify(fd, select.EPOLLIN)
                    on_connect(conn)
                else:
                    on_readable(conn)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, fd = heapq.heappop(self.timers)
                conn = self.conns.get(fd)
                if conn is not None:
                    on_timer(conn)
        for conn in list(self.conns.values()):
            if conn.connected is None:
                self.st["connect_timeout"] += 1
            self.drop(conn)
        self.st["connected_by_s"] = round(self.last_connect - self.started, 2) if self.last_connect else None
        self.st["never_tried"] += self.to_open


def hold(args):
    start = time.monotonic()
    loop = Loop(args.target, args.conns, start + args.hold, args.pending)
    st = loop.st
    connect_t, latency, first_served, unserved_closes = [], [], [], []
    open_now = peak = 0

    def request(conn):
        sid = conn.next_sid
        conn.next_sid += 2
        conn.open[sid] = time.monotonic()
        st["requests"] += 1
        conn.send(get_headers(sid, args.authority))

    def on_connect(conn):
        nonlocal open_now, peak
        st["connected"] += 1
        connect_t.append(conn.connected - conn.started)
        open_now += 1
        peak = max(peak, open_now)
        conn.send(CLIENT_PREFACE)
        request(conn)

    def on_done(conn, sid, status, err):
        sent = conn.open.pop(sid, None)
        if sent is None:
            return
        if err is not None:
            st[f"failed_{err}"] += 1
            return
        now = time.monotonic()
        latency.append(now - sent)
        st[f"status_{status}"] += 1
        if not conn.served:
            conn.served = True
            st["served"] += 1
            first_served.append(now - start)
        if now + args.every < loop.deadline:
            loop.at(now + args.every, conn)

    def on_readable(conn):
        nonlocal open_now
        conn.read(on_done)
        if conn.closed:
            st["closed_by_server_served" if conn.served else "closed_by_server_unserved"] += 1
            if not conn.served:
                unserved_closes.append((conn.connected - start, time.monotonic() - conn.connected))
            open_now -= 1
            loop.drop(conn)

    loop.run(on_connect, on_readable, request)
    out = dict(st)
    out["unanswered_at_deadline"] = st["requests"] - len(latency) - sum(
        v for k, v in st.items() if k.startswith("failed_"))
    out["connected_unserved_at_deadline"] = (st["connected"] - st["served"]
                                             - st["closed_by_server_unserved"])
    out.update(conns=args.conns, peak_open=peak, secs=round(time.monotonic() - start, 1),
               connect_ms_p50=ms(pct(connect_t, 50)), connect_ms_p99=ms(pct(connect_t, 99)),
               connect_ms_max=ms(max(connect_t, default=None)),
               latency_ms_p50=ms(pct(latency, 50)), latency_ms_p99=ms(pct(latency, 99)),
               latency_ms_max=ms(max(latency, default=None)),
               unserved_closed_connected_at_s=[round(min((c[0] for c in unserved_closes), default=0), 2),
                                                round(max((c[0] for c in unserved_closes), default=0), 2)],
               unserved_closed_after_s=[round(min((c[1] for c in unserved_closes), default=0), 2),
                                        round(max((c[1] for c in unserved_closes), default=0), 2)],
               first_answer_s_p50=round(pct(first_served, 50), 2) if first_served else None,
               all_served_by_s=round(max(first_served), 2) if first_served else None)
    return out


def streams(args):
    start = time.monotonic()
    loop = Loop(args.target, args.conns, start + args.timeout)
    rows = []

    def on_connect(conn):
        conn.open = {2 * i + 1: time.monotonic() for i in range(args.streams)}
        conn.rbuf = bytearray()
        conn.served = collections.Counter()  # the outcome of each stream
        conn.send(CLIENT_PREFACE + b"".join(get_headers(2 * i + 1, args.authority)
                                            for i in range(args.streams)))

    def on_done(conn, sid, status, err):
        if conn.open.pop(sid, None) is not None:
            conn.served[f"status_{status}" if err is None else f"error_{err}"] += 1

    def finish(conn):
        rows.append({"conn": len(rows), "secs": round(time.monotonic() - conn.connected, 2),
                     **dict(conn.served), "unresolved": len(conn.open),
                     "rst": dict(conn.resets), "goaway": conn.goaway,
                     "closed_by_server": conn.closed})
        loop.drop(conn)

    def on_readable(conn):
        conn.read(on_done)
        if conn.closed or not conn.open:
            finish(conn)

    loop.run(on_connect, on_readable, lambda conn: None)
    return {"conns": args.conns, "streams": args.streams, "connected": len(rows),
            "per_conn": rows, **dict(loop.st)}


def silent(args):
    start = time.monotonic()
    loop = Loop(args.target, args.conns, start + args.wait, args.pending)
    st = loop.st
    closes = []  # (when, seconds open)
    full_from = None  # when the first CONNS were all established

    def on_connect(conn):
        nonlocal full_from
        st["connected"] += 1
        if st["connected"] == args.conns:
            full_from = conn.connected

    def on_readable(conn):
        try:
            data = conn.sock.recv(1)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        st["closed_with_data" if data else "closed"] += 1
        now = time.monotonic()
        closes.append((now, now - conn.connected))
        loop.drop(conn)
        # An attacker keeping the pressure on: a connection that lost its place early comes
        # back after a pause, while the first wave lasts.
        if now - conn.connected < args.header_read - 1 and now < start + args.reopen_for:
            st["reopened"] += 1
            heapq.heappush(loop.reopen_at, now + args.reopen_delay)

    loop.run(on_connect, on_readable, lambda conn: None)
    st["still_open"] = st["connected"] - len(closes)
    early = [c for c in closes if c[1] < args.header_read - 1]
    at_timeout = [c for c in closes if args.header_read - 1 <= c[1] < args.header_read + 5]
    late = [c for c in closes if c[1] >= args.header_read + 5]
    wall = time.time() - time.monotonic()  # monotonic to epoch seconds
    full_from = full_from or start
    full_until = min((c[0] for c in at_timeout), default=full_from)
    out = dict(st)
    out.update(conns=args.conns, closed_early=len(early), closed_at_header_read=len(at_timeout),
               closed_late=len(late), open_s_p50=round(pct([c[1] for c in closes], 50) or 0, 2),
               all_established_s=round(full_from - start, 2),
               full_from_epoch=round(full_from + wall, 3), full_until_epoch=round(full_until + wall, 3),
               early_open_s_max=round(max((c[1] for c in early), default=0), 2),
               secs=round(time.monotonic() - start, 1))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["hold", "streams", "silent"])
    p.add_argument("--target", required=True, help="host:port")
    p.add_argument("--authority", default="b.bench")
    p.add_argument("--conns", type=int, default=10000)
    p.add_argument("--hold", type=float, default=25, help="hold: seconds from the start to close all")
    p.add_argument("--every", type=float, default=10, help="hold: seconds between requests")
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=30, help="streams: seconds to wait for answers")
    p.add_argument("--wait", type=float, default=25, help="silent: seconds before closing the rest")
    p.add_argument("--pending", type=int, default=256, help="hold, silent: connects in flight at most")
    p.add_argument("--reopen-delay", type=float, default=0.1,
                   help="silent: seconds before a connection closed early is opened again")
    p.add_argument("--reopen-for", type=float, default=9,
                   help="silent: seconds from the start during which such connections come back")
    p.add_argument("--header-read", type=float, default=10, help="silent: the server's header_read")
    args = p.parse_args()
    json.dump({"hold": hold, "streams": streams, "silent": silent}[args.mode](args), sys.stdout)
    print()


if __name__ == "__main__":
    main()
