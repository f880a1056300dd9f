"""Activity events recorded once, and rules over activity, responses, dates and time zones."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from herald import clock
from tests.harness import Herald

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fixed_clock() -> None:
    clock.set_clock(lambda: NOW)


def contact(h: Herald, cid: str, **extra: Any) -> None:
    body = {"contact_id": cid, "kind": "customer", "email": f"{cid}@example.com", **extra}
    assert h.call("POST", "/contacts", body).status == 201


def members(h: Herald, rule: dict[str, Any]) -> list[str]:
    reply = h.call("POST", "/segments/preview", {"rule": rule, "sample": 50})
    assert reply.status == 200, reply.body
    return sorted(reply.body["sample"])


def test_an_event_is_recorded_once_however_often_it_is_sent(herald: Herald) -> None:
    contact(herald, "c1")
    event = {
        "event_id": "order-1001",
        "type": "purchase",
        "occurred_at": "2026-11-20T10:00:00Z",
        "properties": {"amount": 250},
    }
    first = herald.call("POST", "/contacts/c1/events", event)
    assert first.status == 201 and first.body["duplicate"] is False
    again = herald.call("POST", "/contacts/c1/events", event)
    assert again.status == 200 and again.body["duplicate"] is True
    stored = herald.call("GET", "/contacts/c1").body
    assert stored["activity"] == {
        "purchase": [[int(datetime(2026, 11, 20, 10, tzinfo=UTC).timestamp()), {"amount": 250}]]
    }
    assert [e["event_id"] for e in herald.call("GET", "/contacts/c1/events").body["items"]] == ["order-1001"]


def test_bad_events_are_refused_with_the_field_named(herald: Herald) -> None:
    contact(herald, "c1")
    reply = herald.call("POST", "/contacts/c1/events", {"event_id": "e1", "type": "Purchase!"})
    assert reply.status == 422 and reply.body["errors"][0]["field"] == "type"
    reply = herald.call(
        "POST", "/contacts/c1/events", {"event_id": "e1", "type": "purchase", "properties": {"items": [1]}}
    )
    assert reply.status == 422 and reply.body["errors"][0]["field"].startswith("properties")
    reply = herald.call("POST", "/contacts/c1/events", {"event_id": "e1", "type": "campaign.opened"})
    assert reply.status == 422 and "campaign_id" in reply.body["errors"][0]["problem"]
    numbered = {"event_id": "e1", "type": "campaign.opened", "properties": {"campaign_id": 123}}
    assert herald.call("POST", "/contacts/c1/events", numbered).status == 422
    assert herald.call("POST", "/contacts/nobody/events", {"event_id": "e1", "type": "login"}).status == 404


def test_bulk_events_report_each_row(herald: Herald) -> None:
    contact(herald, "c1")
    rows = [
        {"contact_id": "c1", "event_id": "l1", "type": "login"},
        {"contact_id": "c1", "event_id": "l1", "type": "login"},
        {"contact_id": "ghost", "event_id": "l2", "type": "login"},
        {"contact_id": "c1", "event_id": "x", "type": ""},
    ]
    reply = herald.call("POST", "/events", {"events": rows})
    assert reply.status == 200
    assert [r["outcome"] for r in reply.body["results"]] == ["recorded", "duplicate", "not_found", "invalid"]


def test_activity_conditions_count_events_with_property_filters(herald: Herald) -> None:
    for cid in ("big", "small", "old"):
        contact(herald, cid)
    purchases = {
        "big": [("2026-11-20", 250), ("2026-11-01", 120)],
        "small": [("2026-11-21", 40), ("2026-11-22", 150)],
        "old": [("2026-08-01", 500), ("2026-08-02", 500)],
    }
    for cid, rows in purchases.items():
        for n, (day, amount) in enumerate(rows):
            event = {
                "event_id": f"{cid}-{n}",
                "type": "purchase",
                "occurred_at": f"{day}T09:00:00Z",
                "properties": {"amount": amount},
            }
            assert herald.call("POST", f"/contacts/{cid}/events", event).status == 201
    two_big = {
        "activity": "purchase",
        "at_least": 2,
        "within_days": 30,
        "where": [{"property": "amount", "op": "greater", "value": 100}],
    }
    assert members(herald, two_big) == ["big"]
    any_recent = {"activity": "purchase", "at_least": 1, "within_days": 30}
    assert members(herald, any_recent) == ["big", "small"]
    none_recent = {"activity": "purchase", "at_most": 0, "within_days": 30}
    assert members(herald, none_recent) == ["old"]


def test_campaign_response_conditions(herald: Herald) -> None:
    contact(herald, "opener")
    contact(herald, "receiver")
    for cid, kind in [("opener", "received"), ("opener", "opened"), ("receiver", "received")]:
        event = {"event_id": f"{cid}-{kind}", "type": f"campaign.{kind}", "properties": {"campaign_id": "spring"}}
        assert herald.call("POST", f"/contacts/{cid}/events", event).status == 201
    assert members(herald, {"campaign": "spring", "response": "received"}) == ["opener", "receiver"]
    assert members(herald, {"campaign": "spring", "response": "opened"}) == ["opener"]
    assert members(herald, {"campaign": "spring", "response": "clicked"}) == []


def test_anniversaries_are_today_in_the_contacts_own_time_zone(herald: Herald) -> None:
    # 23:30 UTC on 23 November is already 24 November in Auckland.
    clock.set_clock(lambda: datetime(2026, 11, 23, 23, 30, tzinfo=UTC))
    contact(herald, "london", time_zone="Europe/London", attributes={"birthday": "1990-11-23"})
    contact(herald, "auckland", time_zone="Pacific/Auckland", attributes={"birthday": "1990-11-23"})
    contact(herald, "auckland24", time_zone="Pacific/Auckland", attributes={"birthday": "1985-11-24"})
    rule = {"field": "attributes.birthday", "op": "anniversary_today"}
    assert members(herald, rule) == ["auckland24", "london"]


def test_leap_day_birthdays_are_celebrated_on_28_february(herald: Herald) -> None:
    clock.set_clock(lambda: datetime(2027, 2, 28, 12, 0, tzinfo=UTC))
    contact(herald, "leap", attributes={"birthday": "2000-02-29"})
    contact(herald, "march", attributes={"birthday": "2000-03-01"})
    assert members(herald, {"field": "attributes.birthday", "op": "anniversary_today"}) == ["leap"]


def test_relative_dates_kind_status_group_consent_and_bounce(herald: Herald) -> None:
    assert herald.call("POST", "/groups", {"group_id": "vip", "name": "VIP"}).status == 201
    contact(
        herald,
        "fresh",
        attributes={"last_order": "2026-11-20"},
        group_ids=["vip"],
        consent={"sms": {"granted": True, "source": "app"}},
    )
    contact(herald, "stale", attributes={"last_order": "2026-01-02"}, status="Inactive", bounce={"soft_count": 5})
    assert members(herald, {"field": "attributes.last_order", "op": "within_last_days", "value": 7}) == ["fresh"]
    assert members(herald, {"field": "attributes.last_order", "op": "more_than_days_ago", "value": 90}) == ["stale"]
    assert members(herald, {"field": "attributes.last_order", "op": "before", "value": "2026-06-01"}) == ["stale"]
    assert members(herald, {"field": "status", "op": "equals", "value": "Inactive"}) == ["stale"]
    assert members(herald, {"field": "group", "op": "contains", "value": "vip"}) == ["fresh"]
    assert members(herald, {"field": "consent.sms", "op": "equals", "value": True}) == ["fresh"]
    assert members(herald, {"field": "bounce.soft_count", "op": "greater_or_equal", "value": 5}) == ["stale"]
    assert members(herald, {"not": {"field": "kind", "op": "in", "value": ["lead"]}}) == ["fresh", "stale"]
