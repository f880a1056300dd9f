"""Sending guardrails (issue 5): pause a campaign whose emails bounce hard or draw complaints too often.

After each SES event batch, every campaign that got a hard bounce or a
complaint in it is checked (:func:`check`). Over its window — the last
``guardrails.window_hours`` hours, the current hour included, read from the
``hour#`` statistics rows (``sent`` from the sender, ``bounced_hard`` and
``complaints`` from event ingestion) in one Query — once at least
``min_sent`` messages were sent, a hard-bounce rate or complaint rate
*strictly above* its threshold (default 5 % and 0.1 %) trips it:

1. one transaction pauses the campaign (``Launched`` → ``Stopped`` under a
   condition on its state, so it happens once and a campaign stopped meanwhile
   is left alone; ``paused_by = guardrail``, ``stopped_reason``; the version is
   bumped so an edit read before the pause cannot save it back to
   ``Launched``), records the alert (``GET /campaigns/{id}/alerts``, kind
   ``guardrail``, with the figures) and an outbox item;
2. the alert is published to the alerts topic with the ``campaign_id``
   message attribute (the In-Campaign alerts' filter), then the outbox item is
   deleted. A failed publish leaves it, and the next check or campaign tick
   publishes it (:func:`publish_pending`): at least once, never lost.

The sender holds the sends of a stopped campaign (deferred hour by hour,
expired after 72 hours), so sending stops with the pause.

**Resume = new evidence only.** An operator's resume stores the current hour's
counters as the campaign's ``guardrail_baseline``
(:func:`baseline`); the window then starts at the resume: hours before it do
not count, and the resume hour counts only what came after. So the guardrail
trips again only after ``min_sent`` new messages with too many new hard
bounces or complaints — not on the next late bounce of the sends that tripped it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from herald import clock
from herald.campaigns.alerts import Notifier
from herald.campaigns.model import Guardrails, State
from herald.observability import logger
from herald.store import campaigns as campaign_store
from herald.store import stats as stats_store
from herald.store.tables import AlertOutboxRecord, AlertRecord, CampaignRecord

KIND = "guardrail"
GUARDRAIL = "guardrail"
OPERATOR = "operator"
OUTBOX = "alert_outbox"
HARD_BOUNCE = "hard_bounce"
COMPLAINT = "complaint"
PENDING_PER_CHECK = 25
COUNTERS = ("sent", "bounced_hard", "complaints")


@dataclass(frozen=True)
class Window:
    """What the campaign sent and got back over its window."""

    first_hour: str
    last_hour: str
    sent: int
    hard_bounces: int
    complaints: int

    def pct(self, count: int) -> float:
        """``count`` as a percentage of ``sent`` (0 when nothing was sent)."""
        return 100 * count / self.sent if self.sent else 0.0


@dataclass
class Report:
    """What one check did, for the ingestion function's metrics."""

    checked: int = 0
    paused: list[str] = field(default_factory=list)
    published: int = 0
    publish_failures: int = 0
    errors: int = 0


def check(campaign_ids: set[str] | list[str], notifier: Notifier | None) -> Report:
    """Publish alerts left pending, then check each campaign (after an ingestion batch).

    One campaign's failure (a throttled read, say) is logged and counted in
    ``errors`` and does not keep the others from being checked.
    """
    report = Report()
    if not campaign_ids:
        return report
    publish_pending(notifier, report)
    for campaign_id in sorted(campaign_ids):
        report.checked += 1
        try:
            if check_campaign(campaign_id, notifier, report):
                report.paused.append(campaign_id)
        except Exception:  # checked again at the campaign's next hard bounce or complaint
            logger.exception("guardrail check of a campaign failed", extra={"campaign_id": campaign_id})
            report.errors += 1
    return report


def check_campaign(campaign_id: str, notifier: Notifier | None, report: Report | None = None) -> bool:
    """Pause the campaign if a rate over its window is above its threshold; True if this call paused it."""
    record = campaign_store.get(campaign_id)
    if record is None or record.state != State.LAUNCHED:
        return False  # gone, or already stopped (by a guardrail or an operator): left alone
    settings = settings_of(record)
    if not settings.enabled:
        return False
    now = clock.now()
    window = measure(campaign_id, settings.window_hours, now, record.guardrail_baseline)
    breached = breaches(window, settings)
    if not breached:
        return False
    return pause(record, settings, window, breached, now, notifier, report or Report())


def settings_of(record: CampaignRecord) -> Guardrails:
    """The campaign's guardrails (the defaults for a campaign saved before they existed)."""
    return Guardrails.model_validate(record.spec.get("guardrails") or {})


def measure(campaign_id: str, window_hours: int, now: datetime, since: dict[str, Any] | None = None) -> Window:
    """Sent, hard bounces and complaints over the last ``window_hours`` hours, after the ``since`` baseline."""
    last = stats_store.hour_of(now)
    first = stats_store.hour_of(now - timedelta(hours=window_hours - 1))
    if since and str(since.get("hour", "")) > first:
        first = str(since["hour"])
    totals = dict.fromkeys(COUNTERS, 0)
    if first <= last:
        rows = stats_store.read_hours(stats_store.subject(campaign_id), first, last)
        for metric, row in rows.items():
            before_resume = since if since and since.get("hour") == metric else {}
            for name in COUNTERS:
                totals[name] += max(0, int(row.get(name, 0)) - int(before_resume.get(name, 0)))
    return Window(first, last, totals["sent"], totals["bounced_hard"], totals["complaints"])


def breaches(window: Window, settings: Guardrails) -> list[str]:
    """The rates strictly above their thresholds, once at least ``min_sent`` were sent."""
    if window.sent < settings.min_sent:
        return []
    found = []
    if window.pct(window.hard_bounces) > settings.hard_bounce_pct:
        found.append(HARD_BOUNCE)
    if window.pct(window.complaints) > settings.complaint_pct:
        found.append(COMPLAINT)
    return found


def figures(window: Window, settings: Guardrails, breached: list[str]) -> dict[str, Any]:
    """The numbers an alert carries (and an operator needs to judge it)."""
    return {
        "window_hours": settings.window_hours,
        "window_from": clock.to_iso(stats_store.hour_start(window.first_hour)),
        "window_to_hour": window.last_hour.removeprefix(stats_store.HOUR_PREFIX),
        "sent": window.sent,
        "hard_bounces": window.hard_bounces,
        "complaints": window.complaints,
        "hard_bounce_pct": round(window.pct(window.hard_bounces), 4),
        "complaint_pct": round(window.pct(window.complaints), 4),
        "hard_bounce_threshold_pct": settings.hard_bounce_pct,
        "complaint_threshold_pct": settings.complaint_pct,
        "min_sent": settings.min_sent,
        "breached": breached,
    }


def describe(name: str, numbers: dict[str, Any]) -> tuple[str, str]:
    """The campaign's ``stopped_reason`` and the alert's message."""
    parts = []
    if HARD_BOUNCE in numbers["breached"]:
        parts.append(
            f"hard-bounce rate {numbers['hard_bounce_pct']:.2f}% above {numbers['hard_bounce_threshold_pct']:g}% "
            f"({numbers['hard_bounces']} of {numbers['sent']} sent)"
        )
    if COMPLAINT in numbers["breached"]:
        parts.append(
            f"complaint rate {numbers['complaint_pct']:.2f}% above {numbers['complaint_threshold_pct']:g}% "
            f"({numbers['complaints']} of {numbers['sent']} sent)"
        )
    reason = f"guardrail: {' and '.join(parts)} over the last {numbers['window_hours']} hours"
    message = (
        f"Campaign '{name}' was paused by its sending guardrail: {' and '.join(parts)} "
        f"over the last {numbers['window_hours']} hours (since {numbers['window_from']}). "
        "Its queued sends are held. Check where the addresses came from (a recent import or list), "
        "the bounce and complaint details in the message history, then fix the audience and resume it."
    )
    return reason, message


def pause(
    record: CampaignRecord,
    settings: Guardrails,
    window: Window,
    breached: list[str],
    now: datetime,
    notifier: Notifier | None,
    report: Report,
) -> bool:
    """Pause, record and queue the alert in one transaction, then publish it; False if it was stopped meanwhile."""
    campaign_id = record.entity_id
    numbers = figures(window, settings, breached)
    reason, message = describe(record.name, numbers)
    at = clock.to_iso(now)
    alert = AlertRecord(
        f"alert#campaign#{campaign_id}", f"{at}#{KIND}", kind=KIND, message=message, figures=numbers, at=at
    )
    body = {"campaign_id": campaign_id, "kind": KIND, "message": message, "figures": numbers, "at": at}
    outbox = AlertOutboxRecord(
        OUTBOX,
        f"{at}#{campaign_id}",
        campaign_id=campaign_id,
        subject=f"Herald: {record.name} paused by a guardrail",
        message=json.dumps(body),
    )
    if not campaign_store.pause(record.entity_id, GUARDRAIL, reason, at, with_items=[alert, outbox]):
        logger.info("guardrail: campaign already stopped", extra={"campaign_id": campaign_id})
        return False
    logger.warning("guardrail paused a campaign", extra={"campaign_id": campaign_id, "figures": numbers})
    _publish(outbox, notifier, report)
    return True


def publish_pending(notifier: Notifier | None, report: Report | None = None) -> int:
    """Publish the alerts a failed publish left in the outbox (oldest first); returns how many went out."""
    if notifier is None:
        return 0
    report = report or Report()
    before = report.published
    for outbox in AlertOutboxRecord.query(OUTBOX, consistent_read=True, limit=PENDING_PER_CHECK):
        if not _publish(outbox, notifier, report):
            break  # SNS is failing: leave the rest for the next attempt
    return report.published - before


def _publish(outbox: AlertOutboxRecord, notifier: Notifier | None, report: Report) -> bool:
    """Publish one outbox alert and delete it; a failure is logged and left for a later attempt."""
    if notifier is None:
        return False
    try:
        notifier.publish(outbox.campaign_id, outbox.subject, json.loads(outbox.message))
    except Exception:  # it stays in the outbox and is published again later
        logger.exception("guardrail alert not published; it stays pending", extra={"campaign_id": outbox.campaign_id})
        report.publish_failures += 1
        return False
    outbox.delete()
    report.published += 1
    return True


def baseline(campaign_id: str, now: datetime) -> dict[str, Any]:
    """The current hour's guardrail counters, stored at a resume so only later evidence counts."""
    hour = stats_store.hour_of(now)
    row = stats_store.read_hours(stats_store.subject(campaign_id), hour, hour).get(hour, {})
    return {"hour": hour, "at": clock.to_iso(now), **{name: int(row.get(name, 0)) for name in COUNTERS}}
