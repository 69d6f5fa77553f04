"""IPS / SNIPS: known answers, and coverage of the true value on the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.evaluation.off_policy import (
    BanditSimulator,
    SimulatorConfig,
    evaluate_policy,
    ips,
    snips,
)

SIM = BanditSimulator(SimulatorConfig(seed=1))
LOGGING = SIM.epsilon_greedy(SIM.model_scores, 0.3)
TARGET = SIM.epsilon_greedy(SIM.click_prob, 0.05)


def test_on_policy_weights_are_one():
    rewards = np.asarray([0, 1, 1, 0, 1.0])
    props = np.asarray([0.2, 0.5, 0.1, 0.9, 1.0])
    for estimator in (ips, snips):
        est = estimator(rewards, props, props)
        assert est.value == pytest.approx(0.6)
        assert est.ess == pytest.approx(5.0)


def test_estimates_cover_the_true_value_on_the_simulator():
    truth = SIM.true_value(TARGET)
    assert truth > SIM.true_value(LOGGING) + 0.05, "target must differ from logging policy"
    covered = {"ips": 0, "snips": 0}
    values = {"ips": [], "snips": []}
    reps = 40
    for seed in range(reps):
        for name, est in evaluate_policy(SIM.log(LOGGING, 20_000, seed=seed), TARGET).items():
            covered[name] += est.covers(truth)
            values[name].append(est.value)
    for name in covered:
        # nominal 95 %; 40 reps leave room for sampling noise, not for a biased estimator
        assert covered[name] / reps >= 0.85, (name, covered[name])
        assert abs(np.mean(values[name]) - truth) < 0.02, name
    # the naive average of logged rewards is far off: the correction matters
    naive = SIM.log(LOGGING, 20_000, seed=0).rewards.mean()
    assert abs(naive - truth) > 0.1


def test_snips_has_lower_variance_than_ips():
    ips_values, snips_values = [], []
    for seed in range(20):
        est = evaluate_policy(SIM.log(LOGGING, 5_000, seed=seed), TARGET)
        ips_values.append(est["ips"].value)
        snips_values.append(est["snips"].value)
    assert np.std(snips_values) < np.std(ips_values)


def test_bad_inputs_name_the_field():
    with pytest.raises(ValueError, match="logging_propensities"):
        ips([1.0], [0.0], [0.5])
    with pytest.raises(ValueError, match="same length"):
        snips([1.0, 0.0], [0.5], [0.5])
    with pytest.raises(ValueError, match="never"):
        snips([1.0], [0.5], [0.0])
