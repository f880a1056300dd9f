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
from herald.delivery.queue import delivery_messages
from herald.observability import logger
from herald.store import enrolments as store
from herald.store import stats
from herald.store.enrolments import Enrolment, RosterChanges
from herald.store.tables import CampaignRecord, ContactRecord

LIVE = "campaign"
# The tick function's timeout: no run lives longer, so its lease and its outbox items are safe to take over after it.
LEASE_SECONDS = 900
DAY_TRIGGER_INDEX = {"birthday": "birthday_index", "signup_anniversary": "signup_index"}

QueueSend = Callable[[list[dict[str, Any]]], None]
ReleaseDue = Callable[[datetime, QueueSend], int]


class TickFailed(Exception):
    """Some campaigns failed in a run (the rest were processed and their deliveries queued)."""

    def __init__(self, campaign_ids: list[str], report: TickReport) -> None:
        super().__init__(f"campaigns failed in the tick: {', '.join(campaign_ids)}")
        self.campaign_ids = campaign_ids
        self.report = report


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


def sends_of(campaign_id: str, priority: int, queued_at: str) -> Callable[[list[Enrolment]], list[dict[str, Any]]]:
    """The outbox payload of enrolments in a campaign: one send per enrolled occurrence."""

    def sends(enrolled: list[Enrolment]) -> list[dict[str, Any]]:
        return [
            {
                "contact_id": e.contact_id,
                "campaign_id": campaign_id,
                "occurrence": e.occurrence,
                "priority": priority,
                "queued_at": queued_at,
            }
            for e in enrolled
        ]

    return sends


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
        has_time: Callable[[], bool] = lambda: True,
    ) -> None:
        self.now = now
        self.has_time = has_time
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
        """Run every eligible campaign; one that fails does not stop the others.

        Raises ``TickFailed`` at the end (after queueing what the others committed)
        if any campaign failed, so the invocation counts as an error and alarms.
        """
        self._requeue_outbox()
        self._flush_queue()  # a crashed run's deliveries go now, not after this run's work
        records = sorted(live_campaigns(), key=lambda r: (effective_priority(r.spec), r.entity_id))
        failed = []
        for record in records:
            if not self.has_time():
                self.report.campaigns[record.entity_id] = CampaignRun(record.entity_id, skipped="out of time")
                continue
            try:
                self.report.campaigns[record.entity_id] = self._campaign(record)
            except Exception as exc:
                logger.exception("campaign failed in the tick", extra={"campaign_id": record.entity_id})
                self.report.campaigns[record.entity_id] = CampaignRun(record.entity_id, skipped=f"error: {exc}")
                failed.append(record.entity_id)
        self._flush_queue()
        if self.release_due is not None:
            self.report.released = self.release_due(self.now, self.queue)
        if failed:
            raise TickFailed(failed, self.report)
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
        rosters = _Rosters(campaign_id)
        reads = ReadCount()
        matching = matching_ids(fields.audience_type, fields.targeting, reads)
        active = store.read_roster(rosters.active, reads)
        exited_here = store.read_roster(rosters.exited, reads)
        writes = 0
        if active & exited_here:
            # A run crashed between an exit and its roster writes: the items say which is true.
            found = self._repair(campaign_id, sorted(active & exited_here), rosters)
            active, exited_here = (active - found.exited) | found.active, (exited_here - found.active) | found.exited
            writes += rosters.flush()
        enrolments = self._newcomers(matching - active, exited_here, fields, run, reads)
        report = store.enrol(
            campaign_id, enrolments, self._sends_of(record), f"{self.report.run_id}#{record.entity_id}", self.now_iso
        )
        self._take(report)
        rosters.active_changes.add(e.contact_id for e in report.enrolled)
        rosters.exited_changes.remove(e.contact_id for e in report.enrolled if e.reenrol)
        found = self._repair(campaign_id, report.already, rosters) if report.already else _Found()
        now_active = (active | {e.contact_id for e in report.enrolled} | found.active) - found.exited
        writes += report.requests + rosters.flush()
        exited, exit_requests = self._exit(campaign_id, sorted(now_active - matching), rosters)
        now_active -= set(exited)
        run.items_read = reads.items
        run.matching = len(matching)
        run.active = len(now_active & matching)
        run.enrolled = len(report.enrolled)
        run.already = len(report.already)
        run.exited = len(exited)
        run.in_campaign_pct = round(100 * run.active / run.matching, 2) if run.matching else None
        run.write_requests = writes + exit_requests + self._record_stats(record, fields, run)

    def _newcomers(
        self, candidates: set[str], exited_here: set[str], fields: CampaignFields, run: CampaignRun, reads: ReadCount
    ) -> list[Enrolment]:
        """Who enters now: never-treated contacts, and previously treated ones only for re-engagement."""
        enrolments: list[Enrolment] = []
        treated = self._treated_set(reads) if candidates and not fields.include_previously_treated else set()
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
        return enrolments

    def _exit(self, campaign_id: str, leaving: list[str], rosters: _Rosters) -> tuple[list[str], int]:
        """Exit contacts that no longer match.

        The exited and treated rosters learn of them *before* the exits, the active
        roster forgets them after: a crash in between leaves a contact in both the
        active and the exited roster, which the next run detects and repairs, and
        never a previously treated contact that other campaigns would take for new.
        """
        if not leaving:
            return [], 0
        rosters.exited_changes.add(leaving)
        rosters.treated_changes.add(leaving)
        writes = rosters.flush()
        exited, requests = store.exit_contacts(campaign_id, leaving, "no longer matches targeting", self.now_iso)
        if len(exited) < len(leaving):
            found = self._repair(campaign_id, sorted(set(leaving) - set(exited)), rosters)
            exited += sorted(found.exited)
        rosters.active_changes.remove(exited)
        if self._treated is not None:
            self._treated |= set(exited)
        return exited, requests + writes + rosters.flush()

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
        return sends_of(record.entity_id, effective_priority(record.spec), self.now_iso)

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
            contact_messages = delivery_messages(contact_id, self._sends[contact_id])
            messages += contact_messages
            self.report.queued_sends += sum(len(m["sends"]) for m in contact_messages)
        if messages:
            self.queue(messages)
        self.report.queued_contacts += len({m["contact_id"] for m in messages})
        if self._outbox_ids:
            store.delete_outbox(self._outbox_ids)
        self._sends.clear()
        self._outbox_ids.clear()

    def _treated_set(self, reads: ReadCount) -> set[str]:
        if self._treated is None:
            self._treated = store.read_roster(store.TREATED, reads)
        return self._treated

    def _repair(self, campaign_id: str, contact_ids: list[str], rosters: _Rosters) -> _Found:
        """A stale roster (a crash between enrolment items and roster writes): learn the truth from the items."""
        records = store.batch_get(campaign_id, contact_ids)
        found = _Found(
            active={c for c, r in records.items() if r.state == store.ACTIVE},
            exited={c for c, r in records.items() if r.state == store.EXITED},
        )
        rosters.active_changes.add(found.active)
        rosters.active_changes.remove(found.exited)
        rosters.exited_changes.remove(found.active)
        rosters.exited_changes.add(found.exited)
        rosters.treated_changes.add(found.exited)
        logger.info("roster repaired", extra={"campaign_id": campaign_id, "contacts": len(records)})
        return found

    def _record_stats(self, record: CampaignRecord, fields: CampaignFields, run: CampaignRun) -> int:
        subject = f"campaign#{record.entity_id}"
        deltas = {"enrolled": run.enrolled, "exited": run.exited}
        sets: dict[str, Any] = {"last_tick": self.now_iso}
        if fields.kind is not CampaignKind.TRIGGER:
            sets |= {"matching": run.matching, "active": run.active}
        stats.add_stats(subject, "total", deltas, sets)
        writes = 1
        if run.enrolled or run.exited:
            stats.add_stats(subject, f"day#{self.now_iso[:10]}", deltas)
            writes += 1
        if run.in_campaign_pct is not None:
            writes += alerts.check_in_campaign(record, fields, run.in_campaign_pct, run, self.now_iso, self.notifier)
        return writes


@dataclass
class _Found:
    """What the enrolment items say about contacts a roster was wrong about."""

    active: set[str] = field(default_factory=set)
    exited: set[str] = field(default_factory=set)


class _Rosters:
    """A campaign's active and exited rosters and the global treated one, with pending changes."""

    def __init__(self, campaign_id: str) -> None:
        self.active = f"campaign#{campaign_id}"
        self.exited = f"campaign#{campaign_id}#exited"
        self.active_changes = RosterChanges()
        self.exited_changes = RosterChanges()
        self.treated_changes = RosterChanges()

    def flush(self) -> int:
        """Write pending changes: exited and treated first, then active (see ``Tick._exit``)."""
        writes = store.flush_roster(self.exited, self.exited_changes)
        writes += store.flush_roster(store.TREATED, self.treated_changes)
        return writes + store.flush_roster(self.active, self.active_changes)


def _month_days_around(now: datetime) -> list[str]:
    """MM-DD keys that can be today or yesterday somewhere (UTC-12 to UTC+14), plus 02-29 in common years."""
    days = {(now + timedelta(days=offset)).strftime("%m-%d") for offset in (-2, -1, 0, 1)}
    if "02-28" in days:
        days.add("02-29")
    return sorted(days)


def _date_occurrence(item: Any, month_day: str, now: datetime, send_at: Any, kind: str) -> str | None:
    """The occurrence key if the contact's day has come in its own zone, past its send time.

    The day after counts too, so a day whose ticks all ran before ``send_at`` (a send time
    just before midnight, or an outage) still fires; the occurrence keeps it to once a year.
    """
    zone = ZoneInfo(getattr(item, "time_zone", None) or "UTC")
    local = now.astimezone(zone)
    for day, need_time in ((local.date(), True), (local.date() - timedelta(days=1), False)):
        wanted = "02-28" if month_day == "02-29" and not _is_leap(day.year) else month_day
        if day.strftime("%m-%d") == wanted and (not need_time or local.time() >= send_at):
            return f"{kind}#{day.year}"
    return None


def _is_leap(year: int) -> bool:
    try:
        date(year, 2, 29)
    except ValueError:
        return False
    return True
