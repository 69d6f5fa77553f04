"""The `recsys` command line: outputs, files and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from recsys.cli import app

runner = CliRunner()


def test_bench_quality_writes_json_and_table(tmp_path: Path) -> None:
    out = tmp_path / "q"
    result = runner.invoke(
        app,
        [
            "bench",
            "quality",
            "--dataset",
            "synthetic",
            "--protocol",
            "temporal",
            "--out",
            str(out),
            "-m",
            "popularity",
            "-m",
            "ease",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "quality.json").read_text())
    assert set(report["models"]) == {"popularity", "ease"}
    assert report["protocol"] == "temporal" and "torch" in report["versions"]
    for values in report["models"].values():
        assert {
            "ndcg@10",
            "recall@10",
            "hr@10",
            "mrr@10",
            "coverage@10",
            "ild@10",
            "novelty@10",
            "gini@10",
            "train_seconds",
        } <= set(values)
    assert "| ease |" in (out / "quality.md").read_text()


def test_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["bench", "quality", "--dataset", "synthetic", "--out", str(tmp_path), "-m", "nope"]
    )
    assert result.exit_code == 2
    assert "unknown ['nope']" in result.output


def test_data_info_unknown_dataset() -> None:
    result = runner.invoke(app, ["data", "info", "ml-10m"])
    assert result.exit_code == 2
    assert "dataset: unknown 'ml-10m'" in result.output


def test_data_info_synthetic() -> None:
    result = runner.invoke(app, ["data", "info", "synthetic"])
    assert result.exit_code == 0
    assert json.loads(result.output)["users"] == 200


def test_experiment_configs_validate() -> None:
    from recsys.bench.registry import load_registry

    registry = load_registry()
    names = list(registry)
    assert names[:5] == ["popularity", "itemknn", "ease", "implicit_als", "implicit_bpr"]
    # entries that reuse another come last
    assert names[-2:] == ["two_tower+ranker", "two_tower_seq+ranker"]
    ease = registry["ease"]
    assert ease.create("ml-latest-small", registry, {}).config.l2 == 500.0
    assert ease.create("ml-100k", registry, {}).config.l2 == 250.0
    two_stage = registry["two_tower+ranker"].config_for("ml-latest-small", registry)
    # the reused entry's settings fill the retriever; dataset overrides merge deeply
    assert two_stage.retriever == registry["two_tower"].config_for("ml-latest-small", registry)
    assert two_stage.ranker.features.ease_l2 == 500.0
    assert two_stage.ranker.features.knn_neighbors == 100


def test_bad_experiment_config_names_file(tmp_path: Path) -> None:
    import pytest

    from recsys.bench.registry import RegistryError, load_registry

    (tmp_path / "ease.yaml").write_text("component: recsys.retrieval.EASE\nconfig: {l3: 1}\n")
    with pytest.raises(RegistryError, match=r"(?s)ease\.yaml.*l3"):
        load_registry(tmp_path)
    (tmp_path / "ease.yaml").write_text("component: recsys.retrieval.EASE\nuses: {x: nope}\n")
    with pytest.raises(RegistryError, match="no model named 'nope'"):
        load_registry(tmp_path)
    (tmp_path / "ease.yaml").write_text("component: recsys.retrieval.EASE\nconfgi: {}\n")
    with pytest.raises(RegistryError, match="unknown keys"):
        load_registry(tmp_path)
