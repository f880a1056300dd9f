"""Message records: one per action of a campaign occurrence for one contact.

``message_id`` is the idempotency key of the send (see :func:`message_id`).
Every write that starts handling a message is conditional: it succeeds only
if no record exists yet or the record is ``deferred`` (a re-release), so a
redelivered queue message, or two senders racing, handle it once. A send is
first *claimed* (``sending`` with a random claim token), then marked ``sent``
with the provider's id; a crash after the provider accepted it leaves the
claim in place, and a ``sending`` record is never sent again.

Access patterns (docs/data-model.md): D1 a message by id (GetItem /
BatchGetItem); K12 a contact's messages since an instant (``ContactTimeIndex``,
the contact-policy history); K13 deferred messages due by an instant
(``DueIndex``, one hour bucket per query).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from botocore.exceptions import ClientError
from pynamodb.exceptions import DeleteError, PutError

from herald.store.tables import ContactRecord, MessageRecord
from herald.store.transactions import Operation, default_connection, is_condition_failure

SENDING = "sending"
SENT = "sent"
DEFERRED = "deferred"
EXPIRED = "expired"
SUPPRESSED = "suppressed"
FAILED = "failed"
HANDLED = frozenset({SENDING, SENT, EXPIRED, SUPPRESSED, FAILED})
RETENTION_DAYS = 400


def message_id(campaign_id: str, contact_id: str, occurrence: str, action_index: int) -> str:
    """The deterministic id (and idempotency key) of one action of one occurrence for one contact."""
    key = f"campaign#{campaign_id}|{contact_id}|{occurrence}|{action_index}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def due_hour(due_at: str) -> str:
    """The ``DueIndex`` bucket of an ISO instant: ``YYYY-MM-DDTHH`` (UTC)."""
    return due_at[:13]


def expiry_epoch() -> int:
    return int(time.time()) + RETENTION_DAYS * 86_400


def claim_condition() -> Any:
    """A message may be (re)handled only if it is new or deferred."""
    return MessageRecord.message_id.does_not_exist() | (MessageRecord.status == DEFERRED)


# --------------------------------------------------------------------------
# Reads
# --------------------------------------------------------------------------


def get(message_id_: str) -> MessageRecord | None:
    try:
        return MessageRecord.get(message_id_, consistent_read=True)
    except MessageRecord.DoesNotExist:
        return None


def get_many(message_ids: Iterable[str]) -> dict[str, MessageRecord]:
    """Messages by id (BatchGetItem, strongly consistent); missing ids are absent."""
    unique = list(dict.fromkeys(message_ids))
    if not unique:
        return {}
    return {r.message_id: r for r in MessageRecord.batch_get(unique, consistent_read=True)}


def sent_since(contact_id: str, since: str) -> list[MessageRecord]:
    """K12: the contact's messages sent at or after ``since`` (``ContactTimeIndex``)."""
    return list(
        MessageRecord.contact_time_index.query(
            contact_id, MessageRecord.created_at >= since, filter_condition=MessageRecord.status == SENT
        )
    )


def of_contact(contact_id: str, limit: int = 50) -> list[MessageRecord]:
    """A contact's most recent messages, newest first."""
    return list(MessageRecord.contact_time_index.query(contact_id, scan_index_forward=False, limit=limit))


def of_campaign(campaign_id: str, limit: int = 50) -> list[MessageRecord]:
    """A campaign's most recent messages, newest first (``ProgramTimeIndex``)."""
    return list(
        MessageRecord.program_time_index.query(f"campaign#{campaign_id}", scan_index_forward=False, limit=limit)
    )


def due(hour: str, until: str) -> Iterator[MessageRecord]:
    """K13: deferred messages of one hour bucket whose ``due_at <= until`` (``DueIndex``)."""
    return MessageRecord.due_index.query(
        hour, MessageRecord.due_at <= until, filter_condition=MessageRecord.status == DEFERRED
    )


# --------------------------------------------------------------------------
# Writes
# --------------------------------------------------------------------------


def record(message: MessageRecord) -> bool:
    """Write a message in its final or deferred state if it is new or deferred; False if already handled."""
    message.expires_at = expiry_epoch()
    try:
        message.save(condition=claim_condition())
    except PutError as exc:
        if is_condition_failure(exc):
            return False
        raise
    return True


def claim(message: MessageRecord) -> str | None:
    """Claim a message for sending (status ``sending``); returns the claim token, None if already handled."""
    token = uuid.uuid4().hex
    message.status = SENDING
    message.claim = token
    message.due_at = None
    message.due_hour = None
    return token if record(message) else None


def claim_operation(message: MessageRecord, label: str) -> tuple[Operation, str]:
    """The conditional put that claims ``message`` for sending, for a batched transaction; and its token.

    Same condition as :func:`claim` (new or deferred), so a handled message
    fails the unit instead of being sent again.
    """
    token = uuid.uuid4().hex
    message.status = SENDING
    message.claim = token
    message.due_at = None
    message.due_hour = None
    message.expires_at = expiry_epoch()
    return Operation("put", message, label, condition=claim_condition()), token


def sent_operation(message_id_: str, token: str, provider_message_id: str, at: str, label: str) -> Operation:
    """The update recording that the provider accepted the claimed message (for a batched transaction)."""
    return Operation(
        "update", MessageRecord(message_id_), label, MessageRecord.claim == token, _sent(provider_message_id, at)
    )


def mark_sent(message_id_: str, token: str, provider_message_id: str, at: str) -> None:
    """The provider accepted the claimed message."""
    MessageRecord(message_id_).update(actions=_sent(provider_message_id, at), condition=MessageRecord.claim == token)


def _sent(provider_message_id: str, at: str) -> list[Any]:
    return [
        MessageRecord.status.set(SENT),
        MessageRecord.provider_message_id.set(provider_message_id),
        MessageRecord.sent_at.set(at),
        MessageRecord.created_at.set(at),
        MessageRecord.claim.remove(),
        MessageRecord.reason.remove(),
        MessageRecord.policy_id.remove(),
    ]


def mark_failed(message_id_: str, token: str, reason: str, at: str) -> None:
    """The provider refused the claimed message for good."""
    MessageRecord(message_id_).update(
        actions=[
            MessageRecord.status.set(FAILED),
            MessageRecord.reason.set(reason[:500]),
            MessageRecord.created_at.set(at),
            MessageRecord.claim.remove(),
        ],
        condition=MessageRecord.claim == token,
    )


def release(previous: MessageRecord | None, message_id_: str, token: str) -> None:
    """Undo a claim (the provider was throttled): back to deferred, or gone, so a retry can send."""
    try:
        if previous is None:
            MessageRecord(message_id_).delete(condition=MessageRecord.claim == token)
        else:
            previous.expires_at = expiry_epoch()
            previous.save(condition=MessageRecord.claim == token)
    except (PutError, DeleteError) as exc:
        if not is_condition_failure(exc):
            raise


def record_with_contact_update(
    message: MessageRecord, contact_id: str, version: int, update: str, names: dict[str, str], values: dict[str, Any]
) -> str:
    """Write a ``points``/``stage`` message and change the contact in one transaction.

    The contact update is conditional on ``version`` (and bumps it); returns
    ``done``, ``handled`` (the message was already handled) or ``stale`` (the
    contact changed since it was read, or is gone).
    """
    message.expires_at = expiry_epoch()
    table = MessageRecord.Meta.table_name
    item = message.serialize()
    names = {**names, "#ver": "version"}
    values = {**values, ":ver": {"N": str(version)}, ":one": {"N": "1"}}
    client: Any = default_connection().client
    try:
        client.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": table,
                        "Item": item,
                        "ConditionExpression": "attribute_not_exists(message_id) OR #st = :deferred",
                        "ExpressionAttributeNames": {"#st": "status"},
                        "ExpressionAttributeValues": {":deferred": {"S": DEFERRED}},
                    }
                },
                {
                    "Update": {
                        "TableName": ContactRecord.Meta.table_name,
                        "Key": {"contact_id": {"S": contact_id}},
                        "UpdateExpression": update + ", #ver = #ver + :one",
                        "ConditionExpression": "#ver = :ver",
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": values,
                    }
                },
            ]
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
            raise
        codes = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
        if codes and codes[0] == "ConditionalCheckFailed":
            return "handled"
        if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
            return "stale"
        raise
    return "done"
