"""The composed decision pipeline: order of stages, consent, cold start, degradation, log."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsys.data import SyntheticConfig, generate, random_split
from recsys.decision import (
    CapRule,
    ConsentGate,
    ContextPopularity,
    DecisionLog,
    DecisionPipeline,
    DecisionPipelineConfig,
    EpsilonGreedyConfig,
    ExperimentConfig,
    ItemCatalog,
    MMRConfig,
    RulesConfig,
    ThompsonConfig,
    Variant,
)
from recsys.decision.diversity import MMRReranker
from recsys.types import ItemList, Query

SPLIT = random_split(generate(SyntheticConfig(seed=2, n_users=120, n_items=200)))
DATA = SPLIT.dataset
CATALOG = ItemCatalog.from_dataset(DATA)
FALLBACK = ContextPopularity().fit(SPLIT)
RNG = np.random.default_rng(0)
RANKED = ItemList(RNG.permutation(DATA.n_items)[:100], np.linspace(1.0, 0.0, 100))


def _pipeline(tmp_path=None, **config) -> DecisionPipeline:
    log = DecisionLog(None if tmp_path is None else tmp_path / "decisions.jsonl")
    return DecisionPipeline(DecisionPipelineConfig(**config), CATALOG, FALLBACK, log=log)


def test_ranked_path_applies_rules_diversity_and_logs_propensities():
    pipeline = _pipeline(
        rules=RulesConfig(caps=(CapRule(max_per_value=3),)),
        diversity=MMRConfig(lam=0.7),
        exploration=EpsilonGreedyConfig(epsilon=0.2, seed=1),
    )
    history = RANKED.items[:5]
    decision = pipeline(Query(user=3, user_id="u3", history=history), RANKED, 10)
    slate = decision.slate
    assert len(slate) == 10 and len(set(slate.items)) == 10
    assert not set(history.tolist()) & set(slate.items.tolist())
    assert pipeline.rules.caps.satisfied(slate.items)
    assert np.all((slate.propensities > 0) & (slate.propensities <= 1))
    record = pipeline.log.records[-1]
    assert record is decision.record and record.source == "ranked"
    assert record.items == CATALOG.external_ids(slate.items) and record.user_id == "u3"
    assert '"mmr"' in record.diversity and '"epsilon_greedy"' in record.exploration


def test_deterministic_pipeline_logs_propensity_one():
    decision = _pipeline()(Query(user=1, history=[0]), RANKED, 5)
    assert decision.slate.propensities.tolist() == [1.0] * 5
    assert decision.slate.items.tolist() == [i for i in RANKED.items.tolist() if i != 0][:5]


def test_variant_chooses_the_configuration_and_is_logged():
    experiment = ExperimentConfig(
        name="div",
        salt="s1",
        variants=(
            Variant(name="control", weight=0.5),
            Variant(name="treatment", weight=0.5, diversity=MMRConfig(lam=0.3)),
        ),
    )
    pipeline = _pipeline(experiment=experiment)
    seen = {}
    for user in range(40):
        query = Query(user=user, user_id=f"user-{user}", history=[int(RANKED.items[-1])])
        decision = pipeline(query, RANKED, 10)
        seen[decision.variant] = decision.slate.items.tolist()
        assert decision.record.variant == decision.variant
        assert decision.record.experiment == "div"
        # the same user always lands in the same variant
        assert pipeline(query, RANKED, 10).variant == decision.variant
    assert set(seen) == {"control", "treatment"}
    assert seen["control"] == RANKED.items[:10].tolist()
    expected = MMRReranker(MMRConfig(lam=0.3), CATALOG)(Query(), RANKED.head(99), 10)
    assert seen["treatment"] == expected.items.tolist()


def test_cold_start_user_gets_context_popularity():
    query = Query(user=None, context={"age_band": "18-24", "device": "mobile"})
    decision = _pipeline()(query, RANKED, 10)
    assert decision.record.source.startswith("cold_start:context:")
    assert decision.slate.items.tolist() == FALLBACK(query, 10).items.tolist()


def test_missing_candidates_fall_back_with_a_reason():
    decision = _pipeline()(Query(user=1, history=[1, 2]), None, 10)
    assert decision.record.source.startswith("fallback:")
    assert "no_candidates" in decision.reasons
    assert len(decision.slate) == 10


def test_failing_diversity_degrades_to_top_k(monkeypatch):
    pipeline = _pipeline(diversity=MMRConfig(lam=0.5))

    def boom(*args, **kwargs):
        raise RuntimeError("bad vectors")

    monkeypatch.setattr(pipeline._stages[None][2], "select", boom)
    decision = pipeline(Query(user=1, history=[int(RANKED.items[-1])]), RANKED, 10)
    assert decision.slate.items.tolist() == RANKED.items[:10].tolist()
    assert any(r.startswith("failed:diversity") for r in decision.reasons)


def test_past_deadline_skips_optional_stages():
    pipeline = _pipeline(
        diversity=MMRConfig(lam=0.2), exploration=EpsilonGreedyConfig(epsilon=1.0), deadline_ms=1e-6
    )
    decision = pipeline(Query(user=1, history=[int(RANKED.items[-1])]), RANKED, 10)
    assert "late:diversity" in decision.reasons
    assert decision.slate.items.tolist() == RANKED.items[:10].tolist()


def test_no_consent_leaves_no_per_user_trace(tmp_path):
    pipeline = _pipeline(
        tmp_path,
        diversity=MMRConfig(lam=0.7),
        exploration=ThompsonConfig(seed=0, n_propensity_samples=20),
        experiment=ExperimentConfig(
            name="e", salt="s", variants=(Variant(name="a", weight=1), Variant(name="b", weight=1))
        ),
    )
    secret_history = [int(i) for i in RANKED.items[:7]]
    query = Query(
        user=4242,
        history=secret_history,
        session_id="session-secret",
        context={"device": "mobile", "age_band": "25-34"},
        user_id="ext-4242",
        consent=False,
    )
    decision = pipeline(query, RANKED, 10)
    record = decision.record
    assert record.user_id is None and record.session_id is None and record.bucket is None
    assert record.source.startswith("no_consent:")
    assert record.variant == "a"  # the default variant, not a per-user assignment
    text = (tmp_path / "decisions.jsonl").read_text()
    for secret in ("ext-4242", "session-secret", "25-34", "age_band"):
        assert secret not in text
    # non-personalised: another person with the same request context gets the same slate
    other = Query(user=7, history=[1, 2, 3], context={"device": "mobile"}, consent=False)
    fresh = _pipeline(
        diversity=MMRConfig(lam=0.7),
        exploration=ThompsonConfig(seed=0, n_propensity_samples=20),
        experiment=pipeline.config.experiment,
    )
    assert fresh(other, RANKED, 10).slate.items.tolist() == decision.slate.items.tolist()
    # the personalised ranking was not used
    assert json.loads(text.splitlines()[0])["items"] == CATALOG.external_ids(decision.slate.items)


def test_consent_gate_alone():
    gate = ConsentGate(fallback=FALLBACK)
    assert gate(Query(user=1), RANKED, 10) is RANKED
    anonymous = gate(Query(user=1, history=[5], context={"gender": "F"}, consent=False), RANKED, 10)
    assert anonymous.reason == "global"
    assert len(anonymous) == 100


def test_pipeline_config_round_trips_json():
    config = DecisionPipelineConfig(
        diversity=MMRConfig(lam=0.4),
        exploration=EpsilonGreedyConfig(epsilon=0.05),
        rules=RulesConfig(caps=(CapRule(max_per_value=2),)),
    )
    assert DecisionPipelineConfig.from_json(config.to_json()) == config


def test_pipeline_needs_catalog_and_fallback():
    with pytest.raises(ValueError, match="catalog"):
        DecisionPipeline(DecisionPipelineConfig(), None, FALLBACK)
    with pytest.raises(ValueError, match="fallback"):
        DecisionPipeline(DecisionPipelineConfig(), CATALOG)
