"""Serve the template's API routes over HTTP, as ``sam local start-api`` does.

Each HTTP request becomes an API Gateway REST proxy event (the v1 payload
the deployed API sends) for the function whose ``Api`` event matches the
path and method; the function's proxy response becomes the HTTP response.
Like ``sam local``, IAM signatures are not checked locally.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from local.functions import FunctionError, FunctionHost
from local.template import Template

STAGE = "v1"


@dataclass
class Route:
    """One ``Api`` event: a SAM path pattern, a method and its function."""

    path: str
    method: str
    function: str
    pattern: re.Pattern[str]

    @classmethod
    def of(cls, path: str, method: str, function: str) -> Route:
        regex = ""
        for part in re.split(r"(\{[^}]+\})", path):
            if part.startswith("{") and part.endswith("+}"):
                regex += f"(?P<{part[1:-2]}>.+)"
            elif part.startswith("{"):
                regex += f"(?P<{part[1:-1]}>[^/]+)"
            else:
                regex += re.escape(part)
        return cls(path, method.upper(), function, re.compile(f"^{regex}$"))

    def specificity(self) -> tuple[int, int]:
        return (-self.path.count("+}"), len(self.path))


def routes_of(template: Template) -> list[Route]:
    """Every API route of every function, most specific first."""
    routes = [
        Route.of(event.properties["Path"], event.properties["Method"], function.logical_id)
        for function in template.functions()
        for event in function.events
        if event.type == "Api"
    ]
    return sorted(routes, key=Route.specificity, reverse=True)


def proxy_event(
    method: str, raw_path: str, headers: dict[str, str], body: bytes, route: Route, match: re.Match[str]
) -> dict[str, Any]:
    """The REST API (v1) proxy event API Gateway would send for this request."""
    parts = urlsplit(raw_path)
    query = parse_qs(parts.query, keep_blank_values=True)
    text_body: str | None
    try:
        text_body, is_base64 = (body.decode("utf-8"), False) if body else (None, False)
    except UnicodeDecodeError:
        text_body, is_base64 = base64.b64encode(body).decode(), True
    now = time.time()
    return {
        "resource": route.path,
        "path": parts.path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": match.groupdict() or None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "local",
            "resourcePath": route.path,
            "httpMethod": method,
            "extendedRequestId": str(uuid.uuid4()),
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "path": f"/{STAGE}{parts.path}",
            "accountId": "123456789012",
            "protocol": "HTTP/1.1",
            "stage": STAGE,
            "domainPrefix": "localhost",
            "requestTimeEpoch": int(now * 1000),
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "127.0.0.1", "userAgent": headers.get("User-Agent", ""), "caller": None},
            "domainName": "localhost",
            "apiId": "local",
        },
        "body": text_body,
        "isBase64Encoded": is_base64,
    }


LOCAL_PREFIX = "/_local/"


class ApiServer:
    """A threaded HTTP server in front of the in-process functions."""

    def __init__(
        self,
        template: Template,
        host: FunctionHost,
        address: str,
        port: int,
        local_routes: Callable[[str, str], tuple[int, Any] | None] | None = None,
    ) -> None:
        self.routes = routes_of(template)
        self.functions = host
        # Development-only routes under /_local/ (e.g. run a schedule now); never part of the template.
        self.local_routes = local_routes
        self.httpd = ThreadingHTTPServer((address, port), self._handler_class())
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def dispatch(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Route one request and return (status, headers, body)."""
        clean_path = urlsplit(path).path
        if clean_path.startswith(LOCAL_PREFIX) and self.local_routes is not None:
            answer = self.local_routes(method, clean_path.removeprefix(LOCAL_PREFIX))
            if answer is not None:
                status, payload = answer
                return status, {"Content-Type": "application/json"}, json.dumps(payload, default=str).encode()
        for route in self.routes:
            match = route.pattern.match(clean_path)
            if match and route.method in (method, "ANY"):
                event = proxy_event(method, path, headers, body, route, match)
                try:
                    response = self.functions.invoke(route.function, event)
                except FunctionError as exc:
                    return (
                        502,
                        {"Content-Type": "application/json"},
                        json.dumps({"message": "Internal server error", "error": exc.payload["errorMessage"]}).encode(),
                    )
                return http_response(response)
        return 403, {"Content-Type": "application/json"}, b'{"message":"Missing Authentication Token"}'

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items()}
                status, out_headers, out_body = server.dispatch(self.command, self.path, headers, body)
                self.send_response(status)
                for key, value in out_headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(out_body)))
                self.end_headers()
                self.wfile.write(out_body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _serve  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                print(f"  {self.command} {self.path} -> {args[1] if len(args) > 1 else ''}", flush=True)

        return Handler


def http_response(response: Any) -> tuple[int, dict[str, str], bytes]:
    if not isinstance(response, dict) or "statusCode" not in response:
        return 502, {"Content-Type": "application/json"}, b'{"message":"Malformed Lambda proxy response"}'
    headers = {k: str(v) for k, v in (response.get("headers") or {}).items()}
    for key, values in (response.get("multiValueHeaders") or {}).items():
        headers[key] = ", ".join(str(v) for v in values)
    body = response.get("body") or ""
    raw = base64.b64decode(body) if response.get("isBase64Encoded") else str(body).encode()
    return int(response["statusCode"]), headers, raw
