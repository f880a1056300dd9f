"""Contact-policy operations: CRUD in the catalog, and the policies the engine applies.

Policies live in the Catalog table under ``entity_type = policy``; every
policy is read with one Query of that partition. The campaign tick and the
sender call :func:`load_policies` on every run, so the result is cached per
process for :data:`CACHE_SECONDS` (edits made through this process drop the
cache at once; other processes see them within the minute).
"""

from __future__ import annotations

import time as monotonic_time
import uuid
from dataclasses import dataclass
from datetime import time
from typing import Any

from pynamodb.connection.table import TableConnection
from pynamodb.exceptions import DeleteError, PutError

from herald import clock
from herald.contacts.model import is_valid_id
from herald.cursor import decode_cursor, encode_cursor
from herald.errors import NotFound, StaleVersion
from herald.policy.engine import Cap, ContactPolicy, QuietHours
from herald.policy.model import CapOut, Policy, PolicyIn, PolicyPatch, QuietHoursOut
from herald.store import contacts as contact_store
from herald.store.tables import PolicyRecord
from herald.store.transactions import is_condition_failure, save_new

ENTITY_TYPE = "policy"
CACHE_SECONDS = 60.0
LISTING = "contact-policies"


def create(data: PolicyIn) -> Policy:
    """Create a policy; raises ``Conflict`` if the id is taken."""
    now = clock.now_iso()
    record = PolicyRecord(
        entity_type=ENTITY_TYPE,
        entity_id=data.policy_id or uuid.uuid4().hex[:16],
        name=data.name,
        description=data.description,
        scope=data.scope,
        spec=_spec(data.model_dump(mode="json")),
        created_at=now,
        updated_at=now,
    )
    save_new(record, "contact policy")
    clear_cache()
    return to_policy(record)


def get(policy_id: str) -> Policy:
    """One policy; raises ``NotFound``."""
    return to_policy(_record(policy_id))


def list_policies(cursor: str | None = None, limit: int = 50) -> tuple[list[Policy], str | None]:
    """Policies in id order (one catalog partition: a Query, never a scan)."""

    def page(last_key: dict[str, Any] | None, size: int) -> Any:
        return PolicyRecord.query(ENTITY_TYPE, limit=size, last_evaluated_key=last_key)

    records, state = contact_store.query_pages([page], decode_cursor(cursor, LISTING), max(1, min(limit, 100)))
    return [to_policy(r) for r in records], encode_cursor(state, LISTING)


def update(policy_id: str, patch: PolicyPatch, if_match: int | None = None) -> Policy:
    """Change a policy (409 on a stale ``If-Match`` or a concurrent edit)."""
    record = _record(policy_id)
    if if_match is not None and if_match != record.version:
        raise StaleVersion("contact policy", policy_id, int(record.version or 0))
    fields = patch.model_fields_set
    changes = patch.model_dump(mode="json", include=fields)
    if changes.get("name") is not None:
        record.name = changes["name"]
    if "description" in fields:
        record.description = changes["description"]
    if changes.get("scope") is not None:
        record.scope = changes["scope"]
    spec = dict(record.spec)
    for key in ("caps", "expire_after_hours"):
        if changes.get(key) is not None:
            spec[key] = changes[key]
    if "quiet_hours" in fields:
        spec["quiet_hours"] = changes["quiet_hours"]
    record.spec = _spec(spec)
    record.updated_at = clock.now_iso()
    try:
        record.save()  # conditional on the version read; pynamodb adds it
    except PutError as exc:
        if is_condition_failure(exc):
            latest = _find(policy_id)
            if latest is None:
                raise NotFound(f"contact policy {policy_id} does not exist", id=policy_id) from exc
            raise StaleVersion("contact policy", policy_id, int(latest.version or 0)) from exc
        raise
    clear_cache()
    return to_policy(record)


def delete(policy_id: str, if_match: int | None = None) -> None:
    """Delete a policy; sends already deferred under it are decided again without it."""
    record = _record(policy_id)
    if if_match is not None and if_match != record.version:
        raise StaleVersion("contact policy", policy_id, int(record.version or 0))
    try:
        record.delete()  # conditional on the version read
    except DeleteError as exc:
        if is_condition_failure(exc):
            latest = _find(policy_id)
            raise StaleVersion("contact policy", policy_id, int(latest.version or 0) if latest else None) from exc
        raise
    clear_cache()


# --------------------------------------------------------------------------
# What the engine applies
# --------------------------------------------------------------------------


@dataclass
class _Cache:
    connection: TableConnection | None
    loaded_at: float
    policies: list[ContactPolicy]


_cache: list[_Cache] = []


def load_policies() -> list[ContactPolicy]:
    """Every contact policy as the engine reads it (one Query; cached per process for a minute).

    The cache also ends when the tables are bound again (a new connection),
    so a process pointed at other tables never serves another table's policies.
    """
    if _cache:
        entry = _cache[0]
        fresh = monotonic_time.monotonic() - entry.loaded_at < CACHE_SECONDS
        if fresh and entry.connection is not None and entry.connection is PolicyRecord._connection:
            return list(entry.policies)
    policies = [to_engine(record) for record in PolicyRecord.query(ENTITY_TYPE)]
    _cache[:] = [_Cache(PolicyRecord._connection, monotonic_time.monotonic(), policies)]
    return list(policies)


def clear_cache() -> None:
    """Forget the cached policies (after an edit, and between tests)."""
    _cache.clear()


def to_engine(record: PolicyRecord | Policy) -> ContactPolicy:
    """A stored policy (record or API model) as the engine's ``ContactPolicy``."""
    policy = to_policy(record) if isinstance(record, PolicyRecord) else record
    quiet = policy.quiet_hours
    return ContactPolicy(
        policy_id=policy.policy_id,
        name=policy.name,
        scope=policy.scope,
        caps=tuple(Cap(c.channel, c.max_messages, c.window_hours) for c in policy.caps),
        quiet_hours=QuietHours(_wall(quiet.start), _wall(quiet.end)) if quiet else None,
        expire_after_hours=policy.expire_after_hours,
    )


def to_policy(record: PolicyRecord) -> Policy:
    spec = record.spec or {}
    quiet = spec.get("quiet_hours")
    return Policy(
        policy_id=record.entity_id,
        name=record.name,
        description=record.description,
        scope=record.scope,
        caps=[CapOut(**cap) for cap in spec.get("caps") or []],
        quiet_hours=QuietHoursOut(**quiet) if quiet else None,
        expire_after_hours=int(spec.get("expire_after_hours") or 72),
        created_at=record.created_at,
        updated_at=record.updated_at,
        version=int(record.version or 0),
    )


def _spec(data: dict[str, Any]) -> dict[str, Any]:
    """The stored ``spec`` map: caps, quiet hours (or None) and expiry."""
    return {
        "caps": list(data.get("caps") or []),
        "quiet_hours": data.get("quiet_hours"),
        "expire_after_hours": data["expire_after_hours"],
    }


def _wall(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def _find(policy_id: str) -> PolicyRecord | None:
    try:
        return PolicyRecord.get(ENTITY_TYPE, policy_id, consistent_read=True)
    except PolicyRecord.DoesNotExist:
        return None


def _record(policy_id: str) -> PolicyRecord:
    record = _find(policy_id) if is_valid_id(policy_id) else None
    if record is None:
        raise NotFound(f"contact policy {policy_id} does not exist", id=policy_id)
    return record
