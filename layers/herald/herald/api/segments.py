"""Segments, audiences and badges routes, recalculation runs, and contact memberships.

The three types share one set of routes (``/segments``, ``/audiences``,
``/badges``); type-specific ones (preview, online recalculation, duplicate,
audit trail) are added beside them.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Header, Query

from herald.api.responses import etag, json_response, parse_if_match
from herald.contacts.model import Strict
from herald.segments import recalculation, service
from herald.segments.model import (
    DefinitionIn,
    DefinitionPatch,
    DuplicateIn,
    ExplainIn,
    GroupType,
    ManualChange,
    PreviewIn,
)
from herald.segments.service import Runner

router = Router()
_runner: dict[str, Runner] = {}


def configure(runner: Runner) -> None:
    """Give the routes the recalculation queue."""
    _runner["runner"] = runner


def runner() -> Runner:
    return _runner["runner"]


class OnlineRecalculation(Strict):
    """The contact whose membership of the segment is recalculated now."""

    contact_id: str


class RunIn(Strict):
    """Start a recalculation of every flexi segment and badge now."""

    reason: str = "on demand"


def _routes(group_type: GroupType) -> None:
    base = f"/{group_type.plural}"
    name = group_type.value

    @router.post(base, summary=f"Create a {name} (a rule fills it at once)", operation_id=f"create_{name}")
    def create(body: DefinitionIn) -> Response[Any]:
        definition = service.create(group_type, body, runner())
        headers = {**etag(definition.version), "Location": f"{base}/{definition.id}"}
        return json_response(201, definition, headers)

    @router.get(base, summary=f"List {group_type.plural}", operation_id=f"list_{name}s")
    def list_all(
        cursor: Annotated[str | None, Query()] = None, limit: Annotated[int, Query(ge=1, le=100)] = 50
    ) -> Response[Any]:
        items, next_cursor = service.list_definitions(group_type, cursor, limit)
        return json_response(200, {"items": [d.model_dump(mode="json") for d in items], "next_cursor": next_cursor})

    @router.get(f"{base}/<group_id>", summary=f"Get a {name} with its member count", operation_id=f"get_{name}")
    def get_one(group_id: str) -> Response[Any]:
        definition = service.get(group_type, group_id)
        return json_response(200, definition, etag(definition.version))

    @router.patch(f"{base}/<group_id>", summary=f"Change a {name}", operation_id=f"update_{name}")
    def update(group_id: str, body: DefinitionPatch, if_match: Annotated[str | None, Header()] = None) -> Response[Any]:
        definition = service.update(group_type, group_id, body, runner(), parse_if_match(if_match))
        return json_response(200, definition, etag(definition.version))

    @router.delete(f"{base}/<group_id>", summary=f"Delete a {name} and its memberships", operation_id=f"delete_{name}")
    def delete(group_id: str) -> Response[Any]:
        if service.delete(group_type, group_id):
            return Response(status_code=204, body="")
        return json_response(202, {"id": group_id, "state": "Deleting", "message": "members remain; call again"})

    @router.get(f"{base}/<group_id>/members", summary=f"Members of a {name}", operation_id=f"members_of_{name}")
    def list_members(
        group_id: str, cursor: Annotated[str | None, Query()] = None, limit: Annotated[int, Query(ge=1, le=100)] = 50
    ) -> Response[Any]:
        items, next_cursor = service.members(group_type, group_id, cursor, limit)
        return json_response(200, {"items": items, "next_cursor": next_cursor})

    @router.post(f"{base}/<group_id>/members", summary=f"Add contacts to a {name}", operation_id=f"add_to_{name}")
    def add(group_id: str, body: ManualChange) -> Response[Any]:
        return json_response(200, service.change_members(group_type, group_id, body, add=True))

    @router.post(
        f"{base}/<group_id>/members/remove",
        summary=f"Remove contacts from a {name}",
        operation_id=f"remove_from_{name}",
    )
    def remove(group_id: str, body: ManualChange) -> Response[Any]:
        return json_response(200, service.change_members(group_type, group_id, body, add=False))

    @router.post(
        f"{base}/<group_id>/explain", summary=f"Why a contact is or is not in a {name}", operation_id=f"explain_{name}"
    )
    def explain(group_id: str, body: ExplainIn) -> Response[Any]:
        return json_response(200, service.explain(group_type, group_id, body.contact_id))


for _type in GroupType:
    _routes(_type)


@router.post("/segments/preview", summary="Size and sample of an unsaved rule")
def preview(body: PreviewIn) -> Response[Any]:
    return json_response(200, service.preview(body))


@router.post("/segments/<group_id>/recalculate", summary="Online recalculation of a segment for one contact")
def recalculate(group_id: str, body: OnlineRecalculation) -> Response[Any]:
    return json_response(200, service.recalculate_contact(group_id, body.contact_id))


@router.post("/audiences/<group_id>/duplicate", summary="Copy an audience with its members")
def duplicate(group_id: str, body: DuplicateIn) -> Response[Any]:
    definition = service.duplicate(group_id, body.name, actor="api")
    return json_response(201, definition, {"Location": f"/audiences/{definition.id}"})


@router.get("/audiences/<group_id>/audit", summary="Who changed an audience by hand, when and why")
def audit(group_id: str) -> Response[Any]:
    return json_response(200, {"items": service.audit_trail(group_id)})


@router.get("/contacts/<contact_id>/memberships", summary="A contact's groups, segments, audiences, badges")
def memberships(contact_id: str) -> Response[Any]:
    return json_response(200, service.memberships(contact_id))


@router.post("/recalculations", summary="Recalculate every flexi segment and badge now")
def start_recalculation(body: RunIn) -> Response[Any]:
    run = recalculation.start_run(body.reason, runner().enqueue, runner().parts)
    return json_response(202, recalculation.run_status(run.entity_id), {"Location": f"/recalculations/{run.entity_id}"})


@router.get("/recalculations/<run_id>", summary="Progress of a recalculation run")
def get_recalculation(run_id: str) -> Response[Any]:
    return json_response(200, recalculation.run_status(run_id))
