"""Shared fixtures: environment, sample events, and a moto-backed Herald."""

from __future__ import annotations

import os

# Tests never reach a real AWS account, and Powertools needs its settings
# before `herald.observability` is first imported.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_REGION", "us-east-1")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "herald")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Herald")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.pop("AWS_ENDPOINT_URL", None)

from collections.abc import Iterator

import pytest

from herald import clock
from tests.harness import Herald, moto_herald


@pytest.fixture
def herald() -> Iterator[Herald]:
    """Herald on moto's in-process mock: every template resource, handlers in-process."""
    with moto_herald() as instance:
        yield instance


@pytest.fixture(autouse=True)
def _wall_clock() -> Iterator[None]:
    yield
    clock.reset_clock()


@pytest.fixture(autouse=True)
def _cold_policy_cache() -> Iterator[None]:
    """Contact policies are cached per process; every test starts without another test's."""
    from herald.policy import service as policies

    policies.clear_cache()
    yield
    policies.clear_cache()
