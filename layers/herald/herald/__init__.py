"""Herald: a serverless campaign engine for CRM teams (the shared Lambda layer)."""

__version__ = "0.1.0"
