"""Contact policies through the API: CRUD with ETags, 422s naming the field, and what the engine loads."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time
from typing import Any

import pytest

from herald import clock
from herald.policy import service
from herald.policy.engine import Cap, ContactPolicy, QuietHours
from tests.harness import Herald

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fixed_clock_and_cold_cache() -> Iterator[None]:
    clock.set_clock(lambda: NOW)
    service.clear_cache()
    yield
    service.clear_cache()


PROMO = {
    "policy_id": "promo-cap",
    "name": "Promotions",
    "scope": "category:promo",
    "caps": [
        {"channel": "email", "max_messages": 1, "window_hours": 24},
        {"channel": "any", "max_messages": 3, "window_hours": 168},
    ],
    "quiet_hours": {"start": "21:00", "end": "08:00"},
    "expire_after_hours": 48,
}


def create(h: Herald, body: dict[str, Any]) -> dict[str, Any]:
    reply = h.call("POST", "/contact-policies", body)
    assert reply.status == 201, reply.body
    return dict(reply.body)


def test_a_policy_is_created_read_listed_changed_and_deleted(herald: Herald) -> None:
    reply = herald.call("POST", "/contact-policies", PROMO)
    assert reply.status == 201, reply.body
    assert reply.headers["Location"] == "/contact-policies/promo-cap" and reply.etag == '"1"'
    assert reply.body == {
        **PROMO,
        "description": None,
        "created_at": "2026-05-04T10:00:00.000Z",
        "updated_at": "2026-05-04T10:00:00.000Z",
        "version": 1,
    }
    got = herald.call("GET", "/contact-policies/promo-cap")
    assert got.status == 200 and got.body == reply.body and got.etag == '"1"'

    create(herald, {"name": "Everything", "caps": [{"channel": "sms", "max_messages": 2, "window_hours": 24}]})
    listing = herald.call("GET", "/contact-policies").body
    assert len(listing["items"]) == 2 and listing["next_cursor"] is None
    generated = next(p for p in listing["items"] if p["name"] == "Everything")
    assert generated["scope"] == "all" and generated["expire_after_hours"] == 72 and generated["quiet_hours"] is None

    changed = herald.call(
        "PATCH",
        "/contact-policies/promo-cap",
        {"quiet_hours": None, "expire_after_hours": 12, "description": "fewer promos"},
        {"If-Match": '"1"'},
    )
    assert changed.status == 200, changed.body
    assert changed.etag == '"2"'
    assert changed.body["quiet_hours"] is None and changed.body["expire_after_hours"] == 12
    assert changed.body["caps"] == PROMO["caps"] and changed.body["scope"] == "category:promo"
    assert changed.body["description"] == "fewer promos"
    assert herald.call("GET", "/contact-policies/promo-cap").body == changed.body

    assert herald.call("DELETE", "/contact-policies/promo-cap").status == 204
    assert herald.call("GET", "/contact-policies/promo-cap").status == 404
    assert herald.call("DELETE", "/contact-policies/promo-cap").status == 404
    assert [p["name"] for p in herald.call("GET", "/contact-policies").body["items"]] == ["Everything"]


def test_stale_if_match_and_duplicate_ids_are_conflicts(herald: Herald) -> None:
    create(herald, PROMO)
    assert herald.call("PATCH", "/contact-policies/promo-cap", {"name": "v2"}, {"If-Match": '"1"'}).status == 200
    stale = herald.call("PATCH", "/contact-policies/promo-cap", {"name": "v3"}, {"If-Match": '"1"'})
    assert stale.status == 409 and stale.body["error"] == "stale_version" and stale.body["current_version"] == 2
    assert herald.call("DELETE", "/contact-policies/promo-cap", headers={"If-Match": '"1"'}).status == 409
    assert herald.call("PATCH", "/contact-policies/promo-cap", {"name": "v3"}, {"If-Match": "nonsense"}).status == 400
    again = herald.call("POST", "/contact-policies", PROMO)
    assert again.status == 409 and again.body["id"] == "promo-cap"
    assert herald.call("GET", "/contact-policies/promo-cap").body["name"] == "v2"
    assert herald.call("DELETE", "/contact-policies/promo-cap", headers={"If-Match": '"2"'}).status == 204


def test_unknown_policies_are_404(herald: Herald) -> None:
    assert herald.call("GET", "/contact-policies/nope").status == 404
    assert herald.call("PATCH", "/contact-policies/nope", {"name": "x"}).status == 404
    assert herald.call("GET", "/contact-policies/bad%20id").status == 404


def _cap(**change: Any) -> dict[str, Any]:
    return {"channel": "email", "max_messages": 1, "window_hours": 24, **change}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"scope": "everyone"}, "scope"),
        ({"scope": "category:"}, "scope"),
        ({"scope": "group:vip"}, "scope"),
        ({"caps": [_cap(channel="fax")]}, "caps.0.channel"),
        ({"caps": [_cap(), _cap(max_messages=0)]}, "caps.1.max_messages"),
        ({"caps": [_cap(window_hours=0)]}, "caps.0.window_hours"),
        ({"caps": [_cap(window_hours=721)]}, "caps.0.window_hours"),
        ({"caps": [_cap()] * 11}, "caps"),
        ({"caps": [_cap(per="day")]}, "caps.0.per"),
        ({"quiet_hours": {"start": "9pm", "end": "08:00"}}, "quiet_hours.start"),
        ({"quiet_hours": {"start": "21:00", "end": "24:00"}}, "quiet_hours.end"),
        ({"quiet_hours": {"start": "08:00", "end": "08:00"}}, "quiet_hours.end"),
        ({"quiet_hours": {"start": "21:00"}}, "quiet_hours.end"),
        ({"expire_after_hours": 0}, "expire_after_hours"),
        ({"expire_after_hours": 721}, "expire_after_hours"),
        ({"name": ""}, "name"),
        ({"policy_id": "no spaces"}, "policy_id"),
        ({"priority": 3}, "priority"),
    ],
)
def test_invalid_policies_are_422_naming_the_field(herald: Herald, change: dict[str, Any], field: str) -> None:
    reply = herald.call("POST", "/contact-policies", {**PROMO, **change})
    assert reply.status == 422, reply.body
    assert [e["field"] for e in reply.body["errors"]] == [field]
    assert herald.call("GET", "/contact-policies").body["items"] == []


def test_an_invalid_change_is_422_and_changes_nothing(herald: Herald) -> None:
    create(herald, PROMO)
    reply = herald.call("PATCH", "/contact-policies/promo-cap", {"caps": [_cap(channel="pigeon")]})
    assert reply.status == 422 and reply.body["errors"][0]["field"] == "caps.0.channel"
    reply = herald.call("PATCH", "/contact-policies/promo-cap", {"quiet_hours": {"start": "07:00", "end": "07:00"}})
    assert reply.status == 422 and reply.body["errors"][0]["field"] == "quiet_hours.end"
    assert herald.call("GET", "/contact-policies/promo-cap").body["version"] == 1


def test_listing_pages_with_a_cursor(herald: Herald) -> None:
    for n in range(5):
        create(herald, {"policy_id": f"p{n}", "name": f"Policy {n}"})
    first = herald.call("GET", "/contact-policies?limit=3").body
    assert [p["policy_id"] for p in first["items"]] == ["p0", "p1", "p2"] and first["next_cursor"]
    rest = herald.call("GET", f"/contact-policies?limit=3&cursor={first['next_cursor']}").body
    assert [p["policy_id"] for p in rest["items"]] == ["p3", "p4"] and rest["next_cursor"] is None
    assert herald.call("GET", "/contact-policies?cursor=garbage").status == 400


def test_the_engine_loads_every_policy_and_sees_edits(herald: Herald) -> None:
    assert service.load_policies() == []
    create(herald, PROMO)
    create(herald, {"policy_id": "all-sms", "name": "SMS", "caps": [_cap(channel="sms", max_messages=2)]})
    assert service.load_policies() == [
        ContactPolicy(
            policy_id="all-sms",
            name="SMS",
            scope="all",
            caps=(Cap("sms", 2, 24),),
            quiet_hours=None,
            expire_after_hours=72,
        ),
        ContactPolicy(
            policy_id="promo-cap",
            name="Promotions",
            scope="category:promo",
            caps=(Cap("email", 1, 24), Cap("any", 3, 168)),
            quiet_hours=QuietHours(time(21, 0), time(8, 0)),
            expire_after_hours=48,
        ),
    ]
    assert herald.call("PATCH", "/contact-policies/all-sms", {"expire_after_hours": 5}).status == 200
    assert [p.expire_after_hours for p in service.load_policies()] == [5, 48]
    assert service.to_engine(service.get("all-sms")) == service.load_policies()[0]


def test_loaded_policies_are_cached_for_a_minute(herald: Herald, monkeypatch: pytest.MonkeyPatch) -> None:
    create(herald, PROMO)
    assert len(service.load_policies()) == 1
    queries: list[str] = []
    original = service.PolicyRecord.query

    def counting(*args: Any, **kwargs: Any) -> Any:
        queries.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(service.PolicyRecord, "query", counting)
    assert len(service.load_policies()) == 1 and queries == []
    later = 10_000.0 + service.CACHE_SECONDS
    moments = iter([10_000.0, later - 1, later + 1, later + 1])
    monkeypatch.setattr(service.monotonic_time, "monotonic", lambda: next(moments))
    service.clear_cache()
    service.load_policies()  # loaded at 10,000 s
    service.load_policies()  # 59 s later: cached
    assert queries == ["policy"]
    service.load_policies()  # 61 s later: read again
    assert queries == ["policy", "policy"]
