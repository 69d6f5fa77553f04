"""Business rules: exclusions, live availability, boost/bury, caps, config as data."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from recsys.decision import (
    AttributeMatch,
    Availability,
    BoostRule,
    BusinessRules,
    CapRule,
    ItemCatalog,
    RulesConfig,
)
from recsys.types import ItemList, Query

GENRES = [("Drama",), ("Drama",), ("Comedy",), ("Drama", "Comedy"), ("Horror",), ("Horror",)]
YEARS = [1990.0, 2001.0, 1975.0, 2010.0, 1980.0, 2015.0]
CATALOG = ItemCatalog(6, {"genres": GENRES, "year": YEARS}, np.eye(6))
RANKED = ItemList(np.arange(6), np.asarray([6.0, 5.0, 4.0, 3.0, 2.0, 1.0]))


def test_excludes_consumed_and_query_excludes():
    rules = BusinessRules(RulesConfig(), CATALOG)
    out = rules(Query(user=1, history=[0, 2], exclude=[5]), RANKED, 10)
    assert out.items.tolist() == [1, 3, 4]


def test_consumed_items_stay_when_rule_is_off():
    rules = BusinessRules(RulesConfig(exclude_consumed=False), CATALOG)
    assert rules(Query(history=[0]), RANKED, 2).items.tolist() == [0, 1]


def test_availability_changes_at_run_time_without_rebuilding():
    availability = Availability(6)
    rules = BusinessRules(RulesConfig(), CATALOG, availability)
    assert rules(Query(), RANKED, 2).items.tolist() == [0, 1]
    availability.mark_unavailable([0])
    assert rules(Query(), RANKED, 2).items.tolist() == [1, 2]
    availability.replace([4, 5])
    assert rules(Query(), RANKED, 3).items.tolist() == [4, 5]
    availability.mark_available([0])
    assert rules(Query(), RANKED, 1).items.tolist() == [0]


def test_boost_and_bury_by_attribute():
    horror_top = BoostRule(match=AttributeMatch(attribute="genres", values=("Horror",)), mode="top")
    old_bottom = BoostRule(match=AttributeMatch(attribute="year", max=1985), mode="bottom")
    rules = BusinessRules(RulesConfig(boosts=(horror_top, old_bottom)), CATALOG)
    out = rules.prepare(Query(), RANKED)
    # 5 is horror: first; 4 is horror but old: the later "bottom" rule wins; old items last
    assert out.items.tolist() == [5, 0, 1, 3, 2, 4]
    assert np.all(np.diff(out.scores) <= 0), "scores must stay sorted for the selectors"


def test_additive_boost_reorders_by_amount():
    boost = BoostRule(match=AttributeMatch(attribute="genres", values=("Comedy",)), amount=2.5)
    out = BusinessRules(RulesConfig(boosts=(boost,)), CATALOG)(Query(), RANKED, 3)
    assert out.items.tolist() == [2, 0, 3]


def test_exclude_by_attribute_and_item():
    config = RulesConfig(
        exclude=(AttributeMatch(attribute="genres", values=("Horror",)),), exclude_items=(1,)
    )
    out = BusinessRules(config, CATALOG)(Query(), RANKED, 10)
    assert out.items.tolist() == [0, 2, 3]


def test_cap_at_most_n_per_genre():
    config = RulesConfig(caps=(CapRule(attribute="genres", max_per_value=1),))
    out = BusinessRules(config, CATALOG)(Query(), RANKED, 6)
    # 0 Drama, 1 Drama (skip), 2 Comedy, 3 Drama+Comedy (skip), 4 Horror, 5 Horror (skip)
    assert out.items.tolist() == [0, 2, 4]


def test_rules_are_data_json_round_trip():
    config = RulesConfig(
        boosts=(BoostRule(match=AttributeMatch(attribute="year", min=2000), amount=1.0),),
        caps=(CapRule(max_per_value=2, values=("Drama",)),),
    )
    again = RulesConfig.from_json(config.to_json())
    assert again == config
    out = BusinessRules(again, CATALOG)(Query(), RANKED, 6)
    assert sum("Drama" in GENRES[i] for i in out.items) == 2


def test_bad_rules_name_the_field():
    with pytest.raises(ValidationError, match="max_per_value"):
        CapRule(max_per_value=0)
    with pytest.raises(ValidationError, match="extra"):
        RulesConfig(exclude_consumd=True)
    with pytest.raises(ValueError, match="attribute"):
        BusinessRules(
            RulesConfig(boosts=(BoostRule(match=AttributeMatch(attribute="price", min=1)),)),
            CATALOG,
        )
