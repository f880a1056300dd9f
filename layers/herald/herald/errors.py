"""Domain errors. The API maps each to an HTTP status with a JSON body."""

from __future__ import annotations

import re
from typing import Any

_FIELD_IN_MESSAGE = re.compile(r"^([a-z_][a-z0-9_.]*): (.+)$", re.DOTALL)
# Validators report several problems joined by "; ", each starting with its field.
_NEXT_PROBLEM = re.compile(r"; (?=[a-z_][a-z0-9_.]*: )")


def split_field(message: str, default: str = "body") -> tuple[str, str]:
    """``"targeting: problem"`` → (``targeting``, ``problem``): cross-field checks name their field first."""
    match = _FIELD_IN_MESSAGE.match(message)
    return (match.group(1), match.group(2)) if match else (default, message)


def located_problems(field: str, message: str) -> list[dict[str, str]]:
    """A validator's message at ``field`` as ``{"field", "problem"}`` pairs, each naming its own field.

    A model validator names the field it means relative to its model
    (``steps.3.type: ...`` raised by the ``graph`` model), and may report
    several problems at once; each becomes ``graph.steps.3.type`` and so on.
    """
    located = []
    for part in _NEXT_PROBLEM.split(message):
        inner, problem = split_field(part, default="")
        if not inner:
            located.append({"field": field, "problem": part})
        elif field in ("body", "row", ""):
            located.append({"field": inner, "problem": problem})
        else:
            located.append({"field": f"{field}.{inner}", "problem": problem})
    return located


class HeraldError(Exception):
    """Base of every error Herald raises on purpose."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        """The JSON body the API returns for this error."""
        return {"error": self.code, "message": self.message, **self.details}


class BadRequest(HeraldError):
    """The request cannot be read at all (malformed JSON, bad cursor)."""

    status = 400
    code = "bad_request"


class Forbidden(HeraldError):
    """The request carries a credential (a signed token) that is forged, tampered with or expired."""

    status = 403
    code = "forbidden"


class NotFound(HeraldError):
    """An id names nothing."""

    status = 404
    code = "not_found"


class Conflict(HeraldError):
    """The request conflicts with the current state (stale version, in use, duplicate)."""

    status = 409
    code = "conflict"


class PayloadTooLarge(HeraldError):
    """Too many items or bytes in one request."""

    status = 413
    code = "payload_too_large"


class ValidationFailed(HeraldError):
    """Field-level validation failed; ``errors`` names each field and problem."""

    status = 422
    code = "validation_failed"

    def __init__(self, errors: list[dict[str, str]]) -> None:
        summary = "; ".join(f"{e['field']}: {e['problem']}" for e in errors)
        super().__init__(summary or "invalid request", errors=errors)
        self.errors = errors

    @classmethod
    def one(cls, field: str, problem: str) -> ValidationFailed:
        """A validation failure for a single field."""
        return cls([{"field": field, "problem": problem}])


class StaleVersion(Conflict):
    """A conditional write lost against a newer version of the record."""

    code = "stale_version"

    def __init__(self, entity: str, entity_id: str, current_version: int | None) -> None:
        super().__init__(
            f"{entity} {entity_id} was changed by someone else; current version is {current_version}",
            entity=entity,
            id=entity_id,
            current_version=current_version,
        )
        self.current_version = current_version
