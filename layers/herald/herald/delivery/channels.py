"""Delivery providers behind one small protocol: email (SES v2), SMS and push (SNS), webhooks.

The sender talks only to :class:`Channels`; :class:`AwsChannels` is the real
one, tests inject recorders and failing providers with :func:`use`.

Provider errors come back as two kinds, because they are handled differently:

- :class:`ProviderThrottled`: nothing was sent and a later attempt may
  succeed (throttling, the service unavailable, no connection). The sender
  releases its claim and returns the queue message for SQS to retry.
- :class:`ProviderRejected`: the provider refused this message for good
  (invalid address, disabled endpoint, unverified sender, ...) *or* the
  outcome is unknown (a read timeout after the request left): the message is
  recorded ``failed`` with the reason and never retried, since retrying an
  unknown outcome could send twice.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from herald.delivery import email

if TYPE_CHECKING:  # herald.delivery.webhook imports this module's errors
    from herald.delivery.webhook import Webhook, WebhookChannel

# botocore's own retries (standard mode: exponential backoff with jitter) come
# first; what is still throttled after them goes back to SQS.
_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=10)

THROTTLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "Throttled",
        "TooManyRequestsException",
        "LimitExceededException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalError",
        "InternalErrorException",
        "KMSThrottlingException",
    }
)
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class ProviderThrottled(Exception):
    """Nothing was sent; retry later."""


class ProviderRejected(Exception):
    """The provider refused the message (or its outcome is unknown); never retried."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Email:
    """One campaign email; the links are its signed unsubscribe and preference URLs (footer and headers)."""

    to: str
    subject: str
    body: str
    tags: dict[str, str] = field(default_factory=dict)
    unsubscribe_url: str = ""
    preferences_url: str = ""


@dataclass(frozen=True)
class Sms:
    phone: str
    text: str
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Push:
    endpoint_arn: str
    title: str
    body: str
    tags: dict[str, str] = field(default_factory=dict)


Outgoing: TypeAlias = "Email | Sms | Push | Webhook"


class Channels(Protocol):
    """Sends one message; returns the provider's message id."""

    def send(self, message: Outgoing) -> str: ...


def tag_value(value: str) -> str:
    """A value SES accepts as a message tag (letters, digits, ``_``, ``-``; at most 256)."""
    return _TAG_UNSAFE.sub("_", value)[:256] or "_"


class AwsChannels:
    """SES v2 for email, SNS for SMS (E.164 numbers) and push (platform endpoints); webhooks over HTTPS."""

    def __init__(
        self,
        sender_email: str,
        configuration_set: str | None = None,
        ses: Any = None,
        sns: Any = None,
        webhooks: WebhookChannel | None = None,
    ) -> None:
        self.sender_email = sender_email
        self.configuration_set = configuration_set
        self._ses = ses
        self._sns = sns
        self._webhooks = webhooks
        self._lock = threading.Lock()

    # The sender calls providers from several threads; boto3's default session is not
    # safe to build clients from concurrently, so clients are made once, under a lock.

    def ses(self) -> Any:
        with self._lock:
            if self._ses is None:
                self._ses = boto3.client("sesv2", config=_CONFIG)
            return self._ses

    def sns(self) -> Any:
        with self._lock:
            if self._sns is None:
                self._sns = boto3.client("sns", config=_CONFIG)
            return self._sns

    def webhooks(self) -> WebhookChannel:
        """The webhook channel, made on first use (it keeps its connection pools and host cool-downs)."""
        with self._lock:
            if self._webhooks is None:
                from herald.delivery import webhook  # here, not at the top: webhook imports this module

                self._webhooks = webhook.WebhookChannel()
            return self._webhooks

    def send(self, message: Outgoing) -> str:
        if not isinstance(message, Email | Sms | Push):
            return self.webhooks().send(message)  # raises ProviderThrottled/ProviderRejected itself
        try:
            if isinstance(message, Email):
                return self._email(message)
            if isinstance(message, Sms):
                return self._sms(message)
            return self._push(message)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "Unknown")
            if code in THROTTLE_CODES:
                raise ProviderThrottled(code) from exc
            detail = exc.response.get("Error", {}).get("Message", "")
            raise ProviderRejected(f"{code}: {detail}"[:500]) from exc
        except (EndpointConnectionError, ConnectTimeoutError) as exc:
            raise ProviderThrottled(type(exc).__name__) from exc
        except (ReadTimeoutError, ConnectionClosedError) as exc:
            raise ProviderRejected(f"provider_outcome_unknown: {type(exc).__name__}") from exc

    def _email(self, message: Email) -> str:
        """Send the composed MIME message (``Content.Raw``): only raw content can carry List-Unsubscribe."""
        mime = email.compose(
            self.sender_email,
            message.to,
            message.subject,
            message.body,
            message.unsubscribe_url,
            message.preferences_url,
            email.settings().postal_address,
        )
        request: dict[str, Any] = {
            "FromEmailAddress": self.sender_email,
            "Destination": {"ToAddresses": [message.to]},
            "Content": {"Raw": {"Data": mime.as_bytes()}},
            "EmailTags": [{"Name": name, "Value": tag_value(value)} for name, value in message.tags.items()],
        }
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
        response = self.ses().send_email(**request)
        return str(response["MessageId"])

    def _sms(self, message: Sms) -> str:
        response = self.sns().publish(
            PhoneNumber=message.phone,
            Message=message.text,
            MessageAttributes={"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Promotional"}},
        )
        return str(response["MessageId"])

    def _push(self, message: Push) -> str:
        payload = {
            "default": f"{message.title}\n{message.body}" if message.title else message.body,
            "APNS": json.dumps({"aps": {"alert": {"title": message.title, "body": message.body}}, **message.tags}),
            "APNS_SANDBOX": json.dumps(
                {"aps": {"alert": {"title": message.title, "body": message.body}}, **message.tags}
            ),
            "GCM": json.dumps({"notification": {"title": message.title, "body": message.body}, "data": message.tags}),
        }
        response = self.sns().publish(
            TargetArn=message.endpoint_arn, Message=json.dumps(payload), MessageStructure="json"
        )
        return str(response["MessageId"])


# --------------------------------------------------------------------------
# The channels in use (tests replace them, as herald.clock replaces time)
# --------------------------------------------------------------------------

_override: Channels | None = None


def use(channels: Channels | None) -> None:
    """Replace the providers for this process (tests only); None restores the default."""
    global _override
    _override = channels


def resolve(default: Channels) -> Channels:
    """The providers to use: an override, else the function's own."""
    return _override if _override is not None else default
