"""Cursors, ETags, request normalisation, transaction packing, local routing: pure logic."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.api.app import as_json_request
from herald.api.responses import parse_if_match
from herald.cursor import decode_cursor, encode_cursor
from herald.errors import BadRequest
from herald.store.tables import ContactKeyRecord, GroupCounterRecord
from herald.store.transactions import (
    MAX_TRANSACTION_ITEMS,
    TOO_LARGE,
    CounterDelta,
    Operation,
    Unit,
    _merged_counters,
    _pack,
    commit_units,
)
from local.apigw import Route, http_response, proxy_event
from tests.harness import load_event

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_cursors_round_trip(state: dict[str, Any]) -> None:
    assert decode_cursor(encode_cursor(state)) == state


@pytest.mark.parametrize("garbage", ["%%%", "bm90IGpzb24", "WzEsMl0"])
def test_foreign_cursors_are_bad_requests(garbage: str) -> None:
    with pytest.raises(BadRequest):
        decode_cursor(garbage)


@pytest.mark.parametrize(("header", "version"), [('"3"', 3), ('W/"12"', 12), ("7", 7), ("*", None), (None, None)])
def test_if_match_forms(header: str | None, version: int | None) -> None:
    assert parse_if_match(header) == version


def test_if_match_garbage_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        parse_if_match('"three"')


def test_bodies_are_read_as_json_whatever_the_content_type() -> None:
    event = {"body": "{}", "headers": {"Content-Type": "application/x-www-form-urlencoded"}, "multiValueHeaders": {}}
    normalised = as_json_request(event)
    assert normalised["headers"] == {"content-type": "application/json"}
    assert as_json_request({"body": None, "headers": {}}) == {"body": None, "headers": {}}


def unit(tag: int, keys: list[str], groups: list[str] = (), delta: int = 1) -> Unit:  # type: ignore[assignment]
    operations = [Operation("put", ContactKeyRecord(key=k, contact_id=str(tag)), "key") for k in keys]

    def build(delta: int, guarded: bool, group: str = "") -> Operation:
        record = GroupCounterRecord(entity_type="group", entity_id=group)
        return Operation("update", record, "g" if guarded else "g-unguarded", versioned=False)

    counters = [CounterDelta(f"group:{g}", lambda d, guarded, g=g: build(d, guarded, g), delta) for g in groups]
    return Unit(tag, operations, counters)


@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from([f"k{i}" for i in range(30)]), min_size=1, max_size=4, unique=True),
            st.lists(st.sampled_from(["a", "b", "c"]), max_size=2, unique=True),
        ),
        max_size=120,
    )
)
def test_packing_respects_transaction_rules(specs: list[tuple[list[str], list[str]]]) -> None:
    units = [unit(i, keys, groups) for i, (keys, groups) in enumerate(specs)]
    chunks = _pack(list(enumerate(units)))
    # Every unit lands exactly once, in order
    assert [index for chunk in chunks for index, _ in chunk] == list(range(len(units)))
    for chunk in chunks:
        items = [op.item_key for _, u in chunk for op in u.operations]
        counters = {c.key for _, u in chunk for c in u.counters}
        # A transaction touches an item once, and holds at most 100 items
        assert len(items) == len(set(items))
        assert len(items) + len(counters) <= MAX_TRANSACTION_ITEMS


def test_counter_deltas_on_one_item_are_summed() -> None:
    merged = _merged_counters([unit(1, ["a"], ["vip"]), unit(2, ["b"], ["vip", "retail"])])
    assert sorted(op.model.entity_id for op in merged) == ["retail", "vip"]


def test_a_gain_keeps_its_guard_even_when_deltas_cancel_out() -> None:
    # One contact joins vip while another leaves it: the net is 0, but vip must still be Ready.
    [merged] = _merged_counters([unit(1, ["a"], ["vip"], delta=1), unit(2, ["b"], ["vip"], delta=-1)])
    assert merged.label == "g"
    [losing] = _merged_counters([unit(1, ["a"], ["vip"], delta=-1)])
    assert losing.label == "g-unguarded"


def test_a_change_larger_than_a_transaction_is_reported_not_sent() -> None:
    huge = unit(0, [f"k{i}" for i in range(MAX_TRANSACTION_ITEMS + 1)])
    report = commit_units([huge])
    assert report.requests == 0
    assert report.failures[0].labels == [TOO_LARGE]


def test_routes_prefer_the_most_specific_path() -> None:
    routes = sorted(
        [Route.of("/{proxy+}", "ANY", "Api"), Route.of("/unsubscribe/{token}", "POST", "Public")],
        key=Route.specificity,
        reverse=True,
    )
    assert routes[0].function == "Public"
    assert routes[0].pattern.match("/unsubscribe/abc")
    assert routes[1].pattern.match("/contacts/c1/groups/vip").groupdict() == {"proxy": "contacts/c1/groups/vip"}


def test_local_proxy_events_have_the_shape_of_the_sample_events() -> None:
    sample = load_event("api/get-contact")
    route = Route.of("/{proxy+}", "ANY", "ApiFunction")
    match = route.pattern.match("/contacts/cust-0001")
    assert match is not None
    local = proxy_event("GET", "/contacts/cust-0001?x=1", {"Accept": "application/json"}, b"", route, match)
    assert set(local) == set(sample)
    assert set(local["requestContext"]) <= set(sample["requestContext"])
    assert local["queryStringParameters"] == {"x": "1"}
    assert local["pathParameters"] == {"proxy": "contacts/cust-0001"}


def test_proxy_responses_becomehttp_responses() -> None:
    status, headers, body = http_response(
        {"statusCode": 201, "multiValueHeaders": {"ETag": ['"1"']}, "body": json.dumps({"ok": True})}
    )
    assert (status, headers["ETag"], json.loads(body)) == (201, '"1"', {"ok": True})
    assert http_response("not a proxy response")[0] == 502
