"""Campaign definitions as stored (``entity_type = campaign`` in the catalog)."""

from __future__ import annotations

from herald.errors import NotFound
from herald.store.tables import CampaignRecord

ENTITY = "campaign"


def get(campaign_id: str) -> CampaignRecord | None:
    """A campaign's record (strongly consistent), or None."""
    try:
        return CampaignRecord.get(ENTITY, campaign_id, consistent_read=True)
    except CampaignRecord.DoesNotExist:
        return None


def require(campaign_id: str) -> CampaignRecord:
    """A campaign's record; an unknown id is a 404 naming it."""
    record = get(campaign_id)
    if record is None:
        raise NotFound(f"campaign {campaign_id} does not exist", id=campaign_id)
    return record
