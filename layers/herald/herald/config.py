"""Configuration, read once at cold start from the function's environment.

Logic never reads ``os.environ``; it receives these models. A missing variable
fails fast with a message that names it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict


class ConfigurationError(RuntimeError):
    """The function's environment lacks a required setting."""


class TableNames(BaseModel):
    """Physical DynamoDB table names (the template passes them to every function)."""

    model_config = ConfigDict(frozen=True)

    contacts: str
    contact_keys: str
    catalog: str
    memberships: str
    enrolments: str
    messages: str
    suppressions: str
    activity: str
    stats: str
    idempotency: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TableNames:
        """Read ``<NAME>_TABLE`` variables; raises ``ConfigurationError`` if one is missing."""
        source = os.environ if env is None else env
        values: dict[str, str] = {}
        for field in cls.model_fields:
            variable = f"{field.upper()}_TABLE"
            if not source.get(variable):
                raise ConfigurationError(f"environment variable {variable} is not set")
            values[field] = source[variable]
        return cls(**values)


def require(variable: str, env: Mapping[str, str] | None = None) -> str:
    """Return a required environment variable or fail with its name."""
    source = os.environ if env is None else env
    value = source.get(variable)
    if not value:
        raise ConfigurationError(f"environment variable {variable} is not set")
    return value


class EmailSettings(BaseModel):
    """What every marketing email needs besides its content: where its links point, whose address it shows."""

    model_config = ConfigDict(frozen=True)

    public_api_url: str
    postal_address: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EmailSettings:
        """Read ``PUBLIC_API_URL`` and ``POSTAL_ADDRESS``; raises ``ConfigurationError`` if one is missing."""
        return cls(
            public_api_url=require("PUBLIC_API_URL", env).rstrip("/"),
            postal_address=require("POSTAL_ADDRESS", env),
        )
