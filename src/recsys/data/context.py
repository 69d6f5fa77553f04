"""Request-context vocabulary shared by every stage that reads user context."""

from __future__ import annotations

import math

# MovieLens-1M's age bands: (exclusive upper bound, label); the last band is open-ended
AGE_BANDS: tuple[tuple[float, str], ...] = (
    (18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"), (56, "50-55"),
    (math.inf, "56+"),
)  # fmt: skip


def age_band(age: object) -> str | None:
    """Age band label of an age in years; ``None`` when the age is missing or not a number."""
    try:
        years = float(age)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if math.isnan(years):
        return None
    return next(label for upper, label in AGE_BANDS if years < upper)
