"""Data: schema, loaders (MovieLens, generic events files), splits and a synthetic generator."""

from recsys.data.dataset import Dataset, IdIndex, histories, interaction_matrix
from recsys.data.events_file import load_events_file
from recsys.data.movielens import fetch_ml100k, load_ml100k, load_ml_latest_small
from recsys.data.schema import EVENT_COLUMNS, validate_interactions
from recsys.data.splits import (
    Split,
    leave_last_out,
    make_split,
    random_split,
    temporal_split,
    time_cutoff_split,
)
from recsys.data.synthetic import SyntheticConfig, generate

DATASETS = ("ml-100k", "ml-latest-small")


def load_dataset(name: str) -> Dataset:
    """Load a dataset by name: ``ml-100k``, ``ml-latest-small`` or ``synthetic``."""
    if name == "ml-100k":
        return load_ml100k()
    if name == "ml-latest-small":
        return load_ml_latest_small()
    if name == "synthetic":
        return generate()
    raise ValueError(f"dataset: unknown {name!r}; choose one of {(*DATASETS, 'synthetic')}")


__all__ = [
    "DATASETS",
    "EVENT_COLUMNS",
    "Dataset",
    "IdIndex",
    "Split",
    "SyntheticConfig",
    "fetch_ml100k",
    "generate",
    "histories",
    "interaction_matrix",
    "leave_last_out",
    "load_dataset",
    "load_events_file",
    "load_ml100k",
    "load_ml_latest_small",
    "make_split",
    "random_split",
    "temporal_split",
    "time_cutoff_split",
    "validate_interactions",
]
