"""The ``recsys`` command line: data, bench, train, tune, demo (stages add their commands)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from recsys.errors import RecsysError

app = typer.Typer(
    help="recsys: real-time personalisation research framework.", no_args_is_help=True
)
data_app = typer.Typer(help="Fetch, register and inspect datasets.", no_args_is_help=True)
bench_app = typer.Typer(
    help="Benchmarks; each writes JSON under its --out folder.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
train_app = typer.Typer(
    help="Train a neural stage and save it to a directory (load never retrains).",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")
bento_app = typer.Typer(help="Build and ship the personalisation Bento.", no_args_is_help=True)
app.add_typer(bento_app, name="bento")

DEFAULT_BENCH_DIR = Path("experiments/bench")
DATASET_HELP = (
    "A built-in (ml-100k, ml-latest-small, synthetic) or registered dataset (recsys data list)."
)


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


@data_app.command("fetch")
def data_fetch(
    dataset: Annotated[str, typer.Argument(help="ml-100k")] = "ml-100k",
    force: Annotated[bool, typer.Option(help="Fetch again even if cached.")] = False,
) -> None:
    """Fetch a dataset into the cache (checksums verified)."""
    from recsys.data.movielens import fetch_ml100k

    if dataset != "ml-100k":
        _fail(ValueError(f"dataset: only ml-100k is fetched; {dataset!r} is read in place"))
    try:
        folder = fetch_ml100k(force=force)
    except RecsysError as exc:
        _fail(exc)
    typer.echo(f"ml-100k ready in {folder}")


@data_app.command("info")
def data_info(
    dataset: Annotated[str, typer.Argument(help="A built-in or registered dataset.")],
) -> None:
    """Print a dataset's counts, time span and (registered datasets) source as JSON."""
    from recsys.data import load_dataset

    try:
        summary = load_dataset(dataset).summary()
    except (RecsysError, ValueError) as exc:
        _fail(exc)
    typer.echo(json.dumps(summary, indent=2, default=str))


@data_app.command("list")
def data_list() -> None:
    """List the dataset names every command takes: built-ins, then registered configs."""
    from recsys.data.registry import BUILTIN_DATASETS, registered_datasets

    for name in BUILTIN_DATASETS:
        typer.echo(f"{name}\tbuilt-in")
    for name, path in registered_datasets().items():
        typer.echo(f"{name}\t{path}")


_SEPARATOR_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    """``["user_id=visitor", ...]`` → ``{"user_id": "visitor"}``."""
    out: dict[str, str] = {}
    for value in values or []:
        target, sep, source = value.partition("=")
        if not sep or not target.strip() or not source.strip():
            raise typer.BadParameter(
                f"{value!r}: expected SCHEMA_COLUMN=FILE_COLUMN", param_hint=option
            )
        out[target.strip()] = source.strip()
    return out


def _separator(value: str | None) -> str | None:
    return None if value is None else _SEPARATOR_NAMES.get(value, value)


@data_app.command("add")
def data_add(
    name: Annotated[str, typer.Argument(help="Name of the new dataset (not a built-in).")],
    events: Annotated[
        list[Path], typer.Option("--events", "-e", help="Events file (repeatable, read in order).")
    ],
    fmt: Annotated[
        str, typer.Option("--format", help="auto | csv | tsv | semicolon | parquet")
    ] = "auto",
    sep: Annotated[
        str | None, typer.Option("--sep", help="Separator (tab, comma, ';', ...); else sniffed.")
    ] = None,
    mapping: Annotated[
        list[str] | None,
        typer.Option("--map", help="SCHEMA=COLUMN, e.g. user_id=visitor (repeatable)."),
    ] = None,
    timestamp_unit: Annotated[
        str, typer.Option("--timestamp-unit", help="s | ms | us | ns (numeric timestamps).")
    ] = "s",
    date_format: Annotated[
        str | None, typer.Option("--date-format", help="strftime format of date strings.")
    ] = None,
    session_column: Annotated[
        str | None, typer.Option("--session-column", help="The file's session id column.")
    ] = None,
    session_key: Annotated[
        str | None,
        typer.Option("--session-key", help="user | session (default: session if no user id)."),
    ] = None,
    session_gap: Annotated[
        float | None, typer.Option("--session-gap", help="Derive sessions: idle minutes.")
    ] = None,
    items: Annotated[Path | None, typer.Option("--items", help="Item side file.")] = None,
    item_map: Annotated[
        list[str] | None,
        typer.Option("--item-map", help="item_id|title|genres|year=COLUMN (repeatable)."),
    ] = None,
    genres_sep: Annotated[str, typer.Option("--genres-sep", help="Inside genres.")] = "|",
    users: Annotated[Path | None, typer.Option("--users", help="User side file.")] = None,
    user_map: Annotated[
        list[str] | None, typer.Option("--user-map", help="user_id=COLUMN.")
    ] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding.")] = "utf-8",
    description: Annotated[str, typer.Option(help="One line for reports.")] = "",
    drop_invalid: Annotated[
        bool, typer.Option(help="Drop rows with empty ids / bad values (else refuse the file).")
    ] = False,
    checksum: Annotated[bool, typer.Option(help="Record SHA-256s (checked on load).")] = True,
    folder: Annotated[
        Path | None,
        typer.Option("--dir", help="Config folder (default experiments/configs/datasets)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing config.")] = False,
) -> None:
    """Check events files (read in full), then register them: configs/datasets/NAME.yaml."""
    from recsys.data.registry import DatasetConfig, add_dataset, check_report

    columns = _pairs(mapping, "--map")
    if session_column:
        columns["session_id"] = session_column
    spec: dict[str, object] = {
        "name": name,
        "description": description,
        "events": [str(p) for p in events],
        "format": fmt,
        "separator": _separator(sep),
        "encoding": encoding,
        "columns": columns,
        "timestamp_unit": timestamp_unit,
        "date_format": date_format,
        "session": {"key": session_key, "gap_minutes": session_gap},
        "drop_invalid": drop_invalid,
    }
    if items is not None:
        spec["items"] = {
            "path": str(items),
            "columns": _pairs(item_map, "--item-map"),
            "genres_separator": genres_sep,
        }
    if users is not None:
        spec["users"] = {"path": str(users), "columns": _pairs(user_map, "--user-map")}
    try:
        config = DatasetConfig.model_validate(spec)
        path, dataset = add_dataset(config, folder=folder, force=force, checksum=checksum)
    except ValidationError as exc:
        _fail(ValueError(_validation_message(exc)))
    except (RecsysError, ValueError) as exc:
        _fail(exc)
    typer.echo(check_report(dataset))
    typer.echo(f"wrote {path}")


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'dataset'}: {e['msg']}" for e in exc.errors()
    )


@bench_app.command("quality")
def bench_quality(
    dataset: Annotated[str, typer.Option(help=DATASET_HELP)] = "ml-100k",
    protocol: Annotated[str, typer.Option(help="random | temporal")] = "random",
    out: Annotated[Path, typer.Option(help="Output folder.")] = DEFAULT_BENCH_DIR / "quality",
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Only these models (repeatable).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Split seed.")] = 2020,
    user_context: Annotated[
        bool, typer.Option(help="Serve the user table's context (off: measure the skew).")
    ] = True,
    configs: Annotated[
        Path | None, typer.Option(help="Model config folder (default experiments/configs/models).")
    ] = None,
) -> None:
    """Train, serve (Engine) and evaluate every model on one split; write quality.json/.md."""
    from recsys.bench.quality import quality_table, run_quality

    try:
        report = run_quality(
            dataset,
            protocol,
            out,
            models=model,
            seed=seed,
            user_context=user_context,
            configs=configs,
        )
    except (RecsysError, ValueError) as exc:
        _fail(exc)
    typer.echo(quality_table(report))
    typer.echo(f"\nwrote {out / 'quality.json'} and {out / 'quality.md'}")


@bench_app.command("freshness")
def bench_freshness(
    dataset: Annotated[
        list[str] | None,
        typer.Option("--dataset", "-d", help="Repeatable; default ml-100k and ml-latest-small."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = DEFAULT_BENCH_DIR / "freshness",
    test_fraction: Annotated[float, typer.Option(help="Last share of events replayed.")] = 0.1,
    max_events: Annotated[int | None, typer.Option(help="Replay only N test events.")] = None,
    throughput_events: Annotated[int, typer.Option(help="Events ingested for events/s.")] = 100_000,
    latency_samples: Annotated[int, typer.Option(help="Single events timed for latency.")] = 1000,
    batch_size: Annotated[int, typer.Option(help="Events per ingest call.")] = 500,
    redis: Annotated[bool, typer.Option(help="Also measure a local redis-server.")] = True,
    replay: Annotated[bool, typer.Option(help="Run the replay tables (else ingest only).")] = True,
) -> None:
    """Batch vs session vs real-time profiles (same model) + ingest throughput and latency."""
    from recsys.bench.freshness import freshness_table, run_freshness
    from recsys.evaluation.replay import FreshnessConfig

    try:
        config = FreshnessConfig(test_fraction=test_fraction, max_events=max_events)
        report = run_freshness(
            dataset or ["ml-100k", "ml-latest-small"],
            out,
            config,
            throughput_events=throughput_events,
            latency_samples=latency_samples,
            batch_size=batch_size,
            redis=redis,
            replay=replay,
        )
    except (RecsysError, ValueError) as exc:
        _fail(exc)
    typer.echo(freshness_table(report))
    typer.echo(f"\nwrote {out / 'freshness.json'} and {out / 'freshness.md'}")


@bench_app.command("decision")
def bench_decision(
    dataset: Annotated[
        list[str] | None,
        typer.Option("--dataset", "-d", help="Repeatable; default ml-100k and ml-latest-small."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = DEFAULT_BENCH_DIR / "decision",
    lam: Annotated[
        list[float] | None, typer.Option("--lam", help="Trade-off weights (repeatable).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Split seed.")] = 2020,
    latency_repeats: Annotated[int, typer.Option(help="Timed calls per component.")] = 2000,
) -> None:
    """MMR/DPP accuracy-diversity trade-off, cold start, OPE check, per-component latency."""
    from recsys.bench.decision import DEFAULT_LAMBDAS, decision_table, run_decision_bench

    try:
        report = run_decision_bench(
            out,
            datasets=dataset or ["ml-100k", "ml-latest-small"],
            lambdas=lam or DEFAULT_LAMBDAS,
            seed=seed,
            latency_repeats=latency_repeats,
        )
    except (RecsysError, ValueError) as exc:
        _fail(exc)
    typer.echo(decision_table(report))
    typer.echo(f"\nwrote {out / 'decision.json'} and {out / 'decision.md'}")


@bench_app.command("latency")
def bench_latency(
    dataset: Annotated[str, typer.Option(help=DATASET_HELP)] = "ml-latest-small",
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Models to serve (repeatable).")
    ] = None,
    users: Annotated[int, typer.Option(help="Requests timed, one per user.")] = 500,
    protocol: Annotated[str, typer.Option(help="random | temporal")] = "random",
    out: Annotated[Path, typer.Option(help="Output folder.")] = DEFAULT_BENCH_DIR / "latency",
) -> None:
    """In-process Engine latency per stage (profile, retrieval, ranking, decision)."""
    from recsys.bench.latency import latency_table, run_latency

    try:
        report = run_latency(
            dataset,
            out,
            models=model or ["ease", "two_tower+ranker"],
            protocol=protocol,
            users=users,
        )
    except (RecsysError, ValueError) as exc:
        _fail(exc)
    typer.echo(latency_table(report))
    typer.echo(f"\nwrote {out / 'latency.json'} and {out / 'latency.md'}")


@bench_app.command("serve")
def bench_serve(
    dataset: Annotated[str, typer.Option(help="Dataset the served model trains on.")] = (
        "ml-latest-small"
    ),
    model: Annotated[str, typer.Option(help="Registered model to serve.")] = "two_tower+ranker",
    tag: Annotated[str | None, typer.Option(help="An exported engine's tag.")] = None,
    url: Annotated[str | None, typer.Option(help="Drive a running server instead.")] = None,
    workers: Annotated[
        int,
        typer.Option(
            help="bentoml serve workers (three keep two cores busy while one waits on Redis)."
        ),
    ] = 3,
    requests: Annotated[int, typer.Option(help="Requests per concurrency level.")] = 2000,
    rate: Annotated[
        list[float] | None, typer.Option("--rate", help="Open-loop rates (repeatable).")
    ] = None,
    rate_seconds: Annotated[float, typer.Option(help="Seconds per open-loop rate.")] = 10.0,
    soak_seconds: Annotated[float, typer.Option(help="Soak at half capacity (0: none).")] = 0.0,
    out: Annotated[Path, typer.Option(help="Output folder.")] = DEFAULT_BENCH_DIR / "serve",
) -> None:
    """The real bentoml serve under load from a separate process; capacity; in-process split."""
    from recsys.bench.serve import run_serve_bench, serve_table

    try:
        report = run_serve_bench(
            out,
            dataset=dataset,
            model=model,
            tag=tag,
            url=url,
            workers=workers,
            requests_per_level=requests,
            rates=rate or (100, 200, 300, 400, 500, 600, 700, 800),
            rate_seconds=rate_seconds,
            soak_seconds=soak_seconds,
        )
    except RecsysError as exc:
        _fail(exc)
    typer.echo(serve_table(report))
    typer.echo(f"\nwrote {out / 'serve.json'} and {out / 'serve.md'}")


@bench_app.command("timing")
def bench_timing(
    dataset: Annotated[str, typer.Option(help="Any dataset name (built-in or registered).")] = (
        "ml-100k"
    ),
    model: Annotated[str, typer.Option(help="Registered model every mode serves.")] = "ease",
    test_fraction: Annotated[float, typer.Option(help="Share of events after the cut.")] = 0.1,
    max_events: Annotated[int | None, typer.Option(help="Replay only N events.")] = None,
    tolerance: Annotated[float, typer.Option(help="Good enough: within this of the best.")] = 0.05,
    out: Annotated[Path | None, typer.Option(help="Output folder.")] = None,
) -> None:
    """Batch vs session vs real-time vs edge on one replay: quality, cost, a verdict."""
    from recsys.bench.timing import run_timing, timing_table

    out = out or DEFAULT_BENCH_DIR / "timing" / dataset
    try:
        report = run_timing(
            dataset, out, model=model, test_fraction=test_fraction, max_events=max_events,
            tolerance=tolerance,
        )  # fmt: skip
    except (RecsysError, ValueError) as exc:
        _fail(exc)
    typer.echo(timing_table(report))
    typer.echo(f"\nwrote {out / 'timing.json'}, {out / 'timing.md'} and the plots")


@app.command("recommend")
def recommend_batch(
    out: Annotated[Path, typer.Option(help="Parquet file of the lists.")],
    dataset: Annotated[str, typer.Option(help="Any dataset name.")] = "ml-100k",
    model: Annotated[str, typer.Option(help="Registered model.")] = "ease",
    n: Annotated[int, typer.Option(help="List length per user.")] = 100,
    redis_url: Annotated[
        str | None, typer.Option(help="Also load the lists into this Redis (online store).")
    ] = None,
) -> None:
    """The batch job: train on all events, precompute every known user's top-N (Parquet)."""
    from recsys.bench.registry import load_registry, training_order
    from recsys.data import load_dataset
    from recsys.data.splits import Split
    from recsys.serving.build import build_engine
    from recsys.serving.modes import precompute

    try:
        data = load_dataset(dataset)
        frame = data.interactions
        split = Split(data, frame, frame.iloc[0:0], frame.iloc[0:0], protocol="all")
        registry = load_registry()
        trained: dict[str, object] = {}
        for name in training_order([model], registry):
            trained[name] = registry[name].create(dataset, registry, trained).fit(split)
        engine = build_engine(split, retriever=trained[model])  # type: ignore[arg-type]
        lists, cpu = precompute(engine, list(data.user_index.ids), n=n)
    except (RecsysError, ValueError) as exc:
        _fail(exc)
    lists.write(out, data.item_index)
    typer.echo(f"{len(lists.lists)} users, {n} items each, {cpu:.1f} CPU-s -> {out}")
    if redis_url:
        from recsys.serving.modes import RedisPrecomputedLists

        written = RedisPrecomputedLists.load(lists, redis_url, data.item_index)
        typer.echo(f"{written} lists loaded into {redis_url}")


@bench_app.command("sessions")
def bench_sessions(
    dataset: Annotated[str, typer.Option(help="yoochoose-sample")] = "yoochoose-sample",
    stage: Annotated[str, typer.Option(help="test (train_full→test) | valid (tuning)")] = "test",
    out: Annotated[Path, typer.Option(help="Output folder.")] = DEFAULT_BENCH_DIR / "sessions",
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Only these models (repeatable).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random tie-breaking.")] = 0,
    max_events: Annotated[int | None, typer.Option(help="Only the first N events.")] = None,
    recbole: Annotated[
        list[str] | None, typer.Option(help="RecBole models beside ours (SASRec, GRU4Rec).")
    ] = None,
    recbole_python: Annotated[str, typer.Option(help="Python of the RecBole env.")] = (
        "/tmp/recbole-venv/bin/python"
    ),
    recbole_epochs: Annotated[int, typer.Option(help="RecBole training epochs.")] = 10,
    recbole_reuse: Annotated[
        bool, typer.Option(help="Score RecBole lists an earlier run left (same epochs).")
    ] = False,
) -> None:
    """Session protocol: every test-session prefix predicts its next click (served, no mask)."""
    from recsys.bench.sequential import PeerSettings, run_sessions, sequential_table

    if dataset != "yoochoose-sample":
        _fail(ValueError(f"dataset: only 'yoochoose-sample' has sessions, not {dataset!r}"))
    peers = PeerSettings(tuple(recbole or ()), recbole_python, recbole_epochs, reuse=recbole_reuse)
    try:
        report = run_sessions(out, stage, model, seed, max_events, peers)
    except (RecsysError, ValueError) as exc:
        _fail(exc)
    typer.echo(sequential_table(report))
    typer.echo(f"\nwrote {out / 'sessions.json'} and {out / 'sessions.md'}")


@bench_app.command("next-event")
def bench_next_event(
    dataset: Annotated[str, typer.Option(help="ml-100k | ml-latest-small | synthetic")] = (
        "ml-100k"
    ),
    protocol: Annotated[str, typer.Option(help="leave_last_out | temporal")] = "leave_last_out",
    out: Annotated[Path, typer.Option(help="Output folder.")] = DEFAULT_BENCH_DIR / "next-event",
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Only these models (repeatable).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random tie-breaking.")] = 0,
    recbole: Annotated[
        list[str] | None, typer.Option(help="RecBole models beside ours (SASRec, GRU4Rec).")
    ] = None,
    recbole_python: Annotated[str, typer.Option(help="Python of the RecBole env.")] = (
        "/tmp/recbole-venv/bin/python"
    ),
    recbole_epochs: Annotated[int, typer.Option(help="RecBole training epochs.")] = 10,
    recbole_reuse: Annotated[
        bool, typer.Option(help="Score RecBole lists an earlier run left (same epochs).")
    ] = False,
) -> None:
    """Next-event protocol: each test event predicted from the user's earlier events."""
    from recsys.bench.sequential import PeerSettings, run_next_event, sequential_table

    peers = PeerSettings(tuple(recbole or ()), recbole_python, recbole_epochs, reuse=recbole_reuse)
    try:
        report = run_next_event(dataset, protocol, out, model, seed, peers=peers)
    except (RecsysError, ValueError) as exc:
        _fail(exc)
    typer.echo(sequential_table(report))
    typer.echo(f"\nwrote {out / 'next_event.json'} and {out / 'next_event.md'}")


@bench_app.command("small-log")
def bench_small_log(
    out: Annotated[Path, typer.Option(help="Output folder.")] = DEFAULT_BENCH_DIR / "small-log",
    seed: Annotated[list[int] | None, typer.Option(help="Log seeds (repeatable).")] = None,
) -> None:
    """Two-tower on synthetic small sparse session logs (3k sessions, 7k items, 12k clicks)."""
    from recsys.bench.sequential import run_small_log

    run_small_log(out, seed or [0, 1])
    typer.echo((out / "small_log.md").read_text())


def _train_split(dataset: str, protocol: str, seed: int):
    from recsys.data import load_dataset, make_split

    return make_split(load_dataset(dataset), protocol, seed=seed)


def _registered_config(name: str, dataset: str, overrides: str | None) -> object:
    """The benchmark registry's config of a model for a dataset, with JSON overrides."""
    from recsys.bench.registry import deep_merge, load_registry

    registry = load_registry()
    entry = registry[name]
    values = deep_merge(entry.values_for(dataset, registry), json.loads(overrides or "{}"))
    return entry.component.config_class.model_validate(values)


@train_app.command("two-tower")
def train_two_tower(
    out: Annotated[Path, typer.Option(help="Directory for the trained retriever.")],
    dataset: Annotated[str, typer.Option(help=DATASET_HELP)] = "ml-100k",
    protocol: Annotated[str, typer.Option(help="random | temporal")] = "random",
    seed: Annotated[int, typer.Option(help="Split seed.")] = 2020,
    config: Annotated[str | None, typer.Option(help="TwoTowerConfig overrides as JSON.")] = None,
) -> None:
    """Train the two-tower retriever (settings of experiments/configs/models) and save it."""
    from recsys.evaluation.protocol import evaluate
    from recsys.retrieval.two_tower import TwoTowerRetriever

    try:
        split = _train_split(dataset, protocol, seed)
        model = TwoTowerRetriever(_registered_config("two_tower", dataset, config)).fit(split)  # type: ignore[arg-type]
    except (RecsysError, ValueError) as exc:
        _fail(exc)
    model.save(out)
    metrics = evaluate(model.score, split, stage="valid")
    typer.echo(json.dumps({"valid": metrics, **model.bench_info()}, indent=2, default=float))
    typer.echo(f"saved to {out}")


@train_app.command("two-stage")
def train_two_stage(
    out: Annotated[Path, typer.Option(help="Directory for the trained two-stage model.")],
    dataset: Annotated[str, typer.Option(help=DATASET_HELP)] = "ml-100k",
    protocol: Annotated[str, typer.Option(help="random | temporal")] = "random",
    seed: Annotated[int, typer.Option(help="Split seed.")] = 2020,
    retriever: Annotated[
        Path | None, typer.Option(help="A trained two-tower directory to reuse.")
    ] = None,
) -> None:
    """Train two-tower + ranker (the ranker on validation candidates) and save both."""
    from recsys.ranking.two_stage import TwoStageConfig, TwoStageRecommender
    from recsys.retrieval.base import Recommender

    try:
        split = _train_split(dataset, protocol, seed)
        trained = Recommender.load(retriever) if retriever else None
        cfg = _registered_config("two_tower+ranker", dataset, None)
        if trained is not None:
            cfg = TwoStageConfig(retriever=trained.config, ranker=cfg.ranker)  # type: ignore[attr-defined,arg-type]
        model = TwoStageRecommender(cfg, trained_retriever=trained).fit(split)  # type: ignore[arg-type]
    except (RecsysError, ValueError) as exc:
        _fail(exc)
    model.save(out)
    typer.echo(json.dumps(model.bench_info(), indent=2, default=float))
    typer.echo(f"saved to {out}")


@app.command("export")
def export(
    dataset: Annotated[str, typer.Option(help="Dataset name.")] = "ml-latest-small",
    model: Annotated[
        str, typer.Option(help="Registered model: two_tower+ranker | two_tower | ease | ...")
    ] = "two_tower+ranker",
    protocol: Annotated[str, typer.Option(help="random | temporal")] = "random",
    seed: Annotated[int, typer.Option(help="Split seed.")] = 2020,
    edge: Annotated[
        Path | None, typer.Option(help="Write a self-contained edge bundle here instead.")
    ] = None,
) -> None:
    """Train a registered model and export its Engine to BentoML's model store.

    With ``--edge DIR``: write the numpy-only edge bundle of the dataset's training events.
    """
    from recsys.serving.bento import train_and_export

    if edge is not None:
        from recsys.data import load_dataset, make_split
        from recsys.edge import EdgeBundle
        from recsys.serving.modes import build_edge_bundle

        try:
            split = make_split(load_dataset(dataset), protocol, seed=seed)
        except (RecsysError, ValueError) as exc:
            _fail(exc)
        build_edge_bundle(split, path=edge)
        typer.echo(f"edge bundle: {edge} ({EdgeBundle.size_bytes(edge):,} bytes)")
        return
    try:
        saved, metrics = train_and_export(dataset, model, protocol, seed)
    except RecsysError as exc:
        _fail(exc)
    summary = {stage: {k: round(v, 4) for k, v in m.items() if k in ("ndcg@10", "recall@10")}
               for stage, m in metrics.items()}  # fmt: skip
    typer.echo(json.dumps({"tag": str(saved.tag), "metrics": summary}, indent=2))


@bento_app.command("build")
def bento_build(
    dataset: Annotated[str, typer.Option(help="Dataset the served model trains on.")] = (
        "ml-latest-small"
    ),
    model: Annotated[str, typer.Option(help="Registered model to serve.")] = "two_tower+ranker",
    protocol: Annotated[str, typer.Option(help="random | temporal")] = "random",
    retrain: Annotated[bool, typer.Option(help="Train even if an export exists.")] = False,
) -> None:
    """Train what is missing, export, `bentoml build`, archive to bentos/dist/ (make bento)."""
    from recsys.serving.bento import build_bento

    try:
        result = build_bento(dataset, model, protocol, retrain=retrain)
    except RecsysError as exc:
        _fail(exc)
    typer.echo(f"model   {result.model_tag} ({'trained' if result.trained else 'reused'})")
    typer.echo(f"bento   {result.bento_tag}")
    typer.echo(f"archive {result.archive}")
    typer.echo(f"serve:  bentoml serve {result.bento_tag}")


@app.command("tune")
def tune(
    study: Annotated[
        str, typer.Argument(help="Study name (experiments/configs/studies/<name>.yaml) or file.")
    ],
    trials: Annotated[
        int | None,
        typer.Option(
            help="Trials of this run, all workers together (0 with --resume: only write the "
            "outputs and the best config of the study)."
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL (sqlite:///x.db, postgresql://...), a .db file, or an Optuna "
            "journal file (journal:PATH or *.log). Default: experiments/studies/<study>.db."
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Processes optimising the study at once.")] = 1,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue (or join) the study in the storage.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Outputs folder (default experiments/studies/<study>/).")
    ] = None,
    configs: Annotated[
        Path | None,
        typer.Option(help="Model config folder read and written (experiments/configs/models)."),
    ] = None,
    write_config: Annotated[
        str, typer.Option(help="Write the best config: if-better (than trial 0) | always | never.")
    ] = "if-better",
    progress: Annotated[bool, typer.Option(help="Progress bar with the best value.")] = True,
    plots: Annotated[bool, typer.Option(help="Write the PNG plots.")] = True,
) -> None:
    """Tune a model with Optuna on validation; write the best config where the bench reads it."""
    from recsys.tuning import run_study
    from recsys.tuning.outputs import summary_table

    if write_config not in ("if-better", "always", "never"):
        _fail(ValueError(f"--write-config: {write_config!r}; use if-better, always or never"))
    try:
        run = run_study(
            study,
            trials=trials,
            storage=storage,
            workers=workers,
            resume=resume,
            out=out,
            configs=configs,
            write_config=write_config,  # type: ignore[arg-type]
            progress=progress,
            plots=plots,
        )
    except (RecsysError, ValueError) as exc:
        _fail(exc)
    summary = run.as_dict()
    typer.echo(summary_table(summary))
    typer.echo(f"\nconfig: {run.write_note}" + "".join(f"\n  {p}" for p in run.written))
    typer.echo(f"outputs: {run.out_dir}/ (summary.json, trials.csv, plots)")
    typer.echo(f"dashboard: {run.dashboard}")
    if run.interrupted:
        typer.echo(f"interrupted: continue with `recsys tune {study} --resume`", err=True)
        raise typer.Exit(code=130)


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = DEFAULT_BENCH_DIR / "demo",
) -> None:
    """The main job end to end on real data: benchmarks, the engine, the served Bento."""
    from recsys.bench.quality import quality_table, run_quality
    from recsys.data import load_ml100k, temporal_split
    from recsys.data.movielens import fetch_ml100k
    from recsys.serving.walkthrough import (
        engine_walkthrough,
        format_http_walkthrough,
        format_walkthrough,
        http_walkthrough,
    )

    typer.echo(f"ML-100K: {fetch_ml100k()}")
    for protocol in ("random", "temporal"):
        report = run_quality("ml-100k", protocol, out / f"ml-100k-{protocol}")
        typer.echo("\n" + quality_table(report))
    walk = engine_walkthrough(temporal_split(load_ml100k()), out)
    typer.echo("\n" + format_walkthrough(walk))
    typer.echo("\nmake bento: train, export, build; then serve it and call it over HTTP ...")
    typer.echo("\n" + format_http_walkthrough(http_walkthrough(out / "http")))
    typer.echo(f"\nresults under {out}/")


# --------------------------------------------------------------------------- drift monitoring


@app.command("drift")
def drift(
    reference: Annotated[
        list[Path] | None,
        typer.Option("--reference", "-r", help="Reference events / decisions file (repeatable)."),
    ] = None,
    current: Annotated[
        list[Path] | None,
        typer.Option("--current", "-c", help="Current events / decisions file (repeatable)."),
    ] = None,
    log: Annotated[
        Path | None, typer.Option(help="Log folder holding events/ and decisions/.")
    ] = None,
    reference_window: Annotated[
        str | None, typer.Option(help="e.g. 2026-01-01..2026-01-08 or now-14d..now-7d")
    ] = None,
    current_window: Annotated[str | None, typer.Option(help="e.g. last-7d")] = None,
    out: Annotated[Path, typer.Option(help="Reports go to OUT/<UTC timestamp>/.")] = Path(
        "experiments/reports/drift"
    ),
    config: Annotated[
        Path | None, typer.Option(help="Thresholds YAML (default experiments/configs/drift.yaml).")
    ] = None,
    retriever: Annotated[
        Path | None, typer.Option(help="Trained two-tower folder: enables embedding drift.")
    ] = None,
    items: Annotated[
        Path | None, typer.Option(help="Item attributes CSV/Parquet (item_id, ...).")
    ] = None,
    workspace: Annotated[
        Path | None, typer.Option(help="Evidently workspace the snapshots are added to.")
    ] = Path("experiments/reports/workspace"),
    no_workspace: Annotated[bool, typer.Option(help="Do not add to a workspace.")] = False,
    now: Annotated[
        str | None, typer.Option(help="Pin 'now' (ISO time) for relative windows.")
    ] = None,
) -> None:
    """Drift report, current against reference. Exit 0 no drift, 1 drift, 2 error."""
    from recsys.monitoring.command import drift_main

    code = drift_main(
        reference=reference,
        current=current,
        log_dir=log,
        reference_window=reference_window,
        current_window=current_window,
        out=out,
        config_path=config,
        retriever=retriever,
        items=items,
        workspace=None if no_workspace else workspace,
        now=now,
    )
    raise typer.Exit(code=code)


@bench_app.command("drift")
def bench_drift(
    out: Annotated[Path, typer.Option(help="Output folder.")] = DEFAULT_BENCH_DIR / "drift",
    seeds: Annotated[int, typer.Option(help="Seeds per drift kind and strength.")] = 20,
    false_alarm_seeds: Annotated[int, typer.Option(help="No-drift pairs.")] = 50,
    events: Annotated[int, typer.Option(help="Background events per synthetic window.")] = 20_000,
    real: Annotated[bool, typer.Option(help="Also the real shifts (ML-100K, ml-latest-small).")] = (
        True
    ),
    scale: Annotated[
        list[int] | None,
        typer.Option("--scale", help="Also time one full run on N synthetic events (repeatable)."),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(help="Only these studies: false_alarms, detection, embedding, real, scale."),
    ] = None,
) -> None:
    """Detection rate per injected drift, false alarms, real shifts, wall time and memory."""
    from recsys.monitoring.validation import drift_table, run_drift_bench

    try:
        report = run_drift_bench(
            out,
            seeds=seeds,
            n_events=events,
            real=real,
            scales=scale or [],
            false_alarm_seeds=false_alarm_seeds,
            only=only,
        )
    except (RecsysError, ValueError) as exc:
        _fail(exc)
    typer.echo(drift_table(report))
    typer.echo(f"\nwrote {out / 'drift.json'} and {out / 'drift.md'}")


if __name__ == "__main__":
    app()
