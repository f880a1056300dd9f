"""Segments, audiences and badges through the API, with recalculation runs drained in-process."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from herald import clock
from tests.harness import Herald

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PRAGUE_RULE = {"all": [{"field": "attributes.city", "op": "equals", "value": "Prague"}]}


@pytest.fixture(autouse=True)
def _fixed_clock() -> None:
    clock.set_clock(lambda: NOW)


def contact(h: Herald, cid: str, city: str = "Prague", **extra: Any) -> dict[str, Any]:
    body = {
        "contact_id": cid,
        "kind": "customer",
        "email": f"{cid}@example.com",
        "attributes": {"city": city, **extra.pop("attributes", {})},
        "consent": {"email": {"granted": True, "source": "signup"}},
        **extra,
    }
    reply = h.call("POST", "/contacts", body)
    assert reply.status == 201, reply.body
    return reply.body


def create(h: Herald, plural: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = h.call("POST", f"/{plural}", body)
    assert reply.status == 201, reply.body
    h.drain("SegmentWorkerFunction")
    return h.call("GET", f"/{plural}/{reply.body['id']}").body


def member_ids(h: Herald, plural: str, group_id: str) -> set[str]:
    found: set[str] = set()
    cursor = None
    while True:
        path = f"/{plural}/{group_id}/members?limit=2" + (f"&cursor={cursor}" if cursor else "")
        reply = h.call("GET", path)
        assert reply.status == 200, reply.body
        found |= {m["contact_id"] for m in reply.body["items"]}
        cursor = reply.body["next_cursor"]
        if not cursor:
            return found


def nightly(h: Herald) -> dict[str, Any]:
    reply = h.call("POST", "/recalculations", {"reason": "test"})
    assert reply.status == 202, reply.body
    h.drain("SegmentWorkerFunction")
    return h.call("GET", f"/recalculations/{reply.body['run_id']}").body


def test_standard_segment_is_filled_once_at_creation(herald: Herald) -> None:
    for cid, city in [("c1", "Prague"), ("c2", "Brno"), ("c3", "Prague")]:
        contact(herald, cid, city)
    segment = create(herald, "segments", {"name": "Praguers", "rule": PRAGUE_RULE})
    assert segment["state"] == "Ready"
    assert segment["member_count"] == 2
    assert member_ids(herald, "segments", segment["id"]) == {"c1", "c3"}
    # A standard segment does not follow later changes: it is not in the nightly run.
    herald.call("PATCH", "/contacts/c2", {"attributes": {"city": "Prague"}})
    run = nightly(herald)
    assert run["state"] == "Done" and run["targets"] == [] and run["scanned"] == 0  # nothing to evaluate: no scan
    assert member_ids(herald, "segments", segment["id"]) == {"c1", "c3"}
    assert herald.call("GET", "/contacts/c1").body["segment_ids"] == [segment["id"]]


def test_flexi_segment_follows_changes_every_night_and_rerun_writes_nothing(herald: Herald) -> None:
    for cid, city in [("c1", "Prague"), ("c2", "Brno")]:
        contact(herald, cid, city)
    segment = create(herald, "segments", {"name": "Praguers", "rule": PRAGUE_RULE, "flexi": True})
    assert member_ids(herald, "segments", segment["id"]) == {"c1"}
    herald.call("PATCH", "/contacts/c1", {"attributes": {"city": "Brno"}})
    herald.call("PATCH", "/contacts/c2", {"attributes": {"city": "Prague"}})
    run = nightly(herald)
    assert run["changes"] == 2 and run["scanned"] == 2
    assert member_ids(herald, "segments", segment["id"]) == {"c2"}
    assert herald.call("GET", f"/segments/{segment['id']}").body["member_count"] == 1
    again = nightly(herald)
    assert again["changes"] == 0


def test_rule_errors_name_the_json_path(herald: Herald) -> None:
    bad = {
        "all": [
            {"field": "attributes.city", "op": "equals", "value": "Prague"},
            {"field": "status", "op": "resembles", "value": 1},
        ]
    }
    reply = herald.call("POST", "/segments", {"name": "Bad", "rule": bad})
    assert reply.status == 422
    assert {"field": "rule.all[1].op", "problem": "unknown operator 'resembles'"} in reply.body["errors"]
    reply = herald.call(
        "POST", "/segments", {"name": "Bad", "rule": {"field": "bounce.soft_count", "op": "greater", "value": "x"}}
    )
    assert reply.status == 422 and reply.body["errors"][0]["field"] == "rule.value"
    assert "type mismatch" in reply.body["errors"][0]["problem"]
    reply = herald.call("POST", "/segments", {"name": "Bad", "rule": {"field": "shoe_size", "op": "exists"}})
    assert reply.status == 422 and reply.body["errors"][0]["field"] == "rule.field"
    assert "unknown field kind" in reply.body["errors"][0]["problem"]
    reply = herald.call(
        "POST", "/segments", {"name": "Bad", "rule": {"field": "segment", "op": "contains", "value": "nope"}}
    )
    assert reply.status == 422 and "unknown segment nope" in reply.body["errors"][0]["problem"]


def test_segment_references_cannot_form_a_cycle(herald: Herald) -> None:
    contact(herald, "c1")
    a = create(herald, "segments", {"name": "A", "rule": PRAGUE_RULE, "flexi": True})
    b = create(
        herald,
        "segments",
        {"name": "B", "rule": {"field": "segment", "op": "contains", "value": a["id"]}, "flexi": True},
    )
    assert member_ids(herald, "segments", b["id"]) == {"c1"}
    reply = herald.call(
        "PATCH", f"/segments/{a['id']}", {"rule": {"field": "segment", "op": "contains", "value": b["id"]}}
    )
    assert reply.status == 422
    assert "cycle" in reply.body["errors"][0]["problem"]
    # And one referenced by another rule cannot be deleted.
    assert herald.call("DELETE", f"/segments/{a['id']}").status == 409


def test_dependent_flexi_segments_settle_in_one_pass(herald: Herald) -> None:
    contact(herald, "c1", "Brno")
    a = create(herald, "segments", {"name": "A", "rule": PRAGUE_RULE, "flexi": True})
    b = create(
        herald,
        "segments",
        {"name": "B", "rule": {"field": "segment", "op": "contains", "value": a["id"]}, "flexi": True},
    )
    herald.call("PATCH", "/contacts/c1", {"attributes": {"city": "Prague"}})
    nightly(herald)
    assert member_ids(herald, "segments", a["id"]) == {"c1"}
    assert member_ids(herald, "segments", b["id"]) == {"c1"}


def test_audience_final_stage_excludes_and_counts(herald: Herald) -> None:
    contact(herald, "ok")
    contact(herald, "hard", bounce={"hard": True})
    contact(herald, "soft4", bounce={"soft_count": 4})
    contact(herald, "soft5", bounce={"soft_count": 5})
    contact(herald, "noconsent", consent={"email": {"granted": False, "source": "form"}})
    contact(herald, "brno", "Brno")
    audience = create(herald, "audiences", {"name": "Spring", "rule": PRAGUE_RULE, "channel": "email"})
    assert member_ids(herald, "audiences", audience["id"]) == {"ok", "soft4"}
    assert audience["member_count"] == 2
    assert audience["excluded"] == {"hard_bounce": 1, "soft_bounces": 1, "no_consent": 1}


def test_audience_is_locked_but_can_be_changed_by_hand_with_an_audit_trail(herald: Herald) -> None:
    contact(herald, "c1")
    contact(herald, "c2", "Brno")
    audience = create(herald, "audiences", {"name": "Spring", "rule": PRAGUE_RULE})
    aid = audience["id"]
    assert (
        herald.call("PATCH", f"/audiences/{aid}", {"rule": {"field": "kind", "op": "equals", "value": "lead"}}).status
        == 409
    )
    herald.call("PATCH", "/contacts/c2", {"attributes": {"city": "Prague"}})
    nightly(herald)
    assert member_ids(herald, "audiences", aid) == {"c1"}  # never re-selected
    reply = herald.call("POST", f"/audiences/{aid}/members", {"contact_ids": ["c2", "ghost"], "actor": "ann"})
    assert reply.status == 422 and reply.body["errors"][0]["field"] == "reason"
    reply = herald.call(
        "POST", f"/audiences/{aid}/members", {"contact_ids": ["c2", "ghost"], "actor": "ann", "reason": "VIP asked"}
    )
    assert reply.status == 200
    assert {r["contact_id"]: r["outcome"] for r in reply.body["results"]} == {"c2": "added", "ghost": "not_found"}
    reply = herald.call(
        "POST",
        f"/audiences/{aid}/members/remove",
        {"contact_ids": ["c1"], "actor": "bob", "reason": "opted out by phone"},
    )
    assert reply.body["results"] == [{"contact_id": "c1", "outcome": "removed"}]
    assert member_ids(herald, "audiences", aid) == {"c2"}
    trail = herald.call("GET", f"/audiences/{aid}/audit").body["items"]
    assert [(t["action"], t["contact_id"], t["actor"], t["reason"]) for t in trail] == [
        ("remove", "c1", "bob", "opted out by phone"),
        ("add", "c2", "ann", "VIP asked"),
    ]
    copy = herald.call("POST", f"/audiences/{aid}/duplicate", {"name": "Spring copy"})
    assert copy.status == 201 and copy.body["duplicated_from"] == aid and copy.body["member_count"] == 1
    assert member_ids(herald, "audiences", copy.body["id"]) == {"c2"}


def test_audience_is_completely_locked_once_a_launched_campaign_targets_it(herald: Herald) -> None:
    from herald.segments import service

    contact(herald, "c1")
    audience = create(herald, "audiences", {"name": "Spring", "rule": PRAGUE_RULE})
    aid = audience["id"]
    locked = service.lock_audience(aid, "spring-campaign")
    assert locked.state == "Locked" and locked.locked_by == "spring-campaign"
    assert herald.call("PATCH", f"/audiences/{aid}", {"name": "Renamed"}).status == 409
    change = {"contact_ids": ["c1"], "actor": "ann", "reason": "late addition"}
    assert herald.call("POST", f"/audiences/{aid}/members/remove", change).status == 409
    assert herald.call("DELETE", f"/audiences/{aid}").status == 409
    assert herald.call("GET", f"/audiences/{aid}").body["state"] == "Locked"


def test_flexi_segment_automation_changes_warn_and_are_overridden_at_night(herald: Herald) -> None:
    contact(herald, "c1")
    contact(herald, "c2", "Brno")
    flexi = create(herald, "segments", {"name": "Praguers", "rule": PRAGUE_RULE, "flexi": True})
    standard = create(herald, "segments", {"name": "Praguers fixed", "rule": PRAGUE_RULE})
    reply = herald.call("POST", f"/segments/{flexi['id']}/members", {"contact_ids": ["c2"], "actor": "workflow-7"})
    assert reply.status == 200 and reply.body["results"] == [{"contact_id": "c2", "outcome": "added"}]
    assert "overrides" in reply.body["warnings"][0]
    reply = herald.call("POST", f"/segments/{standard['id']}/members", {"contact_ids": ["c2"], "actor": "workflow-7"})
    assert reply.body["warnings"] == []
    nightly(herald)
    assert member_ids(herald, "segments", flexi["id"]) == {"c1"}  # the nightly run overrode automation
    assert member_ids(herald, "segments", standard["id"]) == {"c1", "c2"}  # automation's change holds


def test_badges_show_on_the_contact_with_icons_and_can_be_assigned_by_hand(herald: Herald) -> None:
    contact(herald, "c1", attributes={"spend": 1200})
    contact(herald, "c2", attributes={"spend": 10})
    icon = "https://cdn.example.com/gold.svg"
    assert herald.call("POST", "/badges", {"name": "Gold", "rule": PRAGUE_RULE}).status == 422  # icon required
    gold = create(
        herald,
        "badges",
        {
            "name": "Gold",
            "icon": icon,
            "flexi": True,
            "rule": {"field": "attributes.spend", "op": "greater_or_equal", "value": 1000},
        },
    )
    star = create(herald, "badges", {"name": "Staff pick", "icon": "https://cdn.example.com/star.svg"})
    assert star["state"] == "Ready" and star["member_count"] == 0
    reply = herald.call("POST", f"/badges/{star['id']}/members", {"contact_ids": ["c2"], "actor": "store-12"})
    assert reply.body["results"][0]["outcome"] == "added" and reply.body["warnings"] == []
    assert herald.call("GET", "/contacts/c1/memberships").body["badges"] == [
        {"id": gold["id"], "name": "Gold", "icon": icon}
    ]
    memberships = herald.call("GET", "/contacts/c2/memberships").body
    assert [b["name"] for b in memberships["badges"]] == ["Staff pick"]
    assert herald.call("GET", "/contacts/c1").body["badge_ids"] == [gold["id"]]


def test_explain_shows_every_condition_with_the_value_seen(herald: Herald) -> None:
    contact(herald, "c1", attributes={"spend": 80})
    rule = {"all": [PRAGUE_RULE, {"field": "attributes.spend", "op": "greater", "value": 100}]}
    segment = create(herald, "segments", {"name": "Big Praguers", "rule": rule})
    reply = herald.call("POST", f"/segments/{segment['id']}/explain", {"contact_id": "c1"})
    assert reply.status == 200
    assert reply.body["member"] is False and reply.body["matches"] is False
    spend = reply.body["explanation"]["children"][1]
    assert spend == {
        "path": "rule.all[1]",
        "verdict": False,
        "condition": {"field": "attributes.spend", "op": "greater", "value": 100.0},
        "seen": 80,
    }
    assert reply.body["explanation"]["children"][0]["children"][0]["seen"] == "Prague"


def test_preview_sizes_an_unsaved_rule(herald: Herald) -> None:
    for n in range(5):
        contact(herald, f"c{n}", "Prague" if n % 2 == 0 else "Brno")
    reply = herald.call("POST", "/segments/preview", {"rule": PRAGUE_RULE, "sample": 2})
    assert reply.status == 200
    assert reply.body["size"] == 3 and reply.body["estimated"] is False and len(reply.body["sample"]) == 2
    assert herald.call("POST", "/segments/preview", {"rule": {"any": []}}).status == 422


def test_online_recalculation_for_one_contact(herald: Herald) -> None:
    contact(herald, "c1", "Brno", attributes={"spend": 0})
    online = create(
        herald,
        "segments",
        {"name": "Big spenders", "online": True, "rule": {"field": "attributes.spend", "op": "greater", "value": 100}},
    )
    offline = create(herald, "segments", {"name": "Offline", "rule": PRAGUE_RULE})
    herald.call("PATCH", "/contacts/c1", {"attributes": {"spend": 500}})
    reply = herald.call("POST", f"/segments/{online['id']}/recalculate", {"contact_id": "c1"})
    assert reply.status == 200 and reply.body == {
        "contact_id": "c1",
        "segment_id": online["id"],
        "member": True,
        "changed": True,
    }
    again = herald.call("POST", f"/segments/{online['id']}/recalculate", {"contact_id": "c1"})
    assert again.body["changed"] is False
    assert herald.call("POST", f"/segments/{offline['id']}/recalculate", {"contact_id": "c1"}).status == 409


def test_membership_changes_publish_enter_and_exit_events(herald: Herald) -> None:
    events = boto3.client("events")
    sqs = boto3.client("sqs")
    bus = herald.template.physical_name("HeraldEventBus")
    queue_url = sqs.create_queue(QueueName="membership-events-probe")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="probe", EventBusName=bus, EventPattern=json.dumps({"source": ["herald.segments"]}))
    events.put_targets(Rule="probe", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}])
    contact(herald, "c1")
    segment = create(herald, "segments", {"name": "Praguers", "rule": PRAGUE_RULE, "flexi": True})
    herald.call("PATCH", "/contacts/c1", {"attributes": {"city": "Brno"}})
    nightly(herald)
    herald.pump_streams()
    herald.pump_streams()  # nothing new: nothing published twice
    received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    details = [json.loads(m["Body"]) for m in received]
    changes = [(d["detail-type"], d["detail"]["type"], d["detail"]["id"], d["detail"]["contact_id"]) for d in details]
    assert changes == [
        ("Membership Entered", "segment", segment["id"], "c1"),
        ("Membership Exited", "segment", segment["id"], "c1"),
    ]


def test_deleting_a_contact_removes_it_from_segments_badges_and_audiences(herald: Herald) -> None:
    contact(herald, "c1")
    contact(herald, "c2")
    segment = create(herald, "segments", {"name": "Praguers", "rule": PRAGUE_RULE, "flexi": True})
    audience = create(herald, "audiences", {"name": "Spring", "rule": PRAGUE_RULE})
    badge = create(herald, "badges", {"name": "Star", "icon": "https://cdn.example.com/star.svg", "rule": PRAGUE_RULE})
    assert herald.call("DELETE", "/contacts/c1").status == 204
    for plural, definition in (("segments", segment), ("audiences", audience), ("badges", badge)):
        assert member_ids(herald, plural, definition["id"]) == {"c2"}
        assert herald.call("GET", f"/{plural}/{definition['id']}").body["member_count"] == 1


def test_deleting_a_segment_removes_its_members_everywhere(herald: Herald) -> None:
    contact(herald, "c1")
    segment = create(herald, "segments", {"name": "Praguers", "rule": PRAGUE_RULE, "flexi": True})
    assert herald.call("DELETE", f"/segments/{segment['id']}").status == 204
    assert herald.call("GET", f"/segments/{segment['id']}").status == 404
    assert herald.call("GET", "/contacts/c1").body["segment_ids"] == []
    assert herald.call("GET", "/contacts/c1/memberships").body["segments"] == []
    assert nightly(herald)["targets"] == []  # no longer recalculated


def test_a_new_rule_refills_a_standard_segment_and_if_match_guards_edits(herald: Herald) -> None:
    contact(herald, "c1")
    contact(herald, "c2", "Brno")
    segment = create(herald, "segments", {"id": "praguers", "name": "Praguers", "rule": PRAGUE_RULE})
    assert segment["id"] == "praguers"
    assert herald.call("POST", "/segments", {"id": "praguers", "name": "Again", "rule": PRAGUE_RULE}).status == 409
    stale = herald.call("PATCH", "/segments/praguers", {"name": "Old"}, headers={"If-Match": '"99"'})
    assert stale.status == 409 and stale.body["current_version"] == segment["version"]
    brno = {"field": "attributes.city", "op": "equals", "value": "Brno"}
    assert herald.call("PATCH", "/segments/praguers", {"rule": brno}).status == 200
    herald.drain("SegmentWorkerFunction")
    assert member_ids(herald, "segments", "praguers") == {"c2"}
    assert herald.call("GET", "/segments/praguers").body["member_count"] == 1


def test_a_contact_can_be_deleted_from_a_locked_audience_and_after_its_segment_vanished(herald: Herald) -> None:
    from herald.segments import service
    from herald.store.tables import SegmentRecord

    contact(herald, "c1")
    contact(herald, "c2")
    audience = create(herald, "audiences", {"name": "Spring", "rule": PRAGUE_RULE})
    segment = create(herald, "segments", {"name": "Praguers", "rule": PRAGUE_RULE})
    service.lock_audience(audience["id"], "spring-campaign")
    # The segment's definition disappears while its memberships remain (a deletion racing a run).
    SegmentRecord.get("segment", segment["id"]).delete(add_version_condition=False)
    assert herald.call("DELETE", "/contacts/c1").status == 204
    assert member_ids(herald, "audiences", audience["id"]) == {"c2"}
    locked = herald.call("GET", f"/audiences/{audience['id']}").body
    assert locked["member_count"] == 1 and locked["state"] == "Locked"
