"""One step of a flow for one page of a cohort: the work of ``FlowStepFunction``.

The state machine (``statemachine/flow_run.asl.json``) carries the cohort's
place — flow, version, cohort, step, visit number ``seq``, page cursor — and
calls :func:`run_step`, whose answer is the next state and an ``action`` the
machine routes on:

- ``page``: more members of this step remain (same step, next cursor);
- ``next``: go on to the next step now;
- ``wait``: a DELAY; the machine waits (``Wait``, ``TimestampPath: $.wait_until``)
  and goes on to the next step;
- ``hold``: the flow is paused; wait, then try the same step again;
- ``end``: no member is left on this path.

Before each step, members who left the flow's segments, unsubscribed from it
on every channel, or converted (when ``show_after_conversion`` is off) leave
the cohort. Every side effect is idempotent, so a retried task redoes nothing:
sends are queued with deterministic message ids that the sender claims once;
child cohorts, PDFs and segment changes are keyed puts; a page's log and
counters are written once, together.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from pynamodb.exceptions import UpdateError

from herald.campaigns import eligibility
from herald.campaigns.model import local_moment
from herald.campaigns.targeting import spec_targets
from herald.clock import to_iso
from herald.dynamodb_json import from_attribute_value
from herald.errors import NotFound
from herald.flows import cohorts, entry, pdf
from herald.flows.definition import (
    ConditionStep,
    CrossCampaignStep,
    DelayStep,
    ExportPdfStep,
    FlowGraph,
    SegmentStep,
    Step,
    own_campaign,
)
from herald.flows.model import FlowStatus, effective_priority
from herald.flows.sends import delivery_message, step_message_id, version_spec
from herald.rules.compiler import compile_rule
from herald.rules.model import parse_rule
from herald.segments import service as segments
from herald.store import campaigns as campaign_store
from herald.store import contacts as contact_store
from herald.store import flows as store
from herald.store import suppressions as suppression_store
from herald.store.tables import ContactRecord, FlowRunRecord, StepLogRecord
from herald.store.transactions import default_connection, is_condition_failure

DEFAULT_PAGE_SIZE = 1000
# A Standard execution keeps 25,000 history events (about 10 per step call) and lives a year.
MAX_CALLS_PER_EXECUTION = 2000
MAX_EXECUTION_AGE = timedelta(days=330)
# A paused flow's cohorts look again after this long (scaled like every delay).
HOLD_SECONDS = 3600
CHANNEL_STEPS = {"email", "sms", "push", "web_service", "award_points", "update_stage"}
CROSS_CHANNEL = {"cross_campaign_email": "email", "cross_campaign_sms": "sms", "cross_campaign_push": "push"}

QueueSend = Callable[[list[dict[str, Any]]], None]
PdfStore = Callable[[str, bytes], str]


def page_size() -> int:
    return int(os.environ.get("HERALD_FLOW_PAGE_SIZE") or DEFAULT_PAGE_SIZE)


def time_scale() -> float:
    """How many times faster than real time delays pass (the embedded runtime's demo and tests)."""
    return max(1.0, float(os.environ.get("HERALD_FLOW_TIME_SCALE") or 1))


@dataclass
class Services:
    """What a step reaches outside DynamoDB: the delivery queue, child executions, PDF storage."""

    queue_send: QueueSend
    starter: cohorts.Starter | None = None
    store_pdf: PdfStore = pdf.store_pdf


@dataclass
class _Member:
    contact_id: str
    occurrence: str
    item: dict[str, Any]
    run: FlowRunRecord | None = None


@dataclass
class _Outcomes:
    log: dict[str, list[str]] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)

    def note(self, member: _Member, outcome: str, reason: str = "", message_id: str = "") -> None:
        self.log[member.contact_id] = [outcome, reason, message_id]
        self.counters[outcome] += 1
        if reason and outcome in ("skipped", "left", "failed"):
            # Counted by the reason's code ("render_error: <detail>" → failed_render_error): the
            # log keeps the detail, the stats row gets one counter per kind, not per message.
            self.counters[f"{outcome}_{reason.split(':', 1)[0]}"] += 1


@lru_cache(maxsize=64)
def _version(flow_id: str, number: int) -> tuple[FlowGraph, dict[str, Any]]:
    """A version's parsed graph and settings (versions never change: the sender's cache, parsed once here)."""
    spec = version_spec(flow_id, number)
    if spec is None:
        raise LookupError(f"flow {flow_id} has no version {number}")
    return FlowGraph.model_validate(spec["graph"]), dict(spec["settings"])


def run_step(state: dict[str, Any], now: datetime, services: Services) -> dict[str, Any]:
    """Do the current step for one page of the cohort; returns the next state (see the module doc)."""
    result = _step(state, now, services)
    return _continued(result, now, services)


def _step(state: dict[str, Any], now: datetime, services: Services) -> dict[str, Any]:
    flow_id, cohort_id = state["flow_id"], state["cohort_id"]
    flow = store.get(flow_id)
    if flow is None:
        return _drain_deleted(state, now)
    graph, settings = _version(flow_id, int(state["version"]))
    closing = _closing_reason(flow, now)
    if closing is None and flow.status == FlowStatus.PAUSED.value:
        return {**state, "action": "hold", "wait_until": _whole_second(now + _scaled(timedelta(seconds=HOLD_SECONDS)))}
    step = graph.step(state["step_id"])
    page = store.members(cohort_id, state.get("cursor"), page_size())
    members = _load(page.members)
    # Decide, write the decisions (once), then act on what was written: a retried page acts
    # on the first attempt's decisions, never on a second look at contacts that changed since.
    outcomes = _Outcomes()
    staying = _leave_checks(members, flow_id, settings, closing, now, outcomes)
    _decide(step, staying, state, settings, now, services, outcomes)
    decided = _record(state, step, page.members, outcomes, now)
    _apply(step, state, settings, {m.contact_id: m for m in members}, decided, now, services)
    if page.cursor is None and (closing or (not page.members and not state.get("page"))):
        return _finish(state, now)  # stopped or ended, or nobody left on this path
    tally = Counter(state.get("tally") or {})
    tally.update(_tally(decided))
    if page.cursor is not None:
        return {
            **state,
            "cursor": page.cursor,
            "page": int(state.get("page") or 0) + 1,
            "arrived_at": state.get("arrived_at") or to_iso(now),
            "tally": dict(tally),
            "action": "page",
        }
    return _after_step(step, {**state, "tally": dict(tally)}, now, services)


def _continued(result: dict[str, Any], now: datetime, services: Services) -> dict[str, Any]:
    """Hand a long-lived cohort over to a fresh execution before Step Functions' limits.

    A Standard execution keeps at most 25,000 history events and lives at most a year; a
    big cohort (many pages), a long pause or a flow that loops through delays could reach
    either. The successor (named ``<cohort>-g<n>``) starts where this one stands, through
    the machine's ``Start`` choice (so a pending wait is still waited), and this one ends.
    """
    if result.get("action") == "end" or services.starter is None:
        return result
    calls = int(result.get("calls") or 0) + 1
    born = _parse(result.get("born")) or now
    if calls < MAX_CALLS_PER_EXECUTION and now - born < MAX_EXECUTION_AGE:
        return {**result, "calls": calls, "born": to_iso(born)}
    generation = int(result.get("generation") or 0) + 1
    successor = {**result, "calls": 0, "born": to_iso(now), "generation": generation}
    services.starter.start(f"{result['cohort_id']}-g{generation}", successor)
    return {**result, "action": "end"}


def _tally(decided: dict[str, list[str]]) -> Counter[str]:
    """What a page adds to the step's running totals: who walks on, and which way."""
    tally: Counter[str] = Counter()
    for outcome, _, _ in decided.values():
        if outcome != "left":
            tally["walking"] += 1
        if outcome in ("yes", "no"):
            tally[outcome] += 1
    return tally


def _drain_deleted(state: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The flow was deleted: close the runs of the cohort's members, page by page, and end."""
    page = store.members(state["cohort_id"], state.get("cursor"), page_size())
    for contact_id, occurrence in page.members.items():
        _end_run(state["flow_id"], _Member(contact_id, occurrence, {}), store.LEFT, "flow_deleted", now)
    if page.cursor is not None:
        return {**state, "cursor": page.cursor, "page": int(state.get("page") or 0) + 1, "action": "page"}
    return _finish(state, now)


# -- members ------------------------------------------------------------------


def _load(found: dict[str, str]) -> list[_Member]:
    """The page's contacts as raw items (one BatchGetItem per 100), with their run occurrences."""
    items = _raw_contacts(list(found))
    return [_Member(c, occurrence, items.get(c, {})) for c, occurrence in found.items()]


def _raw_contacts(contact_ids: list[str]) -> dict[str, dict[str, Any]]:
    client: Any = default_connection().client
    table = ContactRecord.Meta.table_name
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(contact_ids), 100):
        keys = [{"contact_id": {"S": c}} for c in contact_ids[start : start + 100]]
        request: dict[str, Any] = {table: {"Keys": keys, "ConsistentRead": True}}
        while request:
            answer = client.batch_get_item(RequestItems=request)
            for item in answer.get("Responses", {}).get(table, []):
                found[item["contact_id"]["S"]] = item
            request = answer.get("UnprocessedKeys") or {}
    return found


def _closing_reason(flow: Any, now: datetime) -> str | None:
    """Why everyone leaves now: the flow was stopped, or its end (as the flow says now) has passed."""
    if flow.status == FlowStatus.STOPPED.value:
        return "flow_stopped"
    settings = flow.spec["settings"]
    end = local_moment(settings.get("end"), settings.get("time_zone") or "UTC")
    if end is not None and now >= end:
        return "flow_ended"
    return None


def _leave_checks(
    members: list[_Member],
    flow_id: str,
    settings: dict[str, Any],
    closing: str | None,
    now: datetime,
    outcomes: _Outcomes,
) -> list[_Member]:
    """Who walks on; the others leave the cohort with their reason."""
    runs = store.runs(flow_id, [m.contact_id for m in members])
    scopes = suppression_store.scopes_for("all", flow_id, settings.get("category"), settings.get("campaign_group"))
    present = [m for m in members if m.item]
    suppressed = suppression_store.of_contacts({m.contact_id: set(scopes) for m in present})
    segments = set(settings["segments"])
    staying: list[_Member] = []
    for member in members:
        run = member.run = runs.get(member.contact_id)
        reason = _leave_reason(member, run, segments, suppressed, settings, closing)
        if reason == "not_in_run":
            continue  # a run that already ended (or a newer one): nothing of ours to do
        if reason:
            outcomes.note(member, "left", reason)
        else:
            staying.append(member)
    return staying


def _leave_reason(
    member: _Member,
    run: FlowRunRecord | None,
    segments: set[str],
    suppressed: dict[str, dict[str, str]],
    settings: dict[str, Any],
    closing: str | None,
) -> str | None:
    if run is None or run.state != store.ACTIVE or run.occurrence != member.occurrence:
        return "not_in_run"
    if closing:
        return closing
    if not member.item:
        return "contact_deleted"
    if not segments & set(member.item.get("segment_ids", {}).get("SS", ())):
        return "left_segments"
    if suppressed.get(member.contact_id):
        return "unsubscribed"
    conversion = settings.get("conversion_event")
    if conversion and not settings.get("show_after_conversion", True) and _converted(member, run, conversion):
        return "converted"
    return None


def _converted_since_entry(member: _Member, settings: dict[str, Any]) -> bool:
    """Whether a member who finishes converted on the way (the reset period's "conversions")."""
    event = settings.get("conversion_event")
    return bool(event and member.run is not None and member.item and _converted(member, member.run, event))


def _converted(member: _Member, run: FlowRunRecord, event_type: str) -> bool:
    raw = member.item.get("activity")
    activity = from_attribute_value(raw) if raw else {}
    entered = datetime.fromisoformat(run.enrolled_at.replace("Z", "+00:00")).timestamp()
    return any(entry[0] >= entered for entry in (activity or {}).get(event_type, []))


# -- the step ------------------------------------------------------------------


def _decide(
    step: Step,
    members: list[_Member],
    state: dict[str, Any],
    settings: dict[str, Any],
    now: datetime,
    services: Services,
    outcomes: _Outcomes,
) -> None:
    """Decide the step's outcome for each member who stayed (PDFs and segment changes are done here:
    both are keyed, so doing them again on a retry changes nothing)."""
    if isinstance(step, DelayStep):
        until = _whole_second(_wait_until(step, state, settings, now))
        for member in members:
            outcomes.note(member, "waited", until)
    elif isinstance(step, ConditionStep):
        predicate = compile_rule(parse_rule(own_campaign(step.rule, state["flow_id"])), now)
        for member in members:
            outcomes.note(member, "yes" if predicate(member.item) else "no")
    elif isinstance(step, ExportPdfStep):
        _export_pdf(step, members, state, settings, services, outcomes)
    elif isinstance(step, SegmentStep):
        _segment_change(step, members, outcomes)
    else:
        if isinstance(step, CrossCampaignStep):
            members = _qualified(step, members, now, outcomes)
        for member in members:
            message_id = step_message_id(state["flow_id"], member.contact_id, occurrence_of(member.occurrence, state))
            outcomes.note(member, "queued", "", message_id)


def _apply(
    step: Step,
    state: dict[str, Any],
    settings: dict[str, Any],
    members: dict[str, _Member],
    decided: dict[str, list[str]],
    now: datetime,
    services: Services,
) -> None:
    """Act on a page's recorded decisions: close leavers' runs, queue sends, fill the branch
    cohorts, complete the runs whose path ends here. Each act is idempotent."""
    flow_id = state["flow_id"]
    finished: list[_Member] = []
    branches: dict[str, dict[str, str]] = {"yes": {}, "no": {}}
    bodies = []
    priority = effective_priority(settings)
    for contact_id, (outcome, reason, _) in decided.items():
        member = members.get(contact_id)
        if member is None:
            continue
        if outcome == "left":
            _close(flow_id, member, store.CONVERTED if reason == "converted" else store.LEFT, reason, now, settings)
            continue
        if outcome == "queued":
            occurrence = occurrence_of(member.occurrence, state)
            bodies.append(
                delivery_message(flow_id, int(state["version"]), step.id, contact_id, occurrence, priority, to_iso(now))
            )
        if isinstance(step, ConditionStep):
            if getattr(step, outcome) is None:
                finished.append(member)
            else:
                branches[outcome][contact_id] = member.occurrence
        elif step.next is None:
            finished.append(member)  # the path ends with this step
    if bodies:
        services.queue_send(bodies)
    for branch, chosen in branches.items():
        if chosen:
            store.put_members(cohorts.child_cohort(flow_id, state["cohort_id"], int(state["seq"]), branch), chosen)
    for member in finished:
        converted = _converted_since_entry(member, settings)
        _close(flow_id, member, store.CONVERTED if converted else store.COMPLETED, "completed", now, settings)


def occurrence_of(run_occurrence: str, state: dict[str, Any]) -> str:
    """The send's occurrence: the contact's run, the cohort's entry and the visit, so each visit sends once."""
    return f"flow:{run_occurrence}:{state['root']}:{int(state['seq'])}"


def _qualified(step: CrossCampaignStep, members: list[_Member], now: datetime, outcomes: _Outcomes) -> list[_Member]:
    """Members who qualify for the other campaign now (seed 004); the others skip the step and go on."""
    campaign = campaign_store.get(step.campaign_id)
    channel = CROSS_CHANNEL[step.type]
    if campaign is None or not any(a.get("type") == channel for a in campaign.spec.get("actions") or []):
        reason = "campaign_missing" if campaign is None else f"campaign_has_no_{channel}"
        for member in members:
            outcomes.note(member, "skipped", reason)
        return []
    if eligibility.blockers(campaign.spec, campaign.state, now):
        for member in members:
            outcomes.note(member, "skipped", "campaign_not_running")
        return []
    chosen = spec_targets(campaign.spec, [ContactRecord.from_raw_data(m.item) for m in members])
    qualified = []
    for member in members:
        if member.contact_id in chosen:
            qualified.append(member)
        else:
            outcomes.note(member, "skipped", "not_qualified")
    return qualified


def _export_pdf(
    step: ExportPdfStep,
    members: list[_Member],
    state: dict[str, Any],
    settings: dict[str, Any],
    services: Services,
    outcomes: _Outcomes,
) -> None:
    """One PDF per member, stored under a key made of the visit (so a retry overwrites the same object)."""
    for member in members:
        contact = contact_store.from_record(ContactRecord.from_raw_data(member.item))
        context = pdf.pdf_context(contact.model_dump(mode="json"), state["flow_id"], str(settings.get("name") or ""))
        try:
            data = pdf.render_pdf(step.template, context)
        except pdf.PdfTemplateError as exc:
            outcomes.note(member, "failed", f"render_error: {exc}"[:200])
            continue
        key = pdf.pdf_key(state["flow_id"], state["root"], int(state["seq"]), step.id, member.contact_id)
        outcomes.note(member, "exported", "", services.store_pdf(key, data))


def _segment_change(step: SegmentStep, members: list[_Member], outcomes: _Outcomes) -> None:
    """Add to or remove from a segment as an automation (seed 002: flexi runs may override it)."""
    add = step.type == "add_to_segment"
    if not members:
        return
    try:
        results = segments.automation_change(step.segment_id, [m.contact_id for m in members], add)
    except NotFound:
        results = {m.contact_id: "segment_missing" for m in members}
    done = "added" if add else "removed"
    for member in members:
        result = results.get(member.contact_id, "conflict")
        if result in ("added", "removed"):
            outcomes.note(member, done)
        elif result in ("already_member", "not_member"):
            outcomes.note(member, done, result)
        else:
            outcomes.note(member, "failed", result)


# -- after the page ---------------------------------------------------------------


def _close(flow_id: str, member: _Member, state: str, reason: str, now: datetime, settings: dict[str, Any]) -> None:
    """Close the run and, when the flow's reset period covers how it ended, owe the contact a new entry."""
    if _end_run(flow_id, member, state, reason, now):
        entry.owe_reset(flow_id, member.contact_id, settings, state, now)


def _end_run(flow_id: str, member: _Member, state: str, reason: str, now: datetime) -> bool:
    """Close the contact's run once (only the run this cohort walks, only while active); True if it did."""
    run = FlowRunRecord(store.run_key(flow_id), member.contact_id)
    try:
        run.update(
            actions=[
                FlowRunRecord.state.set(state),
                FlowRunRecord.exited_at.set(to_iso(now)),
                FlowRunRecord.exit_reason.set(reason),
            ],
            condition=(FlowRunRecord.state == store.ACTIVE) & (FlowRunRecord.occurrence == member.occurrence),
        )
    except UpdateError as exc:
        if not is_condition_failure(exc):
            raise
        return False  # a run already closed (or a newer run) is left as it is
    return True


def _record(
    state: dict[str, Any], step: Step, found: dict[str, str], outcomes: _Outcomes, now: datetime
) -> dict[str, list[str]]:
    """Write the page's decisions and counters once; returns the decisions that stand.

    A retried page finds its log already written and acts on that, so a contact
    who changed since the first attempt cannot take both branches of a condition.
    """
    if not found:
        return {}
    outcomes.counters["reached"] += len(outcomes.log) - outcomes.counters["left"]
    log = StepLogRecord(
        store.log_key(state["flow_id"]),
        f"{state['cohort_id']}#{int(state['seq']):04d}#{int(state.get('page') or 0):05d}",
        step_id=step.id,
        step_type=step.type,
        at=to_iso(now),
        occurrence_of={c: found[c] for c in outcomes.log},
        outcomes=outcomes.log,
    )
    if store.record_page(state["flow_id"], log, dict(outcomes.counters)):
        return outcomes.log
    written = store.get_log(state["flow_id"], log.entity_id)
    return dict(written.outcomes) if written is not None else outcomes.log


def _after_step(step: Step, state: dict[str, Any], now: datetime, services: Services) -> dict[str, Any]:
    """The last page of the step is done: where the cohort goes next."""
    following = {**state, "cursor": None, "page": 0, "arrived_at": None, "tally": {}, "seq": int(state["seq"]) + 1}
    if isinstance(step, ConditionStep):
        return _route(step, state, following, now, services)
    if step.next is None or not (state.get("tally") or {}).get("walking"):
        return _finish(state, now)  # the path ends here, or nobody is left on it
    if isinstance(step, DelayStep):
        arrived = _parse(state.get("arrived_at")) or now
        _graph, settings = _version(state["flow_id"], int(state["version"]))
        until = _whole_second(_wait_until(step, state, settings, arrived))
        return {**following, "step_id": step.next, "action": "wait", "wait_until": until}
    return {**following, "step_id": step.next, "action": "next"}


def _route(
    step: ConditionStep, state: dict[str, Any], following: dict[str, Any], now: datetime, services: Services
) -> dict[str, Any]:
    """Continue ``yes`` in this execution and start one for ``no`` when both have members."""
    tally = state.get("tally") or {}
    live = [b for b in ("yes", "no") if tally.get(b) and getattr(step, b) is not None]
    if not live:
        return _finish(state, now)
    seq = int(state["seq"])
    if len(live) == 2:
        if services.starter is None:
            raise RuntimeError("a split needs the state machine (FLOW_STATE_MACHINE_ARN)")
        other = cohorts.child_cohort(state["flow_id"], state["cohort_id"], seq, "no")
        cohorts.start_child(services.starter, state, other, str(step.no), now)
    branch = live[0]
    cohorts.end(state["flow_id"], state["cohort_id"], now)
    return {
        **following,
        "cohort_id": cohorts.child_cohort(state["flow_id"], state["cohort_id"], seq, branch),
        "step_id": getattr(step, branch),
        "action": "next",
    }


def _finish(state: dict[str, Any], now: datetime) -> dict[str, Any]:
    cohorts.end(state["flow_id"], state["cohort_id"], now)
    return {**state, "action": "end"}


# -- time ---------------------------------------------------------------------------


def _whole_second(moment: datetime) -> str:
    """``moment`` rounded up to a whole second: Step Functions drops fractions, so a wait never ends early."""
    rounded = moment.replace(microsecond=0) + (timedelta(seconds=1) if moment.microsecond else timedelta())
    return rounded.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _scaled(delay: timedelta) -> timedelta:
    return delay / time_scale()


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _wait_until(step: DelayStep, state: dict[str, Any], settings: dict[str, Any], arrived: datetime) -> datetime:
    """When the delay ends: a duration after the cohort arrived, or the next local time (and weekday)."""
    arrived = _parse(state.get("arrived_at")) or arrived
    zone = ZoneInfo(settings.get("time_zone") or "UTC")
    if step.duration is not None:
        real = _add(arrived, step.duration.amount, step.duration.unit, zone) - arrived
    else:
        assert step.until is not None
        real = _next_local(arrived, step.until.time, step.until.weekday, zone) - arrived
    return arrived + _scaled(real)


def _add(moment: datetime, amount: int, unit: str, zone: ZoneInfo) -> datetime:
    """``moment`` plus a duration: minutes and hours on the clock, days, weeks and months on the
    flow's local calendar (09:00 stays 09:00 across a DST change; 31 January + 1 month = 28/29 February)."""
    if unit in ("minutes", "hours"):
        return moment.astimezone(UTC) + timedelta(**{unit: amount})  # elapsed time, not the wall clock
    local = moment.astimezone(zone).replace(tzinfo=None)
    if unit in ("days", "weeks"):
        shifted = local + timedelta(**{unit: amount})
    else:
        month = local.month - 1 + amount
        year, month = local.year + month // 12, month % 12 + 1
        days_in = [31, 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28, 31, 30, 31, 30]
        days_in += [31, 31, 30, 31, 30, 31]
        shifted = local.replace(year=year, month=month, day=min(local.day, days_in[month - 1]))
    return shifted.replace(tzinfo=zone).astimezone(UTC)


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _next_local(after: datetime, at: str, weekday: str | None, zone: ZoneInfo) -> datetime:
    """The first local ``at`` (on ``weekday``, if given) strictly after ``after``, DST-safe."""
    hour, minute = (int(part) for part in at.split(":"))
    local = after.astimezone(zone)
    for days in range(0, 8):
        day = (local + timedelta(days=days)).date()
        candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
        if candidate <= after or (weekday is not None and WEEKDAYS[day.weekday()] != weekday):
            continue
        return candidate.astimezone(UTC)
    raise AssertionError("a weekday recurs within 8 days")
