"""Sending guardrails: a campaign whose hard-bounce or complaint rate over its window is too high is paused, once."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from herald import clock
from herald.campaigns import alerts, guardrails
from herald.delivery import sender
from herald.store import messages
from herald.store import stats as stats_store
from herald.store.tables import AlertOutboxRecord, CampaignRecord
from tests.harness import Herald, load_event
from tests.integration.test_campaign_tick import campaign as api_campaign
from tests.integration.test_campaign_tick import launch
from tests.integration.test_event_ingestion import ingest, metric_total, sent_email, ses_event, sns_wrap, waiting
from tests.integration.test_sender import (  # noqa: F401 - fixtures
    NOW,
    Clock,
    _reset,
    contact,
    deliver,
    emails,
    record,
    send,
)

pytestmark = pytest.mark.usefixtures("time_")


@pytest.fixture
def time_() -> Iterator[Clock]:
    """The clock at NOW, moved on by the test."""
    moment = Clock()
    clock.set_clock(lambda: moment.now)
    yield moment


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def guarded_campaign(h: Herald, campaign_id: str = "spring", **guardrail_settings: Any) -> None:
    """A launched campaign (through the API), with these guardrail settings."""
    fields = {"guardrails": guardrail_settings} if guardrail_settings else {}
    api_campaign(h, campaign_id, **fields)
    launch(h, campaign_id)


def sent(count: int, campaign_id: str = "spring") -> None:
    """``count`` emails sent now, tallied as the sender tallies them."""
    tally = sender.Tally()
    target = sender.StatsTarget.of_campaign(campaign_id)
    for _ in range(count):
        tally.count(target, messages.SENT)
        tally.count(target, sender.SENT_EMAIL)
    tally.flush(clock.now())


def bad_events(kind: str, count: int, campaign_id: str = "spring", at: datetime | None = None) -> list[dict[str, Any]]:
    """``count`` distinct hard bounces (``bounce``) or complaints of the campaign, occurring ``at`` (default now)."""
    events = []
    for _ in range(count):
        ses_id = f"ses-{uuid.uuid4().hex}"
        tags = {"campaign_id": [campaign_id], "contact_id": ["somebody"], "message_id": ["unknown"]}
        event = ses_event(None, "Bounce" if kind == "bounce" else "Complaint", tags=tags, ses_message_id=ses_id)
        event["bounce" if kind == "bounce" else "complaint"]["timestamp"] = clock.to_iso(at or clock.now())
        events.append(sns_wrap(event))
    return events


def state_of(campaign_id: str = "spring") -> CampaignRecord:
    return CampaignRecord.get("campaign", campaign_id, consistent_read=True)


def guardrail_alerts(h: Herald, campaign_id: str = "spring") -> list[dict[str, Any]]:
    reply = h.call("GET", f"/campaigns/{campaign_id}/alerts")
    assert reply.status == 200, reply.body
    return [a for a in reply.body["items"] if a["kind"] == "guardrail"]


@pytest.fixture
def inbox(herald: Herald) -> Callable[[], list[dict[str, Any]]]:
    """An SQS queue subscribed to the alerts topic; returns a reader of the SNS envelopes it received."""
    url = herald.subscribe_queue("CampaignAlertsTopic", "guardrail-inbox")
    sqs = boto3.client("sqs")
    received: list[dict[str, Any]] = []

    def read() -> list[dict[str, Any]]:
        while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            received.extend(json.loads(m["Body"]) for m in batch)
            for m in batch:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return received

    return read


# --------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------


def test_guardrails_default_to_5_and_0_1_percent_of_200_over_24_hours(herald: Herald) -> None:
    api_campaign(herald, "spring")
    shown = herald.call("GET", "/campaigns/spring").body
    assert shown["guardrails"] == {
        "hard_bounce_pct": 5.0,
        "complaint_pct": 0.1,
        "min_sent": 200,
        "window_hours": 24,
        "enabled": True,
    }
    reply = herald.call("PATCH", "/campaigns/spring", {"guardrails": {"window_hours": 168, "complaint_pct": 0.5}})
    assert reply.status == 200, reply.body
    assert reply.body["guardrails"]["window_hours"] == 168
    assert reply.body["guardrails"]["complaint_pct"] == 0.5
    assert reply.body["guardrails"]["hard_bounce_pct"] == 5.0


@pytest.mark.parametrize(
    ("guardrail_settings", "field"),
    [
        ({"window_hours": 0}, "guardrails.window_hours"),
        ({"window_hours": 169}, "guardrails.window_hours"),
        ({"hard_bounce_pct": 101}, "guardrails.hard_bounce_pct"),
        ({"complaint_pct": -0.1}, "guardrails.complaint_pct"),
        ({"min_sent": 0}, "guardrails.min_sent"),
        ({"enabled": "sometimes"}, "guardrails.enabled"),
        ({"max_rate": 3}, "guardrails.max_rate"),
    ],
)
def test_bad_guardrail_settings_are_refused_naming_the_field(
    herald: Herald, guardrail_settings: dict[str, Any], field: str
) -> None:
    body = {"name": "n", "description": "d", "guardrails": guardrail_settings}
    reply = herald.call("POST", "/campaigns", body)
    assert reply.status == 422, reply.body
    assert reply.body["errors"][0]["field"] == field, reply.body


# --------------------------------------------------------------------------
# Hour rows
# --------------------------------------------------------------------------


def test_sends_and_hard_bounces_are_counted_in_hour_rows_once_with_a_ttl(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1")
    message = sent_email(herald)  # the sender's tally, at 12:00
    eight_days = int((NOW + timedelta(days=8)).timestamp())
    [(_, sends)] = stats_store.read_hours("campaign#spring", "hour#2026-11-23T00", "hour#2026-11-23T23").items()
    assert (sends["sent"], sends["expiration"]) == (1, eight_days)
    bounce = sns_wrap(ses_event(message, "Bounce"))  # occurred 12:05:02, applied at 14:00: counted in hour 12
    time_.advance(hours=2)
    ingest(herald, bounce, bounce)

    rows = stats_store.read_hours("campaign#spring", "hour#2026-11-23T00", "hour#2026-11-23T23")
    assert set(rows) == {"hour#2026-11-23T12"}
    assert rows["hour#2026-11-23T12"]["sent"] == 1
    assert rows["hour#2026-11-23T12"]["bounced_hard"] == 1
    assert rows["hour#2026-11-23T12"]["expiration"] == eight_days


def test_a_bounce_from_the_future_counts_in_the_hour_it_was_applied(herald: Herald) -> None:
    guarded_campaign(herald)
    ingest(herald, *bad_events("bounce", 1, at=NOW + timedelta(hours=5)))
    rows = stats_store.read_hours("campaign#spring", "hour#2026-11-23T00", "hour#2026-11-23T23")
    assert {metric: row["bounced_hard"] for metric, row in rows.items()} == {"hour#2026-11-23T12": 1}


# --------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "sends", "kind", "count", "paused"),
    [
        pytest.param({}, 200, "bounce", 11, True, id="hard-bounces-5.5pct-of-200"),
        pytest.param({}, 200, "bounce", 10, False, id="hard-bounces-exactly-5pct"),
        pytest.param({}, 199, "bounce", 50, False, id="fewer-than-200-sent"),
        pytest.param({}, 1000, "complaint", 2, True, id="complaints-0.2pct"),
        pytest.param({}, 1000, "complaint", 1, False, id="complaints-exactly-0.1pct"),
        pytest.param({"enabled": False}, 200, "bounce", 40, False, id="disabled"),
        pytest.param({"hard_bounce_pct": 1.0, "min_sent": 50}, 50, "bounce", 1, True, id="own-thresholds"),
    ],
)
def test_a_rate_strictly_above_its_threshold_with_enough_sent_pauses_the_campaign(
    herald: Herald, settings: dict[str, Any], sends: int, kind: str, count: int, paused: bool
) -> None:
    guarded_campaign(herald, **settings)
    sent(sends)
    ingest(herald, *bad_events(kind, count))
    assert waiting(herald) == 0
    assert state_of().state == ("Stopped" if paused else "Launched")
    assert len(guardrail_alerts(herald)) == (1 if paused else 0)


def test_the_pause_happens_once_with_its_figures_recorded_and_published(
    herald: Herald, inbox: Callable[[], list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    guarded_campaign(herald)
    guarded_campaign(herald, "other")
    sent(200)
    sent(400, "other")
    version = herald.call("GET", "/campaigns/spring").body["version"]
    ingest(herald, *bad_events("bounce", 11), *bad_events("complaint", 1, "other"))
    ingest(herald, *bad_events("bounce", 3))  # more bad news for a paused campaign: no second pause or alert

    campaign = herald.call("GET", "/campaigns/spring").body
    assert campaign["state"] == "Stopped"
    assert campaign["paused_by"] == "guardrail"
    assert campaign["stopped_reason"].startswith("guardrail: hard-bounce rate 5.50% above 5%")
    assert campaign["stopped_at"] == clock.to_iso(NOW)
    assert campaign["version"] == version + 1  # an edit read before the pause cannot save it back to Launched
    assert state_of().live_type is None  # off the tick's LiveIndex
    [alert] = guardrail_alerts(herald)
    assert alert["figures"] == {
        "window_hours": 24,
        "window_from": "2026-11-22T13:00:00.000Z",
        "window_to_hour": "2026-11-23T12",
        "sent": 200,
        "hard_bounces": 11,
        "complaints": 0,
        "hard_bounce_pct": 5.5,
        "complaint_pct": 0.0,
        "hard_bounce_threshold_pct": 5.0,
        "complaint_threshold_pct": 0.1,
        "min_sent": 200,
        "breached": ["hard_bounce"],
    }
    assert "11 of 200 sent" in alert["message"]
    assert state_of("other").state == "Stopped"  # 1 complaint in 400 = 0.25 %

    published = inbox()
    by_campaign = {n["MessageAttributes"]["campaign_id"]["Value"]: json.loads(n["Message"]) for n in published}
    assert len(published) == 2 and set(by_campaign) == {"spring", "other"}
    assert by_campaign["spring"]["kind"] == "guardrail"
    assert by_campaign["spring"]["figures"] == alert["figures"]
    assert by_campaign["other"]["figures"]["breached"] == ["complaint"]
    assert by_campaign["other"]["figures"]["complaint_pct"] == 0.25
    assert not list(AlertOutboxRecord.query(guardrails.OUTBOX))
    assert metric_total(capsys.readouterr().out, "GuardrailPauses") == 2


def test_a_paused_campaign_sends_nothing_more(herald: Herald) -> None:
    contact(herald, "c1")
    guarded_campaign(herald)
    sent(200)
    ingest(herald, *bad_events("bounce", 11))
    deliver(herald, {"contact_id": "c1", "sends": [send("spring")]})
    held = record("spring", "c1")
    assert held is not None and (held.status, held.reason) == (messages.DEFERRED, "campaign stopped")
    assert emails() == []


def test_a_campaign_stopped_by_an_operator_is_left_alone(herald: Herald) -> None:
    guarded_campaign(herald)
    sent(200)
    assert herald.call("POST", "/campaigns/spring/stop").status == 200
    ingest(herald, *bad_events("bounce", 20))
    campaign = herald.call("GET", "/campaigns/spring").body
    assert (campaign["state"], campaign["paused_by"]) == ("Stopped", "operator")
    assert guardrail_alerts(herald) == []


# --------------------------------------------------------------------------
# The sliding window
# --------------------------------------------------------------------------


def test_bounces_older_than_the_window_do_not_count(herald: Herald, time_: Clock) -> None:
    guarded_campaign(herald, "day", window_hours=24)
    guarded_campaign(herald, "two-days", window_hours=48)
    for campaign_id in ("day", "two-days"):
        sent(100, campaign_id)  # too few to judge: 20 % bounce, no pause
        ingest(herald, *bad_events("bounce", 20, campaign_id))
    assert state_of("day").state == state_of("two-days").state == "Launched"

    time_.advance(hours=30)
    for campaign_id in ("day", "two-days"):
        sent(200, campaign_id)
        ingest(herald, *bad_events("bounce", 1, campaign_id))

    assert state_of("day").state == "Launched"  # 1 of 200 in its last 24 hours
    assert state_of("two-days").state == "Stopped"  # 21 of 300 in its last 48 hours
    [alert] = guardrail_alerts(herald, "two-days")
    assert (alert["figures"]["sent"], alert["figures"]["hard_bounces"]) == (300, 21)


# --------------------------------------------------------------------------
# Resume
# --------------------------------------------------------------------------


def test_after_a_resume_only_new_evidence_trips_it_again(herald: Herald, time_: Clock) -> None:
    guarded_campaign(herald)
    sent(200)
    ingest(herald, *bad_events("bounce", 11))
    assert state_of().state == "Stopped"

    time_.advance(hours=2)
    resumed = herald.call("POST", "/campaigns/spring/resume")
    assert resumed.status == 200, resumed.body
    assert (resumed.body["state"], resumed.body["paused_by"], resumed.body["stopped_reason"]) == (
        "Launched",
        None,
        None,
    )
    ingest(herald, *bad_events("bounce", 1, at=NOW + timedelta(minutes=30)))  # a late bounce of the old sends
    assert state_of().state == "Launched"

    time_.advance(minutes=10)
    sent(200)
    ingest(herald, *bad_events("bounce", 10))  # 5 % of the new sends
    assert state_of().state == "Launched"
    ingest(herald, *bad_events("bounce", 1))
    assert state_of().state == "Stopped"
    newest = guardrail_alerts(herald)[0]
    assert len(guardrail_alerts(herald)) == 2
    assert (newest["figures"]["sent"], newest["figures"]["hard_bounces"]) == (200, 11)
    assert newest["figures"]["window_from"] == "2026-11-23T14:00:00.000Z"


def test_a_resume_in_the_same_hour_counts_only_what_came_after_it(herald: Herald, time_: Clock) -> None:
    guarded_campaign(herald)
    sent(200)
    ingest(herald, *bad_events("bounce", 11))
    time_.advance(minutes=20)
    assert herald.call("POST", "/campaigns/spring/resume").status == 200
    sent(199)
    ingest(herald, *bad_events("bounce", 15))
    assert state_of().state == "Launched"  # 199 new sends: too few, though the hour holds 399
    sent(1)
    ingest(herald, *bad_events("bounce", 1))
    assert state_of().state == "Stopped"  # 16 of 200 since the resume


# --------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------


def test_a_failed_publish_keeps_the_alert_and_the_tick_publishes_it(
    herald: Herald,
    inbox: Callable[[], list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    guarded_campaign(herald)
    sent(200)

    def unavailable(self: alerts.Notifier, campaign_id: str, subject: str, message: dict[str, Any]) -> None:
        raise ClientError({"Error": {"Code": "InternalError"}}, "Publish")

    with monkeypatch.context() as patch:
        patch.setattr(alerts.Notifier, "publish", unavailable)
        ingest(herald, *bad_events("bounce", 11))

    assert waiting(herald) == 0
    assert state_of().state == "Stopped"
    assert len(guardrail_alerts(herald)) == 1
    assert len(list(AlertOutboxRecord.query(guardrails.OUTBOX))) == 1
    assert inbox() == []
    assert metric_total(capsys.readouterr().out, "GuardrailAlertPublishFailures") == 1

    herald.host.invoke("CampaignTickFunction", load_event("campaign_tick/scheduled"))
    [published] = inbox()
    assert published["MessageAttributes"]["campaign_id"]["Value"] == "spring"
    assert json.loads(published["Message"])["figures"]["hard_bounces"] == 11
    assert not list(AlertOutboxRecord.query(guardrails.OUTBOX))


def test_a_guardrail_error_never_fails_ses_event_ingestion(
    herald: Herald, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    guarded_campaign(herald)
    guarded_campaign(herald, "other")
    sent(200)
    sent(200, "other")
    ingest(herald, *bad_events("bounce", 10))
    real_read_hours = stats_store.read_hours

    def throttled(*args: Any, **kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "Query")

    def throttled_for_other(subject: str, first: str, last: str) -> Any:  # checked first ("other" < "spring")
        return throttled() if subject == "campaign#other" else real_read_hours(subject, first, last)

    monkeypatch.setattr(guardrails.stats_store, "read_hours", throttled_for_other)
    records = load_event("event_ingestion/bounce")["Records"]
    bodies = [*bad_events("bounce", 1), *bad_events("bounce", 1, "other")]
    event = {"Records": [{**records[0], "messageId": f"r{i}", "body": json.dumps(b)} for i, b in enumerate(bodies)]}
    capsys.readouterr()
    assert herald.host.invoke("EventIngestionFunction", event) == {"batchItemFailures": []}
    assert stats_store.read_stats("campaign#other", "total")["total"]["bounced_hard"] == 1
    assert state_of("other").state == "Launched"
    assert state_of().state == "Stopped"  # one campaign's failure does not keep the others unchecked
    assert metric_total(capsys.readouterr().out, "GuardrailErrors") == 1

    monkeypatch.setattr(guardrails, "check", throttled)  # failing as a whole, too
    event = {"Records": [{**records[0], "body": json.dumps(bad_events("bounce", 1)[0])}]}
    assert herald.host.invoke("EventIngestionFunction", event) == {"batchItemFailures": []}
    assert stats_store.read_stats("campaign#spring", "total")["total"]["bounced_hard"] == 12
    assert metric_total(capsys.readouterr().out, "GuardrailErrors") == 1


def test_a_checker_that_read_the_campaign_before_an_operator_stopped_it_does_not_pause_it(herald: Herald) -> None:
    guarded_campaign(herald)
    sent(200)
    stale = state_of()  # read while Launched ...
    assert herald.call("POST", "/campaigns/spring/stop").status == 200  # ... stopped meanwhile
    settings = guardrails.settings_of(stale)
    window = guardrails.measure("spring", 24, clock.now())
    window = guardrails.Window(window.first_hour, window.last_hour, 200, 50, 0)
    assert guardrails.pause(stale, settings, window, ["hard_bounce"], clock.now(), None, guardrails.Report()) is False
    assert guardrail_alerts(herald) == []
    assert state_of().paused_by == "operator"
    assert not list(AlertOutboxRecord.query(guardrails.OUTBOX))
