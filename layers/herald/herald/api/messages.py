"""Message history routes: a contact's and a campaign's messages, newest first (D7, D8)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from herald.api.responses import json_response
from herald.contacts import service as contact_service
from herald.cursor import decode_cursor, encode_cursor
from herald.store import campaigns as campaign_store
from herald.store import contacts as contact_store
from herald.store.tables import MessageRecord

router = Router()

MessageStatus = Literal["sent", "deferred", "expired", "suppressed", "failed", "sending"]


@router.get("/contacts/<contact_id>/messages", summary="A contact's message history, newest first")
def contact_messages(
    contact_id: str,
    status: Annotated[MessageStatus | None, Query()] = None,
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> Response[Any]:
    contact_service.get_contact(contact_id)
    listing = f"messages:contact:{contact_id}:{status or ''}"

    def page(last_key: dict[str, Any] | None, size: int) -> Any:
        return MessageRecord.contact_time_index.query(
            contact_id,
            scan_index_forward=False,
            filter_condition=_status_filter(status),
            limit=size,
            last_evaluated_key=last_key,
        )

    return _listing(page, cursor, listing, limit)


@router.get("/campaigns/<campaign_id>/messages", summary="A campaign's message history, newest first")
def campaign_messages(
    campaign_id: str,
    status: Annotated[MessageStatus | None, Query()] = None,
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> Response[Any]:
    campaign_store.require(campaign_id)  # 404 if unknown; the history needs no parsed definition
    listing = f"messages:campaign:{campaign_id}:{status or ''}"

    def page(last_key: dict[str, Any] | None, size: int) -> Any:
        return MessageRecord.program_time_index.query(
            f"campaign#{campaign_id}",
            scan_index_forward=False,
            filter_condition=_status_filter(status),
            limit=size,
            last_evaluated_key=last_key,
        )

    return _listing(page, cursor, listing, limit)


def _status_filter(status: str | None) -> Any:
    return MessageRecord.status == status if status else None


def _listing(page: Any, cursor: str | None, listing: str, limit: int) -> Response[Any]:
    records, state = contact_store.query_pages([page], decode_cursor(cursor, listing), limit)
    items = [_message(r) for r in records]
    return json_response(200, {"items": items, "next_cursor": encode_cursor(state, listing)})


def _message(record: MessageRecord) -> dict[str, Any]:
    return {
        "message_id": record.message_id,
        "campaign_id": record.campaign_id,
        "contact_id": record.contact_id,
        "occurrence": record.occurrence,
        "action_index": int(record.action_index),
        "channel": record.channel,
        "status": record.status,
        "reason": record.reason,
        "policy_id": record.policy_id,
        "priority": int(record.priority),
        "queued_at": record.queued_at,
        "created_at": record.created_at,
        "sent_at": record.sent_at,
        "due_at": record.due_at,
        "provider_message_id": record.provider_message_id,
        "deferrals": int(record.deferrals or 0),
    }
