"""Campaigns through the API: definitions, checklist, test, launch/stop/resume, forecast, stats, alerts, triggers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from herald import clock
from herald.campaigns.tick import Tick
from tests.harness import Herald
from tests.integration.test_campaign_tick import Queue, campaign, customer, enrolled, group

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fixed_clock() -> None:
    clock.set_clock(lambda: NOW)


def test_create_get_list_update_delete(herald: Herald) -> None:
    created = campaign(herald, "winter", {"status": "Active"}, category="promotions")
    assert created["state"] == "Draft" and created["effective_priority"] == 10 and created["version"] == 1
    assert herald.call("GET", "/campaigns/winter").body["stats"]["in_campaign_pct"] is None
    assert [c["id"] for c in herald.call("GET", "/campaigns").body["items"]] == ["winter"]
    stale = herald.call("PATCH", "/campaigns/winter", {"priority": 5}, headers={"If-Match": '"7"'})
    assert stale.status == 409
    changed = herald.call("PATCH", "/campaigns/winter", {"priority": 5}, headers={"If-Match": '"1"'})
    assert changed.status == 200 and changed.body["effective_priority"] == 5 and changed.body["version"] == 2
    assert herald.call("POST", "/campaigns", {"id": "winter", "name": "x", "description": "y"}).status == 409
    assert herald.call("DELETE", "/campaigns/winter").status == 204
    assert herald.call("GET", "/campaigns/winter").status == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"description": "no name"}, "name"),
        ({"name": "no description"}, "description"),
        ({"name": "n", "description": "d", "kind": "trigger"}, "trigger"),
        ({"name": "n", "description": "d", "trigger": {"event": "login"}}, "trigger"),
        (
            {"name": "n", "description": "d", "kind": "trigger", "trigger": {"event": "login", "date": "birthday"}},
            "trigger",
        ),
        ({"name": "n", "description": "d", "start": "2026-12-02T00:00", "end": "2026-12-01T00:00"}, "end"),
        ({"name": "n", "description": "d", "start": "2026-12-02T00:00+01:00"}, "start"),
        ({"name": "n", "description": "d", "time_zone": "Mars/Base"}, "time_zone"),
        (
            {"name": "n", "description": "d", "actions": [{"type": "email", "subject": "{{ secret }}", "body": "b"}]},
            "actions.0.email.subject",
        ),
        ({"name": "n", "description": "d", "actions": [{"type": "fax", "text": "x"}]}, "actions.0"),
        ({"name": "n", "description": "d", "expected_in_campaign_pct": 120}, "expected_in_campaign_pct"),
        ({"name": "n", "description": "d", "targeting": {"form_ids": ["f"]}}, "targeting.form_ids"),
        ({"name": "n", "description": "d", "targeting": {"group_id": "nope"}}, "targeting.group_id"),
        ({"name": "n", "description": "d", "priority": 0}, "priority"),
    ],
)
def test_bad_campaigns_are_refused_naming_the_field(herald: Herald, body: dict[str, Any], field: str) -> None:
    reply = herald.call("POST", "/campaigns", body)
    assert reply.status == 422, reply.body
    assert reply.body["errors"][0]["field"].startswith(field), reply.body


def test_checklist_gates_launch_until_tested_or_forced(herald: Herald) -> None:
    customer(herald, "ada", first_name="Ada")
    created = herald.call(
        "POST",
        "/campaigns",
        {
            "id": "c",
            "name": "Winter sale",
            "description": "Winter sale",
            "published": True,
            "targeting": {"status": "Inactive"},
        },
    )
    assert created.status == 201
    items = {i["item"]: i["ok"] for i in herald.call("GET", "/campaigns/c/checklist").body["items"]}
    assert items == {"name_description": False, "target_rules": False, "actions_content": False, "tested": False}
    refused = herald.call("POST", "/campaigns/c/launch", {})
    assert refused.status == 409 and {f["item"] for f in refused.body["failing"]} == set(items)
    assert herald.call("POST", "/campaigns/c/launch", {"force": True}).status == 422  # a reason is required
    fix = {
        "description": "25% off everything for Active customers",
        "targeting": {"status": "Active"},
        "actions": [
            {"type": "email", "subject": "Hi {{ contact.first_name }}", "body": "Sale for {{ campaign.name }}"}
        ],
    }
    assert herald.call("PATCH", "/campaigns/c", fix).status == 200
    test = herald.call("POST", "/campaigns/c/test", {"contact_id": "ada"})
    assert test.status == 200, test.body
    assert test.body["targeting"]["matches"] is True
    assert test.body["actions"][0]["rendered"] == {"subject": "Hi Ada", "body": "Sale for Winter sale"}
    assert test.body["actions"][0]["would_send"] is True
    assert test.body["eligibility"]["blockers"] == ["not launched"]
    report = herald.call("GET", "/campaigns/c/checklist").body
    assert report["ready"] is True, report
    launched = herald.call("POST", "/campaigns/c/launch", {})
    assert (
        launched.status == 200 and launched.body["state"] == "Launched" and launched.body["launch"]["forced"] is False
    )
    # Editing after the test invalidates it for the checklist (the launched campaign keeps running).
    herald.call("PATCH", "/campaigns/c", {"name": "Winter sale 2026"})
    assert {i["item"]: i["ok"] for i in herald.call("GET", "/campaigns/c/checklist").body["items"]}["tested"] is False
    assert herald.call("POST", "/campaigns/c/launch", {}).status == 409  # already launched
    assert herald.call("DELETE", "/campaigns/c").status == 409  # stop first
    assert herald.call("POST", "/campaigns/c/stop").body["state"] == "Stopped"
    assert herald.call("POST", "/campaigns/c/stop").status == 409
    assert herald.call("POST", "/campaigns/c/resume").body["state"] == "Launched"


def test_forced_launch_records_the_reason_and_failing_items(herald: Herald) -> None:
    campaign(herald, "c", {"status": "Active"})
    reply = herald.call("POST", "/campaigns/c/launch", {"force": True, "reason": "CEO asked"})
    assert reply.status == 200
    assert reply.body["launch"]["forced"] is True and reply.body["launch"]["reason"] == "CEO asked"
    assert "tested" in reply.body["launch"]["failing"]


def test_test_shows_why_a_contact_is_held_back(herald: Herald) -> None:
    group(herald, "vip")
    customer(herald, "noconsent", groups=["vip"], consent={})
    customer(herald, "bounced", groups=["vip"], bounce={"hard": True})
    customer(herald, "outside")
    campaign(herald, "c", {"group_id": "vip", "status": "Active"})
    held = herald.call("POST", "/campaigns/c/test", {"contact_id": "noconsent"}).body
    assert held["targeting"]["matches"] is True
    assert held["actions"][0]["would_send"] is False
    assert held["actions"][0]["held_back"][0]["by"] == "consent"
    bounced = herald.call("POST", "/campaigns/c/test", {"contact_id": "bounced"}).body
    assert [h["by"] for h in bounced["actions"][0]["held_back"]] == ["suppression"]
    from herald.store.tables import SuppressionRecord

    customer(herald, "complained", groups=["vip"])
    SuppressionRecord("complained", "email#all", reason="complaint", at="2026-11-20T10:00:00.000Z").save()
    complained = herald.call("POST", "/campaigns/c/test", {"contact_id": "complained"}).body
    assert complained["actions"][0]["held_back"] == [{"by": "suppression", "reason": "complaint"}]
    outside = herald.call("POST", "/campaigns/c/test", {"contact_id": "outside"}).body
    assert outside["targeting"]["matches"] is False
    failing = [c for c in outside["targeting"]["checks"] if not c["matches"]]
    assert failing[0]["rule"] == "customer group = vip"
    assert herald.call("POST", "/campaigns/c/test", {"contact_id": "ghost"}).status == 404


def test_forecast_counts_newcomers_with_consent_applied(herald: Herald) -> None:
    for i in range(4):
        customer(herald, f"ok{i}")
    customer(herald, "noconsent", consent={})
    campaign(herald, "c", {"status": "Active"})
    forecast = herald.call("GET", "/campaigns/c/forecast").body
    assert forecast["basis"]["newcomers"] == 5
    assert forecast["days"][0] == {"date": "2026-11-23", "sends": 4, "deferred_in": 0}
    assert sum(d["sends"] for d in forecast["days"]) == 4
    assert forecast["held_back"] == 1
    assert len(forecast["days"]) == 7


def test_in_campaign_pct_below_expected_raises_one_alert_and_notifies(herald: Herald) -> None:
    inbox = herald.subscribe_queue("CampaignAlertsTopic", "alerts-inbox")
    arn = herald.topic_arn("CampaignAlertsTopic")
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    for cid in ("a", "b", "c"):
        customer(herald, cid)
    campaign(herald, "first", {"status": "Active"})
    herald.call("POST", "/campaigns/first/launch", {"force": True, "reason": "t"})
    Tick(NOW, Queue()).run()
    assert herald.call("PATCH", "/contacts/a", {"status": "Inactive"}).status == 200
    Tick(NOW, Queue()).run()  # a exits "first": previously treated
    assert herald.call("PATCH", "/contacts/a", {"status": "Active"}).status == 200
    campaign(herald, "second", {"status": "Active"}, alert_subscribers=["ops@example.com"])
    herald.call("POST", "/campaigns/second/launch", {"force": True, "reason": "t"})
    from herald.campaigns import alerts

    notifier = alerts.Notifier(arn)
    Tick(NOW, Queue(), notifier=notifier).run()
    Tick(NOW, Queue(), notifier=notifier).run()  # still below: no second alert
    stats = herald.call("GET", "/campaigns/second").body["stats"]
    assert stats["matching"] == 3 and stats["in_campaign"] == 2 and stats["below_expected"] is True
    assert stats["in_campaign_pct"] == pytest.approx(66.67)
    listed = herald.call("GET", "/campaigns").body["items"]
    assert {c["id"]: c["stats"]["in_campaign_pct"] for c in listed}["second"] == pytest.approx(66.67)
    found = herald.call("GET", "/campaigns/second/alerts").body["items"]
    assert [a["kind"] for a in found] == ["in_campaign_below_expected"]
    assert found[0]["figures"]["not_previously_treated"] == 1
    messages = sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10)["Messages"]
    bodies = [json.loads(json.loads(m["Body"])["Message"]) for m in messages]
    # "first" also lost a (it exited and is not re-enrolled): one alert each, not one per tick.
    assert sorted(b["campaign_id"] for b in bodies) == ["first", "second"]
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
    assert "ops@example.com" in {s["Endpoint"] for s in subscriptions}


def test_event_trigger_fires_once_per_event(herald: Herald) -> None:
    customer(herald, "ada")
    customer(herald, "inactive", status="Inactive")
    campaign(herald, "welcome", {"status": "Active"}, kind="trigger", trigger={"event": "login"})
    herald.call("POST", "/campaigns/welcome/launch", {"force": True, "reason": "t"})
    event = {"event_id": "login-1", "type": "login", "occurred_at": "2026-11-23T11:59:00Z"}
    assert herald.call("POST", "/contacts/ada/events", event).status == 201
    assert herald.call("POST", "/contacts/ada/events", event).status == 200  # the same event again
    assert herald.call("POST", "/contacts/inactive/events", event).status == 201  # not targeted
    old = {"event_id": "login-0", "type": "login", "occurred_at": "2026-11-20T10:00:00Z"}
    assert herald.call("POST", "/contacts/ada/events", old).status == 201  # history: does not fire
    herald.pump_streams()
    herald.pump_streams()
    bodies = herald.queue_messages("DeliveryQueue")
    assert [(b["contact_id"], [s["occurrence"] for s in b["sends"]]) for b in bodies] == [("ada", ["login-1"])]
    assert bodies[0]["sends"][0]["priority"] == 40  # a frequent trigger goes last
    assert enrolled("welcome") == {"ada": "active"}
    second = {"event_id": "login-2", "type": "login", "occurred_at": (NOW - timedelta(seconds=5)).isoformat()}
    assert herald.call("POST", "/contacts/ada/events", second).status == 201
    herald.pump_streams()
    bodies = herald.queue_messages("DeliveryQueue")
    assert [s["occurrence"] for b in bodies for s in b["sends"]] == ["login-2"]
    assert herald.call("GET", "/campaigns/welcome/stats").body["enrolled"] == 2
    assert herald.call("GET", "/contacts/ada/campaigns").body["items"][0]["occurrences"] == 2


def test_test_and_forecast_apply_the_contact_policy(herald: Herald) -> None:
    from herald.store.queues import QueueSender

    policy = {
        "policy_id": "cap",
        "name": "One a day",
        "caps": [{"channel": "email", "max_messages": 1, "window_hours": 24}],
    }
    assert herald.call("POST", "/contact-policies", policy).status == 201
    customer(herald, "ada")
    campaign(herald, "first", {"status": "Active"})
    herald.call("POST", "/campaigns/first/launch", {"force": True, "reason": "t"})
    Tick(NOW, QueueSender(herald.queue_url("DeliveryQueue")).send).run()
    herald.drain("SenderFunction")
    assert herald.call("GET", "/campaigns/first/stats").body["sent"] == 1
    campaign(herald, "second", {"status": "Active"})
    held = herald.call("POST", "/campaigns/second/test", {"contact_id": "ada"}).body["actions"][0]
    assert held["would_send"] is False
    [hold] = held["held_back"]
    assert (hold["by"], hold["outcome"], hold["until"]) == ("contact_policy", "defer", "2026-11-24T12:00:00.000Z")
    assert "cap email 1 per 24h" in hold["reason"]
    days = herald.call("GET", "/campaigns/second/forecast").body["days"]
    assert days[0] == {"date": "2026-11-23", "sends": 0, "deferred_in": 0}
    assert days[1] == {"date": "2026-11-24", "sends": 1, "deferred_in": 1}


def test_forecast_of_a_birthday_campaign_counts_each_days_birthdays(herald: Herald) -> None:
    customer(herald, "soon", attributes={"birthday": "1990-11-25"})
    customer(herald, "later", attributes={"birthday": "1990-11-29"})
    customer(herald, "nope", attributes={"birthday": "1990-11-26"}, consent={})
    customer(herald, "outside", status="Inactive", attributes={"birthday": "1990-11-25"})
    campaign(herald, "bday", {"status": "Active"}, kind="trigger", trigger={"date": "birthday"})
    forecast = herald.call("GET", "/campaigns/bday/forecast").body
    assert [d["sends"] for d in forecast["days"]] == [0, 0, 1, 0, 0, 0, 1]
    assert forecast["held_back"] == 1 and forecast["basis"]["contacts"] == 3


def test_trigger_events_fire_once_even_replayed_out_of_order_and_never_on_their_own_engagement(herald: Herald) -> None:
    from herald.campaigns.triggers import on_event

    customer(herald, "ada")
    campaign(herald, "opened", {"status": "Active"}, kind="trigger", trigger={"event": "campaign.opened"})
    herald.call("POST", "/campaigns/opened/launch", {"force": True, "reason": "t"})
    queue = Queue()
    at = NOW - timedelta(minutes=1)
    first = on_event("ada", "e1", "campaign.opened", at, NOW, queue, caused_by="winter")
    second = on_event("ada", "e2", "campaign.opened", at, NOW, queue, caused_by="winter")
    replay = on_event("ada", "e1", "campaign.opened", at, NOW, queue, caused_by="winter")  # after e2
    own = on_event("ada", "e3", "campaign.opened", at, NOW, queue, caused_by="opened")
    assert (first.fired, second.fired, replay.fired, own.fired) == (["opened"], ["opened"], [], [])
    assert [s[2] for s in queue.sends()] == ["e1", "e2"]
    assert herald.call("GET", "/campaigns/opened/stats").body["enrolled"] == 2
    refused = herald.call(
        "POST",
        "/campaigns",
        {"name": "n", "description": "d", "kind": "trigger", "trigger": {"event": "campaign.received"}},
    )
    assert refused.status == 422 and refused.body["errors"][0]["field"] == "trigger.event"


def test_the_sample_events_run_the_tick_and_the_trigger_functions(herald: Herald) -> None:
    from tests.harness import load_event

    customer(herald, "ada")
    campaign(herald, "sale", {"status": "Active"})
    herald.call("POST", "/campaigns/sale/launch", {"force": True, "reason": "t"})
    campaign(herald, "welcome", {"status": "Active"}, kind="trigger", trigger={"event": "login"})
    herald.call("POST", "/campaigns/welcome/launch", {"force": True, "reason": "t"})
    summary = herald.host.invoke("CampaignTickFunction", load_event("campaign_tick/scheduled"))
    assert summary["campaigns"]["sale"]["enrolled"] == 1
    assert summary["campaigns"]["welcome"]["skipped"] == "event trigger: enrolled as events arrive"
    # The second record is malformed: logged, counted and dropped, never a batch failure.
    assert herald.host.invoke("CampaignTriggersFunction", load_event("campaign_triggers/login")) == {
        "batchItemFailures": []
    }
    assert enrolled("welcome") == {"ada": "active"}
    bodies = herald.queue_messages("DeliveryQueue")
    assert sorted(s["campaign_id"] for b in bodies for s in b["sends"]) == ["sale", "welcome"]


def test_a_campaign_uses_its_customer_group_until_it_stops_targeting_it(herald: Herald) -> None:
    group(herald, "vip")
    group(herald, "gold")
    created = campaign(herald, "c", {"group_id": "vip"})
    assert created["version"] == 1
    in_use = herald.call("DELETE", "/groups/vip")
    assert in_use.status == 409 and in_use.body["used_by"] == ["campaign#c"]
    moved = herald.call("PATCH", "/campaigns/c", {"targeting": {"group_id": "gold"}}, headers={"If-Match": '"1"'})
    assert moved.status == 200 and moved.body["version"] == 2
    assert herald.call("GET", "/groups/gold").body["ref_count"] == 1
    assert herald.call("DELETE", "/groups/vip").status == 204
    stale = herald.call("PATCH", "/campaigns/c", {"targeting": {"status": "Active"}}, headers={"If-Match": '"1"'})
    assert stale.status == 409
    # A forced deletion detaches the campaign; the campaign can still move on and be deleted.
    forced = herald.call("DELETE", "/groups/gold?force=true&reason=retired")
    assert forced.status == 202 and forced.body["detached"] == ["campaign#c"]
    assert herald.call("PATCH", "/campaigns/c", {"targeting": {"status": "Active"}}).status == 200
    assert herald.call("DELETE", "/campaigns/c").status == 204
