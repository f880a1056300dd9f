"""The compiled evaluator: a rule becomes one Python function over raw items.

Decoding a whole DynamoDB item costs more than evaluating the rules on it,
so a rule is compiled once per run into the source of a single function that
reads only the attribute values it needs, straight from the raw
``{"S": ...}``/``{"N": ...}`` maps a Scan returns. ``all``/``any``/``not``
become Python's short-circuiting ``and``/``or``/``not``; constants are bound
as names, never spliced into the source as text. The semantics are exactly
those of :mod:`herald.rules.reference` (property tests hold them together).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from herald.rules.calendar import Calendar
from herald.rules.model import DATE_PATTERN, Activity, All, AnyOf, Compare, FieldType, Node, Not, Rule
from herald.rules.reference import RESPONSE_FIELDS

RawItem = dict[str, Any]
Predicate = Callable[[RawItem], bool]
Batch = Callable[[RawItem], tuple[bool, ...]]

# Stands for an absent value: every lookup on it finds nothing. Never mutated.
_ABSENT: dict[str, Any] = {}


def compile_rule(rule: Rule | Node, now: datetime, calendar: Calendar | None = None) -> Predicate:
    """Compile ``rule`` into ``f(raw_item) -> bool`` for evaluations at ``now``."""
    generator = _Generator(calendar or Calendar(now))
    function: Predicate = generator.function("rule", "item", generator.node(_root(rule)))
    return function


def compile_rules(rules: list[Rule | Node], now: datetime, calendar: Calendar | None = None) -> Batch:
    """Compile several rules into one ``f(raw_item) -> tuple of verdicts``.

    Evaluating every rule on an item before moving to the next item (as the
    nightly pass does) shares the look-ups of maps several rules read and
    keeps the item hot in the cache; verdicts are those of ``compile_rule``.
    """
    generator = _Generator(calendar or Calendar(now))
    expressions = [generator.node(_root(rule)) for rule in rules]
    function: Batch = generator.function("rules", "item", "(" + "".join(f"{e}, " for e in expressions) + ")")
    return function


def _root(rule: Rule | Node) -> Node:
    return rule.root if isinstance(rule, Rule) else rule


class _Generator:
    def __init__(self, calendar: Calendar) -> None:
        self.calendar = calendar
        self.names: dict[str, Any] = {
            "E": _ABSENT,
            "F": float,
            "is_day": DATE_PATTERN.match,
            "contains": _contains,
            "calendar": calendar,
            "activity_count": _activity_count,
        }
        self._counter = 0
        self.prologue: list[str] = []
        self._parents: dict[tuple[str, ...], str] = {}

    def function(self, name: str, argument: str, expression: str) -> Any:
        """Define ``name(argument)`` returning ``expression``, after the prologue's look-ups."""
        # Maps several conditions read (attributes, consent.email, ...) are looked up once, up front.
        prologue = "".join(f"    {line}\n" for line in self.prologue)
        source = f"def {name}({argument}):\n{prologue}    return {expression}\n"
        namespace = dict(self.names)
        exec(compile(source, f"<{name}>", "exec"), namespace)
        function = namespace[name]
        function.__doc__ = source  # what was generated, for debugging
        return function

    def parent(self, path: tuple[str, ...]) -> str:
        """The variable holding the map at ``path`` (``item`` for the top level)."""
        if not path:
            return "item"
        name = self._parents.get(path)
        if name is None:
            outer = self.parent(path[:-1])
            name = self._parents[path] = f"m{len(self._parents)}"
            # Anything but a map there reads as an empty map.
            self.prologue.append(f"{name} = {outer}.get({path[-1]!r}, E).get('M') or E")
        return name

    def leaf(self, path: tuple[str, ...]) -> str:
        """An expression giving the raw value at ``path`` (``E`` when absent)."""
        return f"{self.parent(path[:-1])}.get({path[-1]!r}, E)"

    def const(self, value: Any) -> str:
        self._counter += 1
        name = f"c{self._counter}"
        self.names[name] = value
        return name

    def var(self) -> str:
        self._counter += 1
        return f"v{self._counter}"

    def node(self, node: Node) -> str:
        if isinstance(node, All):
            return "(" + " and ".join(self.node(c) for c in _cheapest_first(node.children)) + ")"
        if isinstance(node, AnyOf):
            return "(" + " or ".join(self.node(c) for c in _cheapest_first(node.children)) + ")"
        if isinstance(node, Not):
            return f"(not {self.node(node.child)})"
        if isinstance(node, Compare):
            return self.compare(node, self.leaf(node.spec.path))
        if isinstance(node, Activity):
            return self.activity(node)
        field = self.const(RESPONSE_FIELDS[node.response])
        campaign = self.const(node.campaign_id)
        v = self.var()
        return f"(({v} := item.get({field})) is not None and {campaign} in {v}.get('SS', ()))"

    def compare(self, node: Compare, leaf: str) -> str:
        op, value = node.op, node.value
        if op.startswith("not_"):
            positive = Compare(node.name, node.spec, op.removeprefix("not_"), value)
            return f"(not {self.compare(positive, leaf)})"
        fast = self.fast(node, leaf)
        if fast is not None:
            return fast
        v = self.var()
        # Raw values are one-key maps, so a found value is truthy and E is not.
        got = f"({v} := {leaf}) is not E"
        if op == "exists":
            return f"({got} and 'NULL' not in {v})"
        if op == "missing":
            return f"(not ({got} and 'NULL' not in {v}))"
        if op == "equals":
            return f"({got} and {self.equal(v, value)})"
        if op == "in":
            return f"({got} and {self.member(v, value)})"
        if op == "contains":
            if node.spec.type is FieldType.SET:
                return f"({got} and {self.const(value)} in {v}.get('SS', ()))"
            return f"({got} and contains({v}, {self.const(value)}))"
        if op == "starts_with":
            return f"({got} and 'S' in {v} and {v}['S'].startswith({self.const(value)}))"
        if op in _COMPARISONS:
            return f"({got} and {self.ordered(v, _COMPARISONS[op], value)})"
        if op == "between":
            low, high = value
            return f"({got} and {self.ordered(v, '>=', low)} and {self.ordered(v, '<=', high)})"
        return self.date(node, got, v)

    def fast(self, node: Compare, leaf: str) -> str | None:
        """Single-lookup forms of the common comparisons (absent or mistyped values read as None or NaN,
        which match nothing, exactly as the reference says)."""
        op, value = node.op, node.value
        number = f"F({leaf}.get('N', 'nan'))"
        if op == "equals":
            if isinstance(value, bool):
                return f"({leaf}.get('BOOL') is {value!r})"
            if isinstance(value, float):
                return f"({number} == {self.const(value)})"
            return f"({leaf}.get('S') == {self.const(value)})"
        if op == "in":
            if all(isinstance(x, str) for x in value):
                return f"({leaf}.get('S') in {self.const(frozenset(value))})"
            if all(isinstance(x, float) for x in value):
                return f"({number} in {self.const(frozenset(value))})"
            return None
        if op in _COMPARISONS and isinstance(value, float):
            return f"({number} {_COMPARISONS[op]} {self.const(value)})"
        if op == "between" and isinstance(value[0], float):
            return f"({self.const(value[0])} <= {number} <= {self.const(value[1])})"
        if op == "contains" and node.spec.type is FieldType.SET:
            return f"({self.const(value)} in {leaf}.get('SS', ()))"
        return None

    def equal(self, v: str, value: Any) -> str:
        if isinstance(value, bool):
            return f"{v}.get('BOOL') is {value!r}"
        if isinstance(value, float):
            return f"'N' in {v} and F({v}['N']) == {self.const(value)}"
        return f"{v}.get('S') == {self.const(value)}"

    def member(self, v: str, values: tuple[Any, ...]) -> str:
        strings = frozenset(x for x in values if isinstance(x, str))
        numbers = frozenset(x for x in values if isinstance(x, float))
        booleans = [x for x in values if isinstance(x, bool)]
        parts = []
        if strings:
            parts.append(f"{v}.get('S') in {self.const(strings)}")
        if numbers:
            parts.append(f"('N' in {v} and F({v}['N']) in {self.const(numbers)})")
        for flag in sorted(set(booleans)):
            parts.append(f"{v}.get('BOOL') is {flag!r}")
        return "(" + " or ".join(parts) + ")"

    def ordered(self, v: str, operator: str, bound: Any) -> str:
        if isinstance(bound, float):
            return f"('N' in {v} and F({v}['N']) {operator} {self.const(bound)})"
        return f"('S' in {v} and {v}['S'] {operator} {self.const(bound)})"

    def date(self, node: Compare, got: str, v: str) -> str:
        op = node.op
        s = self.var()
        day = f"({got} and ({s} := {v}.get('S')) is not None and is_day({s}) is not None"
        if op == "before":
            return f"{day} and {s}[:10] < {self.const(node.value)})"
        if op == "after":
            return f"{day} and {s}[:10] > {self.const(node.value)})"
        if op == "within_last_days":
            days: int = node.value
            since = self.per_zone(lambda z: self.calendar.days_ago(z, days))
            today = self.per_zone(self.calendar.today)
            return f"{day} and {since} <= {s}[:10] <= {today})"
        if op == "more_than_days_ago":
            ago: int = node.value
            return f"{day} and {s}[:10] < {self.per_zone(lambda z: self.calendar.days_ago(z, ago))})"
        # anniversary_today
        return f"{day} and {s}[5:10] in {self.per_zone(self.calendar.anniversaries)})"

    def zone(self) -> str:
        """The contact's time zone name (None when unset), read once per evaluation."""
        if "zone" not in self._parents.values():
            self._parents[("@zone",)] = "zone"
            self.prologue.append("zone = item.get('time_zone', E).get('S')")
        return "zone"

    def per_zone(self, compute: Callable[[str | None], Any]) -> str:
        """An expression for ``compute(zone)``, cached per zone name for the run."""
        self.zone()
        cache: dict[str | None, Any] = {}

        def fill(zone: str | None) -> Any:
            cache[zone] = value = compute(zone)
            return value

        table, filler = self.const(cache), self.const(fill)
        return f"({table}[zone] if zone in {table} else {filler}(zone))"

    def activity(self, node: Activity) -> str:
        where = None
        if node.where:
            inner = _Generator(self.calendar)
            inner._counter = self._counter + 1000
            body = " and ".join(inner.compare(f, f"props.get({inner.const(f.spec.path[0])}, E)") for f in node.where)
            where = inner.function("where", "props", body)
        args = ", ".join(
            [
                self.const(node.event),
                self.const(self.calendar.cutoff_epoch(node.within_days)),
                self.const(where),
                self.const(node.at_least),
                self.const(node.at_most),
            ]
        )
        return f"activity_count(item, {args})"


def _cost(node: Node) -> int:
    """A rough cost of evaluating a node, so cheap conditions run (and short-circuit) first."""
    if isinstance(node, All | AnyOf):
        return sum(_cost(child) for child in node.children)
    if isinstance(node, Not):
        return _cost(node.child)
    if isinstance(node, Activity):
        return 20 + 4 * len(node.where)
    if isinstance(node, Compare):
        if node.op.removeprefix("not_") in ("within_last_days", "more_than_days_ago", "anniversary_today"):
            return 6
        if node.op in ("before", "after", "contains", "not_contains", "starts_with"):
            return 3
        return 1
    return 1


def _cheapest_first(children: tuple[Node, ...]) -> list[Node]:
    # Evaluation has no side effects, so order changes speed, never the verdict.
    return sorted(children, key=_cost)


_COMPARISONS = {"greater": ">", "greater_or_equal": ">=", "less": "<", "less_or_equal": "<="}


def _contains(value: dict[str, Any], expected: Any) -> bool:
    if "S" in value:
        return isinstance(expected, str) and expected in value["S"]
    if "L" in value:
        return any(_raw_equal(item, expected) for item in value["L"])
    if "SS" in value:
        return expected in value["SS"]
    if "NS" in value:
        return isinstance(expected, float) and any(float(n) == expected for n in value["NS"])
    return False


def _raw_equal(value: dict[str, Any], expected: Any) -> bool:
    if isinstance(expected, bool):
        return value.get("BOOL") is expected
    if isinstance(expected, float):
        return "N" in value and float(value["N"]) == expected
    return value.get("S") == expected


def _activity_count(
    item: RawItem,
    event: str,
    cutoff: float,
    where: Callable[[dict[str, Any]], bool] | None,
    at_least: int | None,
    at_most: int | None,
) -> bool:
    activity = item.get("activity")
    entries = (activity.get("M") or {}).get(event) if activity else None
    count = 0
    if entries is not None:
        for entry in entries.get("L", ()):
            pair = entry.get("L")
            if pair is None or len(pair) != 2:
                continue
            at, properties = pair
            if "N" not in at or float(at["N"]) < cutoff or "M" not in properties:
                continue
            if where is None or where(properties["M"]):
                count += 1
    if at_least is not None and count < at_least:
        return False
    return at_most is None or count <= at_most
