"""The embedded runtime: moto server + template resources + in-process functions.

``Runtime.start()`` starts moto in server mode on 127.0.0.1, creates every
resource of the template in it, points this process's AWS clients at it,
and starts the API server, the SQS pollers, the schedules and the Step
Functions bridge. ``stop()`` undoes it all (and snapshots the tables).
"""

from __future__ import annotations

import logging
import os
import socket
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_string
from pathlib import Path
from typing import Any

from moto.server import ThreadedMotoServer
from moto.ses.models import ses_backends

from local import moto_patches, snapshot, stepfunctions
from local.apigw import ApiServer
from local.event_sources import Scheduler, SqsPoller, StreamPoller, schedules_of, sqs_sources, stream_sources
from local.functions import FunctionError, FunctionHost
from local.provision import Provisioned, provision
from local.template import Template

LOCAL_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_SESSION_TOKEN": "local",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_DEV": "false",
    # Webhooks may go to http:// and private addresses, so a receiver on this machine works.
    "HERALD_WEBHOOK_ALLOW_PRIVATE": "1",
}


def time_scale_environment(scale: float) -> dict[str, str]:
    """Flow delays, entry windows and the cohort start grace, all shortened ``scale`` times."""
    scale = max(1.0, scale)
    return {
        "HERALD_FLOW_TIME_SCALE": str(scale),
        "HERALD_FLOW_COHORT_SECONDS": str(max(1, round(60 / scale))),
        # At least a second: an in-process entry still finishes before its cohort starts.
        "HERALD_FLOW_START_GRACE_SECONDS": str(max(1.0, 90 / scale)),
    }


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RuntimeOptions:
    """How to run: ports, the template, where to keep data, what to start."""

    template_path: Path
    api_port: int = 3000
    aws_port: int = 0
    data_file: Path | None = None
    start_pollers: bool = True
    start_schedules: bool = True
    quiet_metrics: bool = True
    # Flow delays pass this many times faster (86400: a day in a second), for demos and tests.
    time_scale: float = 1.0


@dataclass
class Runtime:
    """One embedded Herald: start it, use it, stop it."""

    options: RuntimeOptions
    template: Template = field(init=False)
    host: FunctionHost = field(init=False)
    provisioned: Provisioned = field(init=False)
    api: ApiServer | None = None
    pollers: list[SqsPoller] = field(default_factory=list)
    stream_pollers: list[StreamPoller] = field(default_factory=list)
    scheduler: Scheduler | None = None
    _moto: ThreadedMotoServer | None = None
    _previous_env: dict[str, str | None] = field(default_factory=dict)
    restored_items: int = 0

    @property
    def aws_url(self) -> str:
        return f"http://127.0.0.1:{self.options.aws_port}"

    def start(self) -> None:
        """Start moto, create resources, load data, start serving."""
        if not self.options.aws_port:
            self.options.aws_port = free_port()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        moto_patches.apply()
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.options.aws_port, verbose=False)
        self._moto.start()
        # moto's backends are process-wide: start from exactly the template (and snapshot).
        urllib.request.urlopen(urllib.request.Request(f"{self.aws_url}/moto-api/reset", method="POST"), timeout=10)
        self._set_environment()
        self.template = Template(self.options.template_path)
        self.host = FunctionHost(self.template.functions())
        stepfunctions.enable(self.host)
        self.provisioned = provision(self.template)
        if self.options.data_file:
            self.restored_items = snapshot.load(self.options.data_file, self.template.region)
        self.api = ApiServer(self.template, self.host, "127.0.0.1", self.options.api_port, self._local_route)
        self._point_links_here(self.api.url)
        self.api.start()
        if self.options.start_pollers:
            for source in sqs_sources(self.template, self.provisioned.queues):
                poller = SqsPoller(source, self.host, self.template.region)
                poller.start()
                self.pollers.append(poller)
            for stream in stream_sources(self.template, self.provisioned.queues):
                stream_poller = StreamPoller(stream, self.host, self.template.region)
                stream_poller.start()
                self.stream_pollers.append(stream_poller)
        self.scheduler = Scheduler(schedules_of(self.template), self.host, self.template)
        if self.options.start_schedules:
            self.scheduler.start()

    def _point_links_here(self, url: str) -> None:
        """Links in email (``PUBLIC_API_URL``) lead to this runtime's API, not to a deployed stage."""
        for function in self.host.functions.values():
            if "PUBLIC_API_URL" in function.spec.environment:
                function.spec.environment["PUBLIC_API_URL"] = url

    def outbox(self) -> list[dict[str, Any]]:
        """The emails the embedded SES accepted, newest first: to, subject and the raw MIME text."""
        backend = ses_backends[self.template.account][self.template.region]
        mails = []
        for sent in reversed(backend.sent_messages):
            raw = getattr(sent, "raw_data", None)
            if raw is None:  # a Simple send: no MIME to show
                mails.append({"id": sent.id, "to": sent.destinations, "subject": sent.subject, "raw": None})
                continue
            parsed = message_from_string(raw)
            mails.append({"id": sent.id, "to": parsed.get("To"), "subject": parsed.get("Subject"), "raw": raw})
        return mails

    def _local_route(self, method: str, path: str) -> tuple[int, Any] | None:
        """Development-only routes.

        ``POST /_local/schedules/<FunctionLogicalId>`` fires that function's schedule now
        (what "run now" in the EventBridge console does; the walk-through uses it so a
        reader need not wait for the next tick). ``GET /_local/outbox`` lists the emails
        the embedded SES captured, newest first.
        """
        if method == "GET" and path.strip("/") == "outbox":
            return 200, {"items": self.outbox()}
        parts = path.strip("/").split("/")
        if method != "POST" or len(parts) != 2 or parts[0] != "schedules" or self.scheduler is None:
            return None
        matching = [s for s in self.scheduler.schedules if s.function == parts[1]]
        if not matching:
            return 404, {"message": f"no schedule fires {parts[1]}"}
        try:
            return 200, self.scheduler.fire(matching[0], datetime.now(UTC))
        except FunctionError as exc:
            return 502, {"message": "the function failed", "error": exc.payload.get("errorMessage")}

    def invoke(self, function: str, event: Any) -> Any:
        """Invoke one function in-process against the embedded AWS."""
        return self.host.invoke(function, event)

    def stop(self) -> int:
        """Stop everything; returns the number of items snapshotted."""
        saved = 0
        for poller in self.pollers:
            poller.stop()
        for stream_poller in self.stream_pollers:
            stream_poller.stop()
        if self.scheduler:
            self.scheduler.stop()
        if self.api:
            self.api.stop()
        if self.options.data_file and self._moto:
            saved = snapshot.save(self.options.data_file, self.provisioned.tables, self.template.region)
        stepfunctions.disable()
        if self._moto:
            self._moto.stop()
        self._restore_environment()
        return saved

    def banner(self) -> str:
        """What runs and where."""
        lines = [
            "Herald embedded runtime",
            f"  API            {self.api.url if self.api else '-'}  (OpenAPI: /openapi.json)",
            f"  embedded AWS   {self.aws_url}  (moto; set AWS_ENDPOINT_URL to use it from the CLI)",
            f"  functions      {', '.join(sorted(self.host.functions))}",
            f"  tables         {len(self.provisioned.tables)}: {', '.join(self.provisioned.tables)}",
            f"  queues         {', '.join(self.provisioned.queues) or '-'}",
            f"  topics         {', '.join(self.provisioned.topics) or '-'}",
            f"  state machines {', '.join(self.provisioned.state_machines) or '-'}",
            f"  schedules      {', '.join(self.provisioned.schedules) or '-'}",
            f"  buckets        {', '.join(self.provisioned.buckets) or '-'}",
        ]
        if self.options.data_file:
            lines.append(f"  data           {self.options.data_file} ({self.restored_items} items restored)")
        lines.append("Press Ctrl-C to stop.")
        return "\n".join(lines)

    def _set_environment(self) -> None:
        variables = {**LOCAL_ENVIRONMENT, "AWS_ENDPOINT_URL": self.aws_url, "MOTO_PORT": str(self.options.aws_port)}
        if self.options.quiet_metrics:
            variables["POWERTOOLS_METRICS_DISABLED"] = "true"
        variables.update(time_scale_environment(self.options.time_scale))
        for key, value in variables.items():
            self._previous_env[key] = os.environ.get(key)
            os.environ[key] = value

    def _restore_environment(self) -> None:
        for key, value in self._previous_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
