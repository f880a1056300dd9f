"""Property tests: the compiled evaluator agrees with the reference interpreter.

Rules and contacts are both generated: every operator on every kind of
field, nested all/any/not, activity with property filters, campaign
responses, odd raw values (nulls, wrong types, lists, bad dates, unknown time
zones). For each pair the compiled function on the raw item and the
reference interpreter on the decoded item must give the same verdict.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald.dynamodb_json import decode_item
from herald.rules.compiler import compile_rule, compile_rules
from herald.rules.model import BUILT_IN_FIELDS, OPERATORS, PROPERTY_OPERATORS, FieldType, field_spec, parse_rule
from herald.rules.reference import Reference

NOW = datetime(2026, 2, 28, 23, 30, tzinfo=UTC)
NOW_EPOCH = int(NOW.timestamp())
ZONES = ["UTC", "Europe/Prague", "Pacific/Auckland", "America/Los_Angeles", "Not/AZone"]
WORDS = ["Prague", "Brno", "pra", "", "vip", "a"]
DATES = ["2026-02-28", "2026-03-01", "2024-02-29", "1990-02-28", "2026-01-30", "2025-12-31T10:00:00Z", "20x6-01-01"]
NUMBERS = st.one_of(st.integers(-2, 4), st.sampled_from([0.5, 100.0, 1e20, -3.25]))
IDS = ["vip", "new", "gold", "spring"]
ATTRIBUTES = ["city", "score", "birthday", "tags", "flag"]


def raw_scalar() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.sampled_from(WORDS + DATES).map(lambda s: {"S": s}),
        NUMBERS.map(lambda n: {"N": str(n)}),
        st.booleans().map(lambda b: {"BOOL": b}),
        st.just({"NULL": True}),
    )


def raw_value() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(raw_scalar(), st.lists(raw_scalar(), max_size=3).map(lambda xs: {"L": xs}))


def raw_event() -> st.SearchStrategy[dict[str, Any]]:
    props = st.dictionaries(st.sampled_from(["amount", "sku", "day"]), raw_scalar(), max_size=3)
    at = st.integers(NOW_EPOCH - 90 * 86400, NOW_EPOCH).map(lambda t: {"N": str(t)})
    return st.tuples(at, props).map(lambda p: {"L": [p[0], {"M": p[1]}]})


@st.composite
def raw_items(draw: st.DrawFn) -> dict[str, Any]:
    item: dict[str, Any] = {"contact_id": {"S": "c1"}}
    optional: dict[str, st.SearchStrategy[Any]] = {
        "kind": st.sampled_from(["customer", "lead"]).map(lambda s: {"S": s}),
        "status": st.sampled_from(["Active", "Inactive"]).map(lambda s: {"S": s}),
        "email": st.sampled_from(["ann@example.com", "pra@x.cz"]).map(lambda s: {"S": s}),
        "time_zone": st.sampled_from(ZONES).map(lambda s: {"S": s}),
        "created_at": st.sampled_from(DATES).map(lambda s: {"S": s}),
        "group_ids": st.sets(st.sampled_from(IDS), min_size=1).map(lambda s: {"SS": sorted(s)}),
        "segment_ids": st.sets(st.sampled_from(IDS), min_size=1).map(lambda s: {"SS": sorted(s)}),
        "badge_ids": st.sets(st.sampled_from(IDS), min_size=1).map(lambda s: {"SS": sorted(s)}),
        "campaigns_opened": st.sets(st.sampled_from(IDS), min_size=1).map(lambda s: {"SS": sorted(s)}),
        "bounce": st.fixed_dictionaries(
            {"hard": st.booleans().map(lambda b: {"BOOL": b}), "soft_count": NUMBERS.map(lambda n: {"N": str(n)})}
        ).map(lambda m: {"M": m}),
        "consent": st.dictionaries(
            st.sampled_from(["email", "sms"]),
            st.one_of(st.booleans().map(lambda b: {"M": {"granted": {"BOOL": b}}}), st.just({"NULL": True})),
        ).map(lambda m: {"M": m}),
        "attributes": st.dictionaries(st.sampled_from(ATTRIBUTES), raw_value(), max_size=5).map(lambda m: {"M": m}),
        "activity": st.dictionaries(
            st.sampled_from(["purchase", "login"]), st.lists(raw_event(), max_size=4).map(lambda xs: {"L": xs})
        ).map(lambda m: {"M": m}),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            item[name] = draw(strategy)
    return item


def value_for(op: str, ftype: FieldType, name: str) -> st.SearchStrategy[Any]:
    spec = field_spec(name) if not name.startswith("@") else None
    if spec is not None and spec.type is FieldType.ENUM:
        scalar: st.SearchStrategy[Any] = st.sampled_from(sorted(spec.choices))
    elif ftype is FieldType.BOOL:
        scalar = st.booleans()
    elif ftype is FieldType.NUMBER:
        scalar = NUMBERS
    elif ftype is FieldType.STRING:
        scalar = st.sampled_from([w for w in WORDS if w])
    else:
        scalar = st.one_of(st.sampled_from([w for w in WORDS if w] + DATES[:4]), NUMBERS, st.booleans())
    if op in ("exists", "missing", "anniversary_today"):
        return st.just(None)
    if op in ("equals", "not_equals"):
        return scalar
    if op in ("in", "not_in"):
        return st.lists(scalar, min_size=1, max_size=3)
    if op in ("contains", "not_contains", "starts_with"):
        return st.sampled_from(IDS if ftype is FieldType.SET else [w for w in WORDS if w])
    if op == "between":
        if ftype is FieldType.NUMBER:
            return st.tuples(NUMBERS, NUMBERS).map(lambda p: sorted(p))
        return st.one_of(
            st.tuples(NUMBERS, NUMBERS), st.tuples(st.sampled_from(DATES[:4]), st.sampled_from(DATES[:4]))
        ).map(lambda p: sorted(p))
    if op in ("greater", "greater_or_equal", "less", "less_or_equal"):
        return NUMBERS if ftype is FieldType.NUMBER else st.one_of(NUMBERS, st.sampled_from([*DATES[:4], "Brno"]))
    if op in ("before", "after"):
        return st.sampled_from(DATES[:5])
    return st.integers(0, 60)


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["field", "field", "field", "activity", "campaign"]))
    if kind == "campaign":
        return {
            "campaign": draw(st.sampled_from(IDS)),
            "response": draw(st.sampled_from(["received", "opened", "clicked"])),
        }
    if kind == "activity":
        node: dict[str, Any] = {
            "activity": draw(st.sampled_from(["purchase", "login"])),
            "within_days": draw(st.integers(0, 100)),
        }
        least = draw(st.one_of(st.none(), st.integers(0, 3)))
        most = draw(st.one_of(st.none(), st.integers(3, 5))) if least is None or draw(st.booleans()) else None
        if least is None and most is None:
            least = 1
        node.update({k: v for k, v in (("at_least", least), ("at_most", most)) if v is not None})
        filters = []
        for _ in range(draw(st.integers(0, 2))):
            op = draw(st.sampled_from(PROPERTY_OPERATORS))
            value = draw(value_for(op, FieldType.ANY, "@prop"))
            flt = {"property": draw(st.sampled_from(["amount", "sku", "day"])), "op": op}
            if value is not None:
                flt["value"] = value
            filters.append(flt)
        if filters:
            node["where"] = filters
        return node
    name = draw(st.sampled_from(sorted(BUILT_IN_FIELDS) + [f"attributes.{a}" for a in ATTRIBUTES]))
    spec = field_spec(name)
    assert spec is not None
    op = draw(st.sampled_from(OPERATORS[spec.type]))
    value = draw(value_for(op, spec.type, name))
    node = {"field": name, "op": op}
    if value is not None:
        node["value"] = value
    return node


def corpus(size: int = 400, seed: int = 7) -> list[dict[str, Any]]:
    """Fixed, boundary-heavy contacts every generated rule is also checked against."""
    rng = random.Random(seed)
    numbers = [-2, -1, 0, 1, 2, 3, 4, 0.5, 100.0, 1e20, -3.25]

    def scalar() -> dict[str, Any]:
        pick = rng.randrange(4)
        if pick == 0:
            return {"S": rng.choice(WORDS + DATES)}
        if pick == 1:
            return {"N": str(rng.choice(numbers))}
        return {"BOOL": rng.random() < 0.5} if pick == 2 else {"NULL": True}

    def ids() -> dict[str, Any]:
        return {"SS": sorted(set(rng.sample(IDS, rng.randint(1, 3))))}

    items = []
    for n in range(size):
        item: dict[str, Any] = {
            "contact_id": {"S": f"c{n}"},
            "kind": {"S": rng.choice(["customer", "lead"])},
            "status": {"S": rng.choice(["Active", "Inactive"])},
            "email": {"S": rng.choice(["ann@example.com", "pra@x.cz"])},
            "time_zone": {"S": rng.choice(ZONES)},
            "created_at": {"S": rng.choice(DATES)},
            "group_ids": ids(),
            "segment_ids": ids(),
            "badge_ids": ids(),
            "campaigns_received": ids(),
            "campaigns_opened": ids(),
            "campaigns_clicked": ids(),
            "bounce": {"M": {"hard": {"BOOL": rng.random() < 0.3}, "soft_count": {"N": str(rng.choice(numbers))}}},
            "consent": {"M": {ch: {"M": {"granted": {"BOOL": rng.random() < 0.5}}} for ch in ("email", "sms", "push")}},
            "attributes": {
                "M": {name: scalar() if rng.random() < 0.8 else {"L": [scalar(), scalar()]} for name in ATTRIBUTES}
            },
            "activity": {
                "M": {
                    event: {
                        "L": [
                            {
                                "L": [
                                    {"N": str(NOW_EPOCH - rng.randrange(0, 90) * 86400)},
                                    {"M": {"amount": {"N": str(rng.choice(numbers))}, "sku": {"S": rng.choice(WORDS)}}},
                                ]
                            }
                            for _ in range(rng.randint(0, 5))
                        ]
                    }
                    for event in ("purchase", "login")
                }
            },
        }
        for name in rng.sample(sorted(item)[1:], rng.randint(0, 4)):
            del item[name]  # some contacts lack some fields altogether
        items.append(item)
    return items


CORPUS = corpus()
DECODED = [decode_item(item) for item in CORPUS]

rules = st.recursive(
    conditions(),
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=4).map(lambda xs: {"all": xs}),
        st.lists(children, min_size=1, max_size=4).map(lambda xs: {"any": xs}),
        children.map(lambda x: {"not": x}),
    ),
    max_leaves=10,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=rules, items=st.lists(raw_items(), min_size=1, max_size=5))
def test_compiled_evaluator_agrees_with_the_reference(source: dict[str, Any], items: list[dict[str, Any]]) -> None:
    rule = parse_rule(source)
    compiled = compile_rule(rule, NOW)
    reference = Reference(NOW)
    for item in items:
        assert compiled(item) == reference.matches(rule, decode_item(item)), (source, item)
    for item, decoded in zip(CORPUS, DECODED, strict=True):
        assert compiled(item) == reference.matches(rule, decoded), (source, item)


@settings(max_examples=300, deadline=None)
@given(source=rules, item=raw_items())
def test_explain_verdict_is_the_evaluation(source: dict[str, Any], item: dict[str, Any]) -> None:
    rule = parse_rule(source)
    reference = Reference(NOW)
    contact = decode_item(item)
    assert reference.explain(rule, contact)["verdict"] == compile_rule(rule, NOW)(item)


@settings(max_examples=700, deadline=None)
@given(source=conditions(), negate=st.booleans())
def test_every_condition_agrees_on_the_corpus(source: dict[str, Any], negate: bool) -> None:
    # Single conditions first: no all/any can mask an operator's disagreement.
    rule = parse_rule({"not": source} if negate else source)
    compiled = compile_rule(rule, NOW)
    reference = Reference(NOW)
    for item, decoded in zip(CORPUS, DECODED, strict=True):
        assert compiled(item) == reference.matches(rule, decoded), (source, item)


@settings(max_examples=150, deadline=None)
@given(sources=st.lists(rules, min_size=1, max_size=5))
def test_rules_compiled_together_give_each_rules_verdict(sources: list[dict[str, Any]]) -> None:
    parsed = [parse_rule(source) for source in sources]
    batch = compile_rules(parsed, NOW)
    singles = [compile_rule(rule, NOW) for rule in parsed]
    for item in CORPUS:
        assert batch(item) == tuple(single(item) for single in singles)
