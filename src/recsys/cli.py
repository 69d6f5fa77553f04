"""The ``recsys`` command line: data, bench, demo (more stages add their commands here)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from recsys.errors import RecsysError

app = typer.Typer(
    help="recsys: real-time personalisation research framework.", no_args_is_help=True
)
data_app = typer.Typer(help="Fetch and inspect datasets.", no_args_is_help=True)
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

DEFAULT_BENCH_DIR = Path("experiments/bench")


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
def data_info(dataset: Annotated[str, typer.Argument(help="ml-100k | ml-latest-small")]) -> None:
    """Print a dataset's counts and time span as JSON."""
    from recsys.data import load_dataset

    try:
        summary = load_dataset(dataset).summary()
    except (RecsysError, ValueError) as exc:
        _fail(exc)
    typer.echo(json.dumps(summary, indent=2))


@bench_app.command("quality")
def bench_quality(
    dataset: Annotated[str, typer.Option(help="ml-100k | ml-latest-small | synthetic")] = "ml-100k",
    protocol: Annotated[str, typer.Option(help="random | temporal")] = "random",
    out: Annotated[Path, typer.Option(help="Output folder.")] = DEFAULT_BENCH_DIR / "quality",
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Only these models (repeatable).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Split seed.")] = 2020,
) -> None:
    """Train and evaluate every model on one split; write quality.json and quality.md."""
    from recsys.evaluation.bench import quality_table, run_quality

    try:
        report = run_quality(dataset, protocol, out, models=model, seed=seed)
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
    from recsys.evaluation.replay import FreshnessConfig, freshness_table, run_freshness

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
    from recsys.decision.bench import DEFAULT_LAMBDAS, decision_table, run_decision_bench

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


def _train_split(dataset: str, protocol: str, seed: int):
    from recsys.data import load_dataset, make_split

    return make_split(load_dataset(dataset), protocol, seed=seed)


@train_app.command("two-tower")
def train_two_tower(
    out: Annotated[Path, typer.Option(help="Directory for the trained retriever.")],
    dataset: Annotated[str, typer.Option(help="ml-100k | ml-latest-small | synthetic")] = (
        "ml-100k"
    ),
    protocol: Annotated[str, typer.Option(help="random | temporal")] = "random",
    seed: Annotated[int, typer.Option(help="Split seed.")] = 2020,
    config: Annotated[str | None, typer.Option(help="TwoTowerConfig overrides as JSON.")] = None,
) -> None:
    """Train the two-tower retriever (early stopping on validation) and save it."""
    from recsys.evaluation.protocol import evaluate
    from recsys.retrieval.two_tower import TwoTowerConfig, TwoTowerRetriever
    from recsys.retrieval.two_tower.bench import retriever_config

    try:
        split = _train_split(dataset, protocol, seed)
        base = retriever_config(dataset).model_dump()
        cfg = TwoTowerConfig.model_validate({**base, **json.loads(config or "{}")})
        model = TwoTowerRetriever(cfg).fit(split)
    except (RecsysError, ValueError) as exc:
        _fail(exc)
    model.save(out)
    metrics = evaluate(model.score, split, stage="valid")
    typer.echo(json.dumps({"valid": metrics, **model.bench_info()}, indent=2, default=float))
    typer.echo(f"saved to {out}")


@train_app.command("two-stage")
def train_two_stage(
    out: Annotated[Path, typer.Option(help="Directory for the trained two-stage model.")],
    dataset: Annotated[str, typer.Option(help="ml-100k | ml-latest-small | synthetic")] = (
        "ml-100k"
    ),
    protocol: Annotated[str, typer.Option(help="random | temporal")] = "random",
    seed: Annotated[int, typer.Option(help="Split seed.")] = 2020,
    retriever: Annotated[
        Path | None, typer.Option(help="A trained two-tower directory to reuse.")
    ] = None,
) -> None:
    """Train two-tower + ranker (the ranker on validation candidates) and save both."""
    from recsys.ranking.two_stage import TwoStageConfig, TwoStageRecommender
    from recsys.retrieval.base import Recommender
    from recsys.retrieval.two_tower.bench import ranker_config, retriever_config

    try:
        split = _train_split(dataset, protocol, seed)
        trained = Recommender.load(retriever) if retriever else None
        cfg = TwoStageConfig(
            retriever=trained.config if trained else retriever_config(dataset),
            ranker=ranker_config(dataset),
        )
        model = TwoStageRecommender(cfg, trained_retriever=trained).fit(split)  # type: ignore[arg-type]
    except (RecsysError, ValueError) as exc:
        _fail(exc)
    model.save(out)
    typer.echo(json.dumps(model.bench_info(), indent=2, default=float))
    typer.echo(f"saved to {out}")


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = DEFAULT_BENCH_DIR / "demo",
) -> None:
    """The main job end to end on real data: fetch ML-100K, benchmark both protocols."""
    from recsys.data import load_ml100k, random_split
    from recsys.data.movielens import fetch_ml100k
    from recsys.evaluation.bench import quality_table, run_quality
    from recsys.serving.walkthrough import engine_walkthrough, format_walkthrough

    typer.echo(f"ML-100K: {fetch_ml100k()}")
    for protocol in ("random", "temporal"):
        report = run_quality("ml-100k", protocol, out / f"ml-100k-{protocol}")
        typer.echo("\n" + quality_table(report))
    walk = engine_walkthrough(random_split(load_ml100k(), seed=2020), out)
    typer.echo("\n" + format_walkthrough(walk))
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
