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
