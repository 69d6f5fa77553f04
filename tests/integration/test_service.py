"""The personalisation Bento under the real ``bentoml serve`` process.

One tiny two-stage model (two-tower + ranker on synthetic data) is exported once; servers
are started with the environment each case needs (workers + Redis, an API key, injected
faults) and driven over HTTP.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from recsys.serving.client import RecsysClient
from recsys.serving.server import post, start_server

pytestmark = [pytest.mark.serve, pytest.mark.slow]


@pytest.fixture(scope="module")
def exported():
    from recsys.data import SyntheticConfig, generate, random_split
    from recsys.decision import DecisionPipelineConfig, MMRConfig
    from recsys.ranking import RankerConfig
    from recsys.ranking.two_stage import TwoStageConfig, TwoStageRecommender
    from recsys.retrieval.two_tower import TwoTowerConfig
    from recsys.serving.export import export_engine

    split = random_split(generate(SyntheticConfig(n_users=120, n_items=150, seed=3)), seed=3)
    config = TwoStageConfig(
        retriever=TwoTowerConfig(
            embedding_size=16, table_dim=16, hidden_size=32, epochs=2, batch_size=128,
            progress=False,
        ),
        ranker=RankerConfig(candidates=40, epochs=3, hidden=(16,), batch_size=16, folds=2),
    )  # fmt: skip
    model = TwoStageRecommender(config).fit(split)
    decision = DecisionPipelineConfig(diversity=MMRConfig(lam=0.7))
    saved = export_engine(split, model, "two_tower+ranker", decision=decision)
    return str(saved.tag), split


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    tag, _ = exported
    with start_server(model_tag=tag, log_dir=tmp_path_factory.mktemp("one")) as running:
        yield running


def test_recommend_events_forget_consent_over_http(server, exported):
    _, split = exported
    user = split.dataset.user_index.ids[7]
    status, first = post(
        f"{server.url}/recommend", {"user_id": user, "k": 5, "context": {"device": "mobile"}}
    )
    assert status == 200 and len(first["items"]) == 5 and first["fallback"] is None
    assert {"profile", "retrieval", "ranking", "decision", "total"} <= set(first["timings_ms"])
    assert len(first["propensities"]) == 5
    clicked = first["items"][:2]
    status, body = post(
        f"{server.url}/events",
        {
            "events": [
                {"user_id": user, "item_id": i, "timestamp": 2e9 + n} for n, i in enumerate(clicked)
            ]
        },
    )
    assert status == 200 and body["accepted"] == 2 and body["store_ok"]
    _, after = post(f"{server.url}/recommend", {"user_id": user, "k": 5})
    assert not set(after["items"]) & set(clicked)
    assert post(f"{server.url}/consent", {"user_id": user, "granted": False}) == (
        200,
        {"user_id": user, "granted": False},
    )
    _, private = post(f"{server.url}/recommend", {"user_id": user, "k": 5})
    assert private["fallback"] == "no personalisation consent"
    status, erased = post(f"{server.url}/forget", {"user_id": user})
    assert status == 200 and erased["log_events_removed"] == 2


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/recommend", {"k": 0}, "k"),
        ("/recommend", {"k": 10_000}, "k"),
        ("/recommend", {"k": "ten"}, "k"),
        ("/recommend", {"user_id": 42}, "user_id"),
        ("/recommend", {"unknown_field": 1}, "unknown_field"),
        ("/recommend", {"history": "i1"}, "history"),
        ("/events", {"events": {"user_id": "u1"}}, "events"),
        ("/consent", {"user_id": "u1"}, "granted"),
        ("/forget", {}, "user_id"),
    ],
)
def test_bad_requests_get_400_naming_the_field(server, path, body, field):
    status, answer = post(f"{server.url}{path}", body)
    assert status == 400
    assert any(field in error["loc"] for error in answer["detail"]), answer


def test_malformed_json_is_a_400(server):
    status, answer = post(f"{server.url}/recommend", b'{"k": 5')
    assert status == 400 and "json" in str(answer).lower()


def test_health_and_metrics(server):
    for probe in ("/healthz", "/readyz"):
        with urllib.request.urlopen(f"{server.url}{probe}", timeout=5) as response:
            assert response.status == 200
    post(f"{server.url}/recommend", {"user_id": "never-seen", "k": 3})
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert "recsys_stage_seconds" in text and 'recsys_fallbacks_total{reason="cold_start"}' in text
    # the worker's loop runs on its main thread: the budget binds by the alarm, not a thread
    assert 'recsys_workers_by_deadline_total{mechanism="alarm"} 1.0' in text


def test_schemathesis_finds_no_server_error(server, tmp_path):
    st = Path(sys.executable).with_name("st")
    result = subprocess.run(
        [str(st), "run", f"{server.url}/docs.json", "--checks", "not_a_server_error",
         "--max-examples", "40", "--seed", "1", "--phases", "examples,coverage,fuzzing",
         "--report-dir", str(tmp_path), "--exclude-path-regex", "^/(metrics|livez)"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    assert "No issues found" in result.stdout
    tested = int(result.stdout.split(" selected")[0].rsplit(" ", 1)[-1])
    assert tested >= 4  # recommend, events, forget, consent (+ health probes)


def test_api_key_is_required_when_set(exported, tmp_path):
    tag, _ = exported
    with start_server(model_tag=tag, log_dir=tmp_path, env={"RECSYS_API_KEY": "k3y"}) as guarded:
        assert post(f"{guarded.url}/recommend", {"k": 3})[0] == 401
        assert post(f"{guarded.url}/recommend", {"k": 3}, {"x-api-key": "nope"})[0] == 401
        assert post(f"{guarded.url}/recommend", {"k": 3}, {"x-api-key": "k3y"})[0] == 200
        with urllib.request.urlopen(f"{guarded.url}/healthz", timeout=5) as response:
            assert response.status == 200


def test_a_raising_ranker_and_a_late_retriever_degrade_not_fail(exported, tmp_path):
    tag, split = exported
    user = split.dataset.user_index.ids[2]
    with start_server(
        model_tag=tag, log_dir=tmp_path / "a", env={"RECSYS_FAULTS": "ranking=raise"}
    ) as s:
        status, answer = post(f"{s.url}/recommend", {"user_id": user, "k": 5})
        assert status == 200 and len(answer["items"]) == 5
        assert answer["degraded"]["ranking"].startswith("failed, retrieval order kept")
    env = {"RECSYS_FAULTS": "retrieval=sleep:800"}
    with start_server(model_tag=tag, log_dir=tmp_path / "b", env=env) as s:
        started = time.perf_counter()
        status, answer = post(f"{s.url}/recommend", {"user_id": user, "k": 5})
        elapsed = time.perf_counter() - started
        assert status == 200 and len(answer["items"]) == 5
        assert answer["fallback"] == "retrieval abandoned at the 50 ms budget"
        assert elapsed < 0.6  # answered at the budget, not after the 800 ms stage
        # a page with a 10 ms budget for personalisation shows its cached slate instead
        client = RecsysClient(s.url, timeout=0.01, fallback_items=["cached-1", "cached-2"])
        answer = client.recommend(user_id=user, k=2)
        assert answer.degraded and answer.items == ["cached-1", "cached-2"]
        assert "service unavailable" in answer.reason


def test_the_client_caches_a_slate_and_degrades_when_the_service_dies(exported, tmp_path):
    tag, split = exported
    user = split.dataset.user_index.ids[4]
    s = start_server(model_tag=tag, log_dir=tmp_path)
    try:
        client = RecsysClient(s.url, timeout=2.0, retry_after=30.0)
        assert client.refresh_fallback(k=5) and len(client.fallback_items) == 5
        live = client.recommend(user_id=user, k=5)
        assert not live.degraded and len(live.items) == 5 and live.response["timings_ms"]
        assert client.events([{"user_id": user, "item_id": live.items[0], "timestamp": 2e9}])
    finally:
        s.stop()
    down = client.recommend(user_id=user, k=5)
    assert down.degraded and down.items == client.fallback_items
    started = time.perf_counter()
    again = client.recommend(user_id=user, k=5)  # circuit open: no second timeout
    assert again.degraded and "circuit open" in again.reason
    assert time.perf_counter() - started < 1.0


def test_two_workers_share_state_and_survive_redis_loss(exported, tmp_path):
    tag, split = exported
    user = split.dataset.user_index.ids[11]
    with start_server(model_tag=tag, workers=2, log_dir=tmp_path) as s:
        _, first = post(f"{s.url}/recommend", {"user_id": user, "k": 5})
        clicked = first["items"][:3]
        events = [
            {"user_id": user, "item_id": i, "timestamp": 2e9 + n} for n, i in enumerate(clicked)
        ]
        assert post(f"{s.url}/events", {"events": events})[0] == 200
        workers = set()
        # New connections: the OS spreads them over the workers that are accepting. A worker
        # still loading its engine accepts none yet, so keep asking until both have answered.
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline:
            with urllib.request.urlopen(
                urllib.request.Request(
                    f"{s.url}/recommend",
                    data=f'{{"user_id": "{user}", "k": 5}}'.encode(),
                    headers={"content-type": "application/json"},
                ),
                timeout=10,
            ) as response:
                workers.add(response.headers.get("x-recsys-worker"))
                answer = __import__("json").loads(response.read())
            assert not set(answer["items"]) & set(clicked)  # every worker saw the events
        assert len(workers) == 2
        # one keep-alive client: now and then told to reconnect, so its connection is re-spread
        host, port = s.url.removeprefix("http://").split(":")
        connection, closes = http.client.HTTPConnection(host, int(port), timeout=10), 0
        for _ in range(200):
            connection.request(
                "POST", "/recommend", f'{{"user_id": "{user}", "k": 5}}',
                {"content-type": "application/json"},
            )  # fmt: skip
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            closes += response.headers.get("connection", "").lower() == "close"
        connection.close()
        assert 0 < closes < 40  # about one in RECSYS_KEEPALIVE_REQUESTS (20)
        s.redis.kill()  # the shared store goes away mid-run
        for _ in range(5):
            status, answer = post(f"{s.url}/recommend", {"user_id": user, "k": 5})
            assert status == 200 and len(answer["items"]) == 5
            assert "consent" in answer["degraded"] or "profile" in answer["degraded"]
        status, body = post(f"{s.url}/events", {"events": events})
        assert status == 503 and "not accepted" in body["error"]
