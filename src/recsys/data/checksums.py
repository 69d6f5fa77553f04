"""SHA-256 helpers: a fetched or cached file is used only when its checksum matches."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from recsys.errors import ChecksumError, DataError


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def verify_file(path: Path, expected: str | Iterable[str]) -> None:
    """Raise unless ``path`` exists and its SHA-256 is one of ``expected``.

    Raises:
        DataError: The file is missing.
        ChecksumError: The file's checksum differs (corrupt, truncated or a different edition).
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    accepted = {expected} if isinstance(expected, str) else set(expected)
    actual = sha256_file(path)
    if actual not in accepted:
        size = path.stat().st_size
        raise ChecksumError(
            f"{path}: sha256 {actual} ({size} bytes) does not match the expected "
            f"{' or '.join(sorted(accepted))}; the file is corrupt, truncated or a different "
            "edition. Delete it to fetch it again."
        )
