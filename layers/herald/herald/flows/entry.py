"""Flow entry (placeholder until the lead's module is merged)."""

from __future__ import annotations

from datetime import datetime


# replaced by the lead's entry module
def admit_current_members(flow_id: str, now: datetime) -> int:
    return 0
