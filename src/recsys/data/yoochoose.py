"""The YOOCHOOSE click sample (RecSys Challenge 2015, as prepared by session-rec), read in place.

Anonymous e-commerce sessions: tab-separated ``SessionId  ItemId  Time`` (Unix seconds). The
sessions are the users of the returned :class:`~recsys.data.Dataset` (``user_id`` =
``SessionId``, ``session_id`` too), every event a ``click``. Four parts, each checksummed:

* ``train_full`` / ``test``: one time-ordered split, test = the last day;
* ``train_tr`` / ``train_valid``: ``train_full`` split again the same way, for tuning.

The files are read from the shared data folder (``<shared>/yoochoose-clicks-sample``) and
never copied; :func:`session_split` builds the protocol's :class:`~recsys.data.Split`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recsys.data.checksums import verify_file
from recsys.data.dataset import Dataset
from recsys.data.paths import shared_data_dirs
from recsys.data.splits import Split
from recsys.errors import DataError

FOLDER = "yoochoose-clicks-sample"
PREFIX = "yoochoose-clicks-100k"
# sha256 of each part, from the folder's PROVENANCE.md (files copied byte for byte)
YOOCHOOSE_SHA256: dict[str, str] = {
    "train_full": "9842c90358298ee784fcf0c9dccb2eeb283ab04368e53bdeee896747f4c03e1e",
    "test": "380410c606403531019e1ec0b4d192ef90492d594b9b5a91633b860618dd7136",
    "train_tr": "fb4c6381c8e5bc4de51553cb1ed210fb4016c87d2425d58344cd6b19e81c133a",
    "train_valid": "14fca72e690c19b0da391059b7cf2c1b611cddbd1248ce93578a039ddb26ea69",
}
# (training part, evaluated part) of each stage: tune on "valid", report "test" once
STAGES: dict[str, tuple[str, str]] = {
    "valid": ("train_tr", "train_valid"),
    "test": ("train_full", "test"),
}


def find_yoochoose_sample() -> Path:
    """The ``yoochoose-clicks-sample`` folder among the shared data folders.

    Raises:
        DataError: No searched folder holds it (the message lists where it looked).
    """
    searched = []
    for base in shared_data_dirs():
        folder = base / FOLDER
        searched.append(str(folder))
        if folder.is_dir():
            return folder
    raise DataError(
        f"{FOLDER}: not found in " + ", ".join(searched) + " (set RECSYS_DATA_DIR to the "
        f"folder that holds {FOLDER}/)"
    )


def part_path(part: str, folder: Path | None = None) -> Path:
    """Path of one part's file (``train_full``, ``test``, ``train_tr``, ``train_valid``)."""
    if part not in YOOCHOOSE_SHA256:
        raise ValueError(f"part: unknown {part!r}; choose one of {sorted(YOOCHOOSE_SHA256)}")
    return (folder or find_yoochoose_sample()) / f"{PREFIX}_{part}.txt"


def read_part(part: str, folder: Path | None = None) -> pd.DataFrame:
    """One part as an interaction frame (sessions as users), its sha256 verified first.

    Raises:
        DataError: The file is missing or lacks a column (the message names the file).
        ChecksumError: Its checksum is not the one in PROVENANCE.md.
    """
    path = part_path(part, folder)
    verify_file(path, YOOCHOOSE_SHA256[part])
    raw = pd.read_csv(path, sep="\t", dtype={"SessionId": str, "ItemId": str})
    missing = [c for c in ("SessionId", "ItemId", "Time") if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(raw.columns)}")
    return pd.DataFrame(
        {
            "user_id": raw["SessionId"],
            "item_id": raw["ItemId"],
            "timestamp": raw["Time"],
            "event_type": "click",
            "value": 1.0,
            "session_id": raw["SessionId"],
        }
    )


def load_yoochoose_sample(part: str = "train_full", folder: Path | None = None) -> Dataset:
    """One named part of the sample as a :class:`Dataset` whose users are the sessions.

    Args:
        part: ``train_full``, ``test``, ``train_tr`` or ``train_valid``.
        folder: The sample's folder (default: found among the shared data folders).
    """
    return Dataset(
        name=f"yoochoose-sample:{part}", interactions=read_part(part, folder), items=_items()
    )


def session_split(stage: str = "test", folder: Path | None = None) -> Split:
    """The session protocol's split: train on one part, evaluate on the next.

    ``stage="test"`` trains on ``train_full`` and evaluates on ``test`` (the last day);
    ``stage="valid"`` trains on ``train_tr`` and evaluates on ``train_valid`` (for tuning).
    The catalogue is the training part's items, in order of first click (the evaluated
    part's clicks of other items — none in this sample — are dropped, as session-rec's
    preprocessing does). The evaluated sessions are ``split.test``; ``split.valid`` is
    empty: models that early-stop take their epochs from the ``valid`` stage.

    Raises:
        ValueError: ``stage`` is neither ``"test"`` nor ``"valid"``.
    """
    if stage not in STAGES:
        raise ValueError(f"stage: must be one of {sorted(STAGES)}, not {stage!r}")
    train_part, eval_part = STAGES[stage]
    train = read_part(train_part, folder)
    target = read_part(eval_part, folder)
    items = list(dict.fromkeys(train.sort_values("timestamp", kind="stable")["item_id"]))
    target = target[target["item_id"].isin(set(items))]
    frame = pd.concat([train.assign(_part=0), target.assign(_part=2)], ignore_index=True)
    data = Dataset(
        name=f"yoochoose-sample:{stage}",
        interactions=frame,
        items=_items(items),
    )
    inter = data.interactions
    part = inter.pop("_part").to_numpy()
    return Split(
        data,
        train=inter[part == 0].reset_index(drop=True),
        valid=inter.iloc[0:0].reset_index(drop=True),
        test=inter[part == 2].reset_index(drop=True),
        protocol="sessions",
    )


def _items(ids: list[str] | None = None) -> pd.DataFrame:
    return pd.DataFrame(index=pd.Index(ids or [], name="item_id", dtype=str))
