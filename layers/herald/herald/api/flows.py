"""Flow routes: definitions and their versions, activate/pause/resume/stop, step previews, per-step statistics."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Header, Query

from herald.api.responses import etag, json_response, parse_if_match
from herald.flows import review, service
from herald.flows.model import Flow, FlowIn, FlowPatch, PreviewIn

router = Router()


def _flow(status: int, flow: Flow, headers: dict[str, str] | None = None) -> Response[Any]:
    return json_response(status, flow, {**etag(flow.etag_version), **(headers or {})})


@router.post("/flows", summary="Create a flow (Draft, version 1)")
def create(body: FlowIn) -> Response[Any]:
    flow = service.create(body)
    return _flow(201, flow, {"Location": f"/flows/{flow.id}"})


@router.get("/flows", summary="List flows")
def list_all(
    cursor: Annotated[str | None, Query()] = None, limit: Annotated[int, Query(ge=1, le=100)] = 50
) -> Response[Any]:
    items, next_cursor = service.list_flows(cursor, limit)
    return json_response(200, {"items": [f.model_dump(mode="json") for f in items], "next_cursor": next_cursor})


@router.get("/flows/<flow_id>", summary="Get a flow: its current version's settings and steps")
def get_one(flow_id: str) -> Response[Any]:
    return _flow(200, service.get(flow_id))


@router.patch("/flows/<flow_id>", summary="Change a flow; every saved change is a new version")
def update(flow_id: str, body: FlowPatch, if_match: Annotated[str | None, Header()] = None) -> Response[Any]:
    return _flow(200, service.update(flow_id, body, parse_if_match(if_match)))


@router.delete("/flows/<flow_id>", summary="Delete a Draft or Stopped flow and its versions")
def delete(flow_id: str) -> Response[Any]:
    service.delete(flow_id)
    return Response(status_code=204, body="")


@router.get("/flows/<flow_id>/versions", summary="Every saved version of the flow, oldest first")
def versions(flow_id: str) -> Response[Any]:
    return json_response(200, {"items": service.versions(flow_id)})


@router.post("/flows/<flow_id>/activate", summary="Activate a Draft flow; current segment members enter")
def activate(flow_id: str) -> Response[Any]:
    return _flow(200, service.activate(flow_id))


@router.post("/flows/<flow_id>/pause", summary="Pause an active flow")
def pause(flow_id: str) -> Response[Any]:
    return _flow(200, service.pause(flow_id))


@router.post("/flows/<flow_id>/resume", summary="Resume a paused flow")
def resume(flow_id: str) -> Response[Any]:
    return _flow(200, service.resume(flow_id))


@router.post("/flows/<flow_id>/stop", summary="Stop a flow for good (final)")
def stop(flow_id: str) -> Response[Any]:
    return _flow(200, service.stop(flow_id))


@router.get("/flows/<flow_id>/stats", summary="Counters per step, in the current graph's order")
def stats(flow_id: str) -> Response[Any]:
    return json_response(200, service.stats(flow_id))


@router.post(
    "/flows/<flow_id>/steps/<step_id>/preview",
    summary="A step for one contact: rendered content, a condition's branch, cross-campaign qualification",
)
def preview(flow_id: str, step_id: str, body: PreviewIn) -> Response[Any]:
    return json_response(200, review.preview(flow_id, step_id, body.contact_id))
