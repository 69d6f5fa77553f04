"""Errors raised by recsys. Each names the file, field or value that is wrong."""

from __future__ import annotations


class RecsysError(Exception):
    """Base class of every error recsys raises on purpose."""


class DataError(RecsysError, ValueError):
    """A data file or frame is missing, corrupt, truncated or does not match its schema."""


class ChecksumError(DataError):
    """A fetched or cached file does not have the checksum it must have."""


class NotFittedError(RecsysError, RuntimeError):
    """A component was asked to recommend before it was trained or loaded."""
