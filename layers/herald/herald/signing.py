"""Keys for Herald's signatures: unsubscribe tokens and webhook requests.

One secret (``SIGNING_SECRET_ARN``, a Secrets Manager secret the template
generates) is the root; each use gets its own key derived from it with
HMAC-SHA256 over the purpose's name, so a webhook signature can never be
replayed as an unsubscribe token. The secret is read through Powertools'
parameters utility, cached for five minutes, so a rotation reaches warm
functions without a redeploy (tokens signed with the old key then get 403).
"""

from __future__ import annotations

import hashlib
import hmac

from aws_lambda_powertools.utilities import parameters

from herald.config import require

CACHE_SECONDS = 300

_secret_arn: str | None = None


def configure(secret_arn: str) -> None:
    """Name the secret once at cold start (handlers read ``SIGNING_SECRET_ARN`` with the rest of their settings).

    Without it :func:`key` reads the variable at call time, which is enough in
    Lambda but not where a function's environment applies only while it loads
    (the embedded runtime and the tests).
    """
    global _secret_arn
    _secret_arn = secret_arn


def key(purpose: str) -> bytes:
    """The signing key for ``purpose`` (e.g. ``"unsubscribe"``, ``"webhook"``).

    The secret is the one named by :func:`configure`, else ``SIGNING_SECRET_ARN``.
    """
    root = parameters.get_secret(_secret_arn or require("SIGNING_SECRET_ARN"), max_age=CACHE_SECONDS)
    if not isinstance(root, str) or not root:
        raise RuntimeError("the signing secret is empty")
    return hmac.new(root.encode(), purpose.encode(), hashlib.sha256).digest()


def sign(purpose: str, payload: bytes) -> str:
    """Hex HMAC-SHA256 of ``payload`` under the purpose's key."""
    return hmac.new(key(purpose), payload, hashlib.sha256).hexdigest()


def verify(purpose: str, payload: bytes, signature: str) -> bool:
    """Whether ``signature`` is ``sign(purpose, payload)`` (constant-time comparison)."""
    return hmac.compare_digest(sign(purpose, payload), signature)


def clear_cache() -> None:
    """Forget the cached secret (tests that rotate it)."""
    parameters.clear_caches()
