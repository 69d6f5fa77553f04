"""``recsys bench decision``: what the decision stage costs and buys, measured.

* **trade-off**: the Engine serving EASE's top 100 through the decision stage (rules, then
  MMR or DPP across ``lam``) to 10, on the quality bench's split and metrics
  (:func:`recsys.evaluation.protocol.evaluate_served`), so the rows line up with it.
* **cold start**: a seeded 20 % of users held out entirely; the Engine's cold-start answer
  with context popularity vs global popularity, all of a held-out user's interactions
  relevant.
* **OPE**: IPS / SNIPS of a target policy from ε-greedy logs on the simulator, against the
  exact true value, with coverage of the 95 % interval over repetitions.
* **latency**: each component at 100 → 10 and 1,000 → 50 (p50 / p99 over many repeats).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.bench.quality import package_versions
from recsys.bench.registry import load_registry
from recsys.data import load_dataset, make_split
from recsys.data.dataset import Dataset
from recsys.data.splits import Split
from recsys.decision.base import ItemCatalog
from recsys.decision.diversity import DPPConfig, DPPReranker, MMRConfig, MMRReranker, TopK
from recsys.decision.experiments import Experiment, ExperimentConfig, Variant
from recsys.decision.exploration import (
    EpsilonGreedy,
    EpsilonGreedyConfig,
    ThompsonConfig,
    ThompsonSampling,
)
from recsys.decision.fallback import ContextPopularity, ContextPopularityConfig
from recsys.decision.pipeline import DecisionLog, DecisionPipeline, DecisionPipelineConfig
from recsys.decision.rules import BusinessRules, CapRule, RulesConfig
from recsys.evaluation.off_policy import BanditSimulator, SimulatorConfig, evaluate_policy
from recsys.evaluation.protocol import build_queries, evaluate_served
from recsys.retrieval.baselines import EASE
from recsys.types import ItemList, Query

log = logging.getLogger(__name__)

DEFAULT_LAMBDAS: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.1)


def _engine(
    split: Split,
    retriever: Any,
    decision: DecisionPipelineConfig,
    fallback: ContextPopularity | None = None,
    candidates: int = 100,
) -> Any:
    from recsys.serving.build import build_engine
    from recsys.serving.engine import EngineConfig

    return build_engine(
        split,
        retriever=retriever,
        decision=decision,
        decision_log=DecisionLog(max_in_memory=0),
        fallback=fallback,
        config=EngineConfig(candidates=candidates),
    )


def tradeoff(
    split: Split,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    n_candidates: int = 100,
    k: int = 10,
    l2: float = 250.0,
) -> dict[str, Any]:
    """Accuracy vs diversity/coverage/novelty of MMR and DPP over ``lambdas``, served."""
    rows: dict[str, dict[str, float]] = {}
    configs: list[tuple[str, DecisionPipelineConfig]] = [("ease_top10", DecisionPipelineConfig())]
    for name, make in (("mmr", MMRConfig), ("dpp", DPPConfig)):
        configs += [
            (f"{name}@{lam:g}", DecisionPipelineConfig(diversity=make(lam=lam))) for lam in lambdas
        ]
    ease = EASE(l2=l2).fit(split)
    for name, config in configs:
        engine = _engine(split, ease, config, candidates=n_candidates)
        start = time.perf_counter()
        metrics = evaluate_served(engine.serve, split, stage="test", ks=(k,))
        metrics["ms_per_user"] = 1000.0 * (time.perf_counter() - start) / metrics["users"]
        rows[name] = metrics
        log.info("%s ndcg@10=%.4f ild=%.4f", name, metrics["ndcg@10"], metrics["ild@10"])
    return {"n_candidates": n_candidates, "k": k, "ease_l2": l2, "rows": rows}


def cold_start(data: Dataset, seed: int = 2020, fraction: float = 0.2) -> dict[str, Any]:
    """The engine's answer to users held out entirely: context vs global popularity."""
    rng = np.random.default_rng(seed)
    users = np.arange(data.n_users)
    cold = np.sort(rng.choice(users, size=max(1, int(fraction * data.n_users)), replace=False))
    is_cold = data.interactions["user"].isin(cold).to_numpy()
    frame = data.interactions
    split = Split(
        data,
        frame[~is_cold].reset_index(drop=True),
        frame.iloc[0:0],
        frame[is_cold].reset_index(drop=True),
        protocol="user_holdout",
        seed=seed,
    )
    context = ContextPopularity().fit(split)
    global_only = ContextPopularity(ContextPopularityConfig(keys=())).fit(split)
    out: dict[str, Any] = {"cold_users": len(cold), "fraction": fraction, "seed": seed}
    ease = EASE().fit(split)
    for name, model in (("global_popularity", global_only), ("context_popularity", context)):
        engine = _engine(split, ease, DecisionPipelineConfig(), fallback=model)
        out[name] = evaluate_served(engine.serve, split, stage="test", users=cold)
    queries = build_queries(split, cold)
    reasons: dict[str, int] = {}
    for query in queries:
        reason = context(query, 10).reason
        reasons[reason] = reasons.get(reason, 0) + 1
    out["context_reasons"] = reasons
    out["context_keys_fitted"] = sorted(context.tables)
    return out


def off_policy(n_logged: int = 20_000, repetitions: int = 50, seed: int = 0) -> dict[str, Any]:
    """IPS / SNIPS on the simulator against the exact value of the target policy."""
    sim = BanditSimulator(SimulatorConfig(seed=seed))
    logging_policy = sim.epsilon_greedy(sim.model_scores, 0.3)
    target = sim.epsilon_greedy(sim.click_prob, 0.05)
    truth = sim.true_value(target)
    first: dict[str, Any] = {}
    covered = {"ips": 0, "snips": 0}
    values: dict[str, list[float]] = {"ips": [], "snips": []}
    for rep in range(repetitions):
        logged = sim.log(logging_policy, n_logged, seed=seed * 1000 + rep)
        estimates = evaluate_policy(logged, target)
        for name, est in estimates.items():
            covered[name] += est.covers(truth)
            values[name].append(est.value)
            if rep == 0:
                first[name] = est.as_dict()
        if rep == 0:
            first["naive_logged_mean"] = float(logged.rewards.mean())
    return {
        "simulator": sim.config.model_dump(),
        "logging_policy": "epsilon-greedy(0.3) on noisy model scores",
        "target_policy": "epsilon-greedy(0.05) on true click probabilities",
        "n_logged": n_logged,
        "true_value_target": truth,
        "true_value_logging": sim.true_value(logging_policy),
        "first_run": first,
        "repetitions": repetitions,
        "coverage_95": {k: v / repetitions for k, v in covered.items()},
        "mean_estimate": {k: float(np.mean(v)) for k, v in values.items()},
        "sd_estimate": {k: float(np.std(v)) for k, v in values.items()},
    }


def _time(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    for _ in range(min(20, repeats)):
        fn()
    samples = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        samples[i] = time.perf_counter() - start
    ms = samples * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "repeats": float(repeats),
    }


def latency(data: Dataset, split: Split, repeats: int = 2000) -> dict[str, Any]:
    """Per-component latency at 100 → 10 and 1,000 → 50 on the dataset's genre vectors."""
    catalog = ItemCatalog.from_dataset(data, attributes=["genres"])
    fallback = ContextPopularity().fit(split)
    rng = np.random.default_rng(0)
    experiment = Experiment(
        ExperimentConfig(
            name="bench",
            salt="s",
            variants=(
                Variant(name="control", weight=0.5),
                Variant(name="mmr", weight=0.5, diversity=MMRConfig(lam=0.7)),
            ),
        )
    )
    out: dict[str, Any] = {"catalog_items": data.n_items, "vector_dim": catalog.vectors.shape[1]}
    for n, k in ((100, 10), (1000, 50)):
        n = min(n, data.n_items)
        reps = repeats if n <= 100 else max(200, repeats // 5)
        out[f"{n}->{k}"] = _latency_at(catalog, fallback, experiment, n, k, reps, rng)
    return out


def _latency_at(
    catalog: ItemCatalog,
    fallback: ContextPopularity,
    experiment: Experiment,
    n: int,
    k: int,
    repeats: int,
    rng: np.random.Generator,
) -> dict[str, dict[str, float]]:
    """p50/p99 of each component choosing ``k`` of ``n`` random candidates."""
    n_items = catalog.n_items
    items = ItemList(rng.choice(n_items, n, replace=False), np.sort(rng.random(n))[::-1])
    history = rng.choice(n_items, 20, replace=False)
    query = Query(user=1, history=history, context={"age": 30, "gender": "F"})
    caps = BusinessRules(RulesConfig(caps=(CapRule(max_per_value=3),)), catalog)
    rules = BusinessRules(RulesConfig(), catalog)
    pipeline = DecisionPipeline(
        DecisionPipelineConfig(
            diversity=MMRConfig(lam=0.7),
            exploration=EpsilonGreedyConfig(epsilon=0.1),
            rules=RulesConfig(caps=(CapRule(max_per_value=3),)),
        ),
        catalog,
        fallback,
        log=DecisionLog(max_in_memory=0),
    )
    topk = TopK()
    mmr = MMRReranker(MMRConfig(lam=0.7), catalog)
    dpp = DPPReranker(DPPConfig(lam=0.7), catalog)
    eps = EpsilonGreedy(EpsilonGreedyConfig(epsilon=0.1))
    thompson = ThompsonSampling(ThompsonConfig(), catalog)
    stages: dict[str, Callable[[], Any]] = {
        "rules_filter": lambda: rules(query, items, k),
        "rules_with_caps": lambda: caps(query, items, k),
        "topk": lambda: topk(query, items, k),
        "mmr": lambda: mmr(query, items, k),
        "dpp": lambda: dpp(query, items, k),
        "mmr_with_caps": lambda: mmr(query, items, k, caps=caps.caps),
        "dpp_with_caps": lambda: dpp(query, items, k, caps=caps.caps),
        "epsilon_greedy": lambda: eps(query, items, k),
        "thompson_200_samples": lambda: thompson(query, items, k),
        "experiment_assign": lambda: experiment.assign(query),
        "context_popularity": lambda: fallback(query, n),
        "pipeline_rules_caps_mmr_eps": lambda: pipeline(query, items, k),
    }
    return {name: _time(fn, repeats) for name, fn in stages.items()}


def run_decision_bench(
    out_dir: Path,
    datasets: Sequence[str] = ("ml-100k", "ml-latest-small"),
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    seed: int = 2020,
    latency_repeats: int = 2000,
) -> dict[str, Any]:
    """Run every part and write ``decision.json`` (and ``decision.md``) under ``out_dir``."""
    report: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": package_versions(),
        "seed": seed,
        "protocol": "random per-user 80/10/10; the Engine serving EASE top-100 through the "
        "decision stage to 10; test users",
        "tradeoff": {},
        "cold_start": {},
    }
    for name in datasets:
        data = load_dataset(name)
        split = make_split(data, "random", seed=seed)
        registry = load_registry()
        l2 = registry["ease"].config_for(name, registry).l2
        report["tradeoff"][name] = tradeoff(split, lambdas, l2=l2)
        report["cold_start"][name] = cold_start(data, seed=seed)
        if name == datasets[0]:
            report["latency"] = {"dataset": name, **latency(data, split, latency_repeats)}
    report["off_policy"] = off_policy()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "decision.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (out_dir / "decision.md").write_text(decision_table(report) + "\n")
    return report


COLUMNS = ("ndcg@10", "recall@10", "coverage@10", "ild@10", "novelty@10", "ms_per_user")


def decision_table(report: dict[str, Any]) -> str:
    """Markdown summary of a decision report."""
    lines: list[str] = []
    for name, part in report["tradeoff"].items():
        lines += [f"**{name}** trade-off (EASE top-{part['n_candidates']} → {part['k']})", ""]
        lines.append("| policy | " + " | ".join(COLUMNS) + " |")
        lines.append("|---|" + "---:|" * len(COLUMNS))
        for policy, values in part["rows"].items():
            cells = [f"{values.get(c, float('nan')):.4f}" for c in COLUMNS]
            lines.append(f"| {policy} | " + " | ".join(cells) + " |")
        lines.append("")
    for name, part in report["cold_start"].items():
        lines.append(f"**{name}** cold start ({part['cold_users']} held-out users)")
        for model in ("global_popularity", "context_popularity"):
            m = part[model]
            lines.append(
                f"- {model}: ndcg@10 {m['ndcg@10']:.4f}, recall@10 {m['recall@10']:.4f}, "
                f"hr@10 {m['hr@10']:.4f}"
            )
        lines.append("")
    if "latency" in report:
        for size, stages in report["latency"].items():
            if not isinstance(stages, dict):
                continue
            lines.append(f"latency {size}: " + ", ".join(
                f"{s} p50 {v['p50_ms']:.3f} / p99 {v['p99_ms']:.3f} ms" for s, v in stages.items()
            ))  # fmt: skip
    ope = report["off_policy"]
    lines.append("")
    lines.append(
        f"OPE: true {ope['true_value_target']:.4f}; "
        + ", ".join(
            f"{k} {ope['first_run'][k]['value']:.4f} "
            f"[{ope['first_run'][k]['ci_low']:.4f}, {ope['first_run'][k]['ci_high']:.4f}]"
            for k in ("ips", "snips")
        )
        + f"; coverage {ope['coverage_95']}"
    )
    return "\n".join(lines)
