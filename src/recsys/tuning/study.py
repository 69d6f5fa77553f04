"""Search spaces as data: ``experiments/configs/studies/<study>.yaml`` parsed and checked.

A study file names a registered model (:mod:`recsys.bench.registry`), the data it is tuned
on, the objective(s), the sampler, the pruner and the parameters::

    model: two_tower                 # an experiments/configs/models/<model>.yaml entry
    dataset: ml-100k
    protocol: random                 # tune on its validation part; test is never read
    seed: 2020                       # split seed
    trials: 40                       # default of `recsys tune --trials`
    objectives: [ndcg@10]            # or two: [ndcg@10, ild@10] (Pareto front)
    sampler: {kind: tpe, seed: 0, startup_trials: 10}
    pruner: {kind: median, startup_trials: 5, warmup_steps: 2}   # median | hyperband | none
    fixed: {epochs: 15}              # config values set for every trial
    params:                          # config path → search range
      temperature: {type: float, low: 0.02, high: 0.5, log: true}
      batch_size: {type: categorical, choices: [256, 512, 1024]}

Every parameter (and ``fixed`` key) is a dotted path into the model's config class
(``retriever.temperature``, ``ranker.features.groups.ease``); a path the class does not have
is an error naming it, and so are inverted bounds and a bound the config itself rejects
(each bound and choice is validated through the component's pydantic config at load time,
so a study never discovers a bad range mid-run).
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recsys.bench.registry import BenchModel, deep_merge, load_registry
from recsys.errors import RecsysError

METRICS: tuple[str, ...] = (
    "ndcg@10",
    "recall@10",
    "hr@10",
    "mrr@10",
    "ild@10",
    "coverage@10",
    "novelty@10",
)


class StudyError(RecsysError, ValueError):
    """A study file is invalid; the message names the file and the offending entry."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamSpec(_Strict):
    """One searched parameter: its type and range.

    Attributes:
        type: ``float`` or ``int`` (``low``/``high``, optional ``log`` or ``step``),
            ``categorical`` (``choices``: any YAML values, lists included) or ``bool``.
    """

    type: Literal["float", "int", "categorical", "bool"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.type in ("float", "int"):
            if self.low is None or self.high is None:
                raise ValueError(f"type {self.type} needs low and high")
            if self.low >= self.high:
                raise ValueError(f"inverted bounds: low ({self.low:g}) must be below high "
                                 f"({self.high:g})")  # fmt: skip
            if self.log and self.low <= 0:
                raise ValueError(f"log scale needs low > 0 (got {self.low:g})")
            if self.log and self.step is not None:
                raise ValueError("log and step cannot be combined")
            if self.type == "int" and not all(
                float(v).is_integer() for v in (self.low, self.high, self.step or 1)
            ):
                raise ValueError("type int needs integer low, high and step")
            if self.choices is not None:
                raise ValueError(f"type {self.type} takes low/high, not choices")
        elif self.type == "categorical":
            if not self.choices:
                raise ValueError("type categorical needs a non-empty list of choices")
            if len({json.dumps(c, sort_keys=True) for c in self.choices}) != len(self.choices):
                raise ValueError("categorical choices repeat a value")
        elif any(v is not None for v in (self.low, self.high, self.step, self.choices)):
            raise ValueError("type bool takes no low, high, step or choices")
        return self

    def candidates(self) -> list[Any]:
        """Values that bound the range (checked against the component config at load)."""
        if self.type == "bool":
            return [False, True]
        if self.type == "categorical":
            return list(self.choices or [])
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in the search space (used to enqueue the default)."""
        if self.type == "bool":
            return isinstance(value, bool)
        if self.type == "categorical":
            return json.dumps(_plain(value), sort_keys=True) in {
                json.dumps(c, sort_keys=True) for c in self.choices or []
            }
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        assert self.low is not None and self.high is not None
        if not self.low <= value <= self.high:
            return False
        if self.type == "int" and not float(value).is_integer():
            return False
        return self.step is None or abs(((value - self.low) / self.step) % 1) < 1e-9


class ObjectiveSpec(_Strict):
    """A validation metric and whether to maximise it."""

    metric: Literal[METRICS]  # type: ignore[valid-type]
    direction: Literal["maximize", "minimize"] = "maximize"


class SamplerSpec(_Strict):
    """Optuna sampler: TPE (default; NSGA-II is used for two objectives unless random)."""

    kind: Literal["tpe", "random", "nsga2"] = "tpe"
    seed: int = Field(0, ge=0, description="Base seed; each worker and resume offsets it.")
    startup_trials: int = Field(10, ge=0, description="Random trials before TPE models.")


class PrunerSpec(_Strict):
    """Optuna pruner over the per-epoch (or per-fold) validation reports."""

    kind: Literal["median", "hyperband", "none"] = "median"
    startup_trials: int = Field(5, ge=0, description="median: trials never pruned first.")
    warmup_steps: int = Field(1, ge=0, description="median: steps before pruning starts.")
    min_resource: int = Field(1, ge=1, description="hyperband: smallest step budget.")
    max_resource: int | Literal["auto"] = Field("auto", description="hyperband: largest.")
    reduction_factor: int = Field(3, ge=2, description="hyperband: η.")


class StudyConfig(_Strict):
    """A study file, validated (see the module docstring for the format)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.+\-]+$")
    model: str
    dataset: str = "ml-100k"
    protocol: Literal["random", "temporal", "leave_last_out"] = "random"
    seed: int = Field(2020, ge=0, description="Split seed.")
    description: str = ""
    trials: int = Field(40, ge=1, description="Default number of trials of one run.")
    timeout: float | None = Field(None, gt=0, description="Seconds per run (None: no limit).")
    objectives: list[ObjectiveSpec] = Field(
        default_factory=lambda: [ObjectiveSpec(metric="ndcg@10")], min_length=1, max_length=2
    )
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    fixed: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, ParamSpec] = Field(min_length=1)
    source: str | None = Field(None, description="The file it was read from.")

    @field_validator("objectives", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """``[ndcg@10, ild@10]`` is short for ``[{metric: ndcg@10}, {metric: ild@10}]``."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [{"metric": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str) -> str:
        from recsys.data import available_datasets

        known = available_datasets()
        if value not in known:
            raise ValueError(f"unknown dataset {value!r}; choose one of {known}")
        return value

    @model_validator(mode="after")
    def _multi_objective(self) -> StudyConfig:
        metrics = [o.metric for o in self.objectives]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objectives: {metrics} repeats a metric")
        if self.multi_objective and self.pruner.kind != "none":
            raise ValueError(
                "pruner: Optuna cannot prune multi-objective trials (intermediate reports are "
                "single values); set pruner.kind: none"
            )
        overlap = sorted(set(self.fixed) & set(self.params))
        if overlap:
            raise ValueError(f"fixed and params both set {overlap}")
        return self

    @property
    def multi_objective(self) -> bool:
        """Two objectives: the study has a Pareto front, not one best trial."""
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[str]:
        """Optuna directions, one per objective."""
        return [o.direction for o in self.objectives]

    @property
    def metrics(self) -> list[str]:
        """The objective metrics, in order."""
        return [o.metric for o in self.objectives]


def studies_dir() -> Path | None:
    """``experiments/configs/studies`` of the checkout (``None`` when installed elsewhere)."""
    from recsys.data.paths import project_root

    root = project_root()
    return root / "experiments" / "configs" / "studies" if root else None


def find_study_file(study: str | Path) -> Path:
    """A study file by path, or by name under :func:`studies_dir`."""
    path = Path(study)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    folder = studies_dir()
    candidates = [folder / f"{study}.yaml", folder / f"{study}.yml"] if folder else []
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in folder.glob("*.y*ml")) if folder and folder.is_dir() else []
    raise StudyError(f"study {str(study)!r}: no such file and no study of that name; known {known}")


def load_study_config(
    study: str | Path | Mapping[str, Any],
    registry: Mapping[str, BenchModel] | None = None,
    configs: Path | None = None,
) -> StudyConfig:
    """Read and validate a study, including every path and bound against the model's config.

    Args:
        study: A file path, a study name under ``experiments/configs/studies``, or the
            parsed mapping (``name`` required then).
        registry: The model registry (default: :func:`load_registry` of ``configs``).
        configs: Model config folder (default ``experiments/configs/models``).

    Raises:
        StudyError: Names the file and the entry: an unknown key or parameter path, inverted
            bounds, a bound or choice the model's config rejects, a model that is not
            registered.
    """
    if isinstance(study, Mapping):
        spec, where = dict(study), str(study.get("name", "<study>"))
    else:
        path = find_study_file(study)
        where = str(path)
        try:
            spec = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise StudyError(f"{where}: not valid YAML: {exc}") from exc
        if not isinstance(spec, dict):
            raise StudyError(f"{where}: expected a mapping at the top level")
        spec.setdefault("name", path.stem)
        spec.setdefault("source", str(path))
    try:
        config = StudyConfig.model_validate(spec)
    except ValidationError as exc:
        raise StudyError(f"{where}: {_describe(exc)}") from exc
    check_study(config, registry if registry is not None else load_registry(configs), where)
    return config


def _describe(exc: ValidationError) -> str:
    """One line per problem, each starting with the entry's dotted location."""
    lines = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{loc}: {message}" if loc else message)
    return "; ".join(lines)


def check_study(config: StudyConfig, registry: Mapping[str, BenchModel], where: str = "") -> None:
    """Check the model is registered and every path and bound fits its config class."""
    where = where or config.name
    if config.model not in registry:
        raise StudyError(
            f"{where}: model {config.model!r} is not registered "
            f"(experiments/configs/models/<model>.yaml); available {sorted(registry)}"
        )
    entry = registry[config.model]
    config_class = entry.component.config_class
    for kind, paths in (("fixed", list(config.fixed)), ("params", list(config.params))):
        for path in paths:
            problem = path_problem(config_class, path)
            if problem:
                raise StudyError(f"{where}: {kind}.{path}: unknown parameter: {problem}")
    base = deep_merge(entry.values_for(config.dataset, registry), {})
    for path, value in config.fixed.items():
        set_path(base, path, value)
    try:
        resolved = config_class.model_validate(base).model_dump(mode="json")
    except ValidationError as exc:
        raise StudyError(
            f"{where}: fixed: {config_class.__name__} rejects: {_describe(exc)}"
        ) from exc
    for path, spec in config.params.items():
        for value in spec.candidates():
            trial = deep_merge(base, {})
            set_path(trial, path, value)
            try:
                config_class.model_validate(trial)
            except ValidationError as exc:
                raise StudyError(
                    f"{where}: params.{path}: {value!r} is outside what "
                    f"{config_class.__name__} accepts: {_describe(exc)}"
                ) from exc
    family = objective_family(entry)
    if family == "two_stage":
        folds = config.params.get("ranker.folds")
        values = folds.candidates() if folds else [get_path(resolved, "ranker.folds")]
        if min(int(v) for v in values) < 2:
            raise StudyError(
                f"{where}: ranker.folds: the ranker's validation objective is its out-of-fold "
                "NDCG, which needs folds >= 2"
            )


def objective_family(entry: BenchModel) -> str:
    """``two_stage``, ``two_tower`` (per-epoch reports) or ``fit`` (one fit, then validate)."""
    names = {cls.__name__ for cls in entry.component.__mro__}
    if "TwoStageRecommender" in names:
        return "two_stage"
    if "TwoTowerRetriever" in names:
        return "two_tower"
    return "fit"


def path_problem(config_class: type[BaseModel], path: str) -> str | None:
    """Why ``path`` is not a field of ``config_class`` (``None`` when it is)."""
    cls: Any = config_class
    walked = []
    for part in path.split("."):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return f"{'.'.join(walked)} is a value, not a nested config"
        fields = cls.model_fields
        if part not in fields:
            return f"{cls.__name__} has no field {part!r} (fields: {', '.join(sorted(fields))})"
        walked.append(part)
        cls = _unwrap(fields[part].annotation)
    return None


def _unwrap(annotation: Any) -> Any:
    """``X | None`` → ``X`` (nested configs are classes; anything else is a leaf)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else None
    return annotation


def set_path(values: dict[str, Any], path: str, value: Any) -> None:
    """Set ``values[a][b][c] = value`` for ``path`` ``a.b.c`` (intermediate dicts created)."""
    *parents, leaf = path.split(".")
    node = values
    for part in parents:
        child = node.get(part)
        if isinstance(child, BaseModel):
            child = child.model_dump()
        node[part] = dict(child) if isinstance(child, Mapping) else {}
        node = node[part]
    node[leaf] = value


def get_path(values: Mapping[str, Any], path: str, default: Any = None) -> Any:
    """``values[a][b][c]`` for ``a.b.c`` (``default`` when a level is missing)."""
    node: Any = values
    for part in path.split("."):
        if isinstance(node, BaseModel):
            node = node.model_dump()
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _plain(value: Any) -> Any:
    """Tuples → lists, recursively (how YAML and JSON spell them)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value
