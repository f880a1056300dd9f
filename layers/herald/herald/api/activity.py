"""Activity routes: record events (one or in bulk) and read a contact's history."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, Field

from herald.activity import service
from herald.activity.model import MAX_BULK_EVENTS, EventIn
from herald.api.responses import json_response
from herald.errors import ValidationFailed
from herald.observability import metrics

router = Router()


class EventBatch(BaseModel):
    """Up to 100 events, each with its contact_id; each row reports its own outcome."""

    events: list[Any] = Field(description="events with contact_id (at most 100)")


@router.post("/contacts/<contact_id>/events", summary="Record an activity event (once per event_id)")
def record_event(contact_id: str, body: EventIn) -> Response[Any]:
    recorded = service.record_event(contact_id, body)
    if not recorded.duplicate:
        metrics.add_metric(name="ActivityRecorded", unit=MetricUnit.Count, value=1)
    body_out = {**recorded.event.model_dump(mode="json"), "duplicate": recorded.duplicate}
    return json_response(200 if recorded.duplicate else 201, body_out)


@router.get("/contacts/<contact_id>/events", summary="A contact's recent activity, newest first")
def list_events(contact_id: str, limit: Annotated[int, Query(ge=1, le=100)] = 50) -> Response[Any]:
    events = service.list_events(contact_id, limit)
    return json_response(200, {"items": [e.model_dump(mode="json") for e in events]})


@router.post("/events", summary="Record many activity events (per-row outcomes)")
def record_events(body: EventBatch) -> Response[Any]:
    if not body.events or len(body.events) > MAX_BULK_EVENTS:
        raise ValidationFailed.one("events", f"must hold 1 to {MAX_BULK_EVENTS} events")
    outcomes = service.record_bulk(body.events)
    recorded = sum(1 for o in outcomes if o["outcome"] == "recorded")
    metrics.add_metric(name="ActivityRecorded", unit=MetricUnit.Count, value=recorded)
    return json_response(200, {"results": outcomes})
