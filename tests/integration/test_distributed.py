"""Two-tower training under TorchRec DistributedModelParallel: 2 processes, gloo, CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from recsys.data import load_dataset, make_split
from recsys.evaluation.protocol import build_queries, evaluate
from recsys.retrieval.base import Recommender
from recsys.retrieval.two_tower import TwoTowerConfig, TwoTowerRetriever

CONFIG = {
    "embedding_size": 16,
    "table_dim": 16,
    "hidden_size": 32,
    "batch_size": 128,
    "epochs": 3,
    "patience": 5,
    "sparse_optimizer": "adagrad",
}


@pytest.mark.slow
def test_dmp_two_processes_matches_single_process(tmp_path):
    out = tmp_path / "dmp"
    env = {**os.environ, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "recsys.retrieval.two_tower.distributed", "--dataset", "synthetic",
        "--protocol", "random", "--config", json.dumps(CONFIG), "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "distributed.json").read_text())
    assert report["world_size"] == 2 and report["backend"] == "gloo"
    placements = [
        (table["type"], tuple(table["ranks"]))
        for tower in report["sharding"].values()
        for table in tower.values()
    ]
    assert all("table_wise" in kind.lower() for kind, _ in placements)
    assert {ranks for _, ranks in placements} == {(0,), (1,)}  # tables on both ranks
    assert len(report["epoch_seconds"]) == len(report["history"]) >= 1

    split = make_split(load_dataset("synthetic"), "random", seed=2020)
    dmp = Recommender.load(out)
    assert isinstance(dmp, TwoTowerRetriever)
    single = TwoTowerRetriever(TwoTowerConfig(**CONFIG, progress=False)).fit(split)
    dmp_ndcg = evaluate(dmp.score, split, stage="valid")["ndcg@10"]
    single_ndcg = evaluate(single.score, split, stage="valid")["ndcg@10"]
    popularity = _popularity_ndcg(split)
    assert dmp_ndcg > popularity + 0.02
    assert abs(dmp_ndcg - single_ndcg) < 0.03, (dmp_ndcg, single_ndcg)
    # the saved model serves like any retriever
    query = build_queries(split, np.array([0]))[0]
    assert len(dmp(query, 10)) == 10


def _popularity_ndcg(split) -> float:
    from recsys.retrieval.baselines import Popularity

    return evaluate(Popularity().fit(split).score, split, stage="valid")["ndcg@10"]
