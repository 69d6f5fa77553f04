"""What is evaluated is what is served: the quality bench's lists are Engine.recommend's."""

from __future__ import annotations

import json

import pytest

from recsys.bench.quality import run_quality
from recsys.bench.registry import load_registry


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("quality")
    return run_quality("synthetic", "random", out, progress=False, parity_users=80), out


def test_every_registered_model_serves_what_the_bench_evaluates(report):
    result, _ = report
    assert set(result["models"]) == set(load_registry())
    for name, check in result["parity"].items():
        assert check["users"] == 80
        assert check["identical_top_k"] == check["users"], (name, check["first_mismatch"])


def test_bench_report_names_configs_and_reused_training(report):
    _, out = report
    written = json.loads((out / "quality.json").read_text())
    assert written["served_by"].startswith("recsys.serving.Engine")
    assert written["configs"]["two_tower+ranker"]["retriever"] == written["configs"]["two_tower"]
    assert written["models"]["two_tower+ranker"]["retriever_train_seconds"] > 0
    assert "| two_tower+ranker |" in (out / "quality.md").read_text()
    # the personalised models beat the popularity floor on the served lists
    ndcg = {name: values["ndcg@10"] for name, values in written["models"].items()}
    assert ndcg["ease"] > ndcg["popularity"] and ndcg["two_tower+ranker"] > ndcg["popularity"]
