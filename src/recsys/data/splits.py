"""Train / validation / test splits, deterministic under a seed and leak-free.

* :func:`random_split`: per-user random 80/10/10 (RecBole's ``RS`` with ``group_by: user``).
* :func:`temporal_split`: per-user, ordered by time: each user's oldest 80 % train, next 10 %
  validation, latest 10 % test (RecBole's ``TO`` + ``RS``).
* :func:`leave_last_out`: per-user, the last ``n`` events by time held out.
* :func:`time_cutoff_split`: one global cutoff: everything before trains, nothing after does.
* :func:`session_time_split`: whole sessions by time (the last day is test): the split of
  anonymous session logs (session-rec's), and of any log with session ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.data.dataset import Dataset, interaction_matrix
from recsys.types import IntArray


@dataclass
class Split:
    """A dataset cut into train, validation and test interactions (dense ``user``/``item``)."""

    dataset: Dataset
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    protocol: str
    seed: int | None = None

    def train_matrix(self, include_valid: bool = False) -> sp.csr_matrix:
        """Binary user × item CSR of training (optionally + validation) interactions."""
        frame = pd.concat([self.train, self.valid]) if include_valid else self.train
        return interaction_matrix(frame, self.dataset.n_users, self.dataset.n_items)

    def target_users(self, stage: str = "test") -> IntArray:
        """Users with at least one interaction in ``stage`` (``"valid"`` or ``"test"``)."""
        frame = self.test if stage == "test" else self.valid
        return np.unique(frame["user"].to_numpy(np.int64))

    def sizes(self) -> dict[str, int]:
        """Number of interactions in each part."""
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


def _ratio_counts(n: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """RecBole's rounding: valid/test get floor(ratio·n) (at least 1 when n ≥ 3), train the rest."""
    n_valid = int(ratios[1] * n)
    n_test = int(ratios[2] * n)
    if n >= 3:
        n_valid = max(n_valid, 1)
        n_test = max(n_test, 1)
    n_train = n - n_valid - n_test
    return n_train, n_valid, n_test


def _assign(
    frame: pd.DataFrame, order: np.ndarray, ratios: tuple[float, float, float]
) -> np.ndarray:
    """Part label (0 train, 1 valid, 2 test) per row, given each user's rows in ``order``."""
    labels = np.zeros(len(frame), dtype=np.int8)
    users = frame["user"].to_numpy()
    ordered_users = users[order]
    boundaries = np.flatnonzero(np.diff(ordered_users)) + 1
    for group in np.split(order, boundaries):
        n_train, n_valid, _ = _ratio_counts(len(group), ratios)
        labels[group[n_train : n_train + n_valid]] = 1
        labels[group[n_train + n_valid :]] = 2
    return labels


def _make(
    dataset: Dataset, frame: pd.DataFrame, labels: np.ndarray, protocol: str, seed: int | None
) -> Split:
    parts = [frame[labels == k].reset_index(drop=True) for k in range(3)]
    return Split(dataset, parts[0], parts[1], parts[2], protocol=protocol, seed=seed)


def random_split(
    dataset: Dataset, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 2020
) -> Split:
    """Per-user random split (RecBole protocol). Deterministic under ``seed``."""
    frame = dataset.interactions
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(frame))
    # group by user, keeping the random order within each user
    order = shuffled[np.argsort(frame["user"].to_numpy()[shuffled], kind="stable")]
    return _make(dataset, frame, _assign(frame, order, ratios), "random", seed)


def temporal_split(dataset: Dataset, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Split:
    """Per-user temporal split: oldest events train, latest test (ties keep file order)."""
    frame = dataset.interactions
    order = np.lexsort(
        (np.arange(len(frame)), frame["timestamp"].to_numpy(), frame["user"].to_numpy())
    )
    return _make(dataset, frame, _assign(frame, order, ratios), "temporal", None)


def leave_last_out(dataset: Dataset, n_valid: int = 1, n_test: int = 1) -> Split:
    """Per-user: the last ``n_test`` events by time are test, the ``n_valid`` before them valid.

    Users with fewer than ``n_valid + n_test + 1`` events stay entirely in train.
    """
    frame = dataset.interactions
    order = np.lexsort(
        (np.arange(len(frame)), frame["timestamp"].to_numpy(), frame["user"].to_numpy())
    )
    labels = np.zeros(len(frame), dtype=np.int8)
    users = frame["user"].to_numpy()[order]
    boundaries = np.flatnonzero(np.diff(users)) + 1
    for group in np.split(order, boundaries):
        if len(group) <= n_valid + n_test:
            continue
        labels[group[len(group) - n_test - n_valid : len(group) - n_test]] = 1
        labels[group[len(group) - n_test :]] = 2
    return _make(dataset, frame, labels, "leave_last_out", None)


def time_cutoff_split(dataset: Dataset, valid_start: float, test_start: float) -> Split:
    """Global cutoffs: train before ``valid_start``, valid until ``test_start``, test after.

    Only test/valid interactions of users and items seen in train are kept (the rest cannot be
    scored by a model trained before the cutoff; they are cold-start cases).
    """
    if valid_start > test_start:
        raise ValueError("valid_start must not be after test_start")
    frame = dataset.interactions
    ts = frame["timestamp"].to_numpy()
    labels = np.where(ts < valid_start, 0, np.where(ts < test_start, 1, 2)).astype(np.int8)
    split = _make(dataset, frame, labels, "time_cutoff", None)
    known_users = set(split.train["user"])
    split.valid = split.valid[split.valid["user"].isin(known_users)].reset_index(drop=True)
    split.test = split.test[split.test["user"].isin(known_users)].reset_index(drop=True)
    return split


DAY_SECONDS = 86_400.0


def session_time_split(
    dataset: Dataset,
    test_days: float | None = None,
    valid_days: float | None = None,
    *,
    test_fraction: float | None = None,
    valid_fraction: float | None = None,
    test_start: float | None = None,
    valid_start: float | None = None,
    by: str = "end",
    known_items_only: bool = True,
    min_session_length: int = 2,
) -> Split:
    """Split whole sessions by time: older sessions train, the latest ones test.

    Each session goes to one part, by its end time (``by="end"``, default) or start time.
    The test cutoff is given by exactly one of ``test_start`` (Unix seconds), ``test_days``
    (the last days of the log) or ``test_fraction`` (the latest share of sessions); default:
    the last day. Validation, optional, is the sessions just before the test cutoff, given the
    same ways. By end time no training event is later than the cutoff, and on the YOOCHOOSE
    sample (``yoochoose-sample``) ``test_days=1`` reproduces session-rec's train/test files
    session for session.

    As session-rec does, validation and test keep only events on items seen in training (a
    model can only rank those) and then only sessions with at least ``min_session_length``
    events (a session needs a prefix and a next event).

    Args:
        dataset: A session-keyed dataset (sessions are its users), or one with session ids.
        test_days: Test = sessions at or after ``last event − test_days`` days.
        valid_days: Valid = sessions in the ``valid_days`` days before the test cutoff.
        test_fraction: Test = this latest share of sessions (0 < f < 1).
        valid_fraction: Valid = this share of sessions just before the test ones.
        test_start: Test cutoff in Unix seconds.
        valid_start: Validation cutoff in Unix seconds (≤ the test cutoff).
        by: ``end`` or ``start``: which time of a session places it.
        known_items_only: Drop validation / test events on items absent from training.
        min_session_length: Drop shorter validation / test sessions (after that filter).

    Returns:
        A split with ``protocol="session_time"``; ``target_users("test")`` are the test
        sessions (on a session-keyed dataset).

    Raises:
        ValueError: Conflicting or out-of-range cutoffs, or a dataset without sessions.
    """
    if by not in ("end", "start"):
        raise ValueError(f"by: {by!r}; use 'end' or 'start'")
    frame = dataset.interactions
    if dataset.session_keyed:
        codes = frame["user"].to_numpy(np.int64)
    else:
        sessions = frame["session_id"].astype(str)
        if (sessions == "").any():
            raise ValueError(
                f"{dataset.name}: {int((sessions == '').sum())} events without a session id; "
                "session_time_split needs sessions (register the file with a session column "
                "or session.gap_minutes)"
            )
        codes = pd.factorize(sessions)[0].astype(np.int64)
    ts = frame["timestamp"].to_numpy(np.float64)
    grouped = pd.Series(ts).groupby(codes)
    session_time = (grouped.max() if by == "end" else grouped.min()).to_numpy(np.float64)
    placed = np.sort(session_time)
    last = float(ts.max()) if len(ts) else 0.0
    test_cut = _cutoff(placed, last, test_start, test_days, test_fraction, "test", default=1.0)
    valid_cut = test_cut
    if any(v is not None for v in (valid_start, valid_days, valid_fraction)):
        before = placed[placed < test_cut]
        valid_cut = _cutoff(
            before, test_cut, valid_start, valid_days, valid_fraction, "valid", share_of=len(placed)
        )
        if valid_cut > test_cut:
            raise ValueError("valid_start must not be after the test cutoff")
    part_of_session = np.where(
        session_time >= test_cut, 2, np.where(session_time >= valid_cut, 1, 0)
    ).astype(np.int8)
    labels = part_of_session[codes]
    split = _make(dataset, frame, labels, "session_time", None)
    train_items = set(split.train["item"].tolist())
    held_codes = [codes[labels == k] for k in (1, 2)]
    for attr, part_codes in zip(("valid", "test"), held_codes, strict=True):
        part = getattr(split, attr)
        keep = np.ones(len(part), dtype=bool)
        if known_items_only:
            keep &= part["item"].isin(train_items).to_numpy()
        counts = pd.Series(part_codes[keep]).value_counts()
        long_enough = set(counts[counts >= min_session_length].index.tolist())
        keep &= np.isin(part_codes, list(long_enough))
        setattr(split, attr, part[keep].reset_index(drop=True))
    return split


def _cutoff(
    placed: np.ndarray,
    end: float,
    start: float | None,
    days: float | None,
    fraction: float | None,
    part: str,
    default: float | None = None,
    share_of: int | None = None,
) -> float:
    """A time cutoff from exactly one of a time, a number of days before ``end``, or a share."""
    given = [v is not None for v in (start, days, fraction)]
    if sum(given) > 1:
        raise ValueError(f"{part}: give one of {part}_start, {part}_days, {part}_fraction")
    if start is not None:
        return float(start)
    if fraction is not None:
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"{part}_fraction: must be in (0, 1), got {fraction}")
        n = int(np.ceil(fraction * (share_of or len(placed))))
        if n > len(placed) or not len(placed):
            raise ValueError(f"{part}_fraction: {fraction} leaves no sessions before it")
        return float(placed[len(placed) - n])
    days = default if days is None else days
    if days is None or days <= 0:
        raise ValueError(f"{part}_days: must be > 0, got {days}")
    return end - days * DAY_SECONDS


def make_split(dataset: Dataset, protocol: str, seed: int = 2020) -> Split:
    """Split by protocol name: ``random``, ``temporal`` or ``leave_last_out``."""
    if protocol == "random":
        return random_split(dataset, seed=seed)
    if protocol == "temporal":
        return temporal_split(dataset)
    if protocol == "leave_last_out":
        return leave_last_out(dataset)
    raise ValueError(f"protocol: unknown {protocol!r}; use random, temporal or leave_last_out")
