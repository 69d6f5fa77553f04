"""RecBole's SASRec and GRU4Rec beside ours, on the same prediction events, in one bench run.

RecBole lives in its own environment (its pins differ from ours); the bench exports the
split's prediction events as RecBole benchmark files (:func:`export_events`), runs
:mod:`recsys.bench.recbole_runner` with that environment's Python, and scores the top lists
it writes with recsys' own evaluator (:func:`recsys.evaluation.sessions.evaluate_events`,
ties at random, the same events): the peers are measured exactly as our models are.

The environment (never committed; see ``docs`` in the bench report)::

    python3 -m venv /tmp/recbole-venv
    /tmp/recbole-venv/bin/pip install "torch==2.13.0"     # the CPU wheel on these machines
    /tmp/recbole-venv/bin/pip install "recbole==1.2.1"
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.evaluation.sessions import PredictionEvents, evaluate_events
from recsys.types import ItemList, Query

log = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("recbole_runner.py")


def sequence_rows(frame: pd.DataFrame, max_len: int) -> pd.DataFrame:
    """Every (prefix → next item) row of each user's time-ordered events in ``frame``."""
    order = np.lexsort(
        (np.arange(len(frame)), frame["timestamp"].to_numpy(), frame["user"].to_numpy())
    )
    users = frame["user"].to_numpy(np.int64)[order]
    items = frame["item"].to_numpy(np.int64)[order]
    rows = []
    bounds = np.flatnonzero(np.diff(users)) + 1
    for seq_users, seq in zip(np.split(users, bounds), np.split(items, bounds), strict=True):
        for t in range(1, len(seq)):
            prefix = seq[max(0, t - max_len) : t]
            rows.append((int(seq_users[0]), " ".join(map(str, prefix)), int(seq[t])))
    return pd.DataFrame(rows, columns=["user_id:token", "item_id_list:token_seq", "item_id:token"])


def event_rows(events: PredictionEvents, max_len: int) -> pd.DataFrame:
    """One row per prediction event, in order (the event index as ``timestamp``)."""
    return pd.DataFrame(
        {
            "user_id:token": [f"e{s}" for s in events.sequences],
            "item_id_list:token_seq": [
                " ".join(map(str, q.history[-max_len:].tolist())) for q in events.queries
            ],
            "item_id:token": events.targets,
            "timestamp:float": np.arange(len(events), dtype=np.float64),
        }
    )


def export_events(
    train: pd.DataFrame, events: PredictionEvents, folder: Path, name: str, max_len: int
) -> Path:
    """Write ``folder/name/name.{train,valid,test}.inter`` (RecBole benchmark files).

    Train rows are every prefix of ``train``'s sequences; test rows the prediction events;
    the valid file repeats a few test rows only because RecBole requires one (no validation
    runs: ``eval_step: 0``).
    """
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    train_rows = sequence_rows(train, max_len)
    train_rows["timestamp:float"] = -1.0
    test_rows = event_rows(events, max_len)
    for part, rows in (("train", train_rows), ("valid", test_rows.head(50)), ("test", test_rows)):
        rows = rows[rows["item_id_list:token_seq"].str.len() > 0]
        rows.to_csv(target / f"{name}.{part}.inter", sep="\t", index=False)
    return target


def run_peer(
    python: str,
    folder: Path,
    name: str,
    model: str,
    epochs: int,
    max_len: int,
    mask_history: bool,
    extra: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Run the RecBole runner; returns (items, scores, event index, meta)."""
    folder = folder.resolve()
    out = folder / f"{name}-{model}.npz"
    cmd = [
        python,
        str(RUNNER),
        "--data-dir",
        str(folder),
        "--name",
        name,
        "--model",
        model,
        "--epochs",
        str(epochs),
        "--max-len",
        str(max_len),
        "--out",
        str(out),
        *extra,
    ]
    if mask_history:
        cmd.append("--mask-history")
    log.warning("running %s", " ".join(cmd))
    # RecBole writes log/ and log_tensorboard/ into its working directory: keep them there
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=folder)
    if done.returncode != 0:
        raise RuntimeError(f"{model} (RecBole) failed:\n{done.stderr[-4000:]}")
    with np.load(out) as lists:
        items, scores, event = lists["items"], lists["scores"], lists["event"]
    meta = json.loads(Path(f"{out}.json").read_text())
    meta["log_tail"] = done.stdout[-2000:]
    return items, scores, event, meta


def evaluate_peer_lists(
    items: np.ndarray,
    scores: np.ndarray,
    event: np.ndarray,
    events: PredictionEvents,
    n_items: int,
    seed: int = 0,
) -> dict[str, float]:
    """Score a peer's top lists on the events with recsys' evaluator (ties at random)."""
    by_event = {int(e): row for row, e in enumerate(event)}
    missing = len(events) - len(by_event)
    index = {id(q): e for e, q in enumerate(events.queries)}

    def serve(queries: Sequence[Query], k: int) -> list[ItemList]:
        out = []
        for q in queries:
            row = by_event.get(index[id(q)])
            if row is None:
                out.append(ItemList.empty())
                continue
            keep = items[row] >= 0
            out.append(ItemList(items[row][keep], scores[row][keep]))
        return out

    metrics = evaluate_events(serve, events, n_items, seed=seed, list_length=items.shape[1])
    metrics["events_missing"] = float(missing)
    return metrics


def recbole_rows(
    python: str,
    train: pd.DataFrame,
    events: PredictionEvents,
    n_items: int,
    folder: Path,
    name: str,
    models: dict[str, int],
    max_len: int,
    mask_history: bool,
    seed: int = 0,
    reuse: bool = False,
) -> dict[str, dict[str, Any]]:
    """Export, run each RecBole model (name → epochs), evaluate: one row per model.

    With ``reuse``, lists an earlier run of the runner left in ``folder`` for the same model
    and epochs are scored instead of training again (the row says so: ``reused_lists``).
    """
    export_events(train, events, folder, name, max_len)
    rows: dict[str, dict[str, Any]] = {}
    for model, epochs in models.items():
        try:
            found = _reusable(folder, name, model, epochs) if reuse else None
            items, scores, event, meta = found or run_peer(
                python, folder, name, model, epochs, max_len, mask_history
            )
        except RuntimeError as exc:
            log.error("%s", exc)
            rows[f"recbole_{model.lower()}"] = {"error": str(exc)[-1000:]}
            continue
        metrics = evaluate_peer_lists(items, scores, event, events, n_items, seed)
        metrics["seconds_per_epoch"] = meta["seconds_per_epoch"]
        metrics["train_seconds"] = float(sum(meta["epoch_seconds"]))
        metrics["epochs"] = float(meta["epochs"])
        metrics["recbole_version"] = meta["recbole"]
        metrics["list_length"] = float(items.shape[1])
        metrics["reused_lists"] = float(found is not None)
        rows[f"recbole_{model.lower()}"] = metrics
    return rows


def _reusable(
    folder: Path, name: str, model: str, epochs: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]] | None:
    """The lists and meta an earlier runner call wrote for this model and epochs, if any."""
    out = folder.resolve() / f"{name}-{model}.npz"
    meta_path = Path(f"{out}.json")
    if not out.is_file() or not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if int(meta.get("epochs", -1)) != epochs:
        return None
    with np.load(out) as lists:
        return lists["items"], lists["scores"], lists["event"], meta
