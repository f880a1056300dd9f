"""Bulk import benchmark (issue 2).

100,000 contacts imported through the API handler (POST /contacts/import,
1,000 rows a request) into the embedded AWS, beside the baseline of one
PutItem per contact through pynamodb ``save()``. Both run in the same
process against the same moto server, interleaved round by round so that
machine noise affects them alike. Figures: contacts per second (target
at least 5x the baseline) and DynamoDB write requests per contact (target at
most 1/20).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

from bench.common import counting_requests, embedded_runtime, figure
from herald.contacts.model import ContactKind
from herald.store.contacts import kind_status_partition, shard_of
from herald.store.tables import ContactRecord
from local.apigw import Route, proxy_event

BENCH = "bulk_import"
ROWS_PER_REQUEST = 1000
_ROUTE = Route.of("/{proxy+}", "ANY", "ApiFunction")


def synthetic_rows(prefix: str, count: int) -> list[dict[str, Any]]:
    """Realistic customers: email, phone, names, consent, attributes; a fifth in a group."""
    rows = []
    for i in range(count):
        row: dict[str, Any] = {
            "kind": "customer",
            "email": f"{prefix}.{i}@example.com",
            "phone": f"+4477009{i % 100000:05d}",
            "first_name": "Ada",
            "last_name": f"Customer{i}",
            "status": "Active" if i % 4 else "Inactive",
            "time_zone": "Europe/Prague",
            "attributes": {"birthday": f"19{60 + i % 40}-0{1 + i % 9}-1{i % 9}", "ltv": i % 5000},
            "consent": {"email": {"granted": True, "source": "import"}},
        }
        if i % 5 == 0:
            row["group_ids"] = ["vip"]
        rows.append(row)
    return rows


def import_request(rows: list[dict[str, Any]]) -> dict[str, Any]:
    match = _ROUTE.pattern.match("/contacts/import")
    assert match is not None
    body = json.dumps({"contacts": rows}).encode()
    return proxy_event("POST", "/contacts/import", {"Content-Type": "application/json"}, body, _ROUTE, match)


def baseline_save(rows: list[dict[str, Any]]) -> None:
    """The naive way: one pynamodb save() (one PutItem) per contact, contact item only."""
    now = "2026-11-23T00:00:00.000Z"
    for row in rows:
        contact_id = uuid.uuid4().hex
        ContactRecord(
            contact_id=contact_id,
            kind=ContactKind.CUSTOMER.value,
            status=row["status"],
            email=row["email"],
            phone=row["phone"],
            first_name=row["first_name"],
            last_name=row["last_name"],
            attributes=row["attributes"],
            consent={"email": {"granted": True, "source": "import", "at": now}},
            time_zone=row["time_zone"],
            created_at=now,
            updated_at=now,
            kind_status_shard=kind_status_partition("customer", row["status"], shard_of(contact_id)),
        ).save()


def run(contacts: int, rounds: int) -> list[dict[str, Any]]:
    with embedded_runtime() as runtime:
        runtime.invoke("ApiFunction", _group_request())
        per_round = contacts // rounds
        herald_time = baseline_time = 0.0
        herald_writes = baseline_writes = 0
        imported = 0
        with counting_requests() as counter:
            for round_number in range(rounds):
                rows = synthetic_rows(f"h{round_number}", per_round)
                counter.reset()
                started = time.perf_counter()
                for start in range(0, len(rows), ROWS_PER_REQUEST):
                    response = runtime.invoke("ApiFunction", import_request(rows[start : start + ROWS_PER_REQUEST]))
                    totals = json.loads(response["body"])["totals"]
                    imported += totals["created"] + totals["updated"]
                herald_time += time.perf_counter() - started
                herald_writes += counter.writes()

                base_rows = synthetic_rows(f"b{round_number}", per_round)
                counter.reset()
                started = time.perf_counter()
                baseline_save(base_rows)
                baseline_time += time.perf_counter() - started
                baseline_writes += counter.writes()
                print(f"  round {round_number + 1}/{rounds}: {per_round:,} contacts each way", flush=True)
        total = per_round * rounds
        if imported != total:
            raise RuntimeError(f"imported {imported} of {total} contacts")
        herald_rate, baseline_rate = total / herald_time, total / baseline_time
        return [
            figure(BENCH, "contacts_per_second", herald_rate, "contacts/s", baseline_rate, ">= 5x baseline"),
            figure(
                BENCH,
                "write_requests_per_contact",
                herald_writes / total,
                "requests/contact",
                baseline_writes / total,
                "<= 0.05 (1/20)",
            ),
        ]


def _group_request() -> dict[str, Any]:
    match = _ROUTE.pattern.match("/groups")
    assert match is not None
    body = json.dumps({"group_id": "vip", "name": "VIP"}).encode()
    return proxy_event("POST", "/groups", {"Content-Type": "application/json"}, body, _ROUTE, match)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    print(f"{BENCH}: {args.contacts:,} contacts via POST /contacts/import vs one save() per contact")
    run(args.contacts, args.rounds)


if __name__ == "__main__":
    main()
