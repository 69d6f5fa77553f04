"""``recsys drift``: the scheduled unit.

Resolves the inputs, runs, prints one line and returns the exit code a scheduler acts on
(0 no drift, 1 drift above thresholds, 2 error).

Kept apart from :mod:`recsys.cli` so the command line only declares options.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from recsys.errors import DataError
from recsys.monitoring.inputs import (
    DriftInput,
    load_files,
    load_log_window,
    parse_time,
    parse_window,
)
from recsys.monitoring.run import EXIT_ERROR, run_drift
from recsys.monitoring.thresholds import DriftConfig, load_config

log = logging.getLogger(__name__)


def _side(
    label: str,
    files: Sequence[Path] | None,
    log_dir: Path | None,
    window: str | None,
    now: float | None,
    config: DriftConfig,
) -> DriftInput:
    if files and window:
        raise DataError(f"--{label} and --{label}-window: give one of them")
    if files:
        return load_files(label, list(files))
    if window:
        if log_dir is None:
            raise DataError(f"--{label}-window {window}: needs --log DIR")
        return load_log_window(
            label,
            log_dir,
            parse_window(window, now),
            outcome_horizon_s=config.outcome_horizon_hours * 3600.0,
            now=now,
        )
    raise DataError(f"{label}: give --{label} FILE or --log DIR with --{label}-window")


def load_items(path: Path) -> pd.DataFrame:
    """Item attributes from CSV / Parquet with an ``item_id`` column.

    ``genres`` may be ``A|B`` strings.
    """
    if not path.is_file():
        raise DataError(f"--items {path}: not found")
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:
        raise DataError(f"--items {path}: cannot read ({exc})") from exc
    if "item_id" not in frame.columns:
        raise DataError(f"--items {path}: missing column 'item_id'; found {list(frame.columns)}")
    if "genres" in frame.columns:
        frame["genres"] = [
            tuple(g.split("|")) if isinstance(g, str) else () for g in frame["genres"]
        ]
    return frame.set_index(frame["item_id"].astype(str)).drop(columns=["item_id"])


def drift_main(
    *,
    reference: Sequence[Path] | None,
    current: Sequence[Path] | None,
    log_dir: Path | None,
    reference_window: str | None,
    current_window: str | None,
    out: Path,
    config_path: Path | None,
    retriever: Path | None,
    items: Path | None,
    workspace: Path | None,
    now: str | None,
) -> int:
    """Run ``recsys drift`` and return its exit code (see the module docstring).

    Every failure, including an unexpected one, is exit code 2 with a message on stderr:
    a scheduler must never read a crash as "drift" (1).
    """
    try:
        config = load_config(config_path)
        pinned = None if now is None else parse_time(now, 0.0)
        ref = _side("reference", reference, log_dir, reference_window, pinned, config)
        cur = _side("current", current, log_dir, current_window, pinned, config)
        embedder = None
        if retriever is not None:
            from recsys.monitoring.embeddings import TwoTowerEmbedder

            if not retriever.exists():
                raise DataError(f"--retriever {retriever}: not found")
            embedder = TwoTowerEmbedder.load(
                retriever, max_users=config.max_embedding_rows, seed=config.seed
            )
        item_frame = None if items is None else load_items(items)
        result = run_drift(
            ref,
            cur,
            config,
            out=out,
            workspace=workspace,
            embedder=embedder,
            items=item_frame,
        )
    except DataError as exc:
        print(f"ERROR bad input: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        log.debug("drift run failed", exc_info=True)
        print(f"ERROR {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(result.summary())
    return result.exit_code
