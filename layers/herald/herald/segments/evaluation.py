"""Evaluating every target definition on one raw contact item, and the diff.

The nightly pass, a first fill and online recalculation all come here: the
item is read once, each target's compiled rule runs on it in dependency order
(a rule may ask about membership of a segment recalculated in the same pass),
and the result is the difference from what the item already records.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from herald.errors import ValidationFailed
from herald.rules.calendar import Calendar
from herald.rules.compiler import Batch, Predicate, compile_rule, compile_rules
from herald.rules.model import Rule, parse_rule
from herald.segments.model import GroupType
from herald.store.segments import MembershipChange
from herald.store.tables import SegmentRecord

SOFT_BOUNCE_LIMIT = 5
# The order reasons are checked in; each excluded contact counts under its first reason.
EXCLUSION_REASONS = ("hard_bounce", "soft_bounces", "no_consent")


@dataclass
class Target:
    """A definition being (re)calculated: its compiled rule and, for audiences, the channel."""

    type: GroupType
    id: str
    predicate: Predicate
    channel: str | None = None
    depends_on: frozenset[tuple[GroupType, str]] = frozenset()
    # Set on every target of a set none of which depends on another: all verdicts at once.
    batch: Batch | None = None
    batch_index: int = 0


def targets_of(records: list[SegmentRecord], now: datetime) -> list[Target]:
    """Compile each record's rule (one calendar for all) and order them by dependency."""
    calendar = Calendar(now)
    targets = []
    rules_by_target: dict[tuple[GroupType, str], Rule] = {}
    for record in records:
        if not record.rule:
            continue
        rule = parse_rule(record.rule)
        rules_by_target[(GroupType(record.entity_type), record.entity_id)] = rule
        depends = {(GroupType.SEGMENT, s) for s in rule.segments} | {(GroupType.BADGE, b) for b in rule.badges}
        group_type = GroupType(record.entity_type)
        channel = record.channel if group_type is GroupType.AUDIENCE else None
        targets.append(
            Target(group_type, record.entity_id, compile_rule(rule, now, calendar), channel, frozenset(depends))
        )
    ordered = dependency_order(targets)
    keys = {(t.type, t.id) for t in ordered}
    if len(ordered) > 1 and not any(t.depends_on & keys for t in ordered):
        # No target asks about another: evaluate them all in one function per contact.
        batch = compile_rules([rules_by_target[(t.type, t.id)] for t in ordered], now, calendar)
        for index, target in enumerate(ordered):
            target.batch, target.batch_index = batch, index
    return ordered


def dependency_order(targets: list[Target]) -> list[Target]:
    """Targets with every target they depend on first (definitions are acyclic)."""
    by_key = {(t.type, t.id): t for t in targets}
    ordered: list[Target] = []
    seen: set[tuple[GroupType, str]] = set()

    def visit(target: Target, trail: frozenset[tuple[GroupType, str]]) -> None:
        key = (target.type, target.id)
        if key in seen:
            return
        if key in trail:
            raise ValidationFailed.one("rule", f"{target.type.value} {target.id} depends on itself")
        for dependency in sorted(target.depends_on):
            if dependency in by_key:
                visit(by_key[dependency], trail | {key})
        seen.add(key)
        ordered.append(target)

    for target in sorted(targets, key=lambda t: (t.type.value, t.id)):
        visit(target, frozenset())
    return ordered


def exclusion_reason(item: dict[str, Any], channel: str) -> str | None:
    """Why the final audience stage drops this contact, or None (seed 002's bounce rules)."""
    bounce = (item.get("bounce") or {}).get("M") or {}
    if (bounce.get("hard") or {}).get("BOOL") is True:
        return "hard_bounce"
    soft = bounce.get("soft_count") or {}
    if "N" in soft and float(soft["N"]) >= SOFT_BOUNCE_LIMIT:
        return "soft_bounces"
    consent = ((item.get("consent") or {}).get("M") or {}).get(channel) or {}
    if (((consent.get("M") or {}).get("granted")) or {}).get("BOOL") is not True:
        return "no_consent"
    return None


def evaluate(
    item: dict[str, Any], targets: list[Target], excluded: Counter[str] | None = None
) -> MembershipChange | None:
    """The membership change the targets make for this contact (None if nothing changes).

    Audiences are only ever filled (entries); segments and badges are diffed
    against the sets on the item. ``excluded`` counts audience exclusions.
    """
    sets = {
        GroupType.SEGMENT: set((item.get("segment_ids") or {}).get("SS", ())),
        GroupType.BADGE: set((item.get("badge_ids") or {}).get("SS", ())),
    }
    original = {key: set(value) for key, value in sets.items()}
    view = item
    entered: list[tuple[GroupType, str]] = []
    exited: list[tuple[GroupType, str]] = []
    batch = targets[0].batch if len(targets) > 1 else None
    verdicts = batch(item) if batch is not None else None
    for target in targets:
        if verdicts is not None and target.batch is batch:
            verdict = verdicts[target.batch_index]
        else:
            verdict = target.predicate(view)
        if target.type is GroupType.AUDIENCE:
            if verdict:
                reason = exclusion_reason(item, target.channel or "email")
                if reason is None:
                    entered.append((target.type, target.id))
                elif excluded is not None:
                    excluded[reason] += 1
            continue
        current = sets[target.type]
        if verdict == (target.id in current):
            continue
        if verdict:
            current.add(target.id)
            entered.append((target.type, target.id))
        else:
            current.discard(target.id)
            exited.append((target.type, target.id))
        # Later targets may ask about this membership: they see the new value.
        attribute = "segment_ids" if target.type is GroupType.SEGMENT else "badge_ids"
        view = dict(view)
        view[attribute] = {"SS": sorted(current)} if current else {"NULL": True}
    if not entered and not exited:
        return None
    version = item.get("version")
    return MembershipChange(
        contact_id=item["contact_id"]["S"],
        version=int(version["N"]) if version and "N" in version else None,
        kind=(item.get("kind") or {}).get("S", ""),
        status=(item.get("status") or {}).get("S", ""),
        segment_ids=sets[GroupType.SEGMENT] if sets[GroupType.SEGMENT] != original[GroupType.SEGMENT] else None,
        badge_ids=sets[GroupType.BADGE] if sets[GroupType.BADGE] != original[GroupType.BADGE] else None,
        entered=entered,
        exited=exited,
    )
