"""Customer-group routes: CRUD, members, bulk assignment, forced deletion."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Header, Query
from pydantic import Field

from herald.api.responses import etag, json_response, parse_if_match
from herald.contacts import service as contacts
from herald.contacts.model import ContactStatus, Strict
from herald.groups import service
from herald.groups.model import GroupIn, GroupPatch
from herald.groups.service import DeletionStarter

router = Router()
_dependencies: dict[str, DeletionStarter] = {}


def configure(start_group_deletion: DeletionStarter) -> None:
    """Give the routes what they need from outside (the deletion starter)."""
    _dependencies["start_group_deletion"] = start_group_deletion


class MemberIds(Strict):
    """Contacts to assign to, or unassign from, a group (at most 1,000)."""

    contact_ids: list[Annotated[str, Field(min_length=1, max_length=64)]]


@router.post("/groups", summary="Create a customer group")
def create_group(body: GroupIn) -> Response[Any]:
    group = service.create_group(body)
    return json_response(201, group, {**etag(group.version), "Location": f"/groups/{group.group_id}"})


@router.get("/groups", summary="List customer groups")
def list_groups(
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> Response[Any]:
    page = service.list_groups(cursor, limit)
    return json_response(
        200, {"items": [g.model_dump(mode="json") for g in page.items], "next_cursor": page.next_cursor}
    )


@router.get("/groups/<group_id>", summary="Get a customer group")
def get_group(group_id: str) -> Response[Any]:
    group = service.get_group(group_id)
    return json_response(200, group, etag(group.version))


@router.patch("/groups/<group_id>", summary="Rename a group or change its description")
def update_group(group_id: str, body: GroupPatch, if_match: Annotated[str | None, Header()] = None) -> Response[Any]:
    group = service.update_group(group_id, body, parse_if_match(if_match))
    return json_response(200, group, etag(group.version))


@router.delete("/groups/<group_id>", summary="Delete a group (409 while in use unless force=true)")
def delete_group(
    group_id: str,
    force: Annotated[bool, Query()] = False,
    reason: Annotated[str | None, Query(max_length=500)] = None,
) -> Response[Any]:
    result = service.delete_group(group_id, force, _dependencies["start_group_deletion"], reason)
    if result.state == "deleted":
        return Response(status_code=204)
    return json_response(
        202,
        {"group_id": group_id, "state": "Deleting", "execution": result.execution, "detached": result.detached or []},
    )


@router.get("/groups/<group_id>/members", summary="List the customers of a group")
def list_members(
    group_id: str,
    status: Annotated[ContactStatus | None, Query()] = None,
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> Response[Any]:
    service.get_group(group_id)
    page = contacts.list_contacts(None, status, group_id, cursor, limit)
    return json_response(
        200, {"items": [c.model_dump(mode="json") for c in page.items], "next_cursor": page.next_cursor}
    )


@router.post("/groups/<group_id>/members", summary="Assign many customers to a group")
def assign_members(group_id: str, body: MemberIds) -> Response[Any]:
    results = contacts.bulk_membership(group_id, body.contact_ids, assign=True)
    return json_response(200, {"results": results})


@router.post("/groups/<group_id>/members/remove", summary="Unassign many customers from a group")
def unassign_members(group_id: str, body: MemberIds) -> Response[Any]:
    results = contacts.bulk_membership(group_id, body.contact_ids, assign=False)
    return json_response(200, {"results": results})
