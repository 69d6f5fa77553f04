"""Consent: a request without personalisation consent is served without personal data.

:func:`anonymise` strips the user id, session id, history and every context key that is not on
the non-personal allow-list; :class:`ConsentGate` swaps the personalised candidates for context
popularity computed from that anonymous query. Downstream, rules and diversity still apply, and
the decision log records no user, session or history (see
:class:`~recsys.decision.pipeline.DecisionPipeline`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from recsys.config import ComponentConfig
from recsys.decision.base import check_k
from recsys.decision.fallback import ContextPopularity
from recsys.types import ItemList, Query


class ConsentConfig(ComponentConfig):
    """What a request without consent may still use."""

    non_personal_context: tuple[str, ...] = Field(
        ("device", "referrer", "geo", "country", "locale", "page"),
        description="Context keys describing the request, not the person; all others dropped.",
    )
    n_candidates: int = Field(100, ge=1, le=100_000, description="Candidates from popularity.")


def anonymise(query: Query, allowed: tuple[str, ...]) -> Query:
    """A copy of ``query`` with nothing that identifies or profiles the user.

    Keeps only ``allowed`` context keys, the timestamp and explicit ``exclude`` items (e.g.
    items the page already shows).
    """
    context: dict[str, Any] = {k: v for k, v in query.context.items() if k in allowed}
    return Query(
        user=None,
        history=np.zeros(0, dtype=np.int64),
        context=context,
        timestamp=query.timestamp,
        session_id=None,
        consent=False,
        exclude=query.exclude,
    )


class ConsentGate:
    """Passes consented requests through; serves context popularity to the others.

    Args:
        config: The allow-list of non-personal context keys.
        fallback: A fitted :class:`~recsys.decision.fallback.ContextPopularity`.
    """

    config_class = ConsentConfig

    def __init__(
        self, config: ConsentConfig | None = None, fallback: ContextPopularity | None = None
    ):
        self.config = config or ConsentConfig()
        if fallback is None:
            raise ValueError("fallback: ConsentGate needs a fitted ContextPopularity")
        self.fallback = fallback

    def anonymise(self, query: Query) -> Query:
        """The query as it may be used (unchanged when the user consented)."""
        return query if query.consent else anonymise(query, self.config.non_personal_context)

    def __call__(self, query: Query, items: ItemList, k: int) -> ItemList:
        """``items`` when the user consented, else non-personalised popularity candidates.

        ``k`` is the slate size; without consent ``max(k, n_candidates)`` candidates are
        returned so rules and diversity downstream still have room to work.
        """
        k = check_k(k)
        if query.consent:
            return items
        anonymous = self.anonymise(query)
        return self.fallback(anonymous, max(k, self.config.n_candidates))
