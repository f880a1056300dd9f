"""The campaign tick over 100,000 matching customers on a 1,000,000-contact table (embedded AWS).

A campaign targets customer group VIP with status Active (seed 000's "a group,
Active" row). The table holds 1,000,000 contacts; 100,000 are Active VIP
customers and 20,000 more are Inactive VIP customers (the status filter must
leave them out without reading them). The tick runs exactly as the
``CampaignTickFunction`` runs it, queueing real SQS messages, against the moto
server, counting every DynamoDB request:

1. the first tick enrols the 100,000 and queues their deliveries;
2. the same tick again: nothing new to enrol or send.

Beside it, measured in the same run, the naive tick: a filtered scan of the
whole contacts table to find the targets, and one conditional ``PutItem`` per
enrolment (timed on a 5,000-contact slice; its per-enrolment figures do not
depend on the slice size).

Figures: items read ÷ contacts targeted (target ≤ 1.1), DynamoDB write
requests per enrolment (target ≤ 0.1), enrolments per second, and new
enrolments on the second run (target 0).

    make bench BENCH=campaign_tick    (or: python -m bench campaign_tick --contacts N --targeted M)
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import boto3
from moto.dynamodb.models import dynamodb_backends

from bench.common import counting_requests, embedded_runtime, figure
from herald import clock
from herald.campaigns.tick import Tick
from herald.config import TableNames
from herald.store.queues import QueueSender
from herald.store.tables import CampaignRecord, bind_tables
from local.provision import table_names_env
from local.runtime import Runtime

BENCH = "campaign_tick"
BASELINE_SLICE = 5_000


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.campaign_tick")
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--targeted", type=int, default=100_000)
    args = parser.parse_args(argv)
    with embedded_runtime() as runtime:
        _measure(runtime, args.contacts, args.targeted)


def _measure(runtime: Runtime, contacts: int, targeted: int) -> None:
    names = TableNames.from_env(table_names_env(runtime.template))
    bind_tables(names)
    print(f"{BENCH}: loading {contacts:,} contacts ({targeted:,} Active VIP, {targeted // 5:,} Inactive VIP) ...")
    started = time.perf_counter()
    _load(runtime, names, contacts, targeted)
    print(f"{BENCH}: loaded in {time.perf_counter() - started:.0f} s", flush=True)
    _campaign()
    sqs = boto3.client("sqs")
    queue_url = sqs.get_queue_url(QueueName=runtime.template.physical_name("DeliveryQueue"))["QueueUrl"]
    queue = QueueSender(queue_url)
    results = []
    for label in ("first tick", "second tick (same audience)"):
        with counting_requests() as counter:
            started = time.perf_counter()
            report = Tick(clock.now(), queue.send).run()
            seconds = time.perf_counter() - started
        run = report.campaigns["vip-sale"]
        writes = counter.writes()
        print(
            f"{BENCH}: {label}: matching {run.matching:,}, enrolled {run.enrolled:,}, items read {run.items_read:,}, "
            f"{counter.calls[('dynamodb', 'Query')]:,} Query and {counter.calls[('dynamodb', 'Scan')]} Scan requests, "
            f"{counter.calls[('dynamodb', 'TransactWriteItems')]:,} TransactWriteItems, {writes:,} write requests in "
            f"all, {counter.calls[('sqs', 'SendMessageBatch')]:,} SQS batches; {seconds:.1f} s",
            flush=True,
        )
        results.append((run, writes, seconds))
    scan_items, scan_seconds = _naive_scan(names.contacts, contacts)
    put_writes, put_seconds = _naive_puts(names.enrolments)
    first, first_writes, first_seconds = results[0]
    second, _, second_seconds = results[1]
    figure(
        BENCH,
        "items read per contact targeted (first tick)",
        first.items_read / targeted,
        "items/contact",
        scan_items / targeted,
        "<= 1.1",
    )
    figure(
        BENCH,
        "items read per contact targeted (second tick)",
        second.items_read / targeted,
        "items/contact",
        scan_items / targeted,
        "<= 1.1",
    )
    figure(
        BENCH,
        "write requests per enrolment",
        first_writes / first.enrolled,
        "requests/enrolment",
        put_writes / BASELINE_SLICE,
        "<= 0.1",
    )
    figure(
        BENCH,
        "enrolments per second (incl. queueing)",
        first.enrolled / first_seconds,
        "enrolments/s",
        BASELINE_SLICE / put_seconds,
        "-",
    )
    figure(BENCH, "new enrolments on the second run", float(second.enrolled), "enrolments", None, "0")
    figure(BENCH, "second run seconds", second_seconds, "s", scan_seconds, "-")


def _load(runtime: Runtime, names: TableNames, contacts: int, targeted: int) -> None:
    """Put items straight into the emulator's tables: loading is not what is measured."""
    backend = dynamodb_backends[runtime.template.account][runtime.template.region]
    contacts_table = backend.get_table(names.contacts)
    memberships = backend.get_table(names.memberships)
    inactive_vip = targeted // 5
    for n in range(contacts):
        contact_id = f"c{n:07d}"
        vip = n < targeted + inactive_vip
        status = "Active" if n < targeted or (n >= targeted + inactive_vip and n % 3) else "Inactive"
        item: dict[str, Any] = {
            "contact_id": {"S": contact_id},
            "kind": {"S": "customer"},
            "status": {"S": status},
            "email": {"S": f"{contact_id}@example.com"},
            "time_zone": {"S": "Europe/Prague"},
            "created_at": {"S": "2025-01-01T00:00:00.000Z"},
            "updated_at": {"S": "2025-01-01T00:00:00.000Z"},
            "kind_status_shard": {"S": f"customer#{status}#{n % 16:02d}"},
            "version": {"N": "1"},
        }
        if vip:
            item["group_ids"] = {"SS": ["vip"]}
            memberships.put_item(
                {
                    "group_key": {"S": "cg#vip"},
                    "contact_id": {"S": contact_id},
                    "kind": {"S": "customer"},
                    "status": {"S": status},
                    "group_status": {"S": f"vip#{status}"},
                }
            )
        contacts_table.put_item(item)


def _campaign() -> None:
    now = clock.now_iso()
    spec = {
        "name": "VIP winter sale",
        "description": "25% off for Active VIP customers",
        "audience_type": "customers",
        "targeting": {"group_id": "vip", "send_to": "All", "status": "Active"},
        "kind": "ad_hoc",
        "published": True,
        "time_zone": "UTC",
        "actions": [{"type": "email", "subject": "Winter sale", "body": "25% off", "track_engagement": True}],
        "include_previously_treated": False,
        "expected_in_campaign_pct": 90.0,
    }
    CampaignRecord(
        "campaign",
        "vip-sale",
        name=spec["name"],
        spec=spec,
        state="Launched",
        live_type="campaign",
        created_at=now,
        updated_at=now,
        launched_at=now,
    ).save()


def _naive_scan(table: str, contacts: int) -> tuple[int, float]:
    """The baseline's targeting: scan everything, filter on group and status."""
    client = boto3.client("dynamodb")
    started = time.perf_counter()
    read = 0
    query: dict[str, Any] = {
        "TableName": table,
        "FilterExpression": "contains(group_ids, :g) AND #s = :s",
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": {":g": {"S": "vip"}, ":s": {"S": "Active"}},
    }
    while True:
        page = client.scan(**query)
        read += page["ScannedCount"]
        if "LastEvaluatedKey" not in page:
            break
        query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    seconds = time.perf_counter() - started
    print(f"{BENCH}: baseline scan read {read:,} items of {contacts:,} in {seconds:.1f} s", flush=True)
    return read, seconds


def _naive_puts(table: str) -> tuple[int, float]:
    """The baseline's enrolment: one conditional PutItem per contact."""
    client = boto3.client("dynamodb")
    with counting_requests() as counter:
        started = time.perf_counter()
        for n in range(BASELINE_SLICE):
            client.put_item(
                TableName=table,
                Item={
                    "program_key": {"S": "campaign#baseline"},
                    "contact_id": {"S": f"c{n:07d}"},
                    "state": {"S": "active"},
                    "occurrence": {"S": "1"},
                    "enrolled_at": {"S": clock.now_iso()},
                },
                ConditionExpression="attribute_not_exists(contact_id)",
            )
        seconds = time.perf_counter() - started
    return counter.writes(), seconds


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
