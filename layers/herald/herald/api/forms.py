"""Lead capture form routes: authenticated CRUD, and the public submit endpoint.

``POST /forms/{id}/submit`` is the only route of the API without IAM
authentication: the template gives that path its own ``Api`` event with
``Authorizer: NONE`` and a tighter throttle; every other path reaches the
function through the authenticated ``/{proxy+}`` event.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Header, Query
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from herald.api.responses import etag, json_response, parse_if_match
from herald.forms import service
from herald.forms.model import FormIn, FormPatch

router = Router()


@router.post("/forms", summary="Create a lead capture form")
def create_form(body: FormIn) -> Response[Any]:
    form = service.create_form(body)
    return json_response(201, form, {**etag(form.version), "Location": f"/forms/{form.id}"})


@router.get("/forms", summary="List lead capture forms")
def list_forms(
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> Response[Any]:
    page = service.list_forms(cursor, limit)
    return json_response(
        200, {"items": [f.model_dump(mode="json") for f in page.items], "next_cursor": page.next_cursor}
    )


@router.get("/forms/<form_id>", summary="Get a form with its submission counters")
def get_form(form_id: str) -> Response[Any]:
    form = service.get_form(form_id)
    return json_response(200, form, etag(form.version))


@router.patch("/forms/<form_id>", summary="Change a form (publish, fields, consent wording, limits)")
def update_form(form_id: str, body: FormPatch, if_match: Annotated[str | None, Header()] = None) -> Response[Any]:
    form = service.update_form(form_id, body, parse_if_match(if_match))
    return json_response(200, form, etag(form.version))


@router.delete("/forms/<form_id>", summary="Delete a form (its leads stay)")
def delete_form(form_id: str) -> Response[Any]:
    if service.delete_form(form_id):
        return Response(status_code=204, body="")
    return json_response(202, {"id": form_id, "state": "Deleting", "message": "captured-lead items remain; call again"})


@router.get("/forms/<form_id>/members", summary="The leads a form captured")
def list_members(
    form_id: str,
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> Response[Any]:
    items, next_cursor = service.members(form_id, cursor, limit)
    return json_response(200, {"items": items, "next_cursor": next_cursor})


@router.post("/forms/<form_id>/submit", summary="Public: submit a form (no authentication, rate-limited)")
def submit(form_id: str) -> Response[Any]:
    event = router.current_event
    assert isinstance(event, APIGatewayProxyEvent)  # a REST API proxy event (the only kind the API receives)
    source_ip = event.request_context.identity.source_ip or "unknown"
    try:
        return json_response(200, service.submit(form_id, event.decoded_body, source_ip))
    except service.RateLimited as exc:
        return json_response(exc.status, exc.body(), {"Retry-After": str(exc.details["retry_after_seconds"])})
