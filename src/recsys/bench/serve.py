"""``recsys bench serve``: the served Bento under load, from a separate client process.

1. the engine: an export given by ``--tag``, else the registered model trained on the
   dataset and exported (the same path as ``make bento``);
2. the server: the real ``bentoml serve`` of ``bentos/personalisation`` with ``--workers``
   workers (a Redis-protocol server shares their state), or ``--url`` for a running one;
3. the load: :mod:`recsys.bench.loadgen` in its own process, keep-alive connections, a
   seeded mix of known users, new users, requests without consent and ``/events`` batches;
   closed loop at each concurrency (p50/p95/p99, requests/s, errors), then open loop at
   rising fixed rates: the **capacity** is the highest rate whose p99 stays under the 50 ms
   budget with zero errors; optionally a soak at half that capacity with the server's
   memory sampled;
4. the in-process split: the same export loaded here, ``Engine.recommend`` per stage, so the
   HTTP overhead is the difference.

Writes ``serve.json`` and ``serve.md`` under the output folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.bench.quality import package_versions

BUDGET_MS = 50.0


def request_mix(model_path: Path, n: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """A seeded mix: 70 % known users, 10 % new, 10 % without consent, 10 % ``/events``."""
    from recsys.serving.export import load_split, read_manifest

    split = load_split(model_path, read_manifest(model_path))
    users = list(split.dataset.user_index.ids)
    items = list(split.dataset.item_index.ids)
    rng = np.random.default_rng(seed)
    devices = ["mobile", "desktop", "tablet"]
    t0 = time.time()
    out = []
    for i in range(n):
        kind = rng.random()
        context = {"device": devices[int(rng.integers(3))]}
        if kind < 0.7:
            body: dict[str, Any] = {"user_id": users[int(rng.integers(len(users)))], "k": 10}
            body["context"] = context
            out.append({"path": "/recommend", "body": body})
        elif kind < 0.8:
            out.append(
                {
                    "path": "/recommend",
                    "body": {"user_id": f"new-{seed}-{i}", "k": 10, "context": context},
                }
            )
        elif kind < 0.9:
            user = users[int(rng.integers(len(users)))]
            out.append(
                {
                    "path": "/recommend",
                    "body": {"user_id": user, "k": 10, "consent": False, "context": context},
                }
            )
        else:
            user = users[int(rng.integers(len(users)))]
            events = [
                {
                    "user_id": user,
                    "item_id": items[int(rng.integers(len(items)))],
                    "timestamp": t0 + i + j,
                }
                for j in range(int(rng.integers(1, 6)))
            ]
            out.append({"path": "/events", "body": {"events": events}})
    return out


def summarize(result: dict[str, Any], path: str | None = None) -> dict[str, float]:
    """p50/p95/p99 ms, requests/s and errors of a loadgen result (one path or all)."""
    lat = np.asarray(result["latency_ms"])
    status = np.asarray(result["status"])
    paths = np.asarray(result["path"])
    keep = np.ones(len(lat), dtype=bool) if path is None else paths == path
    ok = (status >= 200) & (status < 300)
    out = {
        "requests": int(keep.sum()),
        "errors": int((~ok & keep).sum()),
        "requests_per_second": float(len(lat) / result["wall_seconds"]),
    }
    workers = [w for w, kept in zip(result.get("worker", []), keep, strict=False) if kept and w]
    if workers:
        # keep-alive connections stay on the worker that accepted them: a skewed split
        # measures one worker's capacity, not the service's
        out["busiest_worker_share"] = max(Counter(workers).values()) / len(workers)
    if keep.any():
        for q in (50, 95, 99):
            out[f"p{q}_ms"] = float(np.percentile(lat[keep], q))
        out["max_ms"] = float(lat[keep].max())
    return out


def drive(
    url: str,
    mix_file: Path,
    total: int,
    concurrency: int = 1,
    rate: float | None = None,
    api_key: str | None = None,
) -> dict[str, Any]:
    """Run :mod:`recsys.bench.loadgen` in its own process; its per-request result."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    command = [sys.executable, "-m", "recsys.bench.loadgen", "--url", url, "--requests-file",
               str(mix_file), "--total", str(total), "--concurrency", str(concurrency),
               "--out", str(out)]  # fmt: skip
    if rate is not None:
        command += ["--rate", str(rate)]
    if api_key:
        command += ["--api-key", api_key]
    subprocess.run(command, check=True, timeout=3600)
    result = json.loads(out.read_text())
    out.unlink()
    return result


def _rss_mb(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def run_serve_bench(
    out_dir: Path,
    dataset: str = "ml-latest-small",
    model: str = "two_tower+ranker",
    tag: str | None = None,
    url: str | None = None,
    workers: int = 3,
    concurrencies: Sequence[int] = (1, 8, 32),
    requests_per_level: int = 2000,
    rates: Sequence[float] = (100, 200, 300, 400, 500, 600, 700, 800),
    rate_seconds: float = 10.0,
    soak_seconds: float = 0.0,
    in_process_users: int = 500,
    api_key: str | None = None,
) -> dict[str, Any]:
    """Run the serving benchmark (see the module docstring); writes serve.json / serve.md."""
    from recsys.serving.api import service_settings
    from recsys.serving.bento import find_export, train_and_export
    from recsys.serving.build import stage_latency
    from recsys.serving.export import git_commit, load_engine, model_path, read_manifest
    from recsys.serving.server import start_server

    if tag is None and url is None:
        saved = find_export(dataset, model, "random", git_commit())
        saved = saved or train_and_export(dataset, model)[0]
        tag = str(saved.tag)
    report: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "client": "recsys.bench.loadgen (non-blocking keep-alive sockets, own process)",
        "budget_ms": BUDGET_MS,
        "workers": workers,
        # the started service's speed knobs (bentos/personalisation/README.md); unknown at --url
        "server_settings": {} if url is not None else service_settings(os.environ, workers),
        "host_load_1min": os.getloadavg()[0],
        "versions": package_versions(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    mix_file = out_dir / "requests.jsonl"
    if tag is not None:
        path = model_path(tag)
        report["model"] = {
            "tag": tag,
            **{k: v for k, v in read_manifest(tag).items() if k != "metrics"},
        }
        mix_file.write_text("".join(json.dumps(r) + "\n" for r in request_mix(path)))
    server = None
    if url is None:
        env = {"RECSYS_API_KEY": api_key} if api_key else {}
        server = start_server(model_tag=tag, workers=workers, log_dir=out_dir / "server", env=env)
        url = server.url
    try:
        drive(url, mix_file, 300, 2, None, api_key)  # warm-up: caches, lazy builds
        report["closed_loop"] = {}
        for concurrency in concurrencies:
            result = drive(url, mix_file, requests_per_level, concurrency, None, api_key)
            report["closed_loop"][str(concurrency)] = {
                "all": summarize(result),
                "recommend": summarize(result, "/recommend"),
                "events": summarize(result, "/events"),
            }
        report["open_loop"] = {}
        capacity = 0.0
        for rate in rates:
            result = drive(url, mix_file, int(rate * rate_seconds), 64, rate, api_key)
            stats = summarize(result)
            report["open_loop"][str(rate)] = stats
            if stats["errors"] == 0 and stats["p99_ms"] < BUDGET_MS:
                capacity = rate
            else:
                break
        report["capacity_requests_per_second"] = capacity
        if soak_seconds > 0 and capacity > 0 and server is not None:
            before = _rss_mb(server.process.pid)
            rate = capacity / 2
            result = drive(url, mix_file, int(rate * soak_seconds), 64, rate, api_key)
            report["soak"] = {
                "rate": rate,
                "seconds": soak_seconds,
                **summarize(result),
                "rss_mb_before": before,
                "rss_mb_after": _rss_mb(server.process.pid),
            }
    finally:
        if server is not None:
            server.stop()
    if tag is not None:
        engine = load_engine(tag)
        users = list(engine.users.ids[:in_process_users]) if engine.users else []
        stage_latency(engine, users[:50])
        report["in_process"] = stage_latency(engine, users)
    (out_dir / "serve.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (out_dir / "serve.md").write_text(serve_table(report) + "\n")
    return report


def serve_table(report: dict[str, Any]) -> str:
    """Markdown summary of a serve report."""
    model = report.get("model", {})
    lines = [
        f"**{model.get('model', '?')}** on {model.get('dataset', '?')} "
        f"({model.get('n_items', '?')} items), {report['workers']} workers, "
        f"client: {report['client']}, host load {report['host_load_1min']:.1f}",
        "",
        "server settings: "
        + (", ".join(f"{k}={v}" for k, v in report.get("server_settings", {}).items()) or "-"),
        "",
        "| concurrency | req/s | p50 ms | p95 ms | p99 ms | errors | /recommend p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, part in report.get("closed_loop", {}).items():
        a, r = part["all"], part["recommend"]
        lines.append(
            f"| {c} | {a['requests_per_second']:.0f} | {a['p50_ms']:.2f} | {a['p95_ms']:.2f} | "
            f"{a['p99_ms']:.2f} | {a['errors']} | {r.get('p99_ms', float('nan')):.2f} |"
        )
    lines += [
        "",
        "| offered req/s | achieved req/s | p50 ms | p99 ms | errors | busiest worker |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for rate, s in report.get("open_loop", {}).items():
        share = s.get("busiest_worker_share", float("nan"))
        lines.append(
            f"| {float(rate):.0f} | {s['requests_per_second']:.0f} | {s['p50_ms']:.2f} | "
            f"{s['p99_ms']:.2f} | {s['errors']} | {share:.0%} |"
        )
    lines.append("")
    lines.append(
        f"capacity (p99 < {report['budget_ms']:.0f} ms, no errors): "
        f"{report.get('capacity_requests_per_second', 0):.0f} req/s"
    )
    if "soak" in report:
        s = report["soak"]
        lines.append(
            f"soak {s['seconds']:.0f} s at {s['rate']:.0f} req/s: p99 {s['p99_ms']:.2f} ms, "
            f"errors {s['errors']}, server RSS {s['rss_mb_before']:.0f} → "
            f"{s['rss_mb_after']:.0f} MB"
        )
    if "in_process" in report:
        lines += ["", "in-process Engine.recommend (same export), ms p50 / p99:"]
        for stage, q in report["in_process"]["stages_ms"].items():
            lines.append(f"- {stage}: {q['p50']:.3f} / {q['p99']:.3f}")
    return "\n".join(lines)
