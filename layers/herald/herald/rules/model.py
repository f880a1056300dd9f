"""The rule language: a JSON condition tree, parsed into typed nodes.

A rule is one node; a node is exactly one of::

    {"all": [node, ...]}            every child matches
    {"any": [node, ...]}            at least one child matches
    {"not": node}                   the child does not match
    {"field": F, "op": O, "value": V}
    {"activity": "purchase", "at_least": 2, "within_days": 30,
     "where": [{"property": "amount", "op": "greater", "value": 100}]}
    {"campaign": "spring-sale", "response": "opened"}

Fields are the contact's built-in fields (``kind``, ``status``, ``email``,
``created_at``, ...), ``attributes.<name>`` for free attributes,
``consent.<channel>`` (granted or not), ``bounce.hard`` and
``bounce.soft_count``, and the sets ``group``, ``segment`` and ``badge``.
Every problem is reported with the JSON path of the node at fault, so a
422 says exactly what to fix.

The semantics both evaluators share (see ``docs/decisions.md``): a missing
or null value matches no comparison; ``not_equals``/``not_in``/
``not_contains`` are the exact negations of their positive forms; numbers
compare as IEEE doubles and never equal booleans or strings; dates are
strings starting ``YYYY-MM-DD`` compared as calendar days, "today" being
today in the contact's own time zone.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

from herald.contacts.model import is_valid_id

MAX_DEPTH = 12
MAX_CONDITIONS = 100
MAX_LIST_VALUES = 100
MAX_DAYS = 36_500
# The contact's activity summary keeps 400 days and 50 events a type (herald.activity).
MAX_ACTIVITY_DAYS = 400
MAX_ACTIVITY_COUNT = 50


class FieldType(StrEnum):
    """What a field holds, which decides the operators it accepts."""

    STRING = "string"
    ENUM = "enum"
    NUMBER = "number"
    BOOL = "bool"
    DATE = "date"
    SET = "set"
    ANY = "any"


EQUALITY = ("equals", "not_equals", "in", "not_in")
ORDERING = ("greater", "greater_or_equal", "less", "less_or_equal", "between")
TEXT = ("contains", "not_contains", "starts_with")
PRESENCE = ("exists", "missing")
ABSOLUTE_DATES = ("before", "after")
RELATIVE_DATES = ("within_last_days", "more_than_days_ago", "anniversary_today")
DATES = ABSOLUTE_DATES + RELATIVE_DATES
ALL_OPERATORS = EQUALITY + ORDERING + TEXT + PRESENCE + DATES

OPERATORS: dict[FieldType, tuple[str, ...]] = {
    FieldType.STRING: EQUALITY + ORDERING + TEXT + PRESENCE,
    FieldType.ENUM: EQUALITY,
    FieldType.NUMBER: EQUALITY + ORDERING + PRESENCE,
    FieldType.BOOL: ("equals", "not_equals", *PRESENCE),
    FieldType.DATE: DATES + PRESENCE,
    FieldType.SET: ("contains", "not_contains", *PRESENCE),
    FieldType.ANY: ALL_OPERATORS,
}
# Activity properties have no contact time zone to measure "today" in.
PROPERTY_OPERATORS = EQUALITY + ORDERING + TEXT + PRESENCE + ABSOLUTE_DATES

CHANNELS = ("email", "sms", "push")
RESPONSES = ("received", "opened", "clicked")


@dataclass(frozen=True)
class FieldSpec:
    """A rule field: its type and where it lives on the stored contact item."""

    type: FieldType
    path: tuple[str, ...]
    choices: frozenset[str] = frozenset()


BUILT_IN_FIELDS: dict[str, FieldSpec] = {
    "kind": FieldSpec(FieldType.ENUM, ("kind",), frozenset({"customer", "lead"})),
    "status": FieldSpec(FieldType.ENUM, ("status",), frozenset({"Active", "Inactive"})),
    "email": FieldSpec(FieldType.STRING, ("email",)),
    "phone": FieldSpec(FieldType.STRING, ("phone",)),
    "first_name": FieldSpec(FieldType.STRING, ("first_name",)),
    "last_name": FieldSpec(FieldType.STRING, ("last_name",)),
    "time_zone": FieldSpec(FieldType.STRING, ("time_zone",)),
    "created_at": FieldSpec(FieldType.DATE, ("created_at",)),
    "updated_at": FieldSpec(FieldType.DATE, ("updated_at",)),
    "group": FieldSpec(FieldType.SET, ("group_ids",)),
    "segment": FieldSpec(FieldType.SET, ("segment_ids",)),
    "badge": FieldSpec(FieldType.SET, ("badge_ids",)),
    "bounce.hard": FieldSpec(FieldType.BOOL, ("bounce", "hard")),
    "bounce.soft_count": FieldSpec(FieldType.NUMBER, ("bounce", "soft_count")),
    **{f"consent.{ch}": FieldSpec(FieldType.BOOL, ("consent", ch, "granted")) for ch in CHANNELS},
}
_ATTRIBUTE = re.compile(r"^attributes\.([A-Za-z][A-Za-z0-9_]{0,63})$")
_PROPERTY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_EVENT = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
DATE_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}")


def field_spec(name: str) -> FieldSpec | None:
    """The spec of a rule field name, or None if there is no such field."""
    if name in BUILT_IN_FIELDS:
        return BUILT_IN_FIELDS[name]
    match = _ATTRIBUTE.match(name)
    return FieldSpec(FieldType.ANY, ("attributes", match.group(1))) if match else None


# --------------------------------------------------------------------------
# Nodes
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class All:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class AnyOf:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    child: Node


@dataclass(frozen=True)
class Compare:
    """A comparison of one value; ``path`` locates it in the item (or in event properties)."""

    name: str
    spec: FieldSpec
    op: str
    value: Any = None


@dataclass(frozen=True)
class Activity:
    """Performed ``event`` between ``at_least`` and ``at_most`` times in the last ``within_days``."""

    event: str
    within_days: int
    at_least: int | None
    at_most: int | None
    where: tuple[Compare, ...] = ()


@dataclass(frozen=True)
class Response:
    """Received / opened / clicked a given campaign."""

    campaign_id: str
    response: str


Node = All | AnyOf | Not | Compare | Activity | Response


@dataclass
class Rule:
    """A parsed rule: its root node, and the segments and badges it refers to."""

    root: Node
    source: dict[str, Any]
    segments: set[str] = field(default_factory=set)
    badges: set[str] = field(default_factory=set)
    conditions: int = 0


class RuleError(Exception):
    """A rule failed to parse; ``problems`` lists each ``{field, problem}``."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{p['field']}: {p['problem']}" for p in problems))
        self.problems = problems


def parse_rule(source: Any, path: str = "rule") -> Rule:
    """Parse and check a rule; raise :class:`RuleError` naming every bad node."""
    parser = _Parser()
    root = parser.node(source, path, 0)
    if parser.count > MAX_CONDITIONS:
        parser.problem(path, f"a rule may have at most {MAX_CONDITIONS} conditions; this one has {parser.count}")
    if parser.problems:
        raise RuleError(parser.problems)
    assert root is not None
    return Rule(root, source, parser.segments, parser.badges, parser.count)


_NODE_KEYS = {
    "all": {"all"},
    "any": {"any"},
    "not": {"not"},
    "field": {"field", "op", "value"},
    "activity": {"activity", "at_least", "at_most", "within_days", "where"},
    "campaign": {"campaign", "response"},
}


class _Parser:
    def __init__(self) -> None:
        self.problems: list[dict[str, str]] = []
        self.segments: set[str] = set()
        self.badges: set[str] = set()
        self.count = 0

    def problem(self, path: str, message: str) -> None:
        self.problems.append({"field": path, "problem": message})

    def node(self, raw: Any, path: str, depth: int) -> Node | None:
        if depth > MAX_DEPTH:
            self.problem(path, f"rules may nest at most {MAX_DEPTH} levels deep")
            return None
        if not isinstance(raw, dict):
            self.problem(path, "must be an object (a condition or all/any/not)")
            return None
        kinds = [key for key in _NODE_KEYS if key in raw]
        if len(kinds) != 1:
            found = ", ".join(sorted(raw)) or "nothing"
            self.problem(path, f"must have exactly one of all, any, not, field, activity, campaign (found {found})")
            return None
        kind = kinds[0]
        unknown = sorted(set(raw) - _NODE_KEYS[kind])
        if unknown:
            self.problem(f"{path}.{unknown[0]}", f"unknown key in a {kind} node")
            return None
        if kind in ("all", "any"):
            return self._group(kind, raw[kind], f"{path}.{kind}", depth)
        if kind == "not":
            child = self.node(raw["not"], f"{path}.not", depth + 1)
            return Not(child) if child is not None else None
        self.count += 1
        if kind == "field":
            return self._compare(raw, path, property_filter=False)
        if kind == "activity":
            return self._activity(raw, path)
        return self._response(raw, path)

    def _group(self, kind: str, raw: Any, path: str, depth: int) -> Node | None:
        if not isinstance(raw, list) or not raw:
            self.problem(path, "must be a non-empty list of conditions")
            return None
        children = [self.node(child, f"{path}[{i}]", depth + 1) for i, child in enumerate(raw)]
        if any(child is None for child in children):
            return None
        nodes = tuple(c for c in children if c is not None)
        return All(nodes) if kind == "all" else AnyOf(nodes)

    def _compare(self, raw: dict[str, Any], path: str, property_filter: bool) -> Compare | None:
        key = "property" if property_filter else "field"
        name = raw.get(key)
        if property_filter:
            spec = FieldSpec(FieldType.ANY, (name,)) if isinstance(name, str) and _PROPERTY.match(name) else None
        else:
            spec = field_spec(name) if isinstance(name, str) else None
        if spec is None:
            self.problem(f"{path}.{key}", f"unknown field kind {name!r}" + ("" if property_filter else _FIELD_HINT))
            return None
        op = raw.get("op")
        allowed = PROPERTY_OPERATORS if property_filter else OPERATORS[spec.type]
        if op not in ALL_OPERATORS:
            self.problem(f"{path}.op", f"unknown operator {op!r}")
            return None
        if op not in allowed:
            self.problem(f"{path}.op", f"operator {op} does not apply to {name} ({spec.type.value})")
            return None
        problem, value = _check_value(spec, op, raw.get("value"), "value" in raw)
        if problem:
            self.problem(f"{path}.value", problem)
            return None
        if op in ("contains", "not_contains") and spec.type is FieldType.SET:
            if name == "segment":
                self.segments.add(value)
            elif name == "badge":
                self.badges.add(value)
        return Compare(str(name), spec, op, value)

    def _activity(self, raw: dict[str, Any], path: str) -> Activity | None:
        event = raw["activity"]
        ok = True
        if not isinstance(event, str) or not _EVENT.match(event):
            self.problem(f"{path}.activity", "must be an event type such as purchase or login")
            ok = False
        counts: dict[str, int | None] = {}
        for bound in ("at_least", "at_most", "within_days"):
            value = raw.get(bound)
            limit = MAX_ACTIVITY_DAYS if bound == "within_days" else MAX_ACTIVITY_COUNT
            if value is None:
                counts[bound] = None
            elif isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
                self.problem(f"{path}.{bound}", f"must be a whole number from 0 to {limit:,}")
                counts[bound] = None
                ok = False
            else:
                counts[bound] = value
        if ok and counts["at_least"] is None and counts["at_most"] is None:
            self.problem(path, "an activity condition needs at_least or at_most")
            ok = False
        if ok and counts["within_days"] is None:
            self.problem(f"{path}.within_days", "is required (how many days back to count)")
            ok = False
        least, most = counts["at_least"], counts["at_most"]
        if ok and least is not None and most is not None and least > most:
            self.problem(path, "at_least must not exceed at_most")
            ok = False
        where = raw.get("where", [])
        filters: list[Compare] = []
        if not isinstance(where, list):
            self.problem(f"{path}.where", "must be a list of property conditions")
            return None
        for i, item in enumerate(where):
            item_path = f"{path}.where[{i}]"
            if not isinstance(item, dict) or set(item) - {"property", "op", "value"}:
                self.problem(item_path, "must be an object with property, op and value")
                ok = False
                continue
            compare = self._compare(item, item_path, property_filter=True)
            ok = ok and compare is not None
            if compare is not None:
                filters.append(compare)
        if not ok:
            return None
        assert counts["within_days"] is not None
        return Activity(event, counts["within_days"], least, most, tuple(filters))

    def _response(self, raw: dict[str, Any], path: str) -> Response | None:
        campaign, response = raw.get("campaign"), raw.get("response")
        if not isinstance(campaign, str) or not is_valid_id(campaign):
            self.problem(f"{path}.campaign", "must be a campaign id")
            return None
        if response not in RESPONSES:
            self.problem(f"{path}.response", f"must be one of {', '.join(RESPONSES)}")
            return None
        return Response(campaign, response)


_FIELD_HINT = "; use a built-in field (" + ", ".join(BUILT_IN_FIELDS) + ") or attributes.<name>"


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if not isinstance(value, int | float) or (isinstance(value, float) and not math.isfinite(value)):
        return False
    # Within what DynamoDB can store, since rules are stored.
    return value == 0 or 1e-130 <= abs(value) < 1e126


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bool) or _is_number(value)


def _check_value(spec: FieldSpec, op: str, value: Any, present: bool) -> tuple[str | None, Any]:
    """``(problem, normalised value)``: numbers become floats, lists become tuples."""
    if op in PRESENCE or op == "anniversary_today":
        return (f"operator {op} takes no value", None) if present and value is not None else (None, None)
    if not present or value is None:
        return f"operator {op} needs a value", None
    if op in ("equals", "not_equals"):
        problem = _scalar_problem(spec, value)
        return (problem, None) if problem else (None, _normal(value))
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value or len(value) > MAX_LIST_VALUES:
            return f"type mismatch: {op} needs a list of 1 to {MAX_LIST_VALUES} values", None
        for item in value:
            problem = _scalar_problem(spec, item)
            if problem:
                return problem, None
        return None, tuple(_normal(item) for item in value)
    if op in TEXT:
        if spec.type is FieldType.SET:
            ok = isinstance(value, str) and is_valid_id(value)
            return (None, value) if ok else ("type mismatch: must be an id", None)
        ok = isinstance(value, str) and value != ""
        return (None, value) if ok else (f"type mismatch: {op} needs a non-empty string", None)
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            return "type mismatch: between needs [low, high]", None
        low, high = value
        both_numbers = _is_number(low) and _is_number(high)
        both_strings = isinstance(low, str) and isinstance(high, str)
        if not (both_numbers or (both_strings and spec.type is not FieldType.NUMBER)):
            return "type mismatch: between needs two numbers (or two strings)", None
        if low > high:
            return "low must not exceed high", None
        return None, (_normal(low), _normal(high))
    if op in ORDERING:
        if _is_number(value) or (isinstance(value, str) and spec.type is not FieldType.NUMBER):
            return None, _normal(value)
        return f"type mismatch: {op} needs a number" + ("" if spec.type is FieldType.NUMBER else " or a string"), None
    if op in ABSOLUTE_DATES:
        if isinstance(value, str) and DATE_PATTERN.match(value) and len(value) == 10:
            try:
                date.fromisoformat(value)
                return None, value
            except ValueError:
                pass
        return f"type mismatch: {op} needs a date YYYY-MM-DD", None
    # within_last_days, more_than_days_ago
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DAYS:
        return f"type mismatch: {op} needs a whole number of days from 0 to {MAX_DAYS:,}", None
    return None, value


def _scalar_problem(spec: FieldSpec, value: Any) -> str | None:
    if spec.type is FieldType.ENUM:
        if not isinstance(value, str) or value not in spec.choices:
            return "type mismatch: must be one of " + ", ".join(sorted(spec.choices))
        return None
    if spec.type is FieldType.BOOL and not isinstance(value, bool):
        return "type mismatch: must be true or false"
    if spec.type is FieldType.NUMBER and not _is_number(value):
        return "type mismatch: must be a number"
    if spec.type is FieldType.STRING and not isinstance(value, str):
        return "type mismatch: must be a string"
    if not _is_scalar(value):
        return "type mismatch: must be a string, number or boolean"
    return None


def _normal(value: Any) -> Any:
    return float(value) if _is_number(value) else value
