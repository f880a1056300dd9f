"""The sender: settle, send and record a contact's queued campaign sends.

The campaign tick queues one message per contact holding all of that
contact's sends from one tick (:class:`DeliveryIn`). For each one the sender

1. reads the contact (one consistent GetItem) and each campaign (cached per
   invocation), and every message record the sends could produce (one
   BatchGetItem): a record that is ``sent``, ``sending``, ``suppressed``,
   ``expired`` or ``failed`` is already handled and left alone, so a
   redelivered queue message never sends twice;
2. suppresses, with a reason, what must not go: the contact is gone
   (``contact_deleted``), the campaign is gone (``campaign_deleted``), no
   consent for the channel (``no_consent``), an
   email hard bounce (``hard_bounce``) or 5+ soft bounces (``soft_bounces``),
   a suppression matching the channel and scope (its reason, e.g.
   ``complaint``; the scopes that could match are read for the whole batch
   with one BatchGetItem),
   no address (``no_address``); a send of a *stopped* campaign is deferred
   hour by hour until it is resumed, and expires 72 hours after it was queued;
3. settles the channel sends that remain together, by priority, under the
   contact policies (:func:`herald.policy.engine.decide`), against the
   contact's recently sent messages: each one is sent now, **deferred** to
   its next allowed slot (and released by :func:`release_due` when it comes),
   or **expired**;
4. sends through :mod:`herald.delivery.channels` after claiming the message
   id (a conditional write), and records the provider's message id;
5. sends ``webhook`` actions (:mod:`herald.delivery.webhook`) through the same
   claim, without consent, suppression or contact policy (they go to the
   operator's system, not to the contact);
6. applies ``points`` and ``stage`` actions to the contact once per occurrence,
   in one transaction with their message record.

A send naming a ``flow`` step (:class:`FlowStepRef`; ``campaign_id`` is then
the flow's id) is a flow's message step: its campaign is the synthetic one of
:func:`herald.flows.sends.step_campaign` (the step's one action with the flow
version's category, group and unsubscribe settings; held like a stopped
campaign's while the flow is not active), and everything above applies to it
unchanged. Its message record keeps the flow version and step id.

Every send ends as a message record; :class:`Tally` adds the outcomes to the
campaign's statistics once per batch (``total``, ``day#…``, and ``sent`` to the
``hour#…`` row the sending guardrails read), or a flow send's to its step's
row (``flow#<flow_id>`` / ``step#<step_id>``).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aws_lambda_powertools.metrics import MetricUnit
from jinja2 import TemplateError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from herald import clock
from herald.activity import service as activity
from herald.activity.model import EventIn
from herald.contacts.model import Contact, ContactId
from herald.delivery import channels as providers
from herald.delivery import email, webhook
from herald.delivery.queue import MAX_SENDS_PER_MESSAGE, delivery_messages
from herald.delivery.render import personalisation, render
from herald.errors import NotFound
from herald.flows import sends as flow_sends
from herald.flows.definition import StepId
from herald.observability import logger, metrics
from herald.policy import engine
from herald.policy.service import load_policies
from herald.segments.evaluation import SOFT_BOUNCE_LIMIT
from herald.store import contacts as contact_store
from herald.store import enrolments, messages
from herald.store import flows as flow_store
from herald.store import stats as stats_store
from herald.store import suppressions as suppression_store
from herald.store.tables import CampaignRecord, MessageRecord
from herald.store.transactions import CONFLICT, INVALID_PREFIX, Unit, commit_units

CHANNELS = ("email", "sms", "push")
LAUNCHED = "Launched"
CAMPAIGN_ENTITY = "campaign"
RELEASE_LOOKBACK_HOURS = 48
# A send of a stopped campaign waits this long (from when it was queued) for a resume.
STOPPED_HOLD = timedelta(hours=72)
CONTACT_RETRIES = 5
# A throttled delivery waits 60 s, 120 s, ... up to 15 minutes (with jitter) before its next try.
THROTTLE_DELAY_BASE = 60
THROTTLE_DELAY_CAP = 900
# Provider calls of one batch in flight at once (a batch is at most 10 contacts).
PROVIDER_CONCURRENCY = 10
RECEIVED_EVENT = "campaign.received"
SENT_EMAIL = "sent_email"

QueueSend = Callable[[list[dict[str, Any]]], None]
PolicyLoader = Callable[[], Sequence[engine.ContactPolicy]]

Occurrence = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class FlowStepRef(BaseModel):
    """The flow step a send is for: ``campaign_id`` is then the flow's id (:mod:`herald.flows.sends`)."""

    model_config = ConfigDict(extra="forbid")

    version: Annotated[int, Field(ge=1)]
    step_id: StepId


class SendIn(BaseModel):
    """One campaign occurrence (or flow step) waiting to be sent to the contact."""

    model_config = ConfigDict(extra="forbid")

    campaign_id: ContactId
    occurrence: Occurrence
    priority: Annotated[int, Field(ge=engine.MIN_PRIORITY, le=engine.MAX_PRIORITY)]
    queued_at: AwareDatetime
    flow: FlowStepRef | None = None

    def stats_target(self) -> StatsTarget:
        if self.flow is not None:
            return StatsTarget.of_step(self.campaign_id, self.flow.step_id)
        return StatsTarget.of_campaign(self.campaign_id)


class DeliveryIn(BaseModel):
    """The queue message: all of one contact's sends from one tick (or one release)."""

    model_config = ConfigDict(extra="forbid")

    contact_id: ContactId
    sends: Annotated[list[SendIn], Field(min_length=1, max_length=MAX_SENDS_PER_MESSAGE)]


class Transient(Exception):
    """A provider or store problem that a later attempt may not have: retry the queue message."""


class Throttled(Transient):
    """The provider was throttled (or unreachable): retry the queue message with a growing delay."""


def retry_delay(receive_count: int) -> int:
    """Seconds before a throttled delivery is tried again: 60 s doubling per receive, at most 15 minutes, jittered."""
    base = min(THROTTLE_DELAY_CAP, THROTTLE_DELAY_BASE * 2 ** max(0, receive_count - 1))
    return int(base / 2 + random.uniform(0, base / 2))


# --------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class StatsTarget:
    """Where a send's outcomes are counted: a campaign's rows, or (``step`` set) one flow step's row."""

    subject: str
    step: str | None = None

    @classmethod
    def of_campaign(cls, campaign_id: str) -> StatsTarget:
        return cls(stats_store.subject(campaign_id))

    @classmethod
    def of_step(cls, flow_id: str, step_id: str) -> StatsTarget:
        return cls(flow_store.stats_subject(flow_id), step_id)


@dataclass
class Tally:
    """Outcomes per stats target, written as one stats update per target and row per batch."""

    by_target: dict[StatsTarget, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def count(self, target: StatsTarget, outcome: str, reason: str | None = None) -> None:
        counter = self.by_target[target]
        counter[outcome] += 1
        if outcome == messages.SUPPRESSED and reason:
            counter[f"suppressed_{reason}"] += 1

    def totals(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for counter in self.by_target.values():
            total.update(counter)
        return total

    def flush(self, now: datetime) -> None:
        """``add_stats`` on every target with outcomes.

        A campaign gets ``total`` and ``day#<day>``, and ``hour#<hour>`` with
        only the *emails* sent, as ``sent`` (the guardrails' denominator:
        bounces and complaints are email's, see :mod:`herald.campaigns.guardrails`),
        and its TTL, and only when an email was sent. A flow step gets its
        ``step#<step_id>`` row only: flows have no sending guardrails.
        """
        day = now.astimezone(UTC).strftime("%Y-%m-%d")
        hour = stats_store.hour_of(now)
        for target, counter in sorted(self.by_target.items()):
            deltas = {name: count for name, count in counter.items() if count}
            if not deltas:
                continue
            if target.step is not None:
                deltas.pop(SENT_EMAIL, None)
                stats_store.add_stats(target.subject, f"step#{target.step}", deltas)
                continue
            stats_store.add_stats(target.subject, "total", deltas)
            stats_store.add_stats(target.subject, f"day#{day}", deltas)
            if deltas.get(SENT_EMAIL):
                expiration = {stats_store.TTL_ATTRIBUTE: stats_store.hour_expiration(hour)}
                stats_store.add_stats(target.subject, hour, {messages.SENT: deltas[SENT_EMAIL]}, expiration)
        self.by_target.clear()


# --------------------------------------------------------------------------
# The sender
# --------------------------------------------------------------------------


@dataclass
class _Plan:
    """One action of one queued send."""

    send: SendIn
    index: int
    action: dict[str, Any]
    message_id: str
    campaign: CampaignRecord | None

    @property
    def channel(self) -> str:
        return str(self.action.get("type") or "none")


@dataclass
class _Pending:
    """A send that passed every check, waiting to be claimed (batched) and handed to its provider."""

    delivery: int
    plan: _Plan
    contact_id: str
    previous: MessageRecord | None
    outgoing: providers.Outgoing
    message: MessageRecord
    token: str = ""
    provider_id: str = ""
    sent_at: str = ""


class Sender:
    """Handles the queue messages of one invocation (campaigns and policies are read once per invocation).

    A batch goes through in phases so that DynamoDB sees a few requests per
    batch rather than several per message: one BatchGetItem for the contacts
    and one for the message records; the checks and contact policy per
    contact; one packed transaction claiming every send; the provider calls;
    one packed transaction recording them sent together with each contact's
    ``campaign.received`` events. Only the suppressions Query stays per contact.
    """

    def __init__(
        self,
        channels: providers.Channels,
        policies: PolicyLoader | None = None,
        has_time: Callable[[], bool] | None = None,
    ) -> None:
        self.channels = channels
        self._has_time = has_time or (lambda: True)
        self.tally = Tally()
        self._load_policies = policies or load_policies
        self._policies: list[engine.ContactPolicy] | None = None
        self._campaigns: dict[str, CampaignRecord | None] = {}
        self._flow_steps: dict[tuple[str, int, str], CampaignRecord | None] = {}
        self._pending: list[_Pending] = []
        self._delivery = 0

    # -- reads ----------------------------------------------------------------

    def campaign(self, campaign_id: str) -> CampaignRecord | None:
        if campaign_id not in self._campaigns:
            try:
                self._campaigns[campaign_id] = CampaignRecord.get(CAMPAIGN_ENTITY, campaign_id, consistent_read=True)
            except CampaignRecord.DoesNotExist:
                self._campaigns[campaign_id] = None
        return self._campaigns[campaign_id]

    def flow_campaign(self, flow_id: str, flow: FlowStepRef) -> CampaignRecord | None:
        """A flow step's synthetic campaign (:func:`herald.flows.sends.step_campaign`), read once per invocation."""
        key = (flow_id, flow.version, flow.step_id)
        if key not in self._flow_steps:
            self._flow_steps[key] = flow_sends.step_campaign(flow_id, flow.version, flow.step_id)
        return self._flow_steps[key]

    def policies(self) -> list[engine.ContactPolicy]:
        if self._policies is None:
            self._policies = list(self._load_policies())
        return self._policies

    # -- one queue message ----------------------------------------------------

    def deliver(self, delivery: DeliveryIn) -> None:
        """Handle one queue message (idempotent); raises what a retry of it may cure."""
        failure = self.deliver_batch([delivery]).get(0)
        if failure is not None:
            raise failure

    def deliver_batch(self, deliveries: Sequence[DeliveryIn]) -> dict[int, Exception]:
        """Settle, send and record every action of every delivery; returns the failures by position.

        A failed delivery (a throttled provider, a store error) is returned for
        a retry of its queue message; what it had already sent stays sent, and
        the retry finds it handled. The others complete regardless.
        """
        now = clock.now().astimezone(UTC)
        contacts: dict[str, Contact | None] = dict(contact_store.batch_get({d.contact_id for d in deliveries}))
        plans = [self._plans(delivery) for delivery in deliveries]
        existing = messages.get_many(p.message_id for group in plans for p in group)
        suppressed = suppression_store.of_contacts(_scopes_wanted(deliveries, plans, contacts))
        failures: dict[int, Exception] = {}
        self._pending = []
        for index, delivery in enumerate(deliveries):
            self._delivery = index
            try:
                contact = contacts.get(delivery.contact_id)
                scopes = suppressed.get(delivery.contact_id, {})
                contacts[delivery.contact_id] = self._check(delivery, contact, plans[index], existing, scopes, now)
            except Exception as exc:  # isolated: this delivery is retried, the others go on
                failures[index] = exc
        pending, self._pending = self._pending, []
        self._dispatch(pending, failures)
        self._record_sent([p for p in pending if p.provider_id], contacts)
        return failures

    def _check(
        self,
        delivery: DeliveryIn,
        contact: Contact | None,
        plans: list[_Plan],
        existing: dict[str, MessageRecord],
        suppressed: dict[str, str],
        now: datetime,
    ) -> Contact | None:
        """Suppress, hold, apply or queue for sending each action; returns the contact as it now is."""
        candidates: list[tuple[_Plan, MessageRecord | None]] = []
        for plan in plans:
            previous = existing.get(plan.message_id)
            if previous is not None and previous.status in messages.HANDLED:
                if previous.status == messages.SENT and contact is not None and plan.channel in CHANNELS:
                    self._received(delivery.contact_id, plan, previous.created_at)  # a retry after a lost event
                continue
            reason = _hold(contact, plan, suppressed)
            if reason == "campaign_stopped" and plan.campaign is not None:
                self._hold_while_stopped(plan, delivery.contact_id, previous, now)
            elif reason is not None:
                self._record(plan, delivery.contact_id, previous, messages.SUPPRESSED, now, reason=reason)
            elif plan.channel in CHANNELS:
                candidates.append((plan, previous))
            elif plan.channel == webhook.CHANNEL and contact is not None:
                self._send(plan, contact, previous, now)  # to the operator's system: no contact policy
            else:
                assert contact is not None
                contact = self._apply(plan, contact, previous, now)
        if candidates:
            assert contact is not None
            self._settle(contact, candidates, now)
        return contact

    def _plans(self, delivery: DeliveryIn) -> list[_Plan]:
        plans: list[_Plan] = []
        seen: set[tuple[str, str]] = set()
        for send in delivery.sends:
            if (send.campaign_id, send.occurrence) in seen:
                continue
            seen.add((send.campaign_id, send.occurrence))
            if send.flow is not None:
                campaign = self.flow_campaign(send.campaign_id, send.flow)
            else:
                campaign = self.campaign(send.campaign_id)
            actions: list[dict[str, Any]] = list((campaign.spec.get("actions") or []) if campaign else [])
            if campaign is None or not actions:
                # Nothing to enumerate: one record says what happened to the send.
                actions = [{"type": "none"}]
            for index, action in enumerate(actions):
                mid = messages.message_id(send.campaign_id, delivery.contact_id, send.occurrence, index)
                plans.append(_Plan(send, index, action, mid, campaign))
        return plans

    # -- contact policy and priority -------------------------------------------

    def _settle(self, contact: Contact, pending: list[tuple[_Plan, MessageRecord | None]], now: datetime) -> None:
        policies = self.policies()
        zone = _zone(contact.time_zone)
        by_key = {plan.message_id: (plan, previous) for plan, previous in pending}
        wanted = [
            engine.Candidate(
                plan.message_id,
                plan.channel,
                plan.send.priority,
                plan.send.queued_at.astimezone(UTC),
                _spec(plan).get("category"),
                _spec(plan).get("campaign_group"),
            )
            for plan, _ in pending
        ]
        rules = {p.policy_id: p for c in wanted for p in engine.applicable(policies, c.category, c.campaign_group)}
        window = max((cap.window_hours for p in rules.values() for cap in p.caps), default=0)
        seen = history(contact.contact_id, now - timedelta(hours=window)) if window else []
        seen += self._pending_for(contact.contact_id, now)  # this batch's earlier deliveries to the contact
        for decision in engine.decide(wanted, seen, policies, zone, now):
            plan, previous = by_key[decision.key]
            if decision.outcome == "send":
                self._send(plan, contact, previous, now)
            elif decision.outcome == "defer":
                assert decision.at is not None
                self._record(
                    plan,
                    contact.contact_id,
                    previous,
                    messages.DEFERRED,
                    now,
                    reason=decision.reason,
                    policy_id=decision.policy_id,
                    due_at=clock.to_iso(decision.at),
                )
            else:
                self._record(
                    plan,
                    contact.contact_id,
                    previous,
                    messages.EXPIRED,
                    now,
                    reason=decision.reason,
                    policy_id=decision.policy_id,
                )

    # -- sending ----------------------------------------------------------------

    def _send(self, plan: _Plan, contact: Contact, previous: MessageRecord | None, now: datetime) -> None:
        """Render the message and queue it for the batch's claim and send (see :meth:`_dispatch`)."""
        try:
            outgoing = _outgoing(plan, contact)
        except (TemplateError, TypeError, ValueError) as exc:
            self._record(plan, contact.contact_id, previous, messages.FAILED, now, reason=f"render_error: {exc}")
            return
        message = _message(plan, contact.contact_id, previous, messages.SENDING, clock.to_iso(now))
        self._pending.append(_Pending(self._delivery, plan, contact.contact_id, previous, outgoing, message))

    def _pending_for(self, contact_id: str, now: datetime) -> list[engine.Sent]:
        """The channel sends already decided in this batch for the contact, as the policy engine counts them."""
        return [
            engine.Sent(
                item.plan.channel, now, _spec(item.plan).get("category"), _spec(item.plan).get("campaign_group")
            )
            for item in self._pending
            if item.contact_id == contact_id and item.plan.channel in CHANNELS
        ]

    def _dispatch(self, pending: list[_Pending], failures: dict[int, Exception]) -> None:
        """Claim and send the pending messages in waves of :data:`PROVIDER_CONCURRENCY`.

        Each wave is claimed (packed transaction; a claim refused by its
        condition means another sender, or an earlier delivery of this queue
        message, handled it: skipped) just before its provider calls, which run
        side by side. A wave starts only while the invocation has time for it,
        so a timeout never strands claimed messages: what did not start is
        returned for retry, unclaimed.
        """
        for start in range(0, len(pending), PROVIDER_CONCURRENCY):
            wave = [item for item in pending[start : start + PROVIDER_CONCURRENCY] if item.delivery not in failures]
            if not wave:
                continue
            if not self._has_time():
                for item in wave:
                    failures.setdefault(item.delivery, Transient("the invocation ran out of time before this send"))
                continue
            claimed = self._claim(wave, failures)
            with ThreadPoolExecutor(max_workers=max(1, len(claimed))) as pool:
                outcomes = list(pool.map(self._call, claimed))
            for item, error in zip(claimed, outcomes, strict=True):
                self._provided(item, error, failures)

    def _claim(self, wave: list[_Pending], failures: dict[int, Exception]) -> list[_Pending]:
        """Claim the wave's messages in packed transactions; returns those this sender now owns."""
        units = []
        for item in wave:
            operation, item.token = messages.claim_operation(item.message, item.plan.message_id)
            units.append(Unit(tag=item.plan.message_id, operations=[operation]))
        try:
            report = commit_units(units)
        except Exception as exc:
            # Some chunks may have committed before the error: release them all (conditional on the token).
            for item in wave:
                failures.setdefault(item.delivery, Transient(f"claiming sends failed: {exc}"))
                self._release(item)
            return []
        claimed: list[_Pending] = []
        for position, item in enumerate(wave):
            failure = report.failures.get(position)
            if failure is not None:
                if any(label.startswith(INVALID_PREFIX) or label == CONFLICT for label in failure.labels):
                    failures.setdefault(item.delivery, Transient(f"claim of {item.plan.message_id}: {failure.message}"))
                else:
                    logger.info("message already handled", extra={"message_id": item.plan.message_id})
            elif item.delivery in failures:
                self._release(item)  # its queue message is retried
            else:
                claimed.append(item)
        return claimed

    def _release(self, item: _Pending) -> None:
        try:
            messages.release(item.previous, item.plan.message_id, item.token)
        except Exception:  # the claim stays: never sent twice; visible as sending
            logger.exception("claim not released", extra={"message_id": item.plan.message_id})
            metrics.add_metric(name="DeliveryClaimsStranded", unit=MetricUnit.Count, value=1)

    def _call(self, item: _Pending) -> Exception | None:
        """Hand one claimed message to its provider (in a worker thread); the error, if any, is returned."""
        try:
            item.provider_id = self.channels.send(item.outgoing)
            item.sent_at = clock.now_iso()
        except (providers.ProviderThrottled, providers.ProviderRejected) as exc:
            return exc
        except Exception as exc:
            return providers.ProviderRejected(f"provider_outcome_unknown: {exc!r}"[:500])
        return None

    def _provided(self, item: _Pending, error: Exception | None, failures: dict[int, Exception]) -> None:
        """Record what the provider answered: throttled → claim released, delivery retried; refused → failed."""
        plan = item.plan
        if isinstance(error, providers.ProviderThrottled):
            self._release(item)
            reason = f"provider throttled ({error}); message {plan.message_id} will be retried"
            failures.setdefault(item.delivery, Throttled(reason))
        elif isinstance(error, providers.ProviderRejected):
            self.tally.count(plan.send.stats_target(), messages.FAILED)
            logger.warning("provider refused message", extra={"message_id": plan.message_id, "reason": error.reason})
            try:
                messages.mark_failed(plan.message_id, item.token, error.reason, clock.now_iso())
            except Exception:  # stays sending: never retried, as intended for a refused message
                logger.exception("failed message not recorded", extra={"message_id": plan.message_id})
        else:
            self.tally.count(plan.send.stats_target(), messages.SENT)
            if plan.channel == "email":
                self.tally.count(plan.send.stats_target(), SENT_EMAIL)

    def _record_sent(self, sent: list[_Pending], contacts: dict[str, Contact | None]) -> None:
        """Mark the batch's sends ``sent`` with each contact's ``campaign.received`` events, in packed transactions.

        One unit per contact: its message updates (conditional on the claims),
        its event items (each only if new) and its summary. A unit that fails
        (the contact changed meanwhile, a replayed event) is redone message by
        message; if even that fails the message stays ``sending``, which is
        never sent again (as after a crash).
        """
        by_contact: dict[str, list[_Pending]] = defaultdict(list)
        for item in sent:
            by_contact[item.contact_id].append(item)
        units = []
        for contact_id, items in by_contact.items():
            events = [
                activity.new_event(contact_id, _received_event(i.plan, i.sent_at))
                for i in items
                if i.plan.channel in CHANNELS  # a webhook reaches the operator's system, not the contact
            ]
            contact = contacts.get(contact_id)
            unit = (
                activity.recording_unit(contact_id, contact, events)
                if contact is not None and events
                else Unit(tag=contact_id, operations=[])
            )
            unit.operations += [
                messages.sent_operation(i.plan.message_id, i.token, i.provider_id, i.sent_at, i.plan.message_id)
                for i in items
            ]
            units.append(unit)
        try:
            failed = sorted(commit_units(units).failures)
        except Exception:
            logger.exception("batched sent records failed; recording one by one")
            failed = list(range(len(units)))
        contact_ids = list(by_contact)
        for position in failed:
            for item in by_contact[contact_ids[position]]:
                self._record_one_sent(item)

    def _record_one_sent(self, item: _Pending) -> None:
        try:
            messages.mark_sent(item.plan.message_id, item.token, item.provider_id, item.sent_at)
        except Exception:
            logger.exception("sent message not recorded", extra={"message_id": item.plan.message_id})
            return
        try:
            self._received(item.contact_id, item.plan, item.sent_at)
        except Exception:  # the send is recorded; only its activity event is missing (repaired on redelivery)
            logger.exception("received event not recorded", extra={"message_id": item.plan.message_id})

    def _received(self, contact_id: str, plan: _Plan, at: str) -> None:
        """Record ``campaign.received`` (event id = message id, so once) for rules on campaign responses."""
        if plan.channel not in CHANNELS:
            return  # a webhook reaches the operator's system, not the contact
        try:
            activity.record_event(contact_id, _received_event(plan, at))
        except NotFound:
            logger.info("contact gone before its received event was recorded", extra={"contact_id": contact_id})

    # -- points and stage -------------------------------------------------------

    def _apply(self, plan: _Plan, contact: Contact, previous: MessageRecord | None, now: datetime) -> Contact:
        """Apply a points/stage action once (its message record and the contact change in one transaction)."""
        now_iso = clock.to_iso(now)
        for _ in range(CONTACT_RETRIES):
            change = _contact_change(plan, contact, now_iso)
            if isinstance(change, str):
                self._record(plan, contact.contact_id, previous, messages.FAILED, now, reason=change)
                return contact
            update, names, values = change
            message = _message(plan, contact.contact_id, previous, messages.SENT, now_iso)
            message.sent_at = now_iso
            outcome = messages.record_with_contact_update(
                message, contact.contact_id, contact.version, update, names, values
            )
            if outcome == "done":
                self.tally.count(plan.send.stats_target(), f"applied_{plan.channel}")
                return _applied(plan, contact)
            if outcome == "handled":
                return contact
            fresh = contact_store.get(contact.contact_id)
            if fresh is None:
                self._record(plan, contact.contact_id, previous, messages.SUPPRESSED, now, reason="contact_deleted")
                return contact
            contact = fresh
        raise Transient(f"contact {contact.contact_id} kept changing; {plan.channel} action will be retried")

    # -- records ------------------------------------------------------------------

    def _record(
        self,
        plan: _Plan,
        contact_id: str,
        previous: MessageRecord | None,
        status: str,
        now: datetime,
        reason: str | None = None,
        policy_id: str | None = None,
        due_at: str | None = None,
    ) -> None:
        message = _message(plan, contact_id, previous, status, clock.to_iso(now))
        message.reason = reason[:500] if reason else None
        message.policy_id = policy_id
        if due_at is not None:
            message.due_at = due_at
            message.due_hour = messages.due_hour(due_at)
            message.deferrals = int(previous.deferrals or 0) + 1 if previous is not None else 1
        if not messages.record(message):
            return
        if status == messages.DEFERRED and previous is not None:
            return  # counted when it was first held back
        self.tally.count(plan.send.stats_target(), status, reason if status == messages.SUPPRESSED else None)

    def _hold_while_stopped(self, plan: _Plan, contact_id: str, previous: MessageRecord | None, now: datetime) -> None:
        """A send of a stopped campaign waits for its resume (re-checked hourly), or expires."""
        held = "flow not active" if plan.send.flow is not None else "campaign stopped"
        if now >= plan.send.queued_at.astimezone(UTC) + STOPPED_HOLD:
            reason = f"{held} for more than {STOPPED_HOLD.total_seconds() / 3600:g} hours"
            self._record(plan, contact_id, previous, messages.EXPIRED, now, reason=reason)
            return
        due_at = clock.to_iso(now + timedelta(hours=1))
        self._record(plan, contact_id, previous, messages.DEFERRED, now, reason=held, due_at=due_at)

    def flush_stats(self) -> None:
        self.tally.flush(clock.now())


# --------------------------------------------------------------------------
# Releasing deferred sends
# --------------------------------------------------------------------------


def release_due(now: datetime, queue_send: QueueSend, lookback_hours: int = RELEASE_LOOKBACK_HOURS) -> int:
    """Queue every deferred send whose slot has come, so the sender decides it again; returns sends queued.

    Queries ``DueIndex`` for each hour bucket from ``lookback_hours`` before
    ``now`` up to ``now`` (``due_at <= now``), groups the sends by contact and
    queues the tick's payload shape with their original ``queued_at`` (expiry
    counts from it) and priority. Releasing twice is harmless: the first
    delivery settles the message, the second finds it handled.
    """
    now = now.astimezone(UTC)
    until = clock.to_iso(now)
    start = (now - timedelta(hours=lookback_hours)).replace(minute=0, second=0, microsecond=0)
    by_contact: dict[str, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
    hour = start
    while hour <= now:
        for record in messages.due(hour.strftime("%Y-%m-%dT%H"), until):
            sends = by_contact[record.contact_id]
            key = (record.campaign_id, record.occurrence)
            priority = int(record.priority)
            if key not in sends or priority < sends[key]["priority"]:
                sends[key] = {
                    "campaign_id": record.campaign_id,
                    "occurrence": record.occurrence,
                    "priority": priority,
                    "queued_at": record.queued_at,
                }
                if record.step_id and record.flow_version:  # a flow step's send (herald.flows.sends)
                    sends[key]["flow"] = {"version": int(record.flow_version), "step_id": record.step_id}
        hour += timedelta(hours=1)
    payloads: list[dict[str, Any]] = []
    released = 0
    for contact_id, sends in sorted(by_contact.items()):
        payloads += delivery_messages(contact_id, list(sends.values()))
        released += len(sends)
    if payloads:
        queue_send(payloads)
    return released


def history(contact_id: str, since: datetime) -> list[engine.Sent]:
    """The contact's channel messages sent since ``since``, as the policy engine counts them."""
    return [
        engine.Sent(
            record.channel,
            datetime.fromisoformat((record.sent_at or record.created_at).replace("Z", "+00:00")),
            record.category,
            record.campaign_group,
        )
        for record in messages.sent_since(contact_id, clock.to_iso(since))
        if record.channel in CHANNELS
    ]


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def suppression_reason(
    contact: Contact,
    channel: str,
    suppressed: dict[str, str] | None = None,
    campaign_id: str | None = None,
    category: str | None = None,
    campaign_group: str | None = None,
) -> str | None:
    """Why a channel message must not go to this contact now (seed 002), or None.

    ``suppressed`` is the contact's suppressions (``scope -> reason``, see
    :mod:`herald.store.suppressions`); a matching one gives its reason
    (``complaint`` for an SES complaint).
    """
    consent = contact.consent.get(channel)
    if consent is None or not consent.granted:
        return "no_consent"
    if channel == "email":
        if contact.bounce.hard:
            return "hard_bounce"
        if contact.bounce.soft_count >= SOFT_BOUNCE_LIMIT:
            return "soft_bounces"
    scoped = suppression_store.matching(suppressed or {}, channel, campaign_id, category, campaign_group)
    if scoped is not None:
        return scoped
    if not _address(contact, channel):
        return "no_address"
    return None


def _hold(contact: Contact | None, plan: _Plan, suppressed: dict[str, str] | None = None) -> str | None:
    if contact is None:
        return "contact_deleted"
    if plan.campaign is None:
        return "flow_deleted" if plan.send.flow is not None else "campaign_deleted"
    if plan.campaign.state != LAUNCHED:
        return "campaign_stopped"
    if plan.channel == webhook.CHANNEL:
        return None  # no consent, address or suppression: it goes to the operator, not the contact
    if plan.channel in CHANNELS:
        spec = _spec(plan)
        return suppression_reason(
            contact, plan.channel, suppressed, plan.send.campaign_id, spec.get("category"), spec.get("campaign_group")
        )
    if plan.channel == "none":
        return "no_actions"
    if plan.channel not in ("points", "stage"):
        return "unknown_action"
    return None


def _scopes_wanted(
    deliveries: Sequence[DeliveryIn], plans: list[list[_Plan]], contacts: dict[str, Contact | None]
) -> dict[str, set[str]]:
    """The suppression scopes that could hold back the batch's channel sends, by contact (D3b)."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for delivery, group in zip(deliveries, plans, strict=True):
        if contacts.get(delivery.contact_id) is None:
            continue
        for plan in group:
            if plan.channel in CHANNELS:
                spec = _spec(plan)
                scopes = suppression_store.scopes_for(
                    plan.channel, plan.send.campaign_id, spec.get("category"), spec.get("campaign_group")
                )
                wanted[delivery.contact_id].update(scopes)
    return wanted


def _received_event(plan: _Plan, at: str) -> EventIn:
    """``campaign.received`` for a sent message; its id is the message id, so it is recorded once."""
    return EventIn(
        event_id=plan.message_id,
        type=RECEIVED_EVENT,
        occurred_at=datetime.fromisoformat(at.replace("Z", "+00:00")),
        properties={"campaign_id": plan.send.campaign_id, "channel": plan.channel, "message_id": plan.message_id},
    )


def _address(contact: Contact, channel: str) -> str | None:
    if channel == "email":
        return contact.email
    if channel == "sms":
        phone = contact.phone
        return phone if phone and phone.startswith("+") and phone[1:].isdigit() else None
    endpoint = contact.attributes.get("push_endpoint_arn")
    return endpoint if isinstance(endpoint, str) and endpoint.startswith("arn:") else None


def _spec(plan: _Plan) -> dict[str, Any]:
    return plan.campaign.spec if plan.campaign is not None else {}


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _outgoing(plan: _Plan, contact: Contact) -> providers.Outgoing:
    if plan.channel == webhook.CHANNEL:
        return _webhook_outgoing(plan, contact)
    person = personalisation(contact.model_dump(mode="json"))
    assert plan.campaign is not None
    campaign = {"id": plan.campaign.entity_id, "name": plan.campaign.name}
    action = plan.action
    tags = {"campaign_id": plan.send.campaign_id, "contact_id": contact.contact_id, "message_id": plan.message_id}

    def text(name: str) -> str:
        return render(str(action.get(name) or ""), person, campaign)

    if plan.channel == "email":
        assert contact.email is not None
        links = email.links(contact.contact_id, plan.send.campaign_id, plan.message_id, plan.campaign.spec)
        return providers.Email(
            contact.email, text("subject").strip(), text("body"), tags, links.unsubscribe, links.preferences
        )
    if plan.channel == "sms":
        assert contact.phone is not None
        return providers.Sms(contact.phone, text("text"), tags)
    return providers.Push(str(contact.attributes["push_endpoint_arn"]), text("title"), text("body"), tags)


def _webhook_outgoing(plan: _Plan, contact: Contact) -> webhook.Webhook:
    assert plan.campaign is not None
    campaign = {"id": plan.campaign.entity_id, "name": plan.campaign.name}
    return webhook.outgoing(plan.action, contact.model_dump(mode="json"), campaign, plan.message_id)


def _message(plan: _Plan, contact_id: str, previous: MessageRecord | None, status: str, now_iso: str) -> MessageRecord:
    spec = _spec(plan)
    flow = plan.send.flow
    return MessageRecord(
        plan.message_id,
        contact_id=contact_id,
        program_key=flow_store.run_key(plan.send.campaign_id)
        if flow
        else enrolments.program_key(plan.send.campaign_id),
        flow_version=flow.version if flow else None,
        step_id=flow.step_id if flow else None,
        campaign_id=plan.send.campaign_id,
        occurrence=plan.send.occurrence,
        action_index=plan.index,
        channel=plan.channel,
        status=status,
        priority=plan.send.priority,
        queued_at=clock.to_iso(plan.send.queued_at),
        created_at=now_iso,
        first_seen_at=previous.first_seen_at if previous is not None and previous.first_seen_at else now_iso,
        deferrals=previous.deferrals if previous is not None else None,
        category=spec.get("category"),
        campaign_group=spec.get("campaign_group"),
    )


def _applied(plan: _Plan, contact: Contact) -> Contact:
    """The contact as the points/stage transaction left it (its version bumped)."""
    attributes = dict(contact.attributes)
    if plan.channel == "points":
        attributes["points"] = (attributes.get("points") or 0) + int(plan.action["points"])
    else:
        attributes["stage"] = plan.action["stage"]
    return contact.model_copy(update={"attributes": attributes, "version": contact.version + 1})


def _contact_change(plan: _Plan, contact: Contact, now_iso: str) -> tuple[str, dict[str, str], dict[str, Any]] | str:
    """The UpdateExpression of a points/stage action, or the reason it cannot apply."""
    names = {"#attrs": "attributes", "#upd": "updated_at"}
    values: dict[str, Any] = {":now": {"S": now_iso}}
    has_map = bool(contact.attributes)
    if plan.channel == "points":
        points = plan.action.get("points")
        if not isinstance(points, int) or isinstance(points, bool):
            return "invalid_action"
        current = contact.attributes.get("points")
        if current is not None and (isinstance(current, bool) or not isinstance(current, int | float)):
            return "points_not_numeric"
        names["#key"] = "points"
        if has_map:
            values[":val"] = {"N": str(points)}
            return "ADD #attrs.#key :val SET #upd = :now", names, values
        del names["#key"]
        values[":map"] = {"M": {"points": {"N": str(points)}}}
        return "SET #attrs = :map, #upd = :now", names, values
    stage = plan.action.get("stage")
    if not isinstance(stage, str) or not stage:
        return "invalid_action"
    names["#key"] = "stage"
    if has_map:
        values[":val"] = {"S": stage}
        return "SET #attrs.#key = :val, #upd = :now", names, values
    values[":map"] = {"M": {"stage": {"S": stage}}}
    del names["#key"]
    return "SET #attrs = :map, #upd = :now", names, values
