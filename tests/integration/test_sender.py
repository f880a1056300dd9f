"""The sender: consent and suppression at send time, contact policy and priority, idempotent delivery."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_string
from email.message import EmailMessage
from email.policy import default
from typing import Any

import boto3
import pytest
from moto.ses.models import ses_backends
from moto.sns.models import sns_backends
from moto.sqs.models import sqs_backends as sqs_backends_

from bench.common import counting_requests
from herald import clock
from herald.delivery import channels, sender
from herald.policy import service as policies
from herald.policy.model import PolicyIn
from herald.store import messages
from herald.store import stats as stats_store
from herald.store.tables import CampaignRecord, MessageRecord
from tests.harness import Herald, load_event

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ACCOUNT = "123456789012"
REGION = "us-east-1"
SENDER_EMAIL = "campaigns@example.com"
EMAIL = {
    "type": "email",
    "subject": "Hi {{ contact.first_name | default('there') }}",
    "body": "Offer for {{ contact.attributes.tier | default('you') }}",
}
SMS = {"type": "sms", "text": "{{ campaign.name }}: hello {{ contact.first_name }}"}
PUSH = {"type": "push", "title": "News", "body": "For {{ contact.first_name }}"}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def time_() -> Iterator[Clock]:
    moment = Clock()
    clock.set_clock(lambda: moment.now)
    yield moment


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    policies.clear_cache()
    yield
    channels.use(None)
    policies.clear_cache()


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def consent(*names: str) -> dict[str, Any]:
    return {name: {"granted": True, "source": "test"} for name in names}


def contact(h: Herald, contact_id: str, **fields: Any) -> None:
    body = {
        "contact_id": contact_id,
        "kind": "customer",
        "first_name": "Ada",
        "email": f"{contact_id}@example.org",
        "consent": consent("email"),
        **fields,
    }
    reply = h.call("POST", "/contacts", body)
    assert reply.status == 201, reply.body


def campaign(campaign_id: str, actions: list[dict[str, Any]], state: str = "Launched", **spec: Any) -> None:
    CampaignRecord(
        "campaign",
        campaign_id,
        name=f"Campaign {campaign_id}",
        spec={"name": f"Campaign {campaign_id}", "kind": "ad_hoc", "actions": actions, **spec},
        state=state,
        live_type="campaign" if state == "Launched" else None,
        created_at=clock.now_iso(),
        updated_at=clock.now_iso(),
    ).save()


def send(campaign_id: str, priority: int = 10, occurrence: str = "1", queued_at: datetime = NOW) -> dict[str, Any]:
    return {
        "campaign_id": campaign_id,
        "occurrence": occurrence,
        "priority": priority,
        "queued_at": clock.to_iso(queued_at),
    }


def queue(h: Herald, *bodies: dict[str, Any] | str) -> None:
    sqs = boto3.client("sqs")
    for body in bodies:
        text = body if isinstance(body, str) else json.dumps(body)
        sqs.send_message(QueueUrl=h.queue_url("DeliveryQueue"), MessageBody=text)


def deliver(h: Herald, *bodies: dict[str, Any] | str) -> None:
    queue(h, *bodies)
    h.drain("SenderFunction")


@dataclass(frozen=True)
class SentEmail:
    """An email the mock SES accepted, read back from its raw MIME (the sender sends ``Content.Raw``)."""

    id: str
    source: str
    destinations: dict[str, list[str]]
    subject: str
    body: str
    raw_data: str


def emails() -> list[SentEmail]:
    sent = []
    for message in ses_backends[ACCOUNT][REGION].sent_messages:
        mime = message_from_string(message.raw_data, policy=default)
        assert isinstance(mime, EmailMessage)
        text = mime.get_body(("plain",))
        assert text is not None
        body = str(text.get_content()).replace("\r\n", "\n")
        to = {"ToAddresses": [str(mime["To"])]}
        sent.append(SentEmail(message.id, message.source, to, str(mime["Subject"]), body, message.raw_data))
    return sent


def sms() -> list[tuple[str, str]]:
    return list(sns_backends[ACCOUNT][REGION].sms_messages.values())


def record(campaign_id: str, contact_id: str, index: int = 0, occurrence: str = "1") -> MessageRecord | None:
    return messages.get(messages.message_id(campaign_id, contact_id, occurrence, index))


def stats(campaign_id: str) -> dict[str, Any]:
    return stats_store.read_stats(f"campaign#{campaign_id}").get("total", {})


def cap_policy(max_messages: int = 1, window_hours: int = 24, expire_after_hours: int = 200) -> None:
    policies.create(
        PolicyIn(
            policy_id="daily",
            name="One email a day",
            caps=[{"channel": "email", "max_messages": max_messages, "window_hours": window_hours}],
            expire_after_hours=expire_after_hours,
        )
    )


def visible_again(h: Herald) -> None:
    """Bring back in-flight delivery messages now, as their visibility timeout would later."""
    name = h.template.physical_name("DeliveryQueue")
    for message in sqs_backends_[ACCOUNT][REGION].queues[name]._messages:
        message.change_visibility(0)


def in_flight(h: Herald) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=h.queue_url("DeliveryQueue"),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


class Recorder:
    """Wraps the real providers and counts calls."""

    def __init__(self) -> None:
        self.inner = channels.AwsChannels(SENDER_EMAIL)
        self.sent: list[channels.Outgoing] = []

    def send(self, message: channels.Outgoing) -> str:
        self.sent.append(message)
        return self.inner.send(message)


class Failing:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def send(self, message: channels.Outgoing) -> str:
        self.calls += 1
        raise self.error


# --------------------------------------------------------------------------
# Channels
# --------------------------------------------------------------------------


def test_each_channel_is_rendered_sent_and_recorded(herald: Herald, time_: Clock) -> None:
    sns = boto3.client("sns")
    app = sns.create_platform_application(Name="app", Platform="GCM", Attributes={})["PlatformApplicationArn"]
    endpoint = sns.create_platform_endpoint(PlatformApplicationArn=app, Token="device-token")["EndpointArn"]
    contact(
        herald,
        "c1",
        phone="+447700900123",
        consent=consent("email", "sms", "push"),
        attributes={"tier": "gold", "push_endpoint_arn": endpoint},
    )
    campaign("welcome", [EMAIL, SMS, PUSH])

    deliver(herald, {"contact_id": "c1", "sends": [send("welcome")]})

    [mail] = emails()
    assert mail.source == SENDER_EMAIL
    assert mail.destinations == {"ToAddresses": ["c1@example.org"]}
    assert mail.subject == "Hi Ada" and mail.body.startswith("Offer for gold\n\n-- \nUnsubscribe: https://")
    assert sms() == [("+447700900123", "Campaign welcome: hello Ada")]
    [pushed] = sns_backends[ACCOUNT][REGION].platform_endpoints[endpoint].messages.values()
    assert json.loads(json.loads(pushed)["GCM"])["notification"] == {"title": "News", "body": "For Ada"}
    for index, channel in enumerate(("email", "sms", "push")):
        stored = record("welcome", "c1", index)
        assert stored is not None
        assert (stored.status, stored.channel, stored.sent_at) == ("sent", channel, clock.to_iso(NOW))
        assert stored.provider_message_id
        assert stored.due_hour is None and stored.claim is None
    assert record("welcome", "c1").provider_message_id == mail.id  # type: ignore[union-attr]
    assert stats("welcome")["sent"] == 3
    assert stats_store.read_stats("campaign#welcome")["day#2026-11-23"]["sent"] == 3
    # Rules on campaign responses see the send.
    assert herald.call("GET", "/contacts/c1").body["campaigns_received"] == ["welcome"]


def test_email_carries_tags_that_lead_events_back_to_campaign_contact_and_message(herald: Herald, time_: Clock) -> None:
    recorder = Recorder()
    channels.use(recorder)
    contact(herald, "c.1")
    campaign("spring:sale", [EMAIL])
    deliver(herald, {"contact_id": "c.1", "sends": [send("spring:sale")]})
    [sent] = recorder.sent
    mid = messages.message_id("spring:sale", "c.1", "1", 0)
    assert sent.tags == {"campaign_id": "spring:sale", "contact_id": "c.1", "message_id": mid}
    assert channels.tag_value("spring:sale") == "spring_sale"
    assert len(mid) == 32 and int(mid, 16) >= 0


# --------------------------------------------------------------------------
# Consent and suppression at send time
# --------------------------------------------------------------------------


def test_consent_bounces_and_missing_addresses_suppress_with_their_reason(herald: Herald, time_: Clock) -> None:
    contact(herald, "no-consent", consent={"email": {"granted": False, "source": "test"}})
    contact(herald, "hard", bounce={"hard": True})
    contact(herald, "soft5", bounce={"soft_count": 5})
    contact(herald, "soft4", bounce={"soft_count": 4})
    contact(herald, "no-phone", consent=consent("email", "sms"))
    contact(herald, "no-endpoint", consent=consent("email", "push"))
    campaign("news", [EMAIL])
    campaign("texts", [SMS])
    campaign("pushes", [PUSH])

    deliver(
        herald,
        *[{"contact_id": c, "sends": [send("news")]} for c in ("no-consent", "hard", "soft5", "soft4")],
        {"contact_id": "no-phone", "sends": [send("texts")]},
        {"contact_id": "no-endpoint", "sends": [send("pushes")]},
    )

    reasons = {c: record("news", c) for c in ("no-consent", "hard", "soft5", "soft4")}
    assert {c: (r.status, r.reason) for c, r in reasons.items() if r} == {
        "no-consent": ("suppressed", "no_consent"),
        "hard": ("suppressed", "hard_bounce"),
        "soft5": ("suppressed", "soft_bounces"),
        "soft4": ("sent", None),
    }
    assert (record("texts", "no-phone").status, record("texts", "no-phone").reason) == ("suppressed", "no_address")  # type: ignore[union-attr]
    assert record("pushes", "no-endpoint").reason == "no_address"  # type: ignore[union-attr]
    assert [m.destinations["ToAddresses"] for m in emails()] == [["soft4@example.org"]]
    assert sms() == []
    total = stats("news")
    assert (total["sent"], total["suppressed"]) == (1, 3)
    assert (total["suppressed_no_consent"], total["suppressed_hard_bounce"], total["suppressed_soft_bounces"]) == (
        1,
        1,
        1,
    )
    assert stats("texts")["suppressed_no_address"] == 1


def test_a_contact_without_consent_for_one_channel_still_gets_the_other(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1", phone="+447700900123", consent=consent("sms"))
    campaign("both", [EMAIL, SMS])
    deliver(herald, {"contact_id": "c1", "sends": [send("both")]})
    assert record("both", "c1", 0).reason == "no_consent"  # type: ignore[union-attr]
    assert record("both", "c1", 1).status == "sent"  # type: ignore[union-attr]
    assert emails() == [] and len(sms()) == 1


def test_stopped_or_missing_campaigns_and_deleted_contacts_are_recorded_not_sent(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1")
    campaign("stopped", [EMAIL], state="Stopped")
    deliver(
        herald,
        {"contact_id": "c1", "sends": [send("stopped"), send("vanished")]},
        {"contact_id": "ghost", "sends": [send("stopped")]},
    )
    held = record("stopped", "c1")
    assert held is not None and (held.status, held.reason) == ("deferred", "campaign stopped")
    assert held.due_at == clock.to_iso(NOW + timedelta(hours=1))  # re-checked hourly until resumed
    assert record("vanished", "c1").reason == "campaign_deleted"  # type: ignore[union-attr]
    assert record("stopped", "ghost").reason == "contact_deleted"  # type: ignore[union-attr]
    assert emails() == []
    assert stats("stopped")["deferred"] == 1
    assert stats("stopped")["suppressed_contact_deleted"] == 1


def test_a_send_held_by_a_stop_goes_out_on_resume_or_expires(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1")
    contact(herald, "c2")
    campaign("paused", [EMAIL], state="Stopped")
    deliver(herald, {"contact_id": "c1", "sends": [send("paused")]})
    time_.advance(hours=2)
    sender.release_due(time_.now, lambda bodies: queue(herald, *bodies))
    herald.drain("SenderFunction")
    assert record("paused", "c1").status == "deferred" and emails() == []  # type: ignore[union-attr]
    resumed = CampaignRecord.get("campaign", "paused")
    resumed.state, resumed.live_type = "Launched", "campaign"
    resumed.save()
    time_.advance(hours=1)
    sender.release_due(time_.now, lambda bodies: queue(herald, *bodies))
    herald.drain("SenderFunction")
    assert record("paused", "c1").status == "sent" and len(emails()) == 1  # type: ignore[union-attr]
    resumed.state, resumed.live_type = "Stopped", None
    resumed.save()
    deliver(herald, {"contact_id": "c2", "sends": [send("paused", queued_at=time_.now - timedelta(hours=73))]})
    expired = record("paused", "c2")
    assert expired is not None and expired.status == "expired" and "stopped for more than 72" in (expired.reason or "")


# --------------------------------------------------------------------------
# Idempotency
# --------------------------------------------------------------------------


def test_a_redelivered_queue_message_sends_exactly_once(herald: Herald, time_: Clock) -> None:
    recorder = Recorder()
    channels.use(recorder)
    contact(herald, "c1")
    campaign("once", [EMAIL])
    body = {"contact_id": "c1", "sends": [send("once")]}
    deliver(herald, body, body)
    deliver(herald, body)
    assert len(recorder.sent) == 1
    assert len(emails()) == 1
    assert stats("once")["sent"] == 1
    assert record("once", "c1").status == "sent"  # type: ignore[union-attr]


def test_racing_senders_that_both_read_before_either_claims_send_once(
    herald: Herald, time_: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    channels.use(recorder)
    contact(herald, "c1")
    campaign("race", [EMAIL, {"type": "points", "points": 3}])
    monkeypatch.setattr(messages, "get_many", lambda ids: {})  # each sender's read predates the other's claim
    body = {"contact_id": "c1", "sends": [send("race")]}
    deliver(herald, body)
    deliver(herald, body)
    assert len(recorder.sent) == 1
    assert herald.call("GET", "/contacts/c1").body["attributes"] == {"points": 3}
    assert stats("race")["sent"] == 1 and stats("race")["applied_points"] == 1


def test_a_crash_after_the_provider_accepted_never_sends_again(
    herald: Herald, time_: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    channels.use(recorder)
    contact(herald, "c1")
    campaign("crash", [EMAIL])

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("worker died after the provider accepted")

    monkeypatch.setattr(messages, "sent_operation", crash)  # the batched "sent" record is never written
    deliver(herald, {"contact_id": "c1", "sends": [send("crash")]})
    assert len(recorder.sent) == 1 and in_flight(herald) == 1  # returned for retry
    monkeypatch.undo()
    channels.use(recorder)
    visible_again(herald)
    herald.drain("SenderFunction")
    assert len(recorder.sent) == 1
    assert record("crash", "c1").status == "sending"  # type: ignore[union-attr]
    assert in_flight(herald) == 0


# --------------------------------------------------------------------------
# Provider errors
# --------------------------------------------------------------------------


def test_provider_throttling_returns_the_message_for_retry_and_sends_it_later(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1")
    contact(herald, "c2")
    campaign("busy", [EMAIL])
    failing = Failing(channels.ProviderThrottled("Throttling"))
    channels.use(failing)
    queue(herald, {"contact_id": "c1", "sends": [send("busy")]})
    url = herald.queue_url("DeliveryQueue")
    sqs = boto3.client("sqs")
    [message] = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    event = {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:herald-delivery-dev",
                "awsRegion": REGION,
            },
            {
                "messageId": "malformed-1",
                "receiptHandle": "r",
                "body": "{not json",
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": "x",
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:herald-delivery-dev",
                "awsRegion": REGION,
            },
        ]
    }
    event["Records"][0]["attributes"] = {"ApproximateReceiveCount": "3"}
    response = herald.host.invoke("SenderFunction", event)
    assert response == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    assert failing.calls == 1
    assert record("busy", "c1") is None  # the claim was released, so the retry may send
    # backed off: the third receive waits 120-240 s, not the queue's 360 s visibility timeout
    [held] = sqs_backends_[ACCOUNT][REGION].queues["herald-delivery-dev"]._messages
    wait = (held.visible_at - time.time() * 1000) / 1000
    assert 110 <= wait <= 240, wait
    channels.use(None)
    visible_again(herald)
    herald.drain("SenderFunction")
    assert record("busy", "c1").status == "sent"  # type: ignore[union-attr]
    assert len(emails()) == 1 and in_flight(herald) == 0


def test_a_throttled_re_release_goes_back_to_deferred(herald: Herald, time_: Clock) -> None:
    cap_policy()
    contact(herald, "c1")
    campaign("a", [EMAIL])
    campaign("b", [EMAIL])
    deliver(herald, {"contact_id": "c1", "sends": [send("a"), send("b", priority=20)]})
    assert record("b", "c1").status == "deferred"  # type: ignore[union-attr]
    time_.advance(hours=24)
    channels.use(Failing(channels.ProviderThrottled("Throttling")))
    sender.release_due(time_.now, lambda bodies: queue(herald, *bodies))
    herald.drain("SenderFunction")
    stored = record("b", "c1")
    assert stored is not None and stored.status == "deferred" and stored.due_hour == "2026-11-24T12"
    assert in_flight(herald) == 1


def test_a_permanent_provider_error_is_recorded_failed_with_its_reason(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1")
    campaign("bad", [EMAIL])
    channels.use(Failing(channels.ProviderRejected("MessageRejected: address blacklisted")))
    deliver(herald, {"contact_id": "c1", "sends": [send("bad")]})
    stored = record("bad", "c1")
    assert stored is not None
    assert (stored.status, stored.reason) == ("failed", "MessageRejected: address blacklisted")
    assert stats("bad")["failed"] == 1
    assert in_flight(herald) == 0


def test_an_unverified_sender_is_a_permanent_failure_from_ses(herald: Herald, time_: Clock) -> None:
    channels.use(channels.AwsChannels("nobody@unverified.example"))
    contact(herald, "c1")
    campaign("unverified", [EMAIL])
    deliver(herald, {"contact_id": "c1", "sends": [send("unverified")]})
    stored = record("unverified", "c1")
    assert stored is not None and stored.status == "failed"
    assert stored.reason is not None and stored.reason.startswith("MessageRejected")


# --------------------------------------------------------------------------
# Malformed messages
# --------------------------------------------------------------------------


def test_malformed_bodies_are_counted_and_dropped_without_blocking_the_batch(
    herald: Herald, time_: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    contact(herald, "c1")
    campaign("fine", [EMAIL])
    deliver(
        herald,
        "not json",
        {"contact_id": "c1"},
        {"contact_id": "c1", "sends": [send("fine")], "extra": 1},
        {"contact_id": "c1", "sends": [{**send("fine"), "priority": 0}]},
        {"contact_id": "c1", "sends": [{**send("fine"), "queued_at": "2026-11-23T12:00:00"}]},  # no offset
        {"contact_id": "c1", "sends": [send("fine")]},
    )
    assert in_flight(herald) == 0
    assert len(emails()) == 1
    out = capsys.readouterr().out
    rejected = [
        json.loads(line)
        for line in out.splitlines()
        if line.startswith("{") and "DeliveryMessageRejected" in line and "_aws" in line
    ]
    values = [entry["DeliveryMessageRejected"] for entry in rejected]  # one number, or a list per flush
    assert sum(sum(v) if isinstance(v, list) else v for v in values) == 5


# --------------------------------------------------------------------------
# Contact policy and priority
# --------------------------------------------------------------------------


def test_a_deferred_send_is_released_after_its_slot_and_sent_once(herald: Herald, time_: Clock) -> None:
    cap_policy()
    contact(herald, "c1")
    campaign("first", [EMAIL])
    campaign("second", [EMAIL])
    deliver(herald, {"contact_id": "c1", "sends": [send("first")]})
    time_.advance(hours=1)
    deliver(herald, {"contact_id": "c1", "sends": [send("second", queued_at=time_.now)]})

    held = record("second", "c1")
    assert held is not None and held.status == "deferred"
    assert (held.due_at, held.due_hour, held.policy_id) == ("2026-11-24T12:00:00.000Z", "2026-11-24T12", "daily")
    assert held.reason is not None and "cap email 1 per 24h" in held.reason
    assert held.queued_at == "2026-11-23T13:00:00.000Z"
    assert stats("second")["deferred"] == 1

    queued: list[dict[str, Any]] = []
    assert sender.release_due(time_.advance(hours=22), queued.extend) == 0  # 11:00 next day: not yet
    assert sender.release_due(time_.advance(hours=1), queued.extend) == 1  # 12:00: the slot has come
    assert queued == [
        {
            "contact_id": "c1",
            "sends": [
                {"campaign_id": "second", "occurrence": "1", "priority": 10, "queued_at": "2026-11-23T13:00:00.000Z"}
            ],
        }
    ]
    deliver(herald, *queued, *queued)  # released twice (overlapping ticks): still one send
    sent = record("second", "c1")
    assert sent is not None and sent.status == "sent" and sent.due_hour is None and sent.deferrals == 1
    assert [m.subject for m in emails()] == ["Hi Ada", "Hi Ada"]
    assert sender.release_due(time_.now, queued.extend) == 0
    assert (stats("second")["sent"], stats("second")["deferred"]) == (1, 1)


def test_a_send_held_past_its_expiry_is_recorded_expired(herald: Herald, time_: Clock) -> None:
    cap_policy(expire_after_hours=12)
    contact(herald, "c1")
    campaign("first", [EMAIL])
    campaign("late", [EMAIL])
    deliver(herald, {"contact_id": "c1", "sends": [send("first"), send("late", priority=20)]})
    expired = record("late", "c1")
    assert expired is not None
    assert (expired.status, expired.policy_id, expired.due_hour) == ("expired", "daily", None)
    assert expired.reason is not None and "cap email" in expired.reason
    assert stats("late")["expired"] == 1
    assert len(emails()) == 1


def test_a_deferred_send_of_a_campaign_stopped_meanwhile_waits_for_its_resume(herald: Herald, time_: Clock) -> None:
    cap_policy()
    contact(herald, "c1")
    campaign("a", [EMAIL])
    campaign("b", [EMAIL])
    deliver(herald, {"contact_id": "c1", "sends": [send("a"), send("b", priority=20)]})
    stopped = CampaignRecord.get("campaign", "b")
    stopped.state, stopped.live_type = "Stopped", None
    stopped.save()
    time_.advance(hours=24)
    sender.release_due(time_.now, lambda bodies: queue(herald, *bodies))
    herald.drain("SenderFunction")
    stored = record("b", "c1")
    assert stored is not None and (stored.status, stored.reason) == ("deferred", "campaign stopped")
    assert len(emails()) == 1


def test_four_kinds_compete_under_a_daily_cap_and_go_out_in_priority_order(herald: Herald, time_: Clock) -> None:
    cap_policy(expire_after_hours=200)
    contact(herald, "c1")
    kinds = {"adhoc": 10, "birthday": 20, "lifecycle": 30, "login": 40}
    for name in kinds:
        campaign(name, [{"type": "email", "subject": name, "body": "b"}])
    shuffled = [send(name, priority=kinds[name]) for name in ("login", "lifecycle", "adhoc", "birthday")]
    deliver(herald, {"contact_id": "c1", "sends": shuffled})

    assert [m.subject for m in emails()] == ["adhoc"]
    statuses = {name: record(name, "c1").status for name in kinds}  # type: ignore[union-attr]
    assert statuses == {"adhoc": "sent", "birthday": "deferred", "lifecycle": "deferred", "login": "deferred"}

    order = ["adhoc"]
    for _ in range(3):
        time_.advance(hours=24)
        assert sender.release_due(time_.now, lambda bodies: queue(herald, *bodies)) >= 1
        herald.drain("SenderFunction")
        order = [m.subject for m in emails()]
    assert order == ["adhoc", "birthday", "lifecycle", "login"]
    assert {name: record(name, "c1").status for name in kinds} == dict.fromkeys(kinds, "sent")  # type: ignore[union-attr]
    assert {name: stats(name).get("deferred", 0) for name in kinds} == {
        "adhoc": 0,
        "birthday": 1,
        "lifecycle": 1,
        "login": 1,
    }
    assert record("login", "c1").deferrals == 3  # type: ignore[union-attr]


def test_the_cap_counts_history_only_for_its_channel(herald: Herald, time_: Clock) -> None:
    cap_policy()
    contact(herald, "c1", phone="+447700900123", consent=consent("email", "sms"))
    campaign("text", [SMS])
    campaign("mail", [EMAIL])
    deliver(herald, {"contact_id": "c1", "sends": [send("text"), send("mail", priority=20)]})
    assert record("text", "c1").status == "sent"  # type: ignore[union-attr]
    assert record("mail", "c1").status == "sent"  # type: ignore[union-attr]
    assert sender.history("c1", NOW - timedelta(hours=1))[0].channel in ("sms", "email")
    assert sorted(s.channel for s in sender.history("c1", NOW - timedelta(hours=1))) == ["email", "sms"]


# --------------------------------------------------------------------------
# Points and stage
# --------------------------------------------------------------------------


def test_points_and_stage_are_applied_once_per_occurrence(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1", attributes={"points": 5, "tier": "gold"})
    contact(herald, "bare")
    campaign("reward", [{"type": "points", "points": 10}, {"type": "stage", "stage": "vip"}])
    body = {"contact_id": "c1", "sends": [send("reward")]}
    deliver(herald, body, body, {"contact_id": "bare", "sends": [send("reward")]})
    deliver(herald, body)

    c1 = herald.call("GET", "/contacts/c1").body
    assert c1["attributes"] == {"points": 15, "tier": "gold", "stage": "vip"}
    assert c1["version"] == 3  # created at 1; one bump per action
    bare = herald.call("GET", "/contacts/bare").body
    assert bare["attributes"] == {"points": 10, "stage": "vip"}
    for index, channel in enumerate(("points", "stage")):
        stored = record("reward", "c1", index)
        assert stored is not None and (stored.status, stored.channel) == ("sent", channel)
    assert stats("reward")["applied_points"] == 2 and stats("reward")["applied_stage"] == 2
    assert "sent" not in stats("reward")

    deliver(herald, {"contact_id": "c1", "sends": [send("reward", occurrence="2")]})  # a new occurrence applies again
    assert herald.call("GET", "/contacts/c1").body["attributes"]["points"] == 25


def test_points_on_a_non_numeric_attribute_fail_with_a_reason(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1", attributes={"points": "many"})
    campaign("reward", [{"type": "points", "points": 10}])
    deliver(herald, {"contact_id": "c1", "sends": [send("reward")]})
    stored = record("reward", "c1")
    assert stored is not None and (stored.status, stored.reason) == ("failed", "points_not_numeric")
    assert herald.call("GET", "/contacts/c1").body["attributes"] == {"points": "many"}


def test_the_sample_event_is_a_valid_delivery(herald: Herald, time_: Clock) -> None:
    contact(herald, "c-1001")
    campaign("spring-sale", [EMAIL])
    response = herald.host.invoke("SenderFunction", load_event("sender/delivery"))
    assert response == {"batchItemFailures": []}
    assert record("spring-sale", "c-1001").status == "sent"  # type: ignore[union-attr]
    assert record("birthday", "c-1001", occurrence="birthday#2026").reason == "campaign_deleted"  # type: ignore[union-attr]


# --------------------------------------------------------------------------
# The batch: claimed together, recorded together
# --------------------------------------------------------------------------


def test_a_batch_is_claimed_and_recorded_in_packed_transactions(herald: Herald, time_: Clock) -> None:
    recorder = Recorder()
    channels.use(recorder)
    for n in range(10):
        contact(herald, f"c{n}")
    campaign("batch", [EMAIL])
    with counting_requests() as counter:
        deliver(herald, *[{"contact_id": f"c{n}", "sends": [send("batch")]} for n in range(10)])
    assert len(recorder.sent) == 10
    assert all(record("batch", f"c{n}").status == "sent" for n in range(10))  # type: ignore[union-attr]
    # one claim transaction and one "sent + received" transaction for the ten
    assert counter.calls[("dynamodb", "TransactWriteItems")] == 2
    received = herald.call("GET", "/contacts/c7/events").body["items"]
    assert [e["type"] for e in received] == ["campaign.received"]
    assert herald.call("GET", "/contacts/c7").body["campaigns_received"] == ["batch"]


def test_a_contact_changed_between_read_and_record_is_recorded_one_by_one(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1")
    contact(herald, "c2")
    campaign("busy", [EMAIL])

    class EditingWhileSending(Recorder):
        def send(self, message: Any) -> str:
            if message.to == "c2@example.org":  # the contact changes after the sender read it
                etag = herald.call("GET", "/contacts/c2").etag
                assert herald.call("PATCH", "/contacts/c2", {"first_name": "Bo"}, {"If-Match": etag}).status == 200
            return super().send(message)

    recorder = EditingWhileSending()
    channels.use(recorder)
    deliver(herald, {"contact_id": "c1", "sends": [send("busy")]}, {"contact_id": "c2", "sends": [send("busy")]})
    assert len(recorder.sent) == 2
    for contact_id in ("c1", "c2"):
        assert record("busy", contact_id).status == "sent"  # type: ignore[union-attr]
        body = herald.call("GET", f"/contacts/{contact_id}").body
        assert body["campaigns_received"] == ["busy"]
    assert herald.call("GET", "/contacts/c2").body["first_name"] == "Bo"  # the edit is kept
    assert stats("busy")["sent"] == 2


@pytest.mark.parametrize(("receives", "low", "high"), [(1, 30, 60), (2, 60, 120), (4, 240, 480), (9, 450, 900)])
def test_throttled_deliveries_back_off_exponentially_up_to_fifteen_minutes(receives: int, low: int, high: int) -> None:
    delays = {sender.retry_delay(receives) for _ in range(50)}
    assert all(low <= d <= high for d in delays) and len(delays) > 1


def test_a_contact_in_two_deliveries_of_one_batch_is_capped_across_both(herald: Herald, time_: Clock) -> None:
    cap_policy(max_messages=1, window_hours=24)
    contact(herald, "c1")
    campaign("a", [{"type": "email", "subject": "A", "body": "a"}])
    campaign("b", [{"type": "email", "subject": "B", "body": "b"}], priority=20)
    # the tick's message and a release's message for the same contact, in one SQS batch
    deliver(herald, {"contact_id": "c1", "sends": [send("a")]}, {"contact_id": "c1", "sends": [send("b", priority=20)]})
    assert [m.subject for m in emails()] == ["A"]
    assert record("b", "c1").status == "deferred"  # type: ignore[union-attr]


def test_without_time_for_a_wave_nothing_is_claimed_and_the_delivery_is_retried(herald: Herald, time_: Clock) -> None:
    recorder = Recorder()
    channels.use(recorder)
    contact(herald, "c1")
    campaign("late", [EMAIL])
    out_of_time = sender.Sender(recorder, has_time=lambda: False)
    body = sender.DeliveryIn.model_validate({"contact_id": "c1", "sends": [send("late")]})
    failures = out_of_time.deliver_batch([body])
    assert isinstance(failures[0], sender.Transient) and recorder.sent == []
    assert record("late", "c1") is None  # unclaimed: the retry sends it
    assert sender.Sender(recorder).deliver_batch([body]) == {}
    assert len(recorder.sent) == 1 and record("late", "c1").status == "sent"  # type: ignore[union-attr]


def test_claims_committed_before_a_store_error_are_released(
    herald: Herald, time_: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    channels.use(recorder)
    contact(herald, "c1")
    campaign("flaky", [EMAIL])
    real = sender.commit_units

    def commit_then_fail(units: Any) -> Any:
        real(units)  # the claims are written ...
        raise RuntimeError("... and then DynamoDB throttles the next chunk")

    monkeypatch.setattr(sender, "commit_units", commit_then_fail)
    body = sender.DeliveryIn.model_validate({"contact_id": "c1", "sends": [send("flaky")]})
    failures = sender.Sender(recorder).deliver_batch([body])
    assert isinstance(failures[0], sender.Transient) and recorder.sent == []
    assert record("flaky", "c1") is None  # released, so the retry can send
    monkeypatch.undo()
    channels.use(recorder)
    assert sender.Sender(recorder).deliver_batch([body]) == {}
    assert len(recorder.sent) == 1


def test_the_guardrails_hour_row_counts_emails_only(herald: Herald, time_: Clock) -> None:
    recorder = Recorder()
    channels.use(recorder)
    contact(herald, "c1", phone="+447700900001", consent=consent("email", "sms"))
    campaign("mixed", [EMAIL, {"type": "sms", "text": "Hi"}])
    deliver(herald, {"contact_id": "c1", "sends": [send("mixed")]})
    assert len(recorder.sent) == 2 and stats("mixed")["sent"] == 2
    hours = stats_store.read_stats("campaign#mixed", "hour#")
    assert [row["sent"] for row in hours.values()] == [1]
