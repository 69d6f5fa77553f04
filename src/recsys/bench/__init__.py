"""Benchmarks: one room above the stages (``recsys bench ...``).

Each benchmark orchestrates the stages — models from config files
(:mod:`recsys.bench.registry`), served by the :class:`~recsys.serving.Engine` — and writes
JSON and Markdown under ``experiments/bench/<name>/``. No stage imports from here.

* :mod:`recsys.bench.quality` — every model, one split, full ranking (``bench quality``);
* :mod:`recsys.bench.freshness` — batch / session / real-time profiles; ingest cost;
* :mod:`recsys.bench.decision` — diversity trade-off, cold start, OPE, decision latency.
"""

from recsys.bench.registry import BenchModel, load_registry

__all__ = ["BenchModel", "load_registry"]
