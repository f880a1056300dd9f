"""Unsubscribe and communication preferences, from a verified token (seed 004).

An unsubscribe writes ``SuppressionRecord`` s (reason ``unsubscribe``) for the
scope the campaign configured, as the token carries it: the campaign, its
category, its group, both, or all marketing; on the message's channel or on
every outbound channel (``all#…``). The sender already honours every matching
scope at send time, so nothing else has to change.

- Idempotent: scopes already suppressed (for any reason) are left alone; a
  repeat finds nothing new, writes nothing and counts nothing.
- All-or-nothing: the new records (and, on the preferences page, the removed
  ones) and the campaign's ``unsubscribed`` counter are one transaction, each
  put conditional on the scope being free and each delete on its reason still
  being ``unsubscribe``.
- Counted once: ``unsubscribed`` is added only when a suppression was new (in
  that transaction), and the ``contact.unsubscribed`` activity event has an id
  derived from the message, so it is recorded once.

Re-subscribing on the preferences page removes only ``unsubscribe``
suppressions: a complaint or anything else Herald decided stays.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from botocore.exceptions import ClientError

from herald import clock
from herald.activity import service as activity
from herald.activity.model import EventIn
from herald.errors import BadRequest, Conflict, HeraldError, NotFound
from herald.observability import logger
from herald.store import contacts as contact_store
from herald.store import flows as flow_store
from herald.store import stats as stats_store
from herald.store import suppressions as suppression_store
from herald.store.tables import CampaignRecord, StatsRecord, SuppressionRecord
from herald.store.transactions import default_connection
from herald.unsubscribe.tokens import TokenPayload

UNSUBSCRIBE = "unsubscribe"
UNSUBSCRIBED_EVENT = "contact.unsubscribed"
RESUBSCRIBED_EVENT = "contact.resubscribed"
STAT = "unsubscribed"
RETRIES = 3


@dataclass
class Outcome:
    """What an unsubscribe or a preferences change did."""

    contact_found: bool
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


@dataclass(frozen=True)
class Option:
    """One line of the preferences page: a scope and its current state."""

    scope: str
    what: str
    channel: str
    reason: str | None
    covered_by: str | None

    @property
    def editable(self) -> bool:
        """A scope Herald suppressed for another reason (a complaint) cannot be re-subscribed here."""
        return self.reason in (None, UNSUBSCRIBE)


@dataclass(frozen=True)
class Preferences:
    contact_found: bool
    campaign_name: str
    options: list[Option]


# --------------------------------------------------------------------------
# Scopes
# --------------------------------------------------------------------------


def targets(payload: TokenPayload) -> list[str]:
    """The ``what`` parts of the campaign's unsubscribe scope, as the token carries it.

    A category or group scope whose campaign had no category or group (an old
    campaign saved before the rule) falls back to the campaign itself.
    """
    scope = payload.scope
    if scope == "all":
        return ["all"]
    parts = []
    if scope in ("category", "category_and_group") and payload.category:
        parts.append(f"category#{payload.category}")
    if scope in ("group", "category_and_group") and payload.campaign_group:
        parts.append(f"group#{payload.campaign_group}")
    return parts or [f"campaign#{payload.campaign_id}"]


def channel_part(payload: TokenPayload) -> str:
    return payload.channel if payload.channels == "this" else "all"


def scopes_of(payload: TokenPayload) -> list[str]:
    """The suppression scopes the token's unsubscribe writes."""
    return [f"{channel_part(payload)}#{what}" for what in targets(payload)]


def describe(payload: TokenPayload) -> list[str]:
    """Readable names of what the token's unsubscribe stops (for the confirmation page)."""
    return [describe_scope(scope, payload) for scope in scopes_of(payload)]


def describe_scope(scope: str, payload: TokenPayload) -> str:
    channel, what = scope.split("#", 1)
    on = "all channels" if channel == "all" else f"{channel}"
    if what == "all":
        subject = "all marketing messages"
    elif what.startswith("campaign#"):
        subject = f"the campaign “{campaign_name(payload)}”"
    elif what.startswith("category#"):
        subject = f"the category “{what.removeprefix('category#')}”"
    else:
        subject = f"the campaign group “{what.removeprefix('group#')}”"
    return f"{subject} — {on}"


def campaign_name(payload: TokenPayload) -> str:
    """The campaign's (or a flow step's email: the flow's) name now, or its id when it was deleted since."""
    try:
        record = CampaignRecord.get("campaign", payload.campaign_id)
    except CampaignRecord.DoesNotExist:
        flow = flow_store.get(payload.campaign_id)
        return str(flow.name) if flow is not None else payload.campaign_id
    return str(record.name)


# --------------------------------------------------------------------------
# Unsubscribe (link confirmation and one-click)
# --------------------------------------------------------------------------


def unsubscribe(payload: TokenPayload, source: str) -> Outcome:
    """Suppress the token's scopes for its contact (idempotent); ``source`` says how (``one-click:<message>``)."""
    if contact_store.get(payload.contact_id) is None:
        return Outcome(contact_found=False)
    wanted = scopes_of(payload)
    outcome = _change(payload.contact_id, add=wanted, remove=[], source=source, campaign_id=payload.campaign_id)
    outcome.scopes = wanted
    # The event id is the message's: a repeat (or a retry after a crash here) records it once.
    _event(payload, f"unsubscribe:{payload.message_id}", UNSUBSCRIBED_EVENT, wanted, source)
    return outcome


# --------------------------------------------------------------------------
# Preferences
# --------------------------------------------------------------------------


def offered(payload: TokenPayload) -> list[tuple[str, str]]:
    """The (scope, what) pairs the preferences page offers: this campaign, its category, its group, all."""
    whats = [f"campaign#{payload.campaign_id}"]
    if payload.category:
        whats.append(f"category#{payload.category}")
    if payload.campaign_group:
        whats.append(f"group#{payload.campaign_group}")
    whats.append("all")
    return [(f"{channel}#{what}", what) for what in whats for channel in (payload.channel, "all")]


def preferences(payload: TokenPayload) -> Preferences:
    """Every offered scope with the contact's current state (suppressed, covered by a wider one, or open)."""
    if contact_store.get(payload.contact_id) is None:
        return Preferences(False, payload.campaign_id, [])
    current = suppression_store.of_contact(payload.contact_id)
    whats = [what for _, what in offered(payload)]
    options = []
    for scope, what in offered(payload):
        channel = scope.split("#", 1)[0]
        # A campaign is inside its category and group; everything is inside "all".
        around = {what, "all"} | (set(whats) if what.startswith("campaign#") else set())
        wider = [f"{c}#{w}" for c in {channel, "all"} for w in around if f"{c}#{w}" != scope]
        covered = sorted(w for w in wider if w in current)
        options.append(Option(scope, what, channel, current.get(scope), covered[0] if covered else None))
    return Preferences(True, campaign_name(payload), options)


def apply_preferences(payload: TokenPayload, chosen: list[str]) -> Outcome:
    """Make the offered scopes match ``chosen`` (the ones to be unsubscribed from).

    Unchosen scopes lose their ``unsubscribe`` suppression; any other reason
    (complaint, ...) is kept. A scope that is not offered is a 400.
    """
    allowed = {scope for scope, _ in offered(payload)}
    unknown = sorted(set(chosen) - allowed)
    if unknown:
        raise BadRequest(f"unsubscribe: not a choice of this page: {', '.join(unknown)}", field="unsubscribe")
    if contact_store.get(payload.contact_id) is None:
        return Outcome(contact_found=False)
    wanted = set(chosen)
    source = f"preferences:{payload.message_id}"
    outcome = _change(
        payload.contact_id,
        add=sorted(wanted),
        remove=sorted(allowed - wanted),
        source=source,
        campaign_id=payload.campaign_id,
    )
    if outcome.added:
        _event(payload, _change_id("preferences", payload, outcome.added), UNSUBSCRIBED_EVENT, outcome.added, source)
    if outcome.removed:
        _event(
            payload, _change_id("resubscribe", payload, outcome.removed), RESUBSCRIBED_EVENT, outcome.removed, source
        )
    return outcome


# --------------------------------------------------------------------------
# Writes
# --------------------------------------------------------------------------


def _change(contact_id: str, add: list[str], remove: list[str], source: str, campaign_id: str) -> Outcome:
    """Add missing ``unsubscribe`` suppressions and remove ``unsubscribe`` ones, in one transaction.

    Reads the contact's suppressions and writes only the difference, with
    conditions that hold it (a put only on a free scope, a delete only while
    the reason is still ``unsubscribe``). When something is added, the same
    transaction adds 1 to the campaign's ``unsubscribed`` (``total`` and
    today's row), so the count can neither be lost nor doubled. A concurrent
    change fails a condition and the difference is worked out again.
    """
    for _ in range(RETRIES):
        current = suppression_store.of_contact(contact_id)
        adding = [scope for scope in add if scope not in current]
        removing = [scope for scope in remove if current.get(scope) == UNSUBSCRIBE]
        if not adding and not removing:
            return Outcome(contact_found=True)
        items = [_put(contact_id, scope, source) for scope in adding] + [_delete(contact_id, s) for s in removing]
        if adding:
            items += _count(campaign_id)
        client: Any = default_connection().client
        try:
            client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise
            codes = [reason.get("Code") for reason in exc.response.get("CancellationReasons", [])]
            if not any(code in ("ConditionalCheckFailed", "TransactionConflict") for code in codes):
                raise
            continue
        logger.info(
            "communication preferences changed",
            extra={"contact_id": contact_id, "added": adding, "removed": removing, "source": source},
        )
        return Outcome(contact_found=True, added=adding, removed=removing)
    raise Conflict("the preferences kept changing while they were saved; try again", id=contact_id)


def _put(contact_id: str, scope: str, source: str) -> dict[str, Any]:
    record = SuppressionRecord(contact_id, scope, reason=UNSUBSCRIBE, at=clock.now_iso(), source=source)
    return {
        "Put": {
            "TableName": SuppressionRecord.Meta.table_name,
            "Item": record.serialize(),
            "ConditionExpression": "attribute_not_exists(#s)",
            "ExpressionAttributeNames": {"#s": "scope"},
        }
    }


def _delete(contact_id: str, scope: str) -> dict[str, Any]:
    return {
        "Delete": {
            "TableName": SuppressionRecord.Meta.table_name,
            "Key": {"contact_id": {"S": contact_id}, "scope": {"S": scope}},
            "ConditionExpression": "#r = :u",
            "ExpressionAttributeNames": {"#r": "reason"},
            "ExpressionAttributeValues": {":u": {"S": UNSUBSCRIBE}},
        }
    }


def _count(campaign_id: str) -> list[dict[str, Any]]:
    """``ADD unsubscribed 1`` on the campaign's ``total`` and today's row (as the sender counts its outcomes)."""
    subject = stats_store.subject(campaign_id)
    day = clock.now().astimezone(UTC).strftime("%Y-%m-%d")
    return [
        {
            "Update": {
                "TableName": StatsRecord.Meta.table_name,
                "Key": {"subject": {"S": subject}, "metric": {"S": metric}},
                "UpdateExpression": "ADD #n :one",
                "ExpressionAttributeNames": {"#n": STAT},
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        }
        for metric in ("total", f"day#{day}")
    ]


def _event(payload: TokenPayload, event_id: str, event_type: str, scopes: list[str], source: str) -> None:
    event = EventIn(
        event_id=event_id,
        type=event_type,
        properties={
            "campaign_id": payload.campaign_id,
            "message_id": payload.message_id,
            "channel": payload.channel,
            "scopes": ",".join(scopes),
            "source": source.split(":", 1)[0],
        },
    )
    try:
        activity.record_event(payload.contact_id, event)
    except NotFound:
        logger.info("contact gone before its unsubscribe event was recorded", extra={"contact_id": payload.contact_id})
    except HeraldError:
        # The suppressions are written: the reader is unsubscribed, so the answer stays a success.
        # A repeat of the request records the event (its id makes it once).
        logger.exception("unsubscribe event not recorded", extra={"contact_id": payload.contact_id})


def _change_id(kind: str, payload: TokenPayload, scopes: list[str]) -> str:
    """An event id for one preferences change: the message, the scopes and the moment."""
    digest = hashlib.sha256(("|".join(sorted(scopes)) + clock.now_iso()).encode()).hexdigest()[:16]
    return f"{kind}:{payload.message_id}:{digest}"
