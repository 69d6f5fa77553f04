"""The personalisation Bento: the recsys Engine behind HTTP.

Deliberately thin: every behaviour lives in ``recsys.serving.api`` (schemas, the app each
worker runs, metrics, the API-key middleware), so what this file adds is only BentoML's
wiring. The engine is loaded once per worker from the model store, by tag
(``RECSYS_MODEL_TAG``, default ``recsys-engine:latest``; ``make bento`` exports it).
"""

from __future__ import annotations

import os

import bentoml
from starlette.responses import JSONResponse

from recsys.serving.api import (
    ApiKeyMiddleware,
    ConsentRequest,
    ConsentResponse,
    EventsRequest,
    EventsResponse,
    ForgetRequest,
    ForgetResponse,
    JsonOnlyMiddleware,
    KeepAliveLimitMiddleware,
    RecommendRequest,
    RecommendResponse,
    ServiceUnavailableError,
    ServingApp,
    WorkerIdMiddleware,
    service_settings,
)

MODEL_TAG = os.environ.get("RECSYS_MODEL_TAG", "recsys-engine:latest")
WORKERS = int(os.environ.get("RECSYS_WORKERS", "1"))
SETTINGS = service_settings(os.environ, WORKERS)
UNTRACED_PATHS = ["/recommend", "/events", "/forget", "/consent"]


def _unavailable(exc: Exception) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=503)


@bentoml.service(
    name="personalisation",
    workers=WORKERS,
    traffic={"timeout": 10},
    # one log line per request costs CPU at every request; /metrics counts them instead
    logging={"access": {"enabled": SETTINGS["RECSYS_ACCESS_LOG"] == "1"}},
    # BentoML samples no trace by default (tracing.sample_rate 0) yet its OpenTelemetry
    # middleware builds a span per request: 4.3 -> 3.7 ms of server CPU a request without it
    # (two workers at 300 req/s, ml-latest-small), and p99 35 -> 11 ms.
    # RECSYS_TRACING=1 keeps every endpoint traced, for a deployment that exports traces.
    tracing={"excluded_urls": [] if SETTINGS["RECSYS_TRACING"] == "1" else UNTRACED_PATHS},
)
class Personalisation:
    """Recommendations, event ingestion, erasure and consent over HTTP."""

    engine_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        self.app = ServingApp.from_env(self.engine_model.path, bentoml.metrics)

    @bentoml.api(input_spec=RecommendRequest, output_spec=RecommendResponse)
    async def recommend(self, **request: object) -> RecommendResponse:
        """A slate for a user (or an anonymous visitor) and how it was made."""
        return await self.app.recommend(RecommendRequest.model_construct(**request))

    @bentoml.api(input_spec=EventsRequest, output_spec=EventsResponse)
    def events(self, **request: object) -> JSONResponse:
        """Log a batch of events durably and apply them to the online store."""
        try:
            status, body = self.app.events(EventsRequest.model_construct(**request))
        except ServiceUnavailableError as exc:
            return _unavailable(exc)
        return JSONResponse(body.model_dump(), status_code=status)

    @bentoml.api(input_spec=ForgetRequest, output_spec=ForgetResponse)
    def forget(self, **request: object) -> ForgetResponse | JSONResponse:
        """Erase a user from the event log and the online store."""
        try:
            return self.app.forget(ForgetRequest.model_construct(**request))
        except ServiceUnavailableError as exc:
            return _unavailable(exc)

    @bentoml.api(input_spec=ConsentRequest, output_spec=ConsentResponse)
    def consent(self, **request: object) -> ConsentResponse | JSONResponse:
        """Record a user's personalisation consent."""
        try:
            return self.app.set_consent(ConsentRequest.model_construct(**request))
        except ServiceUnavailableError as exc:
            return _unavailable(exc)


Personalisation.add_asgi_middleware(JsonOnlyMiddleware)
Personalisation.add_asgi_middleware(WorkerIdMiddleware)
# several workers share one listening socket: re-spread keep-alive connections over them
if keepalive := int(SETTINGS["RECSYS_KEEPALIVE_REQUESTS"]):
    Personalisation.add_asgi_middleware(KeepAliveLimitMiddleware, mean_requests=keepalive)
if key := os.environ.get("RECSYS_API_KEY"):
    Personalisation.add_asgi_middleware(ApiKeyMiddleware, key=key)
