"""Data: schema, loaders (MovieLens, events files, registered datasets), splits, synthetic data."""

from recsys.data.dataset import Dataset, IdIndex, histories, interaction_matrix
from recsys.data.events_file import DataWarning, load_events_file, read_events
from recsys.data.movielens import fetch_ml100k, load_ml100k, load_ml_latest_small
from recsys.data.registry import (
    BUILTIN_DATASETS,
    DatasetConfig,
    add_dataset,
    available_datasets,
    load_registered,
)
from recsys.data.schema import EVENT_COLUMNS, validate_interactions
from recsys.data.splits import (
    Split,
    leave_last_out,
    make_split,
    random_split,
    session_time_split,
    temporal_split,
    time_cutoff_split,
)
from recsys.data.synthetic import SyntheticConfig, generate
from recsys.data.yoochoose import load_yoochoose_sample, session_split

DATASETS = ("ml-100k", "ml-latest-small")


def load_dataset(name: str) -> Dataset:
    """Load a dataset by name.

    Args:
        name: A built-in (``ml-100k``, ``ml-latest-small``, ``synthetic``), a dataset
            registered in ``experiments/configs/datasets`` (``recsys data add``), or the path
            of such a config file.

    Raises:
        DataError: An unknown name (the message lists the available ones) or bad data.
    """
    if name == "ml-100k":
        return load_ml100k()
    if name == "ml-latest-small":
        return load_ml_latest_small()
    if name == "synthetic":
        return generate()
    return load_registered(name)


__all__ = [
    "BUILTIN_DATASETS",
    "DATASETS",
    "EVENT_COLUMNS",
    "DataWarning",
    "Dataset",
    "DatasetConfig",
    "IdIndex",
    "Split",
    "SyntheticConfig",
    "add_dataset",
    "available_datasets",
    "fetch_ml100k",
    "generate",
    "histories",
    "interaction_matrix",
    "leave_last_out",
    "load_dataset",
    "load_events_file",
    "load_ml100k",
    "load_ml_latest_small",
    "load_registered",
    "load_yoochoose_sample",
    "make_split",
    "random_split",
    "read_events",
    "session_split",
    "session_time_split",
    "temporal_split",
    "time_cutoff_split",
    "validate_interactions",
]
