""" "Today" in a contact's time zone, computed once per zone per evaluation run.

Date conditions compare calendar days as ``YYYY-MM-DD`` strings; a run fixes
its instant (``now``) once, and every contact in the same zone shares the same
day, so the per-zone answers are cached.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class Calendar:
    """Days relative to one instant, per time zone."""

    def __init__(self, now: datetime) -> None:
        self.now = now if now.tzinfo else now.replace(tzinfo=UTC)
        self.epoch = self.now.timestamp()
        self._today: dict[str, str] = {}
        self._days_ago: dict[tuple[str, int], str] = {}
        self._anniversaries: dict[str, tuple[str, ...]] = {}

    def today(self, zone: str | None) -> str:
        """Today's date (ISO) in ``zone``; an unknown or missing zone counts as UTC."""
        key = zone or "UTC"
        day = self._today.get(key)
        if day is None:
            try:
                tz = ZoneInfo(key)
            except (ZoneInfoNotFoundError, ValueError):
                tz = ZoneInfo("UTC")
            day = self._today[key] = self.now.astimezone(tz).date().isoformat()
        return day

    def days_ago(self, zone: str | None, days: int) -> str:
        """The date ``days`` before today in ``zone``."""
        key = (zone or "UTC", days)
        day = self._days_ago.get(key)
        if day is None:
            today = datetime.fromisoformat(self.today(zone))
            day = self._days_ago[key] = (today - timedelta(days=days)).date().isoformat()
        return day

    def anniversaries(self, zone: str | None) -> tuple[str, ...]:
        """The ``MM-DD`` values whose anniversary is today (Feb 29 falls on Feb 28 in common years)."""
        key = zone or "UTC"
        found = self._anniversaries.get(key)
        if found is None:
            today = self.today(zone)
            month_day = today[5:]
            year = int(today[:4])
            leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
            found = (month_day, "02-29") if month_day == "02-28" and not leap else (month_day,)
            self._anniversaries[key] = found
        return found

    def cutoff_epoch(self, days: int) -> float:
        """The instant ``days`` days before now, for activity windows."""
        return self.epoch - days * 86_400
