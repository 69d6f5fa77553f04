"""MovieLens loaders: ML-100K (fetched, checksummed, cached) and ml-latest-small (shared folder).

ML-100K may not be redistributed, so it is fetched in code. Sources, in order:

1. the cache ``<cache_dir>/ml-100k`` (written by a previous fetch, checksums re-verified);
2. ``$RECSYS_DATA_DIR/ml-100k`` holding GroupLens's ``u.data``, ``u.item``, ``u.user``;
3. the official GroupLens zip;
4. the PyPI wheel ``recbole==1.2.1``, which ships the data set as RecBole atomic files
   (``ml-100k.inter`` is ``u.data`` with a header line).

Whatever the source, ``u.data`` must have the SHA-256 GroupLens's file has.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.checksums import sha256_bytes, sha256_file, verify_file
from recsys.data.dataset import Dataset, split_genres
from recsys.data.paths import cache_dir, shared_data_dirs
from recsys.errors import ChecksumError, DataError

log = logging.getLogger(__name__)

ML100K_UDATA_SHA256 = "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"
ML100K_OFFICIAL_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_FILE_SHA256 = {
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
ML100K_COUNTS = {"ratings": 100_000, "users": 943, "items": 1682}

ML_LATEST_SMALL_SHA256 = {
    # the header-restored copy in shared/ and the uploader's copy with header "rate"
    "ratings.csv": (
        "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
        "066a2392e21c493a0c9da5775ba1e1425210b2ca5ed9903871b790e6e3e4c194",
    ),
    "movies.csv": ("5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",),
    "tags.csv": ("92a9f8bb7916dceef6151209845788c3643f794dfa79d1feaec7121b5960399d",),
}

_CACHE_FILES = ("u.data", "items.tsv", "users.tsv")


# --------------------------------------------------------------------------- ML-100K


def fetch_ml100k(force: bool = False) -> Path:
    """Make sure ML-100K is in the cache and return its folder.

    Args:
        force: Ignore an existing cache and fetch again.

    Returns:
        ``<cache_dir>/ml-100k`` holding ``u.data`` (GroupLens's bytes), ``items.tsv``,
        ``users.tsv`` and ``checksums.json``.

    Raises:
        ChecksumError: A cached or fetched file does not have its expected checksum.
        DataError: No source could provide the data set.
    """
    target = cache_dir() / "ml-100k"
    if not force and (target / "checksums.json").is_file():
        _verify_cache(target)
        return target
    errors: list[str] = []
    for name, source in (
        ("RECSYS_DATA_DIR", _from_data_dir),
        ("GroupLens zip", _from_official_zip),
        (f"PyPI wheel {RECBOLE_WHEEL}", _from_recbole_wheel),
    ):
        try:
            frames = source()
        except ChecksumError:
            raise
        except Exception as exc:  # noqa: BLE001 - each source may fail; try the next
            errors.append(f"{name}: {exc}")
            log.info("ml-100k source %s unavailable: %s", name, exc)
            continue
        if frames is None:
            continue
        _write_cache(target, *frames)
        log.info("ml-100k fetched from %s into %s", name, target)
        return target
    raise DataError("ml-100k: no source could provide the data set:\n  " + "\n  ".join(errors))


def load_ml100k(force_fetch: bool = False) -> Dataset:
    """Load MovieLens-100K (fetching it if needed).

    Items carry ``title``, ``year`` and ``genres``; users carry ``age``, ``gender``,
    ``occupation`` and ``zip`` (the request context used for cold start).
    """
    folder = fetch_ml100k(force=force_fetch)
    return read_ml100k_folder(folder)


def read_ml100k_folder(folder: Path) -> Dataset:
    """Read a cache folder written by :func:`fetch_ml100k` (checksums verified)."""
    _verify_cache(folder)
    ratings = parse_udata(folder / "u.data")
    items = pd.read_csv(
        folder / "items.tsv", sep="\t", dtype={"item_id": str}, keep_default_na=False
    )
    items["year"] = pd.to_numeric(items["year"], errors="coerce")
    items["genres"] = [split_genres(g) for g in items["genres"]]
    users = pd.read_csv(folder / "users.tsv", sep="\t", dtype={"user_id": str, "zip": str})
    return Dataset(
        name="ml-100k",
        interactions=ratings,
        items=items.set_index("item_id"),
        users=users.set_index("user_id"),
    )


def parse_udata(path: Path) -> pd.DataFrame:
    """Parse GroupLens ``u.data`` (user, item, rating, timestamp; tab separated)."""
    try:
        frame = pd.read_csv(
            path, sep="\t", header=None, names=["user_id", "item_id", "value", "timestamp"]
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: cannot parse as u.data: {exc}") from exc
    if frame.isna().any().any():
        raise DataError(f"{path}: rows with missing fields (truncated or corrupt file)")
    frame["event_type"] = "rating"
    return frame


def _verify_cache(folder: Path) -> None:
    manifest = folder / "checksums.json"
    if not manifest.is_file():
        raise DataError(f"{manifest}: missing; the ml-100k cache is incomplete (fetch again)")
    try:
        expected = json.loads(manifest.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{manifest}: not valid JSON: {exc}") from exc
    verify_file(folder / "u.data", ML100K_UDATA_SHA256)
    for name in _CACHE_FILES[1:]:
        verify_file(folder / name, expected.get(name, ""))


def _write_cache(target: Path, udata: bytes, items: pd.DataFrame, users: pd.DataFrame) -> None:
    if sha256_bytes(udata) != ML100K_UDATA_SHA256:
        raise ChecksumError(
            f"u.data: sha256 {sha256_bytes(udata)} is not GroupLens's {ML100K_UDATA_SHA256}"
        )
    for label, frame, expected in (
        ("items", items, ML100K_COUNTS["items"]),
        ("users", users, ML100K_COUNTS["users"]),
    ):
        if len(frame) != expected:
            raise DataError(f"ml-100k {label}: {len(frame)} rows, expected {expected}")
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target, prefix=".staging-"))
    (staging / "u.data").write_bytes(udata)
    items.to_csv(staging / "items.tsv", sep="\t", index=False)
    users.to_csv(staging / "users.tsv", sep="\t", index=False)
    manifest = {name: sha256_file(staging / name) for name in _CACHE_FILES}
    (staging / "checksums.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for name in (*_CACHE_FILES, "checksums.json"):
        os.replace(staging / name, target / name)
    staging.rmdir()


def _from_data_dir() -> tuple[bytes, pd.DataFrame, pd.DataFrame] | None:
    env = os.environ.get("RECSYS_DATA_DIR")
    if not env:
        return None
    folder = Path(env) / "ml-100k"
    if not (folder / "u.data").is_file():
        return None
    verify_file(folder / "u.data", ML100K_UDATA_SHA256)
    return (
        (folder / "u.data").read_bytes(),
        _parse_uitem((folder / "u.item").read_bytes(), str(folder / "u.item")),
        _parse_uuser((folder / "u.user").read_bytes(), str(folder / "u.user")),
    )


def _from_official_zip() -> tuple[bytes, pd.DataFrame, pd.DataFrame]:
    if os.environ.get("RECSYS_OFFLINE"):
        raise DataError("RECSYS_OFFLINE is set")
    with urllib.request.urlopen(ML100K_OFFICIAL_URL, timeout=10) as response:
        payload = response.read()
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        udata = archive.read("ml-100k/u.data")
        if sha256_bytes(udata) != ML100K_UDATA_SHA256:
            raise ChecksumError(f"{ML100K_OFFICIAL_URL}: ml-100k/u.data has the wrong sha256")
        items = _parse_uitem(archive.read("ml-100k/u.item"), "ml-100k/u.item")
        users = _parse_uuser(archive.read("ml-100k/u.user"), "ml-100k/u.user")
    return udata, items, users


def _from_recbole_wheel() -> tuple[bytes, pd.DataFrame, pd.DataFrame]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp]
        subprocess.run([*cmd, RECBOLE_WHEEL], check=True, capture_output=True, timeout=300)
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if len(wheels) != 1:
            raise DataError(f"pip download {RECBOLE_WHEEL} produced {wheels}")
        verify_file(wheels[0], RECBOLE_WHEEL_SHA256)
        with zipfile.ZipFile(wheels[0]) as archive:
            base = "recbole/dataset_example/ml-100k/"
            inter = archive.read(base + "ml-100k.inter")
            item_bytes = archive.read(base + "ml-100k.item")
            user_bytes = archive.read(base + "ml-100k.user")
    for name, data in (("ml-100k.item", item_bytes), ("ml-100k.user", user_bytes)):
        if sha256_bytes(data) != RECBOLE_FILE_SHA256[name]:
            raise ChecksumError(f"{RECBOLE_WHEEL} {name}: unexpected sha256")
    udata = inter.split(b"\n", 1)[1]
    items = pd.read_csv(io.BytesIO(item_bytes), sep="\t", dtype=str, keep_default_na=False)
    items.columns = ["item_id", "title", "year", "genres"]
    items["genres"] = ["|".join(g.split()) for g in items["genres"]]
    users = pd.read_csv(io.BytesIO(user_bytes), sep="\t", dtype=str)
    users.columns = ["user_id", "age", "gender", "occupation", "zip"]
    users["age"] = users["age"].astype(int)
    return udata, items, users


def _parse_uitem(data: bytes, source: str) -> pd.DataFrame:
    rows = []
    for line in data.decode("latin-1").splitlines():
        fields = line.split("|")
        if len(fields) != 5 + len(ML100K_GENRES):
            raise DataError(f"{source}: a line has {len(fields)} fields, expected 24")
        title = fields[1]
        match = re.search(r"\((\d{4})\)\s*$", title)
        year = match.group(1) if match else fields[2][-4:] if fields[2] else ""
        title = re.sub(r"\s*\(\d{4}\)\s*$", "", title)
        genres = [g for g, flag in zip(ML100K_GENRES, fields[5:], strict=True) if flag == "1"]
        rows.append(
            {"item_id": fields[0], "title": title, "year": year, "genres": "|".join(genres)}
        )
    return pd.DataFrame(rows)


def _parse_uuser(data: bytes, source: str) -> pd.DataFrame:
    rows = [line.split("|") for line in data.decode("latin-1").splitlines() if line]
    if any(len(r) != 5 for r in rows):
        raise DataError(f"{source}: every line must have 5 fields")
    users = pd.DataFrame(rows, columns=["user_id", "age", "gender", "occupation", "zip"])
    users["age"] = users["age"].astype(int)
    return users


# --------------------------------------------------------------------------- ml-latest-small


def find_ml_latest_small() -> Path:
    """The ``ml-latest-small`` folder from the shared data directories.

    Raises:
        DataError: Not found in any of the searched directories.
    """
    searched = []
    for base in shared_data_dirs():
        folder = base / "ml-latest-small"
        searched.append(str(folder))
        if (folder / "ratings.csv").is_file():
            return folder
    raise DataError(
        "ml-latest-small: ratings.csv not found in "
        + ", ".join(searched)
        + " (set RECSYS_DATA_DIR to the folder that holds ml-latest-small/)"
    )


def load_ml_latest_small(folder: Path | None = None) -> Dataset:
    """Load MovieLens latest-small (ratings, movies with genres and year, tags).

    Args:
        folder: The ``ml-latest-small`` folder; found with :func:`find_ml_latest_small` if omitted.
    """
    folder = folder or find_ml_latest_small()
    for name, accepted in ML_LATEST_SMALL_SHA256.items():
        verify_file(folder / name, accepted)
    # the header differs between copies ("rating" / "rate"): name the columns ourselves
    ratings = pd.read_csv(
        folder / "ratings.csv", header=0, names=["user_id", "item_id", "value", "timestamp"]
    )
    ratings["event_type"] = "rating"
    movies = pd.read_csv(folder / "movies.csv", dtype={"movieId": str})
    year = movies["title"].str.extract(r"\((\d{4})\)\s*$")[0]
    # plain arrays: Series would be aligned on their 0..n index against the movieId index
    items = pd.DataFrame(
        {
            "title": movies["title"].str.replace(r"\s*\(\d{4}\)\s*$", "", regex=True).to_numpy(),
            "year": pd.to_numeric(year, errors="coerce").astype(np.float64).to_numpy(),
            "genres": [split_genres(g) for g in movies["genres"]],
        },
        index=pd.Index(movies["movieId"], name="item_id"),
    )
    tags = pd.read_csv(folder / "tags.csv", dtype={"movieId": str})
    by_item = tags.assign(tag=tags["tag"].astype(str).str.lower().str.strip()).groupby("movieId")
    item_tags = by_item["tag"].agg(lambda s: tuple(sorted(set(s))))
    items["tags"] = [item_tags.get(i, ()) for i in items.index]
    return Dataset(name="ml-latest-small", interactions=ratings, items=items)
