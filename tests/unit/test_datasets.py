"""Datasets as data: registered configs, every file format, clear errors, anonymous sessions.

Every data file here is written by the test from a seeded synthetic dataset; no expected
figure is typed in by hand: the formats are checked against each other.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from recsys.bench.quality import run_quality
from recsys.cli import app
from recsys.data import (
    Dataset,
    DatasetConfig,
    DataWarning,
    SyntheticConfig,
    generate,
    load_dataset,
    load_events_file,
    read_events,
    session_time_split,
    validate_interactions,
)
from recsys.data.paths import project_root
from recsys.data.registry import (
    BUILTIN_DATASETS,
    add_dataset,
    available_datasets,
    load_registered,
    portable_source,
)
from recsys.errors import ChecksumError, DataError

runner = CliRunner()
CHEAP_MODELS = ["popularity", "itemknn", "ease"]
TIMING_KEYS = ("train_seconds", "eval_seconds")


@pytest.fixture
def configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private config folder searched before the checkout's (tests never write the repo)."""
    folder = tmp_path / "configs"
    monkeypatch.setenv("RECSYS_DATASETS_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def raw_log() -> dict[str, pd.DataFrame]:
    """A seeded clickstream as a shop would export it: its own column names, times in ms."""
    data = generate(SyntheticConfig(n_users=50, n_items=70, seed=11))
    events = data.interactions
    log = pd.DataFrame(
        {
            "visitor": events["user_id"],
            "sku": events["item_id"],
            "ts_ms": np.round(events["timestamp"].to_numpy() * 1000.0),
            "action": events["event_type"],
            "device": np.where(events["user"] % 3 == 0, "mobile", "desktop"),
        }
    ).sample(frac=1.0, random_state=3)  # files are rarely sorted by time
    items = pd.DataFrame(
        {
            "sku": data.items.index,
            "name": data.items["title"].to_numpy(),
            "cats": ["|".join(g) for g in data.items["genres"]],
        }
    )
    users = data.users.reset_index().rename(columns={"user_id": "visitor"})
    return {"events": log.reset_index(drop=True), "items": items, "users": users}


WRITERS = {
    "tab": ("events.tsv", lambda f, p: f.to_csv(p, sep="\t", index=False)),
    "semicolon": ("events.csv", lambda f, p: f.to_csv(p, sep=";", index=False)),
    "parquet": ("events.parquet", lambda f, p: f.to_parquet(p, index=False)),
    "gzip-csv": ("events.csv.gz", lambda f, p: f.to_csv(p, index=False, compression="gzip")),
}


def _write(frames: dict[str, pd.DataFrame], kind: str, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    name, write = WRITERS[kind]
    suffix = name.removeprefix("events")
    paths = {}
    for part, frame in frames.items():
        paths[part] = folder / f"{part}{suffix}"
        write(frame, paths[part])
    return paths


def _add(name: str, paths: dict[str, Path], *extra: str) -> str:
    result = runner.invoke(
        app,
        [
            "data", "add", name, "--events", str(paths["events"]),
            "--map", "user_id=visitor", "--map", "item_id=sku", "--map", "timestamp=ts_ms",
            "--map", "event_type=action", "--timestamp-unit", "ms",
            "--items", str(paths["items"]), "--item-map", "item_id=sku",
            "--item-map", "title=name", "--item-map", "genres=cats",
            "--users", str(paths["users"]), "--user-map", "user_id=visitor",
            *extra,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result.output


def _metrics(report: dict) -> dict[str, dict[str, float]]:
    return {
        model: {k: v for k, v in values.items() if k not in TIMING_KEYS}
        for model, values in report["models"].items()
    }


# --------------------------------------------------------------------------- the three formats


def test_tab_semicolon_parquet_gzip_give_identical_bench_quality(
    raw_log, configs: Path, tmp_path: Path
) -> None:
    reports = {}
    frames = {}
    for kind in WRITERS:
        paths = _write(raw_log, kind, tmp_path / kind)
        output = _add(f"shop-{kind}", paths)
        assert f"{len(raw_log['events'])} rows" in output
        frames[kind] = load_dataset(f"shop-{kind}").interactions
        reports[kind] = run_quality(
            f"shop-{kind}",
            "random",
            tmp_path / "out" / kind,
            models=CHEAP_MODELS,
            parity_users=10,
            progress=False,
        )
    reference = reports["tab"]
    assert set(reference["models"]) == set(CHEAP_MODELS)
    assert reference["n_users"] == raw_log["users"].shape[0]
    for kind, report in reports.items():
        pd.testing.assert_frame_equal(frames[kind], frames["tab"])
        assert _metrics(report) == _metrics(reference), kind
        assert report["split_sizes"] == reference["split_sizes"]
        assert all(p["identical_top_k"] == p["users"] for p in report["parity"].values())


def test_registered_config_is_written_portable_and_read_back(
    raw_log, configs: Path, tmp_path: Path
) -> None:
    paths = _write(raw_log, "semicolon", configs / "files")
    _add("shop", paths)
    spec = yaml.safe_load((configs / "shop.yaml").read_text())
    # the separator was sniffed and is now written down; paths are relative to the config
    assert spec["format"] == "semicolon" and spec["timestamp_unit"] == "ms"
    assert spec["events"] == ["files/events.csv"]
    assert spec["items"]["path"] == "files/items.csv"
    assert set(spec["sha256"]) == {"files/events.csv", "files/items.csv", "files/users.csv"}
    assert spec["session"] == {"key": "user"}
    data = load_registered("shop")
    assert data.items.loc[data.item_index.ids[0], "title"].startswith("Item")
    assert all(isinstance(g, tuple) for g in data.items["genres"])
    assert "device" in data.interactions.columns  # unmapped columns stay as context
    assert list(data.users.columns) == ["age_band", "gender", "device"]
    assert "shop" in available_datasets()


def test_config_round_trips_through_json() -> None:
    config = DatasetConfig(
        name="x",
        events="a.tsv",
        columns={"session_id": "sid", "item_id": "sku", "timestamp": "t"},
        session={"key": "session"},
        items={"path": "i.csv", "columns": {"genres": "cats"}, "genres_separator": ";"},
    )
    assert config.events == ["a.tsv"]
    assert DatasetConfig.from_json(config.to_json()) == config


def test_config_rejects_unknown_keys_and_builtin_names() -> None:
    with pytest.raises(ValueError, match="extra"):
        DatasetConfig.model_validate({"name": "x", "events": ["a"], "colums": {}})
    for name in BUILTIN_DATASETS:
        with pytest.raises(ValueError, match="built-in"):
            DatasetConfig(name=name, events=["a.csv"])


# --------------------------------------------------------------------------- the registry


def test_add_refuses_to_overwrite_without_force_and_builtin_names(
    raw_log, configs: Path, tmp_path: Path
) -> None:
    paths = _write(raw_log, "tab", tmp_path / "f")
    _add("shop", paths)
    again = runner.invoke(app, ["data", "add", "shop", "--events", str(paths["events"])])
    assert again.exit_code == 2 and "registered already (--force)" in again.output
    _add("shop", paths, "--force")
    builtin = runner.invoke(app, ["data", "add", "ml-100k", "--events", str(paths["events"])])
    assert builtin.exit_code == 2 and "built-in" in builtin.output


def test_unknown_dataset_lists_the_available_ones(configs: Path) -> None:
    with pytest.raises(DataError, match=r"unknown 'nope'.*ml-100k.*synthetic.*yoochoose-sample"):
        load_dataset("nope")


def test_data_info_and_list_on_a_registered_dataset(raw_log, configs: Path, tmp_path) -> None:
    _add("shop", _write(raw_log, "parquet", tmp_path / "f"))
    info = runner.invoke(app, ["data", "info", "shop"])
    assert info.exit_code == 0, info.output
    summary = json.loads(info.output)
    assert summary["interactions"] == len(raw_log["events"])
    assert summary["key"] == "user" and summary["source"]["checksums"] == "verified"
    assert summary["source"]["files"][0]["format"] == "parquet"
    listing = runner.invoke(app, ["data", "list"])
    assert "shop\t" in listing.output and "ml-100k\tbuilt-in" in listing.output


def test_load_dataset_takes_a_config_file_path(raw_log, configs: Path, tmp_path) -> None:
    _add("shop", _write(raw_log, "tab", tmp_path / "f"))
    assert load_dataset(str(configs / "shop.yaml")).name == "shop"


def test_changed_file_fails_its_checksum(raw_log, configs: Path, tmp_path: Path) -> None:
    paths = _write(raw_log, "tab", tmp_path / "f")
    _add("shop", paths)
    raw_log["events"].iloc[:-1].to_csv(paths["events"], sep="\t", index=False)
    with pytest.raises(ChecksumError, match=r"events\.tsv: sha256 .* changed since"):
        load_dataset("shop")


def test_committed_dataset_configs_are_valid_and_portable() -> None:
    root = project_root()
    assert root is not None
    files = sorted((root / "experiments" / "configs" / "datasets").glob("*.yaml"))
    assert files, "no committed dataset configs"
    for path in files:
        config = DatasetConfig.model_validate(yaml.safe_load(path.read_text()))
        assert config.name == path.stem
        for ref in config.files():
            # a committed config must work on every machine: no absolute paths
            assert not Path(ref).is_absolute() and not ref.startswith("~"), (path, ref)


def test_portable_source_prefers_shared_then_relative(tmp_path, monkeypatch) -> None:
    shared = tmp_path / "shared"
    (shared / "logs").mkdir(parents=True)
    (shared / "logs" / "a.csv").write_text("x\n")
    monkeypatch.setenv("RECSYS_DATA_DIR", str(shared))
    assert portable_source(shared / "logs" / "a.csv", tmp_path / "cfg") == "shared:logs/a.csv"
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "b.csv").write_text("x\n")
    assert portable_source(tmp_path / "cfg" / "b.csv", tmp_path / "cfg") == "b.csv"


# --------------------------------------------------------------------------- errors


def _clicks(tmp_path: Path, rows: dict[str, list], name: str = "clicks.csv", **kw) -> Path:
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False, **kw)
    return path


def test_missing_file_is_named(tmp_path: Path, configs: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.tsv: events file not found"):
        read_events(tmp_path / "nope.tsv")
    result = runner.invoke(app, ["data", "add", "x", "--events", str(tmp_path / "nope.tsv")])
    assert result.exit_code == 2 and "nope.tsv: file not found" in result.output


def test_unreadable_format_names_file_and_format(tmp_path: Path) -> None:
    text = _clicks(tmp_path, {"user_id": [1], "item_id": [2], "timestamp": [3]})
    with pytest.raises(DataError, match=r"clicks\.csv: cannot read as parquet"):
        read_events(text, fmt="parquet")
    binary = tmp_path / "dump.csv"
    binary.write_bytes(gzip.compress(b"user_id,item_id\n1,2\n"))  # gzip without .gz
    with pytest.raises(DataError, match=r"dump\.csv: cannot read as text"):
        read_events(binary)
    ragged = tmp_path / "ragged.tsv"
    ragged.write_text("user_id\titem_id\ttimestamp\n1\t2\t3\n1\t2\t3\t4\t5\n")
    with pytest.raises(DataError, match=r"ragged\.tsv: cannot read as tsv.*line 3"):
        read_events(ragged)


def test_mapping_to_a_missing_column_lists_the_columns(tmp_path: Path, configs) -> None:
    path = _clicks(tmp_path, {"visitor": ["a"], "sku": ["x"], "when": [1]})
    result = runner.invoke(
        app,
        ["data", "add", "x", "--events", str(path), "--map", "user_id=visitor",
         "--map", "item_id=product", "--map", "timestamp=when"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "mapped column 'product' (item_id) not in the file" in result.output
    assert "the file has columns ['visitor', 'sku', 'when']" in result.output
    assert not (configs / "x.yaml").exists()


def test_missing_required_column_is_named_with_a_hint(tmp_path: Path) -> None:
    path = _clicks(tmp_path, {"visitor": ["a"], "item_id": ["x"], "timestamp": [1]})
    with pytest.raises(DataError, match=r"missing required column.*user_id.*'visitor'.*session"):
        read_events(path)


def test_bad_timestamp_names_file_column_and_row(tmp_path: Path) -> None:
    path = _clicks(
        tmp_path, {"u": ["a", "a", "b"], "i": ["x", "y", "z"], "when": ["10", "11", "soon"]}
    )
    cols = {"user_id": "u", "item_id": "i", "timestamp": "when"}
    with pytest.raises(
        DataError, match=r"clicks\.csv .*column 'when' \(timestamp\), row 2 \(line 4\): 'soon'"
    ):
        read_events(path, cols)
    dates = _clicks(
        tmp_path,
        {"u": ["a", "b"], "i": ["x", "y"], "when": ["03/01/2024 10:00", "2024-01-04"]},
        name="dates.csv",
    )
    with pytest.raises(DataError, match=r"dates\.csv .*row 1 \(line 3\).*format '%d/%m/%Y %H:%M'"):
        read_events(dates, cols, date_format="%d/%m/%Y %H:%M")
    parquet = tmp_path / "neg.parquet"
    pd.DataFrame({"u": ["a", "b"], "i": ["x", "y"], "when": [5.0, -1.0]}).to_parquet(parquet)
    with pytest.raises(DataError, match=r"neg\.parquet \(parquet\): column 'when'.*row 1: -1\.0"):
        read_events(parquet, cols)


def test_empty_id_is_named_or_dropped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "gaps.tsv"
    path.write_text("u\ti\tt\na\tx\t1\n\ty\t2\n\nb\tz\tlater\nb\tx\t4\n")
    cols = {"user_id": "u", "item_id": "i", "timestamp": "t"}
    with pytest.raises(DataError, match=r"gaps\.tsv .*column 'u' \(user_id\) is empty, row 1"):
        read_events(path, cols)
    frame, report = read_events(path, cols, drop_invalid=True)
    assert frame["user_id"].tolist() == ["a", "b"]
    assert report.dropped == {
        "blank line": 1,
        "empty user_id (column 'u')": 1,
        "bad timestamp (column 't')": 1,
    }
    assert report.examples["blank line"] == "gaps.tsv row 2 (line 4)"


def test_validate_interactions_names_repeated_columns() -> None:
    frame = pd.DataFrame([["s1", "", "x", 1.0]], columns=["user_id", "user_id", "item_id", "t"])
    frame = frame.rename(columns={"t": "timestamp"})
    with pytest.raises(DataError, match=r"log\.csv: column\(s\) \['user_id'\] appear more"):
        validate_interactions(frame, "log.csv")


# --------------------------------------------------------------------------- the case


def _session_log(tmp_path: Path, user_column: list | None, name: str = "log.csv") -> Path:
    rng = np.random.default_rng(5)
    n = 60
    rows = {
        "session_id": [f"s{k // 4}" for k in range(n)],
        "item_id": [f"i{v}" for v in rng.integers(0, 15, size=n)],
        "timestamp": 1_700_000_000 + np.arange(n) * 30,
    }
    if user_column is not None:
        rows["user_id"] = user_column * (n // len(user_column))
    return _clicks(tmp_path, rows, name=name)


def test_mapping_wins_over_the_files_own_empty_user_id(tmp_path: Path, configs: Path) -> None:
    path = _session_log(tmp_path, [None])
    # what crashed with "truth value of a Series is ambiguous": two user_id columns
    with pytest.warns(DataWarning, match=r"own column 'user_id' is displaced.*all empty"):
        data = load_events_file(path, columns={"user_id": "session_id"})
    assert data.session_keyed and data.n_users == 15
    assert (data.interactions["user_id"] == data.interactions["session_id"]).all()
    moved = data.summary()["source"]["displaced_columns"]
    assert moved[0]["column"] == "user_id" and moved[0]["replaced_by"] == "session_id"
    with pytest.warns(DataWarning):
        result = runner.invoke(
            app, ["data", "add", "anon", "--events", str(path), "--map", "user_id=session_id"]
        )
    assert result.exit_code == 0, result.output
    assert "displaced: the file's column 'user_id' by the mapping user_id=session_id" in (
        result.output
    )
    assert "all empty, dropped" in result.output
    assert "15 sessions (anonymous" in result.output


def test_displaced_column_with_values_is_kept_as_context(tmp_path: Path) -> None:
    path = _session_log(tmp_path, ["alice", "bob", "carol"])
    with pytest.warns(DataWarning, match="kept as 'file_user_id'"):
        frame, report = read_events(path, {"user_id": "session_id"})
    assert set(frame["file_user_id"]) == {"alice", "bob", "carol"}
    assert report.key == "session" and report.displaced[0]["kept_as"] == "file_user_id"


# --------------------------------------------------------------------------- sessions


def test_anonymous_session_file_is_keyed_by_session(tmp_path: Path, configs: Path) -> None:
    path = tmp_path / "clicks.dat"
    rng = np.random.default_rng(9)
    n_sessions = 80
    rows = []
    for s in range(n_sessions):
        start = 1_600_000_000 + s * 3_600 * 2  # one session every two hours, ~6.7 days
        for k in range(int(rng.integers(1, 6))):
            rows.append((s, int(rng.integers(0, 25)), start + 60.5 * k))
    pd.DataFrame(rows, columns=["SessionId", "ItemId", "Time"]).to_csv(path, sep="|", index=False)
    result = runner.invoke(
        app,
        ["data", "add", "anon", "--events", str(path), "--session-column", "SessionId",
         "--map", "item_id=ItemId", "--map", "timestamp=Time"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = load_dataset("anon")
    assert data.session_keyed and data.n_users == n_sessions
    assert data.summary()["sessions"] == n_sessions
    assert yaml.safe_load((configs / "anon.yaml").read_text())["separator"] == "|"

    split = session_time_split(data, test_days=1.0, valid_days=1.0)
    parts = {p: set(getattr(split, p)["user"]) for p in ("train", "valid", "test")}
    assert not (parts["train"] & parts["test"]) and not (parts["valid"] & parts["test"])
    assert not (parts["train"] & parts["valid"]) and parts["test"] and parts["valid"]
    cutoff = data.interactions["timestamp"].max() - 86_400
    assert split.train["timestamp"].max() < cutoff  # by end time: training ends before it
    assert set(split.test["item"]) <= set(split.train["item"])
    assert split.test.groupby("user").size().min() >= 2
    by_fraction = session_time_split(data, test_fraction=0.25)
    n_test = len(set(by_fraction.test["user"]))
    assert 0 < n_test <= int(np.ceil(0.25 * n_sessions))
    with pytest.raises(ValueError, match="give one of"):
        session_time_split(data, test_days=1.0, test_fraction=0.2)


def test_session_gap_derives_sessions(tmp_path: Path) -> None:
    minutes = [0, 5, 10, 100, 104, 300]
    path = _clicks(
        tmp_path,
        {
            "user_id": ["a"] * 6 + ["b"] * 6,
            "item_id": [f"i{k}" for k in range(12)],
            "timestamp": [1_700_000_000 + 60 * m for m in minutes * 2],
        },
    )
    frame, _ = read_events(path, session_gap_minutes=30)
    assert frame.groupby("user_id")["session_id"].nunique().tolist() == [3, 3]
    keyed, report = read_events(path, session_gap_minutes=30, session_key="session")
    assert report.key == "session" and keyed["user_id"].nunique() == 6


def test_session_split_of_a_user_keyed_log_needs_session_ids() -> None:
    frame = pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"], "timestamp": [1, 2]})
    with pytest.raises(ValueError, match="without a session id"):
        session_time_split(Dataset("plain", frame, pd.DataFrame()))


def test_timestamps_from_dates_datetimes_and_units_agree(tmp_path: Path) -> None:
    stamps = pd.to_datetime(["2024-01-01 10:00:00", "2024-01-02 11:30:15"], utc=True)
    seconds = [s.timestamp() for s in stamps]
    base = {"user_id": ["a", "b"], "item_id": ["x", "y"]}
    iso = _clicks(tmp_path, {**base, "timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%SZ")})
    ms = _clicks(tmp_path, {**base, "timestamp": [int(s * 1000) for s in seconds]}, "ms.csv")
    native = tmp_path / "native.parquet"
    pd.DataFrame({**base, "timestamp": stamps.tz_localize(None)}).to_parquet(native)
    custom = _clicks(tmp_path, {**base, "timestamp": stamps.strftime("%d/%m/%Y %H:%M:%S")}, "d.csv")
    got = [
        read_events(iso)[0],
        read_events(ms, timestamp_unit="ms")[0],
        read_events(native)[0],
        read_events(custom, date_format="%d/%m/%Y %H:%M:%S")[0],
    ]
    for frame in got:
        assert frame["timestamp"].tolist() == seconds
    _, report = read_events(ms)  # seconds assumed: far in the future
    assert "is the unit right" in report.warnings[0]


# --------------------------------------------------------------------------- YOOCHOOSE


@pytest.mark.slow  # real data (the shared YOOCHOOSE sample); about a second
def test_yoochoose_sample_is_registered_and_splits_like_session_rec() -> None:
    data = load_dataset("yoochoose-sample")
    summary = data.summary()
    # PROVENANCE.md: train_full + test = 83,846 clicks, 21,210 sessions, 2,933 items
    assert (summary["interactions"], summary["users"], summary["items"]) == (83_846, 21_210, 2_933)
    assert data.session_keyed and summary["source"]["checksums"] == "verified"
    split = session_time_split(data, test_days=1.0)
    test_file = next(
        Path(p) for p in summary["source"]["references"].values() if p.endswith("_test.txt")
    )
    shipped = pd.read_csv(test_file, sep="\t", dtype={"SessionId": str})
    assert set(split.test["user_id"]) == set(shipped["SessionId"])
    assert len(split.test) == len(shipped) and len(split.valid) == 0


def test_add_dataset_python_api(raw_log, configs: Path, tmp_path: Path) -> None:
    paths = _write(raw_log, "parquet", tmp_path / "f")
    path, data = add_dataset(
        {
            "name": "api",
            "events": [str(paths["events"])],
            "columns": {"user_id": "visitor", "item_id": "sku", "timestamp": "ts_ms"},
            "timestamp_unit": "ms",
        },
        checksum=False,
    )
    assert path == configs / "api.yaml" and "sha256" not in yaml.safe_load(path.read_text())
    assert data.n_users == load_dataset("api").n_users


def test_add_options_malformed_map_and_named_separator(tmp_path: Path, configs: Path) -> None:
    path = tmp_path / "clicks.txt"
    path.write_text("who\twhat\twhen\na\tx\t1\nb\ty\t2\n")
    bad = runner.invoke(app, ["data", "add", "x", "--events", str(path), "--map", "user_id"])
    assert bad.exit_code == 2 and "SCHEMA_COLUMN=FILE_COLUMN" in bad.output
    good = runner.invoke(
        app,
        ["data", "add", "x", "--events", str(path), "--sep", "tab", "--map", "user_id=who",
         "--map", "item_id=what", "--map", "timestamp=when"],
    )  # fmt: skip
    assert good.exit_code == 0, good.output
    assert "(tsv, separator '\\t'): 2 rows, 2 kept" in good.output
    assert yaml.safe_load((configs / "x.yaml").read_text())["separator"] == "\t"
