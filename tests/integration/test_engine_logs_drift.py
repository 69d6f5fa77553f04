"""The engine writes what the drift monitor reads: events and decisions logged by the engine
itself, then ``recsys drift --log`` over two windows flags a slowed ranking stage."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.decision import DecisionLog
from recsys.ranking import Ranker, RankerConfig
from recsys.retrieval import EASE
from recsys.serving import build_engine
from recsys.testing import tiny_split

pytestmark = pytest.mark.slow

DAY = 86400.0


def test_drift_over_the_engines_own_logs_flags_a_slow_ranker(tmp_path):
    split = tiny_split()
    ease = EASE(l2=10.0).fit(split)
    ranker = Ranker(RankerConfig(candidates=30, epochs=2, folds=1, hidden=(8,))).fit(split, ease)
    log_dir = tmp_path / "log"
    engine = build_engine(
        split,
        retriever=ease,
        ranker=ranker,
        event_log_dir=log_dir / "events",
        decision_log=DecisionLog(log_dir / "decisions", max_in_memory=0),
    )
    users = list(split.dataset.user_index.ids)
    t0 = 1_767_225_600.0  # 2026-01-01
    fast_ranker = engine.ranker

    def slow_ranker(query, items):
        time.sleep(0.02)
        return fast_ranker(query, items)

    for window, ranker_stage in ((0, fast_ranker), (1, slow_ranker)):
        engine.ranker = ranker_stage
        for n, user in enumerate(users):
            now = t0 + window * 7 * DAY + n * 60.0
            answer = engine.recommend(user_id=user, k=5, now=now, context={"device": "mobile"})
            engine.ingest([{"user_id": user, "item_id": answer.items[0], "timestamp": now + 1}])
    records = [
        json.loads(line)
        for path in (log_dir / "decisions").glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert len(records) == 2 * len(users) and {"ranking", "total"} <= set(records[0]["timings_ms"])
    result = CliRunner().invoke(
        app,
        ["drift", "--log", str(log_dir), "--reference-window", "2026-01-01..2026-01-06",
         "--current-window", "2026-01-08..2026-01-13", "--out", str(tmp_path / "reports"),
         "--no-workspace"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "ranking" in result.output
