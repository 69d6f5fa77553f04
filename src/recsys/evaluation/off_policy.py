"""Off-policy evaluation: IPS and SNIPS with confidence intervals, and a simulator to check them.

Given decisions logged by an exploring policy π₀ (action ``a`` with propensity π₀(a|x), reward
``r``), the value of a target policy π is estimated by

* **IPS**: ``V̂ = mean(w·r)`` with ``w = π(a|x) / π₀(a|x)`` (unbiased when π₀ covers π);
  CI from the normal approximation of the mean, ``± z·sd(w·r)/√n``;
* **SNIPS**: ``V̂ = Σ w·r / Σ w`` (self-normalised: biased by O(1/n), much lower variance);
  CI by the delta method, ``sd = √(mean(w²(r − V̂)²)) / (mean(w)·√n)``.

For slates, pass one row per (decision, position) with the item–position propensities
(:mod:`recsys.decision.exploration` logs exactly those): the sum over positions is the value
under a position-based click model.

:class:`BanditSimulator` knows the true click probability of every (context, action), so the true
value of any policy is computed exactly and the estimators can be checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt
from pydantic import Field

from recsys.config import ComponentConfig

ArrayLike = npt.ArrayLike


@dataclass(frozen=True)
class Estimate:
    """A policy value estimate with its confidence interval.

    Attributes:
        value: Point estimate.
        stderr: Standard error.
        ci_low: Lower end of the ``1 − alpha`` interval.
        ci_high: Upper end.
        n: Number of logged rows.
        ess: Effective sample size of the importance weights, (Σw)² / Σw².
    """

    value: float
    stderr: float
    ci_low: float
    ci_high: float
    n: int
    ess: float

    def covers(self, truth: float) -> bool:
        """Whether ``truth`` lies in the interval."""
        return self.ci_low <= truth <= self.ci_high

    def as_dict(self) -> dict[str, float]:
        """Plain dict for JSON."""
        return {
            "value": self.value,
            "stderr": self.stderr,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n": float(self.n),
            "ess": self.ess,
        }


def _weights(
    rewards: ArrayLike,
    logging_propensities: ArrayLike,
    target_propensities: ArrayLike,
    clip: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rewards, dtype=np.float64).ravel()
    p0 = np.asarray(logging_propensities, dtype=np.float64).ravel()
    p1 = np.asarray(target_propensities, dtype=np.float64).ravel()
    if not (r.shape == p0.shape == p1.shape):
        raise ValueError(
            f"rewards {r.shape}, logging_propensities {p0.shape} and target_propensities "
            f"{p1.shape} must have the same length"
        )
    if r.size == 0:
        raise ValueError("rewards: no logged rows")
    if np.any(p0 <= 0) or np.any(p0 > 1):
        raise ValueError("logging_propensities: must lie in (0, 1]")
    if np.any(p1 < 0) or np.any(p1 > 1):
        raise ValueError("target_propensities: must lie in [0, 1]")
    w = p1 / p0
    if clip is not None:
        w = np.minimum(w, clip)
    return r, w


def _interval(value: float, stderr: float, n: int, ess: float, alpha: float) -> Estimate:
    z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    return Estimate(value, stderr, value - z * stderr, value + z * stderr, n, ess)


def ips(
    rewards: ArrayLike,
    logging_propensities: ArrayLike,
    target_propensities: ArrayLike,
    alpha: float = 0.05,
    clip: float | None = None,
) -> Estimate:
    """Inverse propensity scoring estimate of the target policy's value.

    Args:
        rewards: Observed reward per logged row, shape (n,).
        logging_propensities: π₀(a|x) of the logged action, in (0, 1].
        target_propensities: π(a|x) of the same action under the target policy.
        alpha: 1 − confidence level of the interval.
        clip: Cap on the importance weights (trades bias for variance); ``None`` = unbiased.
    """
    r, w = _weights(rewards, logging_propensities, target_propensities, clip)
    terms = w * r
    n = r.size
    stderr = float(terms.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    ess = float(w.sum() ** 2 / max(np.sum(w * w), 1e-300))
    return _interval(float(terms.mean()), stderr, n, ess, alpha)


def snips(
    rewards: ArrayLike,
    logging_propensities: ArrayLike,
    target_propensities: ArrayLike,
    alpha: float = 0.05,
    clip: float | None = None,
) -> Estimate:
    """Self-normalised IPS estimate (Swaminathan & Joachims 2015) with a delta-method CI.

    Arguments as in :func:`ips`.
    """
    r, w = _weights(rewards, logging_propensities, target_propensities, clip)
    n = r.size
    total = w.sum()
    if total <= 0:
        raise ValueError("target_propensities: the target policy never takes a logged action")
    value = float((w * r).sum() / total)
    mean_w = total / n
    stderr = float(np.sqrt(np.mean((w * (r - value)) ** 2)) / (mean_w * np.sqrt(n)))
    ess = float(total**2 / max(np.sum(w * w), 1e-300))
    return _interval(value, stderr, n, ess, alpha)


class SimulatorConfig(ComponentConfig):
    """A contextual bandit with known click probabilities."""

    n_contexts: int = Field(200, ge=1, le=1_000_000)
    n_actions: int = Field(50, ge=2, le=100_000)
    dim: int = Field(8, ge=1, le=256)
    base_rate: float = Field(0.05, gt=0.0, lt=1.0, description="Typical click probability.")
    signal: float = Field(2.0, ge=0.0, le=20.0, description="How much the context matters.")
    seed: int = 0


@dataclass(frozen=True)
class LoggedData:
    """Decisions logged by a policy in the simulator.

    Attributes:
        contexts: Context index per row, shape (n,).
        actions: Action taken, shape (n,).
        rewards: 0/1 click, shape (n,).
        propensities: Probability the logging policy took that action, shape (n,).
    """

    contexts: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    propensities: np.ndarray


class BanditSimulator:
    """Contexts × actions with true click probabilities ``sigmoid(logit(base) + signal·⟨u, v⟩)``.

    Policies are (n_contexts, n_actions) row-stochastic matrices, so their true value is exact:
    ``V(π) = mean_x Σ_a π(a|x) p(click | x, a)`` (contexts arrive uniformly).
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        users = rng.normal(size=(cfg.n_contexts, cfg.dim)) / np.sqrt(cfg.dim)
        items = rng.normal(size=(cfg.n_actions, cfg.dim))
        logit = np.log(cfg.base_rate / (1 - cfg.base_rate)) + cfg.signal * (users @ items.T)
        self.click_prob = 1.0 / (1.0 + np.exp(-logit))
        # a noisy model of the truth: what a production ranker would score with
        self.model_scores = logit + rng.normal(scale=1.0, size=logit.shape)

    def epsilon_greedy(self, scores: np.ndarray, epsilon: float) -> np.ndarray:
        """π(a|x): greedy on ``scores`` with probability 1−ε, uniform otherwise."""
        n_actions = scores.shape[1]
        policy = np.full(scores.shape, epsilon / n_actions)
        policy[np.arange(scores.shape[0]), scores.argmax(axis=1)] += 1.0 - epsilon
        return policy

    def softmax(self, scores: np.ndarray, temperature: float) -> np.ndarray:
        """π(a|x) ∝ exp(score / temperature)."""
        z = scores / temperature
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def true_value(self, policy: np.ndarray) -> float:
        """Exact expected reward of a policy."""
        return float((policy * self.click_prob).sum(axis=1).mean())

    def log(self, policy: np.ndarray, n: int, seed: int = 0) -> LoggedData:
        """Simulate ``n`` decisions of ``policy``, contexts uniform, clicks Bernoulli."""
        rng = np.random.default_rng(seed)
        contexts = rng.integers(0, policy.shape[0], size=n)
        cumulative = np.cumsum(policy[contexts], axis=1)
        u = rng.random(n)[:, None] * cumulative[:, -1:]
        actions = np.minimum((cumulative < u).sum(axis=1), policy.shape[1] - 1)
        rewards = (rng.random(n) < self.click_prob[contexts, actions]).astype(np.float64)
        return LoggedData(contexts, actions, rewards, policy[contexts, actions])


def evaluate_policy(
    logged: LoggedData, target: np.ndarray, alpha: float = 0.05
) -> dict[str, Estimate]:
    """IPS and SNIPS estimates of ``target`` (a policy matrix) from simulator logs."""
    p1 = target[logged.contexts, logged.actions]
    return {
        "ips": ips(logged.rewards, logged.propensities, p1, alpha),
        "snips": snips(logged.rewards, logged.propensities, p1, alpha),
    }
