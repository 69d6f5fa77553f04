"""Loaders, schema validation and clear errors for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data import load_events_file, validate_interactions
from recsys.data.movielens import ML100K_UDATA_SHA256, fetch_ml100k, read_ml100k_folder
from recsys.errors import ChecksumError, DataError


def test_schema_fills_optional_columns_and_sorts() -> None:
    raw = pd.DataFrame({"user_id": [2, 1], "item_id": ["b", "a"], "timestamp": [20, 10]})
    out = validate_interactions(raw, "memory")
    assert list(out.columns[:6]) == [
        "user_id",
        "item_id",
        "timestamp",
        "event_type",
        "value",
        "session_id",
    ]
    assert out["user_id"].tolist() == ["1", "2"]
    assert out["value"].dtype == np.float32


def test_schema_names_missing_column_and_source() -> None:
    raw = pd.DataFrame({"user_id": [1], "timestamp": [1]})
    with pytest.raises(DataError, match=r"clicks\.csv.*item_id"):
        validate_interactions(raw, "clicks.csv")


def test_schema_rejects_non_numeric_timestamp() -> None:
    raw = pd.DataFrame({"user_id": [1, 2], "item_id": [1, 2], "timestamp": [1, "soon"]})
    with pytest.raises(DataError, match=r"timestamp.*row 1"):
        validate_interactions(raw, "x.csv")


def test_events_file_with_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    pd.DataFrame(
        {
            "visitor": ["a", "a", "b"],
            "sku": ["x", "y", "x"],
            "when": ["2024-01-01T10:00:00Z", "2024-01-01T10:05:00Z", "2024-01-02T09:00:00Z"],
            "device": ["mobile", "mobile", "desktop"],
        }
    ).to_csv(path, index=False)
    data = load_events_file(
        path, columns={"user_id": "visitor", "item_id": "sku", "timestamp": "when"}
    )
    assert data.n_users == 2 and data.n_items == 2
    assert data.interactions["timestamp"].iloc[0] == pd.Timestamp("2024-01-01T10:00Z").timestamp()
    assert "device" in data.interactions.columns


def test_events_file_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    pd.DataFrame({"visitor": ["a"], "timestamp": [1]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"clicks\.csv.*missing required column.*user_id"):
        load_events_file(path)
    with pytest.raises(DataError, match=r"mapped column.*'sku'"):
        load_events_file(path, columns={"user_id": "visitor", "item_id": "sku"})


def test_missing_events_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.parquet: events file not found"):
        load_events_file(tmp_path / "nope.parquet")


def test_parquet_events_file(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pd.DataFrame({"user_id": [1, 2], "item_id": [3, 4], "timestamp": [5.0, 6.0]}).to_parquet(path)
    assert len(load_events_file(path).interactions) == 2


def test_ml100k_loaded_and_checksummed(ml100k) -> None:
    summary = ml100k.summary()
    assert (summary["interactions"], summary["users"], summary["items"]) == (100_000, 943, 1682)
    assert set(ml100k.users.columns) >= {"age", "gender", "occupation"}
    assert ml100k.items.loc["1", "genres"] == ("Animation", "Children's", "Comedy")
    assert ml100k.items.loc["1", "year"] == 1995


def _cache_copy(tmp_path: Path) -> Path:
    source = fetch_ml100k()
    target = tmp_path / "ml-100k"
    shutil.copytree(source, target)
    return target


def test_truncated_udata_is_an_error_naming_the_file(ml100k, tmp_path: Path) -> None:
    folder = _cache_copy(tmp_path)
    udata = folder / "u.data"
    udata.write_bytes(udata.read_bytes()[:-1000])
    with pytest.raises(ChecksumError, match=r"u\.data.*does not match.*truncated"):
        read_ml100k_folder(folder)


def test_missing_dataset_file_is_an_error_naming_it(ml100k, tmp_path: Path) -> None:
    folder = _cache_copy(tmp_path)
    (folder / "users.tsv").unlink()
    with pytest.raises(DataError, match=r"users\.tsv: file not found"):
        read_ml100k_folder(folder)


def test_corrupt_manifest_is_an_error(ml100k, tmp_path: Path) -> None:
    folder = _cache_copy(tmp_path)
    (folder / "checksums.json").write_text("{not json")
    with pytest.raises(DataError, match=r"checksums\.json: not valid JSON"):
        read_ml100k_folder(folder)


def test_data_dir_source_is_verified(ml100k, tmp_path: Path, monkeypatch) -> None:
    # a RECSYS_DATA_DIR holding a corrupt u.data must fail loudly, never be used
    data_dir = tmp_path / "shared"
    (data_dir / "ml-100k").mkdir(parents=True)
    (data_dir / "ml-100k" / "u.data").write_text("1\t2\t3\t4\n")
    monkeypatch.setenv("RECSYS_DATA_DIR", str(data_dir))
    monkeypatch.setenv("RECSYS_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ChecksumError, match=r"u\.data"):
        fetch_ml100k()


def test_cache_manifest_records_checksums(ml100k) -> None:
    folder = fetch_ml100k()
    manifest = json.loads((folder / "checksums.json").read_text())
    assert manifest["u.data"] == ML100K_UDATA_SHA256


def test_ml_latest_small(ml_latest_small) -> None:
    summary = ml_latest_small.summary()
    assert (summary["interactions"], summary["users"], summary["items"]) == (100_836, 610, 9742)
    assert summary["genres"] == 19  # 20 labels minus "(no genres listed)"
    tagged = ml_latest_small.items["tags"].map(len)
    assert tagged.sum() > 1000
    # titles and years belong to their own movie (they were once all NaN: index misalignment)
    assert ml_latest_small.items.loc["1", "title"] == "Toy Story"
    assert ml_latest_small.items.loc["1", "year"] == 1995.0
    assert ml_latest_small.items["year"].notna().mean() > 0.99


def test_ml_latest_small_missing_folder_is_named(tmp_path: Path, monkeypatch) -> None:
    from recsys.data import load_ml_latest_small

    with pytest.raises(DataError, match=r"ratings\.csv: file not found"):
        load_ml_latest_small(tmp_path)


def test_synthetic_is_seeded(synthetic) -> None:
    from recsys.data.synthetic import SyntheticConfig, generate

    again = generate(SyntheticConfig(n_users=120, n_items=100, seed=7))
    pd.testing.assert_frame_equal(again.interactions, synthetic.interactions)
    other = generate(SyntheticConfig(n_users=120, n_items=100, seed=8))
    assert not other.interactions[["user_id", "item_id"]].equals(
        synthetic.interactions[["user_id", "item_id"]]
    )


def test_synthetic_drift_changes_popularity() -> None:
    from recsys.data.synthetic import SyntheticConfig, generate

    data = generate(SyntheticConfig(n_users=300, n_items=80, drift_at=0.5, seed=1))
    ts = data.interactions["timestamp"]
    cut = ts.min() + 0.5 * (ts.max() - ts.min())
    before = data.interactions[ts < cut]["item"].value_counts(normalize=True)
    after = data.interactions[ts >= cut]["item"].value_counts(normalize=True)
    shift = before.subtract(after, fill_value=0).abs().sum() / 2
    assert shift > 0.2  # total variation distance between the two periods
