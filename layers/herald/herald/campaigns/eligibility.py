"""When a campaign processes contacts (seed 000's eligibility rules, plus launch state).

A campaign processes contacts only while it is Published, Start ≤ now < End
in its own time zone, launched and not stopped. Each blocker is named, so the
tick logs it and the test endpoint shows it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from herald.campaigns.model import State, local_moment


def blockers(spec: dict[str, Any], state: str, now: datetime) -> list[str]:
    """Why the campaign would not process contacts at ``now`` (empty when it would)."""
    reasons = []
    if not spec.get("published"):
        reasons.append("not published")
    if state == State.DRAFT:
        reasons.append("not launched")
    elif state == State.STOPPED:
        reasons.append("stopped")
    zone = spec.get("time_zone") or "UTC"
    start = local_moment(spec.get("start"), zone)
    end = local_moment(spec.get("end"), zone)
    if start is not None and now < start:
        reasons.append(f"starts at {spec['start']} {zone}")
    if end is not None and now >= end:
        reasons.append(f"ended at {spec['end']} {zone}")
    return reasons
