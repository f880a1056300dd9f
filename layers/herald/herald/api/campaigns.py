"""Campaign routes: definitions, checklist, test, forecast, launch/stop/resume, stats, alerts."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Header, Query

from herald.api.responses import etag, json_response, parse_if_match
from herald.campaigns import alerts, review, service
from herald.campaigns.model import CampaignIn, CampaignPatch, LaunchIn, TestIn
from herald.campaigns.service import Services
from herald.cursor import decode_cursor, encode_cursor
from herald.store import contacts as contact_store
from herald.store import enrolments
from herald.store.tables import EnrolmentRecord

router = Router()
_services = {"services": Services()}


def configure(services: Services) -> None:
    """Give the routes the alerts topic and the message history reader."""
    _services["services"] = services


def services() -> Services:
    return _services["services"]


@router.post("/campaigns", summary="Create a campaign (Draft)")
def create(body: CampaignIn) -> Response[Any]:
    campaign = service.create(body, services())
    return json_response(201, campaign, {**etag(campaign.version), "Location": f"/campaigns/{campaign.id}"})


@router.get("/campaigns", summary="List campaigns with their In-Campaign %")
def list_all(
    cursor: Annotated[str | None, Query()] = None, limit: Annotated[int, Query(ge=1, le=100)] = 50
) -> Response[Any]:
    items, next_cursor = service.list_campaigns(cursor, limit)
    return json_response(200, {"items": [c.model_dump(mode="json") for c in items], "next_cursor": next_cursor})


@router.get("/campaigns/<campaign_id>", summary="Get a campaign with its statistics")
def get_one(campaign_id: str) -> Response[Any]:
    campaign = service.get(campaign_id)
    return json_response(200, campaign, etag(campaign.version))


@router.patch("/campaigns/<campaign_id>", summary="Change a campaign (a launched one from its next tick)")
def update(campaign_id: str, body: CampaignPatch, if_match: Annotated[str | None, Header()] = None) -> Response[Any]:
    campaign = service.update(campaign_id, body, services(), parse_if_match(if_match))
    return json_response(200, campaign, etag(campaign.version))


@router.delete("/campaigns/<campaign_id>", summary="Delete a campaign that is not running")
def delete(campaign_id: str) -> Response[Any]:
    service.delete(campaign_id, services())
    return Response(status_code=204, body="")


@router.get("/campaigns/<campaign_id>/checklist", summary="The launch checklist")
def checklist(campaign_id: str) -> Response[Any]:
    return json_response(200, review.checklist(campaign_id))


@router.post("/campaigns/<campaign_id>/test", summary="Test the campaign on a sample contact")
def test(campaign_id: str, body: TestIn) -> Response[Any]:
    return json_response(200, review.test(campaign_id, body.contact_id))


@router.get("/campaigns/<campaign_id>/forecast", summary="Expected sends per day for the next 7 days")
def forecast(campaign_id: str) -> Response[Any]:
    return json_response(200, review.forecast(campaign_id))


@router.post("/campaigns/<campaign_id>/launch", summary="Launch (refused on a failing checklist unless forced)")
def launch(campaign_id: str, body: LaunchIn) -> Response[Any]:
    campaign = service.launch(campaign_id, body)
    return json_response(200, campaign, etag(campaign.version))


@router.post("/campaigns/<campaign_id>/stop", summary="Stop a running campaign")
def stop(campaign_id: str) -> Response[Any]:
    campaign = service.stop(campaign_id)
    return json_response(200, campaign, etag(campaign.version))


@router.post("/campaigns/<campaign_id>/resume", summary="Resume a stopped campaign")
def resume(campaign_id: str) -> Response[Any]:
    campaign = service.launch(campaign_id, LaunchIn(), resume=True)
    return json_response(200, campaign, etag(campaign.version))


@router.get("/campaigns/<campaign_id>/stats", summary="Matching, enrolled, exited, sent, deferred, suppressed, failed")
def stats(campaign_id: str) -> Response[Any]:
    service.get(campaign_id, with_stats=False)
    return json_response(200, service.stats_view(campaign_id))


@router.get(
    "/campaigns/<campaign_id>/alerts", summary="The campaign's alerts (In-Campaign %, guardrail pauses), newest first"
)
def list_alerts(campaign_id: str) -> Response[Any]:
    service.get(campaign_id, with_stats=False)
    return json_response(200, {"items": alerts.alerts_of(campaign_id)})


@router.get("/campaigns/<campaign_id>/enrolments", summary="Who is and was in the campaign")
def list_enrolments(
    campaign_id: str, cursor: Annotated[str | None, Query()] = None, limit: Annotated[int, Query(ge=1, le=100)] = 50
) -> Response[Any]:
    service.get(campaign_id, with_stats=False)
    listing = f"enrolments:{campaign_id}"

    def page(last_key: dict[str, Any] | None, size: int) -> Any:
        key = enrolments.program_key(campaign_id)
        return EnrolmentRecord.query(key, limit=size, last_evaluated_key=last_key)

    records, state = contact_store.query_pages([page], decode_cursor(cursor, listing), limit)
    items = [_enrolment(r) for r in records]
    return json_response(200, {"items": items, "next_cursor": encode_cursor(state, listing)})


@router.get("/contacts/<contact_id>/campaigns", summary="A contact's campaign enrolments")
def contact_campaigns(contact_id: str) -> Response[Any]:
    return json_response(200, {"items": [_enrolment(r) for r in enrolments.of_contact(contact_id)]})


def _enrolment(record: EnrolmentRecord) -> dict[str, Any]:
    return {
        "campaign_id": record.program_key.removeprefix("campaign#"),
        "contact_id": record.contact_id,
        "state": record.state,
        "occurrence": record.occurrence,
        "occurrences": int(record.occurrences or 1),
        "enrolled_at": record.enrolled_at,
        "exited_at": record.exited_at,
        "exit_reason": record.exit_reason,
    }
