"""A flow's history as CSV: one row per contact per step visit, with its message's fate.

The rows come from the step logs (``flowlog#<flow>``: what each step did
for each contact), sorted by contact, then time. A ``queued`` step names its
message; that message's current status is read from the messages table, 100
ids to a BatchGetItem, so a flow of 100k visits is a bounded number of
requests. An ``exported`` step's message slot is the S3 key of its PDF: it
goes to the ``document`` column.

Small exports are returned as text. Larger ones are built by
``FlowExportFunction`` from a queued job (the API answers at once with where
the file will be): it writes the CSV to the flow files bucket (``exports/...``,
expired after 30 days), handed out as a presigned URL valid one hour. The API
only counts visits (the step logs, no message reads) to decide which.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from herald import clock
from herald.errors import NotFound
from herald.store import files, messages
from herald.store import flows as flow_store
from herald.store.tables import MessageRecord, StepLogRecord

COLUMNS = (
    "contact_id",
    "run",
    "step_id",
    "step_type",
    "at",
    "outcome",
    "reason",
    "message_id",
    "message_status",
    "message_reason",
    "message_updated_at",
    "document",
)
INLINE_LIMIT = 5000
BATCH = 100  # BatchGetItem's limit
QUEUED = "queued"
EXPORTED = "exported"
CONTENT_TYPE = "text/csv; charset=utf-8"


@dataclass(frozen=True)
class Location:
    bucket: str
    key: str
    url: str


@dataclass(frozen=True)
class ExportResult:
    """Either ``csv`` (small exports) or ``location`` (written to S3, or being written by the export
    job when ``rows`` is None); ``rows`` excludes the header."""

    rows: int | None
    csv: str | None = None
    location: Location | None = None


QueueSend = Callable[[list[dict[str, Any]]], None]


@dataclass
class _Visit:
    contact_id: str
    run: str
    step_id: str
    step_type: str
    at: str
    order: str  # the log's key: cohort, step sequence, page (ties at the same instant)
    outcome: str
    reason: str
    message_id: str
    document: str


def export(flow_id: str, inline_limit: int = INLINE_LIMIT, queue_send: QueueSend | None = None) -> ExportResult:
    """The flow's export; 404 (``NotFound``) if there is no such flow.

    Up to ``inline_limit`` visits it is returned as CSV. Above, with ``queue_send`` (the API),
    a job is queued for ``FlowExportFunction`` and the answer says where the file will be;
    without it (the job itself, tests) the file is written to S3 here.
    """
    if flow_store.get(flow_id) is None:
        raise NotFound(f"flow {flow_id} does not exist", id=flow_id)
    counted = sum(1 for _ in islice(_visits(flow_store.logs(flow_id)), inline_limit + 1))
    if counted <= inline_limit:
        visits = _sorted(flow_store.logs(flow_id))
        return ExportResult(rows=len(visits), csv=_csv(visits))
    key = export_key(flow_id)
    if queue_send is not None:
        queue_send([{"flow_id": flow_id, "key": key}])
        return ExportResult(rows=None, location=Location(files.bucket(), key, files.url(key)))
    rows = write_export(flow_id, key)
    return ExportResult(rows=rows, location=Location(files.bucket(), key, files.url(key)))


def write_export(flow_id: str, key: str) -> int:
    """Build the whole export and store it at ``key`` (the export job); returns its rows."""
    visits = _sorted(flow_store.logs(flow_id))
    files.put(key, _csv(visits).encode("utf-8"), CONTENT_TYPE)
    return len(visits)


def _sorted(logs: Iterable[StepLogRecord]) -> list[_Visit]:
    return sorted(_visits(logs), key=lambda v: (v.contact_id, v.at, v.order))


def export_key(flow_id: str) -> str:
    """``exports/flows/<flow>/<UTC timestamp>.csv`` (the lifecycle rule expires ``exports/``)."""
    return f"exports/flows/{flow_id}/{clock.now().strftime('%Y%m%dT%H%M%S%fZ')}.csv"


def _visits(logs: Iterable[StepLogRecord]) -> Iterator[_Visit]:
    for log in logs:
        runs = log.occurrence_of or {}
        for contact_id, outcome in (log.outcomes or {}).items():
            name, reason, slot = [*outcome, "", "", ""][:3]
            exported = name == EXPORTED
            yield _Visit(
                contact_id=contact_id,
                run=str(runs.get(contact_id, "")),
                step_id=log.step_id,
                step_type=log.step_type,
                at=log.at,
                order=log.entity_id,
                outcome=str(name or ""),
                reason=str(reason or ""),
                message_id="" if exported else str(slot or ""),
                document=str(slot or "") if exported else "",
            )


def _messages(visits: list[_Visit]) -> Iterator[tuple[str, MessageRecord]]:
    """The messages the visits queued, read 100 ids at a time."""
    ids = list(dict.fromkeys(v.message_id for v in visits if v.outcome == QUEUED and v.message_id))
    for start in range(0, len(ids), BATCH):
        yield from messages.get_many(ids[start : start + BATCH]).items()


def _csv(visits: list[_Visit]) -> str:
    # Only the three columns the export shows are kept per message, not the records.
    found = {mid: (m.status, m.reason or "", m.created_at) for mid, m in _messages(visits)}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for v in visits:
        status, reason, updated = found.get(v.message_id, ("", "", ""))
        writer.writerow(
            (
                v.contact_id,
                v.run,
                v.step_id,
                v.step_type,
                v.at,
                v.outcome,
                v.reason,
                v.message_id,
                status,
                reason,
                updated,
                v.document,
            )
        )
    return out.getvalue()
