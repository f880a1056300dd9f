"""Free-form maps (attributes, consent, bounce) survive a store round trip exactly."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.store.tables import JSONMapAttribute

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=10), values, max_size=6))
def test_round_trip(data: dict[str, Any]) -> None:
    attribute = JSONMapAttribute()
    assert attribute.deserialize(attribute.serialize(data)) == data


def test_numbers_keep_their_kind() -> None:
    attribute = JSONMapAttribute()
    stored = attribute.serialize({"count": 3, "ltv": 120.5, "big": 12345678901234567890123})
    assert stored == {"count": {"N": "3"}, "ltv": {"N": "120.5"}, "big": {"N": "12345678901234567890123"}}
    back = attribute.deserialize(stored)
    assert back == {"count": 3, "ltv": 120.5, "big": 12345678901234567890123}
    assert isinstance(back["count"], int)
    assert isinstance(back["ltv"], float)


def test_unstorable_values_are_refused() -> None:
    with pytest.raises(TypeError, match="set"):
        JSONMapAttribute().serialize({"tags": {"a", "b"}})
