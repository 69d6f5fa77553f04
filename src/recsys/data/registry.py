"""Datasets as data: ``experiments/configs/datasets/<name>.yaml``.

A registered dataset is a file, written by ``recsys data add`` (after it has read and checked
the data) or by hand::

    name: yoochoose-sample
    description: YOOCHOOSE clicks, session-rec sample
    events:                                   # one file or a list, read in order
      - shared:yoochoose-clicks-sample/yoochoose-clicks-100k_train_full.txt
      - shared:yoochoose-clicks-sample/yoochoose-clicks-100k_test.txt
    format: tsv                               # auto | csv | tsv | semicolon | parquet
    columns: {session_id: SessionId, item_id: ItemId, timestamp: Time}
    session: {key: session}                   # anonymous sessions: the session is the key
    timestamp_unit: s                         # s | ms | us | ns, or date_format: "%d/%m/%Y %H:%M"
    items: {path: items.csv, columns: {item_id: sku, title: name, genres: cats},
            genres_separator: ";"}
    sha256: {shared:yoochoose-clicks-sample/...: 9842c9...}   # checked on every load

File references never hold one machine's paths: ``shared:<path>`` is searched in
:func:`~recsys.data.paths.shared_data_dirs`; a relative path is relative to the config file's
folder; an absolute path is allowed (a private config) but ``data add`` says it is one.

:func:`load_registered` reads such a file into a :class:`~recsys.data.Dataset` and
:func:`recsys.data.load_dataset` falls back to it for any name that is not built in, so every
benchmark (``--dataset NAME``) and notebook (``DATASET = "NAME"``) takes it.

Configs are searched in ``$RECSYS_DATASETS_DIR`` (one or more folders, ``os.pathsep``
separated) and then in the checkout's ``experiments/configs/datasets``; the first folder is
where :func:`add_dataset` writes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from recsys.config import ComponentConfig
from recsys.data.checksums import sha256_file
from recsys.data.dataset import Dataset
from recsys.data.events_file import Format, TimestampUnit, read_events, read_items, read_users
from recsys.data.paths import project_root, shared_data_dirs
from recsys.data.schema import EVENT_COLUMNS
from recsys.errors import ChecksumError, DataError

BUILTIN_DATASETS: tuple[str, ...] = ("ml-100k", "ml-latest-small", "synthetic")
SHARED_PREFIX = "shared:"
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"


def _column() -> Any:
    """A file column name (unset: the schema's own name, when the file has it)."""
    return Field(None, min_length=1, max_length=200)


class _FileOptions(ComponentConfig):
    """How to read a file; defaults detect everything."""

    format: Format = "auto"
    separator: str | None = Field(None, min_length=1, max_length=1)
    encoding: str = Field("utf-8", min_length=1, max_length=40)


class EventColumns(ComponentConfig):
    """Schema column → file column. Unset: a file column of the schema's name, if any."""

    user_id: str | None = _column()
    item_id: str | None = _column()
    timestamp: str | None = _column()
    event_type: str | None = _column()
    value: str | None = _column()
    session_id: str | None = _column()


class SessionSettings(ComponentConfig):
    """Sessions of a dataset.

    Attributes:
        key: ``session``: every session is a "user" (anonymous session logs); ``user``: users
            are the key and sessions (if any) context; unset: ``session`` when there is no
            user column or ``user_id`` is mapped to the session column.
        gap_minutes: Derive session ids from each user's events, a new session after this
            much inactivity (for logs without a session column; e.g. 30).
    """

    key: Literal["user", "session"] | None = None
    gap_minutes: float | None = Field(None, gt=0.0, le=60.0 * 24 * 365)


class ItemColumns(ComponentConfig):
    """Item file column mapping; other columns are kept as item features."""

    item_id: str | None = _column()
    title: str | None = _column()
    genres: str | None = _column()
    year: str | None = _column()


class ItemsFile(_FileOptions):
    """An item side file: titles, genres (a separated list), year and any other features."""

    path: str = Field(min_length=1, max_length=1000)
    columns: ItemColumns = ItemColumns()
    genres_separator: str = Field("|", min_length=1, max_length=3)


class UserColumns(ComponentConfig):
    """User file column mapping; other columns are kept as user context."""

    user_id: str | None = _column()


class UsersFile(_FileOptions):
    """A user side file: request context per user (region, age band, ...)."""

    path: str = Field(min_length=1, max_length=1000)
    columns: UserColumns = UserColumns()


class DatasetConfig(_FileOptions):
    """A registered dataset (one YAML file in ``experiments/configs/datasets``).

    Attributes:
        name: The dataset's name (the file's stem); not a built-in name.
        description: One line for reports.
        events: Events file reference(s), read in order and concatenated.
        format: Events file format (``auto``: by suffix, separator sniffed).
        separator: Text separator (overrides the format's).
        encoding: Text encoding.
        columns: Schema column → file column.
        timestamp_unit: Unit of numeric timestamps.
        date_format: ``strftime`` format of date-string timestamps (default ISO 8601).
        session: Session key and derivation.
        items: Optional item side file.
        users: Optional user side file (not for session-keyed data: sessions have no context
            table).
        drop_invalid: Drop rows with empty ids or bad timestamps / values (counted in the
            summary) instead of refusing the file.
        sha256: File reference → SHA-256, checked on every load (written by ``data add``).
    """

    name: str = Field(pattern=_NAME_PATTERN)
    description: str = Field("", max_length=500)
    events: list[str] = Field(min_length=1, max_length=1000)
    columns: EventColumns = EventColumns()
    timestamp_unit: TimestampUnit = "s"
    date_format: str | None = Field(None, min_length=1, max_length=100)
    session: SessionSettings = SessionSettings()
    items: ItemsFile | None = None
    users: UsersFile | None = None
    drop_invalid: bool = False
    sha256: dict[str, str] = Field(default_factory=dict)

    @field_validator("events", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("name")
    @classmethod
    def _not_builtin(cls, value: str) -> str:
        if value in BUILTIN_DATASETS:
            raise ValueError(f"{value!r} is a built-in dataset; choose another name")
        return value

    @field_validator("sha256")
    @classmethod
    def _hex_digests(cls, value: dict[str, str]) -> dict[str, str]:
        for ref, digest in value.items():
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"{ref}: {digest!r} is not a hex SHA-256")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DatasetConfig:
        if self.users is not None and self.session.key == "session":
            raise ValueError("users: a session-keyed dataset has no user table")
        if self.session.gap_minutes is not None and self.columns.session_id is not None:
            raise ValueError("session.gap_minutes derives sessions; the file has session_id")
        return self

    def files(self) -> list[str]:
        """Every file reference: events, then the side files."""
        side = [f.path for f in (self.items, self.users) if f is not None]
        return [*self.events, *side]


# --------------------------------------------------------------------------- where configs live


def datasets_dirs() -> list[Path]:
    """Folders searched for dataset configs, in order (the first is where ``add`` writes).

    ``$RECSYS_DATASETS_DIR`` (``os.pathsep``-separated) first, then the checkout's
    ``experiments/configs/datasets``.
    """
    dirs = [Path(p) for p in os.environ.get("RECSYS_DATASETS_DIR", "").split(os.pathsep) if p]
    root = project_root()
    if root is not None:
        dirs.append(root / "experiments" / "configs" / "datasets")
    return dirs


def registered_datasets() -> dict[str, Path]:
    """Registered dataset name → config file (an earlier folder shadows a later one)."""
    found: dict[str, Path] = {}
    for folder in datasets_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return found


def available_datasets() -> list[str]:
    """Every name :func:`recsys.data.load_dataset` accepts: built-ins, then registered."""
    return [*BUILTIN_DATASETS, *sorted(set(registered_datasets()) - set(BUILTIN_DATASETS))]


def config_path(name: str) -> Path:
    """The config file of a registered dataset (or ``name`` itself when it is a YAML file).

    Raises:
        DataError: No such dataset (the message lists the available names).
    """
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return Path(name)
    path = registered_datasets().get(name)
    if path is None:
        folders = ", ".join(str(d) for d in datasets_dirs()) or "(none)"
        raise DataError(
            f"dataset: unknown {name!r}; choose one of {available_datasets()} "
            f"(register a file with `recsys data add {name} --events FILE`; configs in {folders})"
        )
    return path


def read_config(path: Path) -> DatasetConfig:
    """Parse and validate a dataset config file.

    Raises:
        DataError: Not YAML, not a mapping, or invalid (the message names the file and field).
    """
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: cannot read dataset config: {exc}") from exc
    if not isinstance(spec, dict):
        raise DataError(f"{path}: expected a mapping at the top level")
    try:
        config = DatasetConfig.model_validate(spec)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise DataError(f"{path}: {problems}") from exc
    if path.stem != config.name:
        # the stem is how the dataset is found: a different name inside would be a second name
        raise DataError(f"{path}: name {config.name!r} differs from the file name {path.stem!r}")
    return config


# --------------------------------------------------------------------------- file references


def resolve_source(ref: str, base: Path | None = None) -> Path:
    """The file a reference names.

    Args:
        ref: ``shared:<relative path>`` (searched in the shared data folders), an absolute
            path, or a path relative to ``base``.
        base: Folder of relative references (the config's folder; default: the working dir).

    Raises:
        DataError: The file does not exist (the message names it and where it was searched).
    """
    if ref.startswith(SHARED_PREFIX):
        relative = ref[len(SHARED_PREFIX) :].lstrip("/")
        searched = [d / relative for d in shared_data_dirs()]
        for candidate in searched:
            if candidate.is_file():
                return candidate
        raise DataError(
            f"{ref}: file not found in the shared data folders "
            f"{[str(p) for p in searched] or '(none: set RECSYS_DATA_DIR)'}"
        )
    path = Path(ref).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    if not path.is_file():
        origin = f" (from {ref!r})" if ref != str(path) else ""
        raise DataError(f"{path}: file not found{origin}")
    return path


def portable_source(path: Path, config_dir: Path) -> str:
    """The reference a config in ``config_dir`` should hold for ``path``.

    ``shared:…`` when the file is in a shared data folder, a relative path when the file and
    the config are in the same checkout (or the file is under the config's folder), else the
    absolute path (a config only this machine can use).
    """
    path = path.resolve()
    for base in shared_data_dirs():
        if base.is_dir() and path.is_relative_to(base.resolve()):
            return SHARED_PREFIX + path.relative_to(base.resolve()).as_posix()
    config_dir = config_dir.resolve()
    root = project_root()
    same_checkout = root is not None and all(
        p.is_relative_to(root.resolve()) for p in (path, config_dir)
    )
    if same_checkout or path.is_relative_to(config_dir):
        return Path(os.path.relpath(path, config_dir)).as_posix()
    return str(path)


# --------------------------------------------------------------------------- loading


def load_registered(name: str) -> Dataset:
    """Load a registered dataset by name (or from a config file path).

    Raises:
        DataError: Unknown name (available names listed), invalid config, missing or changed
            file, or bad data (file, column and row named).
    """
    path = config_path(name)
    return load_config(read_config(path), path.parent, source=path)


def load_config(
    config: DatasetConfig, base: Path | None = None, source: Path | None = None
) -> Dataset:
    """Read the files a config names into a :class:`Dataset` (checksums verified).

    Args:
        config: The dataset config.
        base: Folder of relative file references (the config file's folder).
        source: The config file (recorded in the dataset's metadata).
    """
    resolved = {ref: resolve_source(ref, base) for ref in config.files()}
    for ref, digest in config.sha256.items():
        if ref not in resolved:
            raise DataError(f"{source or config.name}: sha256 for {ref!r}, which it does not use")
        actual = sha256_file(resolved[ref])
        if actual != digest:
            raise ChecksumError(
                f"{resolved[ref]}: sha256 {actual} differs from {digest} recorded in "
                f"{source or config.name}; the file changed since it was registered (check it, "
                f"then `recsys data add {config.name} ... --force`)"
            )
    frame, report = read_events(
        [resolved[ref] for ref in config.events],
        config.columns.model_dump(),
        fmt=config.format,
        separator=config.separator,
        encoding=config.encoding,
        timestamp_unit=config.timestamp_unit,
        date_format=config.date_format,
        session_key=config.session.key,
        session_gap_minutes=config.session.gap_minutes,
        drop_invalid=config.drop_invalid,
    )
    items = users = None
    if config.items is not None:
        items = read_items(
            resolved[config.items.path],
            config.items.columns.model_dump(),
            fmt=config.items.format,
            separator=config.items.separator,
            encoding=config.items.encoding,
            genres_separator=config.items.genres_separator,
        )
    if config.users is not None:
        if report.key == "session":
            raise DataError(f"{config.users.path}: a session-keyed dataset has no user table")
        users = read_users(
            resolved[config.users.path],
            config.users.columns.model_dump(),
            fmt=config.users.format,
            separator=config.users.separator,
            encoding=config.users.encoding,
        )
    metadata = {
        "description": config.description,
        "source": {
            "config": str(source) if source else None,
            "references": {ref: str(p) for ref, p in resolved.items()},
            "checksums": "verified" if config.sha256 else "not recorded",
            **report.as_dict(),
        },
    }
    return Dataset(
        name=config.name,
        interactions=frame,
        items=items if items is not None else pd.DataFrame(),
        users=users if users is not None else pd.DataFrame(),
        key=report.key,
        metadata=metadata,
    )


# --------------------------------------------------------------------------- registering


def add_dataset(
    config: DatasetConfig | Mapping[str, Any],
    folder: Path | None = None,
    force: bool = False,
    checksum: bool = True,
) -> tuple[Path, Dataset]:
    """Check a dataset's files and register it: write ``<folder>/<name>.yaml``.

    The files are read in full and validated first (a file that does not load is never
    registered). References are rewritten so the config travels (see
    :func:`portable_source`), and the files' SHA-256 recorded unless ``checksum`` is off.

    Args:
        config: The config, with file references relative to the working directory (or
            absolute, or ``shared:``).
        folder: Where to write (default: the first of :func:`datasets_dirs`).
        force: Overwrite an existing config of that name.
        checksum: Record the files' SHA-256 (every load then verifies them).

    Returns:
        The config file written and the dataset as loaded from it.

    Raises:
        DataError: A built-in name, an existing config without ``force``, or any error of
            :func:`load_config`.
    """
    if not isinstance(config, DatasetConfig):
        config = DatasetConfig.model_validate(dict(config))
    dirs = datasets_dirs()
    if folder is None:
        if not dirs:
            raise DataError("no folder for dataset configs: set RECSYS_DATASETS_DIR")
        folder = dirs[0]
    target = folder / f"{config.name}.yaml"
    if target.exists() and not force:
        raise DataError(f"{target}: dataset {config.name!r} is registered already (--force)")
    resolved = {ref: resolve_source(ref) for ref in config.files()}
    portable = {ref: portable_source(path, folder) for ref, path in resolved.items()}
    update: dict[str, Any] = {"events": [portable[r] for r in config.events]}
    for side in ("items", "users"):
        part = getattr(config, side)
        if part is not None:
            update[side] = part.model_copy(update={"path": portable[part.path]})
    update["sha256"] = (
        {portable[r]: sha256_file(p) for r, p in resolved.items()} if checksum else {}
    )
    written = config.model_copy(update=update)
    written = DatasetConfig.model_validate(written.model_dump())
    folder.mkdir(parents=True, exist_ok=True)
    dataset = load_config(written, folder, source=target)
    written = _pin_detected(written, dataset)
    target.write_text(_header(dataset) + config_yaml(written))
    dataset.metadata["source"]["config"] = str(target)
    return target, dataset


def _pin_detected(config: DatasetConfig, dataset: Dataset) -> DatasetConfig:
    """Write down what was detected (format, separator, key), so a reload never guesses."""
    source = dataset.metadata["source"]
    first = source["files"][0]
    update: dict[str, Any] = {"session": config.session.model_copy(update={"key": source["key"]})}
    if config.format == "auto" and config.separator is None:
        if first["format"] in ("parquet", "csv", "tsv", "semicolon"):
            update["format"] = first["format"]
        else:
            update["separator"] = first["separator"]
    return config.model_copy(update=update)


_YAML_ORDER = (
    "name", "description", "events", "format", "separator", "encoding", "columns",
    "timestamp_unit", "date_format", "session", "items", "users", "drop_invalid", "sha256",
)  # fmt: skip


def config_yaml(config: DatasetConfig) -> str:
    """The config as YAML in the field order of :class:`DatasetConfig`.

    Defaults are left out, except the format, timestamp unit and session key: a reader of the
    file should see how the data is read without knowing the defaults.
    """
    values = config.model_dump(mode="json", exclude_defaults=True)
    pinned = {"format": config.format, "timestamp_unit": config.timestamp_unit}
    values = {"name": config.name, **pinned, **values}
    if config.session.key is not None:
        values["session"] = {"key": config.session.key, **values.get("session", {})}
    values = {k: values[k] for k in _YAML_ORDER if k in values}
    return yaml.safe_dump(values, sort_keys=False, allow_unicode=True, width=100)


def _header(dataset: Dataset) -> str:
    summary = dataset.summary()
    who = "sessions" if dataset.session_keyed else "users"
    return (
        f"# Registered by `recsys data add` on {time.strftime('%Y-%m-%d')}, every row read:\n"
        f"# {summary['interactions']} events, {summary['users']} {who}, {summary['items']} items, "
        f"{summary['first_event']} → {summary['last_event']}.\n"
        f"# `recsys data info {dataset.name}` reads it again.\n"
    )


def check_report(dataset: Dataset) -> str:
    """What ``data add`` checked: files, mapping, counts, displaced columns, dropped rows."""
    summary = dataset.summary()
    source = summary.get("source", {})
    lines = ["checked:"]
    for file in source.get("files", []):
        how = (
            file["format"]
            if file["separator"] is None
            else f"{file['format']}, separator {file['separator']!r}"
        )
        lines.append(f"  {file['path']} ({how}): {file['rows']} rows, {file['kept']} kept")
    mapped = source.get("columns", {})
    names = dict.fromkeys([*EVENT_COLUMNS, *mapped])
    columns = ", ".join(f"{k}={mapped[k]}" for k in names if k in mapped)
    lines.append(f"columns: {columns}")
    who = "sessions (anonymous: every session is a user)" if dataset.session_keyed else "users"
    lines.append(
        f"{summary['interactions']} events, {summary['users']} {who}, {summary['items']} items"
        + (
            f", {summary['sessions']} sessions"
            if summary["sessions"] and not dataset.session_keyed
            else ""
        )
    )
    lines.append(f"time span: {summary['first_event']} → {summary['last_event']}")
    for moved in source.get("displaced_columns", []):
        fate = "all empty, dropped" if moved["empty"] else f"kept as {moved['kept_as']!r}"
        lines.append(
            f"displaced: the file's column {moved['column']!r} by the mapping "
            f"{moved['column']}={moved['replaced_by']} ({fate})"
        )
    for reason, count in source.get("dropped_rows", {}).items():
        first = source.get("dropped_examples", {}).get(reason, "")
        lines.append(f"dropped: {count} row(s), {reason} (first: {first})")
    for message in source.get("warnings", []):
        lines.append(f"warning: {message}")
    for ref in source.get("references", {}):
        if Path(ref).is_absolute():
            lines.append(f"note: {ref} is an absolute path: this config works on this machine only")
    return "\n".join(lines)
