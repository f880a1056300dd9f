"""Keep the embedded AWS's DynamoDB data across restarts.

On a clean stop the runtime writes every table's items to a JSON file; on
start it loads them back. Queues, topics and running executions are not
kept: they are transient by nature, and the README says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3


def save(path: Path, tables: list[str], region: str) -> int:
    """Write every item of ``tables`` to ``path``; returns the item count."""
    client = boto3.client("dynamodb", region_name=region)
    data: dict[str, list[dict[str, Any]]] = {}
    count = 0
    for table in tables:
        items: list[dict[str, Any]] = []
        for page in client.get_paginator("scan").paginate(TableName=table):
            items.extend(page.get("Items", []))
        data[table] = items
        count += len(items)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data))
    temporary.replace(path)
    return count


def load(path: Path, region: str) -> int:
    """Restore items saved by :func:`save`; returns the item count."""
    if not path.exists():
        return 0
    data: dict[str, list[dict[str, Any]]] = json.loads(path.read_text())
    client = boto3.client("dynamodb", region_name=region)
    count = 0
    for table, items in data.items():
        for start in range(0, len(items), 25):
            requests = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
            pending: dict[str, Any] = {table: requests}
            while pending:
                pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
        count += len(items)
    return count
