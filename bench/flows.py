"""Campaign flows on Step Functions (issue 6): executions, transitions and Lambda calls per contact.

A cohort of contacts (100,000 by default) enters, in one window, a flow of
DELAY 2d → EMAIL → CONDITION (opened?) → DELAY 7d → EMAIL (yes) or SMS (no),
and runs to the end on the embedded runtime: the real ``flow_run`` machine in
moto's interpreter, the real ``FlowStepFunction`` handler, delays shortened by
the time scale (a week in well under a second). Every third contact opened.

Beside it, from the same machine definition, the per-contact-execution
baseline: each contact of a few sample contacts (both paths) walks the flow in
an execution of its own; its transitions per contact are what one execution
per contact would cost for the whole cohort.

Figures: executions per cohort path (target ≤ 10), state transitions per
contact per step (target ≤ 0.01), flow-step Lambda invocations per contact per
step, and delivery messages queued per contact.

    make bench BENCH=flows    (or: python -m bench flows --contacts N)
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any

import boto3

from bench.common import embedded_runtime, figure
from herald import clock
from herald.config import TableNames
from herald.flows import cohorts, entry
from herald.store import flows as flow_store
from herald.store.tables import ContactRecord, FlowRecord, FlowVersionRecord, bind_tables
from local.provision import table_names_env
from local.runtime import Runtime

BENCH = "flows"
FLOW = "bench-flow"
BASELINE_FLOW = "bench-flow-baseline"
SEGMENT = "bench"
OPENED_EVERY = 3  # every third contact opened the welcome email
STEPS_PER_PATH = 5  # delay, email, condition, delay, email|sms
PATHS = 2
SCALE = 1_000_000.0  # a week in 0.6 s

GRAPH = {
    "start": "wait2",
    "steps": [
        {"id": "wait2", "type": "delay", "duration": {"amount": 2, "unit": "days"}, "next": "welcome"},
        {
            "id": "welcome",
            "type": "email",
            "subject": "Welcome",
            "body": "Hello {{ contact.first_name }}",
            "next": "opened",
        },
        {
            "id": "opened",
            "type": "condition",
            "rule": {"campaign": "self", "response": "opened"},
            "yes": "wait7_yes",
            "no": "wait7_no",
        },
        {"id": "wait7_yes", "type": "delay", "duration": {"amount": 7, "unit": "days"}, "next": "offer"},
        {"id": "offer", "type": "email", "subject": "An offer", "body": "For you"},
        {"id": "wait7_no", "type": "delay", "duration": {"amount": 7, "unit": "days"}, "next": "nudge"},
        {"id": "nudge", "type": "sms", "text": "Did you see our email?"},
    ],
}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.flows")
    parser.add_argument("--contacts", type=int, default=100_000, help="contacts in the cohort")
    parser.add_argument("--baseline-contacts", type=int, default=4, help="sample contacts run one per execution")
    args = parser.parse_args(argv)
    with embedded_runtime(time_scale=SCALE) as runtime:
        bind_tables(TableNames.from_env(table_names_env(runtime.template)))
        _measure(runtime, args.contacts, args.baseline_contacts)


def _measure(runtime: Runtime, size: int, sample: int) -> None:
    calls = _count_invocations(runtime)
    started = time.perf_counter()
    cohort_ids = _load_contacts("c", size)
    baseline_ids = _load_contacts("b", sample)
    flow = _save_flow(FLOW)
    baseline_flow = _save_flow(BASELINE_FLOW)
    loaded = time.perf_counter()
    print(f"{BENCH}: {size:,} contacts loaded in {loaded - started:,.1f} s")

    entry.admit(flow, cohort_ids, clock.now())
    for contact_id in baseline_ids:  # one entry window each: one execution per contact
        _next_window()
        entry.admit(baseline_flow, [contact_id], clock.now())
    _next_window()
    admitted = time.perf_counter()
    print(f"{BENCH}: admitted in {admitted - loaded:,.1f} s")

    calls.clear()
    starter = cohorts.Starter(boto3.client("stepfunctions"), _state_machine_arn())
    cohorts.start_due(clock.now(), starter)
    executions = _wait_for_executions()
    ran = time.perf_counter()
    print(f"{BENCH}: the flow ran in {ran - admitted:,.1f} s")

    herald = [e for e in executions if e["name"].startswith(FLOW + "-") and BASELINE_FLOW not in e["name"]]
    baseline = [e for e in executions if e["name"].startswith(BASELINE_FLOW)]
    failed = [e for e in executions if e["status"] != "SUCCEEDED"]
    if failed:
        raise SystemExit(f"{BENCH}: {len(failed)} executions did not succeed: {failed[:2]}")
    herald_transitions = sum(_transitions(e["executionArn"]) for e in herald)
    per_contact_baseline = sum(_transitions(e["executionArn"]) for e in baseline) / len(baseline)
    steps = STEPS_PER_PATH
    task_calls = sum(n for name, n in calls.items() if "flow-step" in name or name == "FlowStepFunction")
    herald_calls = task_calls - sum(_task_states(e["executionArn"]) for e in baseline)
    _report(size, len(herald), herald_transitions, per_contact_baseline, steps, herald_calls, sample)


def _report(
    size: int, executions: int, transitions: int, baseline_per_contact: float, steps: int, task_calls: int, sample: int
) -> None:
    figure(BENCH, "executions per cohort path", executions / PATHS, "executions", float(size) / PATHS, "≤ 10")
    figure(
        BENCH,
        "state transitions per contact per step",
        transitions / size / steps,
        "transitions",
        baseline_per_contact / steps,
        "≤ 0.01",
    )
    figure(
        BENCH,
        "flow-step Lambda invocations per contact per step",
        task_calls / size / steps,
        "invocations",
        1.0,  # the baseline invokes the step task once per contact and step
        "—",
    )
    print(f"{BENCH}: baseline = {sample} sample contacts, one execution each", end=" ")
    print(f"({baseline_per_contact:.1f} transitions per contact)")


# -- setup ------------------------------------------------------------------------


def _load_contacts(prefix: str, count: int) -> list[str]:
    now = clock.now_iso()
    ids = [f"{prefix}{i:07d}" for i in range(count)]
    with ContactRecord.batch_write() as batch:
        for index, contact_id in enumerate(ids):
            opened = {FLOW, BASELINE_FLOW} if index % OPENED_EVERY == 0 else None
            batch.save(
                ContactRecord(
                    contact_id,
                    kind="customer",
                    status="active",
                    email=f"{contact_id}@example.org",
                    phone=f"+42060{index:07d}",
                    first_name="Bench",
                    consent={c: {"granted": True, "source": "bench"} for c in ("email", "sms")},
                    time_zone="UTC",
                    created_at=now,
                    updated_at=now,
                    kind_status_shard=f"customer#active#{index % 16}",
                    segment_ids={SEGMENT},
                    campaigns_opened=opened,
                )
            )
    return ids


def _save_flow(flow_id: str) -> FlowRecord:
    spec = {"settings": {"name": flow_id, "segments": [SEGMENT], "time_zone": "UTC"}, "graph": GRAPH}
    now = clock.now_iso()
    FlowVersionRecord(flow_store.version_key(flow_id), flow_store.version_id(1), spec=spec, created_at=now).save()
    record = FlowRecord(
        "flow",
        flow_id,
        name=flow_id,
        status="active",
        current_version=1,
        spec=spec,
        live_type="flow",
        created_at=now,
        updated_at=now,
    )
    record.save()
    return record


def _next_window() -> None:
    time.sleep(cohorts.window_seconds() + 0.05)


def _count_invocations(runtime: Runtime) -> Counter[str]:
    """Count the functions the state machine invokes (the in-process Lambda), by name or ARN."""
    calls: Counter[str] = Counter()
    original = runtime.host.invoke

    def counted(name: str, event: dict[str, Any]) -> Any:
        calls[name] += 1
        return original(name, event)

    runtime.host.invoke = counted  # type: ignore[method-assign]
    return calls


def _state_machine_arn() -> str:
    sfn = boto3.client("stepfunctions")
    return str(
        next(m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"] if "flow-run" in m["name"])
    )


def _wait_for_executions(timeout: float = 3600.0) -> list[dict[str, Any]]:
    sfn = boto3.client("stepfunctions")
    arn = _state_machine_arn()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [
            e for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=arn) for e in page["executions"]
        ]
        if found and all(e["status"] != "RUNNING" for e in found):
            return [dict(e) for e in found]
        time.sleep(0.5)
    raise SystemExit(f"{BENCH}: executions still running after {timeout:.0f} s")


def _task_states(execution_arn: str) -> int:
    """Task states one execution entered (each a Lambda invocation, retries aside)."""
    sfn = boto3.client("stepfunctions")
    pages = sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn)
    return sum(1 for page in pages for event in page["events"] if event["type"] == "TaskStateEntered")


def _transitions(execution_arn: str) -> int:
    """State transitions of one execution: the states it entered (what Step Functions bills)."""
    sfn = boto3.client("stepfunctions")
    entered = 0
    for page in sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn):
        entered += sum(1 for event in page["events"] if event["type"].endswith("StateEntered"))
    return entered
