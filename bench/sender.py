"""The sender and SES event ingestion (issue 5), in-process against the embedded AWS.

Sender: queued deliveries (one email each, to contacts with consent) go
through ``SenderFunction``'s handler exactly as Lambda calls it, in SQS batches
of 10, sending through the embedded SES; every DynamoDB request is counted.
Beside it, measured in the same run and interleaved round by round (the
machine is noisy), the baseline: the same handler given one delivery per
invocation with a fresh sender, so contact, consent, suppressions, campaign
and policies are read afresh for every message.

Figures: messages sent per second (target at least 5 times the baseline) and DynamoDB
requests per message (target ≤ 2); then SES events (a Delivery and an Open
per sent message, SNS-wrapped as SES publishes them) through
``EventIngestionFunction`` in batches of 10: events per second and DynamoDB
writes per event.

    make bench BENCH=sender    (or: python -m bench sender --messages N)
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

from bench.bulk_import import import_request, synthetic_rows
from bench.common import RequestCounter, counting_requests, embedded_runtime, figure
from herald import clock
from herald.config import TableNames
from herald.store.tables import CampaignRecord, ContactRecord, MessageRecord, bind_tables
from local.provision import table_names_env
from local.runtime import Runtime

BENCH = "sender"
BATCH = 10
ROUNDS = 10
CAMPAIGN = "bench-offer"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.sender")
    parser.add_argument("--messages", type=int, default=1_000, help="messages per side (Herald and baseline)")
    args = parser.parse_args(argv)
    with embedded_runtime() as runtime:
        bind_tables(TableNames.from_env(table_names_env(runtime.template)))
        _measure(runtime, args.messages)


def _measure(runtime: Runtime, per_side: int) -> None:
    contact_ids = _load_contacts(runtime, 2 * per_side)
    _campaign()
    herald_ids, baseline_ids = contact_ids[:per_side], contact_ids[per_side:]
    herald, baseline = _Side(), _Side()
    step = max(BATCH, per_side // ROUNDS // BATCH * BATCH)
    for start in range(0, per_side, step):
        herald.run(runtime, [herald_ids[start : start + step]], batch=BATCH)
        baseline.run(runtime, [baseline_ids[start : start + step]], batch=1)
    print(
        f"{BENCH}: Herald sent {herald.messages:,} in {herald.seconds:.1f} s with {herald.requests:,} DynamoDB "
        f"requests ({herald.detail()}); baseline sent {baseline.messages:,} in {baseline.seconds:.1f} s with "
        f"{baseline.requests:,} ({baseline.detail()})",
        flush=True,
    )
    figure(
        BENCH,
        "messages sent per second, batches of 10",
        herald.rate(),
        "msg/s",
        baseline.rate(),
        "≥ 5 times the one-delivery-per-invocation baseline",
    )
    figure(
        BENCH,
        "DynamoDB requests per message, batches of 10",
        herald.requests / herald.messages,
        "requests/msg",
        baseline.requests / baseline.messages,
        "≤ 2",
    )
    _ingestion(runtime, herald_ids)


class _Side:
    """One way of sending, accumulated over the rounds."""

    def __init__(self) -> None:
        self.messages = 0
        self.seconds = 0.0
        self.requests = 0
        self.calls: RequestCounter = RequestCounter()

    def run(self, runtime: Runtime, groups: list[list[str]], batch: int) -> None:
        ids = [contact_id for group in groups for contact_id in group]
        events = [_sqs_event(ids[i : i + batch]) for i in range(0, len(ids), batch)]
        with counting_requests() as counter:
            self.seconds += _invoke_all(runtime, "SenderFunction", events)
        self.messages += len(ids)
        self.requests += sum(n for (service, _), n in counter.calls.items() if service == "dynamodb")
        self.calls.calls.update(counter.calls)

    def rate(self) -> float:
        return self.messages / self.seconds

    def detail(self) -> str:
        ops = sorted(((op, n) for (service, op), n in self.calls.calls.items() if service == "dynamodb"), key=str)
        return ", ".join(f"{op} {n:,}" for op, n in ops)


def _invoke_all(runtime: Runtime, function: str, events: list[dict[str, Any]]) -> float:
    """Invoke the function on each SQS event in turn; the seconds it took (any item failure stops the run)."""
    started = time.perf_counter()
    for event in events:
        answer = runtime.invoke(function, event)
        if answer.get("batchItemFailures"):
            raise RuntimeError(f"{function}: records failed: {answer}")
    return time.perf_counter() - started


def _load_contacts(runtime: Runtime, count: int) -> list[str]:
    rows = synthetic_rows("sender", count)
    for row in rows:
        row.pop("group_ids", None)  # no groups here: every row is a contact
    for start in range(0, count, 1000):
        answer = runtime.invoke("ApiFunction", import_request(rows[start : start + 1000]))
        assert answer["statusCode"] == 200, answer
    ids = sorted(r.contact_id for r in ContactRecord.scan(attributes_to_get=["contact_id"]))
    assert len(ids) >= count, f"expected {count} contacts, found {len(ids)}"
    return ids[:count]


def _campaign() -> None:
    now = clock.now_iso()
    action = {"type": "email", "subject": "Hello {{ contact.first_name }}", "body": "<p>An offer for you.</p>"}
    CampaignRecord(
        "campaign",
        CAMPAIGN,
        name="Benchmark offer",
        spec={"name": "Benchmark offer", "kind": "ad_hoc", "actions": [action]},
        state="Launched",
        live_type="campaign",
        created_at=now,
        updated_at=now,
    ).save()


def _sqs_event(contact_ids: list[str]) -> dict[str, Any]:
    queued_at = clock.now_iso()
    bodies = [
        {
            "contact_id": contact_id,
            "sends": [{"campaign_id": CAMPAIGN, "occurrence": "1", "priority": 10, "queued_at": queued_at}],
        }
        for contact_id in contact_ids
    ]
    return {"Records": [_sqs_record(json.dumps(body)) for body in bodies]}


def _sqs_record(body: str) -> dict[str, Any]:
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": "bench",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:bench",
        "awsRegion": "us-east-1",
    }


# --------------------------------------------------------------------------
# SES event ingestion
# --------------------------------------------------------------------------


def _ingestion(runtime: Runtime, contact_ids: list[str]) -> None:
    sent = [m for m in MessageRecord.scan() if m.campaign_id == CAMPAIGN and m.contact_id in set(contact_ids)]
    bodies = [json.dumps(_sns(_ses_event(m, kind))) for m in sent for kind in ("Delivery", "Open")]
    events = [{"Records": [_sqs_record(b) for b in bodies[i : i + BATCH]]} for i in range(0, len(bodies), BATCH)]
    with counting_requests() as counter:
        seconds = _invoke_all(runtime, "EventIngestionFunction", events)
    writes = counter.writes()
    requests = sum(n for (service, _), n in counter.calls.items() if service == "dynamodb")
    print(
        f"{BENCH}: ingested {len(bodies):,} SES events (Delivery and Open) in {seconds:.1f} s: {writes:,} write and "
        f"{requests:,} DynamoDB requests in all",
        flush=True,
    )
    figure(BENCH, "SES events ingested per second, batches of 10", len(bodies) / seconds, "events/s", None, "—")
    figure(
        BENCH,
        "DynamoDB write requests per SES event",
        writes / len(bodies),
        "writes/event",
        None,
        "each event applied once, in one transaction",
    )


def _ses_event(message: MessageRecord, kind: str) -> dict[str, Any]:
    at = clock.now_iso()
    detail: dict[str, Any] = (
        {"timestamp": at, "processingTimeMillis": 500, "recipients": ["x@example.com"], "smtpResponse": "250 OK"}
        if kind == "Delivery"
        else {"timestamp": at, "ipAddress": "192.0.2.1", "userAgent": "Mozilla/5.0"}
    )
    tags = {
        "campaign_id": [message.campaign_id],
        "contact_id": [message.contact_id],
        "message_id": [message.message_id],
    }
    mail = {"timestamp": at, "messageId": message.provider_message_id, "destination": ["x@example.com"], "tags": tags}
    return {"eventType": kind, kind.lower(): detail, "mail": mail}


def _sns(event: dict[str, Any]) -> dict[str, Any]:
    return {"Type": "Notification", "MessageId": str(uuid.uuid4()), "Message": json.dumps(event)}
