"""Flow export through the API: one CSV row per contact per step visit, message fate joined, S3 when large."""

from __future__ import annotations

import csv
import io
import json
from typing import Any
from urllib.parse import urlparse

import boto3
import pytest

from herald.flows import export as flow_export
from herald.store import files, messages
from herald.store import flows as flow_store
from herald.store.tables import FLOW_ENTITY, FlowRecord, MessageRecord, StepLogRecord
from local.apigw import http_response
from tests.harness import Herald, api_event

T0 = "2026-03-02T09:00:00.000Z"
PDF_KEY = "flows/f1/pdf/root1/0003-letter/c1.pdf"


def flow(flow_id: str) -> None:
    FlowRecord(
        FLOW_ENTITY,
        flow_id,
        name=f"Flow {flow_id}",
        status="active",
        current_version=1,
        spec={"settings": {}, "graph": {}},
        created_at=T0,
        updated_at=T0,
    ).save()


def log(
    flow_id: str, key: str, step_id: str, step_type: str, at: str, outcomes: dict[str, list[str]], run: str = "1"
) -> None:
    StepLogRecord(
        flow_store.log_key(flow_id),
        key,
        step_id=step_id,
        step_type=step_type,
        at=at,
        occurrence_of={c: run for c in outcomes},
        outcomes=outcomes,
    ).save()


def message(flow_id: str, contact_id: str, occurrence: str, status: str, at: str, reason: str | None = None) -> str:
    mid = messages.message_id(flow_id, contact_id, occurrence, 0)
    MessageRecord(
        mid,
        contact_id=contact_id,
        program_key=f"campaign#{flow_id}",
        campaign_id=flow_id,
        occurrence=occurrence,
        action_index=0,
        channel="email",
        status=status,
        reason=reason,
        priority=5,
        queued_at=T0,
        created_at=at,
    ).save()
    return mid


def get_export(h: Herald, flow_id: str) -> tuple[int, dict[str, str], str]:
    status, headers, body = http_response(h.host.invoke("ApiFunction", api_event("GET", f"/flows/{flow_id}/export")))
    return status, headers, body.decode()


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def journey(flow_id: str = "f1") -> dict[str, str]:
    """c1 and c2 get an email (c1's sent, c2's suppressed), wait, c1 gets a PDF, then a condition; c1 runs twice."""
    flow(flow_id)
    sent = message(flow_id, "c1", "flow:1:root1:1", "sent", "2026-03-02T09:00:05.000Z")
    suppressed = message(flow_id, "c2", "flow:1:root1:1", "suppressed", "2026-03-02T09:00:06.000Z", "no_consent")
    rerun = message(flow_id, "c1", "flow:2:root2:1", "deferred", "2026-03-09T09:00:01.000Z", "quiet_hours")
    # Written out of order: the export sorts by contact, then time.
    log(
        flow_id,
        "root1#0004#00000",
        "vip",
        "condition",
        "2026-03-03T09:00:00.000Z",
        {"c1": ["yes", "", ""], "c2": ["no", "", ""]},
    )
    log(
        flow_id,
        "root1#0001#00000",
        "hello",
        "email",
        T0,
        {"c2": ["queued", "", suppressed], "c1": ["queued", "", sent]},
    )
    log(
        flow_id,
        "root2#0001#00000",
        "hello",
        "email",
        "2026-03-09T09:00:00.000Z",
        {"c1": ["queued", "", rerun]},
        run="2",
    )
    log(
        flow_id,
        "root1#0002#00000",
        "wait",
        "delay",
        T0,
        {"c1": ["waited", "2026-03-03T09:00:00.000Z", ""], "c2": ["waited", "2026-03-03T09:00:00.000Z", ""]},
    )
    log(
        flow_id,
        "root1#0003#00000",
        "letter",
        "export_pdf",
        "2026-03-03T09:00:00.000Z",
        {"c1": ["exported", "", PDF_KEY], "c2": ["failed", "render_error: boom", ""]},
    )
    return {"sent": sent, "suppressed": suppressed, "rerun": rerun}


def test_export_is_one_row_per_contact_per_step_visit(herald: Herald) -> None:
    ids = journey()
    status, headers, text = get_export(herald, "f1")
    assert status == 200, text
    assert headers["Content-Type"].startswith("text/csv")
    assert headers["Content-Disposition"] == 'attachment; filename="flow-f1.csv"'
    assert text.splitlines()[0] == ",".join(flow_export.COLUMNS)
    rows = rows_of(text)
    visits = [(r["contact_id"], r["run"], r["step_id"], r["outcome"]) for r in rows]
    assert visits == [
        ("c1", "1", "hello", "queued"),
        ("c1", "1", "wait", "waited"),  # same instant as hello: step order breaks the tie
        ("c1", "1", "letter", "exported"),
        ("c1", "1", "vip", "yes"),
        ("c1", "2", "hello", "queued"),
        ("c2", "1", "hello", "queued"),
        ("c2", "1", "wait", "waited"),
        ("c2", "1", "letter", "failed"),
        ("c2", "1", "vip", "no"),
    ]
    by = {(r["contact_id"], r["run"], r["step_id"]): r for r in rows}
    first = by[("c1", "1", "hello")]
    assert first == {
        "contact_id": "c1",
        "run": "1",
        "step_id": "hello",
        "step_type": "email",
        "at": T0,
        "outcome": "queued",
        "reason": "",
        "message_id": ids["sent"],
        "message_status": "sent",
        "message_reason": "",
        "message_updated_at": "2026-03-02T09:00:05.000Z",
        "document": "",
    }
    assert (by[("c2", "1", "hello")]["message_status"], by[("c2", "1", "hello")]["message_reason"]) == (
        "suppressed",
        "no_consent",
    )
    assert by[("c1", "2", "hello")]["message_status"] == "deferred"
    letter = by[("c1", "1", "letter")]
    assert (letter["document"], letter["message_id"], letter["message_status"]) == (PDF_KEY, "", "")
    assert by[("c2", "1", "letter")]["reason"] == "render_error: boom"
    assert by[("c1", "1", "wait")]["reason"] == "2026-03-03T09:00:00.000Z"


def test_a_flow_without_history_exports_the_header_only(herald: Herald) -> None:
    flow("quiet")
    status, _, text = get_export(herald, "quiet")
    assert status == 200
    assert text == ",".join(flow_export.COLUMNS) + "\n"


def test_unknown_flow_is_404(herald: Herald) -> None:
    reply = herald.call("GET", "/flows/nope/export")
    assert reply.status == 404
    assert reply.body["error"] == "not_found"
    assert "nope" in reply.body["message"]


def test_large_export_is_written_to_s3_with_a_presigned_url(herald: Herald) -> None:
    flow("big")
    # 6000 visits: two pages of 3000 contacts, over the API's inline limit of 5000.
    for page in range(2):
        outcomes = {f"c{page * 3000 + i:05d}": ["skipped", "not_qualified", ""] for i in range(3000)}
        log("big", f"root#0001#{page:05d}", "hello", "email", T0, outcomes)
    reply = herald.call("GET", "/flows/big/export")
    assert reply.status == 202, reply.body
    location = reply.body["location"]
    assert (reply.body["status"], reply.body["rows"]) == ("building", None)  # a job builds it
    s3 = boto3.client("s3")
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=location["bucket"], Key=location["key"])
    assert herald.drain("FlowExportFunction") == 1
    assert location["bucket"] == herald.template.physical_name("FlowFilesBucket")
    assert location["key"].startswith("exports/flows/big/") and location["key"].endswith(".csv")
    url = urlparse(location["url"])
    assert url.path.endswith(location["key"])
    assert "X-Amz-Expires=3600" in url.query
    stored = boto3.client("s3").get_object(Bucket=location["bucket"], Key=location["key"])
    assert stored["ContentType"].startswith("text/csv")
    assert stored["ServerSideEncryption"] == "AES256"
    rows = rows_of(stored["Body"].read().decode())
    assert len(rows) == 6000
    assert [r["contact_id"] for r in rows] == sorted(r["contact_id"] for r in rows)
    assert rows[0]["reason"] == "not_qualified"


def test_small_limit_sends_the_same_csv_to_s3(herald: Herald) -> None:
    journey()
    files.configure(herald.template.physical_name("FlowFilesBucket"))
    inline = flow_export.export("f1")
    assert inline.csv is not None and inline.location is None and inline.rows == 9
    large = flow_export.export("f1", inline_limit=2)
    assert large.csv is None and large.location is not None and large.rows == 9
    body = boto3.client("s3").get_object(Bucket=large.location.bucket, Key=large.location.key)["Body"].read()
    assert body.decode() == inline.csv


def test_message_statuses_are_read_100_ids_at_a_time(herald: Herald, monkeypatch: pytest.MonkeyPatch) -> None:
    flow("wide")
    outcomes = {}
    for i in range(250):
        contact = f"c{i:03d}"
        outcomes[contact] = ["queued", "", message("wide", contact, "flow:1:r:1", "sent", T0)]
    log("wide", "r#0001#00000", "hello", "email", T0, outcomes)
    sizes: list[int] = []
    real = messages.get_many

    def spy(ids: Any) -> Any:
        ids = list(ids)
        sizes.append(len(ids))
        return real(ids)

    monkeypatch.setattr(messages, "get_many", spy)
    result = flow_export.export("wide")
    assert sizes == [100, 100, 50]
    assert result.csv is not None
    assert {r["message_status"] for r in rows_of(result.csv)} == {"sent"}
    assert result.rows == 250


def test_a_malformed_or_foreign_export_job_is_dropped_not_retried(herald: Herald) -> None:
    flow("big")
    sqs = boto3.client("sqs")
    url = herald.queue_url("FlowExportQueue")
    for body in ("not json", json.dumps({"flow_id": "big"}), json.dumps({"flow_id": "big", "key": "flows/x.pdf"})):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    assert herald.drain("FlowExportFunction") == 3
    assert (
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"][
            "ApproximateNumberOfMessagesNotVisible"
        ]
        == "0"
    )
    listed = boto3.client("s3").list_objects_v2(Bucket=herald.template.physical_name("FlowFilesBucket"))
    assert listed.get("KeyCount", 0) == 0
