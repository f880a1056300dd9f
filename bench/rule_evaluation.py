"""Rule evaluation: Herald's compiled evaluator on raw items, beside the naive stack and a hand-written ceiling.

1,000,000 synthetic contacts as raw DynamoDB items (what a Scan returns) and
20 rules of 5-10 conditions. Printed, per second on one core:

- Herald: ``compile_rule`` once per rule, then the compiled function on each raw item;
- naive stack: pynamodb ``from_raw_data`` per item, then the ``rule-engine``
  package's rule (the same conditions, in its language) on the decoded values;
- ceiling: a hand-written Python predicate per rule on already-decoded dicts.

All three are first checked to agree on a sample, so the rates compare the
same work. Baselines run on a slice of the items (they are 10-100 times slower);
rates are per evaluation, so the slice size does not bias them.

    make bench BENCH=rule_evaluation    (or: python -m bench rule_evaluation [--contacts N])
"""

# mypy: disable-error-code="misc"
# (the hand-written predicates are lambdas with bound defaults, which mypy cannot infer)
from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import rule_engine

from bench.common import figure
from herald.rules.compiler import compile_rule, compile_rules
from herald.rules.model import parse_rule
from herald.store.tables import ContactRecord

BENCH = "rule_evaluation"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TODAY = "2026-11-23"
CITIES = ["Prague", "Brno", "Ostrava", "Plzen", "Liberec", "Olomouc", "Vienna", "Berlin"]
TIERS = ["bronze", "silver", "gold", "platinum"]
TAGS = ["sport", "outdoor", "kids", "fashion", "home", "garden"]
GROUPS = ["vip", "wholesale", "retail", "staff"]
DAY = 86_400


def _days_ago(days: int) -> str:
    return datetime.fromtimestamp(NOW.timestamp() - days * DAY, UTC).date().isoformat()


# --------------------------------------------------------------------------
# Synthetic contacts (raw items; leaves pooled so a million fit in memory)
# --------------------------------------------------------------------------


def make_items(count: int, seed: int = 42) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    s = {v: {"S": v} for v in CITIES + TIERS + ["customer", "lead", "Active", "Inactive", "UTC", "Europe/Prague"]}
    numbers = {n: {"N": str(n)} for n in range(0, 5001)}
    dates = {d: {"S": _days_ago(d)} for d in range(0, 1200)}
    birthdays = [{"S": f"{1950 + rng.randrange(55)}-{m:02d}-{d:02d}"} for m in range(1, 13) for d in range(1, 29)]
    true, false = {"BOOL": True}, {"BOOL": False}
    consents = [
        {
            "M": {
                "email": {"M": {"granted": g1, "source": {"S": "web"}}},
                "sms": {"M": {"granted": g2, "source": {"S": "app"}}},
            }
        }
        for g1 in (true, false)
        for g2 in (true, false)
    ]
    bounces = [{"M": {"hard": h, "soft_count": numbers[n]}} for h in (false, false, false, true) for n in range(7)]
    tag_lists = [{"L": [{"S": t} for t in rng.sample(TAGS, k)]} for k in (0, 1, 2, 3) for _ in range(20)]
    group_sets = [{"SS": sorted(rng.sample(GROUPS, k))} for k in (1, 1, 2, 3) for _ in range(10)]
    segment_sets = [{"SS": ["churned"]}, {"SS": ["loyal"]}, {"SS": ["loyal", "new"]}, {"SS": ["new"]}]
    activities = []
    for _ in range(500):
        purchases = [
            {
                "L": [
                    {"N": str(int(NOW.timestamp()) - rng.randrange(120) * DAY)},
                    {"M": {"amount": numbers[rng.randrange(1, 400)]}},
                ]
            }
            for _ in range(rng.randrange(6))
        ]
        activities.append({"M": {"purchase": {"L": purchases}}})
    items = []
    for n in range(count):
        items.append(
            {
                "contact_id": {"S": f"c{n:07d}"},
                "kind": s["customer"] if rng.random() < 0.85 else s["lead"],
                "status": s["Active"] if rng.random() < 0.8 else s["Inactive"],
                "email": {"S": f"c{n}@example.com" if n % 5 else f"c{n}@mail.cz"},
                "time_zone": s["Europe/Prague"] if n % 3 else s["UTC"],
                "created_at": dates[rng.randrange(1200)],
                "group_ids": group_sets[rng.randrange(len(group_sets))],
                "segment_ids": segment_sets[rng.randrange(4)],
                "consent": consents[rng.randrange(4)],
                "bounce": bounces[rng.randrange(len(bounces))],
                "attributes": {
                    "M": {
                        "city": s[CITIES[rng.randrange(len(CITIES))]],
                        "tier": s[TIERS[rng.randrange(4)]],
                        "spend": numbers[rng.randrange(5001)],
                        "age": numbers[rng.randrange(18, 90)],
                        "birthday": birthdays[rng.randrange(len(birthdays))],
                        "last_order": dates[rng.randrange(400)],
                        "tags": tag_lists[rng.randrange(len(tag_lists))],
                    }
                },
                "activity": activities[rng.randrange(500)],
                "version": numbers[1],
                "updated_at": dates[0],
                "kind_status_shard": {"S": "customer#Active#00"},
            }
        )
    return items


# --------------------------------------------------------------------------
# 20 rules: Herald JSON, the same in rule-engine's language, and by hand
# --------------------------------------------------------------------------


def _cmp(field: str, op: str, value: Any = None) -> dict[str, Any]:
    node = {"field": field, "op": op}
    if value is not None:
        node["value"] = value
    return node


def rules() -> list[tuple[dict[str, Any], str, Callable[[dict[str, Any]], bool]]]:
    found: list[tuple[dict[str, Any], str, Callable[[dict[str, Any]], bool]]] = []
    cutoff30 = NOW.timestamp() - 30 * DAY
    for i in range(4):
        city_pair = [CITIES[i], CITIES[i + 1]]
        spend = 500 + 1000 * i
        # T1: 6 conditions
        found.append(
            (
                {
                    "all": [
                        _cmp("status", "equals", "Active"),
                        _cmp("kind", "equals", "customer"),
                        _cmp("attributes.city", "in", city_pair),
                        _cmp("attributes.spend", "greater", spend),
                        _cmp("consent.email", "equals", True),
                        {"not": _cmp("bounce.hard", "equals", True)},
                    ]
                },
                f'status == "Active" and kind == "customer" and attributes["city"] in {city_pair!r}'.replace("'", '"')
                + f' and attributes["spend"] > {spend} and consent["email"]["granted"] == true'
                + ' and not bounce["hard"] == true',
                lambda d, cp=frozenset(city_pair), sp=spend: (
                    d["status"] == "Active"
                    and d["kind"] == "customer"
                    and d["attributes"]["city"] in cp
                    and d["attributes"]["spend"] > sp
                    and d["consent"]["email"]["granted"] is True
                    and d["bounce"]["hard"] is not True
                ),
            )
        )
        tiers = TIERS[i : i + 2]
        low, high = 20 + 5 * i, 40 + 10 * i
        days = 30 * (i + 1)
        since_day = _days_ago(days)
        lapsed_day = _days_ago(90 * (i + 1))
        # T2: 7 conditions
        found.append(
            (
                {
                    "all": [
                        _cmp("attributes.tier", "in", tiers),
                        _cmp("attributes.age", "between", [low, high]),
                        {
                            "any": [
                                _cmp("attributes.city", "equals", CITIES[i]),
                                _cmp("attributes.city", "starts_with", "Br"),
                            ]
                        },
                        _cmp("attributes.last_order", "within_last_days", days),
                        _cmp("group", "contains", GROUPS[i]),
                        _cmp("bounce.soft_count", "less", 5),
                    ]
                },
                f'attributes["tier"] in {tiers!r}'.replace("'", '"')
                + f' and attributes["age"] >= {low} and attributes["age"] <= {high}'
                + f' and (attributes["city"] == "{CITIES[i]}" or attributes["city"] =~ "Br.*")'
                + f' and attributes["last_order"] >= "{_days_ago(days)}" and attributes["last_order"] <= "{TODAY}"'
                + f' and "{GROUPS[i]}" in group_ids and bounce["soft_count"] < 5',
                lambda d, t=frozenset(tiers), lo=low, hi=high, c=CITIES[i], since=since_day, g=GROUPS[i]: (
                    d["attributes"]["tier"] in t
                    and lo <= d["attributes"]["age"] <= hi
                    and (d["attributes"]["city"] == c or d["attributes"]["city"].startswith("Br"))
                    and since <= d["attributes"]["last_order"] <= TODAY
                    and g in d["group_ids"]
                    and d["bounce"]["soft_count"] < 5
                ),
            )
        )
        amount = 50 * (i + 1)
        # T3: 5 conditions (one counts purchases with a property filter)
        found.append(
            (
                {
                    "all": [
                        {
                            "activity": "purchase",
                            "at_least": 2,
                            "within_days": 30,
                            "where": [{"property": "amount", "op": "greater", "value": amount}],
                        },
                        _cmp("status", "equals", "Active"),
                        _cmp("consent.email", "equals", True),
                        {"not": _cmp("segment", "contains", "churned")},
                        _cmp("email", "contains", "@example"),
                    ]
                },
                f'[e for e in activity["purchase"] if e[0] >= {cutoff30} and e[1]["amount"] > {amount}].length >= 2'
                + ' and status == "Active" and consent["email"]["granted"] == true'
                + ' and not "churned" in segment_ids and email =~~ "@example"',
                lambda d, a=amount: (
                    sum(1 for at, p in d["activity"]["purchase"] if at >= cutoff30 and p["amount"] > a) >= 2
                    and d["status"] == "Active"
                    and d["consent"]["email"]["granted"] is True
                    and "churned" not in d["segment_ids"]
                    and "@example" in d["email"]
                ),
            )
        )
        # T4: 8 conditions in an any of alls
        young = 25 + 5 * i
        found.append(
            (
                {
                    "any": [
                        {
                            "all": [
                                _cmp("attributes.spend", "greater_or_equal", 4000 + 200 * i),
                                _cmp("attributes.tier", "equals", "gold"),
                            ]
                        },
                        {"all": [_cmp("attributes.age", "less", young), _cmp("attributes.city", "in", CITIES[:3])]},
                        {
                            "all": [
                                _cmp("attributes.last_order", "more_than_days_ago", 90 * (i + 1)),
                                _cmp("consent.sms", "equals", True),
                            ]
                        },
                        {"all": [_cmp("attributes.birthday", "anniversary_today"), _cmp("kind", "equals", "customer")]},
                    ]
                },
                f'(attributes["spend"] >= {4000 + 200 * i} and attributes["tier"] == "gold")'
                + f' or (attributes["age"] < {young} and attributes["city"] in {CITIES[:3]!r})'.replace("'", '"')
                + f' or (attributes["last_order"] < "{_days_ago(90 * (i + 1))}" and consent["sms"]["granted"] == true)'
                + f' or (attributes["birthday"][5:] == "{TODAY[5:]}" and kind == "customer")',
                lambda d, sp=4000 + 200 * i, y=young, cut=lapsed_day: (
                    (d["attributes"]["spend"] >= sp and d["attributes"]["tier"] == "gold")
                    or (d["attributes"]["age"] < y and d["attributes"]["city"] in ("Prague", "Brno", "Ostrava"))
                    or (d["attributes"]["last_order"] < cut and d["consent"]["sms"]["granted"] is True)
                    or (d["attributes"]["birthday"][5:] == TODAY[5:] and d["kind"] == "customer")
                ),
            )
        )
        # T5: 10 conditions
        lo_age, hi_age = 25 + 3 * i, 60 - 2 * i
        found.append(
            (
                {
                    "all": [
                        _cmp("kind", "equals", "customer"),
                        _cmp("status", "equals", "Active"),
                        _cmp("attributes.age", "greater_or_equal", lo_age),
                        _cmp("attributes.age", "less_or_equal", hi_age),
                        _cmp("attributes.spend", "between", [100 * i, 3000 + 100 * i]),
                        _cmp("attributes.city", "not_in", CITIES[5:]),
                        _cmp("attributes.tags", "contains", TAGS[i]),
                        _cmp("created_at", "after", "2024-06-01"),
                        _cmp("consent.email", "equals", True),
                        _cmp("bounce.soft_count", "less", 5),
                    ]
                },
                'kind == "customer" and status == "Active"'
                + f' and attributes["age"] >= {lo_age} and attributes["age"] <= {hi_age}'
                + f' and attributes["spend"] >= {100 * i} and attributes["spend"] <= {3000 + 100 * i}'
                + f' and not attributes["city"] in {CITIES[5:]!r}'.replace("'", '"')
                + f' and "{TAGS[i]}" in attributes["tags"] and created_at[:10] > "2024-06-01"'
                + ' and consent["email"]["granted"] == true and bounce["soft_count"] < 5',
                lambda d, lo=lo_age, hi=hi_age, i=i, tag=TAGS[i]: (
                    d["kind"] == "customer"
                    and d["status"] == "Active"
                    and d["attributes"]["age"] >= lo
                    and d["attributes"]["age"] <= hi
                    and 100 * i <= d["attributes"]["spend"] <= 3000 + 100 * i
                    and d["attributes"]["city"] not in ("Olomouc", "Vienna", "Berlin")
                    and tag in d["attributes"]["tags"]
                    and d["created_at"][:10] > "2024-06-01"
                    and d["consent"]["email"]["granted"] is True
                    and d["bounce"]["soft_count"] < 5
                ),
            )
        )
    return found


def decoded(raw: dict[str, Any]) -> dict[str, Any]:
    """What the naive stack evaluates: pynamodb's decoded model values."""
    return ContactRecord.from_raw_data(raw).attribute_values


# --------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------


def _rate(evaluate: Callable[[], int], evaluations: int) -> tuple[float, int]:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        matched = evaluate()
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    return evaluations / elapsed, matched


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.rule_evaluation")
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--naive-contacts", type=int, default=10_000)
    parser.add_argument("--ceiling-contacts", type=int, default=200_000)
    args = parser.parse_args(argv)

    print(f"{BENCH}: generating {args.contacts:,} raw contact items ...", flush=True)
    items = make_items(args.contacts)
    defined = rules()
    conditions = [parse_rule(r).conditions for r, _, _ in defined]
    print(f"{BENCH}: {len(defined)} rules of {min(conditions)}-{max(conditions)} conditions")
    compiled = [compile_rule(parse_rule(r), NOW) for r, _, _ in defined]
    context = rule_engine.Context(default_value=None)
    engine_rules = [rule_engine.Rule(text, context=context) for _, text, _ in defined]
    hand = [h for _, _, h in defined]

    # The three must agree before their speeds mean anything.
    sample = items[:2000]
    sample_decoded = [decoded(i) for i in sample]
    disagreements = 0
    for f, e, h in zip(compiled, engine_rules, hand, strict=True):
        for raw, d in zip(sample, sample_decoded, strict=True):
            verdicts = {f(raw), bool(e.matches(d)), bool(h(d))}
            disagreements += len(verdicts) > 1
    matched_share = sum(f(raw) for f in compiled for raw in sample) / (len(sample) * len(compiled))
    print(
        f"{BENCH}: agreement check on {len(sample):,} contacts x {len(defined)} rules: "
        f"{disagreements} disagreements; {matched_share:.1%} match"
    )
    if disagreements:
        raise SystemExit("the evaluators disagree; the comparison would be meaningless")

    def herald() -> int:
        matched = 0
        for f in compiled:
            matched += sum(map(f, items))
        return matched

    # As the nightly pass runs them: every rule on a contact, then the next contact.
    batch = compile_rules([parse_rule(r) for r, _, _ in defined], NOW)
    assert all(batch(raw) == tuple(f(raw) for f in compiled) for raw in sample)

    def herald_all_at_once() -> int:
        return sum(sum(batch(raw)) for raw in items)

    naive_items = items[: args.naive_contacts]

    def naive() -> int:
        matched = 0
        for raw in naive_items:
            values = decoded(raw)
            for rule in engine_rules:
                matched += rule.matches(values)
        return matched

    ceiling_items = [decoded(raw) for raw in items[: args.ceiling_contacts]]

    def ceiling() -> int:
        matched = 0
        for h in hand:
            matched += sum(map(h, ceiling_items))
        return matched

    naive_rate, _ = _rate(naive, len(naive_items) * len(defined))
    ceiling_rate, _ = _rate(ceiling, len(ceiling_items) * len(defined))
    herald_rate, matched = _rate(herald, len(items) * len(defined))
    batch_rate, batch_matched = _rate(herald_all_at_once, len(items) * len(defined))
    assert batch_matched == matched
    print(f"{BENCH}: Herald evaluated {len(items) * len(defined):,} contact-rule pairs ({matched:,} matched), twice")
    figure(
        BENCH, "naive stack (pynamodb from_raw_data + rule-engine)", naive_rate, "evaluations/s/core", None, "baseline"
    )
    figure(
        BENCH,
        "hand-written predicate on decoded dicts",
        ceiling_rate,
        "evaluations/s/core",
        None,
        "the practical ceiling",
    )
    figure(BENCH, "Herald compiled, one rule at a time", herald_rate, "evaluations/s/core", None, ">= 1,000,000")
    figure(BENCH, "Herald compiled, 20 rules per contact", batch_rate, "evaluations/s/core", None, ">= 1,000,000")
    figure(
        BENCH, "Herald (20 rules per contact) vs naive stack", batch_rate, "evaluations/s/core", naive_rate, ">= 25x"
    )
    figure(BENCH, "Herald (one rule at a time) vs naive stack", herald_rate, "evaluations/s/core", naive_rate, ">= 25x")
    figure(
        BENCH,
        "Herald (20 rules per contact) vs hand-written",
        batch_rate,
        "evaluations/s/core",
        ceiling_rate,
        ">= 0.2x",
    )
    figure(
        BENCH, "Herald (one rule at a time) vs hand-written", herald_rate, "evaluations/s/core", ceiling_rate, ">= 0.2x"
    )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
