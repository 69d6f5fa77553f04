from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from pydantic import ValidationError

from recsys.data import IdIndex, SyntheticConfig, generate
from recsys.features.definitions import (
    FEATURES,
    FeatureConfig,
    ItemInfo,
    ItemInfoCatalog,
    UserState,
    age_band,
    derive_context,
    feature_names,
    fold_user,
    merge_history,
    user_features,
)
from recsys.features.events import Event, EventLog, events_from_frame
from recsys.features.ingest import ConsentRegistry, Ingestor, replay
from recsys.features.offline import build_offline_features
from recsys.features.store import (
    InProcessStore,
    OnlineStore,
    StoreUnavailableError,
    UserProfile,
    profile_to_query,
)

DAY = 86400.0
CATALOG = ItemInfoCatalog(
    {
        "a": ItemInfo(("Action",), 1990.0),
        "b": ItemInfo(("Comedy",), 2000.0),
        "ab": ItemInfo(("Action", "Comedy"), None),
    }
)


def _fold(events: list[Event], config: FeatureConfig | None = None) -> UserState:
    state = UserState("u")
    for event in events:
        fold_user(state, event, CATALOG, config or FeatureConfig())
    return state


@pytest.fixture(scope="module")
def synthetic():
    return generate(SyntheticConfig(n_users=40, n_items=60, seed=3))


def test_every_feature_is_declared_once_with_entity_source_dtype_default():
    assert len(FEATURES) == len(feature_names())
    assert set(feature_names("user", "online")) == {
        "user_last_items",
        "user_last_item_times",
        "user_last_item_types",
        "user_session_id",
        "user_session_start",
        "user_session_length",
        "user_genre_decayed",
        "user_last_event_time",
    }
    assert {"user_genre_affinity", "user_event_count"} <= set(feature_names("user", "offline"))
    assert {"item_popularity", "item_seconds_since_last_event", "item_genres", "item_year"} <= set(
        feature_names("item", "offline")
    )
    for feature in FEATURES.values():
        assert feature.entity in ("user", "item") and feature.source in ("offline", "online")
        assert feature.dtype and feature.description
    assert FEATURES["user_session_length"].ttl(FeatureConfig(session_gap_seconds=60)) == 60.0


def test_feature_config_round_trips_and_rejects_unknown_keys():
    config = FeatureConfig(recent_items=5, genre_half_life_days=2.0)
    assert FeatureConfig.from_json(config.to_json()) == config
    with pytest.raises(ValidationError):
        FeatureConfig(recent_itemz=5)
    with pytest.raises(ValidationError):
        FeatureConfig(recent_items=0)


def test_recent_items_keep_last_n_oldest_first():
    events = [Event("u", f"x{k}", float(k), event_type=("buy", "view")[k % 2]) for k in range(8)]
    state = _fold(events, FeatureConfig(recent_items=3))
    assert state.recent_items == ["x5", "x6", "x7"]
    assert state.recent_times == [5.0, 6.0, 7.0]  # kept aligned with the items
    assert state.recent_types == ["view", "buy", "view"]
    assert state.event_count == 8


def test_sessions_split_on_30_minute_gaps():
    times = [0.0, 600.0, 1200.0, 1200.0 + 1801.0, 1200.0 + 1802.0]
    state = UserState("u")
    sessions = []
    for t in times:
        fold_user(state, Event("u", "a", t), CATALOG, FeatureConfig())
        sessions.append((state.session_id, state.session_length))
    assert sessions[0][1] == 1 and sessions[2] == (sessions[0][0], 3)
    assert sessions[3][0] != sessions[0][0] and sessions[3][1] == 1
    assert sessions[4] == (sessions[3][0], 2)
    # an explicit client session id also starts a session
    fold_user(state, Event("u", "a", times[-1] + 1, session_id="s-new"), CATALOG, FeatureConfig())
    assert state.session_id == "s-new" and state.session_length == 1


def test_session_features_expire_after_the_gap_others_do_not():
    state = _fold([Event("u", "a", 0.0), Event("u", "b", 60.0)])
    live = user_features(state, 100.0, FeatureConfig())
    assert live["user_session_length"] == 2 and live["user_session_id"]
    later = user_features(state, 60.0 + 1801.0, FeatureConfig())
    assert later["user_session_length"] == 0 and later["user_session_id"] == ""
    assert later["user_last_items"] == ["a", "b"]
    empty = user_features(None, 0.0, FeatureConfig())
    assert empty["user_last_items"] == [] and math.isnan(empty["user_last_event_time"])


@pytest.mark.parametrize("span_days", [3.0, 2000.0])
def test_decayed_genre_counts_match_the_closed_form(span_days):
    # 2000 days with a 7-day half-life crosses the anchor rebase (2^64) several times
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0, span_days * DAY, size=50))
    items = rng.choice(["a", "b", "ab"], size=50)
    order = rng.permutation(50)[:45].tolist() + list(range(45, 50))  # some late arrivals
    config = FeatureConfig(genre_half_life_days=7.0)
    state = _fold([Event("u", items[i], float(times[i])) for i in order], config)
    now = float(times.max()) + 3 * DAY
    got = user_features(state, now, config)
    expected: dict[str, float] = {}
    totals: dict[str, float] = {}
    for t, item in zip(times[order], items[order], strict=True):
        genres = CATALOG.genres(item)
        for g in genres:
            w = 1.0 / len(genres)
            expected[g] = expected.get(g, 0.0) + w * 0.5 ** ((now - t) / (7.0 * DAY))
            totals[g] = totals.get(g, 0.0) + w
    assert got["user_genre_decayed"].keys() == expected.keys()
    for g, value in expected.items():
        assert got["user_genre_decayed"][g] == pytest.approx(value, rel=1e-9, abs=1e-300)
    assert sum(got["user_genre_affinity"].values()) == pytest.approx(1.0)
    assert got["user_genre_affinity"]["Action"] == pytest.approx(totals["Action"] / 50)


def test_offline_builder_and_online_store_compute_the_same_features(synthetic):
    """The training/serving agreement: one fold, two paths, identical values."""
    events = events_from_frame(synthetic.interactions)
    catalog = ItemInfoCatalog.from_dataset(synthetic)
    cutoff = float(synthetic.interactions["timestamp"].quantile(0.7))
    offline = build_offline_features(
        synthetic.interactions, cutoff, catalog, item_ids=synthetic.item_index.ids
    )
    store = InProcessStore(catalog)
    Ingestor(store).ingest([e for e in events if e.timestamp < cutoff])
    users = list(offline.users.index)
    assert len(users) > 10
    for profile in store.get_profiles(users, now=cutoff):
        row = offline.users.loc[profile.user_id]
        assert list(profile.recent_items) == row["user_last_items"]
        assert profile.event_count == row["user_event_count"]
        assert profile.session_length == row["user_session_length"]
        assert dict(profile.genre_counts) == pytest.approx(row["user_genre_decayed"])
        assert dict(profile.genre_affinity) == pytest.approx(row["user_genre_affinity"])
    assert len(offline.items) == synthetic.n_items
    assert offline.items.loc["i0", "item_genres"] == list(catalog.genres("i0"))
    seen = synthetic.interactions[synthetic.interactions["timestamp"] < cutoff]
    counts = seen["item_id"].value_counts()
    assert offline.items.loc[counts.index, "item_popularity"].tolist() == counts.tolist()


def test_ingest_updates_log_and_store_and_replay_rebuilds_exactly(tmp_path, synthetic):
    events = events_from_frame(synthetic.interactions)
    rng = np.random.default_rng(1)
    arrival = rng.permutation(len(events))  # out-of-order arrivals are the hard case
    catalog = ItemInfoCatalog.from_dataset(synthetic)
    live = InProcessStore(catalog)
    ingestor = Ingestor(live, EventLog(tmp_path / "log", segment_max_events=97))
    for start in range(0, len(events), 50):
        batch = [events[i].to_record() for i in arrival[start : start + 50]]
        result = ingestor.ingest(batch)
        assert result.accepted == len(batch) and result.store_ok
    assert len(ingestor.log) == len(events)
    rebuilt = InProcessStore(catalog)
    assert replay(tmp_path / "log", rebuilt) == len(events)
    assert rebuilt.snapshot() == live.snapshot()
    assert len(rebuilt.snapshot()) == synthetic.interactions["user_id"].nunique()


def test_concurrent_ingest_still_replays_to_the_live_state(tmp_path, synthetic):
    events = events_from_frame(synthetic.interactions)
    catalog = ItemInfoCatalog.from_dataset(synthetic)
    live = InProcessStore(catalog)
    ingestor = Ingestor(live, EventLog(tmp_path))
    chunks = [events[i : i + 7] for i in range(0, len(events), 7)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(ingestor.ingest, chunks))
    assert sum(r.accepted for r in results) == len(events)
    rebuilt = InProcessStore(catalog)
    replay(tmp_path, rebuilt)
    assert rebuilt.snapshot() == live.snapshot()


def test_no_consent_means_nothing_stored_only_anonymous_context(tmp_path):
    consent = ConsentRegistry(default=True, overrides={"shy": False})
    store = InProcessStore(CATALOG)
    ingestor = Ingestor(store, EventLog(tmp_path), consent)
    result = ingestor.ingest(
        [
            {"user_id": "shy", "item_id": "a", "timestamp": 1.0},
            {"user_id": "shy", "item_id": "b", "timestamp": 2.0},
            {"user_id": "open", "item_id": "a", "timestamp": 3.0},
        ]
    )
    assert (result.accepted, result.anonymous) == (1, 2)
    assert store.get_state("shy") is None and store.get_state("open") is not None
    assert all(e.user_id == "open" for e in ingestor.log.read())
    assert all(b"shy" not in p.read_bytes() for p in tmp_path.iterdir())
    assert ingestor.anonymous_item_counts == {"a": 1, "b": 1}
    consent.set("open", False)
    ingestor.ingest([{"user_id": "open", "item_id": "b", "timestamp": 4.0}])
    assert store.get_state("open").event_count == 1


def test_forget_removes_the_user_from_store_and_log(tmp_path):
    store = InProcessStore(CATALOG)
    ingestor = Ingestor(store, EventLog(tmp_path / "log", segment_max_events=3))
    batch = [
        {"user_id": user, "item_id": item, "timestamp": float(t)}
        for t, (user, item) in enumerate(
            [("gone", "a"), ("stay", "b"), ("gone", "ab"), ("stay", "a"), ("gone", "b")]
        )
    ]
    ingestor.ingest(batch)
    before = store.snapshot()["stay"]
    result = ingestor.forget("gone")
    assert result.log_events_removed == 3 and result.store_state_removed
    assert store.get_state("gone") is None
    assert store.get_profile("gone", now=10.0).event_count == 0
    assert all(b"gone" not in p.read_bytes() for p in (tmp_path / "log").iterdir())
    # nothing else changed, and a rebuild from the log does not bring the user back
    assert store.snapshot() == {"stay": before}
    rebuilt = InProcessStore(CATALOG)
    replay(tmp_path / "log", rebuilt)
    assert rebuilt.snapshot() == {"stay": before}


class _BrokenStore(OnlineStore):
    def _load(self, user_ids):
        raise StoreUnavailableError("backend down")

    def _save(self, states):
        raise StoreUnavailableError("backend down")

    def _delete(self, user_id):
        raise StoreUnavailableError("backend down")

    def user_ids(self):
        raise StoreUnavailableError("backend down")

    def clear(self):
        raise StoreUnavailableError("backend down")


def test_store_failure_degrades_reads_and_keeps_events_durable(tmp_path):
    store = _BrokenStore(CATALOG)
    profile = store.get_profile("u1", now=5.0)
    assert profile.degraded and "backend down" in profile.reason
    assert profile == UserProfile.default("u1", 5.0, profile.reason)
    ingestor = Ingestor(store, EventLog(tmp_path))
    result = ingestor.ingest([{"user_id": "u1", "item_id": "a", "timestamp": 1.0}])
    assert result.accepted == 1 and not result.store_ok and "backend down" in result.store_error
    assert len(ingestor.log) == 1
    recovered = InProcessStore(CATALOG)
    replay(tmp_path, recovered)
    assert recovered.get_profile("u1", now=2.0).recent_items == ("a",)


def test_a_failed_store_serves_offline_features_and_says_so(synthetic):
    catalog = ItemInfoCatalog.from_dataset(synthetic)
    cutoff = float(synthetic.interactions["timestamp"].median())
    offline = build_offline_features(synthetic.interactions, cutoff, catalog)
    user = next(iter(offline.user_states))
    profile = _BrokenStore(catalog).get_profile(user, now=cutoff, offline=offline.user_states)
    assert profile.degraded and "offline features" in profile.reason
    assert list(profile.recent_items) == offline.users.loc[user, "user_last_items"]
    assert profile.event_count == offline.users.loc[user, "user_event_count"] > 0
    unknown = _BrokenStore(catalog).get_profile("nobody", now=cutoff, offline=offline.user_states)
    assert unknown.degraded and unknown.reason.endswith("defaults") and not unknown.known


def test_profile_to_query_maps_ids_and_honours_consent():
    items = IdIndex(("a", "b", "c", "d"))
    users = IdIndex(("u1",))
    profile = UserProfile(
        "u1",
        recent_items=("b", "zzz", "d", "b"),
        recent_times=(5.0, 6.0, 7.0, 8.0),
        recent_types=("click",) * 4,
        session_id="s",
        as_of=9.0,
    )
    query = profile_to_query(
        profile, items, users, base_history=[0, 3], base_times=[1.0, 7.0], context={"device": "m"}
    )
    assert query.user == 0 and query.user_id == "u1"
    # merged by time; the event both sources hold (d at 7.0) counts once; repeats are kept
    assert query.history.tolist() == [0, 1, 3, 1]
    assert query.history_times.tolist() == [1.0, 5.0, 7.0, 8.0]
    assert query.session_id == "s" and query.timestamp == 9.0 and query.context == {"device": "m"}
    alone = profile_to_query(profile, items, users)
    assert alone.history.tolist() == [1, 3, 1]  # the unknown item dropped
    anonymous = profile_to_query(profile, items, users, context={"device": "m"}, consent=False)
    assert anonymous.user is None and anonymous.history.size == 0 and not anonymous.consent
    unknown_user = profile_to_query(UserProfile("nobody"), items, users)
    assert unknown_user.user is None and unknown_user.history.size == 0


def test_merge_history_orders_by_time_and_counts_shared_events_once():
    items, times, types = merge_history(
        [1, 2, 3], [1.0, 2.0, 3.0], [3, 4, 2], [3.0, 4.0, 0.5], ["a", "b", "c"], ["x", "y", "z"]
    )
    assert items.tolist() == [2, 1, 2, 3, 4]
    assert times.tolist() == [0.5, 1.0, 2.0, 3.0, 4.0]
    assert types == ("z", "a", "b", "c", "y")
    fast, _, _ = merge_history([1], [1.0], [], [])
    assert fast.tolist() == [1]
    with pytest.raises(ValueError, match="needs a time"):
        merge_history([1, 2], [1.0], [], [])


def test_derive_context_is_the_one_derivation():
    assert derive_context({"age": 23, "zip": "12345", "gender": None}) == {
        "age": 23,
        "age_band": "18-24",
    }
    assert derive_context({"age_band": "56+", "age": 20})["age_band"] == "56+"
    assert age_band(17) == "<18" and age_band(60) == "56+" and age_band("x") is None


def test_in_process_reads_are_copies():
    store = InProcessStore(CATALOG)
    store.apply([Event("u", "a", 1.0)])
    state = store.get_state("u")
    state.recent_items.append("tampered")
    assert store.get_state("u").recent_items == ["a"]
    assert store.delete("u") and not store.delete("u")
