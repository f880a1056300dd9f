"""Contact-policy routes: caps, quiet hours and expiry per scope (CRUD with If-Match/ETag)."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Header, Query

from herald.api.responses import etag, json_response, parse_if_match
from herald.policy import service
from herald.policy.model import PolicyIn, PolicyPatch

router = Router()
BASE = "/contact-policies"


@router.post(BASE, summary="Create a contact policy")
def create_policy(body: PolicyIn) -> Response[Any]:
    policy = service.create(body)
    return json_response(201, policy, {**etag(policy.version), "Location": f"{BASE}/{policy.policy_id}"})


@router.get(BASE, summary="List contact policies")
def list_policies(
    cursor: Annotated[str | None, Query()] = None, limit: Annotated[int, Query(ge=1, le=100)] = 50
) -> Response[Any]:
    items, next_cursor = service.list_policies(cursor, limit)
    return json_response(200, {"items": [p.model_dump(mode="json") for p in items], "next_cursor": next_cursor})


@router.get(f"{BASE}/<policy_id>", summary="Get a contact policy")
def get_policy(policy_id: str) -> Response[Any]:
    policy = service.get(policy_id)
    return json_response(200, policy, etag(policy.version))


@router.patch(f"{BASE}/<policy_id>", summary="Change a contact policy")
def update_policy(policy_id: str, body: PolicyPatch, if_match: Annotated[str | None, Header()] = None) -> Response[Any]:
    policy = service.update(policy_id, body, parse_if_match(if_match))
    return json_response(200, policy, etag(policy.version))


@router.delete(f"{BASE}/<policy_id>", summary="Delete a contact policy")
def delete_policy(policy_id: str, if_match: Annotated[str | None, Header()] = None) -> Response[Any]:
    service.delete(policy_id, parse_if_match(if_match))
    return Response(status_code=204, body="")
