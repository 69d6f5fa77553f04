"""The delivery API: request and response schemas, and the app the Bento's endpoints call.

Everything the HTTP service does lives here, so ``bentos/personalisation/service.py`` only
wires BentoML's decorators to :class:`ServingApp` (one per worker) and this module is
testable without a server. Schemas are flat (fields at the top level of the JSON body),
strict (a string where a number belongs is an error) and closed (an unknown field is an
error): BentoML answers every violation with 400 and the field's name.

Process layout (``ServingApp.from_env``):

* ``RECSYS_MODEL_PATH``: the exported engine (the service passes its packed model's path);
* ``RECSYS_WORKERS`` > 1 needs ``RECSYS_REDIS_URL``: the online store and the consent
  registry are then shared through Redis, so an event ingested by one worker is in the
  next request's profile on every other; one worker keeps both in process;
* ``RECSYS_LOG_DIR`` (default ``var/recsys``): ``events/`` (the durable event log, shared
  by the workers) and ``decisions/`` (one decision-log file per worker);
* ``RECSYS_API_KEY``: when set, every endpoint but health and metrics needs it
  (:class:`ApiKeyMiddleware`);
* ``RECSYS_DEADLINE`` (``alarm`` or ``thread``): how the latency budget binds
  (``EngineConfig.deadline``; the exported engine's setting when unset);
* ``RECSYS_FAULTS``: fault injection for reliability tests (:mod:`recsys.serving.faults`);
* ``RECSYS_KEEPALIVE_REQUESTS``, ``RECSYS_TRACING``, ``RECSYS_ACCESS_LOG``: the service's
  speed knobs, read by :func:`service_settings`.
"""

from __future__ import annotations

import gc
import hmac
import json
import logging
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from recsys.errors import RecsysError

log = logging.getLogger(__name__)

Scalar = str | int | float | bool
OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RecommendRequest(_Strict):
    """``POST /recommend``."""

    user_id: str | None = Field(None, min_length=1, max_length=256, description="External id.")
    k: int = Field(10, ge=1, le=100, description="Slate size.")
    context: dict[str, Scalar] = Field(
        default_factory=dict, max_length=64, description="device, referrer, geo, ..."
    )
    history: list[str] = Field(
        default_factory=list, max_length=1000, description="Items just consumed (newest last)."
    )
    consent: bool = Field(True, description="Personalisation consent of this request.")
    exclude: list[str] = Field(default_factory=list, max_length=1000, description="Never show.")


class RecommendResponse(BaseModel):
    """The slate and how it was made."""

    items: list[str]
    scores: list[float]
    propensities: list[float] | None
    variant: str | None
    fallback: str | None
    degraded: dict[str, str]
    timings_ms: dict[str, float]
    filled: int


class EventsRequest(_Strict):
    """``POST /events``: a batch; each event is checked on its own (a reason per rejection)."""

    events: list[dict[str, Any]] = Field(..., min_length=1, max_length=10_000)


class RejectedEvent(BaseModel):
    """One refused event."""

    index: int
    reason: str


class EventsResponse(BaseModel):
    """Accepted means written to the durable event log."""

    accepted: int
    rejected: int
    errors: list[RejectedEvent]
    anonymous: int = Field(0, description="Events of users without consent: not stored.")
    store_ok: bool = True
    store_error: str | None = None


class ForgetRequest(_Strict):
    """``POST /forget``."""

    user_id: str = Field(..., min_length=1, max_length=256)


class ForgetResponse(BaseModel):
    """What the erasure removed."""

    user_id: str
    log_events_removed: int
    store_state_removed: bool


class ConsentRequest(_Strict):
    """``POST /consent``."""

    user_id: str = Field(..., min_length=1, max_length=256)
    granted: bool


class ConsentResponse(BaseModel):
    """The recorded choice."""

    user_id: str
    granted: bool


class ServiceUnavailableError(RecsysError):
    """A dependency (online store, consent registry) is down: the caller should retry."""


def service_settings(environ: Mapping[str, str], workers: int) -> dict[str, str]:
    """The service's speed knobs as ``environ`` sets them, defaults filled in.

    One place for the Bento (``bentos/personalisation/service.py`` configures BentoML from
    it) and for ``recsys bench serve`` (which records what the server it started ran with).
    ``RECSYS_KEEPALIVE_REQUESTS`` defaults to 20 with several workers (0: never close), as
    they share one listening socket; ``RECSYS_DEADLINE`` unset keeps the export's setting.
    """
    return {
        "RECSYS_DEADLINE": environ.get("RECSYS_DEADLINE", "the export's"),
        "RECSYS_KEEPALIVE_REQUESTS": environ.get(
            "RECSYS_KEEPALIVE_REQUESTS", "20" if workers > 1 else "0"
        ),
        "RECSYS_TRACING": environ.get("RECSYS_TRACING", "0"),
        "RECSYS_ACCESS_LOG": environ.get("RECSYS_ACCESS_LOG", "0"),
    }


class ServingApp:
    """One worker's engine, consent registry and metrics behind the HTTP endpoints.

    Args:
        engine: The served engine (with an ingestor: ``/events`` and ``/forget`` need it).
        consent: The consent registry the ingestor uses too.
        metrics: A :class:`ServiceMetrics` (or ``None``: no Prometheus metrics).
    """

    def __init__(self, engine: Any, consent: Any, metrics: ServiceMetrics | None = None) -> None:
        self.engine = engine
        self.consent = consent
        self.metrics = metrics

    @classmethod
    def from_env(cls, model_path: str | Path, metrics_module: Any = None) -> ServingApp:
        """Build the worker's app from ``RECSYS_*`` variables (see the module docstring).

        Raises:
            RecsysError: More than one worker without ``RECSYS_REDIS_URL``.
        """
        from recsys.decision import DecisionLog
        from recsys.serving.export import load_engine
        from recsys.serving.faults import inject_faults

        workers = int(os.environ.get("RECSYS_WORKERS", "1"))
        redis_url = os.environ.get("RECSYS_REDIS_URL")
        if workers > 1 and not redis_url:
            raise RecsysError(
                f"RECSYS_WORKERS={workers}: several workers share their online state through "
                "Redis; set RECSYS_REDIS_URL (or serve one worker)"
            )
        log_dir = Path(os.environ.get("RECSYS_LOG_DIR", "var/recsys"))
        engine = load_engine(
            model_path,
            event_log_dir=log_dir / "events",
            decision_log=DecisionLog(log_dir / "decisions", max_in_memory=0),
            redis_url=redis_url,
        )
        if chosen := os.environ.get("RECSYS_DEADLINE"):
            try:  # validated as the config itself validates it
                engine.config = type(engine.config).model_validate(
                    {**engine.config.model_dump(), "deadline": chosen}
                )
            except ValidationError as exc:
                raise RecsysError(f"RECSYS_DEADLINE: {exc.errors()[0]['msg']}") from exc
        inject_faults(engine, os.environ.get("RECSYS_FAULTS", ""))
        # the loaded model is hundreds of thousands of long-lived objects: keep them out of
        # the collector's generations, so a request never pays for a full traversal of them
        gc.collect()
        gc.freeze()
        metrics = ServiceMetrics(metrics_module) if metrics_module is not None else None
        mechanism = engine.deadline_mechanism()  # of this, the loop's, thread
        log.info("latency budget of %.0f ms binds by %s", engine.config.budget_ms, mechanism)
        if metrics is not None:
            metrics.workers_by_deadline.labels(mechanism=mechanism).inc()
        return cls(engine, engine.ingestor.consent, metrics)

    # ------------------------------------------------------------------ endpoints
    async def recommend(self, request: RecommendRequest) -> RecommendResponse:
        """Serve one slate (never a 5xx for a failing stage: the response says what degraded)."""
        consent, why_not = request.consent, None
        if consent and request.user_id is not None:
            try:
                consent = self.consent.allows(request.user_id)
            except Exception as exc:  # noqa: BLE001 - cannot verify consent: do not personalise
                consent, why_not = False, f"consent registry unavailable: {exc}"
        answer = await self.engine.recommend_async(
            user_id=request.user_id,
            k=request.k,
            context=request.context,
            history=request.history,
            consent=consent,
            exclude=request.exclude,
        )
        if why_not:
            answer.degraded["consent"] = why_not
        if self.metrics is not None:
            self.metrics.observe(answer)
        return RecommendResponse(
            items=answer.items,
            scores=answer.scores,
            propensities=answer.propensities,
            variant=answer.variant,
            fallback=answer.fallback,
            degraded=answer.degraded,
            timings_ms=answer.timings_ms,
            filled=answer.filled,
        )

    def events(self, request: EventsRequest) -> tuple[int, EventsResponse]:
        """Log and apply a batch; ``(status, body)``.

        200: logged durably and applied to the online store. 202: logged durably, but the
        online store could not be updated (the failure is reported; a replay of the log
        catches the store up). 503: nothing was written (the consent of the batch's users
        cannot be checked); retry later.
        """
        from recsys.features import ConsentUnavailableError

        try:
            result = self.engine.ingest(request.events)
        except ConsentUnavailableError as exc:
            raise ServiceUnavailableError(f"events not accepted: {exc}") from exc
        body = EventsResponse(
            accepted=result.accepted,
            rejected=len(result.rejected),
            errors=[RejectedEvent(index=r.index, reason=r.reason) for r in result.rejected],
            anonymous=result.anonymous,
            store_ok=result.store_ok,
            store_error=result.store_error,
        )
        if self.metrics is not None:
            self.metrics.events(body)
        return (200 if result.store_ok else 202), body

    def forget(self, request: ForgetRequest) -> ForgetResponse:
        """Erase a user from the event log and the online store."""
        from recsys.features import StoreUnavailableError

        try:
            result = self.engine.ingestor.forget(request.user_id)
        except StoreUnavailableError as exc:
            raise ServiceUnavailableError(f"erasure incomplete, retry: {exc}") from exc
        return ForgetResponse(
            user_id=result.user_id,
            log_events_removed=result.log_events_removed,
            store_state_removed=result.store_state_removed,
        )

    def set_consent(self, request: ConsentRequest) -> ConsentResponse:
        """Record a user's personalisation consent (shared by every worker)."""
        from recsys.features import StoreUnavailableError

        try:
            self.consent.set(request.user_id, request.granted)
        except StoreUnavailableError as exc:
            raise ServiceUnavailableError(f"consent not recorded, retry: {exc}") from exc
        return ConsentResponse(user_id=request.user_id, granted=request.granted)


def fallback_kind(reason: str | None) -> str:
    """A low-cardinality label of a fallback reason (for metrics)."""
    if reason is None:
        return "none"
    if reason.startswith("only "):
        return "short_list"
    head = reason.split(":")[0].split(" abandoned")[0]
    return head.strip().replace(" ", "_")


class ServiceMetrics:
    """Prometheus metrics of our own, next to BentoML's request metrics on ``/metrics``.

    Args:
        prometheus: ``bentoml.metrics`` (multi-process safe under ``bentoml serve``) or
            ``prometheus_client``.
    """

    def __init__(self, prometheus: Any) -> None:
        buckets = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
        self.stage_seconds = prometheus.Histogram(
            name="recsys_stage_seconds",
            documentation="Seconds per engine stage of /recommend.",
            labelnames=["stage"],
            buckets=buckets,
        )
        self.fallbacks = prometheus.Counter(
            name="recsys_fallbacks",
            documentation="Recommendations served (partly) by the fallback, by reason.",
            labelnames=["reason"],
        )
        self.degraded = prometheus.Counter(
            name="recsys_degraded_stages",
            documentation="Stages skipped, failed or abandoned in /recommend.",
            labelnames=["stage"],
        )
        self.events_total = prometheus.Counter(
            name="recsys_events",
            documentation="Events posted to /events, by outcome.",
            labelnames=["outcome"],
        )
        self.workers_by_deadline = prometheus.Counter(
            name="recsys_workers_by_deadline",
            documentation="Workers started, by how their latency budget binds (alarm, thread).",
            labelnames=["mechanism"],
        )

    def observe(self, answer: Any) -> None:
        """Record one /recommend answer."""
        for stage, ms in answer.timings_ms.items():
            self.stage_seconds.labels(stage=stage).observe(ms / 1000.0)
        if answer.fallback is not None:
            self.fallbacks.labels(reason=fallback_kind(answer.fallback)).inc()
        for stage in answer.degraded:
            self.degraded.labels(stage=stage).inc()

    def events(self, body: EventsResponse) -> None:
        """Record one /events batch."""
        self.events_total.labels(outcome="accepted").inc(body.accepted)
        self.events_total.labels(outcome="rejected").inc(body.rejected)
        self.events_total.labels(outcome="anonymous").inc(body.anonymous)
        if not body.store_ok:
            self.events_total.labels(outcome="not_in_store").inc(body.accepted)


async def _reply(send: Any, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class JsonOnlyMiddleware:
    """ASGI middleware: 415 for a request body that is not JSON (the API speaks only JSON).

    Without it a ``multipart/form-data`` header without a boundary reaches BentoML's form
    parser and comes back as a 500 (found by schemathesis).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Refuse non-JSON bodies on the API's POST routes."""
        if scope.get("type") == "http" and scope.get("method") == "POST":
            headers = dict(scope.get("headers") or [])
            media = headers.get(b"content-type", b"application/json").split(b";")[0].strip()
            if media.lower() != b"application/json":
                await _reply(send, 415, "content-type: the API accepts application/json only")
                return
        await self.app(scope, receive, send)


class ApiKeyMiddleware:
    """ASGI middleware: 401 without the API key (``x-api-key`` or ``Authorization: Bearer``).

    Health, readiness and metrics stay open for probes and scrapers.
    """

    def __init__(self, app: Any, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Check the key of HTTP requests outside :data:`OPEN_PATHS`."""
        if scope.get("type") == "http" and scope.get("path") not in OPEN_PATHS:
            headers = dict(scope.get("headers") or [])
            given = headers.get(b"x-api-key", b"")
            bearer = headers.get(b"authorization", b"")
            if bearer.lower().startswith(b"bearer "):
                given = given or bearer[7:].strip()
            if not hmac.compare_digest(given, self.key):
                await _reply(send, 401, "missing or invalid API key (x-api-key)")
                return
        await self.app(scope, receive, send)


class WorkerIdMiddleware:
    """ASGI middleware: ``x-recsys-worker: <pid>`` on every response (which worker answered)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.header = (b"x-recsys-worker", str(os.getpid()).encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Pass the request through, tagging the response."""
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, tagged)


class KeepAliveLimitMiddleware:
    """ASGI middleware: close a keep-alive connection after ``mean_requests`` answers on average.

    ``bentoml serve`` runs its workers on one shared listening socket, and a worker that
    wakes to a burst of connections accepts them all: a client opening 16 keep-alive
    connections at once was measured with all 16 on one worker of two, which then carries
    the whole load while the other idles. Asking clients to reconnect now and then (what
    nginx's ``keepalive_requests`` does) re-spreads the connections, and the worker idle
    in its poll is the one that accepts the new connection. Each answer closes its
    connection with probability ``1 / mean_requests`` (stateless: no per-connection book).
    """

    def __init__(self, app: Any, mean_requests: int, seed: int | None = None) -> None:
        if mean_requests < 1:
            raise ValueError(f"mean_requests: must be at least 1, got {mean_requests}")
        self.app = app
        self.probability = 1.0 / mean_requests
        self.random = random.Random(seed)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Pass the request through; now and then, with ``connection: close``."""
        if scope.get("type") != "http" or self.random.random() >= self.probability:
            await self.app(scope, receive, send)
            return

        async def closing(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, closing)
