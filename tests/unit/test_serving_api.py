"""Export → load and the delivery app, without a server (the real server: tests/integration)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pydantic
import pytest

from recsys.decision import DecisionPipelineConfig, MMRConfig
from recsys.features import ConsentRegistry, StoreUnavailableError
from recsys.retrieval import EASE
from recsys.serving import build_engine
from recsys.serving.api import (
    ApiKeyMiddleware,
    ConsentRequest,
    EventsRequest,
    ForgetRequest,
    KeepAliveLimitMiddleware,
    RecommendRequest,
    ServiceUnavailableError,
    ServingApp,
    fallback_kind,
    service_settings,
)
from recsys.serving.export import ExportError, export_engine, load_engine, read_manifest
from recsys.serving.faults import inject_faults, parse_faults
from recsys.testing import tiny_split


@pytest.fixture(scope="module")
def trained():
    split = tiny_split()
    return split, EASE(l2=10.0).fit(split)


def _export(trained, tmp_path):
    from recsys.serving.export import write_artifacts

    split, model = trained
    decision = DecisionPipelineConfig(diversity=MMRConfig(lam=0.7))
    path = tmp_path / "engine"
    manifest = {
        "format_version": 1,
        "dataset": split.dataset.name,
        "protocol": split.protocol,
        "model": "ease",
        "item_digest": split.dataset.item_index.digest,
        "user_digest": split.dataset.user_index.digest,
        "metrics": {},
    }
    from recsys.decision import ContextPopularity
    from recsys.serving.engine import EngineConfig

    write_artifacts(
        path, split, model, decision, EngineConfig(), ContextPopularity().fit(split), manifest
    )
    return path, decision


def test_an_exported_engine_loads_back_identical(trained, tmp_path):
    split, model = trained
    path, decision = _export(trained, tmp_path)
    before = build_engine(split, retriever=model, decision=decision)
    after = load_engine(path)
    for user_id in split.dataset.user_index.ids[:40]:
        a = before.recommend(user_id=user_id, k=10, context={"device": "mobile"})
        b = after.recommend(user_id=user_id, k=10, context={"device": "mobile"})
        assert a.items == b.items and np.allclose(a.scores, b.scores)
    cold = after.recommend(user_id="new", k=5, context={"age_band": "25-34"})
    assert cold.fallback == "cold start: no history" and len(cold.items) == 5


def test_export_to_the_model_store_is_labelled(trained):
    import bentoml

    split, model = trained
    saved = export_engine(split, model, "ease", metrics={"test": {"ndcg@10": 0.25}})
    listed = [m.tag for m in bentoml.models.list("recsys-engine")]
    assert saved.tag in listed
    assert saved.info.labels["model"] == "ease" and saved.info.labels["dataset"] == "synthetic-0"
    assert saved.info.metadata["test_ndcg@10"] == 0.25
    assert read_manifest(str(saved.tag))["item_digest"] == split.dataset.item_index.digest
    with pytest.raises(ExportError, match="not in the BentoML model store"):
        load_engine("recsys-engine:nosuchversion")


def test_a_tampered_export_is_refused(trained, tmp_path):
    path, _ = _export(trained, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["item_digest"] = "0" * 16
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="item index differs"):
        load_engine(path)


def _app(trained, tmp_path, consent=None) -> ServingApp:
    split, model = trained
    consent = consent or ConsentRegistry()
    engine = build_engine(split, retriever=model, event_log_dir=tmp_path / "ev", consent=consent)
    return ServingApp(engine, consent)


def test_request_schemas_are_flat_strict_and_closed():
    assert RecommendRequest.model_validate({"user_id": "u1", "k": 5}).k == 5
    for bad, field in (
        ({"k": 0}, "k"),
        ({"k": 10_000}, "k"),
        ({"k": "5"}, "k"),
        ({"consent": "yes"}, "consent"),
        ({"history": "i1"}, "history"),
        ({"surprise": 1}, "surprise"),
        ({"context": {"device": ["a"]}}, "context"),
    ):
        with pytest.raises(pydantic.ValidationError) as info:
            RecommendRequest.model_validate(bad)
        assert field in str(info.value)
    with pytest.raises(pydantic.ValidationError):
        EventsRequest.model_validate({"events": []})


def test_the_app_serves_ingests_forgets_and_honours_consent(trained, tmp_path):
    split, _ = trained
    app = _app(trained, tmp_path)
    user = split.dataset.user_index.ids[3]
    first = asyncio.run(app.recommend(RecommendRequest(user_id=user, k=5)))
    assert len(first.items) == 5 and first.fallback is None
    status, body = app.events(
        EventsRequest(
            events=[
                {"user_id": user, "item_id": first.items[0], "timestamp": 2e9},
                {"user_id": user, "item_id": "i1", "timestamp": "soon"},
            ]
        )
    )
    assert status == 200 and body.accepted == 1 and body.rejected == 1
    assert "timestamp" in body.errors[0].reason and body.errors[0].index == 1
    after = asyncio.run(app.recommend(RecommendRequest(user_id=user, k=5)))
    assert first.items[0] not in after.items
    app.set_consent(ConsentRequest(user_id=user, granted=False))
    private = asyncio.run(app.recommend(RecommendRequest(user_id=user, k=5)))
    assert private.fallback == "no personalisation consent"
    forgotten = app.forget(ForgetRequest(user_id=user))
    assert forgotten.log_events_removed == 1 and forgotten.store_state_removed


def test_events_report_a_store_failure_and_refuse_unclearable_batches(trained, tmp_path):
    from recsys.features import ConsentUnavailableError

    app = _app(trained, tmp_path)

    def down(events):
        raise StoreUnavailableError("redis down")

    app.engine.ingestor.store.apply = down
    status, body = app.events(
        EventsRequest(events=[{"user_id": "u1", "item_id": "i1", "timestamp": 1.0}])
    )
    assert (
        status == 202
        and body.accepted == 1
        and not body.store_ok
        and "redis down" in body.store_error
    )

    class Unreachable(ConsentRegistry):
        def allows_many(self, user_ids):
            raise ConsentUnavailableError("consent store down")

        def allows(self, user_id):
            raise ConsentUnavailableError("consent store down")

    app = _app(trained, tmp_path / "b", consent=Unreachable())
    with pytest.raises(ServiceUnavailableError, match="consent store down"):
        app.events(EventsRequest(events=[{"user_id": "u1", "item_id": "i1", "timestamp": 1.0}]))
    answer = asyncio.run(app.recommend(RecommendRequest(user_id="u1", k=3)))
    assert answer.fallback == "no personalisation consent" and "consent" in answer.degraded


def test_api_key_middleware_guards_everything_but_probes():
    calls = []

    async def inner(scope, receive, send):
        calls.append(scope["path"])

    middleware = ApiKeyMiddleware(inner, key="s3cret")
    sent = []

    async def send(message):
        sent.append(message)

    def call(path, headers=()):
        sent.clear()
        asyncio.run(
            middleware({"type": "http", "path": path, "headers": list(headers)}, None, send)
        )
        return sent[0]["status"] if sent else 200

    assert call("/recommend") == 401
    assert call("/recommend", [(b"x-api-key", b"wrong")]) == 401
    assert call("/recommend", [(b"x-api-key", b"s3cret")]) == 200
    assert call("/events", [(b"authorization", b"Bearer s3cret")]) == 200
    assert call("/healthz") == 200 and call("/metrics") == 200
    assert calls == ["/recommend", "/events", "/healthz", "/metrics"]


def test_keep_alive_limit_closes_about_one_connection_in_mean_requests():
    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"a", b"b")]})
        await send({"type": "http.response.body", "body": b"{}"})

    def closes(middleware, scope_type="http"):
        sent = []

        async def send(message):
            sent.append(message)

        asyncio.run(middleware({"type": scope_type, "path": "/recommend"}, None, send))
        assert sent[1]["type"] == "http.response.body"  # the body passes untouched
        return (b"connection", b"close") in sent[0]["headers"]

    every = KeepAliveLimitMiddleware(inner, mean_requests=1)
    assert closes(every) and not closes(every, scope_type="lifespan")
    sometimes = KeepAliveLimitMiddleware(inner, mean_requests=20, seed=3)
    closed = sum(closes(sometimes) for _ in range(4000))
    assert 150 < closed < 250  # 200 expected; binomial sd 14
    with pytest.raises(ValueError, match="mean_requests"):
        KeepAliveLimitMiddleware(inner, mean_requests=0)


def test_service_settings_fill_defaults_by_worker_count():
    one, several = service_settings({}, workers=1), service_settings({}, workers=3)
    assert one["RECSYS_KEEPALIVE_REQUESTS"] == "0" and several["RECSYS_KEEPALIVE_REQUESTS"] == "20"
    assert several["RECSYS_TRACING"] == "0" and several["RECSYS_ACCESS_LOG"] == "0"
    chosen = service_settings({"RECSYS_DEADLINE": "thread", "RECSYS_TRACING": "1"}, workers=3)
    assert chosen["RECSYS_DEADLINE"] == "thread" and chosen["RECSYS_TRACING"] == "1"


def test_recsys_deadline_overrides_the_export_and_is_validated(trained, tmp_path, monkeypatch):
    from recsys.errors import RecsysError

    path, _ = _export(trained, tmp_path)
    monkeypatch.setenv("RECSYS_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("RECSYS_DEADLINE", "thread")
    app = ServingApp.from_env(path)
    assert app.engine.config.deadline == "thread"
    assert app.engine.deadline_mechanism() == "thread"
    monkeypatch.setenv("RECSYS_DEADLINE", "sometimes")
    with pytest.raises(RecsysError, match="RECSYS_DEADLINE"):
        ServingApp.from_env(path)


def test_faults_are_parsed_strictly_and_wrap_the_stages(trained, tmp_path):
    assert parse_faults("ranking=raise, retrieval=sleep:20") == {
        "ranking": ("raise", 0.0),
        "retrieval": ("sleep", 20.0),
    }
    for bad in ("rankng=raise", "ranking=explode", "retrieval=sleep:x"):
        with pytest.raises(Exception, match="RECSYS_FAULTS"):
            parse_faults(bad)
    split, model = trained
    engine = build_engine(split, retriever=model)
    inject_faults(engine, "retrieval=raise")
    answer = engine.recommend(user_id=split.dataset.user_index.ids[0], k=4)
    assert answer.fallback.startswith("retrieval failed: InjectedFaultError")
    assert len(answer.items) == 4


def test_fallback_reasons_become_few_metric_labels():
    assert fallback_kind(None) == "none"
    assert fallback_kind("cold start: no history") == "cold_start"
    assert fallback_kind("only 3 personalised items") == "short_list"
    assert fallback_kind("retrieval failed: RuntimeError: x") == "retrieval_failed"
    assert fallback_kind("retrieval abandoned at the 50 ms budget") == "retrieval"


def test_find_export_on_an_empty_model_store(tmp_path, monkeypatch):
    """A fresh BENTOML_HOME has no recsys-engine models: nothing found, no error."""
    import subprocess
    import sys

    code = (
        "from recsys.serving.bento import find_export;"
        "print(find_export('synthetic', 'ease', 'random', 'abc123'))"
    )
    env = {**__import__("os").environ, "BENTOML_HOME": str(tmp_path / "empty")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "None"
