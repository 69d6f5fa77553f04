"""The load generator survives a server that closes keep-alive connections."""

from __future__ import annotations

import socketserver
import threading

from recsys.bench.loadgen import _request_bytes, run_load


class _CloseAfterOne(socketserver.StreamRequestHandler):
    """Answers one request per connection, then closes it (a keep-alive timeout of zero)."""

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = head.split(b"\r\n\r\n", 1)[1]
        while len(body) < length:
            body += self.request.recv(4096)
        self.request.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n"
            b"x-recsys-worker: 7\r\n\r\nok"
        )


def test_closed_connections_are_reopened_and_every_request_answered() -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _CloseAfterOne)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host, port = server.server_address[:2]
        raw = _request_bytes(f"{host}:{port}", "/recommend", {"k": 1}, "")
        for rate in (None, 200.0):
            result = run_load(f"http://{host}:{port}", [("/recommend", raw)], 12, 3, rate, 5.0)
            assert result["status"] == [200] * 12
            # every answer said "connection: close": the client reconnected before sending
            # again, and it knows which worker answered
            assert result["reconnects"] == 12
            assert result["worker"] == ["7"] * 12
    finally:
        server.shutdown()
        server.server_close()


class _SlowKeepAlive(socketserver.StreamRequestHandler):
    """Keep-alive, and 50 ms per answer: a server far behind the offered rate."""

    def handle(self) -> None:
        import time

        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = self.request.recv(4096)
                if not chunk:
                    return
                buffer += chunk
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(buffer) < length:
                buffer += self.request.recv(4096)
            buffer = buffer[length:]
            time.sleep(0.05)
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def test_the_open_loop_waits_for_a_busy_connection_instead_of_spinning() -> None:
    """With every connection busy the client sleeps in select: it must not burn the CPU the
    server it measures needs (it spun at 100 % of a core before)."""
    import time

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SlowKeepAlive)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host, port = server.server_address[:2]
        raw = _request_bytes(f"{host}:{port}", "/recommend", {"k": 1}, "")
        cpu, wall = time.process_time(), time.perf_counter()
        result = run_load(f"http://{host}:{port}", [("/recommend", raw)], 10, 1, 1000.0, 5.0)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        assert result["status"] == [200] * 10
        assert wall >= 0.5  # ten answers, 50 ms each, on one connection
        assert cpu < 0.5 * wall
    finally:
        server.shutdown()
        server.server_close()


def test_the_serve_table_names_the_client_workers_and_server_settings():
    from recsys.bench.serve import serve_table

    stats = {"requests_per_second": 300.0, "p50_ms": 5.0, "p95_ms": 9.0, "p99_ms": 20.0}
    report = {
        "model": {"model": "ease", "dataset": "ml-latest-small", "n_items": 9742},
        "workers": 3,
        "client": "recsys.bench.loadgen",
        "host_load_1min": 0.5,
        "server_settings": {"RECSYS_DEADLINE": "thread"},
        "closed_loop": {"1": {"all": {**stats, "errors": 0}, "recommend": stats}},
        "open_loop": {"300": {**stats, "errors": 0, "busiest_worker_share": 0.4}},
        "capacity_requests_per_second": 300.0,
        "budget_ms": 50.0,
    }
    table = serve_table(report)
    assert "3 workers, client: recsys.bench.loadgen" in table
    assert "server settings: RECSYS_DEADLINE=thread" in table
    assert "| 300 | 300 | 5.00 | 20.00 | 0 | 40% |" in table
