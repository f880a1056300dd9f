"""Campaign tick: an EventBridge schedule runs every eligible campaign (see herald.campaigns.tick)."""

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from herald import clock
from herald.campaigns import guardrails
from herald.campaigns.alerts import Notifier
from herald.campaigns.tick import Tick, TickFailed
from herald.config import TableNames, require
from herald.delivery.sender import release_due
from herald.observability import logger, metrics, tracer
from herald.store.queues import QueueSender
from herald.store.tables import bind_tables

# Stop starting campaigns this long before the invocation's end: the rest run next tick.
SAFETY_MS = 120_000

bind_tables(TableNames.from_env())
queue = QueueSender(require("DELIVERY_QUEUE_URL"))
notifier = Notifier(require("ALERTS_TOPIC_ARN"))


@tracer.capture_lambda_handler
@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    tick = Tick(
        clock.now(),
        queue.send,
        release_due=release_due,
        notifier=notifier,
        has_time=lambda: context.get_remaining_time_in_millis() > SAFETY_MS,
    )
    try:
        report = tick.run()
    except TickFailed as failure:
        logger.error("campaign tick had failures", extra={"tick": failure.report.summary()})
        raise
    for run in report.campaigns.values():
        if run.processed:
            metrics.add_metric(name="Enrolments", unit=MetricUnit.Count, value=run.enrolled)
            metrics.add_metric(name="Exits", unit=MetricUnit.Count, value=run.exited)
    metrics.add_metric(name="DeliveriesQueued", unit=MetricUnit.Count, value=report.queued_sends)
    metrics.add_metric(name="OutboxRequeued", unit=MetricUnit.Count, value=report.requeued_outbox)
    _publish_pending_alerts()
    summary = report.summary()
    logger.info("campaign tick", extra={"tick": summary})
    return summary


def _publish_pending_alerts() -> None:
    """Guardrail alerts whose publish failed go out now (herald.campaigns.guardrails); never fails the tick."""
    try:
        published = guardrails.publish_pending(notifier)
    except Exception:  # still pending: the next tick tries again
        logger.exception("pending guardrail alerts not published")
        return
    if published:
        metrics.add_metric(name="GuardrailAlertsRepublished", unit=MetricUnit.Count, value=published)
