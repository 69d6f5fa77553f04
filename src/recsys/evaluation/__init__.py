"""Evaluation: metrics, full-ranking protocol, benchmarks."""

from recsys.evaluation.protocol import build_queries, evaluate, rank_users, summarize

__all__ = ["build_queries", "evaluate", "rank_users", "summarize"]
