"""One drift run: every check, the files it writes, and the verdict a scheduler acts on.

``run_drift(reference, current, config, out=...) -> DriftResult`` is what the command line,
the notebook and the tests call. With ``out`` set it writes, under ``out/<UTC timestamp>/``:

* ``index.html``: the verdict, what moved, links to each report;
* ``<check>.html`` / ``<check>.json``: the Evidently report and snapshot of each check;
* ``drift.json``: the whole result (verdict, per-column scores and thresholds, exact
  aggregates, inputs, config, wall time, peak memory).

Exit codes: 0 no drift, 1 drift above thresholds, 2 error (raised as
:class:`~recsys.errors.DataError` here; the command line maps it).
"""

from __future__ import annotations

import html
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.errors import DataError
from recsys.monitoring.checks import (
    DISTANCE_METHODS,
    CheckResult,
    embedding_check,
    latency_check,
    skipped,
    table_check,
)
from recsys.monitoring.embeddings import UserEmbedder
from recsys.monitoring.frames import (
    Popularity,
    context_table,
    decision_stats,
    event_stats,
    events_table,
    prediction_table,
    recommended_popularity,
)
from recsys.monitoring.inputs import DriftInput
from recsys.monitoring.latency import compare_latency
from recsys.monitoring.quality import quality_check
from recsys.monitoring.thresholds import CHECKS, DriftConfig

DEFAULT_OUT = Path("experiments/reports/drift")
EXIT_OK, EXIT_DRIFT, EXIT_ERROR = 0, 1, 2


@dataclass
class DriftResult:
    """The outcome of :func:`run_drift`.

    Attributes:
        checks: Check name → result, in :data:`~recsys.monitoring.thresholds.CHECKS` order.
        reference: Description of the reference side.
        current: Description of the current side.
        stats: Exact aggregates (item shares, fallback / variant shares).
        config: The thresholds used.
        created_at: UTC time of the run.
        seconds: Wall time.
        peak_rss_mb: Peak resident memory of the process so far (MB).
        out_dir: Where the reports were written (``None`` if not written).
        workspace: What was added to the Evidently workspace (``None`` if not).
    """

    checks: dict[str, CheckResult]
    reference: dict[str, Any]
    current: dict[str, Any]
    stats: dict[str, Any]
    config: DriftConfig
    created_at: str
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    out_dir: Path | None = None
    workspace: dict[str, Any] | None = field(default=None)

    @property
    def drifted(self) -> bool:
        """Whether any check found drift above its thresholds."""
        return any(c.status == "drift" for c in self.checks.values())

    @property
    def exit_code(self) -> int:
        """0 without drift, 1 with drift."""
        return EXIT_DRIFT if self.drifted else EXIT_OK

    @property
    def moved(self) -> dict[str, list[str]]:
        """Check → what moved, for the checks that drifted."""
        return {n: c.moved for n, c in self.checks.items() if c.status == "drift"}

    def summary(self) -> str:
        """One line: verdict, what moved, what was checked or skipped, where the report is."""
        parts = []
        moved = self.moved
        if moved:
            parts.append("DRIFT " + " ".join(f"{n}[{', '.join(m)}]" for n, m in moved.items()))
        else:
            parts.append("OK no drift")
        ok = [n for n, c in self.checks.items() if c.status == "ok"]
        if ok:
            parts.append("ok: " + ", ".join(ok))
        skip = [n for n, c in self.checks.items() if c.status == "skipped"]
        if skip:
            parts.append("skipped: " + ", ".join(skip))
        if self.out_dir is not None:
            parts.append(f"report {self.out_dir}")
        return " | ".join(parts)

    def columns_frame(self) -> pd.DataFrame:
        """One row per compared column of the table checks.

        Columns: check, column, type, method, score, threshold, drifted and ``ratio``
        (score / threshold for distances, threshold / p for p-values: above 1 is drift).
        """
        rows = []
        for name, check in self.checks.items():
            for column, v in check.details.get("columns", {}).items():
                if v["method"] in DISTANCE_METHODS:
                    ratio = v["score"] / v["threshold"]
                else:
                    ratio = v["threshold"] / max(v["score"], 1e-300)
                rows.append({"check": name, "column": column, **v, "ratio": ratio})
        return pd.DataFrame(
            rows,
            columns=[
                "check", "column", "type", "method", "score", "threshold", "drifted", "ratio",
            ],
        )  # fmt: skip

    def latency_frame(self) -> pd.DataFrame:
        """One row per stage and window with its latency percentiles (ms)."""
        check = self.checks.get("latency")
        rows = []
        for stage, entry in (check.details.get("stages", {}) if check else {}).items():
            for side in ("reference", "current"):
                rows.append({"stage": stage, "window": side, **entry[side]})
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the content of ``drift.json``)."""
        return {
            "status": "drift" if self.drifted else "ok",
            "exit_code": self.exit_code,
            "summary": self.summary(),
            "moved": self.moved,
            "created_at": self.created_at,
            "seconds": round(self.seconds, 3),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "reference": self.reference,
            "current": self.current,
            "checks": {n: c.to_dict() for n, c in self.checks.items()},
            "stats": self.stats,
            "config": self.config.model_dump(mode="json"),
            "workspace": self.workspace,
            "out_dir": None if self.out_dir is None else str(self.out_dir),
        }


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports kB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _both(name: str, reference: Any, current: Any, what: str, ref_src: str, cur_src: str) -> bool:
    """Both sides have ``what`` (True), neither (False); one only, or an empty one, is bad input."""
    has_ref, has_cur = reference is not None, current is not None
    if has_ref != has_cur:
        side, source = ("current", cur_src) if has_ref else ("reference", ref_src)
        raise DataError(
            f"{side} ({source}): has no {what} while the other side has; give both sides "
            f"the same kinds of input ({name} check)"
        )
    for side, source, frame in (("reference", ref_src, reference), ("current", cur_src, current)):
        if frame is not None and len(frame) == 0:
            raise DataError(f"{side} ({source}): no {what}")
    return has_ref


def run_drift(
    reference: DriftInput,
    current: DriftInput,
    config: DriftConfig | None = None,
    *,
    out: str | Path | None = None,
    workspace: str | Path | None = None,
    embedder: UserEmbedder | None = None,
    items: pd.DataFrame | None = None,
    run_name: str | None = None,
) -> DriftResult:
    """Compare ``current`` against ``reference`` with every enabled check.

    Args:
        reference: The reference side (:func:`~recsys.monitoring.inputs.load_files`,
            :func:`~recsys.monitoring.inputs.load_log_window` or
            :func:`~recsys.monitoring.inputs.from_frames`).
        current: The current side.
        config: Thresholds (default :class:`DriftConfig`).
        out: Base folder of the reports; the run writes into ``out/<timestamp>/``. ``None``
            writes nothing.
        workspace: Evidently workspace folder to add the snapshots to (``None``: none).
        embedder: Maps a window's events to user vectors (e.g.
            :class:`~recsys.monitoring.embeddings.TwoTowerEmbedder`); without it the
            embedding check is skipped.
        items: Item attributes by item id (item columns of the data check, diversity).
        run_name: Name of the run (default: its UTC timestamp).

    Returns:
        The :class:`DriftResult`; ``result.exit_code`` is 0 or 1.

    Raises:
        DataError: The two sides do not hold the same kinds of input.
    """
    config = config or DriftConfig()
    started = time.perf_counter()
    now = datetime.now(tz=UTC)
    stamp = run_name or now.strftime("%Y%m%dT%H%M%SZ")
    if items is None:
        items = reference.items if reference.items is not None else current.items
    when = datetime.fromtimestamp(current.window.end, tz=UTC) if current.window is not None else now
    meta = {"run": stamp, "reference": reference.source, "current": current.source}
    enabled = set(config.checks)
    ref_src, cur_src = reference.source, current.source
    has_events = _both("data", reference.events, current.events, "events", ref_src, cur_src)
    has_decisions = _both(
        "prediction", reference.decisions, current.decisions, "decisions", ref_src, cur_src
    )
    checks: dict[str, CheckResult] = {}
    stats: dict[str, Any] = {}

    ref_events, cur_events = reference.events, current.events
    ref_dec, cur_dec = reference.decisions, current.decisions
    popularity: Popularity | None = None
    recommended: Popularity | None = None
    if has_events:
        assert ref_events is not None and cur_events is not None
        popularity = Popularity.of(ref_events["item_id"], "events")
        stats["events"] = event_stats(ref_events, cur_events, config.popularity_top_items)
    if has_decisions:
        assert ref_dec is not None and cur_dec is not None
        recommended = recommended_popularity(ref_dec)
        popularity = popularity or recommended
        stats["decisions"] = decision_stats(ref_dec, cur_dec)

    def want(name: str, needs: bool, why: str) -> bool:
        if name not in enabled:
            checks[name] = skipped(name, "disabled in the config")
            return False
        if not needs:
            checks[name] = skipped(name, why)
            return False
        return True

    if want("data", has_events, "no events"):
        assert popularity is not None and ref_events is not None and cur_events is not None
        table = events_table(ref_events, cur_events, config, popularity, items)
        checks["data"] = table_check(table, config, timestamp=when, metadata=meta)
    if want("context", has_decisions, "no decisions"):
        assert ref_dec is not None and cur_dec is not None
        table = context_table(ref_dec, cur_dec, config)
        checks["context"] = table_check(table, config, timestamp=when, metadata=meta)
    if want("prediction", has_decisions, "no decisions"):
        assert popularity is not None and recommended is not None
        assert ref_dec is not None and cur_dec is not None
        table = prediction_table(ref_dec, cur_dec, config, popularity, recommended)
        checks["prediction"] = table_check(table, config, timestamp=when, metadata=meta)
    if want("embedding", has_events and embedder is not None, _no_embedding(has_events)):
        assert embedder is not None
        assert ref_events is not None and cur_events is not None
        checks["embedding"] = embedding_check(
            embedder(ref_events), embedder(cur_events), config, timestamp=when, metadata=meta
        )
    has_outcomes = has_decisions and reference.outcome_events is not None
    if want("quality", has_outcomes, "needs decisions and events (outcomes) on both sides"):
        if current.outcome_events is None:
            raise DataError(f"current ({cur_src}): has no events to find outcomes in")
        assert ref_dec is not None and cur_dec is not None
        assert reference.outcome_events is not None
        checks["quality"] = quality_check(
            (ref_dec, reference.outcome_events),
            (cur_dec, current.outcome_events),
            config,
            items,
            timestamp=when,
            metadata=meta,
        )
    if want("latency", has_decisions, "no decisions"):
        assert ref_dec is not None and cur_dec is not None
        latency = compare_latency(ref_dec, cur_dec, config)
        checks["latency"] = latency_check(
            ref_dec, cur_dec, latency, config, timestamp=when, metadata=meta
        )

    result = DriftResult(
        checks={name: checks[name] for name in CHECKS if name in checks},
        reference=reference.describe(),
        current=current.describe(),
        stats=stats,
        config=config,
        created_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    if workspace is not None:
        from recsys.monitoring.workspace import add_runs

        result.workspace = add_runs(
            workspace, list(result.checks.values()), config.workspace_project, stamp
        )
    if out is not None:
        result.out_dir = _run_folder(Path(out), stamp)
        write_reports(result)
    result.seconds = time.perf_counter() - started
    result.peak_rss_mb = peak_rss_mb()
    if result.out_dir is not None:
        _write_json(result.out_dir / "drift.json", result.to_dict())
    return result


def _no_embedding(has_events: bool) -> str:
    if not has_events:
        return "no events"
    return "no user embedder (give --retriever DIR, a trained two-tower)"


def _run_folder(base: Path, stamp: str) -> Path:
    folder = base / stamp
    n = 1
    while folder.exists():
        n += 1
        folder = base / f"{stamp}-{n}"
    folder.mkdir(parents=True)
    return folder


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=_json_default, allow_nan=True))


def write_reports(result: DriftResult) -> None:
    """Write each check's Evidently HTML and JSON and the ``index.html`` of the run."""
    assert result.out_dir is not None
    folder = result.out_dir
    for name, check in result.checks.items():
        if check.snapshot is not None:
            check.snapshot.save_html(str(folder / f"{name}.html"))
            check.snapshot.save_json(str(folder / f"{name}.json"))
    (folder / "index.html").write_text(index_html(result))


def index_html(result: DriftResult) -> str:
    """A small self-contained page: verdict, per-check status and what moved, links."""
    rows = []
    for name, check in result.checks.items():
        link = f'<a href="{name}.html">{name}.html</a>' if check.snapshot is not None else "&ndash;"
        moved = ", ".join(check.moved) or "&ndash;"
        reason = html.escape(check.reason or "")
        rows.append(
            f"<tr class='{check.status}'><td>{name}</td><td>{check.status}</td>"
            f"<td>{html.escape(moved) if check.moved else moved}</td><td>{reason}</td>"
            f"<td>{link}</td></tr>"
        )
    verdict = "DRIFT" if result.drifted else "NO DRIFT"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>recsys drift {html.escape(result.created_at)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 10px;text-align:left}}
tr.drift{{background:#fdd}} tr.ok{{background:#dfd}} tr.skipped{{color:#888}}</style></head>
<body><h1>recsys drift: {verdict}</h1>
<p>{html.escape(result.summary())}</p>
<p>reference: {html.escape(json.dumps(result.reference))}<br>
current: {html.escape(json.dumps(result.current))}</p>
<table><tr><th>check</th><th>status</th><th>moved</th><th>note</th><th>report</th></tr>
{"".join(rows)}</table>
<p>Details, scores and thresholds: <a href="drift.json">drift.json</a>.</p>
</body></html>
"""
