"""The flow export route: a flow's step history as CSV, inline or through S3 when large."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router

from herald.api.responses import json_response
from herald.flows import export as flow_export

router = Router()
_jobs: dict[str, flow_export.QueueSend | None] = {"send": None}


def configure(queue_send: flow_export.QueueSend) -> None:
    """Where large exports are queued for ``FlowExportFunction`` (the API function's cold start)."""
    _jobs["send"] = queue_send


@router.get("/flows/<flow_id>/export", summary="A flow's history, one CSV row per contact per step visit")
def export_flow(flow_id: str) -> Response[Any]:
    result = flow_export.export(flow_id, queue_send=_jobs["send"])
    if result.location is not None:
        location = {"bucket": result.location.bucket, "key": result.location.key, "url": result.location.url}
        status = "ready" if result.rows is not None else "building"
        return json_response(202, {"location": location, "rows": result.rows, "status": status})
    return Response(
        status_code=200,
        content_type=flow_export.CONTENT_TYPE,
        body=result.csv or "",
        headers={"Content-Disposition": f'attachment; filename="flow-{flow_id}.csv"'},
    )
