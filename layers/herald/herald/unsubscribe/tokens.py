"""Unsubscribe tokens: what one email's unsubscribe and preference links may change.

A token is ``<payload>.<signature>``: the payload is compact JSON in
base64url (no padding), the signature an HMAC-SHA256 of the payload's text
under the ``unsubscribe`` key of :mod:`herald.signing`, also base64url. The
payload names the contact, the campaign, the message and its channel, and
copies what the unsubscribe scope needs *as at send time* (the campaign's
category and group, its configured scope and channel mode), so a later edit
of the campaign never widens or narrows what an old link does. Nothing is
stored per token: a link keeps working until ``exp`` (or a rotation of the
signing secret), and anything forged, altered, cut short or expired is a
:class:`~herald.errors.Forbidden`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from herald import clock, signing
from herald.errors import Forbidden

PURPOSE = "unsubscribe"
# Links in an email stay usable this long after it was sent (CAN-SPAM asks for 30 days at least).
TOKEN_LIFETIME = timedelta(days=365)
MAX_TOKEN_LENGTH = 2048

Scope = Literal["campaign", "category", "group", "category_and_group", "all"]
ChannelMode = Literal["this", "all"]


class TokenPayload(BaseModel):
    """What a token says (short field names keep links short)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    contact_id: str = Field(alias="c", min_length=1)
    campaign_id: str = Field(alias="k", min_length=1)
    message_id: str = Field(alias="m", min_length=1)
    channel: Literal["email", "sms", "push"] = Field(alias="ch")
    category: str | None = Field(default=None, alias="cat")
    campaign_group: str | None = Field(default=None, alias="grp")
    scope: Scope = Field(default="all", alias="s")
    channels: ChannelMode = Field(default="this", alias="cm")
    expires: int = Field(alias="exp", description="Unix seconds")


def issue(
    contact_id: str,
    campaign_id: str,
    message_id: str,
    channel: Literal["email", "sms", "push"],
    category: str | None,
    campaign_group: str | None,
    scope: Scope,
    channels: ChannelMode,
    sent_at: datetime | None = None,
) -> str:
    """A token for one message's links, valid for :data:`TOKEN_LIFETIME` from ``sent_at`` (default now)."""
    expires = (sent_at or clock.now()) + TOKEN_LIFETIME
    payload = TokenPayload(
        c=contact_id,
        k=campaign_id,
        m=message_id,
        ch=channel,
        cat=category,
        grp=campaign_group,
        s=scope,
        cm=channels,
        exp=int(expires.timestamp()),
    )
    text = json.dumps(payload.model_dump(by_alias=True, exclude_none=True), separators=(",", ":"), sort_keys=True)
    encoded = _b64(text.encode())
    return f"{encoded}.{_signature(encoded)}"


def verify(token: str) -> TokenPayload:
    """The payload of a genuine, unexpired token; anything else is :class:`Forbidden`."""
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise Forbidden("the link is malformed; use the link from the email as it was sent")
    encoded, signature = token.split(".")
    if not hmac.compare_digest(_signature(encoded), signature):
        raise Forbidden("the link's signature is not valid; use the link from the email as it was sent")
    try:
        payload = TokenPayload.model_validate(json.loads(_unb64(encoded)))
    except (ValueError, ValidationError) as exc:  # signed but unreadable: a key shared with something else
        raise Forbidden("the link's contents cannot be read") from exc
    if clock.now().timestamp() >= payload.expires:
        raise Forbidden("the link has expired; use the preferences link of a more recent email")
    return payload


def _signature(encoded: str) -> str:
    return _b64(bytes.fromhex(signing.sign(PURPOSE, encoded.encode())))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc
