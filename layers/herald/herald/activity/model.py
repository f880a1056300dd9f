"""Activity events: what a contact did (login, purchase, returned item, ...).

Events carry a client-supplied id: the same id sent again is recognised and
recorded once. Response events (``campaign.received``, ``campaign.opened``,
``campaign.clicked``) also mark the campaign in the contact's responses.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints, field_validator, model_validator
from pydantic_core import PydanticCustomError

from herald.contacts.model import ContactId, Strict, _storable, is_valid_id

EVENT_TYPE = r"^[a-z][a-z0-9_.-]{0,63}$"
EVENT_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
MAX_PROPERTIES = 20
MAX_PROPERTIES_BYTES = 2_000
MAX_BULK_EVENTS = 100

RESPONSE_EVENTS = {
    "campaign.received": "campaigns_received",
    "campaign.opened": "campaigns_opened",
    "campaign.clicked": "campaigns_clicked",
}
# Suggested names; any lower-case type is accepted.
COMMON_EVENTS = ("login", "purchase", "returned_item", "page_visit", "form_submission", *RESPONSE_EVENTS)


def _properties(values: dict[str, Any]) -> dict[str, Any]:
    if len(json.dumps(values, default=str)) > MAX_PROPERTIES_BYTES:
        raise ValueError(f"properties must be at most {MAX_PROPERTIES_BYTES:,} bytes of JSON")
    for name, value in values.items():
        if isinstance(value, dict | list):
            raise ValueError(f"property {name} must be a string, number, boolean or null")
        _storable(name, value)
    return values


class EventIn(Strict):
    """One activity event for a contact."""

    event_id: Annotated[str, StringConstraints(pattern=EVENT_ID)]
    type: Annotated[str, StringConstraints(pattern=EVENT_TYPE)]
    occurred_at: datetime | None = None
    properties: Annotated[dict[str, Any], Field(max_length=MAX_PROPERTIES), AfterValidator(_properties)] = Field(
        default_factory=dict
    )

    @field_validator("occurred_at")
    @classmethod
    def _plausible(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        if not datetime(1970, 1, 1, tzinfo=UTC) <= moment < datetime(2100, 1, 1, tzinfo=UTC):
            raise ValueError("must be between 1970 and 2100")
        return moment

    @model_validator(mode="after")
    def _campaign_named(self) -> EventIn:
        campaign_id = self.properties.get("campaign_id")
        if self.type in RESPONSE_EVENTS and not (isinstance(campaign_id, str) and is_valid_id(campaign_id)):
            raise PydanticCustomError("campaign_id", "campaign response events need a campaign_id property")
        return self


class BulkEventIn(EventIn):
    """One row of ``POST /events``: an event and whose it is."""

    contact_id: ContactId


class Event(Strict):
    """A recorded event as the API returns it."""

    contact_id: str
    event_id: str
    type: str
    occurred_at: str
    recorded_at: str
    properties: dict[str, Any]
