"""Benchmark models, registered by config files: ``experiments/configs/models/<name>.yaml``.

Every model of ``recsys bench`` — baselines and neural stages alike — is a file::

    component: recsys.ranking.two_stage.TwoStageRecommender   # import path of the class
    description: two-tower top-100 → DCN-v2 ranker
    uses: {retriever: two_tower}        # optional: reuse another entry's trained model
    config: {ranker: {epochs: 60}}      # the component's config (validated at load)
    datasets:                           # optional per-dataset overrides (deep-merged)
      ml-latest-small: {ranker: {features: {ease_l2: 500.0}}}

``uses: {retriever: two_tower}`` puts the ``two_tower`` entry's config for the dataset under
the ``retriever`` config field and passes its trained model as ``trained_retriever``, so one
benchmark run trains the two-tower once for both rows. Tuning writes its best trial as such
a file, which is how tuned settings reach ``recsys bench`` and the Bento without code.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recsys.errors import RecsysError

BASELINE_ORDER = ("popularity", "itemknn", "ease", "implicit_als", "implicit_bpr", "sknn", "vsknn")


class RegistryError(RecsysError, ValueError):
    """A model config file is invalid (names the file and the field)."""


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``overrides``, nested mappings merged key by key."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_component_class(path: str) -> type:
    """Import ``package.module.Class``."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class BenchModel:
    """A registered model: how to build it, untrained, for a dataset.

    Attributes:
        name: Benchmark name (the config file's stem).
        component: The component class (a :class:`~recsys.retrieval.base.Recommender`).
        config: Base config values.
        datasets: Per-dataset overrides.
        uses: Config field → the entry whose trained model this one reuses.
        description: One line for the report.
        source: The config file.
    """

    name: str
    component: type
    config: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    uses: dict[str, str] = field(default_factory=dict)
    description: str = ""
    source: Path | None = None

    def values_for(self, dataset: str, registry: Mapping[str, BenchModel]) -> dict[str, Any]:
        """The config values for ``dataset`` (dependencies' configs filled in)."""
        values = deep_merge(self.config, self.datasets.get(dataset) or {})
        for slot, other in self.uses.items():
            values[slot] = deep_merge(
                registry[other].values_for(dataset, registry), values.get(slot) or {}
            )
        return values

    def config_for(self, dataset: str, registry: Mapping[str, BenchModel]) -> Any:
        """The validated component config for ``dataset``."""
        return self.component.config_class.model_validate(self.values_for(dataset, registry))

    def create(
        self, dataset: str, registry: Mapping[str, BenchModel], trained: Mapping[str, Any]
    ) -> Any:
        """An untrained model for ``dataset``; ``trained`` holds this run's trained entries."""
        kwargs = {f"trained_{slot}": trained[other] for slot, other in self.uses.items()}
        return self.component(self.config_for(dataset, registry), **kwargs)


def models_dir() -> Path | None:
    """``experiments/configs/models`` of the checkout (``None`` when installed elsewhere)."""
    from recsys.data.paths import project_root

    root = project_root()
    return root / "experiments" / "configs" / "models" if root else None


def load_registry(folder: Path | None = None) -> dict[str, BenchModel]:
    """Every model file in ``folder`` (default :func:`models_dir`), baselines first.

    Raises:
        RegistryError: A file without ``component``, with unknown keys, a config its
            component rejects, or a ``uses`` naming no registered model.
    """
    folder = folder or models_dir()
    if folder is None or not folder.is_dir():
        return {}
    entries: dict[str, BenchModel] = {}
    for path in sorted(folder.glob("*.yaml")):
        entries[path.stem] = _entry(path)
    for entry in entries.values():
        for slot, other in entry.uses.items():
            if other not in entries:
                raise RegistryError(f"{entry.source}: uses.{slot}: no model named {other!r}")
    for entry in entries.values():
        for dataset in ["default", *entry.datasets]:
            try:
                entry.config_for(dataset, entries)
            except Exception as exc:
                raise RegistryError(f"{entry.source}: config for {dataset!r}: {exc}") from exc
    order = {name: i for i, name in enumerate(BASELINE_ORDER)}
    return dict(
        sorted(
            entries.items(), key=lambda kv: (order.get(kv[0], len(order)), bool(kv[1].uses), kv[0])
        )
    )


_KEYS = {"component", "description", "config", "datasets", "uses"}


def _entry(path: Path) -> BenchModel:
    spec = yaml.safe_load(path.read_text()) or {}
    if not isinstance(spec, dict):
        raise RegistryError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise RegistryError(f"{path}: unknown keys {unknown}; allowed {sorted(_KEYS)}")
    if "component" not in spec:
        raise RegistryError(f"{path}: missing 'component'")
    try:
        component = load_component_class(str(spec["component"]))
    except (ImportError, AttributeError, ValueError) as exc:
        raise RegistryError(f"{path}: component {spec['component']!r}: {exc}") from exc
    return BenchModel(
        name=path.stem,
        component=component,
        config=dict(spec.get("config") or {}),
        datasets={str(k): dict(v or {}) for k, v in (spec.get("datasets") or {}).items()},
        uses={str(k): str(v) for k, v in (spec.get("uses") or {}).items()},
        description=str(spec.get("description", "")),
        source=path,
    )


def training_order(names: list[str], registry: Mapping[str, BenchModel]) -> list[str]:
    """``names`` with the entries they use first (each once)."""
    order: list[str] = []

    def visit(name: str) -> None:
        for other in registry[name].uses.values():
            visit(other)
        if name not in order:
            order.append(name)

    for name in names:
        visit(name)
    return order
