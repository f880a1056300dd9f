"""The contact-policy and priority engine: pure functions, no I/O.

Seed 003 orders sends by kind: ad-hoc first, rare (date) triggers such as a
birthday next, then lifecycle journeys, frequent (event) triggers last, with
per-campaign overrides. A contact policy, scoped to every send, a category or
a campaign group, caps messages per contact per channel per rolling window and
may set quiet hours in the contact's time zone.

:func:`decide` settles one contact's waiting sends at once: in priority order,
each one either goes now, is **deferred** to the next allowed slot, or
**expires** when that slot is past its expiry; never silently dropped, and
every held-back send says why and under which policy.

Windows are half-open: a message sent at ``a`` counts against a window of
``W`` hours until ``a + W`` and no longer at that instant. Quiet hours cover
local wall times ``start <= t < end`` (wrapping midnight when start > end).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Outcome = Literal["send", "defer", "expire"]

CHANNELS = ("email", "sms", "push", "any")
ANY = "any"
MIN_PRIORITY = 1
MAX_PRIORITY = 100

PRIORITY: Mapping[str, int] = {
    "ad_hoc": 10,
    "rare_trigger": 20,  # date triggers: birthday, anniversary
    "lifecycle": 30,
    "frequent_trigger": 40,  # event triggers: login, purchase, open, ...
}

SCOPE_ALL = "all"
SCOPE_PATTERN = re.compile(r"^(?:all|(category|campaign_group):([A-Za-z0-9][A-Za-z0-9 _.-]{0,63}))$")


def default_priority(kind: str, trigger_type: str | None = None) -> int:
    """The priority of a campaign kind (lower goes first).

    ``kind`` is ``ad_hoc``, ``trigger`` or ``lifecycle``; for triggers,
    ``trigger_type`` ``date`` (birthday, anniversary: rare) ranks above
    ``event`` (login, purchase: frequent). A trigger of unknown type ranks as
    frequent, the lowest.
    """
    if kind == "ad_hoc":
        return PRIORITY["ad_hoc"]
    if kind == "lifecycle":
        return PRIORITY["lifecycle"]
    if kind == "trigger":
        return PRIORITY["rare_trigger"] if trigger_type == "date" else PRIORITY["frequent_trigger"]
    raise ValueError(f"unknown campaign kind {kind!r}; expected ad_hoc, trigger or lifecycle")


def parse_scope(scope: str) -> tuple[str, str | None]:
    """``("all", None)``, ``("category", name)`` or ``("campaign_group", name)``; ValueError otherwise."""
    match = SCOPE_PATTERN.match(scope)
    if not match:
        raise ValueError(
            "must be all, category:<name> or campaign_group:<name> "
            "(a name of letters, digits, space, _ . - up to 64 characters)"
        )
    if match.group(1) is None:
        return SCOPE_ALL, None
    return match.group(1), match.group(2)


@dataclass(frozen=True)
class Cap:
    """At most ``max_messages`` on ``channel`` (or on ``any`` channel) per rolling ``window_hours``."""

    channel: str
    max_messages: int
    window_hours: int

    def __post_init__(self) -> None:
        if self.channel not in CHANNELS:
            raise ValueError(f"cap channel must be one of {', '.join(CHANNELS)}")
        if self.max_messages < 1 or self.window_hours < 1:
            raise ValueError("a cap needs max_messages >= 1 and window_hours >= 1")

    @property
    def window(self) -> timedelta:
        return timedelta(hours=self.window_hours)

    def covers(self, channel: str) -> bool:
        """True if this cap counts (and constrains) messages on ``channel``."""
        return self.channel == ANY or self.channel == channel

    def describe(self) -> str:
        return f"cap {self.channel} {self.max_messages} per {self.window_hours}h"


@dataclass(frozen=True)
class QuietHours:
    """No sends while the contact's local wall time is in ``[start, end)``; wraps midnight if start > end."""

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise ValueError("quiet hours need start != end")

    def contains(self, wall: time) -> bool:
        """True if a local wall time falls inside the quiet window."""
        wall = wall.replace(tzinfo=None, fold=0)
        if self.start < self.end:
            return self.start <= wall < self.end
        return wall >= self.start or wall < self.end

    def describe(self, zone: ZoneInfo) -> str:
        return f"quiet hours {self.start:%H:%M}-{self.end:%H:%M} {zone.key}"


@dataclass(frozen=True)
class ContactPolicy:
    """Caps and quiet hours for the sends in ``scope``; held-back sends expire after ``expire_after_hours``."""

    policy_id: str
    name: str
    scope: str
    caps: tuple[Cap, ...] = ()
    quiet_hours: QuietHours | None = None
    expire_after_hours: int = 72

    def __post_init__(self) -> None:
        parse_scope(self.scope)
        if self.expire_after_hours < 1:
            raise ValueError("expire_after_hours must be >= 1")

    def covers(self, category: str | None, campaign_group: str | None) -> bool:
        """True if a send (or a sent message) of this category and campaign group is in scope."""
        kind, name = parse_scope(self.scope)
        if kind == SCOPE_ALL:
            return True
        if kind == "category":
            return category == name
        return campaign_group == name


@dataclass(frozen=True)
class Sent:
    """A message already sent to the contact."""

    channel: str
    at: datetime
    category: str | None = None
    campaign_group: str | None = None


@dataclass(frozen=True)
class Candidate:
    """A send waiting for a decision; lower ``priority`` goes first."""

    key: str
    channel: str
    priority: int
    queued_at: datetime
    category: str | None = None
    campaign_group: str | None = None


@dataclass(frozen=True)
class Decision:
    """What happens to a candidate: sent ``at`` now, deferred to ``at``, or expired (``at`` None)."""

    key: str
    outcome: Outcome
    at: datetime | None
    reason: str | None
    policy_id: str | None


def applicable(
    policies: Iterable[ContactPolicy], category: str | None, campaign_group: str | None
) -> list[ContactPolicy]:
    """The policies whose scope covers a send of this category and campaign group."""
    return [p for p in policies if p.covers(category, campaign_group)]


def decide(
    candidates: Sequence[Candidate],
    history: Sequence[Sent],
    policies: Sequence[ContactPolicy],
    zone: ZoneInfo,
    now: datetime,
) -> list[Decision]:
    """Settle one contact's waiting sends, highest priority first.

    Candidates are taken by (priority, queued_at, key); each one sent counts
    in the history the next ones see. A blocked send is deferred to the
    earliest instant >= ``now`` where every applicable cap has room and no
    applicable quiet hours hold, or expires if that instant is later than
    ``queued_at`` + the smallest applicable ``expire_after_hours``. Decisions
    are returned in the order they were taken.
    """
    now = _aware(now, "now").astimezone(UTC)
    seen = list(history)
    decisions: list[Decision] = []
    for candidate in sorted(candidates, key=lambda c: (c.priority, _aware(c.queued_at, "queued_at"), c.key)):
        rules = applicable(policies, candidate.category, candidate.campaign_group)
        if not rules:
            decisions.append(Decision(candidate.key, "send", now, None, None))
            seen.append(Sent(candidate.channel, now, candidate.category, candidate.campaign_group))
            continue
        deadline = _aware(candidate.queued_at, "queued_at") + timedelta(hours=min(p.expire_after_hours for p in rules))
        slot, blockers = next_slot(candidate.channel, rules, seen, zone, now, deadline)
        if not blockers:
            decisions.append(Decision(candidate.key, "send", now, None, None))
            seen.append(Sent(candidate.channel, now, candidate.category, candidate.campaign_group))
            continue
        reason = "; ".join(text for text, _ in blockers)
        policy_id = blockers[0][1]
        if slot > deadline:
            decisions.append(Decision(candidate.key, "expire", None, reason, policy_id))
        else:
            decisions.append(Decision(candidate.key, "defer", slot, reason, policy_id))
    return decisions


def next_slot(
    channel: str,
    rules: Sequence[ContactPolicy],
    history: Sequence[Sent],
    zone: ZoneInfo,
    now: datetime,
    deadline: datetime | None = None,
) -> tuple[datetime, list[tuple[str, str]]]:
    """The earliest instant >= ``now`` a send on ``channel`` is allowed by ``rules``, and what held it back.

    Returns ``(slot, [(reason, policy_id), ...])``; the list is empty when the
    send may go at ``now``. The search stops once past ``deadline`` (or, without
    one, 800 days ahead: quiet hours may cover the whole day); the slot
    returned is then some instant after it.
    """
    now = _aware(now, "now").astimezone(UTC)
    limits = [
        (policy, cap, _counted(policy, cap, history)) for policy in rules for cap in policy.caps if cap.covers(channel)
    ]
    quiet = [(policy, policy.quiet_hours) for policy in rules if policy.quiet_hours is not None]
    blockers: list[tuple[str, str]] = []

    def held(text: str, policy_id: str) -> None:
        blockers.append((f"{text} (policy {policy_id})", policy_id))

    # Everything that holds the send back now is named, then whatever else the search runs into.
    for policy, cap, times in limits:
        if cap_room(cap, times, now) > now:
            held(cap.describe(), policy.policy_id)
    for policy, hours in quiet:
        if hours.contains(now.astimezone(zone).time()):
            held(hours.describe(zone), policy.policy_id)
    slot = now
    # Each pass moves the slot forward past every cap and quiet window; a fixed point is the answer.
    # Quiet windows that together cover the whole day never reach one, hence the deadline and the bound.
    horizon = now + timedelta(days=800)
    while slot <= (deadline or horizon) and slot <= horizon:
        moved = False
        for policy, cap, times in limits:
            room = cap_room(cap, times, slot)
            if room > slot:
                held(cap.describe(), policy.policy_id)
                slot, moved = room, True
        for policy, hours in quiet:
            if hours.contains(slot.astimezone(zone).time()):
                held(hours.describe(zone), policy.policy_id)
                slot, moved = quiet_end(hours, zone, slot), True
        if not moved:
            break
    return slot, _unique(blockers)


def cap_room(cap: Cap, counted: Sequence[datetime], at: datetime) -> datetime:
    """The earliest instant >= ``at`` when ``cap`` has room for one more message.

    A message at ``a`` counts at instant ``t`` while ``a > t - window``
    (messages stamped after ``t`` count too, conservatively), so the count
    only falls with time: with the counted times newest first, there is room
    from ``counted[max - 1] + window`` on — the moment enough of the oldest
    messages have left the rolling window.
    """
    if len(counted) < cap.max_messages:
        return at
    newest_first = sorted(counted, reverse=True)
    return max(at, newest_first[cap.max_messages - 1] + cap.window)


def quiet_end(hours: QuietHours, zone: ZoneInfo, at: datetime) -> datetime:
    """The earliest instant >= ``at`` outside the quiet window in ``zone``.

    Local wall times are resolved with zoneinfo, both folds of an ambiguous
    time are tried, and the zone's UTC-offset changes are candidates too:
    when ``end`` falls in a spring-forward gap, the window ends at the jump.
    """
    at = at.astimezone(UTC)
    if not hours.contains(at.astimezone(zone).time()):
        return at
    day = at.astimezone(zone).date()
    candidates = [
        datetime.combine(day + timedelta(days=offset), hours.end, tzinfo=zone).replace(fold=fold).astimezone(UTC)
        for offset in (-1, 0, 1, 2)
        for fold in (0, 1)
    ]
    candidates += _offset_changes(zone, at, at + timedelta(hours=50))
    open_ = [c for c in candidates if c >= at and not hours.contains(c.astimezone(zone).time())]
    return min(open_)


def is_quiet(policies: Iterable[ContactPolicy], zone: ZoneInfo, at: datetime) -> bool:
    """True if any of the policies' quiet hours holds at ``at`` in ``zone``."""
    wall = at.astimezone(zone).time()
    return any(p.quiet_hours is not None and p.quiet_hours.contains(wall) for p in policies)


def counted_messages(policy: ContactPolicy, cap: Cap, history: Iterable[Sent]) -> list[datetime]:
    """The times of the history messages a policy's cap counts: in the policy's scope, on the cap's channel."""
    return _counted(policy, cap, history)


def _counted(policy: ContactPolicy, cap: Cap, history: Iterable[Sent]) -> list[datetime]:
    return [
        _aware(m.at, "Sent.at").astimezone(UTC)
        for m in history
        if cap.covers(m.channel) and policy.covers(m.category, m.campaign_group)
    ]


def _offset_changes(zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """The instants in ``[start, end]`` where the zone's UTC offset changes (to the second)."""

    def offset(seconds: int) -> timedelta | None:
        return datetime.fromtimestamp(seconds, UTC).astimezone(zone).utcoffset()

    changes: list[datetime] = []
    left = math.floor(start.timestamp())
    stop = math.ceil(end.timestamp())
    while left < stop:
        right = min(left + 3600, stop)
        if offset(left) != offset(right):
            low, high, after = left, right, offset(right)
            while high - low > 1:  # offset(low) differs from the later offset, offset(high) is it
                middle = (low + high) // 2
                if offset(middle) == after:
                    high = middle
                else:
                    low = middle
            changes.append(datetime.fromtimestamp(high, UTC))
        left = right
    return changes


def _unique(blockers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    unique: list[tuple[str, str]] = []
    for item in blockers:
        if item not in seen:
            seen.add(item)
            unique.append(item)
    return unique


def _aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return moment
