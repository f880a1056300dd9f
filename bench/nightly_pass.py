"""The nightly pass: 20 flexi segments recalculated over 100,000 contacts in the embedded AWS.

Contacts are loaded as items (as an import would leave them), 20 flexi
segments are defined, and the run is driven exactly as the worker function
drives it (``start_run`` then ``process_part`` per scan part) against the
moto server, counting every DynamoDB request and every item written:

1. the first pass fills the 20 segments from nothing;
2. 5% of the contacts change, and the next pass writes only the difference;
3. an immediate re-run with nothing changed.

Figures: items read per contact (target 1.0 whatever the number of
segments), membership items written per membership change (target 1.0), and
writes on the re-run (target 0); beside them, write requests per change and
contacts per second.

    make bench BENCH=nightly_pass    (or: python -m bench nightly_pass --contacts N)
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from typing import Any

import boto3

from bench.common import counting_requests, embedded_runtime, figure
from herald import clock
from herald.config import TableNames
from herald.segments import recalculation
from herald.store import transactions
from herald.store.tables import SegmentRecord, bind_tables
from local.provision import table_names_env
from local.runtime import Runtime

BENCH = "nightly_pass"
SEGMENTS = 20
PARTS = 4
CITIES = ["Prague", "Brno", "Ostrava", "Plzen", "Liberec", "Olomouc", "Vienna", "Berlin"]
TIERS = ["bronze", "silver", "gold", "platinum"]


def contact_item(n: int, rng: random.Random, spend: int | None = None) -> dict[str, Any]:
    return {
        "contact_id": {"S": f"c{n:07d}"},
        "kind": {"S": "customer"},
        "status": {"S": "Active" if rng.random() < 0.8 else "Inactive"},
        "email": {"S": f"c{n}@example.com"},
        "time_zone": {"S": "Europe/Prague"},
        "created_at": {"S": "2025-01-01T00:00:00.000Z"},
        "updated_at": {"S": "2025-01-01T00:00:00.000Z"},
        "kind_status_shard": {"S": f"customer#Active#{n % 16:02d}"},
        "version": {"N": "1"},
        "bounce": {"M": {"hard": {"BOOL": False}, "soft_count": {"N": "0"}}},
        "consent": {"M": {"email": {"M": {"granted": {"BOOL": rng.random() < 0.7}, "source": {"S": "import"}}}}},
        "attributes": {
            "M": {
                "city": {"S": rng.choice(CITIES)},
                "tier": {"S": rng.choice(TIERS)},
                "spend": {"N": str(spend if spend is not None else rng.randrange(5000))},
                "age": {"N": str(rng.randrange(18, 90))},
            }
        },
    }


def segment_rules() -> list[dict[str, Any]]:
    rules = []
    for i in range(SEGMENTS):
        rules.append(
            {
                "all": [
                    {"field": "status", "op": "equals", "value": "Active"},
                    {"field": "attributes.city", "op": "in", "value": [CITIES[i % 8], CITIES[(i + 3) % 8]]},
                    {"field": "attributes.spend", "op": "greater", "value": 250 * (i % 10)},
                    {"field": "attributes.tier", "op": "not_equals", "value": TIERS[i % 4]},
                    {"field": "consent.email", "op": "equals", "value": True},
                ]
            }
        )
    return rules


class WriteTally:
    """Items written per table through Herald's transactions (membership writes, contact updates, counters)."""

    def __init__(self) -> None:
        self.items: Counter[str] = Counter()
        self._original = transactions.add_operation

    def __enter__(self) -> WriteTally:
        def tallied(transaction: Any, op: transactions.Operation) -> None:
            self.items[op.model.Meta.table_name] += 1
            self._original(transaction, op)

        transactions.add_operation = tallied
        return self

    def __exit__(self, *exc: object) -> None:
        transactions.add_operation = self._original


def run_pass(reason: str) -> dict[str, Any]:
    queued: list[dict[str, Any]] = []
    run = recalculation.start_run(reason, queued.extend, PARTS)
    started = time.perf_counter()
    rereads = 0
    for message in queued:
        rereads += recalculation.process_part(message["run_id"], message["part"]).rereads
    elapsed = time.perf_counter() - started
    status = recalculation.run_status(run.entity_id)
    status["seconds"] = elapsed
    status["rereads"] = rereads
    return status


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.nightly_pass")
    parser.add_argument("--contacts", type=int, default=100_000)
    args = parser.parse_args(argv)
    with embedded_runtime() as runtime:
        _measure(runtime, args.contacts)


def _measure(runtime: Runtime, contacts: int) -> None:
    names = TableNames.from_env(table_names_env(runtime.template))
    bind_tables(names)
    dynamodb = boto3.client("dynamodb")
    rng = random.Random(7)
    print(f"{BENCH}: loading {contacts:,} contacts ...", flush=True)
    requests = []
    for n in range(contacts):
        requests.append({"PutRequest": {"Item": contact_item(n, rng)}})
        if len(requests) == 25:
            dynamodb.batch_write_item(RequestItems={names.contacts: requests})
            requests = []
    if requests:
        dynamodb.batch_write_item(RequestItems={names.contacts: requests})
    now = clock.now_iso()
    for i, rule in enumerate(segment_rules()):
        SegmentRecord(
            entity_type="segment",
            entity_id=f"flexi-{i:02d}",
            name=f"Flexi {i}",
            rule=rule,
            flexi=True,
            state="Ready",
            member_count=0,
            live_type="flexi",
            created_at=now,
            updated_at=now,
        ).save()

    figures = []
    for label, prepare in (
        ("first pass (fills 20 segments)", lambda: None),
        ("after 5% of contacts changed", lambda: _change_some(dynamodb, names.contacts, contacts)),
        ("immediate re-run", lambda: None),
    ):
        prepare()
        with counting_requests() as counter, WriteTally() as tally:
            status = run_pass(label)
        pages = counter.calls[("dynamodb", "Scan")]
        items_read = status["scanned"] + status["rereads"]
        membership_writes = tally.items[names.memberships]
        write_requests = counter.calls[("dynamodb", "TransactWriteItems")]
        bookkeeping = counter.writes() - write_requests
        print(
            f"{BENCH}: {label}: scanned {status['scanned']:,} contacts in {pages} Scan pages "
            f"(+{status['rereads']} contacts re-read after a conflict), {status['changes']:,} membership changes, "
            f"{membership_writes:,} membership items written, {tally.items[names.contacts]:,} contact updates, "
            f"{tally.items[names.catalog]:,} counter updates in {write_requests:,} transactions; "
            f"{bookkeeping} run/checkpoint writes; {status['seconds']:.1f} s"
        )
        figures.append((label, status, items_read, membership_writes, write_requests, sum(tally.items.values())))

    rerun = figures[2]
    for label, _status, items_read, *_ in figures:
        figure(BENCH, f"items read per contact ({label})", items_read / contacts, "items/contact", None, "1.0")
    for label, status, _, membership_writes, write_requests, _ in figures[:2]:
        changes = status["changes"]
        figure(
            BENCH, f"membership writes per change ({label})", membership_writes / changes, "writes/change", None, "1.0"
        )
        figure(BENCH, f"write requests per change ({label})", write_requests / changes, "requests/change", None, "-")
        figure(BENCH, f"contacts per second ({label})", contacts / status["seconds"], "contacts/s", None, "-")
    figure(BENCH, "membership writes on an immediate re-run", float(rerun[5]), "items written", None, "0")


def _change_some(dynamodb: Any, table: str, contacts: int) -> None:
    """5% of contacts move: their spend jumps or drops, so they enter or leave segments."""
    rng = random.Random(11)
    for n in rng.sample(range(contacts), contacts // 20):
        dynamodb.update_item(
            TableName=table,
            Key={"contact_id": {"S": f"c{n:07d}"}},
            UpdateExpression="SET attributes.spend = :s, version = version + :one",
            ExpressionAttributeValues={":s": {"N": str(rng.choice([0, 4999]))}, ":one": {"N": "1"}},
        )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
