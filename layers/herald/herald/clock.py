"""Time, in one place, so tests can control it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

_now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return _now()


def now_iso() -> str:
    """The current time as an ISO-8601 UTC string with millisecond precision."""
    return to_iso(now())


def to_iso(moment: datetime) -> str:
    """Format a datetime as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (sortable as text)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def set_clock(source: Callable[[], datetime]) -> None:
    """Replace the clock (tests and benchmarks only)."""
    global _now
    _now = source


def reset_clock() -> None:
    """Restore the wall clock."""
    set_clock(lambda: datetime.now(UTC))
