"""The reference interpreter: plain, obviously-correct evaluation, and explain.

It walks the parsed rule over a *decoded* contact (plain Python values), one
node at a time. It is the specification the compiled evaluator is tested
against (property tests prove they agree) and it powers ``explain``, which
reports every condition with its verdict and the value it saw.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from herald.rules.calendar import Calendar
from herald.rules.model import (
    DATE_PATTERN,
    Activity,
    All,
    AnyOf,
    Compare,
    Node,
    Not,
    Response,
    Rule,
)

RESPONSE_FIELDS = {"received": "campaigns_received", "opened": "campaigns_opened", "clicked": "campaigns_clicked"}


class Reference:
    """Evaluates rules over decoded contacts at a fixed instant."""

    def __init__(self, now: datetime) -> None:
        self.calendar = Calendar(now)

    def matches(self, rule: Rule | Node, contact: dict[str, Any]) -> bool:
        node = rule.root if isinstance(rule, Rule) else rule
        return self._eval(node, contact)

    def explain(self, rule: Rule, contact: dict[str, Any], path: str = "rule") -> dict[str, Any]:
        """Every node with its verdict; conditions also carry the value they saw."""
        return self._explain(rule.root, contact, path)

    # -- evaluation ---------------------------------------------------------

    def _eval(self, node: Node, contact: dict[str, Any]) -> bool:
        if isinstance(node, All):
            return all(self._eval(child, contact) for child in node.children)
        if isinstance(node, AnyOf):
            return any(self._eval(child, contact) for child in node.children)
        if isinstance(node, Not):
            return not self._eval(node.child, contact)
        if isinstance(node, Compare):
            return self._compare(node, _lookup(contact, node.spec.path), contact.get("time_zone"))
        if isinstance(node, Activity):
            return _count_ok(node, self._activity_count(node, contact))
        return node.campaign_id in _as_set(contact.get(RESPONSE_FIELDS[node.response]))

    def _activity_count(self, node: Activity, contact: dict[str, Any]) -> int:
        events = (contact.get("activity") or {}).get(node.event) or []
        cutoff = self.calendar.cutoff_epoch(node.within_days)
        count = 0
        for entry in events:
            if not isinstance(entry, list) or len(entry) != 2:
                continue
            at, properties = entry
            if not _is_number(at) or float(at) < cutoff or not isinstance(properties, dict):
                continue
            if all(self._compare(f, properties.get(f.spec.path[0]), None) for f in node.where):
                count += 1
        return count

    def _compare(self, node: Compare, value: Any, zone: Any) -> bool:
        op, expected = node.op, node.value
        if op.startswith("not_"):
            return not self._compare(_positive(node), value, zone)
        if op == "exists":
            return value is not None
        if op == "missing":
            return value is None
        if op == "equals":
            return _equal(value, expected)
        if op == "in":
            return any(_equal(value, item) for item in expected)
        if op == "contains":
            if isinstance(value, str):
                return isinstance(expected, str) and expected in value
            if isinstance(value, list):
                return any(_equal(item, expected) for item in value)
            if isinstance(value, set):
                return any(_equal(item, expected) for item in value)
            return False
        if op == "starts_with":
            return isinstance(value, str) and value.startswith(expected)
        if op in ("greater", "greater_or_equal", "less", "less_or_equal"):
            return _ordered(op, value, expected)
        if op == "between":
            low, high = expected
            return _ordered("greater_or_equal", value, low) and _ordered("less_or_equal", value, high)
        day = _day(value)
        if day is None:
            return False
        zone_name = zone if isinstance(zone, str) else None
        if op == "before":
            return day < expected
        if op == "after":
            return day > expected
        if op == "within_last_days":
            return self.calendar.days_ago(zone_name, expected) <= day <= self.calendar.today(zone_name)
        if op == "more_than_days_ago":
            return day < self.calendar.days_ago(zone_name, expected)
        if op == "anniversary_today":
            return day[5:] in self.calendar.anniversaries(zone_name)
        raise ValueError(f"unknown operator {op}")  # pragma: no cover - the parser refuses it

    # -- explain ------------------------------------------------------------

    def _explain(self, node: Node, contact: dict[str, Any], path: str) -> dict[str, Any]:
        if isinstance(node, All | AnyOf):
            key = "all" if isinstance(node, All) else "any"
            children = [self._explain(c, contact, f"{path}.{key}[{i}]") for i, c in enumerate(node.children)]
            verdicts = [c["verdict"] for c in children]
            verdict = all(verdicts) if key == "all" else any(verdicts)
            return {"path": path, "node": key, "verdict": verdict, "children": children}
        if isinstance(node, Not):
            child = self._explain(node.child, contact, f"{path}.not")
            return {"path": path, "node": "not", "verdict": not child["verdict"], "children": [child]}
        verdict = self._eval(node, contact)
        entry: dict[str, Any] = {"path": path, "verdict": verdict}
        if isinstance(node, Compare):
            seen = _lookup(contact, node.spec.path)
            entry.update(condition={"field": node.name, "op": node.op, "value": _plain(node.value)}, seen=_plain(seen))
        elif isinstance(node, Activity):
            entry.update(
                condition={
                    "activity": node.event,
                    "at_least": node.at_least,
                    "at_most": node.at_most,
                    "within_days": node.within_days,
                    "where": [{"property": f.name, "op": f.op, "value": _plain(f.value)} for f in node.where],
                },
                seen={"count": self._activity_count(node, contact)},
            )
        elif isinstance(node, Response):
            entry.update(
                condition={"campaign": node.campaign_id, "response": node.response},
                seen=node.campaign_id in _as_set(contact.get(RESPONSE_FIELDS[node.response])),
            )
        return entry


def _positive(node: Compare) -> Compare:
    return Compare(node.name, node.spec, node.op.removeprefix("not_"), node.value)


def _lookup(contact: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = contact
    for step in path:
        if not isinstance(value, dict):
            return None
        value = value.get(step)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(value: Any, expected: Any) -> bool:
    """Scalar equality within one family: booleans, numbers (as doubles), strings."""
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(expected, bool) and isinstance(value, bool) and value is expected
    if _is_number(expected):
        return _is_number(value) and float(value) == expected
    return isinstance(value, str) and value == expected


def _ordered(op: str, value: Any, bound: Any) -> bool:
    left: Any
    right: Any
    if _is_number(bound):
        if not _is_number(value):
            return False
        left, right = float(value), bound
    elif isinstance(value, str):
        left, right = value, bound
    else:
        return False
    if op == "greater":
        return bool(left > right)
    if op == "greater_or_equal":
        return bool(left >= right)
    if op == "less":
        return bool(left < right)
    return bool(left <= right)


def _day(value: Any) -> str | None:
    if isinstance(value, str) and DATE_PATTERN.match(value):
        return value[:10]
    return None


def _as_set(value: Any) -> set[Any]:
    return value if isinstance(value, set) else set()


def _count_ok(node: Activity, count: int) -> bool:
    if node.at_least is not None and count < node.at_least:
        return False
    return node.at_most is None or count <= node.at_most


def _plain(value: Any) -> Any:
    if isinstance(value, set):
        return sorted(value, key=str)
    if isinstance(value, tuple):
        return list(value)
    return value
