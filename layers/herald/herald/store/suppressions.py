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


def of_contacts(wanted: dict[str, set[str]]) -> dict[str, dict[str, str]]:
    """D3b: the given scopes of many contacts (``contact_id -> scopes``), found ones only, ``scope -> reason``.

    One BatchGetItem per 100 keys, strongly consistent: the sender asks for
    exactly the scopes that could cover its sends (:func:`scopes_for`), so a
    batch of ten contacts costs one request instead of a Query per contact.
    """
    keys = [(contact_id, scope) for contact_id, scopes in wanted.items() for scope in sorted(scopes)]
    found: dict[str, dict[str, str]] = {contact_id: {} for contact_id in wanted}
    for record in SuppressionRecord.batch_get(keys, consistent_read=True):
        found[record.contact_id][record.scope] = record.reason
    return found


def scopes_for(
    channel: str, campaign_id: str | None = None, category: str | None = None, campaign_group: str | None = None
) -> list[str]:
    """Every scope that covers a message on ``channel`` of this campaign, most specific channel first."""
    what = ["all"]
    if campaign_id:
        what.append(f"campaign#{campaign_id}")
    if category:
        what.append(f"category#{category}")
    if campaign_group:
        what.append(f"group#{campaign_group}")
    return [f"{channel_part}#{part}" for channel_part in (channel, "all") for part in what]


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
    for scope in scopes_for(channel, campaign_id, category, campaign_group):
        reason = scopes.get(scope)
        if reason is not None:
            return reason
    return None
