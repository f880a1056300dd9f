"""SES event ingestion: the shapes AWS documents, each applied once, and what the sender does next."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from herald.activity import service as activity
from herald.delivery import ingestion
from herald.store import contacts as contact_store
from herald.store import messages, suppressions
from herald.store.tables import MessageRecord
from tests.harness import Herald, load_event
from tests.integration.test_sender import (  # noqa: F401 - fixtures
    EMAIL,
    SMS,
    _reset,
    campaign,
    consent,
    contact,
    deliver,
    emails,
    record,
    send,
    sms,
    stats,
    time_,
)

pytestmark = pytest.mark.usefixtures("time_")

# --------------------------------------------------------------------------
# The documented shapes (docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-examples.html
# and notification-contents.html), addressed to the message under test.
# --------------------------------------------------------------------------

DETAILS: dict[str, tuple[str, dict[str, Any]]] = {
    "Bounce": (
        "bounce",
        {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": "RECIPIENT",
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
            "timestamp": "2026-11-23T12:05:02.669Z",
            "feedbackId": "01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000",
            "reportingMTA": "dsn; mta.example.com",
        },
    ),
    "Complaint": (
        "complaint",
        {
            "complainedRecipients": [{"emailAddress": "RECIPIENT"}],
            "timestamp": "2026-11-23T12:06:01.000Z",
            "feedbackId": "01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000",
            "userAgent": "Mozilla/5.0",
            "complaintFeedbackType": "abuse",
            "arrivalDate": "2026-11-23T12:06:00.000Z",
        },
    ),
    "Delivery": (
        "delivery",
        {
            "timestamp": "2026-11-23T12:00:02.669Z",
            "processingTimeMillis": 546,
            "recipients": ["RECIPIENT"],
            "smtpResponse": "250 2.6.0 Message received",
            "reportingMTA": "mta.example.com",
        },
    ),
    "Open": (
        "open",
        {
            "ipAddress": "192.0.2.1",
            "timestamp": "2026-11-23T12:10:19.652Z",
            "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 10_3_3 like Mac OS X)",
        },
    ),
    "Click": (
        "click",
        {
            "ipAddress": "192.0.2.1",
            "link": "https://example.com/offer",
            "linkTags": {"samplekey0": ["samplevalue0"]},
            "timestamp": "2026-11-23T12:11:07.000Z",
            "userAgent": "Mozilla/5.0",
        },
    ),
    "Reject": ("reject", {"reason": "Bad content"}),
    "Rendering Failure": (
        "failure",
        {"errorMessage": "Attribute 'attributeName' is not present in the rendering data.", "templateName": "t"},
    ),
}


def ses_event(
    message: MessageRecord | None,
    event_type: str,
    *,
    notification: bool = False,
    recipient: str = "c1@example.org",
    bounce_type: str = "Permanent",
    feedback: str = "",
    ses_message_id: str | None = None,
    tags: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """An SES event record as SES publishes it (tags only in the event-publishing format)."""
    name, detail = DETAILS[event_type]
    detail = json.loads(json.dumps(detail).replace("RECIPIENT", recipient))
    if event_type == "Bounce":
        detail["bounceType"] = bounce_type
        detail["bounceSubType"] = "General"
    if feedback:
        detail["feedbackId"] = feedback
        detail["timestamp"] = detail.get("timestamp", "2026-11-23T12:00:00.000Z")[:-4] + feedback[-3:].zfill(3) + "Z"
    mail: dict[str, Any] = {
        "timestamp": "2026-11-23T12:00:00.012Z",
        "source": "Sender Name <campaigns@example.com>",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/campaigns@example.com",
        "sendingAccountId": "123456789012",
        "messageId": ses_message_id or (message.provider_message_id if message is not None else "unknown"),
        "destination": [recipient],
        "headersTruncated": False,
        "headers": [{"name": "From", "value": "campaigns@example.com"}, {"name": "To", "value": recipient}],
        "commonHeaders": {"from": ["campaigns@example.com"], "to": [recipient], "subject": "Hi Ada"},
    }
    if not notification:
        mail["tags"] = tags or {
            "ses:configuration-set": ["herald"],
            "ses:source-ip": ["192.0.2.0"],
            "campaign_id": [message.campaign_id if message else "spring"],
            "contact_id": [message.contact_id if message else "c1"],
            "message_id": [message.message_id if message else "nope"],
        }
    return {"notificationType" if notification else "eventType": event_type, name: detail, "mail": mail}


def sns_wrap(event: dict[str, Any], sns_id: str | None = None) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": sns_id or str(uuid.uuid4()),
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:herald-ses-events-dev",
        "Message": json.dumps(event),
        "Timestamp": "2026-11-23T12:05:03.000Z",
        "SignatureVersion": "1",
    }


def ingest(h: Herald, *bodies: dict[str, Any] | str) -> None:
    sqs = boto3.client("sqs")
    for body in bodies:
        text = body if isinstance(body, str) else json.dumps(body)
        sqs.send_message(QueueUrl=h.queue_url("SesEventsQueue"), MessageBody=text)
    h.drain("EventIngestionFunction")


def waiting(h: Herald) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=h.queue_url("SesEventsQueue"),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def sent_email(h: Herald, campaign_id: str = "spring") -> MessageRecord:
    """Send one email of ``campaign_id`` to c1 through the sender; its message record."""
    campaign(campaign_id, [EMAIL])
    before = len(emails())
    deliver(h, {"contact_id": "c1", "sends": [send(campaign_id)]})
    assert len(emails()) == before + 1
    message = record(campaign_id, "c1")
    assert message is not None and message.status == messages.SENT and message.provider_message_id
    return message


def events_of(contact_id: str, event_type: str) -> list[Any]:
    return [e for e in activity.list_events(contact_id) if e.type == event_type]


def metric_total(out: str, name: str) -> int:
    values = [
        json.loads(line)[name]
        for line in out.splitlines()
        if line.startswith("{") and f'"{name}"' in line and "_aws" in line
    ]
    return int(sum(sum(v) if isinstance(v, list) else v for v in values))


# --------------------------------------------------------------------------
# Each documented shape, delivered twice, applied once
# --------------------------------------------------------------------------

FORMATS = [
    pytest.param(False, True, id="event-publishing-sns"),
    pytest.param(False, False, id="event-publishing-raw"),
    pytest.param(True, True, id="notification-sns"),
    pytest.param(True, False, id="notification-raw"),
]


@pytest.mark.parametrize(("notification", "wrapped"), FORMATS)
@pytest.mark.parametrize(
    ("bounce_type", "hard", "soft", "stat"),
    [
        ("Permanent", True, 0, "bounced_hard"),
        ("Transient", False, 1, "bounced_soft"),
        ("Undetermined", False, 1, "bounced_soft"),
    ],
)
def test_bounces_are_applied_once(
    herald: Herald, notification: bool, wrapped: bool, bounce_type: str, hard: bool, soft: int, stat: str
) -> None:
    contact(herald, "c1")
    message = sent_email(herald)
    version = contact_store.get("c1").version  # type: ignore[union-attr]
    event = ses_event(message, "Bounce", notification=notification, bounce_type=bounce_type)
    body = sns_wrap(event) if wrapped else event

    ingest(herald, body, body)
    ingest(herald, copy.deepcopy(body))

    after = contact_store.get("c1")
    assert after is not None
    assert after.bounce.hard is hard
    assert after.bounce.soft_count == soft
    assert after.bounce.last_bounce_at == "2026-11-23T12:05:02.669Z"
    assert after.version == version + 1
    assert stats("spring").get(stat) == 1
    assert "bounced_hard" not in stats("spring") or stat == "bounced_hard"
    assert waiting(herald) == 0


@pytest.mark.parametrize(("notification", "wrapped"), FORMATS)
def test_a_complaint_suppresses_email_once_and_the_next_email_is_suppressed_for_it(
    herald: Herald, notification: bool, wrapped: bool
) -> None:
    contact(herald, "c1", phone="+447700900123", consent=consent("email", "sms"))
    message = sent_email(herald)
    event = ses_event(message, "Complaint", notification=notification)
    body = sns_wrap(event) if wrapped else event

    ingest(herald, body, body)

    assert suppressions.of_contact("c1") == {"email#all": "complaint"}
    assert stats("spring").get("complaints") == 1
    contact_after = contact_store.get("c1")
    assert contact_after is not None and not contact_after.bounce.hard and contact_after.bounce.soft_count == 0

    campaign("next", [EMAIL, SMS])
    deliver(herald, {"contact_id": "c1", "sends": [send("next")]})
    suppressed = record("next", "c1", index=0)
    assert suppressed is not None and suppressed.status == messages.SUPPRESSED and suppressed.reason == "complaint"
    assert len(emails()) == 1  # only the first one
    assert len(sms()) == 1  # the complaint was about email only
    assert stats("next").get("suppressed_complaint") == 1


@pytest.mark.parametrize(("notification", "wrapped"), FORMATS)
def test_a_delivery_sets_delivered_at_once(herald: Herald, notification: bool, wrapped: bool) -> None:
    contact(herald, "c1")
    message = sent_email(herald)
    event = ses_event(message, "Delivery", notification=notification)
    body = sns_wrap(event) if wrapped else event

    ingest(herald, body, body)

    after = messages.get(message.message_id)
    assert after is not None and after.delivered_at == "2026-11-23T12:00:02.669Z"
    assert after.status == messages.SENT
    assert stats("spring").get("delivered") == 1


@pytest.mark.parametrize("wrapped", [True, False], ids=["sns", "raw"])
@pytest.mark.parametrize(
    ("event_type", "activity_type", "stat"),
    [("Open", "campaign.opened", "opened"), ("Click", "campaign.clicked", "clicked")],
)
def test_opens_and_clicks_become_activity_once(
    herald: Herald, wrapped: bool, event_type: str, activity_type: str, stat: str
) -> None:
    contact(herald, "c1")
    message = sent_email(herald)
    event = ses_event(message, event_type)
    body = sns_wrap(event) if wrapped else event

    ingest(herald, body, body)
    if wrapped:  # the same SES event published again under another SNS id: one activity event still
        ingest(herald, sns_wrap(event))

    recorded = events_of("c1", activity_type)
    assert len(recorded) == 1
    assert recorded[0].properties["campaign_id"] == "spring"
    assert recorded[0].properties["message_id"] == message.message_id
    if event_type == "Click":
        assert recorded[0].properties["link"] == "https://example.com/offer"
    contact_after = contact_store.get("c1")
    assert contact_after is not None
    responded = contact_after.campaigns_opened if event_type == "Open" else contact_after.campaigns_clicked
    assert responded == ["spring"]
    assert stats("spring").get(stat) == (2 if wrapped else 1)  # two SNS deliveries of one event count twice


@pytest.mark.parametrize("wrapped", [True, False], ids=["sns", "raw"])
@pytest.mark.parametrize("event_type", ["Reject", "Rendering Failure"])
def test_rejects_and_rendering_failures_fail_the_message_and_are_never_bounces(
    herald: Herald, wrapped: bool, event_type: str
) -> None:
    contact(herald, "c1")
    message = sent_email(herald)
    event = ses_event(message, event_type)
    body = sns_wrap(event) if wrapped else event

    ingest(herald, body, body)

    after = messages.get(message.message_id)
    assert after is not None and after.status == messages.FAILED
    expected = "Bad content" if event_type == "Reject" else "is not present in the rendering data"
    assert after.reason is not None and expected in after.reason
    contact_after = contact_store.get("c1")
    assert contact_after is not None
    assert not contact_after.bounce.hard and contact_after.bounce.soft_count == 0
    totals = stats("spring")
    assert "bounced_hard" not in totals and "bounced_soft" not in totals
    assert totals.get("rejected" if event_type == "Reject" else "rendering_failed") == 1


# --------------------------------------------------------------------------
# What the sender does next
# --------------------------------------------------------------------------


def test_the_fifth_soft_bounce_suppresses_the_next_send(herald: Herald) -> None:
    contact(herald, "c1")
    message = sent_email(herald)
    bounces = [
        sns_wrap(ses_event(message, "Bounce", bounce_type="Transient", feedback=f"fb-{n:03d}")) for n in range(5)
    ]
    ingest(herald, *bounces[:4])
    assert contact_store.get("c1").bounce.soft_count == 4  # type: ignore[union-attr]

    sent_email(herald, "second")  # four soft bounces still send

    ingest(herald, bounces[4], bounces[4])
    assert contact_store.get("c1").bounce.soft_count == 5  # type: ignore[union-attr]
    campaign("third", [EMAIL])
    deliver(herald, {"contact_id": "c1", "sends": [send("third")]})
    third = record("third", "c1")
    assert third is not None and third.status == messages.SUPPRESSED and third.reason == "soft_bounces"
    assert len(emails()) == 2
    assert stats("spring").get("bounced_soft") == 5


def test_a_hard_bounce_for_an_old_address_changes_nothing(herald: Herald) -> None:
    contact(herald, "c1")
    message = sent_email(herald)
    ingest(herald, sns_wrap(ses_event(message, "Bounce", recipient="someone-else@example.org")))
    after = contact_store.get("c1")
    assert after is not None and not after.bounce.hard


# --------------------------------------------------------------------------
# Malformed, unknown, unmatched, transient
# --------------------------------------------------------------------------


def test_malformed_unknown_and_unmatched_records_are_counted_and_dropped(
    herald: Herald, capsys: pytest.CaptureFixture[str]
) -> None:
    contact(herald, "c1")
    message = sent_email(herald)
    capsys.readouterr()
    ingest(
        herald,
        "not json",
        {"Type": "Notification", "MessageId": "m-1", "Message": "{broken"},
        {"eventType": "Bounce", "mail": {"messageId": "x"}},  # no bounce object
        {"eventType": "Bounce", "bounce": {"bounceType": "Weird"}, "mail": {"messageId": "x"}},
        {"eventType": "Teleport", "mail": {"messageId": "x"}},
        ses_event(None, "Delivery", notification=True, ses_message_id="not-ours"),
        sns_wrap(ses_event(message, "Bounce")),
    )
    assert waiting(herald) == 0
    assert contact_store.get("c1").bounce.hard  # type: ignore[union-attr]
    out = capsys.readouterr().out
    assert metric_total(out, "SesEventsMalformed") == 4
    assert metric_total(out, "SesEventsUnknown") == 1
    assert metric_total(out, "SesEventsUnmatched") == 1
    assert metric_total(out, "SesEventsApplied") == 1


def test_a_transient_store_error_returns_only_that_record(herald: Herald, monkeypatch: pytest.MonkeyPatch) -> None:
    contact(herald, "c1")
    message = sent_email(herald)
    bounce = sns_wrap(ses_event(message, "Bounce", bounce_type="Transient"))
    delivery = sns_wrap(ses_event(message, "Delivery"))
    real_get = ingestion.contact_store.get

    def throttled(contact_id: str) -> Any:
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "GetItem")

    monkeypatch.setattr(ingestion.contact_store, "get", throttled)
    event = {
        "Records": [
            {**load_event("event_ingestion/bounce")["Records"][0], "messageId": "r-bounce", "body": json.dumps(bounce)},
            {
                **load_event("event_ingestion/bounce")["Records"][0],
                "messageId": "r-delivery",
                "body": json.dumps(delivery),
            },
        ]
    }
    result = herald.host.invoke("EventIngestionFunction", event)
    assert result == {"batchItemFailures": [{"itemIdentifier": "r-bounce"}]}
    assert messages.get(message.message_id).delivered_at is not None  # type: ignore[union-attr]

    monkeypatch.setattr(ingestion.contact_store, "get", real_get)
    assert herald.host.invoke("EventIngestionFunction", event) == {"batchItemFailures": []}
    after = contact_store.get("c1")
    assert after is not None and after.bounce.soft_count == 1
    assert stats("spring").get("delivered") == 1


def test_the_sample_event_applies_through_the_function_once(herald: Herald) -> None:
    contact(herald, "c-1001", email="recipient@example.com")
    event = load_event("event_ingestion/bounce")

    assert herald.host.invoke("EventIngestionFunction", event) == {"batchItemFailures": []}
    assert herald.host.invoke("EventIngestionFunction", event) == {"batchItemFailures": []}

    after = contact_store.get("c-1001")
    assert after is not None and after.bounce.hard and after.version == 2
    assert stats("spring-sale").get("bounced_hard") == 1


def test_an_event_published_to_the_ses_topic_reaches_the_function_sns_wrapped(herald: Herald) -> None:
    contact(herald, "c1")
    message = sent_email(herald)
    sns = boto3.client("sns")
    topic = next(
        t["TopicArn"]
        for t in sns.list_topics()["Topics"]
        if t["TopicArn"].endswith(herald.template.physical_name("SesEventsTopic"))
    )
    sns.publish(TopicArn=topic, Message=json.dumps(ses_event(message, "Bounce", bounce_type="Permanent")))
    herald.drain("EventIngestionFunction")
    after = contact_store.get("c1")
    assert after is not None and after.bounce.hard is True
    assert stats("spring").get("bounced_hard") == 1
