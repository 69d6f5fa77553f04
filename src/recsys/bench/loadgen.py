"""A cheap keep-alive HTTP load generator: one process, non-blocking sockets, no threads.

Run it in its own process (``python -m recsys.bench.loadgen``), never beside the server's
Python threads: on a 2-core machine a threaded client steals the cores it measures.

Two modes:

* **closed loop** (``--concurrency C``): C keep-alive connections, each sending its next
  request as soon as the previous answer arrives; latency = send → last byte.
* **open loop** (``--rate R``): requests are *scheduled* at fixed intervals of 1/R s and
  sent on the free connection idle the longest; latency is measured from the scheduled time, so a
  server that falls behind is charged for the queueing it causes (no coordinated omission).

Requests cycle through a JSON-lines file of ``{"path": ..., "body": {...}}`` (a mix of known
users, new users, no-consent requests and ``/events`` batches). The result is JSON: per
request the path, status and milliseconds, plus the wall time.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class _Connection:
    sock: socket.socket
    buffer: bytearray = field(default_factory=bytearray)
    busy: bool = False
    started: float = 0.0
    path: str = ""
    raw: bytes = b""
    expected: int | None = None
    header_end: int = -1
    freed: float = 0.0  # when its last answer arrived (open loop: the oldest free goes next)
    worker: str = ""  # the x-recsys-worker header of the answer being read
    closing: bool = False  # the answer being read says connection: close


def _request_bytes(host: str, path: str, body: dict, extra_headers: str) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: keep-alive\r\n{extra_headers}\r\n"
    )
    return head.encode() + payload


def run_load(
    url: str,
    requests: list[tuple[str, bytes]],
    total: int,
    concurrency: int = 1,
    rate: float | None = None,
    timeout: float = 30.0,
) -> dict:
    """Send ``total`` requests (cycling through ``requests``); per-request outcomes.

    Args:
        url: ``http://host:port``.
        requests: ``(path, raw HTTP request bytes)`` to cycle through.
        total: Requests to send.
        concurrency: Keep-alive connections.
        rate: Requests per second (open loop); ``None`` for closed loop.
        timeout: Seconds without progress before the run is abandoned (errors recorded).

    Returns:
        ``{"wall_seconds", "latency_ms", "status", "path", "worker"}`` (lists aligned by
        request; ``worker`` is the answer's ``x-recsys-worker`` header) and ``reconnects``,
        the connections the server asked to close.
    """
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)
    selector = selectors.DefaultSelector()

    def connect() -> socket.socket:
        sock = socket.create_connection(address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        return sock

    def reopen(conn: _Connection) -> None:
        selector.unregister(conn.sock)
        conn.sock.close()
        conn.sock = connect()
        conn.buffer.clear()
        conn.expected, conn.header_end, conn.closing = None, -1, False
        selector.register(conn.sock, selectors.EVENT_READ, conn)

    connections = []
    for _ in range(concurrency):
        conn = _Connection(connect())
        connections.append(conn)
        selector.register(conn.sock, selectors.EVENT_READ, conn)
    latencies: list[float] = []
    statuses: list[int] = []
    paths: list[str] = []
    workers: list[str] = []
    reconnects = 0
    sent = 0
    start = time.perf_counter()
    last_progress = start
    interval = None if rate is None else 1.0 / rate

    def dispatch(conn: _Connection, scheduled: float) -> None:
        nonlocal sent
        path, raw = requests[sent % len(requests)]
        conn.busy, conn.started, conn.path, conn.raw = True, scheduled, path, raw
        conn.buffer.clear()
        conn.expected, conn.header_end = None, -1
        conn.sock.sendall(raw)
        sent += 1

    while len(latencies) < total:
        now = time.perf_counter()
        if sent < total:
            idle = [c for c in connections if not c.busy]
            if interval is None:
                for conn in idle:
                    if sent < total:
                        dispatch(conn, time.perf_counter())
            else:
                # least recently used first, as a pool of independent clients would: reusing
                # the last freed connection piles the load onto the few connections (and the
                # one server worker) that happen to answer first
                idle.sort(key=lambda c: c.freed, reverse=True)
                due = start + sent * interval
                while idle and sent < total and due <= now:
                    dispatch(idle.pop(), due)
                    due = start + sent * interval
        wait = 0.05
        if interval is not None and sent < total and any(not c.busy for c in connections):
            # sleep until the next request is due; with every connection busy, until an answer
            # frees one (a zero timeout there would spin, stealing the server's cores)
            wait = max(0.0, min(wait, start + sent * interval - time.perf_counter()))
        for key, _ in selector.select(timeout=wait):
            conn = key.data
            chunk = conn.sock.recv(65536)
            if not chunk:
                # The server closed the connection (its keep-alive timeout, as with open-loop
                # rates that leave connections idle): reopen it, as a browser does, and resend
                # a request that got no byte back (it raced the close); a request cut off
                # mid-response counts as failed.
                retry = conn.busy and not conn.buffer
                if conn.busy and not retry:
                    latencies.append((time.perf_counter() - conn.started) * 1000.0)
                    statuses.append(0)
                    paths.append(conn.path)
                    workers.append("")
                    conn.busy = False
                reopen(conn)
                if retry:
                    conn.sock.sendall(conn.raw)
                continue
            conn.buffer += chunk
            if conn.header_end < 0:
                conn.header_end = conn.buffer.find(b"\r\n\r\n")
                if conn.header_end < 0:
                    continue
                head = bytes(conn.buffer[: conn.header_end]).decode("latin-1").lower()
                fields = dict(line.split(":", 1) for line in head.split("\r\n")[1:] if ":" in line)
                conn.expected = conn.header_end + 4 + int(fields.get("content-length", 0))
                conn.worker = fields.get("x-recsys-worker", "").strip()
                conn.closing = "close" in fields.get("connection", "")
            if conn.expected is not None and len(conn.buffer) >= conn.expected:
                done = time.perf_counter()
                latencies.append((done - conn.started) * 1000.0)
                statuses.append(int(conn.buffer[9:12]))
                paths.append(conn.path)
                workers.append(conn.worker)
                conn.busy, conn.freed = False, done
                last_progress = done
                if conn.closing:
                    # the server asked to close (HTTP/1.1: no further request may go on
                    # this connection): reconnect now, as an HTTP client does
                    reconnects += 1
                    reopen(conn)
        if time.perf_counter() - last_progress > timeout:
            missing = total - len(latencies)
            latencies += [timeout * 1000.0] * missing
            statuses += [0] * missing
            paths += ["(timeout)"] * missing
            workers += [""] * missing
            break
    wall = time.perf_counter() - start
    for conn in connections:
        selector.unregister(conn.sock)
        conn.sock.close()
    return {
        "wall_seconds": wall,
        "latency_ms": latencies,
        "status": statuses,
        "path": paths,
        "worker": workers,
        "reconnects": reconnects,
    }


def load_requests(path: Path, host: str, api_key: str | None = None) -> list[tuple[str, bytes]]:
    """Raw HTTP requests from a JSON-lines file of ``{"path", "body"}``."""
    extra = f"x-api-key: {api_key}\r\n" if api_key else ""
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            spec = json.loads(line)
            out.append((spec["path"], _request_bytes(host, spec["path"], spec["body"], extra)))
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m recsys.bench.loadgen --url U --requests-file F --total N ...``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--requests-file", type=Path, required=True)
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    host = urlsplit(args.url).netloc
    requests = load_requests(args.requests_file, host, args.api_key)
    result = run_load(args.url, requests, args.total, args.concurrency, args.rate)
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
