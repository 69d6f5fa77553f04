"""Start and stop a real ``bentoml serve`` process (tests, benchmarks, the demo, notebooks).

The service is the personalisation Bento (``bentos/personalisation``, or a built bento's
tag); the process runs with the ``RECSYS_*`` environment its app reads
(:mod:`recsys.serving.api`), on a free loopback port, and is stopped with SIGTERM (then
SIGKILL). With several workers and no ``RECSYS_REDIS_URL`` a throwaway Redis-protocol
server is started for them (:func:`recsys.features.redis_local.start_redis`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.data.paths import project_root
from recsys.errors import RecsysError
from recsys.features.redis_local import LocalRedis, free_port, start_redis


def service_dir() -> Path:
    """``bentos/personalisation`` of the checkout."""
    root = project_root()
    if root is None:
        raise RecsysError("bentos/personalisation: only available from a checkout")
    return root / "bentos" / "personalisation"


@dataclass
class ServerProcess:
    """A running ``bentoml serve`` (use as a context manager, or call :meth:`stop`).

    Attributes:
        process: The ``bentoml serve`` process.
        url: ``http://127.0.0.1:<port>``.
        redis: The Redis-protocol server started for several workers, if any.
        log_path: Where the server's stdout and stderr go.
    """

    process: subprocess.Popen[bytes]
    url: str
    redis: LocalRedis | None = None
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        """SIGTERM the server (its workers follow), SIGKILL after 10 s; stop Redis."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.redis is not None:
            self.redis.stop()

    def log_tail(self, lines: int = 60) -> str:
        """The end of the server's output (for error messages)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    target: str | Path | None = None,
    model_tag: str | None = None,
    workers: int = 1,
    log_dir: str | Path | None = None,
    env: dict[str, str] | None = None,
    port: int | None = None,
    timeout: float = 180.0,
    output: str | Path | None = None,
) -> ServerProcess:
    """Start ``bentoml serve`` and wait until ``/readyz`` answers.

    Args:
        target: A built bento's tag, or the service folder (default: ``bentos/personalisation``).
        model_tag: ``RECSYS_MODEL_TAG`` (the exported engine; default: the latest).
        workers: ``RECSYS_WORKERS``; above one, a Redis-protocol server is started unless
            ``env`` gives ``RECSYS_REDIS_URL``.
        log_dir: ``RECSYS_LOG_DIR`` (event and decision logs).
        env: Further environment (``RECSYS_API_KEY``, ``RECSYS_FAULTS``, ...).
        port: Port (default: a free one).
        timeout: Seconds to wait for readiness.
        output: File for the server's output (default: ``server.log`` in ``log_dir``).

    Raises:
        RecsysError: The server exited or was not ready in time (its log's tail included).
    """
    port = port or free_port()
    environment = {**os.environ, **(env or {}), "RECSYS_WORKERS": str(workers)}
    if model_tag:
        environment["RECSYS_MODEL_TAG"] = model_tag
    if log_dir is not None:
        # absolute: the server runs in the service folder, not in the caller's directory
        environment["RECSYS_LOG_DIR"] = str(Path(log_dir).resolve())
    redis = None
    if workers > 1 and "RECSYS_REDIS_URL" not in environment:
        redis = start_redis()
        environment["RECSYS_REDIS_URL"] = redis.url
    target = str(target or service_dir())
    cwd = target if Path(target).is_dir() else None
    log_path = Path(output or Path(environment.get("RECSYS_LOG_DIR", "var/recsys")) / "server.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    bentoml_cli = Path(sys.executable).with_name("bentoml")
    command = [str(bentoml_cli), "serve", "." if cwd else target, "--port", str(port)]
    command += ["--host", "127.0.0.1"]
    with open(log_path, "ab") as sink:
        process = subprocess.Popen(
            command, cwd=cwd, env=environment, stdout=sink, stderr=subprocess.STDOUT
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", redis, log_path, environment)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()
            raise RecsysError(f"bentoml serve exited ({process.returncode}):\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/readyz", timeout=1) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            time.sleep(0.25)
    server.stop()
    raise RecsysError(f"bentoml serve not ready after {timeout:.0f} s:\n{server.log_tail()}")


def post(
    url: str, body: Any, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, Any]:
    """POST JSON (``body`` as is when it is bytes); ``(status, parsed body)`` even for errors."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"content-type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")
