"""Shared benchmark helpers: the JSON figure line and a DynamoDB request counter."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.client import BaseClient

from local.runtime import Runtime, RuntimeOptions, free_port
from local.template import project_root

WRITE_OPERATIONS = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


def figure(bench: str, metric: str, value: float, unit: str, baseline: float | None, target: str) -> dict[str, Any]:
    """Print one figure: a readable line, then its JSON line."""
    ratio = (value / baseline) if baseline else None
    shown = f"{value:,.4f}" if value < 10 else f"{value:,.1f}"
    beside = f"  (baseline {baseline:,.4g}, ratio {ratio:,.3f})" if baseline is not None and ratio is not None else ""
    print(f"{bench}: {metric} = {shown} {unit}{beside}  target: {target}")
    record = {
        "bench": bench,
        "metric": metric,
        "value": round(value, 6),
        "unit": unit,
        "baseline": round(baseline, 6) if baseline is not None else None,
        "ratio": round(ratio, 6) if ratio is not None else None,
        "target": target,
    }
    print(json.dumps(record), flush=True)
    return record


class RequestCounter:
    """Counts AWS API calls made by botocore clients in this process, by service and operation."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def writes(self, service: str = "dynamodb") -> int:
        return sum(n for (s, op), n in self.calls.items() if s == service and op in WRITE_OPERATIONS)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()


@contextmanager
def embedded_runtime(time_scale: float = 1.0) -> Iterator[Runtime]:
    """The embedded AWS with the template provisioned, no pollers or schedules: benchmarks drive the work."""
    runtime = Runtime(
        RuntimeOptions(
            template_path=project_root() / "template.yaml",
            api_port=free_port(),
            start_pollers=False,
            start_schedules=False,
            time_scale=time_scale,
        )
    )
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.stop()


@contextmanager
def counting_requests() -> Iterator[RequestCounter]:
    """Patch botocore's single choke point for API calls (pynamodb and boto3 both pass through it)."""
    counter = RequestCounter()
    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def counted(self: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        service = self.meta.service_model.service_name
        with counter._lock:
            counter.calls[(service, operation_name)] += 1
        return original(self, operation_name, api_params)

    BaseClient._make_api_call = counted  # type: ignore[attr-defined]
    try:
        yield counter
    finally:
        BaseClient._make_api_call = original  # type: ignore[attr-defined]
