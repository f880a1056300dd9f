"""Contacts routes: CRUD, listing, bulk import, group assignment."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Header, Query
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, Field

from herald.api.responses import etag, json_response, parse_if_match
from herald.contacts import service
from herald.contacts.model import ContactIn, ContactKind, ContactPatch, ContactStatus, is_valid_id
from herald.errors import ValidationFailed
from herald.observability import metrics
from herald.store import groups as group_store

router = Router()


class ContactImport(BaseModel):
    """A bulk import: up to 1,000 rows, each a contact as POST /contacts takes it."""

    # Rows are validated one by one, so a bad row is that row's rejection, not the file's.
    contacts: list[Any] = Field(description="rows to create or update (at most 1,000)")


@router.post("/contacts", summary="Create a contact")
def create_contact(body: ContactIn) -> Response[Any]:
    contact = service.create_contact(body)
    metrics.add_metric(name="ContactCreated", unit=MetricUnit.Count, value=1)
    headers = {**etag(contact.version), "Location": f"/contacts/{contact.contact_id}"}
    return json_response(201, contact, headers)


@router.get("/contacts", summary="List contacts by kind, status and group")
def list_contacts(
    kind: Annotated[ContactKind | None, Query()] = None,
    status: Annotated[ContactStatus | None, Query()] = None,
    group_id: Annotated[str | None, Query()] = None,
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> Response[Any]:
    if group_id is not None and (not is_valid_id(group_id) or group_store.get(group_id) is None):
        raise ValidationFailed.one("group_id", f"unknown group id {group_id}")
    page = service.list_contacts(kind, status, group_id, cursor, limit)
    return json_response(
        200, {"items": [c.model_dump(mode="json") for c in page.items], "next_cursor": page.next_cursor}
    )


@router.post("/contacts/import", summary="Create or update up to 1,000 contacts")
def import_contacts(body: ContactImport) -> Response[Any]:
    report = service.import_contacts(body.contacts)
    totals = report.totals()
    metrics.add_metric(name="ContactsImported", unit=MetricUnit.Count, value=totals["created"] + totals["updated"])
    metrics.add_metric(name="ImportRowsRejected", unit=MetricUnit.Count, value=totals["rejected"])
    return json_response(200, {"totals": totals, "rows": [row.as_dict() for row in report.rows]})


@router.get("/contacts/<contact_id>", summary="Get a contact")
def get_contact(contact_id: str) -> Response[Any]:
    contact = service.get_contact(contact_id)
    return json_response(200, contact, etag(contact.version))


@router.patch("/contacts/<contact_id>", summary="Update part of a contact")
def update_contact(
    contact_id: str, body: ContactPatch, if_match: Annotated[str | None, Header()] = None
) -> Response[Any]:
    contact = service.update_contact(contact_id, body, parse_if_match(if_match))
    return json_response(200, contact, etag(contact.version))


@router.delete("/contacts/<contact_id>", summary="Delete a contact")
def delete_contact(contact_id: str, if_match: Annotated[str | None, Header()] = None) -> Response[Any]:
    service.delete_contact(contact_id, parse_if_match(if_match))
    return Response(status_code=204)


@router.put("/contacts/<contact_id>/groups/<group_id>", summary="Assign a customer to a group")
def assign_group(contact_id: str, group_id: str, if_match: Annotated[str | None, Header()] = None) -> Response[Any]:
    contact = service.assign_group(contact_id, group_id, parse_if_match(if_match))
    return json_response(200, contact, etag(contact.version))


@router.delete("/contacts/<contact_id>/groups/<group_id>", summary="Unassign a customer from a group")
def unassign_group(contact_id: str, group_id: str, if_match: Annotated[str | None, Header()] = None) -> Response[Any]:
    contact = service.unassign_group(contact_id, group_id, parse_if_match(if_match))
    return json_response(200, contact, etag(contact.version))
