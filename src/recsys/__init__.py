"""recsys: a notebook-first research framework for real-time personalisation."""

__version__ = "0.1.0"
