"""Experience signals (SPEC §5): NPS and CSAT over a set of survey scores."""

from __future__ import annotations

from collections.abc import Iterable


def nps(scores: Iterable[int]) -> float | None:
    """% promoters (9-10) - % detractors (0-6), from -100 to 100; None without responses."""
    values = list(scores)
    if not values:
        return None
    promoters = sum(1 for score in values if score >= 9)
    detractors = sum(1 for score in values if score <= 6)
    return 100.0 * (promoters - detractors) / len(values)


def csat(scores: Iterable[int]) -> float | None:
    """Share of 4-5 ratings among 1-5 ratings, in percent; None without responses."""
    values = list(scores)
    if not values:
        return None
    return 100.0 * sum(1 for score in values if score >= 4) / len(values)
