"""DynamoDB attribute values (``{"S": ...}``, ``{"N": ...}``, ...) to and from plain Python values.

Used where pynamodb's per-attribute objects would cost more than the data:
free-form maps on the contact (``JSONMapAttribute``) and the rule language's
reference interpreter, which reads whole raw items.
"""

from __future__ import annotations

from typing import Any


def to_attribute_value(value: Any) -> dict[str, Any]:
    """A JSON value as a DynamoDB attribute value (maps and lists nest)."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": repr(value) if isinstance(value, float) else str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, dict):
        return {"M": {str(k): to_attribute_value(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [to_attribute_value(v) for v in value]}
    raise TypeError(f"cannot store {type(value).__name__} in a JSON map")


def from_attribute_value(value: dict[str, Any]) -> Any:
    """A DynamoDB attribute value as plain Python (numbers int or float, sets as sets)."""
    ((kind, data),) = value.items()
    if kind == "S":
        return data
    if kind == "N":
        return _number(data)
    if kind == "BOOL":
        return bool(data)
    if kind == "NULL":
        return None
    if kind == "M":
        return {k: from_attribute_value(v) for k, v in data.items()}
    if kind == "L":
        return [from_attribute_value(v) for v in data]
    if kind == "SS" or kind == "BS":
        return set(data)
    if kind == "NS":
        return {_number(n) for n in data}
    if kind == "B":
        return data
    raise TypeError(f"unexpected attribute value type {kind}")


def decode_item(raw: dict[str, Any]) -> dict[str, Any]:
    """A raw DynamoDB item as plain values."""
    return {name: from_attribute_value(value) for name, value in raw.items()}


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)
