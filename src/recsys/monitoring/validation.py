"""``recsys bench drift``: is drift flagged when it is there, and only then? Measured.

* **Detection**: for each drift kind of :mod:`recsys.monitoring.synthetic` and each strength,
  ``seeds`` independent worlds; a trial *detects* when the kind's check is flagged and *names*
  it when that check's moved list holds one of the kind's columns (e.g. ``value`` for a rating
  shift). Collateral: how often another check was flagged in the same run.
* **False alarms**: ``seeds`` pairs of windows of one distribution, every check enabled; the
  share of runs with any flag (the exit code a scheduler would have acted on), per check.
* **Embedding drift**: two-tower user vectors of two halves of :func:`recsys.data.generate`
  data, with the generator's taste shift at known strengths and without it.
* **Real shifts**: ml-latest-small 1996–1999 against 2015–2018; ML-100K's first 30 days
  against its last 30 days (users' age / gender / occupation as context, item year as an
  item column, and two-tower user vectors).
* **Scale**: one full ``recsys drift`` process (files in, HTML/JSON/workspace out) on N
  synthetic events; wall time and the process's peak RSS.

Detection trials run the ``data``, ``context``, ``prediction`` and ``latency`` checks (plus
``quality`` for the quality kind): the quality join costs seconds per run and no other kind
moves it; the false-alarm trials run every check.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.monitoring.checks import embedding_check
from recsys.monitoring.inputs import DriftInput, from_frames
from recsys.monitoring.run import DriftResult, run_drift
from recsys.monitoring.synthetic import (
    EXPECTED,
    Injection,
    SyntheticLogConfig,
    SyntheticWorld,
    decision_records,
    synthetic_pair,
    write_log,
)
from recsys.monitoring.thresholds import DriftConfig

log = logging.getLogger(__name__)

SHARES = (0.05, 0.1, 0.2, 0.4)
STRENGTHS: dict[str, tuple[float, ...]] = {
    "popularity": SHARES,
    "context": SHARES,
    "rating": SHARES,
    "new_items": SHARES,
    "fallback": SHARES,
    "variant": SHARES,
    "slow_ranker": (0.1, 0.25, 0.5, 1.0),
    "score": (0.1, 0.25, 0.5, 1.0),
    "quality": (0.1, 0.25, 0.5),
}
CHEAP_CHECKS = ("data", "context", "prediction", "latency")
EMBEDDING_STRENGTHS = (0.25, 0.5, 1.0)
STUDIES = ("false_alarms", "detection", "embedding", "real", "scale")


# --------------------------------------------------------------------------- synthetic trials


def pair_inputs(
    log_config: SyntheticLogConfig, injection: Injection | None, seed: int
) -> tuple[DriftInput, DriftInput]:
    """Reference and current :class:`DriftInput` of one synthetic trial."""
    ref, cur = synthetic_pair(log_config, injection, seed)
    return (
        DriftInput("reference", f"synthetic seed {seed} window 0", ref.events, ref.decisions),
        DriftInput("current", f"synthetic seed {seed} window 1", cur.events, cur.decisions),
    )


def _named(kind: str, result: DriftResult) -> tuple[bool, bool, list[str]]:
    """(detected, named, other checks flagged) of one trial of ``kind``."""
    expected = EXPECTED[kind]
    detected = any(result.checks[c].status == "drift" for c in expected if c in result.checks)
    named = any(
        m.split("@")[0] in names
        for check, names in expected.items()
        if check in result.checks
        for m in result.checks[check].moved
    )
    others = [n for n in result.moved if n not in expected]
    return detected, named, others


def trial(
    kind: str | None,
    strength: float,
    seed: int,
    log_config: SyntheticLogConfig,
    config: DriftConfig,
) -> dict[str, Any]:
    """One synthetic run; ``kind=None`` is a no-drift pair."""
    injection = None if kind is None else Injection(kind=kind, strength=strength)  # type: ignore[arg-type]
    ref, cur = pair_inputs(log_config, injection, seed)
    result = run_drift(ref, cur, config.model_copy(update={"seed": seed}))
    row: dict[str, Any] = {
        "kind": kind or "none",
        "strength": strength,
        "seed": seed,
        "flagged": result.drifted,
        "moved": result.moved,
        "seconds": result.seconds,
    }
    if kind is not None:
        row["detected"], row["named"], row["other_checks"] = _named(kind, result)
    else:
        row["checks_flagged"] = sorted(result.moved)
    return row


def detection_study(
    seeds: int,
    log_config: SyntheticLogConfig,
    config: DriftConfig,
    kinds: Sequence[str] | None = None,
    strengths: dict[str, tuple[float, ...]] | None = None,
) -> list[dict[str, Any]]:
    """Detection and naming rates per kind and strength over ``seeds`` seeds."""
    strengths = strengths or STRENGTHS
    rows = []
    for kind in kinds or list(strengths):
        checks = (*CHEAP_CHECKS, "quality") if kind == "quality" else CHEAP_CHECKS
        cfg = config.model_copy(update={"checks": checks})
        for strength in strengths[kind]:
            trials = [trial(kind, strength, s, log_config, cfg) for s in range(seeds)]
            collateral: dict[str, int] = {}
            for t in trials:
                for name in t["other_checks"]:
                    collateral[name] = collateral.get(name, 0) + 1
            rows.append(
                {
                    "kind": kind,
                    "strength": strength,
                    "seeds": seeds,
                    "detection_rate": float(np.mean([t["detected"] for t in trials])),
                    "named_rate": float(np.mean([t["named"] for t in trials])),
                    "other_checks_flagged": {k: v / seeds for k, v in sorted(collateral.items())},
                    "seconds_per_run": float(np.mean([t["seconds"] for t in trials])),
                }
            )
            log.info("drift bench %s %.2f: %s", kind, strength, rows[-1])
    return rows


def false_alarm_study(
    seeds: int, log_config: SyntheticLogConfig, config: DriftConfig
) -> dict[str, Any]:
    """Share of no-drift pairs flagged, overall and per check (every check enabled)."""
    trials = [trial(None, 0.0, s, log_config, config) for s in range(seeds)]
    per_check: dict[str, float] = {}
    for name in config.checks:
        per_check[name] = float(np.mean([name in t["checks_flagged"] for t in trials]))
    return {
        "seeds": seeds,
        "false_alarm_rate": float(np.mean([t["flagged"] for t in trials])),
        "per_check": per_check,
        "flagged_seeds": [{"seed": t["seed"], "moved": t["moved"]} for t in trials if t["flagged"]],
        "seconds_per_run": float(np.mean([t["seconds"] for t in trials])),
    }


# --------------------------------------------------------------------------- embeddings


def _tiny_two_tower(split: Any, seed: int, epochs: int = 3) -> Any:
    from recsys.retrieval.two_tower import TwoTowerConfig, TwoTowerRetriever

    config = TwoTowerConfig(
        embedding_size=16,
        table_dim=16,
        hidden_size=32,
        epochs=epochs,
        batch_size=256,
        progress=False,
        patience=epochs,
        seed=seed,
    )
    return TwoTowerRetriever(config).fit(split)


def embedding_trial(strength: float | None, seed: int, config: DriftConfig) -> dict[str, Any]:
    """Two-tower user vectors of the first vs second half of a synthetic dataset.

    ``strength=None``: no drift (``drift_at`` unset); else the generator's taste and
    popularity shift at mid-span with ``drift_strength=strength``. The tower is trained on the
    first half only, as a deployed model would have been.
    """
    from recsys.data import Dataset, SyntheticConfig, generate, random_split
    from recsys.monitoring.embeddings import TwoTowerEmbedder

    data = generate(
        SyntheticConfig(
            n_users=300,
            n_items=200,
            seed=seed,
            drift_at=None if strength is None else 0.5,
            drift_strength=0.0 if strength is None else strength,
            sessions_per_user=(4, 8),
        )
    )
    frame = data.interactions.drop(columns=["user", "item"])
    middle = frame["timestamp"].min() + (frame["timestamp"].max() - frame["timestamp"].min()) / 2
    first, second = frame[frame["timestamp"] < middle], frame[frame["timestamp"] >= middle]
    train = Dataset(name="first-half", interactions=first, items=data.items, users=data.users)
    model = _tiny_two_tower(random_split(train, seed=seed), seed)
    embed = TwoTowerEmbedder(model, max_users=config.max_embedding_rows, seed=seed)
    result = embedding_check(embed(first), embed(second), config)
    return {
        "strength": strength,
        "seed": seed,
        "score": result.details["score"],
        "flagged": result.status == "drift",
        "seconds": result.seconds,
    }


def embedding_study(
    seeds: int, config: DriftConfig, strengths: Sequence[float] = EMBEDDING_STRENGTHS
) -> list[dict[str, Any]]:
    """Flag rate of the embedding check without drift and per taste-shift strength."""
    cfg = config.model_copy(update={"max_embedding_rows": min(config.max_embedding_rows, 300)})
    rows = []
    for strength in (None, *strengths):
        trials = [embedding_trial(strength, s, cfg) for s in range(seeds)]
        rows.append(
            {
                "strength": strength,
                "seeds": seeds,
                "flag_rate": float(np.mean([t["flagged"] for t in trials])),
                "mean_score": float(np.mean([t["score"] for t in trials])),
            }
        )
    return rows


# --------------------------------------------------------------------------- real shifts


def _events_of(data: Any, keep: np.ndarray, context: pd.DataFrame | None = None) -> pd.DataFrame:
    frame = data.interactions[keep].drop(columns=["user", "item"])
    if context is not None:
        frame = frame.join(context, on="user_id")
    return frame.reset_index(drop=True)


def ml_latest_small_shift(data: Any = None) -> tuple[DriftInput, DriftInput, pd.DataFrame]:
    """ml-latest-small ratings of 1996–1999 (reference) against 2015–2018 (current)."""
    from recsys.data import load_ml_latest_small

    data = data or load_ml_latest_small()
    year = pd.to_datetime(data.interactions["timestamp"], unit="s", utc=True).dt.year.to_numpy()
    ref = from_frames(
        "reference",
        _events_of(data, (year >= 1996) & (year <= 1999)),
        source="ml-latest-small 1996-1999",
    )
    cur = from_frames(
        "current",
        _events_of(data, (year >= 2015) & (year <= 2018)),
        source="ml-latest-small 2015-2018",
    )
    return ref, cur, _ml_latest_small_items(data)


def _ml_latest_small_items(data: Any) -> pd.DataFrame:
    """Item year and genres of ml-latest-small."""
    return data.items[["year", "genres"]].copy()


def ml100k_shift(
    data: Any = None, days: float = 30.0
) -> tuple[DriftInput, DriftInput, pd.DataFrame]:
    """ML-100K's first ``days`` against its last ``days``; user attributes as context."""
    from recsys.data import load_ml100k

    data = data or load_ml100k()
    ts = data.interactions["timestamp"].to_numpy()
    span = days * 86400.0
    context = data.users[["age", "gender", "occupation"]]
    first = ts < ts.min() + span
    last = ts >= ts.max() - span
    ref = from_frames(
        "reference", _events_of(data, first, context), source=f"ml-100k first {days:g} days"
    )
    cur = from_frames(
        "current", _events_of(data, last, context), source=f"ml-100k last {days:g} days"
    )
    return ref, cur, data.items[["year", "genres"]]


def real_shifts(out: Path, config: DriftConfig, embedding: bool = True) -> dict[str, Any]:
    """Run both real shifts; reports under ``out/real/<name>/``."""
    results: dict[str, Any] = {}
    cases = {"ml-latest-small": ml_latest_small_shift, "ml-100k": ml100k_shift}
    for name, make in cases.items():
        ref, cur, items = make()
        embedder = None
        train_seconds = None
        if embedding and name == "ml-100k":
            embedder, train_seconds = _ml100k_embedder(config)
        started = time.perf_counter()
        result = run_drift(
            ref,
            cur,
            config,
            out=out / "real" / name,
            embedder=embedder,
            items=items,
            run_name="run",
        )
        results[name] = {
            "summary": result.summary(),
            "exit_code": result.exit_code,
            "moved": result.moved,
            "reference": result.reference,
            "current": result.current,
            "columns": {
                check: c.details.get("columns", {})
                for check, c in result.checks.items()
                if "columns" in c.details
            },
            "embedding": result.checks["embedding"].to_dict()
            if "embedding" in result.checks
            else None,
            "stats": result.stats,
            "seconds": time.perf_counter() - started,
            "two_tower_train_seconds": train_seconds,
            "report": str(result.out_dir),
        }
    return results


def _ml100k_embedder(config: DriftConfig) -> tuple[Any, float]:
    """A small two-tower trained on all of ML-100K (random split), user vectors per window."""
    from recsys.data import load_ml100k, random_split
    from recsys.monitoring.embeddings import TwoTowerEmbedder
    from recsys.retrieval.two_tower import TwoTowerConfig, TwoTowerRetriever

    started = time.perf_counter()
    split = random_split(load_ml100k(), seed=2020)
    model = TwoTowerRetriever(
        TwoTowerConfig(epochs=5, patience=5, progress=False, seed=config.seed)
    ).fit(split)
    seconds = time.perf_counter() - started
    return TwoTowerEmbedder(model, max_users=config.max_embedding_rows, seed=config.seed), seconds


# --------------------------------------------------------------------------- scale


def scale_config(n_events: int, seed: int = 0) -> SyntheticLogConfig:
    """World shape of a scale run: users and items grow with the events."""
    return SyntheticLogConfig(
        n_events=n_events,
        n_users=max(200, n_events // 20),
        n_items=max(100, min(n_events // 100, 20_000)),
        seed=seed,
    )


def write_pair_files(
    folder: Path, n_events: int, seed: int = 0, route: str = "files"
) -> tuple[list[str], pd.DataFrame]:
    """Write a reference and a current window of one synthetic world for ``recsys drift``.

    Args:
        folder: Where to write.
        n_events: Background events per window.
        seed: World and draw seed.
        route: ``files`` (Parquet events + JSON-lines decisions per side) or ``log`` (one
            ``--log`` folder with both windows).

    Returns:
        The ``recsys drift`` input arguments, and the reference events (to train a tower on).
    """
    world = SyntheticWorld(scale_config(n_events, seed))
    args: list[str] = []
    reference_events = pd.DataFrame()
    for index, label in enumerate(("reference", "current")):
        window = world.window(index, seed)
        if index == 0:
            reference_events = window.events[["user_id", "item_id", "timestamp"]]
        if route == "log":
            write_log(folder / "log", window)
            start = pd.Timestamp(window.start, unit="s", tz="UTC").isoformat()
            end = pd.Timestamp(window.end, unit="s", tz="UTC").isoformat()
            args += [f"--{label}-window", f"{start}..{end}"]
        else:
            events = folder / f"{label}_events.parquet"
            decisions = folder / f"{label}_decisions.jsonl"
            window.events.to_parquet(events, index=False)
            with decisions.open("w") as handle:
                for record in decision_records(window.decisions):
                    handle.write(json.dumps(record, separators=(",", ":")) + "\n")
            args += [f"--{label}", str(events), f"--{label}", str(decisions)]
        del window
    if route == "log":
        args += ["--log", str(folder / "log")]
    return args, reference_events


def scale_run(
    n_events: int, embedding: bool = True, seed: int = 0, route: str = "files"
) -> dict[str, Any]:
    """One full ``recsys drift`` process on ``n_events`` synthetic events per window.

    The process reads its inputs, runs every check (embedding drift with a two-tower trained
    beforehand on the reference window), writes HTML/JSON and adds to a workspace; its wall
    time is measured from outside and its peak RSS by itself (``drift.json``).
    """
    from recsys.monitoring.embeddings import fit_two_tower_embedder

    with tempfile.TemporaryDirectory(prefix="drift-scale-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        inputs, reference_events = write_pair_files(folder, n_events, seed, route)
        prepare = time.perf_counter() - started
        args = [sys.executable, "-m", "recsys.cli", "drift", *inputs]
        args += ["--out", str(folder / "out"), "--workspace", str(folder / "ws")]
        train_seconds = None
        if embedding:
            started = time.perf_counter()
            embedder = fit_two_tower_embedder(reference_events, epochs=2, seed=seed)
            embedder.retriever.save(folder / "two_tower")
            train_seconds = time.perf_counter() - started
            args += ["--retriever", str(folder / "two_tower")]
            del embedder
        del reference_events
        # wall time depends on what else the machine runs: record the load and the child's
        # CPU seconds too
        load_before = os.getloadavg()[0]
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run(args, capture_output=True, text=True, env=os.environ.copy())
        wall = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = sum(getattr(cpu_after, f) - getattr(cpu_before, f) for f in ("ru_utime", "ru_stime"))
        if proc.returncode == 2:
            raise RuntimeError(f"scale run failed: {proc.stderr[-2000:]}")
        report = json.loads(next((folder / "out").glob("*/drift.json")).read_text())
        cfg = scale_config(n_events, seed)
        return {
            "route": route,
            "events_per_window": {
                "reference": report["reference"]["events"],
                "current": report["current"]["events"],
            },
            "decisions_per_window": {
                "reference": report["reference"]["decisions"],
                "current": report["current"]["decisions"],
            },
            "background_events": n_events,
            "users": cfg.n_users,
            "items": cfg.n_items,
            "exit_code": proc.returncode,
            "summary": proc.stdout.strip(),
            "process_wall_seconds": wall,
            "process_cpu_seconds": cpu,
            "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
            "run_seconds": report["seconds"],
            "peak_rss_mb": report["peak_rss_mb"],
            "check_seconds": {n: c["seconds"] for n, c in report["checks"].items()},
            "input_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
            "prepare_seconds": prepare,
            "two_tower_train_seconds": train_seconds,
        }


# --------------------------------------------------------------------------- the bench


def run_drift_bench(
    out: str | Path,
    seeds: int = 20,
    n_events: int = 20_000,
    real: bool = True,
    scales: Sequence[int] = (),
    kinds: Sequence[str] | None = None,
    embedding_seeds: int | None = None,
    false_alarm_seeds: int | None = None,
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run every study and write ``drift.json`` and ``drift.md`` under ``out``.

    Args:
        out: Output folder.
        seeds: Seeds per drift kind and strength (and for the embedding study by default).
        n_events: Background events per synthetic window.
        real: Also the real shifts (ML-100K, ml-latest-small).
        scales: Event counts of one-process scale runs (files and log routes each).
        kinds: Drift kinds to study (default: all).
        embedding_seeds: Seeds of the embedding study (default ``seeds``).
        false_alarm_seeds: No-drift pairs (default ``seeds``).
        only: Run only these studies (``false_alarms``, ``detection``, ``embedding``,
            ``real``, ``scale``); default all.
    """
    studies = set(only or STUDIES)
    unknown = studies - set(STUDIES)
    if unknown:
        raise ValueError(f"only: unknown studies {sorted(unknown)}; choose from {STUDIES}")
    from recsys.evaluation.bench import package_versions

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = DriftConfig()
    log_config = SyntheticLogConfig(n_events=n_events)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "seeds": seeds,
        "synthetic": log_config.model_dump(mode="json"),
        "config": config.model_dump(mode="json"),
        "versions": package_versions(),
    }
    if "false_alarms" in studies:
        report["false_alarms"] = false_alarm_study(false_alarm_seeds or seeds, log_config, config)
    if "detection" in studies:
        report["detection"] = detection_study(seeds, log_config, config, kinds=kinds)
    if "embedding" in studies:
        report["embedding"] = embedding_study(embedding_seeds or seeds, config)
    if real and "real" in studies:
        report["real_shifts"] = real_shifts(out, config)
    if "scale" in studies:
        report["scale"] = [scale_run(n, route=route) for n in scales for route in ("files", "log")]
    report["seconds"] = time.perf_counter() - started
    (out / "drift.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "drift.md").write_text(drift_table(report) + "\n")
    return report


def drift_table(report: dict[str, Any]) -> str:
    """Markdown tables of a bench report."""
    lines: list[str] = []
    if report.get("detection"):
        lines += ["## Detection (rate over seeds)", ""]
        lines += ["| kind | strength | detected | named | other checks flagged | s/run |"]
        lines += ["|---|---:|---:|---:|---|---:|"]
    for row in report.get("detection", []):
        other = ", ".join(f"{k} {v:.2f}" for k, v in row["other_checks_flagged"].items()) or "–"
        lines.append(
            f"| {row['kind']} | {row['strength']:g} | {row['detection_rate']:.2f} | "
            f"{row['named_rate']:.2f} | {other} | {row['seconds_per_run']:.2f} |"
        )
    fa = report.get("false_alarms")
    if fa:
        per = ", ".join(f"{k} {v:.2f}" for k, v in fa["per_check"].items())
        lines += [
            "",
            f"## False alarms: {fa['false_alarm_rate']:.2f} of {fa['seeds']} no-drift pairs "
            f"flagged ({per})",
        ]
    emb = report.get("embedding")
    if emb:
        lines += ["", "## Embedding drift (two-tower user vectors)", ""]
        lines += ["| taste shift | flag rate | mean score | seeds |", "|---|---:|---:|---:|"]
        for row in emb:
            strength = "none" if row["strength"] is None else f"{row['strength']:g}"
            lines.append(
                f"| {strength} | {row['flag_rate']:.2f} | {row['mean_score']:.3f} "
                f"| {row['seeds']} |"
            )
    for name, res in (report.get("real_shifts") or {}).items():
        lines += ["", f"## Real shift: {name}", "", f"`{res['summary']}`", ""]
        for check, columns in res["columns"].items():
            cells = ", ".join(
                f"{c} {v['score']:.3f}{'*' if v['drifted'] else ''}" for c, v in columns.items()
            )
            lines.append(f"- {check}: {cells}")
    scale = report.get("scale") or []
    if scale:
        lines += ["", "## Scale (one `recsys drift` process, every check)", ""]
        lines += [
            "| input | events/window | decisions/window | process wall s | process CPU s "
            "| run_drift s | peak RSS MB | load avg |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in scale:
            lines.append(
                f"| {row['route']} | {row['events_per_window']['current']:,} | "
                f"{row['decisions_per_window']['current']:,} | {row['process_wall_seconds']:.1f} "
                f"| {row['process_cpu_seconds']:.1f} | {row['run_seconds']:.1f} "
                f"| {row['peak_rss_mb']:.0f} | {row['load_average_1min']['before']:.1f} |"
            )
    return "\n".join(lines)
