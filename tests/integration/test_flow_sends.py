"""Flow step sends through the campaign sender: content, once-only, holds, stats and engagement (issue 6)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from email import message_from_string
from email.message import EmailMessage
from email.policy import default
from typing import Any

import pytest

from herald import clock
from herald.delivery import channels, sender, webhook
from herald.flows import sends
from herald.flows.model import FlowIn
from herald.store import flows as flow_store
from herald.store import messages
from herald.store import stats as stats_store
from herald.store.tables import FlowRecord, FlowVersionRecord, MessageRecord
from tests.harness import Herald
from tests.integration.test_event_ingestion import ingest, ses_event, sns_wrap
from tests.integration.test_sender import (
    NOW,
    Clock,
    Recorder,
    campaign,
    consent,
    contact,
    deliver,
    emails,
    queue,
    sms,
)
from tests.integration.test_unsubscribe import ONE_CLICK, public, unsubscribe_path
from tests.integration.test_webhook_delivery import webhook_key, without_pauses
from tests.receiver import receiving

EMAIL_STEP = {"id": "hello", "type": "email", "subject": "Welcome {{ contact.first_name }}", "body": "Glad you came"}
OCCURRENCE = "flow:1:root-1:0001"


@pytest.fixture
def time_() -> Iterator[Clock]:
    moment = Clock()
    clock.set_clock(lambda: moment.now)
    yield moment


@pytest.fixture(autouse=True)
def _fresh_versions() -> Iterator[None]:
    """Versions are cached per process (they never change); each test's moto store starts empty."""
    sends.clear_cache()
    yield
    sends.clear_cache()
    channels.use(None)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def flow(flow_id: str, steps: list[dict[str, Any]], status: str = "active", **settings: Any) -> None:
    """A flow and its version 1, as the flow service saves them (checked by the API's model first)."""
    body = {"name": f"Flow {flow_id}", "segments": ["members"], **settings}
    spec = FlowIn.model_validate({**body, "graph": {"start": steps[0]["id"], "steps": steps}}).model_dump(
        mode="json", exclude_none=True
    )
    saved = {"settings": {k: v for k, v in spec.items() if k != "graph"}, "graph": spec["graph"]}
    FlowRecord(
        "flow",
        flow_id,
        name=body["name"],
        status=status,
        current_version=1,
        spec=saved,
        live_type="flow" if status == "active" else None,
        created_at=clock.now_iso(),
        updated_at=clock.now_iso(),
    ).save()
    FlowVersionRecord(
        flow_store.version_key(flow_id), flow_store.version_id(1), spec=saved, created_at=clock.now_iso()
    ).save()


def set_status(flow_id: str, status: str) -> None:
    record = FlowRecord.get("flow", flow_id)
    record.status, record.live_type = status, ("flow" if status == "active" else None)
    record.save()


def step_send(flow_id: str, step_id: str, contact_id: str = "c1", occurrence: str = OCCURRENCE) -> dict[str, Any]:
    return sends.delivery_message(flow_id, 1, step_id, contact_id, occurrence, 40, clock.to_iso(NOW))


def step_record(flow_id: str, contact_id: str = "c1", occurrence: str = OCCURRENCE) -> MessageRecord | None:
    return messages.get(sends.step_message_id(flow_id, contact_id, occurrence))


def step_stats(flow_id: str, step_id: str) -> dict[str, Any]:
    return flow_store.step_stats(flow_id).get(step_id, {})


def mime(index: int = -1) -> EmailMessage:
    parsed = message_from_string(emails()[index].raw_data, policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# --------------------------------------------------------------------------
# Sending
# --------------------------------------------------------------------------


def test_an_email_step_is_sent_with_its_content_and_unsubscribe_links(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1")
    flow("onboard", [EMAIL_STEP], category="news", unsubscribe={"scope": "campaign", "channels": "this"})

    deliver(herald, step_send("onboard", "hello"))

    [mail] = emails()
    assert (mail.subject, mail.destinations) == ("Welcome Ada", {"ToAddresses": ["c1@example.org"]})
    assert mail.body.startswith("Glad you came\n\n-- \nUnsubscribe: https://")
    assert "/unsubscribe?token=" in str(mime()["List-Unsubscribe"])
    assert str(mime()["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    stored = step_record("onboard")
    assert stored is not None and stored.provider_message_id == mail.id
    assert (stored.status, stored.channel, stored.campaign_id) == ("sent", "email", "onboard")
    assert (stored.step_id, stored.flow_version, stored.program_key) == ("hello", 1, "flow#onboard")
    assert stored.category == "news"
    # Rules on campaign responses see the flow's message under the flow's id.
    assert herald.call("GET", "/contacts/c1").body["campaigns_received"] == ["onboard"]


def test_a_flow_unsubscribe_with_campaign_scope_stops_only_that_flow(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1")
    flow("onboard", [EMAIL_STEP], unsubscribe={"scope": "campaign", "channels": "this"})
    flow("other", [EMAIL_STEP])
    deliver(herald, step_send("onboard", "hello"))
    status, _, page = public(herald, "POST", unsubscribe_path(mime()), ONE_CLICK)
    assert status == 200 and "Flow onboard" in page

    later = "flow:1:root-2:0001"
    deliver(herald, step_send("onboard", "hello", occurrence=later), step_send("other", "hello", occurrence=later))
    held = step_record("onboard", occurrence=later)
    assert held is not None and (held.status, held.reason) == ("suppressed", "unsubscribe")
    assert step_record("other", occurrence=later).status == "sent"  # type: ignore[union-attr]


def test_a_redelivered_step_message_sends_exactly_once(herald: Herald, time_: Clock) -> None:
    recorder = Recorder()
    channels.use(recorder)
    contact(herald, "c1")
    flow("onboard", [EMAIL_STEP])
    body = step_send("onboard", "hello")

    deliver(herald, body, body)
    deliver(herald, body)

    assert len(recorder.sent) == 1 and len(emails()) == 1
    assert step_stats("onboard", "hello")["sent"] == 1


def test_a_paused_flows_send_is_held_and_goes_out_once_it_is_active_again(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1")
    flow("onboard", [EMAIL_STEP], status="paused")

    deliver(herald, step_send("onboard", "hello"))

    held = step_record("onboard")
    assert held is not None and (held.status, held.reason) == ("deferred", "flow not active")
    assert held.due_at == clock.to_iso(NOW + timedelta(hours=1)) and emails() == []
    assert step_stats("onboard", "hello")["deferred"] == 1
    time_.advance(hours=1)
    sender.release_due(time_.now, lambda bodies: queue(herald, *bodies))  # still paused: held again
    herald.drain("SenderFunction")
    assert step_record("onboard").status == "deferred" and emails() == []  # type: ignore[union-attr]

    set_status("onboard", "active")
    time_.advance(hours=1)
    sender.release_due(time_.now, lambda bodies: queue(herald, *bodies))  # the release keeps the step
    herald.drain("SenderFunction")

    assert step_record("onboard").status == "sent" and len(emails()) == 1  # type: ignore[union-attr]
    assert step_stats("onboard", "hello") == {"deferred": 1, "sent": 1}


def test_points_and_stage_steps_apply_once(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1", attributes={"points": 5})
    steps = [
        {"id": "reward", "type": "award_points", "points": 10, "next": "promote"},
        {"id": "promote", "type": "update_stage", "stage": "engaged"},
    ]
    flow("loyalty", steps)
    points = step_send("loyalty", "reward", occurrence="flow:1:root-1:0001")
    stage = step_send("loyalty", "promote", occurrence="flow:1:root-1:0002")

    deliver(herald, points, points, stage)
    deliver(herald, points, stage)

    assert herald.call("GET", "/contacts/c1").body["attributes"] == {"points": 15, "stage": "engaged"}
    assert step_stats("loyalty", "reward") == {"applied_points": 1}
    assert step_stats("loyalty", "promote") == {"applied_stage": 1}


def test_a_web_service_step_posts_a_signed_webhook(
    herald: Herald, time_: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(webhook.ALLOW_PRIVATE_ENV, "1")
    contact(herald, "c1", consent={})  # to the operator's system: no consent needed
    with receiving(200) as receiver:
        body = '{"flow": {{ campaign.name | tojson }}, "who": {{ contact.contact_id | tojson }}}'
        flow("crm", [{"id": "tell", "type": "web_service", "url": receiver.url, "body": body}])
        without_pauses()
        message = step_send("crm", "tell")
        deliver(herald, message, message)

    [request] = receiver.requests
    assert request.json() == {"flow": "Flow crm", "who": "c1"}
    headers = request.headers
    assert headers["herald-message-id"] == sends.step_message_id("crm", "c1", OCCURRENCE)
    assert webhook.verify_signature(
        webhook_key(), headers["herald-timestamp"], request.body, headers["herald-signature"]
    )
    assert step_record("crm").status == "sent" and step_stats("crm", "tell") == {"sent": 1}  # type: ignore[union-attr]


def test_a_cross_campaign_step_sends_the_referenced_campaigns_content(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1", phone="+447700900123", consent=consent("email", "sms"))
    campaign("promo", [{"type": "sms", "text": "Promo text"}, {"type": "email", "subject": "Promo", "body": "Deal"}])
    steps = [
        {"id": "reuse", "type": "cross_campaign_email", "campaign_id": "promo", "next": "gone"},
        {"id": "gone", "type": "cross_campaign_push", "campaign_id": "promo"},
    ]
    flow("nurture", steps)

    deliver(
        herald,
        step_send("nurture", "reuse", occurrence="flow:1:r:0001"),
        step_send("nurture", "gone", occurrence="flow:1:r:0002"),
    )

    [mail] = emails()
    assert (mail.subject, mail.body.split("\n")[0]) == ("Promo", "Deal")
    assert sms() == []  # only the email action of the campaign
    sent = step_record("nurture", occurrence="flow:1:r:0001")
    assert sent is not None and (sent.status, sent.campaign_id, sent.step_id) == ("sent", "nurture", "reuse")
    none = step_record("nurture", occurrence="flow:1:r:0002")  # the campaign has no push action
    assert none is not None and (none.status, none.reason) == ("suppressed", "no_actions")
    assert step_stats("nurture", "gone") == {"suppressed": 1, "suppressed_no_actions": 1}


def test_a_deleted_flow_or_step_is_recorded_not_sent(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1")
    flow("onboard", [EMAIL_STEP])
    FlowRecord.get("flow", "onboard").delete()

    deliver(herald, step_send("onboard", "hello"), step_send("missing", "hello", occurrence="flow:1:x:0001"))

    gone = step_record("onboard")
    assert gone is not None and (gone.status, gone.reason) == ("suppressed", "flow_deleted")
    assert step_record("missing", occurrence="flow:1:x:0001").reason == "flow_deleted"  # type: ignore[union-attr]
    assert emails() == []
    assert step_stats("onboard", "hello") == {"suppressed": 1, "suppressed_flow_deleted": 1}


# --------------------------------------------------------------------------
# Statistics and engagement
# --------------------------------------------------------------------------


def test_flow_sends_count_on_their_step_row_not_on_campaign_rows(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1")
    contact(herald, "mute", consent={"email": {"granted": False, "source": "test"}})
    flow("onboard", [EMAIL_STEP])

    deliver(herald, step_send("onboard", "hello"), step_send("onboard", "hello", contact_id="mute"))

    assert step_stats("onboard", "hello") == {"sent": 1, "suppressed": 1, "suppressed_no_consent": 1}
    assert stats_store.read_stats("campaign#onboard") == {}  # no total, day or guardrail hour rows
    assert set(stats_store.read_stats("flow#onboard")) == {"step#hello"}


def test_opens_and_bounces_of_a_flow_email_count_on_the_step_and_feed_rules(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1")
    flow("onboard", [EMAIL_STEP])
    deliver(herald, step_send("onboard", "hello"))
    message = step_record("onboard")
    assert message is not None

    ingest(herald, sns_wrap(ses_event(message, "Delivery")), sns_wrap(ses_event(message, "Open")))
    ingest(herald, sns_wrap(ses_event(message, "Bounce", bounce_type="Permanent")))

    assert herald.call("GET", "/contacts/c1").body["campaigns_opened"] == ["onboard"]
    rule = {"campaign": "onboard", "response": "opened"}
    reply = herald.call("POST", "/segments/preview", {"rule": rule, "sample": 50})
    assert reply.status == 200 and reply.body["sample"] == ["c1"]
    assert step_stats("onboard", "hello") == {"sent": 1, "delivered": 1, "opened": 1, "bounced_hard": 1}
    assert stats_store.read_stats("campaign#onboard") == {}  # no guardrail hour row, nothing on campaign rows
    assert herald.call("GET", "/contacts/c1").body["bounce"]["hard"] is True
