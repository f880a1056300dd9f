"""Suppressions: what a contact must not be sent, by scope (D3, D10).

``scope`` is ``<channel>#<what>``: ``channel`` is ``email``, ``sms``, ``push``
or ``all`` (every outbound channel); ``what`` is ``all``, ``campaign#<id>``,
``category#<name>`` or ``group#<name>``. Every suppression of one contact is
read with one Query, once per delivery message, so the sender checks them all
at send time without a read per scope.
"""

from __future__ import annotations

from herald.store.tables import SuppressionRecord


def of_contact(contact_id: str) -> dict[str, str]:
    """D3: the contact's suppressions, ``scope -> reason`` (one strongly consistent Query)."""
    return {r.scope: r.reason for r in SuppressionRecord.query(contact_id, consistent_read=True)}


def matching(
    scopes: dict[str, str],
    channel: str,
    campaign_id: str | None = None,
    category: str | None = None,
    campaign_group: str | None = None,
) -> str | None:
    """The reason of a suppression covering a message on ``channel`` of this campaign, or None."""
    if not scopes:
        return None
    what = ["all"]
    if campaign_id:
        what.append(f"campaign#{campaign_id}")
    if category:
        what.append(f"category#{category}")
    if campaign_group:
        what.append(f"group#{campaign_group}")
    for channel_part in (channel, "all"):
        for part in what:
            reason = scopes.get(f"{channel_part}#{part}")
            if reason is not None:
                return reason
    return None
