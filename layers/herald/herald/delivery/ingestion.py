"""SES event ingestion: what happened to an email comes back and is applied once.

SES publishes events (configuration set → SNS topic → SQS queue). Each queue
record holds one event, SNS-wrapped (``{"Type": "Notification", "MessageId",
"Message": "<json>"}``) or raw, in either of SES's formats: *event publishing*
(``eventType``) or *feedback notifications* (``notificationType``). The record
is parsed by :func:`parse` and applied by :class:`Ingestor`:

- ``Bounce`` ``Permanent`` → hard bounce (``bounce.hard``); ``Transient`` or
  ``Undetermined`` → soft bounce (``bounce.soft_count + 1``): the sender
  suppresses email at a hard bounce or 5+ soft bounces. Only the message's
  contact is changed, and only if its current address is a bounced recipient;
- ``Complaint`` → a suppression ``email#all`` (reason ``complaint``);
- ``Delivery`` → the message's ``delivered_at``;
- ``Open`` / ``Click`` → activity ``campaign.opened`` / ``campaign.clicked``;
- ``Reject`` / ``Rendering Failure`` → the message ``failed`` with the reason
  (never a bounce);
- ``Send``, ``DeliveryDelay``, ``Subscription`` and SNS subscription
  confirmations are known and ignored; anything else is *unknown*.

The message is found by the ``message_id`` tag (D4) or else by SES's message
id on ``ProviderIdIndex`` (D5); the contact comes from the message (or the
``contact_id`` tag).

**Once (D6):** every effect is one ``TransactWriteItems`` with a marker put
into the idempotency table (``id = ses#sns#<SNS MessageId>`` when wrapped,
else ``ses#sha#<sha256 of the body>``; condition ``attribute_not_exists(id)``;
TTL ``expiration``) and the campaign's statistics rows, so an event arriving
twice is applied and counted once. Opens and clicks record their activity
first (its own transaction, idempotent by an event id derived from the SES
event), then the marker and statistics.

**Guardrails:** a hard bounce or complaint is also added to the campaign's
``hour#<hour>`` statistics row (in the same transaction, so once) of the hour
the event *occurred* (SES's timestamp, or now if that is in the future), with
the row's TTL; the campaigns that got one are in :attr:`Ingestor.guarded`, for
:mod:`herald.campaigns.guardrails` to check after the batch.

**Flows:** a flow step's email (its message record holds ``step_id``;
``campaign_id`` is the flow's id) counts on the step's statistics row
(``flow#<flow_id>`` / ``step#<step_id>``) instead, with no hour row and no
guardrail check; its opens and clicks are activity like a campaign's, so a
rule ``{"campaign": "<flow_id>", "response": "opened"}`` sees them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError
from pydantic import ValidationError

from herald import clock
from herald.activity import service as activity
from herald.activity.model import EventIn
from herald.contacts.model import Contact, is_valid_id
from herald.dynamodb_json import to_attribute_value
from herald.errors import Conflict, NotFound, StaleVersion
from herald.observability import logger
from herald.store import contacts as contact_store
from herald.store import flows as flow_store
from herald.store import messages
from herald.store import stats as stats_store
from herald.store.tables import ContactRecord, IdempotencyRecord, MessageRecord, StatsRecord, SuppressionRecord
from herald.store.transactions import default_connection

MARKER_DAYS = 30
CONTACT_RETRIES = 5
COMPLAINT_SCOPE = "email#all"
OPENED_EVENT = "campaign.opened"
CLICKED_EVENT = "campaign.clicked"

HARD_BOUNCE = "bounce_hard"
SOFT_BOUNCE = "bounce_soft"
COMPLAINT = "complaint"
DELIVERY = "delivery"
OPEN = "open"
CLICK = "click"
REJECT = "reject"
RENDERING_FAILURE = "rendering_failure"

# Kinds the sending guardrails count per hour (herald.campaigns.guardrails).
GUARDED = frozenset({HARD_BOUNCE, COMPLAINT})

# Campaign statistics each kind adds to (herald.store.stats.add_stats).
STAT_OF = {
    HARD_BOUNCE: "bounced_hard",
    SOFT_BOUNCE: "bounced_soft",
    COMPLAINT: "complaints",
    DELIVERY: "delivered",
    OPEN: "opened",
    CLICK: "clicked",
    REJECT: "rejected",
    RENDERING_FAILURE: "rendering_failed",
}
IGNORED_TYPES = frozenset({"Send", "DeliveryDelay", "Subscription", "AmazonSnsSubscriptionSucceeded"})
_SOFT_TYPES = frozenset({"Transient", "Undetermined"})


class Malformed(ValueError):
    """The record is not an SES event Herald can read (retrying cannot fix it)."""


class Unknown(ValueError):
    """The record is well-formed JSON but of an event type Herald does not know."""


class Ignored(ValueError):
    """A known SES event type that changes nothing in Herald (``Send``, ``DeliveryDelay``, ...)."""


class Transient(Exception):
    """A store problem a later attempt may not have: return the record as a batch item failure."""


@dataclass(frozen=True)
class SesEvent:
    """One SES event, normalised."""

    kind: str
    event_type: str
    key: str
    ses_message_id: str
    tags: dict[str, list[str]]
    timestamp: str
    detail: dict[str, Any]
    mail: dict[str, Any]

    def tag(self, name: str) -> str | None:
        values = self.tags.get(name)
        if isinstance(values, list) and values and isinstance(values[0], str) and values[0]:
            return values[0]
        return None


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------


def parse(body: str) -> SesEvent:
    """The SES event in one queue record body; raises Malformed, Unknown or Ignored."""
    try:
        outer = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise Malformed(f"not JSON: {exc}") from exc
    if not isinstance(outer, dict):
        raise Malformed("not a JSON object")
    if outer.get("Type") == "SubscriptionConfirmation":
        raise Ignored("SNS SubscriptionConfirmation")
    if outer.get("Type") == "Notification":
        sns_id = outer.get("MessageId")
        text = outer.get("Message")
        if not isinstance(sns_id, str) or not sns_id or not isinstance(text, str):
            raise Malformed("SNS notification without MessageId or Message")
        try:
            inner = json.loads(text)
        except ValueError as exc:
            raise Malformed(f"SNS Message is not JSON: {exc}") from exc
        if not isinstance(inner, dict):
            raise Malformed("SNS Message is not a JSON object")
        key = "ses#sns#" + sns_id
    else:
        inner = outer
        canonical = json.dumps(inner, sort_keys=True, separators=(",", ":"))
        key = "ses#sha#" + hashlib.sha256(canonical.encode()).hexdigest()
    event_type = inner.get("eventType", inner.get("notificationType"))
    if not isinstance(event_type, str) or not event_type:
        raise Malformed("neither eventType nor notificationType")
    if event_type in IGNORED_TYPES:
        raise Ignored(event_type)
    kind, detail = _kind(event_type, inner)
    mail = inner.get("mail")
    if not isinstance(mail, dict) or not isinstance(mail.get("messageId"), str) or not mail["messageId"]:
        raise Malformed(f"{event_type} without mail.messageId")
    raw_tags = mail.get("tags")
    tags: dict[str, list[str]] = raw_tags if isinstance(raw_tags, dict) else {}
    timestamp = detail.get("timestamp") or mail.get("timestamp")
    return SesEvent(
        kind=kind,
        event_type=event_type,
        key=key,
        ses_message_id=mail["messageId"],
        tags=tags,
        timestamp=_instant(timestamp),
        detail=detail,
        mail=mail,
    )


def _kind(event_type: str, inner: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    simple = {
        "Complaint": (COMPLAINT, "complaint"),
        "Delivery": (DELIVERY, "delivery"),
        "Open": (OPEN, "open"),
        "Click": (CLICK, "click"),
        "Reject": (REJECT, "reject"),
        "Rendering Failure": (RENDERING_FAILURE, "failure"),
    }
    if event_type == "Bounce":
        detail = inner.get("bounce")
        if not isinstance(detail, dict):
            raise Malformed("Bounce without a bounce object")
        bounce_type = detail.get("bounceType")
        if bounce_type == "Permanent":
            return HARD_BOUNCE, detail
        if bounce_type in _SOFT_TYPES:
            return SOFT_BOUNCE, detail
        raise Malformed(f"Bounce with bounceType {bounce_type!r}")
    if event_type not in simple:
        raise Unknown(event_type)
    kind, name = simple[event_type]
    detail = inner.get(name)
    if not isinstance(detail, dict):
        raise Malformed(f"{event_type} without a {name} object")
    if kind == CLICK and not isinstance(detail.get("link"), str):
        raise Malformed("Click without a link")
    return kind, detail


def _instant(value: Any) -> str:
    """An SES timestamp as Herald's ISO form (now if missing or unreadable)."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return clock.to_iso(parsed.astimezone(UTC))
    return clock.now_iso()


# --------------------------------------------------------------------------
# Applying
# --------------------------------------------------------------------------


@dataclass
class Target:
    """What an event is about: its message (if known), contact and campaign.

    ``step`` is set when the message is a flow step's send (``campaign_id`` is
    then the flow's id): its statistics go to the step's row, and flows have
    no sending guardrails.
    """

    message: MessageRecord | None
    contact_id: str
    campaign_id: str | None
    step: str | None = None


@dataclass
class Ingestor:
    """Applies the SES events of one invocation; ``counts`` feeds its metrics.

    ``guarded`` collects the campaigns that got a hard bounce or complaint applied,
    for the guardrails to check once the batch is done.
    """

    counts: Counter[str] = field(default_factory=Counter)
    guarded: set[str] = field(default_factory=set)

    def ingest(self, body: str) -> str:
        """Parse and apply one record; returns its outcome (raises Transient to retry it)."""
        try:
            event = parse(body)
        except Ignored as exc:
            logger.info("SES event ignored", extra={"event_type": str(exc)})
            return self._count("ignored")
        except Unknown as exc:
            logger.warning("unknown SES event dropped", extra={"event_type": str(exc), "body": body[:500]})
            return self._count("unknown")
        except Malformed as exc:
            logger.warning("malformed SES event dropped", extra={"error": str(exc), "body": body[:500]})
            return self._count("malformed")
        return self._count(self.apply(event))

    def _count(self, outcome: str) -> str:
        self.counts[outcome] += 1
        return outcome

    def apply(self, event: SesEvent) -> str:
        """``applied``, ``duplicate`` or ``unmatched``."""
        if _marked(event.key):
            return "duplicate"
        target = find_target(event)
        if target is None:
            logger.warning(
                "SES event for no known message dropped",
                extra={"ses_message_id": event.ses_message_id, "event_type": event.event_type},
            )
            return "unmatched"
        if event.kind in (OPEN, CLICK):
            self._record_activity(event, target)
        for _ in range(CONTACT_RETRIES):
            items, contact_index, message_index = self._effect(event, target)
            outcome = _commit(event, target, items)
            if outcome in ("applied", "duplicate"):
                if outcome == "applied":
                    logger.info(
                        "SES event applied",
                        extra={"kind": event.kind, "contact_id": target.contact_id, "key": event.key},
                    )
                    if event.kind in GUARDED and target.campaign_id and target.step is None:
                        self.guarded.add(target.campaign_id)
                return outcome
            failed = int(outcome)
            if failed == message_index:
                target.message = None  # gone since it was read: apply the rest without it
            elif failed != contact_index:
                raise Transient(f"SES event {event.key}: condition of item {failed} failed")
        raise Transient(f"contact {target.contact_id} kept changing; SES event {event.key} will be retried")

    # -- effects ---------------------------------------------------------------

    def _effect(self, event: SesEvent, target: Target) -> tuple[list[dict[str, Any]], int, int]:
        """The transaction items after marker and stats; the indexes of the contact and message items (or -1)."""
        items: list[dict[str, Any]] = []
        contact_index = message_index = -1
        base = 1 + len(_stat_updates(event, target))
        if event.kind in (HARD_BOUNCE, SOFT_BOUNCE):
            contact = contact_store.get(target.contact_id)
            if contact is not None and _bounced(event, contact):
                items.append(_bounce_update(contact, event))
                contact_index = base
            elif contact is not None:
                logger.info("bounce is not for the contact's current address", extra={"contact_id": contact.contact_id})
        elif event.kind == COMPLAINT:
            items.append(_suppression_put(target.contact_id, event))
        elif event.kind == DELIVERY and target.message is not None:
            items.append(
                _message_update(
                    target.message.message_id, "SET #d = :d", {"#d": "delivered_at"}, {":d": {"S": event.timestamp}}
                )
            )
            message_index = base
        elif event.kind in (REJECT, RENDERING_FAILURE) and target.message is not None:
            reason = _failure_reason(event)
            items.append(
                _message_update(
                    target.message.message_id,
                    "SET #s = :s, #r = :r REMOVE #c",
                    {"#s": "status", "#r": "reason", "#c": "claim"},
                    {":s": {"S": messages.FAILED}, ":r": {"S": reason[:500]}},
                )
            )
            message_index = base
        return items, contact_index, message_index

    def _record_activity(self, event: SesEvent, target: Target) -> None:
        if not target.campaign_id or not is_valid_id(target.campaign_id):
            return
        message_id = target.message.message_id if target.message is not None else event.tag("message_id")
        properties: dict[str, Any] = {"campaign_id": target.campaign_id, "message_id": message_id}
        if event.kind == CLICK:
            properties["link"] = str(event.detail["link"])[:1000]
        try:
            data = EventIn(
                event_id=activity_event_id(event),
                type=OPENED_EVENT if event.kind == OPEN else CLICKED_EVENT,
                occurred_at=datetime.fromisoformat(event.timestamp.replace("Z", "+00:00")),
                properties=properties,
            )
        except ValidationError as exc:
            logger.warning("SES event not recordable as activity", extra={"error": str(exc)})
            return
        try:
            activity.record_event(target.contact_id, data)
        except NotFound:
            logger.info("contact gone before its SES event", extra={"contact_id": target.contact_id})
        except (Conflict, StaleVersion) as exc:
            raise Transient(f"activity of {target.contact_id} not recorded: {exc}") from exc


def activity_event_id(event: SesEvent) -> str:
    """The activity event id of an open or click: the same for every delivery of the same SES event."""
    link = str(event.detail.get("link") or "")
    basis = f"{event.ses_message_id}|{event.event_type}|{event.detail.get('timestamp')}|{link}"
    return f"ses-{event.kind}-" + hashlib.sha256(basis.encode()).hexdigest()[:40]


def find_target(event: SesEvent) -> Target | None:
    """D4: the message named by the ``message_id`` tag; D5: else by SES's message id; else the tags alone."""
    message: MessageRecord | None = None
    tagged = event.tag("message_id")
    if tagged:
        message = messages.get(tagged)
    if message is None:
        for key in MessageRecord.provider_id_index.query(event.ses_message_id, limit=1):
            message = messages.get(key.message_id)
    if message is not None:
        return Target(message, message.contact_id, message.campaign_id, message.step_id)
    contact_id = event.tag("contact_id")
    if contact_id:
        return Target(None, contact_id, event.tag("campaign_id"))
    return None


def _marked(key: str) -> bool:
    try:
        IdempotencyRecord.get(key, consistent_read=True)
    except IdempotencyRecord.DoesNotExist:
        return False
    return True


def _commit(event: SesEvent, target: Target, effect: list[dict[str, Any]]) -> str:
    """Marker, statistics and effect in one transaction: ``applied``, ``duplicate`` or the failed item's index."""
    items: list[dict[str, Any]] = [
        {
            "Put": {
                "TableName": IdempotencyRecord.Meta.table_name,
                "Item": {
                    "id": {"S": event.key},
                    "expiration": {"N": str(int(time.time()) + MARKER_DAYS * 86_400)},
                    "kind": {"S": event.kind},
                },
                "ConditionExpression": "attribute_not_exists(id)",
            }
        }
    ]
    items += _stat_updates(event, target)
    items += effect
    client: Any = default_connection().client
    try:
        client.transact_write_items(TransactItems=items)
    except ClientError as exc:
        error = exc.response.get("Error", {}).get("Code")
        if error != "TransactionCanceledException":
            raise
        codes = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
        if codes and codes[0] == "ConditionalCheckFailed":
            return "duplicate"
        failed = [i for i, code in enumerate(codes) if code == "ConditionalCheckFailed"]
        if failed:
            return str(failed[0])
        raise Transient(f"SES event {event.key}: transaction cancelled ({codes})") from exc
    return "applied"


def _stat_updates(event: SesEvent, target: Target) -> list[dict[str, Any]]:
    """The campaign's ``total`` and ``day#`` rows, and for a hard bounce or complaint its ``hour#`` row.

    A flow step's message counts on the step's row (``flow#<flow_id>`` / ``step#<step_id>``) only.
    """
    if not target.campaign_id:
        return []
    subject = stats_store.subject(target.campaign_id)
    rows: list[tuple[str, dict[str, str]]] = [("total", {}), (f"day#{event.timestamp[:10]}", {})]
    if target.step is not None:
        subject, rows = flow_store.stats_subject(target.campaign_id), [(f"step#{target.step}", {})]
    elif event.kind in GUARDED:
        hour = stats_store.hour_of(min(_moment(event.timestamp), clock.now()))
        rows.append((hour, {"N": str(stats_store.hour_expiration(hour))}))
    updates = []
    for metric, expiration in rows:
        expression = "ADD #n :one"
        names = {"#n": STAT_OF[event.kind]}
        values: dict[str, Any] = {":one": {"N": "1"}}
        if expiration:
            expression += " SET #e = :e"
            names["#e"] = stats_store.TTL_ATTRIBUTE
            values[":e"] = expiration
        updates.append(
            {
                "Update": {
                    "TableName": StatsRecord.Meta.table_name,
                    "Key": {"subject": {"S": subject}, "metric": {"S": metric}},
                    "UpdateExpression": expression,
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values,
                }
            }
        )
    return updates


def _moment(instant: str) -> datetime:
    return datetime.fromisoformat(instant.replace("Z", "+00:00"))


def _bounced(event: SesEvent, contact: Contact) -> bool:
    """The bounce names the contact's current address (a bounce for an old address changes nothing)."""
    if not contact.email:
        return False
    recipients = event.detail.get("bouncedRecipients")
    addresses = {str(r.get("emailAddress", "")).strip().lower() for r in recipients or [] if isinstance(r, dict)}
    return contact.email.strip().lower() in addresses


def _bounce_update(contact: Contact, event: SesEvent) -> dict[str, Any]:
    bounce = contact.bounce.model_dump()
    if event.kind == HARD_BOUNCE:
        bounce["hard"] = True
    else:
        bounce["soft_count"] = int(bounce.get("soft_count") or 0) + 1
    bounce["last_bounce_at"] = event.timestamp
    return {
        "Update": {
            "TableName": ContactRecord.Meta.table_name,
            "Key": {"contact_id": {"S": contact.contact_id}},
            "UpdateExpression": "SET #b = :b, #u = :u, #v = #v + :one",
            "ConditionExpression": "#v = :v",
            "ExpressionAttributeNames": {"#b": "bounce", "#u": "updated_at", "#v": "version"},
            "ExpressionAttributeValues": {
                ":b": to_attribute_value(bounce),
                ":u": {"S": clock.now_iso()},
                ":v": {"N": str(contact.version)},
                ":one": {"N": "1"},
            },
        }
    }


def _suppression_put(contact_id: str, event: SesEvent) -> dict[str, Any]:
    record = SuppressionRecord(
        contact_id=contact_id, scope=COMPLAINT_SCOPE, reason=COMPLAINT, at=event.timestamp, source="ses"
    )
    return {"Put": {"TableName": SuppressionRecord.Meta.table_name, "Item": record.serialize()}}


def _message_update(message_id: str, expression: str, names: dict[str, str], values: dict[str, Any]) -> dict[str, Any]:
    return {
        "Update": {
            "TableName": MessageRecord.Meta.table_name,
            "Key": {"message_id": {"S": message_id}},
            "UpdateExpression": expression,
            "ConditionExpression": "attribute_exists(message_id)",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
    }


def _failure_reason(event: SesEvent) -> str:
    if event.kind == REJECT:
        return f"ses_reject: {event.detail.get('reason') or 'rejected'}"
    return f"ses_rendering_failure: {event.detail.get('errorMessage') or 'rendering failed'}"
