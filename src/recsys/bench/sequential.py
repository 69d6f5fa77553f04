"""``recsys bench sessions`` and ``recsys bench next-event``: sequential protocols, served.

Every registered model (:mod:`recsys.bench.registry`) is trained on the split and served by
the :class:`~recsys.serving.Engine` (decision stage off); each prediction event's query goes
through :meth:`Engine.serve`, and the lists are scored by
:func:`recsys.evaluation.sessions.evaluate_events` (random tie-breaking, seeded).

* **sessions** (the YOOCHOOSE sample; :func:`recsys.data.yoochoose.session_split`): train on
  ``train_full``, every prefix of a ``test`` session predicts its next click; the engine keeps
  the prefix's items (``EngineConfig(exclude_history=False)``). ``--stage valid`` is the
  tuning run (``train_tr`` → ``train_valid``).
* **next-event** (MovieLens; leave-last-out or per-user temporal): every test event of a user
  predicted from all that user's earlier events; the history's items are masked, as the
  MovieLens protocols do.

Single-stage retrievers are asked for the whole catalogue (so ties with the target are
counted honestly); a two-stage model ranks its retriever's candidates and the engine fills the
rest of the list from its fallback, below them. External peers (RecBole's SASRec and GRU4Rec,
run in their own environment by :mod:`recsys.bench.recbole_peers`) are added from their
JSON when given. Neural rows report seconds per epoch and the user tower's request-time cost
at batch 1 and 100.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.bench.quality import package_versions
from recsys.bench.registry import load_registry, training_order
from recsys.data.splits import Split
from recsys.evaluation.sessions import (
    PredictionEvents,
    evaluate_events,
    next_event_events,
    session_events,
)

log = logging.getLogger(__name__)

SESSION_DATASET = "yoochoose-sample"
SESSION_MODELS: tuple[str, ...] = (
    "popularity",
    "itemknn",
    "ease",
    "sknn",
    "vsknn",
    "two_tower",
    "two_tower_gru",
    "two_tower_seq",
    "two_tower_seq+ranker",
)
NEXT_EVENT_MODELS: tuple[str, ...] = (
    "popularity",
    "itemknn",
    "ease",
    "sknn",
    "vsknn",
    "two_tower",
    "two_tower_gru",
    "two_tower_seq",
)


def sequential_engine(split: Split, model: Any, keep_history: bool) -> Any:
    """The engine a sequential bench evaluates: full-catalogue lists, decision stage off."""
    from recsys.serving.build import build_engine
    from recsys.serving.engine import EngineConfig

    two_stage = callable(getattr(model, "stages", None))
    config = EngineConfig(
        exclude_history=not keep_history,
        candidates=None if two_stage else split.dataset.n_items,
        max_k=max(100, split.dataset.n_items),
    )
    return build_engine(split, retriever=model, decisions=False, config=config)


def request_cost(model: Any, events: PredictionEvents, repeats: int = 200) -> dict[str, Any]:
    """Milliseconds of the model's request path at 1 and 100 queries per call (p50 / p99).

    Times ``retrieve(queries, 100, exclude_seen=False)`` — the user tower (or the kNN) plus
    the index search, what the engine's retrieval stage runs — on real event queries.
    """
    out: dict[str, Any] = {}
    queries = events.queries
    if not queries:
        return out
    for batch in (1, 100):
        reps = repeats if batch == 1 else max(10, repeats // 10)
        samples = []
        for r in range(reps + 5):
            start = (r * batch) % max(1, len(queries) - batch)
            chunk = queries[start : start + batch]
            t0 = time.perf_counter()
            model.retrieve(chunk, 100, exclude_seen=False)
            if r >= 5:  # warm-up calls are not timed
                samples.append((time.perf_counter() - t0) * 1000.0)
        ms = np.asarray(samples)
        out[f"batch_{batch}"] = {
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "p50_ms_per_query": float(np.percentile(ms, 50) / batch),
            "calls": len(samples),
        }
    return out


def evaluate_models(
    split: Split,
    dataset_key: str,
    events: PredictionEvents,
    models: Sequence[str],
    keep_history: bool,
    seed: int = 0,
    cost_models: Sequence[str] = ("two_tower", "two_tower_gru", "two_tower_seq", "vsknn"),
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Train, serve and evaluate ``models``; returns (metrics per model, request costs)."""
    registry = load_registry()
    unknown = [n for n in models if n not in registry]
    if unknown:
        raise ValueError(f"models: unknown {unknown}; available {sorted(registry)}")
    trained: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    results: dict[str, dict[str, float]] = {}
    costs: dict[str, Any] = {}
    n_items = split.dataset.n_items
    for name in training_order(list(models), registry):
        model = registry[name].create(dataset_key, registry, trained)
        start = time.perf_counter()
        model.fit(split)
        seconds[name] = time.perf_counter() - start
        trained[name] = model
        if name not in models:
            continue
        engine = sequential_engine(split, model, keep_history)
        start = time.perf_counter()
        metrics = evaluate_events(engine.serve, events, n_items, seed=seed)
        metrics["eval_seconds"] = time.perf_counter() - start
        metrics["train_seconds"] = seconds[name]
        for slot, other in registry[name].uses.items():
            metrics[f"{slot}_train_seconds"] = seconds[other]
        extra = getattr(model, "bench_info", None)
        if callable(extra):
            metrics.update(extra())
        results[name] = metrics
        if name in cost_models:
            costs[name] = request_cost(model, events)
        log.warning(
            "%s: hr@20 %.4f mrr@20 %.4f ndcg@10 %.4f (%.0fs train)",
            name,
            metrics["hr@20"],
            metrics["mrr@20"],
            metrics["ndcg@10"],
            seconds[name],
        )
    return results, costs


def run_sessions(
    out_dir: Path,
    stage: str = "test",
    models: Sequence[str] | None = None,
    seed: int = 0,
    max_events: int | None = None,
    peers: PeerSettings | None = None,
) -> dict[str, Any]:
    """The session protocol on the YOOCHOOSE sample; writes ``sessions.json`` / ``.md``.

    Args:
        out_dir: Output folder (created).
        stage: ``test`` (train_full → test) or ``valid`` (train_tr → train_valid, tuning).
        models: Registered model names (default :data:`SESSION_MODELS`).
        seed: Seed of the tie-breaking draws.
        max_events: Evaluate only the first N events (a quick run; not for the table).
        peers: RecBole models to run beside ours on the same events (their own environment).
    """
    from recsys.data.yoochoose import session_split

    split = session_split(stage)
    events = session_events(split)
    if max_events:
        events = events.head(max_events)
    results, costs = evaluate_models(
        split, SESSION_DATASET, events, list(models or SESSION_MODELS), keep_history=True, seed=seed
    )
    results.update(_peer_rows(peers, split, events, f"yc-{stage}", keep_history=True, seed=seed))
    report = _report(
        "sessions",
        SESSION_DATASET,
        f"sessions/{stage}",
        split,
        events,
        results,
        costs,
        seed,
        peers,
        notes="train on train_full (stage test) or train_tr (stage valid); every prefix of an "
        "evaluated session predicts its next click; all training items ranked; prefix items "
        "NOT masked; ties broken at random (seeded)",
    )
    return _write(report, out_dir, "sessions")


def run_next_event(
    dataset: str,
    protocol: str,
    out_dir: Path,
    models: Sequence[str] | None = None,
    seed: int = 0,
    split_seed: int = 2020,
    peers: PeerSettings | None = None,
) -> dict[str, Any]:
    """Next-event protocol on a MovieLens dataset; writes ``next_event.json`` / ``.md``.

    Args:
        dataset: ``ml-100k``, ``ml-latest-small`` or ``synthetic``.
        protocol: ``leave_last_out`` or ``temporal``.
        out_dir: Output folder (created).
        models: Registered model names (default :data:`NEXT_EVENT_MODELS`).
        seed: Seed of the tie-breaking draws.
        split_seed: Split seed (unused by these deterministic splits; recorded).
        peers: RecBole models to run beside ours on the same events.
    """
    from recsys.data import load_dataset, make_split

    if protocol not in ("leave_last_out", "temporal"):
        raise ValueError(f"protocol: use leave_last_out or temporal, not {protocol!r}")
    split = make_split(load_dataset(dataset), protocol, seed=split_seed)
    events = next_event_events(split, "test")
    results, costs = evaluate_models(
        split, dataset, events, list(models or NEXT_EVENT_MODELS), keep_history=False, seed=seed
    )
    # RecBole trains on the prefixes of train + valid sequences (it has no validation run)
    results.update(_peer_rows(peers, split, events, f"{dataset}-{protocol}", False, seed))
    report = _report(
        "next-event",
        dataset,
        protocol,
        split,
        events,
        results,
        costs,
        seed,
        peers,
        notes="every test event predicted from all the user's earlier events (train, valid, "
        "earlier test events); history items masked; all items ranked; ties broken at random",
    )
    return _write(report, out_dir, "next_event")


def _report(
    bench: str,
    dataset: str,
    protocol: str,
    split: Split,
    events: PredictionEvents,
    results: dict[str, dict[str, float]],
    costs: dict[str, Any],
    seed: int,
    peers: PeerSettings | None,
    notes: str,
) -> dict[str, Any]:
    registry = load_registry()
    report: dict[str, Any] = {
        "bench": bench,
        "dataset": dataset,
        "protocol": protocol,
        "notes": notes,
        "seed": seed,
        "split_sizes": split.sizes(),
        "n_items": split.dataset.n_items,
        "events": len(events),
        "sequences": len(np.unique(events.sequences)),
        "served_by": "recsys.serving.Engine (decision stage off), full-catalogue lists",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": package_versions(),
        "configs": {
            n: registry[n].config_for(dataset, registry).model_dump(mode="json")
            for n in results
            if n in registry  # peers (RecBole) are described under "peers"
        },
        "models": results,
        "request_cost_ms": costs,
    }
    if peers is not None and peers.models:
        report["peers"] = {
            "how": "RecBole 1.2.1 in its own environment, trained on the same training "
            "prefixes, its top lists scored by recsys' evaluator on the same events",
            "python": peers.python,
            "epochs": peers.epochs,
            "max_length": peers.max_length,
            "reused_lists": peers.reuse,
            "recipe": RECBOLE_RECIPE,
        }
    return report


@dataclass(frozen=True)
class PeerSettings:
    """RecBole peers to run: models, their environment's Python, epochs, history length."""

    models: tuple[str, ...] = ("SASRec", "GRU4Rec")
    python: str = "/tmp/recbole-venv/bin/python"
    epochs: int = 10
    max_length: int = 50
    folder: Path = Path("/tmp/recbole-work")
    reuse: bool = False


RECBOLE_RECIPE = (
    "python3 -m venv /tmp/recbole-venv && /tmp/recbole-venv/bin/pip install torch==2.13.0 && "
    "/tmp/recbole-venv/bin/pip install recbole==1.2.1 && /tmp/recbole-venv/bin/pip install "
    "numpy==1.26.4 pandas==2.2.3 scipy==1.13.1  # RecBole 1.2.1 uses np.float_ (NumPy < 2)"
)


def _peer_rows(
    peers: PeerSettings | None,
    split: Split,
    events: PredictionEvents,
    name: str,
    keep_history: bool,
    seed: int,
) -> dict[str, dict[str, Any]]:
    if peers is None or not peers.models:
        return {}
    import pandas as pd

    from recsys.bench.recbole_peers import recbole_rows

    train = pd.concat([split.train, split.valid]) if not keep_history else split.train
    return recbole_rows(
        peers.python,
        train,
        events,
        split.dataset.n_items,
        peers.folder / name,
        name.replace(".", "_"),
        dict.fromkeys(peers.models, peers.epochs),
        peers.max_length,
        mask_history=not keep_history,
        seed=seed,
        reuse=peers.reuse,
    )


def _write(report: dict[str, Any], out_dir: Path, stem: str) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (out_dir / f"{stem}.md").write_text(sequential_table(report) + "\n")
    return report


COLUMNS = ("hr@20", "mrr@20", "ndcg@10", "hr@10", "mrr@10", "hr@20_repeat", "hr@20_new")


def sequential_table(report: dict[str, Any]) -> str:
    """Markdown table of a sessions / next-event report."""
    lines = [
        f"**{report['dataset']}**, `{report['protocol']}`: {report['events']} prediction events "
        f"in {report['sequences']} sequences, {report['n_items']} items ranked, ties at random "
        f"(seed {report['seed']}), served by the Engine",
        "",
        "| model | " + " | ".join(COLUMNS) + " | train s | s/epoch |",
        "|---|" + "---:|" * (len(COLUMNS) + 2),
    ]
    for name, values in report["models"].items():
        cells = [
            f"{values[c]:.4f}" if isinstance(values.get(c), int | float) else "—" for c in COLUMNS
        ]
        train = values.get("train_seconds")
        epoch = values.get("seconds_per_epoch", values.get("retriever_seconds_per_epoch"))
        cells.append(f"{train:.0f}" if isinstance(train, int | float) else "—")
        cells.append(f"{epoch:.1f}" if isinstance(epoch, int | float) else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    costs = report.get("request_cost_ms") or {}
    if costs:
        lines += ["", "request-time cost (`retrieve(queries, 100)`, ms per call):", ""]
        lines.append("| model | batch 1 p50 | batch 1 p99 | batch 100 p50 | batch 100 p99 |")
        lines.append("|---|---:|---:|---:|---:|")
        for name, cost in costs.items():
            b1, b100 = cost.get("batch_1", {}), cost.get("batch_100", {})
            lines.append(
                f"| {name} | {b1.get('p50_ms', float('nan')):.2f} | "
                f"{b1.get('p99_ms', float('nan')):.2f} | {b100.get('p50_ms', float('nan')):.2f} | "
                f"{b100.get('p99_ms', float('nan')):.2f} |"
            )
    return "\n".join(lines)


def small_log(seed: int = 0) -> Any:
    """A synthetic log of a new user's size and sparsity: ~3k sessions, 7k items, 12k clicks.

    Sessions are the users (one session each, 2–6 clicks, power-law item popularity, items
    of a session related through its latent taste), so most items are clicked once or never.
    """
    from recsys.data.synthetic import SyntheticConfig, generate

    return generate(
        SyntheticConfig(
            n_users=3000,
            n_items=7000,
            n_categories=40,
            sessions_per_user=(1, 1),
            events_per_session=(2, 6),
            popularity_exponent=0.5,
            preference_strength=1.0,
            span_days=30.0,
            seed=seed,
        )
    )


def run_small_log(out_dir: Path, seeds: Sequence[int] = (0, 1)) -> dict[str, Any]:
    """Two-tower settings on small sparse logs; writes ``small_log.json`` / ``.md``.

    Per seed: a :func:`small_log`, per-user temporal split, popularity and EASE, the
    registered ``two_tower`` / ``two_tower_seq`` as they are and with ``scale_to_data``; each
    served by the Engine and evaluated on test (:func:`evaluate_served`), with the validation
    floors and whether the component fell back to popularity.
    """
    from recsys.bench.quality import served_engine
    from recsys.data.splits import temporal_split
    from recsys.evaluation.protocol import evaluate_served

    registry = load_registry()
    report: dict[str, Any] = {
        "bench": "small-log",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": package_versions(),
        "runs": {},
    }
    variants = {
        "popularity": ("popularity", {}),
        "ease": ("ease", {}),
        "two_tower": ("two_tower", {}),
        "two_tower (scale_to_data)": ("two_tower", {"scale_to_data": True}),
        "two_tower_seq": ("two_tower_seq", {}),
        "two_tower_seq (scale_to_data)": ("two_tower_seq", {"scale_to_data": True}),
    }
    for seed in seeds:
        data = small_log(seed)
        split = temporal_split(data)
        run: dict[str, Any] = {
            "sessions": data.n_users,
            "items": data.n_items,
            "clicks": len(data.interactions),
            "items_clicked": int(data.interactions["item"].nunique()),
            "split_sizes": split.sizes(),
            "models": {},
        }
        for label, (name, overrides) in variants.items():
            entry = registry[name]
            config = entry.component.config_class.model_validate(
                {**entry.values_for("synthetic", registry), **overrides}
            )
            model = entry.component(config)
            start = time.perf_counter()
            model.fit(split)
            metrics = evaluate_served(served_engine(split, model).serve, split, stage="test")
            metrics["train_seconds"] = time.perf_counter() - start
            extra = getattr(model, "bench_info", None)
            if callable(extra):
                metrics.update(extra())
            run["models"][label] = metrics
            log.warning("small log %d %s: ndcg@10 %.4f", seed, label, metrics["ndcg@10"])
        report["runs"][str(seed)] = run
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "small_log.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    lines = []
    for seed, run in report["runs"].items():
        lines += [
            f"**small sparse log, seed {seed}**: {run['sessions']} sessions, {run['clicks']} "
            f"clicks, {run['items_clicked']} of {run['items']} items clicked; per-user temporal "
            "split, served by the Engine",
            "",
            "| model | NDCG@10 | Recall@10 | valid NDCG@10 | popularity fallback | epochs |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for label, m in run["models"].items():
            lines.append(
                f"| {label} | {m['ndcg@10']:.4f} | {m['recall@10']:.4f} | "
                f"{m.get('valid_ndcg@10', float('nan')):.4f} | "
                f"{'yes' if m.get('popularity_fallback') else 'no'} | "
                f"{m.get('epochs', float('nan')):.0f} |"
            )
        lines.append("")
    (out_dir / "small_log.md").write_text("\n".join(lines) + "\n")
    return report
