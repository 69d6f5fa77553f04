"""A client for the personalisation service that a page can rely on.

What a web page does when the personalisation tier fails: it still shows a slate. The
client wraps BentoML's HTTP client with a short timeout; when the service is slow, down or
erroring it answers with a cached non-personalised slate (refreshed from the service while
it is healthy, else the static list the page ships) and says so (``degraded`` and
``reason``). After a failure it stops calling for ``retry_after`` seconds, so a dead
service costs the page nothing but the first timeout.

Example::

    client = RecsysClient("http://127.0.0.1:3000", timeout=0.1, fallback_items=["1", "2"])
    client.refresh_fallback()              # a non-personalised slate, cached
    answer = client.recommend(user_id="42", k=10)
    answer.items, answer.degraded, answer.reason
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class ClientAnswer:
    """What the page shows.

    Attributes:
        items: External item ids to show.
        degraded: Whether this is the cached non-personalised slate, not the service's answer.
        reason: Why it is degraded (the error), or the service's own fallback reason.
        response: The service's full response when there was one.
    """

    items: list[str]
    degraded: bool = False
    reason: str | None = None
    response: dict[str, Any] = field(default_factory=dict)


class RecsysClient:
    """The personalisation service with graceful degradation.

    Args:
        url: The service (``http://host:port``).
        timeout: Seconds per call before the page gives up on personalisation.
        api_key: Sent as a bearer token when the service requires one.
        fallback_items: The slate shown when the service has never answered.
        retry_after: Seconds without calls after a failure (a circuit breaker).
    """

    def __init__(
        self,
        url: str,
        timeout: float = 0.1,
        api_key: str | None = None,
        fallback_items: Sequence[str] = (),
        retry_after: float = 5.0,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.api_key = api_key
        self.fallback_items = list(fallback_items)
        self.retry_after = retry_after
        self._client: Any = None
        self._open_until = 0.0

    def _call(self, endpoint: str, **body: Any) -> dict[str, Any]:
        if time.monotonic() < self._open_until:
            raise ConnectionError("service skipped after a recent failure (circuit open)")
        try:
            if self._client is None:
                import bentoml

                self._client = bentoml.SyncHTTPClient(
                    self.url, timeout=self.timeout, server_ready_timeout=0, token=self.api_key
                )
            answer = getattr(self._client, endpoint)(**body)
        except Exception:
            self._open_until = time.monotonic() + self.retry_after
            self._client = None  # rebuilt (schema fetched again) once the service is back
            raise
        return dict(answer)

    def refresh_fallback(self, k: int = 20, context: dict[str, Any] | None = None) -> bool:
        """Cache the service's non-personalised slate; whether it answered."""
        try:
            answer = self._call("recommend", k=k, consent=False, context=context or {})
        except Exception as exc:  # noqa: BLE001 - keep the previous cache
            log.warning("fallback refresh failed: %s", exc)
            return False
        self.fallback_items = list(answer["items"])
        return True

    def recommend(self, user_id: str | None = None, k: int = 10, **fields: Any) -> ClientAnswer:
        """A slate: the service's, or the cached non-personalised one when it fails."""
        try:
            answer = self._call("recommend", user_id=user_id, k=k, **fields)
        except Exception as exc:  # noqa: BLE001 - whatever the failure, the page shows a slate
            reason = f"service unavailable: {type(exc).__name__}: {exc}"
            return ClientAnswer(self.fallback_items[:k], degraded=True, reason=reason)
        return ClientAnswer(list(answer["items"]), reason=answer.get("fallback"), response=answer)

    def events(self, events: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Post events; ``None`` when the service could not take them (retry later)."""
        try:
            return self._call("events", events=events)
        except Exception as exc:  # noqa: BLE001 - the caller keeps the batch and retries
            log.warning("events not delivered: %s", exc)
            return None
