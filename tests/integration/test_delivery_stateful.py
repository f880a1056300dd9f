"""Stateful property: at send time the sender delivers exactly what consent and suppression allow.

Hypothesis interleaves, for one contact per example, consent changes (through
the contacts API, honouring the ETag), unsubscribes and resubscribes in every
scope (``<email|sms|push|all>#<all|campaign#id|category#c|group#g>``), hard
and soft bounces and complaints (SES events through the ingestion function)
and sends (a fresh occurrence of some launched campaigns through the sender
function, with a recording provider). A model keeps what must hold the
contact back; after every send:

- every captured message was allowed by the model for its channel and the
  campaign's category and group (never sent to a contact who lacked consent or
  was suppressed);
- every allowed channel action *was* sent (no contact policy exists, so none
  is deferred), so over-suppression fails too;
- each action's message record is ``sent`` with the provider's id, or
  ``suppressed`` with a reason the model gives for it.

One moto Herald serves every example (provisioning costs seconds); each
example works on a contact of its own, so nothing needs resetting.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import boto3
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pynamodb.exceptions import DeleteError, PutError

from herald import clock
from herald.delivery import channels, sender
from herald.segments.evaluation import SOFT_BOUNCE_LIMIT
from herald.store import contacts as contact_store
from herald.store import messages, suppressions
from herald.store.tables import CampaignRecord, SuppressionRecord
from tests.harness import Herald
from tests.integration.test_event_ingestion import ses_event, sns_wrap

START = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
CHANNELS = ("email", "sms", "push")
EMAIL = {"type": "email", "subject": "Hi {{ contact.first_name }}", "body": "News for you"}
SMS = {"type": "sms", "text": "{{ campaign.name }}: hello"}
PUSH = {"type": "push", "title": "News", "body": "For {{ contact.first_name }}"}
UNSUBSCRIBE = "unsubscribe"
COMPLAINT = "complaint"


@dataclass(frozen=True)
class Campaign:
    actions: tuple[dict[str, Any], ...]
    category: str | None = None
    group: str | None = None


# Categories and groups overlap between campaigns, so one scope can cover several.
CAMPAIGNS = {
    "spring-sale": Campaign((EMAIL, SMS, PUSH), "promo", "seasonal"),
    "weekly-digest": Campaign((EMAIL, PUSH), "news", "seasonal"),
    "service-alerts": Campaign((SMS, EMAIL, PUSH), "promo", "service"),
    "plain-note": Campaign((EMAIL, SMS)),
}
SCOPE_CHANNELS = (*CHANNELS, "all")
# What a scope covers, by kind: every value that can cover a campaign, and one that covers none (which must
# suppress nothing). The kind is drawn first, so the narrow scopes come up as often as ``all``.
SCOPE_WHATS = {
    "all": ("all",),
    "campaign": (*(f"campaign#{c}" for c in CAMPAIGNS), "campaign#elsewhere"),
    "category": (*sorted({f"category#{c.category}" for c in CAMPAIGNS.values() if c.category}), "category#other"),
    "group": (*sorted({f"group#{c.group}" for c in CAMPAIGNS.values() if c.group}), "group#other"),
}
SCOPES = st.tuples(
    st.sampled_from(SCOPE_CHANNELS),
    st.sampled_from(sorted(SCOPE_WHATS)).flatmap(lambda k: st.sampled_from(SCOPE_WHATS[k])),
).map("#".join)
# Sends of every campaign at once check the most per step; single campaigns and subsets come up too.
CHOSEN = st.one_of(st.just(sorted(CAMPAIGNS)), st.lists(st.sampled_from(sorted(CAMPAIGNS)), min_size=1, unique=True))
# Granted half the time, so sends keep going out; withdrawn (``granted: false``) or removed (``null``) otherwise.
CONSENT_STATES = st.one_of(st.just("granted"), st.sampled_from(["withdrawn", "removed"]))
_fresh = itertools.count(1)


# --------------------------------------------------------------------------
# Unsubscribe (the one place to switch to the real unsubscribe service)
# --------------------------------------------------------------------------


def unsubscribe(contact_id: str, scope: str) -> bool:
    """Suppress ``scope`` for the contact as an unsubscribe does; False if a suppression of that scope exists.

    An existing suppression (a complaint's ``email#all``, an earlier
    unsubscribe) is kept as it is.
    """
    record = SuppressionRecord(contact_id, scope, reason=UNSUBSCRIBE, at=clock.now_iso(), source="preferences")
    try:
        record.save(condition=SuppressionRecord.scope.does_not_exist())
    except PutError as exc:
        if exc.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise
    return True


def resubscribe(contact_id: str, scope: str) -> bool:
    """Lift an unsubscribe of ``scope``; a suppression for another reason (a complaint) stays."""
    try:
        SuppressionRecord(contact_id, scope).delete(condition=SuppressionRecord.reason == UNSUBSCRIBE)
    except DeleteError as exc:
        if exc.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise
    return True


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------


@dataclass
class Model:
    """What must hold a message to the contact back, kept independently of Herald's code."""

    consent: dict[str, bool]
    hard_bounce: bool = False
    soft_bounces: int = 0
    suppressions: dict[str, str] = field(default_factory=dict)  # scope -> reason

    def reasons(self, channel: str, campaign_id: str) -> set[str]:
        """Every reason a ``channel`` message of the campaign must not go now; empty when it must go."""
        held: set[str] = set()
        if not self.consent.get(channel, False):
            held.add("no_consent")
        if channel == "email" and self.hard_bounce:
            held.add("hard_bounce")
        if channel == "email" and self.soft_bounces >= SOFT_BOUNCE_LIMIT:
            held.add("soft_bounces")
        spec = CAMPAIGNS[campaign_id]
        covering = {"all", f"campaign#{campaign_id}", f"category#{spec.category}", f"group#{spec.group}"}
        for scope, reason in self.suppressions.items():
            scope_channel, what = scope.split("#", 1)
            if scope_channel in (channel, "all") and what in covering:
                held.add(reason)
        return held


class Recorder:
    """The providers, recorded: every message the sender hands over, and the id it got back."""

    def __init__(self) -> None:
        self.sent: list[tuple[channels.Outgoing, str]] = []

    def send(self, message: channels.Outgoing) -> str:
        provider_id = f"provider-{uuid.uuid4()}"
        self.sent.append((message, provider_id))
        return provider_id


def channel_of(message: channels.Outgoing) -> str:
    if isinstance(message, channels.Email):
        return "email"
    return "sms" if isinstance(message, channels.Sms) else "push"


# --------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------


class SendTimeChecks(RuleBasedStateMachine):
    """One contact's life: consent, unsubscribes, bounces, complaints and sends, in any order."""

    herald: ClassVar[Herald]
    seen: ClassVar[Counter[str]] = Counter()  # sends checked, messages sent, suppressed by reason

    def __init__(self) -> None:
        super().__init__()
        self.contact_id = f"stateful-{next(_fresh)}"
        self.email = f"{self.contact_id}@example.org"
        self.model = Model(consent={})
        self.received_emails: list[str] = []  # message ids of emails the contact was sent

    # -- setup ------------------------------------------------------------------

    @initialize(granted=st.one_of(st.just(set(CHANNELS)), st.sets(st.sampled_from(CHANNELS))))
    def create_contact(self, granted: set[str]) -> None:
        body = {
            "contact_id": self.contact_id,
            "kind": "customer",
            "first_name": "Ada",
            "email": self.email,
            "phone": "+447700900123",
            "attributes": {"push_endpoint_arn": f"arn:aws:sns:us-east-1:123456789012:endpoint/GCM/app/{uuid.uuid4()}"},
            "consent": {name: {"granted": True, "source": "signup"} for name in sorted(granted)},
        }
        reply = self.herald.call("POST", "/contacts", body)
        assert reply.status == 201, reply.body
        self.model.consent = {name: name in granted for name in CHANNELS}
        self.send(sorted(CAMPAIGNS))  # a first campaign, so SES events have emails to be about from the start

    # -- consent ------------------------------------------------------------------

    @rule(channel=st.sampled_from(CHANNELS), state=CONSENT_STATES)
    def change_consent(self, channel: str, state: str) -> None:
        """PATCH the contact's consent with If-Match on its current ETag (bounces bump the version too)."""
        current = self.herald.call("GET", f"/contacts/{self.contact_id}")
        assert current.status == 200, current.body
        value = None if state == "removed" else {"granted": state == "granted", "source": "preferences"}
        reply = self.herald.call(
            "PATCH", f"/contacts/{self.contact_id}", {"consent": {channel: value}}, {"If-Match": current.etag}
        )
        assert reply.status == 200, reply.body
        self.model.consent[channel] = state == "granted"

    # -- unsubscribe --------------------------------------------------------------

    @rule(scope=SCOPES)
    def unsubscribe_in_scope(self, scope: str) -> None:
        written = unsubscribe(self.contact_id, scope)
        assert written == (scope not in self.model.suppressions)
        self.model.suppressions.setdefault(scope, UNSUBSCRIBE)

    @precondition(lambda self: UNSUBSCRIBE in self.model.suppressions.values())
    @rule(data=st.data())
    def resubscribe_in_scope(self, data: st.DataObject) -> None:
        scopes = sorted(s for s, reason in self.model.suppressions.items() if reason == UNSUBSCRIBE)
        scope = data.draw(st.sampled_from(scopes), label="scope")
        assert resubscribe(self.contact_id, scope)
        del self.model.suppressions[scope]

    # -- SES events ---------------------------------------------------------------

    @precondition(lambda self: bool(self.received_emails))
    @rule(data=st.data())
    def hard_bounce(self, data: st.DataObject) -> None:
        self._ses(data, "Bounce", bounce_type="Permanent")
        self.model.hard_bounce = True
        self._check_bounce_state()

    @precondition(lambda self: bool(self.received_emails))
    @rule(data=st.data(), times=st.integers(1, SOFT_BOUNCE_LIMIT))
    def soft_bounces(self, data: st.DataObject, times: int) -> None:
        self._ses(data, "Bounce", bounce_type="Transient", times=times)
        self.model.soft_bounces += times
        self._check_bounce_state()

    @precondition(lambda self: bool(self.received_emails))
    @rule(data=st.data())
    def complaint(self, data: st.DataObject) -> None:
        self._ses(data, "Complaint")
        self.model.suppressions["email#all"] = COMPLAINT  # ingestion's Put replaces an unsubscribe of that scope
        assert suppressions.of_contact(self.contact_id) == self.model.suppressions

    def _ses(self, data: st.DataObject, event_type: str, bounce_type: str = "Permanent", times: int = 1) -> None:
        """``times`` SES events about emails the contact received, SNS-wrapped, through the ingestion function."""
        sqs = boto3.client("sqs")
        for _ in range(times):
            message = messages.get(data.draw(st.sampled_from(self.received_emails), label="about message"))
            assert message is not None
            event = ses_event(message, event_type, recipient=self.email, bounce_type=bounce_type)
            sqs.send_message(QueueUrl=self.herald.queue_url("SesEventsQueue"), MessageBody=json.dumps(sns_wrap(event)))
        self.herald.drain("EventIngestionFunction")
        assert waiting(self.herald, "SesEventsQueue") == 0

    def _check_bounce_state(self) -> None:
        """Ingestion counted every bounce once: the contact's bounce state is the model's."""
        stored = contact_store.get(self.contact_id)
        assert stored is not None
        assert (stored.bounce.hard, stored.bounce.soft_count) == (self.model.hard_bounce, self.model.soft_bounces)

    # -- the check itself, after every step ----------------------------------------

    @invariant()
    def send_time_check_agrees_with_the_model(self) -> None:
        """The sender's check on the stored contact and suppressions gives the model's verdict for every action.

        Cheap (two reads), so it runs after every step and catches a wrong
        check the moment the state that exposes it exists; the sends below
        show the sender relies on it.
        """
        contact = contact_store.get(self.contact_id)
        assert contact is not None
        scopes = suppressions.of_contact(self.contact_id)
        assert scopes == self.model.suppressions
        for campaign_id, spec in CAMPAIGNS.items():
            for channel in CHANNELS:
                reason = sender.suppression_reason(contact, channel, scopes, campaign_id, spec.category, spec.group)
                held = self.model.reasons(channel, campaign_id)
                assert (reason in held) if held else reason is None, (
                    f"{channel} of {campaign_id}: check says {reason}, model {sorted(held)}: {self.model}"
                )

    # -- sending ------------------------------------------------------------------

    @rule(chosen=CHOSEN)
    def send(self, chosen: list[str]) -> None:
        occurrence = f"occurrence-{next(_fresh)}"
        now = clock.now()
        body = {
            "contact_id": self.contact_id,
            "sends": [
                {"campaign_id": c, "occurrence": occurrence, "priority": 10, "queued_at": clock.to_iso(now)}
                for c in chosen
            ],
        }
        recorder = Recorder()
        channels.use(recorder)
        try:
            boto3.client("sqs").send_message(
                QueueUrl=self.herald.queue_url("DeliveryQueue"), MessageBody=json.dumps(body)
            )
            self.herald.drain("SenderFunction")
        finally:
            channels.use(None)
        assert waiting(self.herald, "DeliveryQueue") == 0
        self._check(chosen, occurrence, recorder)

    def _check(self, chosen: list[str], occurrence: str, recorder: Recorder) -> None:
        """Nothing sent that the model holds back, everything sent that it allows, records that agree."""
        captured: dict[str, tuple[channels.Outgoing, str]] = {}
        for outgoing, provider_id in recorder.sent:
            campaign_id, channel = outgoing.tags["campaign_id"], channel_of(outgoing)
            assert outgoing.tags["contact_id"] == self.contact_id
            assert campaign_id in chosen
            held = self.model.reasons(channel, campaign_id)
            assert not held, f"{channel} of {campaign_id} delivered although held back by {sorted(held)}: {self.model}"
            assert outgoing.tags["message_id"] not in captured, "one action sent twice"
            captured[outgoing.tags["message_id"]] = (outgoing, provider_id)
        allowed = 0
        for campaign_id in chosen:
            for index, action in enumerate(CAMPAIGNS[campaign_id].actions):
                channel = str(action["type"])
                message_id = messages.message_id(campaign_id, self.contact_id, occurrence, index)
                stored = messages.get(message_id)
                assert stored is not None, f"no record of {channel} of {campaign_id}"
                assert stored.channel == channel
                held = self.model.reasons(channel, campaign_id)
                if held:
                    assert message_id not in captured
                    assert (stored.status, stored.reason in held) == (messages.SUPPRESSED, True), (
                        f"{channel} of {campaign_id}: recorded {stored.status}/{stored.reason}, model: {sorted(held)}"
                    )
                    SendTimeChecks.seen[f"suppressed {stored.reason}"] += 1
                    continue
                allowed += 1
                assert message_id in captured, (
                    f"{channel} of {campaign_id} allowed by the model but not sent: {stored.status}/{stored.reason}"
                )
                outgoing, provider_id = captured[message_id]
                assert channel_of(outgoing) == channel
                assert (stored.status, stored.reason, stored.provider_message_id) == (messages.SENT, None, provider_id)
                if channel == "email":
                    self.received_emails.append(message_id)
        assert allowed == len(captured)
        SendTimeChecks.seen["sends checked"] += 1
        SendTimeChecks.seen["sent"] += allowed

    def teardown(self) -> None:
        channels.use(None)


def waiting(herald: Herald, logical_id: str) -> int:
    """Messages still in the queue, visible or in flight (a batch item failure would leave one)."""
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=herald.queue_url(logical_id),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def launch_campaigns() -> None:
    """The launched campaigns every example sends (records as the campaign service leaves them)."""
    for campaign_id, spec in CAMPAIGNS.items():
        extra = {key: value for key, value in (("category", spec.category), ("campaign_group", spec.group)) if value}
        CampaignRecord(
            "campaign",
            campaign_id,
            name=campaign_id,
            spec={"name": campaign_id, "kind": "ad_hoc", "actions": list(spec.actions), **extra},
            state="Launched",
            live_type="campaign",
            created_at=clock.now_iso(),
            updated_at=clock.now_iso(),
        ).save()


@pytest.fixture
def moving_clock() -> Iterator[None]:
    """A clock one second later at every reading, so records and events keep their order."""
    ticks = itertools.count()
    clock.set_clock(lambda: START + timedelta(seconds=next(ticks)))
    yield
    clock.reset_clock()


def test_no_message_goes_to_a_contact_without_consent_or_suppressed_at_send_time(
    herald: Herald, moving_clock: None
) -> None:
    launch_campaigns()
    SendTimeChecks.herald = herald
    SendTimeChecks.seen = Counter()
    began = time.monotonic()
    run_state_machine_as_test(
        SendTimeChecks,
        settings=settings(
            max_examples=20,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    seen = SendTimeChecks.seen
    print(f"send-time checks in {time.monotonic() - began:.1f}s: {dict(sorted(seen.items()))}")
    # The property is only as good as its coverage: sends went out and were held back.
    assert seen["sent"] and any(key.startswith("suppressed") for key in seen)
