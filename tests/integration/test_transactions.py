"""Packed transactions report each unit's fate; one refused unit never sinks its neighbours."""

from __future__ import annotations

from herald.store.tables import ContactKeyRecord
from herald.store.transactions import INVALID_PREFIX, Operation, Unit, commit_units
from tests.harness import Herald


def key_unit(tag: int, key: str, contact_id: str) -> Unit:
    record = ContactKeyRecord(key=key, contact_id=contact_id)
    return Unit(tag, [Operation("put", record, f"key:{key}", ContactKeyRecord.key.does_not_exist())])


def test_a_unit_dynamodb_refuses_is_reported_and_the_rest_commit(herald: Herald) -> None:
    units = [
        key_unit(0, "a", "c0"),
        key_unit(1, "b", "x" * 500_000),  # an item over DynamoDB's 400 KB limit
        key_unit(2, "c", "c2"),
    ]
    report = commit_units(units)
    assert set(report.failures) == {1}
    assert report.failures[1].labels[0].startswith(INVALID_PREFIX)
    assert sorted(r.key for r in ContactKeyRecord.scan()) == ["a", "c"]


def test_a_failed_condition_is_reported_for_its_unit_only(herald: Herald) -> None:
    commit_units([key_unit(0, "taken", "c9")])
    report = commit_units([key_unit(0, "free", "c0"), key_unit(1, "taken", "c1")])
    assert list(report.failures) == [1]
    assert report.failures[1].labels == ["key:taken"]
    assert ContactKeyRecord.get("free").contact_id == "c0"
    assert ContactKeyRecord.get("taken").contact_id == "c9"
