"""Webhook channel: signatures, URL rules (SSRF), timeouts, bounded retries with backoff, bodies."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import shutil
import socket
import ssl
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from herald.campaigns.model import CampaignIn
from herald.delivery import webhook
from herald.delivery.channels import ProviderRejected, ProviderThrottled
from herald.delivery.webhook import Webhook, WebhookChannel
from tests.receiver import receiving

KEY = b"k" * 32
NOW = 1_795_000_000.0


def sign(payload: bytes) -> str:
    return hmac.new(KEY, payload, hashlib.sha256).hexdigest()


class Pauses:
    """Records the backoff: the jitter's bounds and the pauses taken (nobody sleeps)."""

    def __init__(self) -> None:
        self.bounds: list[tuple[float, float]] = []
        self.slept: list[float] = []

    def jitter(self, low: float, high: float) -> float:
        self.bounds.append((low, high))
        return high

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def channel(pauses: Pauses | None = None, **kwargs: Any) -> WebhookChannel:
    pauses = pauses or Pauses()
    options: dict[str, Any] = {
        "sleep": pauses.sleep,
        "jitter": pauses.jitter,
        "sign": sign,
        "wall": lambda: NOW,
        "allow_private": True,
        **kwargs,
    }
    return WebhookChannel(**options)


def hook(url: str, body: str = '{"hello":"world"}', message_id: str = "m-1") -> Webhook:
    return Webhook(url, body, message_id)


def resolving(*addresses: str) -> Any:
    def resolver(host: str, port: int, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in addresses]

    return resolver


# --------------------------------------------------------------------------
# Signatures
# --------------------------------------------------------------------------


def test_each_request_carries_the_headers_and_a_signature_receivers_can_verify() -> None:
    with receiving((200, {"X-Request-Id": "req-42"})) as receiver:
        provider_id = channel().send(hook(receiver.url, message_id="abc"))
    assert provider_id == "req-42"
    [request] = receiver.requests
    assert request.path == "/hooks/herald"
    assert request.body == b'{"hello":"world"}'
    headers = request.headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "Herald-Webhook/1"
    assert headers["herald-message-id"] == "abc"
    assert headers["herald-timestamp"] == str(int(NOW))
    assert headers["herald-signature"] == "v1=" + sign(f"{int(NOW)}.".encode() + request.body)
    assert headers["host"] == f"127.0.0.1:{receiver.port}"
    ok = webhook.verify_signature(KEY, headers["herald-timestamp"], request.body, headers["herald-signature"], now=NOW)
    assert ok


def test_verify_signature_refuses_tampering_other_keys_and_stale_or_bad_timestamps() -> None:
    body = b'{"a":1}'
    header = "v1=" + sign(b"1000." + body)
    assert webhook.verify_signature(KEY, "1000", body, header, now=1000)
    assert webhook.verify_signature(KEY, "1000", body, f"v1=deadbeef, {header}", now=1000)  # key rotation: any match
    assert not webhook.verify_signature(KEY, "1000", b'{"a":2}', header, now=1000)
    assert not webhook.verify_signature(b"other", "1000", body, header, now=1000)
    assert not webhook.verify_signature(KEY, "1001", body, header, now=1000)  # timestamp is signed
    assert not webhook.verify_signature(KEY, "1000", body, header, now=1000 + 301)  # replayed too late
    assert not webhook.verify_signature(KEY, "-1000", body, header, now=1000)
    assert not webhook.verify_signature(KEY, "1000", body, header.replace("v1=", "v0="), now=1000)


def test_without_an_injected_signer_the_key_comes_from_the_signing_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from herald import signing

    asked: list[str] = []

    def key(purpose: str) -> bytes:
        asked.append(purpose)
        return f"key-for-{purpose}".encode()

    monkeypatch.setattr(signing, "key", key)
    sender = WebhookChannel(wall=lambda: NOW, allow_private=True)
    with receiving(200) as receiver:
        sender.send(hook(receiver.url))
    [request] = receiver.requests
    header = request.headers["herald-signature"]
    assert webhook.verify_signature(b"key-for-webhook", str(int(NOW)), request.body, header, now=NOW)
    assert asked == ["webhook"]


def test_an_unreadable_signing_secret_is_throttled_without_a_request() -> None:
    def broken(payload: bytes) -> str:
        raise RuntimeError("Secrets Manager throttled")

    with receiving(200) as receiver, pytest.raises(ProviderThrottled, match="signing key unavailable"):
        channel(sign=broken).send(hook(receiver.url))
    assert receiver.requests == []


# --------------------------------------------------------------------------
# URL rules
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://hooks.example.com/x", "https://"),
        ("ftp://hooks.example.com/x", "https://"),
        ("https:///path", "host"),
        ("https://user:pw@hooks.example.com/", "credentials"),
        ("https://hooks.example.com/#frag", "fragment"),
        ("https://hooks.example.com:99999/", "valid URL"),
        ("https://hooks.example.com/a b", "spaces"),
        ("https://127.0.0.1/", "private"),
        ("https://10.1.2.3/", "private"),
        ("https://169.254.169.254/latest/meta-data/", "private"),
        ("https://[::1]/", "private"),
        ("https://[fd00:ec2::254]/", "private"),
        ("https://localhost/", "private"),
        ("https://" + "a" * 2050 + ".com/", "2048"),
    ],
)
def test_url_rules_refuse_anything_but_public_https(url: str, problem: str) -> None:
    found = webhook.url_problem(url, allow_private=False)
    assert found is not None and problem in found


def test_url_rules_accept_public_https_and_with_the_flag_local_http(monkeypatch: pytest.MonkeyPatch) -> None:
    assert webhook.url_problem("https://hooks.example.com:8443/herald?x=1", allow_private=False) is None
    assert webhook.url_problem("https://93.184.216.34/", allow_private=False) is None
    monkeypatch.delenv(webhook.ALLOW_PRIVATE_ENV, raising=False)
    assert webhook.url_problem("http://127.0.0.1:8080/") is not None
    monkeypatch.setenv(webhook.ALLOW_PRIVATE_ENV, "1")
    assert webhook.url_problem("http://127.0.0.1:8080/") is None
    assert webhook.url_problem("ftp://127.0.0.1/") is not None


@pytest.mark.parametrize(
    "address",
    ["10.0.0.5", "172.16.0.1", "192.168.1.1", "127.0.0.1", "169.254.169.254", "100.64.0.1", "::ffff:10.0.0.1"],
)
def test_a_host_resolving_to_a_non_public_address_is_refused_without_a_request(address: str) -> None:
    sender = channel(resolver=resolving("93.184.216.34", address), allow_private=False)
    with pytest.raises(ProviderRejected) as refused:
        sender.send(hook("https://hooks.example.com/x"))
    assert refused.value.reason.startswith("url_refused")


def test_ipv4_addresses_are_tried_first() -> None:
    resolver = resolving("2606:2800:220:1:248:1893:25c8:1946", "93.184.216.34")
    assert webhook.public_addresses("x.example", 443, False, resolver)[0] == "93.184.216.34"


def test_a_url_the_rules_refuse_is_rejected_at_send_time_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(webhook.ALLOW_PRIVATE_ENV, raising=False)
    with pytest.raises(ProviderRejected, match="https://"):
        WebhookChannel(sign=sign).send(hook("http://hooks.example.com/"))
    with pytest.raises(ProviderRejected, match="url_refused"):
        WebhookChannel(sign=sign, resolver=resolving("127.0.0.1")).send(hook("https://hooks.example.com/"))


def test_the_flag_lets_a_local_server_receive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(webhook.ALLOW_PRIVATE_ENV, "1")
    with receiving(204) as receiver:
        assert WebhookChannel(sign=sign).send(hook(receiver.url)) == "webhook:204"


def _certificate(tmp_path: Path, host: str) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / f"{host}.pem", tmp_path / f"{host}.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host}"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_https_goes_to_the_checked_address_and_verifies_the_host_name(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path, "hooks.example.test")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with receiving(200, tls=tls) as receiver:
        url = f"https://hooks.example.test:{receiver.port}/in"
        sender = channel(resolver=resolving("127.0.0.1"), ca_certs=str(cert))
        assert sender.send(hook(url)) == "webhook:200"
        assert receiver.requests[0].headers["host"] == f"hooks.example.test:{receiver.port}"
        # A certificate for another name is refused (a TLS error is retried, then throttled).
        other = channel(resolver=resolving("127.0.0.1"), ca_certs=str(cert), tries=1)
        with pytest.raises(ProviderThrottled):
            other.send(hook(f"https://elsewhere.example.test:{receiver.port}/in"))
    assert len(receiver.requests) == 1


# --------------------------------------------------------------------------
# Retries, backoff and timeouts
# --------------------------------------------------------------------------


def test_server_errors_are_retried_with_backoff_under_one_message_id() -> None:
    pauses = Pauses()
    with receiving(500, 502, 200) as receiver:
        assert channel(pauses).send(hook(receiver.url, message_id="same")) == "webhook:200"
    assert len(receiver.requests) == 3
    assert {r.headers["herald-message-id"] for r in receiver.requests} == {"same"}
    # Full jitter: uniform(0, min(cap, base * 2**attempt)).
    assert pauses.bounds == [(0.0, 0.5), (0.0, 1.0)]
    assert pauses.slept == [0.5, 1.0]


def test_backoff_never_exceeds_the_cap() -> None:
    pauses = Pauses()
    with receiving(503) as receiver, pytest.raises(ProviderThrottled):
        channel(pauses, tries=6).send(hook(receiver.url))
    assert [high for _, high in pauses.bounds] == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_throttling_honours_retry_after_up_to_the_cap() -> None:
    pauses = Pauses()
    with receiving((429, {"Retry-After": "2"}), (429, {"Retry-After": "120"}), 200) as receiver:
        assert channel(pauses).send(hook(receiver.url)) == "webhook:200"
    assert pauses.slept == [2.0, webhook.BACKOFF_CAP]
    assert pauses.bounds == []  # Retry-After replaces the jitter
    assert len(receiver.requests) == 3


def test_retry_after_as_seconds_or_an_http_date() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert webhook.retry_after("3") == 3.0
    assert webhook.retry_after("Mon, 23 Nov 2026 12:00:05 GMT", now) == 5.0
    assert webhook.retry_after("Mon, 23 Nov 2026 11:00:00 GMT", now) == 0.0
    assert webhook.retry_after("soon") is None and webhook.retry_after(None) is None


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422, 302])
def test_other_client_errors_and_redirects_are_rejected_without_a_retry(status: int) -> None:
    pauses = Pauses()
    with (
        receiving((status, {"Location": "http://169.254.169.254/"})) as receiver,
        pytest.raises(ProviderRejected) as rejected,
    ):
        channel(pauses).send(hook(receiver.url))
    assert rejected.value.reason == f"http_{status}"
    assert len(receiver.requests) == 1 and pauses.slept == []


def test_an_endpoint_that_keeps_failing_is_throttled_after_the_bounded_tries_then_cools_down() -> None:
    moment = [100.0]
    pauses = Pauses()
    sender = channel(pauses, monotonic=lambda: moment[0])
    with receiving(503) as receiver:
        with pytest.raises(ProviderThrottled, match="http_503 after 3 tries"):
            sender.send(hook(receiver.url))
        assert len(receiver.requests) == webhook.MAX_TRIES
        # The same host fails fast for a while: the next message goes back to the queue without a request.
        with pytest.raises(ProviderThrottled, match="cooling down"):
            sender.send(hook(receiver.url, message_id="m-2"))
        assert len(receiver.requests) == webhook.MAX_TRIES
        moment[0] += webhook.COOLDOWN + 1
        receiver.answer(200)
        assert sender.send(hook(receiver.url, message_id="m-2")) == "webhook:200"
    assert len(pauses.slept) == webhook.MAX_TRIES - 1


def test_no_retry_starts_past_the_send_budget() -> None:
    moment = [0.0]

    def later() -> float:
        moment[0] += webhook.SEND_BUDGET / 2
        return moment[0]

    with receiving(500) as receiver, pytest.raises(ProviderThrottled, match="after 1 tries"):
        channel(monotonic=later).send(hook(receiver.url))
    assert len(receiver.requests) == 1


def test_a_read_timeout_is_retried_under_the_same_message_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook, "READ_TIMEOUT", 0.2)
    with receiving((200, {}, 1.0), 200) as receiver:
        assert channel().send(hook(receiver.url, message_id="slow")) == "webhook:200"
    assert [r.headers["herald-message-id"] for r in receiver.requests] == ["slow", "slow"]


def test_connection_errors_are_retried_then_throttled() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed: nothing listens
    pauses = Pauses()
    with pytest.raises(ProviderThrottled):
        channel(pauses).send(hook(f"http://127.0.0.1:{port}/"))
    assert len(pauses.slept) == webhook.MAX_TRIES - 1


def test_timeouts_are_the_named_constants() -> None:
    assert (webhook.CONNECT_TIMEOUT, webhook.READ_TIMEOUT) == (3.0, 10.0)
    assert webhook.MAX_TRIES * (webhook.CONNECT_TIMEOUT + webhook.READ_TIMEOUT) > webhook.SEND_BUDGET  # budget binds


# --------------------------------------------------------------------------
# Bodies and the campaign action
# --------------------------------------------------------------------------

CONTACT = {"contact_id": "c1", "email": "ada@example.org", "first_name": 'Ada "the first"', "attributes": {}}
CAMPAIGN = {"id": "spring", "name": "Spring sale"}


def test_the_default_body_names_campaign_contact_and_message() -> None:
    sent = webhook.outgoing({"type": "webhook", "url": "https://x.example"}, CONTACT, CAMPAIGN, "m1")
    assert sent.url == "https://x.example" and sent.message_id == "m1"
    assert sent.body == (
        '{"type":"campaign.webhook","campaign":{"id":"spring","name":"Spring sale"},'
        '"contact":{"id":"c1","email":"ada@example.org"},"message_id":"m1"}'
    )


def test_a_body_template_renders_json_and_tojson_quotes_values() -> None:
    template = (
        '{"name": {{ contact.first_name | tojson }}, "tier": {{ contact.attributes.tier | default(none) | tojson }}}'
    )
    sent = webhook.outgoing({"url": "https://x.example", "body": template}, CONTACT, CAMPAIGN, "m1")
    assert sent.body == '{"name":"Ada \\"the first\\"","tier":null}'
    with pytest.raises(ValueError, match="not valid JSON"):
        webhook.render_body('{"name": "{{ contact.first_name }}"}', CONTACT, CAMPAIGN, "m1")


def action_errors(action: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        CampaignIn.model_validate({"name": "n", "description": "d", "actions": [action]})
    except ValidationError as exc:
        return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
    return []


def test_the_campaign_action_is_checked_at_save(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(webhook.ALLOW_PRIVATE_ENV, raising=False)
    good = {
        "type": "webhook",
        "url": "https://crm.example.com/herald",
        "body": '{"id": {{ contact.contact_id | tojson }}}',
    }
    assert action_errors(good) == []
    assert action_errors({"type": "webhook", "url": "https://crm.example.com/herald"}) == []  # default body
    [(field, message)] = action_errors({**good, "url": "http://crm.example.com/"})
    assert field == "actions.0.webhook.url" and "https://" in message
    [(field, message)] = action_errors({**good, "url": "https://192.168.0.10/"})
    assert field == "actions.0.webhook.url" and "private" in message
    [(field, message)] = action_errors({**good, "body": "{{ secret }}"})
    assert field == "actions.0.webhook.body" and "unknown template variable" in message
    [(field, message)] = action_errors({**good, "body": "name={{ contact.first_name }}"})
    assert field == "actions.0.webhook.body" and "not valid JSON" in message
    [(field, message)] = action_errors({**good, "body": '{"t": {{ contact.attributes.tier | tojson }}}'})
    assert field == "actions.0.webhook.body" and "default" in message
    [(field, _)] = action_errors({**good, "extra": 1})
    assert field == "actions.0.webhook.extra"


@pytest.mark.parametrize(
    "address",
    ["::7f00:1", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "::ffff:10.0.0.1", "::1", "240.0.0.1"],
)
def test_ipv6_forms_of_private_addresses_and_reserved_ranges_are_refused(address: str) -> None:
    assert webhook._public(ipaddress.ip_address(address)) is False


def test_ipv6_forms_of_a_public_address_are_allowed() -> None:
    assert webhook._public(ipaddress.ip_address("64:ff9b::5db8:d822")) is True  # NAT64 of 93.184.216.34
