"""A/B assignment: sticky across processes, splits as configured, variant picks the config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from recsys.decision import Experiment, ExperimentConfig, MMRConfig, Variant
from recsys.decision.experiments import bucket
from recsys.types import Query

CONFIG = ExperimentConfig(
    name="diversity-test",
    salt="2024-06",
    variants=(
        Variant(name="control", weight=0.5),
        Variant(name="mmr", weight=0.3, diversity=MMRConfig(lam=0.7)),
        Variant(name="mmr_strong", weight=0.2, diversity=MMRConfig(lam=0.4)),
    ),
)
USERS = [f"user-{i}" for i in range(100_000)]


def test_split_proportions_within_one_percent_on_100k_users():
    shares = Experiment(CONFIG).split(USERS)
    for variant in CONFIG.variants:
        assert abs(shares[variant.name] - variant.weight) < 0.01, shares


def test_same_user_same_variant_in_another_process():
    sample = USERS[:2000]
    here = [Experiment(CONFIG).variant_for(u).name for u in sample]
    code = (
        "import json, sys\n"
        "from recsys.decision import Experiment, ExperimentConfig\n"
        "cfg = ExperimentConfig.from_json(sys.argv[1])\n"
        "users = [f'user-{i}' for i in range(2000)]\n"
        "print(json.dumps([Experiment(cfg).variant_for(u).name for u in users]))\n"
    )
    # a different hash seed proves nothing depends on Python's salted hash()
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", code, CONFIG.to_json()],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    )
    assert json.loads(result.stdout) == here


def test_assignment_is_sticky_and_salt_reshuffles():
    experiment = Experiment(CONFIG)
    first = [experiment.variant_for(u).name for u in USERS[:500]]
    assert first == [experiment.variant_for(u).name for u in USERS[:500]]
    other = Experiment(CONFIG.model_copy(update={"salt": "another"}))
    changed = sum(a != other.variant_for(u).name for a, u in zip(first, USERS[:500], strict=True))
    assert changed > 100


def test_query_assignment_uses_external_id_and_defaults_without_consent():
    experiment = Experiment(CONFIG)
    query = Query(user=7, user_id="user-42")
    assignment = experiment.assign(query)
    assert assignment.sticky and assignment.variant.name == experiment.variant_for("user-42").name
    assert assignment.bucket == bucket("user-42", CONFIG.salt)
    # the dense index is never the key: the same id at another index, the same variant
    assert experiment.assign(Query(user=3, user_id="user-42")) == assignment
    no_id = experiment.assign(Query(user=7))
    assert not no_id.sticky and no_id.variant.name == "control"
    anonymous = experiment.assign(Query(user=7, user_id="user-42", consent=False))
    assert not anonymous.sticky and anonymous.variant.name == "control"
    assert anonymous.bucket is None


def test_zero_weight_variant_gets_no_traffic():
    config = ExperimentConfig(
        name="x", salt="s", variants=(Variant(name="a", weight=1), Variant(name="b", weight=0))
    )
    assert set(Experiment(config).split(USERS[:5000])) == {"a", "b"}
    assert Experiment(config).split(USERS[:5000])["b"] == 0.0


def test_config_round_trip_and_validation():
    assert ExperimentConfig.from_json(CONFIG.to_json()) == CONFIG
    with pytest.raises(ValidationError, match="unique"):
        ExperimentConfig(
            name="x", salt="s", variants=(Variant(name="a", weight=1), Variant(name="a", weight=1))
        )
    with pytest.raises(ValidationError, match="default_variant"):
        ExperimentConfig(
            name="x", salt="s", variants=(Variant(name="a", weight=1),), default_variant="zz"
        )
