"""Build the API resolver: routes, validation, OpenAPI, and error mapping.

Every error leaves as JSON: 400 malformed, 404 unknown id, 409 conflict,
413 too large, 422 field-level validation (each naming the field).
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.metrics import MetricUnit

from herald import __version__
from herald.api import (
    activity,
    campaigns,
    contacts,
    flow_export,
    flows,
    forms,
    groups,
    messages,
    policies,
    segments,
    unsubscribe,
)
from herald.api.responses import json_response
from herald.campaigns.service import Services
from herald.errors import HeraldError, located_problems
from herald.groups.service import DeletionStarter
from herald.observability import logger, metrics
from herald.segments.service import Runner

# Bodies larger than this are refused before parsing (Lambda's payload limit is 6 MB).
MAX_BODY_BYTES = 5 * 1024 * 1024


def build_api(
    start_group_deletion: DeletionStarter, runner: Runner, campaign_services: Services | None = None
) -> APIGatewayRestResolver:
    """The API resolver with every route; dependencies are passed in."""
    app = APIGatewayRestResolver(enable_validation=True)
    groups.configure(start_group_deletion)
    segments.configure(runner)
    campaigns.configure(campaign_services or Services())
    app.include_router(contacts.router)
    app.include_router(groups.router)
    app.include_router(activity.router)
    app.include_router(segments.router)
    app.include_router(forms.router)
    app.include_router(campaigns.router)
    app.include_router(flows.router)
    app.include_router(policies.router)
    app.include_router(messages.router)
    app.include_router(unsubscribe.router)
    app.include_router(flow_export.router)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> Response[Any]:
        return Response(
            status_code=200,
            content_type="application/json",
            body=app.get_openapi_json_schema(title="Herald API", version=__version__),
        )

    @app.exception_handler(HeraldError)
    def herald_error(exc: HeraldError) -> Response[Any]:
        return json_response(exc.status, exc.body())

    @app.exception_handler(RequestValidationError)
    def validation_error(exc: RequestValidationError) -> Response[Any]:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return json_response(400, {"error": "bad_request", "message": "request body is not valid JSON"})
        fields = [problem for e in errors for problem in _field_errors(e)]
        summary = "; ".join(f"{f['field']}: {f['problem']}" for f in fields)
        return json_response(422, {"error": "validation_failed", "message": summary, "errors": fields})

    @app.not_found
    def not_found(_: Exception) -> Response[Any]:
        return json_response(404, {"error": "not_found", "message": "no such route"})

    @app.exception_handler(Exception)
    def unexpected(exc: Exception) -> Response[Any]:
        logger.exception("unhandled error")
        metrics.add_metric(name="UnhandledError", unit=MetricUnit.Count, value=1)
        return json_response(500, {"error": "internal_error", "message": "unexpected error; see the logs"})

    return app


def serve(resolver: APIGatewayRestResolver, event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Handle one proxy event: refuse oversized bodies unread, read the rest as JSON."""
    body = event.get("body") or ""
    if len(body) > MAX_BODY_BYTES:
        metrics.add_metric(name="RequestTooLarge", unit=MetricUnit.Count, value=1)
        return {
            "statusCode": 413,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps(
                {"error": "payload_too_large", "message": f"request body exceeds {MAX_BODY_BYTES} bytes"}
            ),
            "isBase64Encoded": False,
        }
    return resolver.resolve(as_json_request(event), context)


def as_json_request(event: dict[str, Any]) -> dict[str, Any]:
    """Read every request body as JSON, whatever Content-Type the client sent.

    The API speaks JSON only; clients such as curl default to form encoding,
    which would otherwise be parsed as a form and produce baffling errors.
    """
    if not event.get("body"):
        return event
    headers = {k: v for k, v in (event.get("headers") or {}).items() if k.lower() != "content-type"}
    headers["content-type"] = "application/json"
    multi = {k: v for k, v in (event.get("multiValueHeaders") or {}).items() if k.lower() != "content-type"}
    multi["content-type"] = ["application/json"]
    return {**event, "headers": headers, "multiValueHeaders": multi}


def _field_errors(error: dict[str, Any]) -> list[dict[str, str]]:
    location = [str(part) for part in error.get("loc", ())]
    if location and location[0] in ("body", "query", "path", "header"):
        location = location[1:] or location
    if error.get("type") == "extra_forbidden":
        return [{"field": ".".join(location) or "body", "problem": "unknown field"}]
    problem = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return located_problems(".".join(location) or "body", problem)
