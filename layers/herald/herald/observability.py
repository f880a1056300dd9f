"""The one place where Powertools' logger, tracer and metrics are created.

Handlers decorate in a fixed order: tracer, then logger, then metrics
(``@tracer.capture_lambda_handler`` outermost). Settings such as the service
name and metrics namespace come from ``POWERTOOLS_*`` variables in the
template's ``Globals``.
"""

import os
import warnings

from aws_lambda_powertools import Logger, Metrics, Tracer

# Many requests add no metric (a GET, say); that is normal, not worth a warning.
warnings.filterwarnings("ignore", message="No application metrics to publish")

logger = Logger()
tracer = Tracer()
# The namespace falls back to the template's value when this module is imported before a
# function's environment is applied (benchmarks and tools that import the domain first).
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "Herald")
