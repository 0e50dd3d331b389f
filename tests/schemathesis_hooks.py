"""Schemathesis hooks for `tests/integration/test_openapi_conformance.py` (loaded through
`SCHEMATHESIS_HOOKS`): event times as a source would send them.

The collector takes `occurred_at` from 1970 to the clock skew after the event's arrival
(its OpenAPI document says so), a bound on "now" that JSON Schema cannot state; left to
itself Schemathesis would send years 0001-9999 as schema-valid and count each 422 as a
valid request rejected.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import schemathesis
from hypothesis import strategies as st

# Hypothesis wants naive bounds; the values it makes carry the timezone given.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC).replace(tzinfo=None)
_LATEST = datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=30)
_EVENT_TIMES = st.datetimes(min_value=_EARLIEST, max_value=_LATEST, timezones=st.just(UTC)).map(
    lambda moment: moment.isoformat()
)

schemathesis.openapi.format("date-time", _EVENT_TIMES)
