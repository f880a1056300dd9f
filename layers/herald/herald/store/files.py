"""Flow files in S3: the PDFs export steps write and the large flow exports.

One bucket (``FlowFilesBucket``, SSE-S3, private): ``flows/<flow>/pdf/...``
holds EXPORT TO PDF documents, ``exports/flows/<flow>/...`` holds CSV
exports too large to return inline (expired by a lifecycle rule).
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from herald.config import require

VARIABLE = "FLOW_FILES_BUCKET"
URL_SECONDS = 3600

_bucket: str | None = None
_client: Any = None


def configure(bucket: str) -> None:
    """Name the bucket once at cold start (handlers read ``FLOW_FILES_BUCKET`` with their settings).

    Without it :func:`bucket` reads the variable at call time, which is enough
    in Lambda but not where a function's environment applies only while it
    loads (the embedded runtime and the tests).
    """
    global _bucket
    _bucket = bucket


def bucket() -> str:
    return _bucket or require(VARIABLE)


def _s3() -> Any:
    # One client per process. SigV4: presigned URLs signed the legacy way (SigV2) are refused by newer regions.
    global _client
    if _client is None:
        _client = boto3.client("s3", config=Config(signature_version="s3v4"))
    return _client


def put(key: str, data: bytes, content_type: str) -> str:
    """Write an object (SSE-S3) and return its key; writing the same key again replaces it."""
    _s3().put_object(
        Bucket=bucket(),
        Key=key,
        Body=data,
        ContentType=content_type,
        ServerSideEncryption="AES256",
    )
    return key


def url(key: str, seconds: int = URL_SECONDS) -> str:
    """A presigned GET URL for an object, valid ``seconds``."""
    answer: str = _s3().generate_presigned_url("get_object", Params={"Bucket": bucket(), "Key": key}, ExpiresIn=seconds)
    return answer
