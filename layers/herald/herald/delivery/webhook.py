"""Webhook delivery: a signed JSON POST to the operator's own system.

A campaign action ``{"type": "webhook", "url": ..., "body": ...}`` sends one
request per (campaign, contact, occurrence, action), through the sender's
claim like every channel message. What a request carries:

- ``Content-Type: application/json``, ``User-Agent: Herald-Webhook/1``;
- ``Herald-Message-Id``: the message id, the same on every try and every
  queue redelivery: **receivers dedupe on it** (a try whose response was lost
  to a read timeout is tried again, so a receiver may see an id twice);
- ``Herald-Timestamp``: unix seconds when this try was signed;
- ``Herald-Signature: v1=<hex>``: HMAC-SHA256 of ``"<timestamp>.<body>"``
  under the ``webhook`` key of :mod:`herald.signing`. Receivers check it with
  :func:`verify_signature` and refuse stale timestamps (replays).

Retries: up to :data:`MAX_TRIES` tries inside one send, on 408, 429, 5xx,
connection errors and timeouts (read timeouts included: the message id makes
a second delivery harmless), pausing with exponential backoff and full jitter
(or ``Retry-After``), never longer than :data:`BACKOFF_CAP` and never past
:data:`SEND_BUDGET` for the whole send. Still failing, the send raises
:class:`~herald.delivery.channels.ProviderThrottled`: the sender releases its
claim and SQS retries the queue message later (then the dead-letter queue),
so a failing endpoint never loses a message. Any other status (other 4xx,
3xx: redirects are not followed) is :class:`ProviderRejected` ``http_<status>``.

SSRF: only ``https`` URLs, and every address the host resolves to must be
public (not private, loopback, link-local, the instance metadata service,
CGNAT, multicast or reserved); the request then goes to the checked address
(TLS still verifies the host name), so DNS cannot change between check and
connect. ``HERALD_WEBHOOK_ALLOW_PRIVATE=1`` (embedded runtime, tests) lifts
both rules so a local ``http://`` server can receive webhooks.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import SplitResult, urlsplit

import urllib3
from aws_lambda_powertools.metrics import MetricUnit
from jinja2 import TemplateError

from herald import signing
from herald.delivery.channels import ProviderRejected, ProviderThrottled
from herald.delivery.render import personalisation, render
from herald.observability import logger, metrics

CHANNEL = "webhook"
SIGNING_PURPOSE = "webhook"
SIGNATURE_VERSION = "v1"
USER_AGENT = "Herald-Webhook/1"
ALLOW_PRIVATE_ENV = "HERALD_WEBHOOK_ALLOW_PRIVATE"

CONNECT_TIMEOUT = 3.0  # seconds to open the connection (TLS handshake included)
READ_TIMEOUT = 10.0  # seconds to wait for the response once the request is sent
MAX_TRIES = 3  # tries inside one send; then the queue message is retried by SQS
BACKOFF_BASE = 0.5  # seconds; the n-th pause is uniform in [0, min(cap, base * 2**n)]
BACKOFF_CAP = 4.0  # the longest pause, Retry-After included
SEND_BUDGET = 20.0  # seconds one send may take, tries and pauses together
COOLDOWN = 30.0  # after a send used up its tries, its host fails fast (throttled) this long
SIGNATURE_TOLERANCE = 300  # seconds a receiver should accept a timestamp either side of its clock
MAX_URL_LENGTH = 2048
RETRY_STATUSES = frozenset({408, 429})  # and every 5xx

Sleep = Callable[[float], None]
Jitter = Callable[[float, float], float]
Resolver = Callable[..., list[Any]]
Signer = Callable[[bytes], str]

# A stand-in contact the body template must render with at save time.
SAMPLE_CONTACT: dict[str, Any] = {
    "contact_id": "sample-contact",
    "kind": "customer",
    "status": "Active",
    "email": "ada@example.com",
    "phone": "+447700900123",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "time_zone": "UTC",
    "attributes": {},
}
SAMPLE_CAMPAIGN = {"id": "sample-campaign", "name": "Sample campaign"}


class UrlRefused(ValueError):
    """The URL may not be called (scheme, shape, or an address that is not public)."""


@dataclass(frozen=True)
class Webhook:
    """One webhook request: the JSON body goes to ``url`` as it is (signed byte for byte)."""

    url: str
    body: str
    message_id: str
    tags: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------
# URL rules (shared with the campaign model, which checks them at save)
# --------------------------------------------------------------------------


def private_allowed() -> bool:
    """Whether private addresses and plain http are allowed (embedded runtime and tests only)."""
    return os.environ.get(ALLOW_PRIVATE_ENV) == "1"


def url_problem(url: str, allow_private: bool | None = None) -> str | None:
    """Why ``url`` cannot be a webhook target, from its scheme and shape alone (no DNS), or None."""
    allow = private_allowed() if allow_private is None else allow_private
    if len(url) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters"
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port raises on a bad one
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    schemes = ("https", "http") if allow else ("https",)
    if parts.scheme not in schemes:
        return "must be an https:// URL"
    if not parts.hostname:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (user:password@); the signature authenticates Herald"
    if parts.fragment:
        return "must not have a #fragment"
    if not allow and not _public_name(parts.hostname):
        return "must not point at a private, loopback, link-local or metadata address"
    return None


def _public_name(host: str) -> bool:
    """False for a literal non-public address or a local name; names are resolved at send time."""
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return _public(ipaddress.ip_address(host))
    except ValueError:
        return True


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return _public(embedded)
    # is_global excludes private, loopback, link-local (169.254.169.254 = metadata), CGNAT,
    # unique-local (fd00:ec2::254 = metadata over IPv6), reserved and unspecified ranges.
    return address.is_global and not address.is_multicast and not address.is_reserved


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, NAT64, 6to4), which decides where it goes."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    packed = address.packed
    if address in _NAT64 or packed[:12] == bytes(12):  # 64:ff9b::/96, or IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(packed[12:])
    return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def public_addresses(host: str, port: int, allow_private: bool, resolver: Resolver = socket.getaddrinfo) -> list[str]:
    """The addresses of ``host``, IPv4 first (Lambda may lack IPv6 egress); refuses a non-public one (SSRF)."""
    found: list[str] = []
    for *_, sockaddr in resolver(host, port, type=socket.SOCK_STREAM):
        address = str(sockaddr[0]).split("%", 1)[0]
        if address not in found:
            found.append(address)
    if not found:
        raise OSError(f"{host} has no address")
    found.sort(key=lambda address: ":" in address)
    if not allow_private:
        for address in found:
            if not _public(ipaddress.ip_address(address)):
                raise UrlRefused(f"url_refused: {host} resolves to a non-public address")
    return found


# --------------------------------------------------------------------------
# Signatures
# --------------------------------------------------------------------------


def signed_payload(timestamp: str, body: bytes) -> bytes:
    """What the signature covers: ``"<timestamp>.<body>"``."""
    return timestamp.encode() + b"." + body


def verify_signature(
    secret_key: bytes,
    timestamp: str,
    body: bytes,
    header: str,
    tolerance: int = SIGNATURE_TOLERANCE,
    now: float | None = None,
) -> bool:
    """Receiver side: whether ``Herald-Signature`` is Herald's for this timestamp and raw body.

    ``secret_key`` is the webhook key (``herald.signing.key("webhook")``, given
    to receivers as hex). A timestamp further than ``tolerance`` seconds from
    ``now`` is refused, so a captured request cannot be replayed later. The
    header may list several ``v1=`` values (comma-separated); any match counts.
    """
    if not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    expected = hmac.new(secret_key, signed_payload(timestamp, body), hashlib.sha256).hexdigest()
    for part in header.split(","):
        version, _, value = part.strip().partition("=")
        if version == SIGNATURE_VERSION and hmac.compare_digest(value, expected):
            return True
    return False


def herald_signer() -> Signer:
    """Signs with the ``webhook`` key of the signing secret (see :func:`herald.signing.configure`)."""
    return lambda payload: signing.sign(SIGNING_PURPOSE, payload)


# --------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------


def default_body(campaign: dict[str, Any], contact: dict[str, Any], message_id: str) -> str:
    """The body of a webhook action without one: campaign, contact (id, email) and message id."""
    return _canonical(
        {
            "type": "campaign.webhook",
            "campaign": {"id": campaign.get("id"), "name": campaign.get("name")},
            "contact": {"id": contact.get("contact_id"), "email": contact.get("email")},
            "message_id": message_id,
        }
    )


def render_body(template: str | None, contact: dict[str, Any], campaign: dict[str, Any], message_id: str) -> str:
    """The request body: the action's template rendered and checked to be JSON, or the default body.

    Raises ``ValueError`` (the sender records ``render_error``) when the
    rendered text is not JSON, e.g. a value that needed ``| tojson``.
    """
    if not template:
        return default_body(campaign, contact, message_id)
    text = render(template, personalisation(contact), campaign)
    try:
        return _canonical(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ValueError(f"webhook body is not valid JSON: {exc}") from exc


def body_problem(template: str) -> str | None:
    """Why the body template cannot be saved: it must render JSON for a sample contact, or None."""
    try:
        render_body(template, SAMPLE_CONTACT, SAMPLE_CAMPAIGN, "sample-message")
    except ValueError as exc:
        return f"{exc} (rendered with a sample contact; quote values with | tojson)"
    except (TemplateError, TypeError) as exc:  # e.g. | tojson of a value the sample contact lacks
        return f"does not render with a sample contact: {exc}; give missing values a | default(...)"
    return None


def outgoing(action: dict[str, Any], contact: dict[str, Any], campaign: dict[str, Any], message_id: str) -> Webhook:
    """The webhook request of one action for one contact."""
    body = render_body(action.get("body"), contact, campaign, message_id)
    tags = {
        "campaign_id": str(campaign.get("id")),
        "contact_id": str(contact.get("contact_id")),
        "message_id": message_id,
    }
    return Webhook(str(action["url"]), body, message_id, tags)


def _canonical(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------
# Sending
# --------------------------------------------------------------------------


class _Retry(Exception):
    """One try failed in a way a later try may not (status, connection, timeout)."""

    def __init__(self, problem: str, retry_after: float | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.retry_after = retry_after


class WebhookChannel:
    """POSTs :class:`Webhook` requests with signatures, timeouts and bounded retries.

    Everything that takes time or chance is injectable so tests neither sleep
    nor depend on DNS: ``sleep``, ``jitter`` (``random.uniform``), ``resolver``
    (``socket.getaddrinfo``), ``wall`` (signature timestamps), ``monotonic``
    (budget and cool-down) and ``sign`` (the HMAC of the signed payload; by
    default :func:`herald_signer`).
    """

    def __init__(
        self,
        *,
        sleep: Sleep = time.sleep,
        jitter: Jitter = random.uniform,
        resolver: Resolver = socket.getaddrinfo,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sign: Signer | None = None,
        tries: int = MAX_TRIES,
        ca_certs: str | None = None,
        allow_private: bool | None = None,
    ) -> None:
        self.sleep = sleep
        self.jitter = jitter
        self.resolver = resolver
        self.wall = wall
        self.monotonic = monotonic
        self.sign = sign or herald_signer()
        self.tries = tries
        self.ca_certs = ca_certs
        self.allow_private = allow_private
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
        self._cooling: dict[str, float] = {}

    def send(self, message: Webhook) -> str:
        """POST the message; the provider id is the response's ``X-Request-Id`` or ``webhook:<status>``."""
        allow = private_allowed() if self.allow_private is None else self.allow_private
        problem = url_problem(message.url, allow)
        if problem:
            raise ProviderRejected(f"url_refused: url {problem}")
        target = urlsplit(message.url)
        host = str(target.hostname)
        if self._cooling.get(host, 0.0) > self.monotonic():
            _count("WebhookThrottled")
            raise ProviderThrottled(f"webhook host {host} is cooling down after failed tries")
        started = self.monotonic()
        failure = _Retry("not tried")
        for attempt in range(self.tries):
            try:
                return self._try(message, target, allow, started)
            except _Retry as exc:
                failure = exc
            except ProviderRejected as exc:
                _count("WebhookRejected")
                logger.warning("webhook refused", extra={"host": host, "reason": exc.reason})
                raise
            if attempt + 1 >= self.tries:
                break
            pause = self._pause(attempt, failure.retry_after)
            if self.monotonic() - started + pause + CONNECT_TIMEOUT > SEND_BUDGET:
                break  # the next try would start with less than a connect timeout of budget left
            _count("WebhookRetried")
            self.sleep(pause)
        self._cooling[host] = self.monotonic() + COOLDOWN
        _count("WebhookThrottled")
        logger.warning("webhook endpoint failing", extra={"host": host, "problem": failure.problem})
        raise ProviderThrottled(f"webhook {failure.problem} after {attempt + 1} tries")

    def _pause(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter (``uniform(0, min(cap, base * 2**attempt))``), or the receiver's Retry-After, capped."""
        if retry_after is not None:
            return min(BACKOFF_CAP, retry_after)
        return self.jitter(0.0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))

    def _try(self, message: Webhook, target: SplitResult, allow: bool, started: float) -> str:
        host = str(target.hostname)
        port = target.port or (443 if target.scheme == "https" else 80)
        try:
            address = public_addresses(host, port, allow, self.resolver)[0]
        except UrlRefused as exc:
            raise ProviderRejected(str(exc)) from exc
        except OSError as exc:
            raise _Retry(f"dns_error ({exc})") from exc
        body = message.body.encode()
        timestamp = str(int(self.wall()))
        try:
            signature = self.sign(signed_payload(timestamp, body))
        except Exception as exc:  # the secret unreadable now: nothing was sent, so the claim must be released
            raise ProviderThrottled(f"webhook signing key unavailable ({type(exc).__name__})") from exc
        headers = {
            "Host": target.netloc.rsplit("@", 1)[-1],
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Herald-Message-Id": message.message_id,
            "Herald-Timestamp": timestamp,
            "Herald-Signature": f"{SIGNATURE_VERSION}={signature}",
        }
        remaining = max(SEND_BUDGET - (self.monotonic() - started), 0.1)
        _count("WebhookRequests")
        path = (target.path or "/") + (f"?{target.query}" if target.query else "")
        try:
            response = self._pool(target.scheme, address, port, host).urlopen(
                "POST",
                path,
                body=body,
                headers=headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT, total=remaining),
                preload_content=False,
            )
        except urllib3.exceptions.HTTPError as exc:  # connection refused/reset, timeouts, TLS errors
            raise _Retry(type(exc).__name__) from exc
        try:
            return _outcome(response.status, response.headers)
        finally:
            response.close()  # the body is never read: status and headers are the answer

    def _pool(self, scheme: str, address: str, port: int, host: str) -> urllib3.HTTPConnectionPool:
        """A pool that connects to the checked ``address``; TLS verifies ``host`` (SNI and certificate)."""
        key = (scheme, address, port, host)
        if key not in self._pools:
            if scheme == "https":
                self._pools[key] = urllib3.HTTPSConnectionPool(
                    address,
                    port,
                    maxsize=2,
                    server_hostname=host,
                    assert_hostname=host,
                    cert_reqs="CERT_REQUIRED",
                    ca_certs=self.ca_certs,
                )
            else:
                self._pools[key] = urllib3.HTTPConnectionPool(address, port, maxsize=2)
        return self._pools[key]


def _count(name: str) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)


def _outcome(status: int, headers: Any) -> str:
    """The provider id of a 2xx; raises to retry (408/429/5xx) or refuse (anything else)."""
    if 200 <= status < 300:
        request_id = str(headers.get("X-Request-Id") or "").strip()
        return request_id[:200] if request_id else f"webhook:{status}"
    if status in RETRY_STATUSES or 500 <= status < 600:
        raise _Retry(f"http_{status}", retry_after(headers.get("Retry-After")))
    raise ProviderRejected(f"http_{status}")


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)
