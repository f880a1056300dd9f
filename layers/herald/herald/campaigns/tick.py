"""The campaign tick: eligible campaigns → audience now → enrol exactly once → queue deliveries.

One run (seed 000's "Marketing Automation Cron Job"):

1. Re-queue deliveries an earlier, crashed run committed but never queued (the outbox).
2. For every launched campaign that is eligible now, highest priority first,
   under a short lease so overlapping runs do not duplicate the work:
   - audience campaigns (ad-hoc, lifecycle): read who matches now (keys only,
     see ``targeting``), read who is in (the roster), enrol the difference,
     exit those who no longer match;
   - date triggers: contacts whose birthday or sign-up anniversary it is in
     their own time zone, once per year;
   - event triggers are enrolled as their events arrive (``triggers``).
3. Queue the run's deliveries, one message per contact holding all its sends,
   so the sender settles competing sends by priority in one decision.
4. Release deferred sends whose slot has come; refresh statistics and the
   In-Campaign % alerts.

Exactly once comes from the enrolment conditions, not from the lease: two
runs that both enrol a contact race on one conditional write, and only the
winner's outbox carries the delivery.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from herald.campaigns import alerts, eligibility
from herald.campaigns.model import CampaignFields, CampaignKind, effective_priority, parse_local_time
from herald.campaigns.targeting import ReadCount, matching_ids, targeted_among
from herald.clock import to_iso
from herald.observability import logger
from herald.store import enrolments as store
from herald.store.enrolments import Enrolment, RosterChanges
from herald.store.tables import CampaignRecord, ContactRecord

LIVE = "campaign"
# The tick function's timeout: no run lives longer, so its lease and its outbox items are safe to take over after it.
LEASE_SECONDS = 900
DAY_TRIGGER_INDEX = {"birthday": "birthday_index", "signup_anniversary": "signup_index"}

QueueSend = Callable[[list[dict[str, Any]]], None]
ReleaseDue = Callable[[datetime, QueueSend], int]


@dataclass
class CampaignRun:
    """What one run did for one campaign."""

    campaign_id: str
    processed: bool = False
    skipped: str | None = None
    matching: int = 0
    active: int = 0
    enrolled: int = 0
    already: int = 0
    exited: int = 0
    not_previously_treated: int = 0
    items_read: int = 0
    write_requests: int = 0
    in_campaign_pct: float | None = None


@dataclass
class TickReport:
    """What one tick did."""

    run_id: str
    requeued_outbox: int = 0
    queued_contacts: int = 0
    queued_sends: int = 0
    released: int = 0
    campaigns: dict[str, CampaignRun] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "requeued_outbox": self.requeued_outbox,
            "queued_contacts": self.queued_contacts,
            "queued_sends": self.queued_sends,
            "released": self.released,
            "campaigns": {cid: vars(run) for cid, run in self.campaigns.items()},
        }


def live_campaigns() -> list[CampaignRecord]:
    """Launched, not stopped campaigns (the sparse ``LiveIndex``)."""
    return list(CampaignRecord.live_index.query(LIVE))


class Tick:
    """One run of the campaign tick."""

    def __init__(
        self,
        now: datetime,
        queue: QueueSend,
        release_due: ReleaseDue | None = None,
        notifier: alerts.Notifier | None = None,
        use_lease: bool = True,
    ) -> None:
        self.now = now
        self.now_iso = to_iso(now)
        self.queue = queue
        self.release_due = release_due
        self.notifier = notifier
        self.use_lease = use_lease
        self.report = TickReport(run_id=f"{self.now_iso}#{uuid.uuid4().hex[:8]}")
        self._sends: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._outbox_ids: list[str] = []
        self._treated: set[str] | None = None

    def run(self) -> TickReport:
        self._requeue_outbox()
        records = sorted(live_campaigns(), key=lambda r: (effective_priority(r.spec), r.entity_id))
        for record in records:
            self.report.campaigns[record.entity_id] = self._campaign(record)
        self._flush_queue()
        if self.release_due is not None:
            self.report.released = self.release_due(self.now, self.queue)
        return self.report

    # -- per campaign -------------------------------------------------------

    def _campaign(self, record: CampaignRecord) -> CampaignRun:
        run = CampaignRun(record.entity_id)
        reasons = eligibility.blockers(record.spec, record.state, self.now)
        if reasons:
            run.skipped = "; ".join(reasons)
            return run
        fields = CampaignFields.model_validate(record.spec)
        if fields.kind is CampaignKind.TRIGGER and fields.trigger and fields.trigger.event:
            run.skipped = "event trigger: enrolled as events arrive"
            return run
        lease = f"tick#{record.entity_id}"
        if self.use_lease and not store.take_lease(lease, self.report.run_id, LEASE_SECONDS):
            run.skipped = "another tick holds this campaign"
            return run
        try:
            if fields.kind is CampaignKind.TRIGGER:
                self._date_trigger(record, fields, run)
            else:
                self._audience(record, fields, run)
            run.processed = True
        finally:
            if self.use_lease:
                store.release_lease(lease, self.report.run_id)
        return run

    def _audience(self, record: CampaignRecord, fields: CampaignFields, run: CampaignRun) -> None:
        campaign_id = record.entity_id
        reads = ReadCount()
        matching = matching_ids(fields.audience_type, fields.targeting, reads)
        active = store.read_roster(f"campaign#{campaign_id}")
        exited_here = store.read_roster(f"campaign#{campaign_id}#exited")
        run.items_read = reads.items + _roster_items(len(active) + len(exited_here))
        candidates = matching - active
        enrolments: list[Enrolment] = []
        treated = self._treated_set() if candidates and not fields.include_previously_treated else set()
        for contact_id in sorted(candidates):
            if contact_id in exited_here:
                if not fields.include_previously_treated:
                    run.not_previously_treated += 1
                    continue
                enrolments.append(Enrolment(contact_id, f"r{self.now_iso}", previous="exited", reenrol=True))
            elif contact_id in treated:
                run.not_previously_treated += 1
            else:
                enrolments.append(Enrolment(contact_id, "1"))
        changes = RosterChanges()
        exited_changes = RosterChanges()
        treated_changes = RosterChanges()
        report = store.enrol(
            campaign_id, enrolments, self._sends_of(record), f"{self.report.run_id}#{record.entity_id}", self.now_iso
        )
        self._take(report)
        changes.add(e.contact_id for e in report.enrolled)
        exited_changes.remove(e.contact_id for e in report.enrolled)
        if report.already:
            self._repair(campaign_id, report.already, changes, exited_changes)
        leaving = sorted(active - matching)
        exited, exit_requests = store.exit_contacts(campaign_id, leaving, "no longer matches targeting", self.now_iso)
        if len(exited) < len(leaving):
            self._repair(campaign_id, sorted(set(leaving) - set(exited)), changes, exited_changes)
        changes.remove(exited)
        exited_changes.add(exited)
        treated_changes.add(exited)
        writes = report.requests + exit_requests
        writes += store.flush_roster(f"campaign#{campaign_id}", changes)
        writes += store.flush_roster(f"campaign#{campaign_id}#exited", exited_changes)
        writes += store.flush_roster(store.TREATED, treated_changes)
        if self._treated is not None:
            self._treated |= set(exited)
        now_active = (active | {e.contact_id for e in report.enrolled}) - set(exited)
        run.matching = len(matching)
        run.active = len(now_active & matching)
        run.enrolled = len(report.enrolled)
        run.already = len(report.already)
        run.exited = len(exited)
        run.in_campaign_pct = round(100 * run.active / run.matching, 2) if run.matching else None
        run.write_requests = writes + self._record_stats(record, fields, run)

    def _date_trigger(self, record: CampaignRecord, fields: CampaignFields, run: CampaignRun) -> None:
        assert fields.trigger is not None and fields.trigger.date is not None
        index = getattr(ContactRecord, DAY_TRIGGER_INDEX[fields.trigger.date])
        send_at = parse_local_time(fields.trigger.send_at)
        due: dict[str, str] = {}
        for month_day in _month_days_around(self.now):
            for item in index.query(month_day):
                occurrence = _date_occurrence(item, month_day, self.now, send_at, fields.trigger.date)
                if occurrence and item.kind == fields.audience_type.contact_kind:
                    due[item.contact_id] = occurrence
                run.items_read += 1
        if not due:
            self._record_stats(record, fields, run)
            return
        records = list(ContactRecord.batch_get(sorted(due)))
        run.items_read += len(records)
        targeted = targeted_among(fields.audience_type, fields.targeting, records)
        existing = store.batch_get(record.entity_id, targeted)
        run.items_read += len(existing)
        enrolments = []
        for contact_id in sorted(targeted):
            previous = existing.get(contact_id)
            if previous is not None and previous.occurrence == due[contact_id]:
                continue  # already fired this year
            enrolments.append(
                Enrolment(contact_id, due[contact_id], previous=previous.occurrence if previous else None)
            )
        report = store.enrol(
            record.entity_id,
            enrolments,
            self._sends_of(record),
            f"{self.report.run_id}#{record.entity_id}",
            self.now_iso,
        )
        self._take(report)
        run.matching = len(targeted)
        run.enrolled = len(report.enrolled)
        run.already = len(report.already)
        run.write_requests = report.requests + self._record_stats(record, fields, run)

    # -- helpers --------------------------------------------------------------

    def _sends_of(self, record: CampaignRecord) -> Callable[[list[Enrolment]], list[dict[str, Any]]]:
        priority = effective_priority(record.spec)

        def sends(enrolled: list[Enrolment]) -> list[dict[str, Any]]:
            return [
                {
                    "contact_id": e.contact_id,
                    "campaign_id": record.entity_id,
                    "occurrence": e.occurrence,
                    "priority": priority,
                    "queued_at": self.now_iso,
                }
                for e in enrolled
            ]

        return sends

    def _take(self, report: store.EnrolReport) -> None:
        """Hold the committed deliveries until the run queues them, grouped by contact."""
        self._outbox_ids += report.outbox_ids
        for send in report.sends:
            self._sends[send["contact_id"]].append(send)

    def _requeue_outbox(self) -> None:
        # Only outbox items older than a tick can live are orphans; younger ones belong to a
        # tick still running, which queues them itself.
        orphaned_before = to_iso(self.now - timedelta(seconds=LEASE_SECONDS))
        for record in store.pending_outbox():
            if record.created_at > orphaned_before:
                continue
            for send in store.outbox_sends(record):
                self._sends[send["contact_id"]].append(send)
            self._outbox_ids.append(record.entity_id)
            self.report.requeued_outbox += 1

    def _flush_queue(self) -> None:
        messages = []
        for contact_id in sorted(self._sends):
            sends = sorted(self._sends[contact_id], key=lambda s: (s["priority"], s["campaign_id"]))
            messages.append({"contact_id": contact_id, "sends": [_without_contact(s) for s in sends]})
            self.report.queued_sends += len(sends)
        if messages:
            self.queue(messages)
        self.report.queued_contacts = len(messages)
        if self._outbox_ids:
            store.delete_outbox(self._outbox_ids)
        self._sends.clear()
        self._outbox_ids.clear()

    def _treated_set(self) -> set[str]:
        if self._treated is None:
            self._treated = store.read_roster(store.TREATED)
        return self._treated

    def _repair(self, campaign_id: str, contact_ids: list[str], active: RosterChanges, exited: RosterChanges) -> None:
        """A stale roster (a crash between enrolment and roster write): learn the truth from the items."""
        records = store.batch_get(campaign_id, contact_ids)
        active.add(c for c, r in records.items() if r.state == store.ACTIVE)
        active.remove(c for c, r in records.items() if r.state == store.EXITED)
        exited.add(c for c, r in records.items() if r.state == store.EXITED)
        logger.info("roster repaired", extra={"campaign_id": campaign_id, "contacts": len(records)})

    def _record_stats(self, record: CampaignRecord, fields: CampaignFields, run: CampaignRun) -> int:
        subject = f"campaign#{record.entity_id}"
        deltas = {"enrolled": run.enrolled, "exited": run.exited}
        sets: dict[str, Any] = {"last_tick": self.now_iso}
        if fields.kind is not CampaignKind.TRIGGER:
            sets |= {"matching": run.matching, "active": run.active}
        store.add_stats(subject, "total", deltas, sets)
        writes = 1
        if run.enrolled or run.exited:
            store.add_stats(subject, f"day#{self.now_iso[:10]}", deltas)
            writes += 1
        if run.in_campaign_pct is not None:
            writes += alerts.check_in_campaign(record, fields, run.in_campaign_pct, run, self.now_iso, self.notifier)
        return writes


def _roster_items(ids: int) -> int:
    """Roster bucket items read (at most one per bucket)."""
    return min(ids, store.ROSTER_BUCKETS * 2)


def _without_contact(send: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in send.items() if k != "contact_id"}


def _month_days_around(now: datetime) -> list[str]:
    """MM-DD keys that can be 'today' somewhere (UTC-12 to UTC+14), plus 02-29 in common years."""
    days = {(now + timedelta(days=offset)).strftime("%m-%d") for offset in (-1, 0, 1)}
    if "02-28" in days:
        days.add("02-29")
    return sorted(days)


def _date_occurrence(item: Any, month_day: str, now: datetime, send_at: Any, kind: str) -> str | None:
    """The occurrence key if it is the contact's day, past its send time, in its own zone."""
    zone = ZoneInfo(getattr(item, "time_zone", None) or "UTC")
    local = now.astimezone(zone)
    if local.time() < send_at:
        return None
    if month_day == "02-29" and not _is_leap(local.year):
        month_day = "02-28"  # seed-consistent with rules: 29 Feb falls on 28 Feb in common years
    if local.strftime("%m-%d") != month_day:
        return None
    return f"{kind}#{local.year}"


def _is_leap(year: int) -> bool:
    try:
        date(year, 2, 29)
    except ValueError:
        return False
    return True
