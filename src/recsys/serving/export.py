"""Everything the Engine needs, saved as one BentoML model, and the Engine rebuilt from it.

:func:`export_engine` writes a model to BentoML's model store (``$BENTOML_HOME``, default
``~/bentoml``: ``bentoml models list`` shows it) with :func:`bentoml.models.create`:

* ``model/`` — the trained retriever (a two-stage model holds its ranker), saved by
  :meth:`~recsys.retrieval.base.Recommender.save`;
* ``fallback.npz`` — the fitted context popularity;
* ``catalog.parquet``, ``users.parquet`` — item and user side information in index order;
* ``history.parquet`` — the offline profile: the training events (``/events`` adds the rest);
* ``decision.json``, ``engine.json`` — the decision pipeline and request-path configs;
* ``manifest.json`` — dataset, model names, metrics, index fingerprints, git commit.

Labels (``bentoml models list``) carry the dataset, model and commit; metadata the
validation/test metrics. :func:`load_engine` rebuilds an identical Engine (same answers)
from a tag or a folder, with the online store, event log and decision log of the process
that serves it. A notebook exports in one line: ``export_engine(split, model, "ease")``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.data.dataset import Dataset
from recsys.data.paths import project_root
from recsys.data.splits import Split
from recsys.decision import ContextPopularity, DecisionPipelineConfig
from recsys.errors import RecsysError
from recsys.retrieval.base import Recommender
from recsys.serving.build import build_engine
from recsys.serving.engine import Engine, EngineConfig

log = logging.getLogger(__name__)

MODEL_NAME = "recsys-engine"
FORMAT_VERSION = 1
_HISTORY_COLUMNS = ["user_id", "item_id", "timestamp", "event_type", "value", "session_id"]


class ExportError(RecsysError, ValueError):
    """An exported engine is missing a part or does not match what was saved."""


def git_commit() -> str:
    """The checkout's commit (``+dirty`` when it has changes), or ``unknown``."""
    root = project_root()
    if root is None:
        return "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=root, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit


def export_engine(
    split: Split,
    model: Recommender,
    model_name: str,
    decision: DecisionPipelineConfig | None = None,
    engine_config: EngineConfig | None = None,
    metrics: dict[str, dict[str, float]] | None = None,
    name: str = MODEL_NAME,
    fallback: ContextPopularity | None = None,
) -> Any:
    """Save a trained model and everything its Engine needs to BentoML's model store.

    Args:
        split: The split the model was trained on (its training events become the offline
            profile; its dataset the catalogue and user table).
        model: The trained retriever (a two-stage model is served as its two stages).
        model_name: Registry name of the model (``ease``, ``two_tower+ranker``, ...).
        decision: Decision pipeline config (default: rules only).
        engine_config: Request-path settings (default: :class:`EngineConfig`).
        metrics: ``{"valid": {...}, "test": {...}}`` to label the model with.
        name: BentoML model name.
        fallback: The fitted fallback (default: context popularity fitted on ``split``).

    Returns:
        The saved :class:`bentoml.Model` (``.tag`` names it).
    """
    import bentoml

    data = split.dataset
    decision = decision or DecisionPipelineConfig()
    engine_config = engine_config or EngineConfig()
    fallback = fallback or ContextPopularity().fit(split)
    commit = git_commit()
    manifest = {
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": data.name,
        "protocol": split.protocol,
        "model": model_name,
        "component": f"{type(model).__module__}.{type(model).__qualname__}",
        "n_items": data.n_items,
        "n_users": data.n_users,
        "item_digest": data.item_index.digest,
        "user_digest": data.user_index.digest,
        "git_commit": commit,
        "metrics": metrics or {},
    }
    labels = {
        "dataset": data.name,
        "model": model_name,
        "protocol": split.protocol,
        "git_commit": commit,
    }
    metadata: dict[str, Any] = {"n_items": data.n_items, "n_users": data.n_users}
    for stage, values in (metrics or {}).items():
        for metric in ("ndcg@10", "recall@10", "hr@10"):
            if metric in values:
                metadata[f"{stage}_{metric}"] = float(values[metric])
    with bentoml.models.create(name, labels=labels, metadata=metadata) as saved:
        write_artifacts(Path(saved.path), split, model, decision, engine_config, fallback, manifest)
    log.info("exported %s (%s on %s)", saved.tag, model_name, data.name)
    return saved


def write_artifacts(
    path: Path,
    split: Split,
    model: Recommender,
    decision: DecisionPipelineConfig,
    engine_config: EngineConfig,
    fallback: ContextPopularity,
    manifest: dict[str, Any],
) -> None:
    """Write the engine's parts into ``path`` (the layout in the module docstring)."""
    data = split.dataset
    path.mkdir(parents=True, exist_ok=True)
    model.save(path / "model")
    np.savez(path / "fallback.npz", **fallback.state())
    items = data.items.copy()
    for column in items.columns:
        if items[column].map(lambda v: isinstance(v, tuple)).any():
            items[column] = items[column].map(lambda v: list(v) if isinstance(v, tuple) else [])
    items.to_parquet(path / "catalog.parquet")
    users = data.users if len(data.users) else pd.DataFrame(index=list(data.user_index.ids))
    users = users.reindex(list(data.user_index.ids))
    users.index.name = "user_id"
    users.to_parquet(path / "users.parquet")
    train = split.train
    history = pd.DataFrame({c: train[c] for c in _HISTORY_COLUMNS if c in train.columns})
    history.reset_index(drop=True).to_parquet(path / "history.parquet")
    (path / "decision.json").write_text(decision.model_dump_json(indent=2))
    (path / "engine.json").write_text(engine_config.model_dump_json(indent=2))
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2, default=float))


def model_path(tag_or_path: str | Path) -> Path:
    """The folder of an exported engine: a path as is, else a BentoML model tag's folder."""
    candidate = Path(tag_or_path)
    if candidate.is_dir():
        return candidate
    import bentoml

    try:
        return Path(bentoml.models.get(str(tag_or_path)).path)
    except bentoml.exceptions.NotFound as exc:
        raise ExportError(
            f"model {tag_or_path!r}: not in the BentoML model store (bentoml models list); "
            "export one with `recsys export` or `make bento`"
        ) from exc


def read_manifest(tag_or_path: str | Path) -> dict[str, Any]:
    """The manifest of an exported engine."""
    return json.loads((model_path(tag_or_path) / "manifest.json").read_text())


def load_split(path: Path, manifest: dict[str, Any]) -> Split:
    """The dataset and offline history an exported engine was saved with (checked)."""
    items = pd.read_parquet(path / "catalog.parquet")
    for column in items.columns:
        if items[column].map(lambda v: isinstance(v, list | np.ndarray)).any():
            items[column] = items[column].map(lambda v: tuple(str(x) for x in v))
    users = pd.read_parquet(path / "users.parquet")
    history = pd.read_parquet(path / "history.parquet")
    dataset = Dataset(manifest["dataset"], history, items, users)
    for what, index, key in (
        ("item", dataset.item_index, "item_digest"),
        ("user", dataset.user_index, "user_digest"),
    ):
        if index.digest != manifest[key]:
            raise ExportError(f"{path}: the rebuilt {what} index differs from the exported one")
    empty = dataset.interactions.iloc[0:0]
    return Split(dataset, dataset.interactions, empty, empty.copy(), protocol=manifest["protocol"])


def load_engine(
    tag_or_path: str | Path = f"{MODEL_NAME}:latest",
    store: Any = None,
    event_log_dir: str | Path | None = None,
    decision_log: Any = None,
    consent: Any = None,
    engine_config: EngineConfig | None = None,
    redis_url: str | None = None,
) -> Engine:
    """Rebuild the exported Engine (never retrains).

    Args:
        tag_or_path: A BentoML model tag (``recsys-engine:latest``) or an export folder.
        store: Online store (default: in-process; server workers share a Redis one).
        event_log_dir: Where ``/events`` are logged (default: no ingestion).
        decision_log: A :class:`~recsys.decision.DecisionLog` (default: in memory).
        consent: Consent registry of the ingestor.
        engine_config: Override the exported request-path settings.
        redis_url: Share the online store and the consent registry through this Redis
            (several server workers); overrides ``store`` and ``consent``.

    Raises:
        ExportError: The tag is unknown, or the saved parts do not rebuild the same indexes.
    """
    path = model_path(tag_or_path)
    manifest = json.loads((path / "manifest.json").read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ExportError(
            f"{path}: format {manifest.get('format_version')}, expected {FORMAT_VERSION}"
        )
    split = load_split(path, manifest)
    with np.load(path / "fallback.npz", allow_pickle=False) as state:
        fallback = ContextPopularity.from_state({k: state[k] for k in state.files})
    decision = DecisionPipelineConfig.model_validate_json((path / "decision.json").read_text())
    config = engine_config or EngineConfig.model_validate_json((path / "engine.json").read_text())
    if redis_url:
        from recsys.features import ItemInfoCatalog, RedisConsentRegistry, RedisStore

        store = RedisStore(redis_url, ItemInfoCatalog.from_dataset(split.dataset))
        consent = RedisConsentRegistry(store)
    return build_engine(
        split,
        retriever=Recommender.load(path / "model"),
        decision=decision,
        store=store,
        event_log_dir=event_log_dir,
        config=config,
        decision_log=decision_log,
        fallback=fallback,
        consent=consent,
    )
