"""Unsubscribe tokens: signed, compact, expiring; anything else is 403."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from herald import clock, signing
from herald.errors import Forbidden
from herald.unsubscribe import tokens

SENT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def secret() -> Iterator[str]:
    with mock_aws():
        arn = boto3.client("secretsmanager").create_secret(Name="herald-signing-test", SecretString="s" * 64)["ARN"]
        signing.configure(arn)
        signing.clear_cache()
        clock.set_clock(lambda: SENT)
        yield arn
        signing.clear_cache()


def issue(**overrides: object) -> str:
    values: dict[str, object] = {
        "contact_id": "c-1",
        "campaign_id": "spring",
        "message_id": "a" * 32,
        "channel": "email",
        "category": "offers",
        "campaign_group": "retail",
        "scope": "category",
        "channels": "all",
    }
    values.update(overrides)
    return tokens.issue(**values)  # type: ignore[arg-type]


def test_a_token_carries_what_the_unsubscribe_needs_and_is_compact() -> None:
    token = issue()
    payload = tokens.verify(token)
    assert (payload.contact_id, payload.campaign_id, payload.message_id, payload.channel) == (
        "c-1",
        "spring",
        "a" * 32,
        "email",
    )
    assert (payload.category, payload.campaign_group, payload.scope, payload.channels) == (
        "offers",
        "retail",
        "category",
        "all",
    )
    assert payload.expires == int((SENT + tokens.TOKEN_LIFETIME).timestamp())
    assert len(token) < 300 and set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def test_a_token_expires_after_its_lifetime() -> None:
    token = issue()
    clock.set_clock(lambda: SENT + tokens.TOKEN_LIFETIME - timedelta(seconds=1))
    assert tokens.verify(token).contact_id == "c-1"
    clock.set_clock(lambda: SENT + tokens.TOKEN_LIFETIME)
    with pytest.raises(Forbidden, match="expired"):
        tokens.verify(token)
    assert timedelta(days=365) == tokens.TOKEN_LIFETIME


def _payload(token: str) -> dict[str, object]:
    encoded = token.split(".")[0]
    data: dict[str, object] = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    return data


def _encode(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("field", ["c", "k", "m", "ch", "cat", "grp", "s", "cm", "exp"])
def test_changing_any_field_of_the_payload_is_refused(field: str) -> None:
    token = issue()
    data = _payload(token)
    changed = {"c": "c-2", "k": "other", "m": "b" * 32, "ch": "sms", "cat": "x", "grp": "y", "s": "all", "cm": "this"}
    data[field] = changed.get(field, int(data["exp"]) + 86_400)  # type: ignore[call-overload]
    with pytest.raises(Forbidden, match="signature"):
        tokens.verify(f"{_encode(data)}.{token.split('.')[1]}")


def test_a_changed_signature_a_cut_token_and_garbage_are_refused() -> None:
    token = issue()
    encoded, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    for bad in (f"{encoded}.{flipped}", encoded, f"{encoded}.", f".{signature}", token[:-2], "", "x.y.z", "a" * 5000):
        with pytest.raises(Forbidden):
            tokens.verify(bad)


def test_a_token_signed_with_another_key_or_purpose_is_refused(secret: str) -> None:
    token = issue()
    encoded = token.split(".")[0]
    webhook_signature = base64.urlsafe_b64encode(bytes.fromhex(signing.sign("webhook", encoded.encode())))
    with pytest.raises(Forbidden):
        tokens.verify(f"{encoded}.{webhook_signature.rstrip(b'=').decode()}")
    # A rotated secret: tokens signed with the old one are refused.
    boto3.client("secretsmanager").put_secret_value(SecretId=secret, SecretString="t" * 64)
    signing.clear_cache()
    with pytest.raises(Forbidden, match="signature"):
        tokens.verify(token)


def test_a_genuinely_signed_but_unreadable_payload_is_refused() -> None:
    encoded = _encode({"c": "c-1"})
    signature = base64.urlsafe_b64encode(bytes.fromhex(signing.sign(tokens.PURPOSE, encoded.encode())))
    with pytest.raises(Forbidden, match="cannot be read"):
        tokens.verify(f"{encoded}.{signature.rstrip(b'=').decode()}")
