"""Drift monitoring: inputs, thresholds, each check, the run, the workspace and the command line.

Synthetic logs come from the seeded generator in ``recsys.monitoring.synthetic`` (drift
injected at a known strength); expected outcomes follow from what was injected.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.errors import DataError
from recsys.monitoring import (
    DriftConfig,
    DriftInput,
    Injection,
    SyntheticLogConfig,
    SyntheticWorld,
    decisions_frame,
    from_frames,
    load_config,
    load_files,
    load_log_window,
    parse_window,
    read_decision_log,
    run_drift,
    synthetic_pair,
    write_log,
)
from recsys.monitoring.checks import embedding_check, embedding_limit
from recsys.monitoring.frames import (
    NEW,
    OTHER,
    TAIL,
    Popularity,
    fallback_reason,
    pool_categories,
    source_kind,
)
from recsys.monitoring.latency import compare_latency, p99_limit
from recsys.monitoring.quality import outcome_rows
from recsys.monitoring.synthetic import EXPECTED, decision_records
from recsys.monitoring.thresholds import CHECKS
from recsys.monitoring.validation import detection_study, false_alarm_study

runner = CliRunner()
SMALL = SyntheticLogConfig(n_events=4000, n_users=500, n_items=300)
FAST = DriftConfig(checks=("data", "context", "prediction", "latency"))
JAN_8 = "2026-01-08"


def sides(injection: Injection | None = None, seed: int = 0) -> tuple[DriftInput, DriftInput]:
    ref, cur = synthetic_pair(SMALL, injection, seed)
    return (
        DriftInput("reference", "ref", ref.events, ref.decisions),
        DriftInput("current", "cur", cur.events, cur.decisions),
    )


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory) -> Path:
    """Two weeks of logs (2026-01-01..15), a slow ranker from the 8th, as --log expects."""
    root = tmp_path_factory.mktemp("log")
    world = SyntheticWorld(SMALL)
    write_log(root, world.window(0, 0))
    write_log(root, world.window(1, 0, Injection(kind="slow_ranker", strength=1.0)))
    return root


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One no-drift pair and one rating-shift window as files: Parquet, CSV and JSON lines."""
    folder = tmp_path_factory.mktemp("files")
    world = SyntheticWorld(SMALL)
    out: dict[str, Path] = {}
    for name, window in (
        ("ref", world.window(0, 0)),
        ("cur", world.window(1, 0)),
        ("shifted", world.window(1, 0, Injection(kind="rating", strength=0.5))),
    ):
        out[f"{name}_events"] = folder / f"{name}_events.parquet"
        window.events.to_parquet(out[f"{name}_events"], index=False)
        out[f"{name}_decisions"] = folder / f"{name}_decisions.jsonl"
        out[f"{name}_decisions"].write_text(
            "".join(json.dumps(r) + "\n" for r in decision_records(window.decisions))
        )
    out["ref_events_csv"] = folder / "ref_events.csv"
    world.window(0, 0).events.to_csv(out["ref_events_csv"], index=False)
    return out


# --------------------------------------------------------------------------- config


def test_config_round_trips_and_rejects_unknown_keys() -> None:
    config = DriftConfig(num_threshold=0.2, column_thresholds={"value": 0.3})
    assert DriftConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError):
        DriftConfig(num_treshold=0.2)  # misspelt key
    with pytest.raises(ValueError):
        DriftConfig(cat_threshold=2.0)  # a JS distance is at most 1


def test_committed_yaml_holds_the_defaults() -> None:
    path = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "drift.yaml"
    assert load_config(path) == DriftConfig()


def test_bad_config_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "drift.yaml"
    path.write_text("drift:\n  num_threshold: -1\n")
    with pytest.raises(DataError, match=r"drift\.yaml"):
        load_config(path)
    with pytest.raises(DataError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_config_methods_are_evidently_stattests() -> None:
    from typing import get_args

    from evidently.legacy.calculations.stattests.registry import _registered_stat_tests

    from recsys.monitoring.thresholds import StatTestName

    registered = {t.name for by_type in _registered_stat_tests.values() for t in by_type.values()}
    assert set(get_args(StatTestName)) <= registered


# --------------------------------------------------------------------------- windows and inputs


def test_windows_parse_absolute_relative_and_last() -> None:
    now = pd.Timestamp("2026-01-15T00:00:00Z").timestamp()
    week = parse_window("2026-01-01..2026-01-08", now)
    assert week.end - week.start == 7 * 86400
    assert week.start == pd.Timestamp("2026-01-01T00:00:00Z").timestamp()
    assert parse_window("last-7d", now).start == now - 7 * 86400
    prev = parse_window("now-14d..now-7d", now)
    assert (prev.start, prev.end) == (now - 14 * 86400, now - 7 * 86400)
    assert parse_window("2026-01-01T06:00..now-36h", now).end == now - 36 * 3600


@pytest.mark.parametrize("text", ["yesterday", "2026-01-08..2026-01-01", "last-7x", "a..b"])
def test_bad_windows_are_data_errors(text: str) -> None:
    with pytest.raises(DataError, match="window"):
        parse_window(text, 1.7e9)


def test_decision_records_normalise_tolerantly() -> None:
    records = [
        {
            "decision_id": "a",
            "timestamp": 10.0,
            "user_id": "42",
            "items": ["302", "50"],
            "scores": [0.9, 0.1],
            "fallback": None,
            "timings_ms": {"profile": 0.2, "ranking": 1.1, "total": 2.0},
            "context": {"device": "mobile"},
            "unknown_key": "ignored",
        },
        # the in-process DecisionRecord layout: user, dense item ids, no ranker timed
        {"decision_id": "b", "timestamp": 11.0, "user": 7, "items": [3, 4], "timings_ms": {}},
    ]
    frame = decisions_frame(pd.DataFrame(records), "log")
    assert frame["items"].tolist() == [["302", "50"], ["3", "4"]]
    assert frame["user_id"].astype(object).tolist() == ["42", "7"]
    assert frame["latency_ranking"].iloc[0] == 1.1 and np.isnan(frame["latency_ranking"].iloc[1])
    assert frame["ctx_device"].astype(object).iloc[0] == "mobile"
    assert "unknown_key" not in frame


def test_decisions_from_csv_with_json_strings_or_flat_columns() -> None:
    as_csv = pd.DataFrame(
        {"timestamp": [1.0], "items": ['["a", "b"]'], "timings_ms": ['{"ranking": 2.5}']}
    )
    assert decisions_frame(as_csv, "f.csv")["latency_ranking"].tolist() == [2.5]
    flat = pd.DataFrame({"timestamp": [1.0], "items": [["a"]], "timings_ms.ranking": [3.0]})
    assert decisions_frame(flat, "f.parquet")["latency_ranking"].tolist() == [3.0]


def test_decisions_without_items_name_the_file_and_column() -> None:
    with pytest.raises(DataError, match=r"d\.csv: decisions need column\(s\) \['items'\]"):
        decisions_frame(pd.DataFrame({"timestamp": [1.0]}), "d.csv")


def test_decision_log_skips_a_torn_tail_and_refuses_corruption(tmp_path: Path) -> None:
    good = json.dumps({"timestamp": 1.0, "items": ["a"]})
    path = tmp_path / "d.jsonl"
    path.write_text(good + "\n" + good + '\n{"timestamp": 2.0, "ite')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(read_decision_log(path)) == 2
    assert any("torn" in str(w.message) for w in caught)
    path.write_text(good + "\nnot json\n" + good + "\n")
    with pytest.raises(DataError, match="line 2"):
        read_decision_log(path)


def test_files_are_recognised_by_their_columns(files: dict[str, Path], tmp_path: Path) -> None:
    side = load_files("reference", [files["ref_events"], files["ref_decisions"]])
    assert side.n_events > 1000 and side.n_decisions > 500
    assert load_files("reference", [files["ref_events_csv"]]).n_events == side.n_events
    odd = tmp_path / "odd.csv"
    pd.DataFrame({"user": [1], "when": [2]}).to_csv(odd, index=False)
    with pytest.raises(DataError, match=r"odd\.csv: missing the columns"):
        load_files("current", [odd])
    with pytest.raises(DataError, match="second events file"):
        load_files("current", [files["ref_events"], files["cur_events"]])
    empty = tmp_path / "empty.csv"
    pd.DataFrame({"user_id": [], "item_id": [], "timestamp": []}).to_csv(empty, index=False)
    with pytest.raises(DataError, match=r"empty\.csv: no events"):
        load_files("current", [empty])


def test_log_window_reads_outcomes_past_its_end(log_dir: Path) -> None:
    window = parse_window("2026-01-01..2026-01-04")
    side = load_log_window("reference", log_dir, window, outcome_horizon_s=86400.0, now=2e9)
    assert side.events["timestamp"].max() < window.end
    assert side.outcome_events["timestamp"].max() >= window.end
    assert side.decisions["timestamp"].between(window.start, window.end).all()


def test_empty_or_missing_windows_are_named(log_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"current window 2025-01-01\.\.2025-01-08.*no events"):
        load_log_window("current", log_dir, parse_window("2025-01-01..2025-01-08"))
    with pytest.raises(DataError, match="folder not found"):
        load_log_window("current", tmp_path / "nope", parse_window("last-7d"))
    with pytest.raises(DataError, match="neither events/ nor decisions/"):
        load_log_window("current", tmp_path, parse_window("last-7d"))


# --------------------------------------------------------------------------- generator


def test_generator_is_seeded_and_injects_what_it_says() -> None:
    a, b = synthetic_pair(SMALL, None, seed=3), synthetic_pair(SMALL, None, seed=3)
    pd.testing.assert_frame_equal(a[1].events, b[1].events)
    other = synthetic_pair(SMALL, None, seed=4)[1].events
    assert not a[1].events["item_id"].astype(str).equals(other["item_id"].astype(str))
    slow = synthetic_pair(SMALL, Injection(kind="slow_ranker", strength=1.0), seed=3)[1]
    ratio = slow.decisions["latency_ranking"].median() / a[1].decisions["latency_ranking"].median()
    assert 1.8 < ratio < 2.2
    fresh = synthetic_pair(SMALL, Injection(kind="new_items", strength=0.3), seed=3)[1]
    share = fresh.events["item_id"].astype(str).str.startswith("new").mean()
    assert 0.2 < share < 0.3  # clicks on shown (old) items dilute the injected 30 %


def test_decision_records_round_trip_through_the_log_format() -> None:
    decisions = synthetic_pair(SMALL, None, seed=1)[0].decisions.head(50)
    again = decisions_frame(pd.DataFrame(decision_records(decisions)), "round trip")
    for column in ("items", "latency_ranking", "ctx_device", "fallback", "variant"):
        left = decisions[column].astype(object).where(decisions[column].notna(), None)
        right = again[column].astype(object).where(again[column].notna(), None)
        assert left.tolist() == right.tolist(), column


# --------------------------------------------------------------------------- building blocks


def test_popularity_buckets_count_the_reference_leave_one_out() -> None:
    reference = pd.Series(["a"] * 5 + ["b"] * 2 + ["c"])
    pop = Popularity.of(reference, "events")
    head = pop.head(top=10, n_rows=8, min_count=3)
    assert head == frozenset({"a"})
    # in the reference, the singleton c is what an unseen item looks like
    assert pop.bucket(reference, head, own=True).tolist() == ["a"] * 5 + [TAIL] * 2 + [NEW]
    assert pop.bucket(pd.Series(["a", "c", "z"]), head).tolist() == ["a", TAIL, NEW]
    assert pop.log_count(pd.Series(["a", "z"])).tolist() == [np.log1p(5), 0.0]


def test_rare_categories_are_pooled_by_expected_count() -> None:
    ref = pd.Series(["x"] * 90 + ["y"] * 9 + ["z"] + [None])
    r, c = pool_categories(ref, pd.Series(["x", "w"] * 50), max_categories=50, min_count=5)
    assert set(r) == {"x", "y", OTHER} and set(c) == {"x", OTHER}


def test_fallback_reasons_and_sources_lose_their_details() -> None:
    assert fallback_reason("retrieval failed: timeout after 40 ms") == "retrieval failed"
    assert fallback_reason("only 3 personalised items") == "only N personalised items"
    assert fallback_reason(None) == "none" and fallback_reason(float("nan")) == "none"
    assert source_kind("cold_start:context:age_band") == "cold_start"


def test_latency_creep_is_flagged_on_the_slowed_stage() -> None:
    ref, cur = synthetic_pair(SMALL, Injection(kind="slow_ranker", strength=0.5), seed=2)
    result = compare_latency(ref.decisions, cur.decisions, DriftConfig())
    assert result.moved[0] == "ranking"
    assert result.stages["ranking"].drifted and not result.stages["profile"].drifted
    assert result.stages["ranking"].current["p99"] > p99_limit(
        result.stages["ranking"].reference["p99"], DriftConfig()
    )
    same = compare_latency(ref.decisions, ref.decisions, DriftConfig())
    assert same.moved == [] and not same.over_budget


def test_a_stage_timed_in_one_window_only_is_not_compared() -> None:
    ref, cur = synthetic_pair(SMALL, None, seed=2)
    cur_dec = cur.decisions.drop(columns=["latency_ranking"])
    result = compare_latency(ref.decisions, cur_dec, DriftConfig())
    assert "not compared" in (result.stages["ranking"].reason or "")
    assert "ranking" not in result.moved


def test_total_over_budget_is_flagged_whatever_the_reference() -> None:
    ref, _ = synthetic_pair(SMALL, None, seed=2)
    result = compare_latency(ref.decisions, ref.decisions, DriftConfig(latency_budget_ms=1.0))
    assert result.over_budget and "total>budget" in result.moved


def test_outcomes_are_later_events_within_the_horizon() -> None:
    hour = 3600.0
    decisions = pd.DataFrame(
        {"decision_id": ["d1"], "timestamp": [100.0], "user_id": ["u"], "items": [["a", "b", "c"]]}
    )
    # b and d used inside the horizon; a at the decision time itself, c after the horizon
    events = pd.DataFrame(
        {
            "user_id": ["u", "u", "u", "u", "v"],
            "item_id": ["a", "b", "d", "c", "a"],
            "timestamp": [100.0, 100.0 + hour, 100.0 + 2 * hour, 100.0 + 25 * hour, 200.0],
        }
    )
    rows, counts = outcome_rows(decisions, events, DriftConfig(outcome_horizon_hours=24), 0)
    by_item = rows.set_index("item_id")
    assert by_item["target"].to_dict() == {"a": 0, "b": 1, "c": 0, "d": 1}
    assert by_item.loc["d", "prediction"] < by_item["prediction"].drop("d").min()
    assert counts["outcome_known"] == 1


def test_embedding_check_flags_moved_vectors_only() -> None:
    rng = np.random.default_rng(0)
    base = pd.DataFrame(rng.normal(size=(300, 8)))
    same = pd.DataFrame(rng.normal(size=(300, 8)))
    moved = same + np.r_[1.0, np.zeros(7)]
    config = DriftConfig(max_embedding_rows=300)
    assert embedding_check(base, same, config).status == "ok"
    shifted = embedding_check(base, moved, config)
    assert shifted.status == "drift" and shifted.details["score"] > 0.55


def test_embedding_limit_grows_for_few_users() -> None:
    config = DriftConfig()
    # ROC AUC of unrelated scores on 150 + 150 test users: sd = sqrt(301 / (12 * 150 * 150))
    expected = 0.5 + 2.3263 * np.sqrt(301 / (12 * 150 * 150))
    assert embedding_limit(config, 300, 300) == pytest.approx(expected, abs=1e-3)
    assert embedding_limit(config, 5000, 5000) == config.embedding_threshold
    assert embedding_limit(config.model_copy(update={"embedding_method": "mmd"}), 10, 10) == (
        config.embedding_threshold
    )


def test_few_users_of_one_distribution_are_not_drift() -> None:
    config = DriftConfig()
    for seed in range(3):
        rng = np.random.default_rng(seed)
        a, b = (pd.DataFrame(rng.normal(size=(120, 8))) for _ in range(2))
        result = embedding_check(a, b, config)
        assert result.status == "ok", (seed, result.details)
        assert result.details["limit"] > config.embedding_threshold


# --------------------------------------------------------------------------- the run


def test_no_drift_between_windows_of_one_distribution(tmp_path: Path) -> None:
    ref, cur = sides(seed=5)
    result = run_drift(ref, cur, out=tmp_path)
    assert result.exit_code == 0, result.summary()
    assert result.summary().startswith("OK no drift")
    assert result.checks["embedding"].status == "skipped"
    assert {n for n, c in result.checks.items() if c.status == "ok"} == set(CHECKS) - {"embedding"}
    files = {p.name for p in result.out_dir.iterdir()}
    assert {"index.html", "drift.json", "data.html", "latency.html", "quality.json"} <= files
    saved = json.loads((result.out_dir / "drift.json").read_text())
    assert saved["exit_code"] == 0 and saved["checks"]["data"]["columns"]["value"]["method"] == (
        "wasserstein"
    )
    assert saved["peak_rss_mb"] > 0 and saved["seconds"] > 0


@pytest.mark.parametrize(
    ("kind", "strength"),
    [
        ("popularity", 0.4),
        ("context", 0.4),
        ("rating", 0.4),
        ("new_items", 0.4),
        ("slow_ranker", 1.0),
    ],
)
def test_injected_drift_is_flagged_and_named(kind: str, strength: float) -> None:
    rows = detection_study(2, SMALL, FAST, kinds=[kind], strengths={kind: (strength,)})
    assert rows[0]["detection_rate"] == 1.0 and rows[0]["named_rate"] == 1.0, rows[0]
    assert rows[0]["other_checks_flagged"] == {}


def test_quality_drop_is_flagged_on_ndcg_or_recall() -> None:
    ref, cur = sides(Injection(kind="quality", strength=0.8), seed=1)
    result = run_drift(ref, cur, DriftConfig(checks=("quality",)))
    quality = result.checks["quality"]
    assert quality.status == "drift"
    assert {m.split("@")[0] for m in quality.moved} & set(EXPECTED["quality"]["quality"])
    assert (
        quality.details["metrics"]["ndcg@10"]["current"]
        < (quality.details["metrics"]["ndcg@10"]["reference"])
    )


@pytest.mark.slow
def test_false_alarms_small_seed_version() -> None:
    study = false_alarm_study(3, SMALL, DriftConfig())
    assert study["false_alarm_rate"] == 0.0, study["flagged_seeds"]


def test_sides_with_different_kinds_of_input_are_bad_input() -> None:
    ref, cur = sides(seed=0)
    with pytest.raises(DataError, match=r"current .*no decisions"):
        run_drift(ref, DriftInput("current", "cur", cur.events, None))
    with pytest.raises(DataError, match="empty"):
        from_frames("current", events=cur.events.iloc[:0])
    with pytest.raises(DataError, match=r"current \(cur\): no decisions"):
        run_drift(ref, DriftInput("current", "cur", cur.events, cur.decisions.iloc[:0]))


def test_workspace_keeps_the_history_of_every_panel(tmp_path: Path) -> None:
    from evidently.ui.service.base import SeriesFilter
    from evidently.ui.service.storage.local.base import InMemoryDataStorage
    from evidently.ui.workspace import Workspace

    ws = tmp_path / "ws"
    config = FAST.model_copy(update={"checks": ("data", "latency")})
    for seed in (0, 1):
        run_drift(*sides(seed=seed), config, workspace=ws, run_name=f"run{seed}")
    workspace = Workspace(str(ws))
    (project,) = workspace.list_projects()
    assert len(workspace.list_runs(project.id)) == 4
    dashboard = workspace.get_dashboard(project.id)
    assert len(dashboard.panels) >= 10
    storage = InMemoryDataStorage(str(ws))
    for panel in dashboard.panels:
        (value,) = panel.values
        query = SeriesFilter(
            tags=value.tags, metadata={}, metric=value.metric, metric_labels=value.metric_labels
        )
        series = asyncio.run(storage.get_data_series(project.id, [query], None, None)).series
        assert series and len(series[0].values) == 2, panel.title


@pytest.mark.slow
def test_real_shifts_are_reported_with_what_moved(tmp_path: Path) -> None:
    from recsys.monitoring.validation import ml100k_shift, ml_latest_small_shift

    ref, cur, items = ml100k_shift()
    result = run_drift(ref, cur, items=items)
    assert result.exit_code == 1
    assert {"age", "occupation", "item_popularity"} <= set(result.moved["data"])
    ref, cur, items = ml_latest_small_shift()
    result = run_drift(ref, cur, items=items)
    # half-star ratings arrived in 2003; the late years rate newer films
    assert {"value", "item_year"} <= set(result.moved["data"])


# --------------------------------------------------------------------------- the command line


def drift_cli(*args: str, tmp: Path) -> tuple[int, str, str]:
    result = runner.invoke(app, ["drift", *args, "--out", str(tmp / "out"), "--no-workspace"])
    return result.exit_code, result.stdout, result.stderr


def test_cli_exit_0_without_drift(files: dict[str, Path], tmp_path: Path) -> None:
    code, out, err = drift_cli(
        "-r", str(files["ref_events"]), "-r", str(files["ref_decisions"]),
        "-c", str(files["cur_events"]), "-c", str(files["cur_decisions"]),
        tmp=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("OK no drift") and len(out.strip().splitlines()) == 1


def test_cli_exit_1_names_what_moved(files: dict[str, Path], tmp_path: Path) -> None:
    code, out, err = drift_cli(
        "-r", str(files["ref_events"]), "-c", str(files["shifted_events"]), tmp=tmp_path
    )  # fmt: skip
    assert code == 1, err
    assert out.startswith("DRIFT data[value")
    assert (tmp_path / "out").is_dir()


def test_cli_log_windows_flag_the_slow_ranker(log_dir: Path, tmp_path: Path) -> None:
    code, out, err = drift_cli(
        "--log", str(log_dir), "--reference-window", "2026-01-01..2026-01-08",
        "--current-window", "last-7d", "--now", "2026-01-15T00:00:00Z", tmp=tmp_path,
    )  # fmt: skip
    assert code == 1, err
    assert "latency[ranking" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-r", "{ref_events}", "-c", "{missing}"], "missing.parquet: not found"),
        (["-r", "{ref_events}", "-c", "{bad_columns}"], "bad.csv: missing the columns"),
        (["-r", "{ref_events}", "-c", "{cur_decisions}"], "no events while the other side"),
        (["--log", "{log}", "--reference-window", "2026-01-01..2026-01-08",
          "--current-window", "2030-01-01..2030-01-08"], "2030-01-01..2030-01-08"),
        (["--log", "{log}", "--reference-window", "last week",
          "--current-window", "last-7d"], "window 'last week'"),
        (["--reference-window", "last-7d", "--current-window", "last-7d"], "needs --log"),
        (["-r", "{ref_events}", "-c", "{cur_events}", "--config", "{missing}"], "not found"),
    ],
)  # fmt: skip
def test_cli_exit_2_on_bad_input_names_it(
    args: list[str], message: str, files: dict[str, Path], log_dir: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"user": [1], "ts": [2]}).to_csv(bad, index=False)
    values = {
        "ref_events": files["ref_events"],
        "cur_events": files["cur_events"],
        "cur_decisions": files["cur_decisions"],
        "missing": tmp_path / "missing.parquet",
        "bad_columns": bad,
        "log": log_dir,
    }
    code, out, err = drift_cli(*[a.format(**values) for a in args], tmp=tmp_path)
    assert code == 2
    assert err.startswith("ERROR") and message in err
    assert out == ""


def test_cli_exit_2_on_an_unexpected_failure(files: dict[str, Path], tmp_path: Path) -> None:
    # a file that is not a directory where the report folder must go: an OSError, not drift
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    result = runner.invoke(
        app,
        ["drift", "-r", str(files["ref_events"]), "-c", str(files["cur_events"]),
         "--out", str(blocker / "out"), "--no-workspace"],
    )  # fmt: skip
    assert result.exit_code == 2 and result.stderr.startswith("ERROR")
