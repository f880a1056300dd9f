"""Fire functions when their template events do: SQS queues, DynamoDB streams, schedules.

The SQS poller behaves like Lambda's: it receives up to ``BatchSize``
messages, invokes the function with an SQS event, deletes the messages that
succeeded, and leaves failed ones to reappear after the visibility timeout.
With ``ReportBatchItemFailures`` only the items the function lists are
failed; without it, an exception fails the whole batch. After
``maxReceiveCount`` receives, SQS's redrive policy moves a message to its DLQ.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import boto3

from local.functions import FunctionError, FunctionHost
from local.template import Template


@dataclass
class SqsSource:
    """One function's SQS event source."""

    function: str
    queue_url: str
    queue_arn: str
    batch_size: int
    window_s: float
    report_failures: bool


def sqs_sources(template: Template, queue_urls: dict[str, str]) -> list[SqsSource]:
    """The SQS event sources of the template's functions."""
    arn_to_logical = {template.attribute(lid, "Arn"): lid for lid in template.of_type("AWS::SQS::Queue")}
    sources = []
    for function in template.functions():
        for event in function.events:
            if event.type != "SQS":
                continue
            arn = str(event.properties["Queue"])
            logical_id = arn_to_logical[arn]
            sources.append(
                SqsSource(
                    function=function.logical_id,
                    queue_url=queue_urls[logical_id],
                    queue_arn=arn,
                    batch_size=int(event.properties.get("BatchSize", 10)),
                    window_s=float(event.properties.get("MaximumBatchingWindowInSeconds", 0)),
                    report_failures="ReportBatchItemFailures" in event.properties.get("FunctionResponseTypes", []),
                )
            )
    return sources


def sqs_event(messages: list[dict[str, Any]], source: SqsSource, region: str) -> dict[str, Any]:
    """The event Lambda's SQS poller sends for a batch of messages."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {
                    name: {
                        "stringValue": value.get("StringValue"),
                        "binaryValue": value.get("BinaryValue"),
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": value["DataType"],
                    }
                    for name, value in (m.get("MessageAttributes") or {}).items()
                },
                "md5OfBody": m.get("MD5OfBody") or hashlib.md5(m["Body"].encode()).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": source.queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


class Poller(ABC):
    """A background thread calling ``poll_once`` until stopped, as Lambda's pollers run."""

    kind = "poller"

    def __init__(self, function: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{self.kind}-{function}", daemon=True)
        self._function = function

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @abstractmethod
    def poll_once(self) -> int:
        """Deliver what is waiting now; returns how many messages or records were read."""

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.poll_once() == 0:
                    self._stop.wait(0.2)
            except Exception as exc:  # keep polling, as Lambda's poller does
                print(f"  {self.kind} poller {self._function}: {exc}", flush=True)
                self._stop.wait(1.0)


class SqsPoller(Poller):
    """Polls one queue and invokes one function, until stopped."""

    kind = "sqs"

    def __init__(self, source: SqsSource, host: FunctionHost, region: str) -> None:
        super().__init__(source.function)
        self.source = source
        self.host = host
        self.region = region
        self.sqs = boto3.client("sqs", region_name=region)
        self.batches = 0

    def poll_once(self) -> int:
        """Receive one batch and process it; returns the number of messages."""
        messages = self._receive()
        if not messages:
            return 0
        self.batches += 1
        event = sqs_event(messages, self.source, self.region)
        try:
            response = self.host.invoke(self.source.function, event)
        except FunctionError:
            return len(messages)  # whole batch fails: visibility timeout brings it back
        failed = set()
        if self.source.report_failures and isinstance(response, dict):
            failed = {item["itemIdentifier"] for item in response.get("batchItemFailures") or []}
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            entries: list[Any] = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start : start + 10])
            ]
            self.sqs.delete_message_batch(QueueUrl=self.source.queue_url, Entries=entries)
        return len(messages)

    def _receive(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.source.window_s
        while len(messages) < self.source.batch_size:
            response = self.sqs.receive_message(
                QueueUrl=self.source.queue_url,
                MaxNumberOfMessages=min(10, self.source.batch_size - len(messages)),
                WaitTimeSeconds=0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            batch: list[Any] = list(response.get("Messages", []))
            messages.extend(batch)
            if not batch and time.monotonic() >= deadline:
                break
            if not batch:
                time.sleep(0.05)
        return messages


# --------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------

_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
_MONTHS = {
    month: number
    for number, month in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], start=1
    )
}


def next_fire(expression: str, after: datetime, zone: str = "UTC") -> datetime:
    """When a schedule expression fires next after ``after``; cron fields are read in ``zone``."""
    if zone != "UTC" and after.tzinfo is not None:
        local = after.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
        return next_fire(expression, local).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    rate = _RATE.match(expression.strip())
    if rate:
        seconds = int(rate.group(1)) * _UNITS[rate.group(2).rstrip("s")]
        return after + timedelta(seconds=seconds)
    cron = re.match(r"^cron\((.+)\)$", expression.strip())
    if not cron:
        raise ValueError(f"unsupported schedule expression {expression!r}")
    fields = cron.group(1).split()
    if len(fields) != 6:
        raise ValueError(f"cron needs 6 fields: {expression!r}")
    minutes, hours, dom, months, dow, years = fields
    moment = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(366 * 24 * 60):
        if (
            _matches(minutes, moment.minute, 0, 59, {})
            and _matches(hours, moment.hour, 0, 23, {})
            and _matches(months, moment.month, 1, 12, _MONTHS)
            and _matches(years, moment.year, 1970, 2199, {})
            and _day_matches(dom, dow, moment)
        ):
            return moment
        moment += timedelta(minutes=1)
    raise ValueError(f"schedule {expression!r} never fires within a year")


def _day_matches(dom: str, dow: str, moment: datetime) -> bool:
    weekday = (moment.isoweekday() % 7) + 1  # EventBridge: SUN=1 .. SAT=7
    dom_ok = dom == "?" or _matches(dom, moment.day, 1, 31, {})
    dow_ok = dow == "?" or _matches(dow, weekday, 1, 7, _DAYS)
    return dom_ok and dow_ok


def _matches(field: str, value: int, low: int, high: int, names: dict[str, int]) -> bool:
    for part in field.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = int(step_text)
        if part in ("*", "?"):
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = _value(a, names), _value(b, names)
        else:
            start = _value(part, names)
            end = high if step > 1 else start
        if start <= value <= end and (value - start) % step == 0:
            return True
    return False


def _value(text: str, names: dict[str, int]) -> int:
    return names[text.upper()] if text.upper() in names else int(text)


def scheduled_event(rule_arn: str, region: str, account: str, moment: datetime) -> dict[str, Any]:
    """The event EventBridge sends a scheduled target."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


@dataclass
class Schedule:
    """One function's schedule."""

    function: str
    rule: str
    expression: str
    enabled: bool
    payload: Any | None
    zone: str = "UTC"


def schedules_of(template: Template) -> list[Schedule]:
    """The ``Schedule``/``ScheduleV2`` events of the template's functions."""
    found = []
    for function in template.functions():
        for event in function.events:
            if event.type == "Schedule":
                expression = event.properties["Schedule"]
            elif event.type == "ScheduleV2":
                expression = event.properties["ScheduleExpression"]
            else:
                continue
            enabled = event.properties.get("Enabled", event.properties.get("State", "ENABLED") != "DISABLED")
            payload = json.loads(event.properties["Input"]) if "Input" in event.properties else None
            zone = str(event.properties.get("ScheduleExpressionTimezone") or "UTC")
            rule = f"{function.logical_id}-{event.name}"
            found.append(Schedule(function.logical_id, rule, expression, bool(enabled), payload, zone))
    return found


class Scheduler:
    """Fires scheduled functions at their rate or cron times, until stopped."""

    def __init__(self, schedules: list[Schedule], host: FunctionHost, template: Template) -> None:
        self.schedules = [s for s in schedules if s.enabled]
        self.host = host
        self.template = template
        self.fired: dict[str, int] = {s.rule: 0 for s in self.schedules}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)

    def start(self) -> None:
        if self.schedules:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def fire(self, schedule: Schedule, moment: datetime) -> Any:
        """Invoke a schedule's function now, as EventBridge would."""
        arn = f"arn:aws:events:{self.template.region}:{self.template.account}:rule/{schedule.rule}"
        event = (
            schedule.payload
            if schedule.payload is not None
            else scheduled_event(arn, self.template.region, self.template.account, moment)
        )
        self.fired[schedule.rule] += 1
        return self.host.invoke(schedule.function, event)

    def _run(self) -> None:
        now = datetime.now(UTC)
        due = {s.rule: next_fire(s.expression, now, s.zone) for s in self.schedules}
        while not self._stop.is_set():
            now = datetime.now(UTC)
            for schedule in self.schedules:
                if now >= due[schedule.rule]:
                    try:
                        self.fire(schedule, now)
                    except FunctionError as exc:
                        print(f"  schedule {schedule.rule} failed: {exc}", flush=True)
                    due[schedule.rule] = next_fire(schedule.expression, now, schedule.zone)
            self._stop.wait(0.5)


# --------------------------------------------------------------------------
# DynamoDB streams
# --------------------------------------------------------------------------


@dataclass
class StreamSource:
    """One function's DynamoDB stream event source."""

    function: str
    table_name: str
    batch_size: int
    report_failures: bool
    max_retries: int
    on_failure_queue_url: str | None


def stream_sources(template: Template, queue_urls: dict[str, str]) -> list[StreamSource]:
    """The DynamoDB stream event sources of the template's functions."""
    arn_to_queue = {template.attribute(lid, "Arn"): lid for lid in template.of_type("AWS::SQS::Queue")}
    tables = {template.attribute(lid, "StreamArn"): lid for lid in template.of_type("AWS::DynamoDB::Table")}
    sources = []
    for function in template.functions():
        for event in function.events:
            if event.type != "DynamoDB":
                continue
            props = event.properties
            destination = ((props.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
            sources.append(
                StreamSource(
                    function=function.logical_id,
                    table_name=template.physical_name(tables[str(props["Stream"])]),
                    batch_size=int(props.get("BatchSize", 100)),
                    report_failures="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
                    max_retries=int(props.get("MaximumRetryAttempts", 3)),
                    on_failure_queue_url=queue_urls.get(arn_to_queue[destination]) if destination else None,
                )
            )
    return sources


def _lambda_record(record: dict[str, Any], stream_arn: str, region: str) -> dict[str, Any]:
    """A GetRecords record as Lambda delivers it: plain JSON, epoch-second times."""

    def plain(value: Any) -> Any:
        return value.timestamp() if isinstance(value, datetime) else str(value)

    return {**json.loads(json.dumps(record, default=plain)), "eventSourceARN": stream_arn, "awsRegion": region}


class StreamPoller(Poller):
    """Reads a table's stream shard by shard and invokes one function, as Lambda does.

    A batch whose function fails (or reports item failures) is retried from
    the first failed record, up to ``MaximumRetryAttempts``; then the failed
    records' description goes to the on-failure queue and reading moves on.
    """

    kind = "stream"

    def __init__(self, source: StreamSource, host: FunctionHost, region: str) -> None:
        super().__init__(source.function)
        self.source = source
        self.host = host
        self.region = region
        self.streams = boto3.client("dynamodbstreams", region_name=region)
        self.sqs = boto3.client("sqs", region_name=region)
        self._iterators: dict[str, str] = {}
        self._closed: set[str] = set()
        self.delivered = 0

    def poll_once(self) -> int:
        """Deliver what the stream holds now; returns the number of records read."""
        stream_arn = (
            boto3.client("dynamodb", region_name=self.region)
            .describe_table(TableName=self.source.table_name)["Table"]
            .get("LatestStreamArn")
        )
        if not stream_arn:
            return 0
        read = 0
        shards = self.streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id in self._closed:
                continue
            iterator = (
                self._iterators.get(shard_id)
                or self.streams.get_shard_iterator(
                    StreamArn=stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            )
            while True:
                response = self.streams.get_records(ShardIterator=iterator, Limit=self.source.batch_size)
                records = response.get("Records", [])
                if records:
                    read += len(records)
                    self._deliver([_lambda_record(r, stream_arn, self.region) for r in records])
                next_iterator = response.get("NextShardIterator")
                if next_iterator is None:
                    self._closed.add(shard_id)  # a closed shard, read to its end
                    break
                iterator = next_iterator
                if not records:
                    break
            self._iterators[shard_id] = iterator
        return read

    def _deliver(self, records: list[dict[str, Any]]) -> None:
        pending = records
        for _attempt in range(self.source.max_retries + 1):
            try:
                response = self.host.invoke(self.source.function, {"Records": pending})
            except FunctionError:
                continue
            failed = []
            if self.source.report_failures and isinstance(response, dict):
                failed = [i["itemIdentifier"] for i in response.get("batchItemFailures") or []]
            if not failed:
                self.delivered += len(pending)
                return
            numbers = [r["dynamodb"]["SequenceNumber"] for r in pending]
            first = min(numbers.index(f) for f in failed if f in numbers) if any(f in numbers for f in failed) else 0
            self.delivered += first
            pending = pending[first:]
        if self.source.on_failure_queue_url:
            body = {"function": self.source.function, "records": [r["dynamodb"].get("SequenceNumber") for r in pending]}
            self.sqs.send_message(QueueUrl=self.source.on_failure_queue_url, MessageBody=json.dumps(body))
