"""Cohorts: the contacts who walk one path of a flow together, in one execution.

Contacts who enter a flow in the same window (one tick, ``COHORT_WINDOW``
seconds) join one cohort; the tick starts one Step Functions execution per
cohort once its window has closed. A CONDITION that sends members both ways
continues the ``yes`` members in the running execution and starts one child
execution for the ``no`` members. Execution names are the cohort ids, so a
retried start finds the execution already there instead of starting a second.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pynamodb.exceptions import PutError

from herald.clock import to_iso
from herald.store import flows as store
from herald.store.tables import CohortRecord, PendingCohortRecord
from herald.store.transactions import is_condition_failure

# Seconds of one entry window; the embedded runtime shortens it with the time scale.
DEFAULT_WINDOW_SECONDS = 60
# A cohort starts this long after its window closed: longer than an entry invocation
# may run (FlowEntryFunction's timeout), so no member is written after its execution began.
START_GRACE_SECONDS = 90


def window_seconds() -> int:
    return max(1, int(float(os.environ.get("HERALD_FLOW_COHORT_SECONDS") or DEFAULT_WINDOW_SECONDS)))


def grace_seconds() -> float:
    return float(os.environ.get("HERALD_FLOW_START_GRACE_SECONDS") or START_GRACE_SECONDS)


def window_of(now: datetime) -> datetime:
    """The start of the entry window holding ``now``."""
    size = window_seconds()
    epoch = int(now.astimezone(UTC).timestamp())
    return datetime.fromtimestamp(epoch - epoch % size, UTC)


def entry_cohort(flow_id: str, version: int, now: datetime) -> tuple[str, str]:
    """``(cohort id, pending marker sort key)`` for contacts entering at ``now``."""
    start = window_of(now)
    end = start + timedelta(seconds=window_seconds())
    cohort_id = f"{flow_id}-v{version}-{start:%Y%m%d%H%M%S}"
    return cohort_id, f"{to_iso(end)}#{cohort_id}"


def child_cohort(flow_id: str, parent: str, seq: int, branch: str) -> str:
    """The cohort of one branch of a split: deterministic, so a retried split reuses it."""
    digest = hashlib.sha256(f"{parent}|{seq}|{branch}".encode()).hexdigest()[:20]
    return f"{flow_id}-{digest}"


def mark_pending(flow_id: str, version: int, marker: str, cohort_id: str) -> None:
    """Note that a cohort is filling (idempotent)."""
    PendingCohortRecord(store.PENDING, marker, flow_id=flow_id, cohort_id=cohort_id, flow_version=version).save()


@dataclass
class Starter:
    """Starts executions of the flow state machine."""

    client: Any
    state_machine_arn: str

    def start(self, cohort_id: str, state: dict[str, Any]) -> str:
        """Start the cohort's execution (named by the cohort); an existing one is left running."""
        try:
            answer = self.client.start_execution(
                stateMachineArn=self.state_machine_arn, name=cohort_id, input=json.dumps(state)
            )
            return str(answer["executionArn"])
        except self.client.exceptions.ExecutionAlreadyExists:
            arn = self.state_machine_arn.replace(":stateMachine:", ":execution:")
            return f"{arn}:{cohort_id}"


def initial_state(flow_id: str, version: int, cohort_id: str, root: str, step_id: str, seq: int) -> dict[str, Any]:
    """The execution input: where the cohort stands in its flow."""
    return {
        "flow_id": flow_id,
        "version": version,
        "cohort_id": cohort_id,
        "root": root,
        "step_id": step_id,
        "seq": seq,
        "cursor": None,
        "page": 0,
        "arrived_at": None,
        "tally": {},
        "calls": 0,
        "generation": 0,
        "action": "start",
    }


def start_due(now: datetime, starter: Starter) -> list[str]:
    """Start every cohort whose entry window closed at least the grace period ago; returns their ids.

    The marker stays until the execution exists, so a tick that crashes midway
    leaves it for the next tick, whose start finds the execution by name.
    """
    cutoff = to_iso(now - timedelta(seconds=grace_seconds()))
    started: list[str] = []
    for marker in PendingCohortRecord.query(store.PENDING, PendingCohortRecord.entity_id <= cutoff + "~"):
        end = marker.entity_id.split("#", 1)[0]
        if end > cutoff:
            continue
        version = store.get_version(marker.flow_id, int(marker.flow_version))
        # A deleted flow's cohort still starts: its execution closes the members' runs.
        start_step = str(version.spec["graph"]["start"]) if version is not None else ""
        _cohort_record(marker.flow_id, marker.cohort_id, int(marker.flow_version), marker.cohort_id, now)
        state = initial_state(
            marker.flow_id, int(marker.flow_version), marker.cohort_id, marker.cohort_id, start_step, 1
        )
        arn = starter.start(marker.cohort_id, state)
        CohortRecord(store.cohorts_key(marker.flow_id), marker.cohort_id).update(
            actions=[CohortRecord.state.set("running"), CohortRecord.execution_arn.set(arn)]
        )
        marker.delete()
        started.append(marker.cohort_id)
    return started


def start_child(starter: Starter, state: dict[str, Any], cohort_id: str, step_id: str, now: datetime) -> str:
    """Start the execution of a split's second branch at ``step_id``."""
    _cohort_record(state["flow_id"], cohort_id, int(state["version"]), state["root"], now)
    child = initial_state(
        state["flow_id"], int(state["version"]), cohort_id, state["root"], step_id, int(state["seq"]) + 1
    )
    arn = starter.start(cohort_id, child)
    CohortRecord(store.cohorts_key(state["flow_id"]), cohort_id).update(
        actions=[CohortRecord.state.set("running"), CohortRecord.execution_arn.set(arn)]
    )
    return arn


def end(flow_id: str, cohort_id: str, now: datetime) -> None:
    CohortRecord(store.cohorts_key(flow_id), cohort_id).update(
        actions=[CohortRecord.state.set("ended"), CohortRecord.ended_at.set(to_iso(now))]
    )


def _cohort_record(flow_id: str, cohort_id: str, version: int, root: str, now: datetime) -> None:
    record = CohortRecord(
        store.cohorts_key(flow_id),
        cohort_id,
        state="starting",
        flow_version=version,
        root=root,
        created_at=to_iso(now),
        started_at=to_iso(now),
    )
    try:
        record.save(condition=CohortRecord.entity_id.does_not_exist())
    except PutError as exc:
        if not is_condition_failure(exc):
            raise  # an existing record is what a retried start finds
