"""Webhook actions end to end: saved, launched, ticked, sent by the SenderFunction to a local receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from herald import clock, signing
from herald.delivery import channels, webhook
from herald.delivery.webhook import WebhookChannel
from herald.store import messages
from tests.harness import Herald, load_event
from tests.integration.test_campaign_tick import customer, launch
from tests.integration.test_sender import (
    SENDER_EMAIL,
    campaign,
    contact,
    deliver,
    in_flight,
    queue,
    record,
    send,
    stats,
    visible_again,
)
from tests.receiver import Receiver, receiving

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
BODY = (
    '{"event": "winter_sale", "campaign": {{ campaign.name | tojson }}, '
    '"customer": {"id": {{ contact.contact_id | tojson }}, "name": {{ contact.first_name | default("") | tojson }}}}'
)


@pytest.fixture(autouse=True)
def _local_receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Webhooks may reach 127.0.0.1 (as in the embedded runtime); time stands still at NOW."""
    monkeypatch.setenv(webhook.ALLOW_PRIVATE_ENV, "1")
    clock.set_clock(lambda: NOW)
    yield
    channels.use(None)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving((200, {"X-Request-Id": "crm-7"})) as running:
        yield running


def signing_secret_arn() -> str:
    sm = boto3.client("secretsmanager")
    [secret] = [s for s in sm.list_secrets()["SecretList"] if s["Name"].startswith("herald-signing-")]
    return str(secret["ARN"])


def webhook_key() -> bytes:
    """The receiver's key, derived from the signing secret exactly as Herald documents it."""
    root = boto3.client("secretsmanager").get_secret_value(SecretId=signing_secret_arn())["SecretString"]
    return hmac.new(root.encode(), b"webhook", hashlib.sha256).digest()


def without_pauses() -> None:
    """The sender's providers, with a webhook channel that never sleeps between tries."""
    signing.configure(signing_secret_arn())  # as the sender does at cold start
    hooks = WebhookChannel(sleep=lambda seconds: None)
    channels.use(channels.AwsChannels(SENDER_EMAIL, webhooks=hooks))


def test_a_launched_webhook_campaign_posts_once_signed_and_is_recorded(herald: Herald, receiver: Receiver) -> None:
    # No consent, no channel address: a webhook goes to the operator's system, not to the contact.
    customer(herald, "ada", first_name="Ada", consent={})
    created = herald.call(
        "POST",
        "/campaigns",
        {
            "id": "winter",
            "name": "Winter sale",
            "description": "Tell the CRM",
            "published": True,
            "actions": [{"type": "webhook", "url": receiver.url, "body": BODY}],
        },
    )
    assert created.status == 201, created.body
    launch(herald, "winter")
    herald.host.invoke("CampaignTickFunction", load_event("campaign_tick/scheduled"))
    deliveries = herald.queue_messages("DeliveryQueue")
    assert [d["contact_id"] for d in deliveries] == ["ada"]

    queue(herald, *deliveries)
    herald.drain("SenderFunction")

    [request] = receiver.requests
    assert request.json() == {
        "event": "winter_sale",
        "campaign": "Winter sale",
        "customer": {"id": "ada", "name": "Ada"},
    }
    occurrence = deliveries[0]["sends"][0]["occurrence"]
    message_id = messages.message_id("winter", "ada", occurrence, 0)
    headers = request.headers
    assert headers["content-type"] == "application/json" and headers["user-agent"] == "Herald-Webhook/1"
    assert headers["herald-message-id"] == message_id
    assert webhook.verify_signature(
        webhook_key(), headers["herald-timestamp"], request.body, headers["herald-signature"]
    )
    stored = record("winter", "ada", occurrence=occurrence)
    assert stored is not None
    assert (stored.status, stored.channel, stored.provider_message_id) == ("sent", "webhook", "crm-7")
    assert stats("winter")["sent"] == 1
    # The contact received nothing, so no campaign.received for rules on campaign responses.
    assert herald.call("GET", "/contacts/ada").body.get("campaigns_received") in (None, [])

    queue(herald, *deliveries, *deliveries)  # the same queue message, redelivered twice
    herald.drain("SenderFunction")
    assert len(receiver.requests) == 1
    assert stats("winter")["sent"] == 1


def test_the_default_body_names_campaign_contact_and_message(herald: Herald, receiver: Receiver) -> None:
    contact(herald, "c1", consent={})
    campaign("crm", [{"type": "webhook", "url": receiver.url}])
    deliver(herald, {"contact_id": "c1", "sends": [send("crm")]})
    [request] = receiver.requests
    assert request.json() == {
        "type": "campaign.webhook",
        "campaign": {"id": "crm", "name": "Campaign crm"},
        "contact": {"id": "c1", "email": "c1@example.org"},
        "message_id": messages.message_id("crm", "c1", "1", 0),
    }


def test_an_endpoint_that_keeps_failing_returns_the_message_and_it_is_sent_once_later(herald: Herald) -> None:
    without_pauses()
    contact(herald, "c1")
    with receiving(503) as receiver:
        campaign("busy", [{"type": "webhook", "url": receiver.url}])
        deliver(herald, {"contact_id": "c1", "sends": [send("busy")]})
        assert len(receiver.requests) == webhook.MAX_TRIES
        assert record("busy", "c1") is None  # the claim was released: never dropped
        assert in_flight(herald) == 1  # returned to SQS for a later retry (then the dead-letter queue)

        receiver.answer(200)
        without_pauses()  # a fresh container: no cool-down left from the failures
        visible_again(herald)
        herald.drain("SenderFunction")
        visible_again(herald)
        herald.drain("SenderFunction")
    assert record("busy", "c1").status == "sent"  # type: ignore[union-attr]
    assert len(receiver.requests) == webhook.MAX_TRIES + 1  # exactly one accepted POST in total
    assert len({r.headers["herald-message-id"] for r in receiver.requests}) == 1
    assert in_flight(herald) == 0 and stats("busy")["sent"] == 1


def test_a_refused_request_is_recorded_failed_with_its_status(herald: Herald) -> None:
    contact(herald, "c1")
    with receiving(410) as receiver:
        campaign("gone", [{"type": "webhook", "url": receiver.url}])
        deliver(herald, {"contact_id": "c1", "sends": [send("gone")]})
    stored = record("gone", "c1")
    assert stored is not None and (stored.status, stored.reason) == ("failed", "http_410")
    assert len(receiver.requests) == 1 and in_flight(herald) == 0 and stats("gone")["failed"] == 1


def test_a_body_that_is_not_json_for_this_contact_fails_without_a_request(herald: Herald, receiver: Receiver) -> None:
    contact(herald, "c1", attributes={"tier": "gold"})  # unquoted, gold is not JSON (the sample had no tier)
    campaign(
        "raw",
        [{"type": "webhook", "url": receiver.url, "body": '{"tier": {{ contact.attributes.tier | default(1) }}}'}],
    )
    deliver(herald, {"contact_id": "c1", "sends": [send("raw")]})
    stored = record("raw", "c1")
    assert stored is not None and stored.status == "failed"
    assert stored.reason is not None and "render_error: webhook body is not valid JSON" in stored.reason
    assert receiver.requests == []


def test_deleted_contacts_deleted_or_stopped_campaigns_hold_webhooks_like_any_action(
    herald: Herald, receiver: Receiver
) -> None:
    contact(herald, "c1")
    campaign("stopped", [{"type": "webhook", "url": receiver.url}], state="Stopped")
    deliver(
        herald,
        {"contact_id": "c1", "sends": [send("stopped"), send("vanished")]},
        {"contact_id": "ghost", "sends": [send("stopped")]},
    )
    assert (record("stopped", "c1").status, record("stopped", "c1").reason) == ("deferred", "campaign stopped")  # type: ignore[union-attr]
    assert record("vanished", "c1").reason == "campaign_deleted"  # type: ignore[union-attr]
    assert record("stopped", "ghost").reason == "contact_deleted"  # type: ignore[union-attr]
    assert receiver.requests == []


def test_a_suppressed_contact_still_reaches_the_operators_system(herald: Herald, receiver: Receiver) -> None:
    contact(herald, "c1", bounce={"hard": True})
    campaign("both", [{"type": "email", "subject": "s", "body": "b"}, {"type": "webhook", "url": receiver.url}])
    deliver(herald, {"contact_id": "c1", "sends": [send("both")]})
    assert record("both", "c1", 0).reason == "hard_bounce"  # type: ignore[union-attr]
    assert record("both", "c1", 1).status == "sent"  # type: ignore[union-attr]
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    ("action", "field", "words"),
    [
        ({"type": "webhook", "url": "ftp://crm.example.com/"}, "actions.0.webhook.url", "https://"),
        ({"type": "webhook"}, "actions.0.webhook.url", ""),
        ({"type": "webhook", "url": "https://x.example", "body": "{{ nope }}"}, "actions.0.webhook.body", "unknown"),
        ({"type": "webhook", "url": "https://x.example", "body": "hello"}, "actions.0.webhook.body", "JSON"),
    ],
)
def test_bad_webhook_actions_are_refused_naming_the_field(
    herald: Herald, action: dict[str, Any], field: str, words: str
) -> None:
    reply = herald.call("POST", "/campaigns", {"name": "n", "description": "d", "actions": [action]})
    assert reply.status == 422, reply.body
    error = reply.body["errors"][0]
    assert error["field"] == field and words in json.dumps(error), reply.body


def test_without_the_flag_only_public_https_urls_are_saved(herald: Herald, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(webhook.ALLOW_PRIVATE_ENV)
    action = {"type": "webhook", "url": "http://127.0.0.1:9000/hook"}
    reply = herald.call("POST", "/campaigns", {"name": "n", "description": "d", "actions": [action]})
    assert reply.status == 422 and reply.body["errors"][0]["field"] == "actions.0.webhook.url"
    action["url"] = "https://crm.example.com/hook"
    assert herald.call("POST", "/campaigns", {"name": "n", "description": "d", "actions": [action]}).status == 201
