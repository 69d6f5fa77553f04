"""The demo's end-to-end engine run on real data: serve, ingest, serve again, time it."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from recsys.data.splits import Split
from recsys.serving.build import build_engine, stage_latency


def engine_walkthrough(split: Split, out_dir: Path, n_latency_users: int = 500) -> dict[str, Any]:
    """Build the engine on ``split``, replay one user's real next events, measure latency.

    Writes ``engine.json`` to ``out_dir`` and returns the same report.
    """
    data = split.dataset
    with tempfile.TemporaryDirectory() as events_dir:
        engine = build_engine(split, event_log_dir=events_dir)
        test = split.test.sort_values("timestamp", kind="stable")
        user = int(test["user"].value_counts().index[0])
        user_id = data.user_index.ids[user]
        before = engine.recommend(user_id=user_id, k=10)
        nxt = test[test["user"] == user].head(5)
        events = [
            {"user_id": user_id, "item_id": row.item_id, "timestamp": float(row.timestamp)}
            for row in nxt.itertuples()
        ]
        ingested = engine.ingest(events)
        after = engine.recommend(user_id=user_id, k=10)
        cold = engine.recommend(user_id="new-visitor", k=10, context={"age": 25, "gender": "F"})
        latency = stage_latency(engine, list(data.user_index.ids[:n_latency_users]))
    titles = data.items.get("title")

    def named(ids: list[str]) -> list[str]:
        return [f"{i} {titles.loc[i]}" if titles is not None else i for i in ids]

    report = {
        "user_id": user_id,
        "before": named(before.items),
        "ingested": {"accepted": ingested.accepted, "rejected": len(ingested.rejected)},
        "ingested_items": named([e["item_id"] for e in events]),
        "after": named(after.items),
        "changed_positions": sum(a != b for a, b in zip(before.items, after.items, strict=True)),
        "cold_start": {"fallback": cold.fallback, "items": named(cold.items[:5])},
        "latency_in_process": latency,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "engine.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_walkthrough(report: dict[str, Any]) -> str:
    """Human-readable summary of :func:`engine_walkthrough`."""
    lines = [f"Engine on ML-100K, user {report['user_id']}:", "  before:"]
    lines += [f"    {x}" for x in report["before"][:5]]
    lines.append(f"  ingested {report['ingested']['accepted']} real next events:")
    lines += [f"    {x}" for x in report["ingested_items"]]
    lines.append(f"  after ({report['changed_positions']} of 10 positions changed):")
    lines += [f"    {x}" for x in report["after"][:5]]
    lines.append(f"  cold start ({report['cold_start']['fallback']}):")
    lines += [f"    {x}" for x in report["cold_start"]["items"]]
    lat = report["latency_in_process"]
    lines.append(f"  in-process latency over {lat['requests']} requests (ms, p50 / p99):")
    for stage, q in lat["stages_ms"].items():
        lines.append(f"    {stage:<10} {q['p50']:7.3f} / {q['p99']:7.3f}")
    return "\n".join(lines)


def http_walkthrough(
    out_dir: Path,
    dataset: str = "ml-latest-small",
    model: str = "two_tower+ranker",
    requests: int = 1000,
) -> dict[str, Any]:
    """``make bento``, serve the built Bento, change a user's list over HTTP, time it.

    The most active test user of the served model's split posts their real next five events
    to ``/events`` (stamped now, as a live client would) and asks ``/recommend`` again; then
    a keep-alive client in its own process sends ``requests`` mixed requests one at a time.
    Writes ``http.json`` to ``out_dir``.
    """
    import time

    from recsys.bench.serve import drive, request_mix, summarize
    from recsys.data import load_dataset, make_split
    from recsys.serving.bento import build_bento
    from recsys.serving.export import model_path
    from recsys.serving.server import post, start_server

    build = build_bento(dataset, model)
    split = make_split(load_dataset(dataset), "random", seed=2020)
    data = split.dataset
    test = split.test.sort_values("timestamp", kind="stable")
    user = int(test["user"].value_counts().index[0])
    user_id = data.user_index.ids[user]
    nxt = test[test["user"] == user].head(5)
    titles = data.items.get("title")

    def named(ids: list[str]) -> list[str]:
        return [f"{i} {titles.loc[i]}" if titles is not None else i for i in ids]

    out_dir.mkdir(parents=True, exist_ok=True)
    mix = out_dir / "requests.jsonl"
    mix.write_text("".join(json.dumps(r) + "\n" for r in request_mix(model_path(build.model_tag))))
    with start_server(build.bento_tag, log_dir=out_dir / "server") as server:
        _, before = post(f"{server.url}/recommend", {"user_id": user_id, "k": 10})
        now = time.time()
        events = [
            {"user_id": user_id, "item_id": row.item_id, "timestamp": now + i}
            for i, row in enumerate(nxt.itertuples())
        ]
        status, ingested = post(f"{server.url}/events", {"events": events})
        _, after = post(f"{server.url}/recommend", {"user_id": user_id, "k": 10})
        latency = summarize(drive(server.url, mix, requests, concurrency=1))
    report = {
        "bento": build.bento_tag,
        "model": build.model_tag,
        "archive": str(build.archive),
        "user_id": user_id,
        "before": named(before["items"]),
        "events_status": status,
        "ingested": ingested,
        "posted_items": named([e["item_id"] for e in events]),
        "after": named(after["items"]),
        "changed_positions": sum(
            a != b for a, b in zip(before["items"], after["items"], strict=True)
        ),
        "http_latency_concurrency_1": latency,
    }
    (out_dir / "http.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    return report


def format_http_walkthrough(report: dict[str, Any]) -> str:
    """Human-readable summary of :func:`http_walkthrough`."""
    lat = report["http_latency_concurrency_1"]
    lines = [
        f"Bento {report['bento']} (model {report['model']}) served by bentoml serve:",
        f"  user {report['user_id']} before:",
        *[f"    {x}" for x in report["before"][:5]],
        f"  POST /events with their next {len(report['posted_items'])} real events "
        f"-> {report['events_status']} (accepted {report['ingested']['accepted']}):",
        *[f"    {x}" for x in report["posted_items"]],
        f"  after ({report['changed_positions']} of 10 positions changed):",
        *[f"    {x}" for x in report["after"][:5]],
        f"  HTTP latency, {lat['requests']} requests one at a time (keep-alive client, own "
        f"process): p50 {lat['p50_ms']:.2f} ms, p95 {lat['p95_ms']:.2f} ms, "
        f"p99 {lat['p99_ms']:.2f} ms, errors {lat['errors']}",
        f"  archive: {report['archive']}",
    ]
    return "\n".join(lines)
