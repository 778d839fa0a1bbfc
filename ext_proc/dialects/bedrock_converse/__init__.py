"""AWS Bedrock Converse: ``POST /model/{modelId}/converse`` and ``/converse-stream``
(token counts: ``/count-tokens``, ``counting``), signed with AWS Signature Version 4
(service ``bedrock``).

A backend dialect only: no client request matches it (clients of every other
dialect reach Bedrock backends through the IR). Its providers take no API key:
``load_credentials`` resolves AWS credentials from botocore's chain (``aws_profile``
picks a shared-config profile) and keeps temporary ones fresh in the background;
``sign`` computes the signature over the final body on every attempt. Streams
are AWS event-stream frames (``stream_framing``), which may carry an exception
before the first token (the answer guard fails
those over).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..base import COMPLETE, FAILED, ClientCall, Dialect, StreamMark
from . import aws
from .codec import BEDROCK, BedrockCodec
from .counting import BEDROCK_COUNTING
from .eventstream import EVENT_STREAM, EXCEPTION_PREFIX

log = logging.getLogger("llm_gateway.bedrock")

# The region an AWS Bedrock runtime endpoint serves, from its host name (AWS General Reference,
# "Amazon Bedrock endpoints and quotas": ``bedrock-runtime.<region>.amazonaws.com``, FIPS
# ``bedrock-runtime-fips.<region>...``; PrivateLink ``vpce-...bedrock-runtime.<region>.vpce...``;
# China ``...amazonaws.com.cn``).
_ENDPOINT_REGION = re.compile(
    r"(?:^|\.)bedrock-runtime(?:-fips)?\.([a-z]{2}(?:-[a-z]+)+-\d+)\.(?:vpce\.)?amazonaws\.com(?:\.cn)?$"
)


def endpoint_region(base_url: str) -> str | None:
    """The region of an AWS Bedrock runtime endpoint URL; None for any other host (a proxy, a mock)."""
    m = _ENDPOINT_REGION.search((urlsplit(base_url).hostname or "").lower())
    return m.group(1) if m else None


class BedrockConverse(Dialect):
    name = "bedrock"
    genai_provider = "aws.bedrock"  # OpenTelemetry GenAI name
    codec = BEDROCK
    counting = BEDROCK_COUNTING  # CountTokens: POST /model/{modelId}/count-tokens
    catalog_family = "bedrock"
    # Reset on every attempt, so a signature never follows a failover to another provider.
    credential_header_names = ("authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256")
    provider_response_headers = (
        "x-amzn-requestid",
        "x-amzn-errortype",
        "x-amzn-bedrock-invocation-latency",
        "x-amzn-bedrock-input-token-count",
        "x-amzn-bedrock-output-token-count",
        "x-amzn-bedrock-cache-read-input-token-count",
        "x-amzn-bedrock-cache-write-input-token-count",
        "x-amzn-bedrock-performanceconfig-latency",
    )
    # ConverseStream answers 200, then may send an exception frame (throttling, unavailable...).
    stream_framing = EVENT_STREAM
    needs_api_key = False
    provider_fields = {"aws_region": True, "aws_profile": False}
    turn_keys = ("messages",)

    def match(
        self, method: str, path: str, query_key: str | None, headers: dict[str, str]
    ) -> ClientCall | None:
        return None  # no client surface: a backend dialect

    def model_listing(self, models: list[str], one: str | None = None) -> dict[str, Any]:
        items = [{"modelId": m, "modelName": m} for m in models]
        return items[0] if one is not None else {"modelSummaries": items}

    def requested_output(self, body: dict[str, Any]) -> tuple[Any, Any]:
        ic = body.get("inferenceConfig")
        return (ic.get("maxTokens") if isinstance(ic, dict) else None), None

    def credential_headers(self, key: str) -> dict[str, str]:
        return {}  # signed per attempt instead (``sign``)

    def provider_problems(self, provider: Mapping[str, Any]) -> list[str]:
        """A request is signed for ``aws_region``; an AWS endpoint of another region refuses every
        such signature (403 ``InvalidSignatureException``), so the two must agree."""
        region, base = provider.get("aws_region"), provider.get("base_url")
        served = endpoint_region(base) if isinstance(base, str) else None
        if isinstance(region, str) and served is not None and served != region:
            return [
                f"base_url: {base} serves region '{served}' but aws_region is '{region}': requests "
                f"signed for '{region}' are refused there; set aws_region: {served} or base_url: "
                f"https://bedrock-runtime.{region}.amazonaws.com"
            ]
        return []

    def load_credentials(self, provider: Any) -> str | None:
        return aws.load(provider.aws_profile)

    def sign(self, provider: Any, headers: dict[str, str], body: bytes) -> dict[str, str]:
        """SigV4 over the final body with the credentials loaded for the provider's profile.
        Without credentials (never loaded) the request goes unsigned: the provider refuses
        it with a 403 and Envoy fails over, rather than the gateway failing the request."""
        credentials = aws.current(provider.aws_profile)
        if credentials is None or not provider.aws_region:
            log.error(
                "no AWS credentials loaded for the %s: request sent unsigned",
                f"profile {provider.aws_profile}" if provider.aws_profile else "default chain",
            )
            return {}
        signed = aws.signature_headers(
            credentials, provider.aws_region, provider.host, headers[":path"], body
        )
        return {"content-type": "application/json", **signed}

    def stream_mark(self, event: str | None, data: str, obj: dict[str, Any] | None) -> StreamMark:
        if event and event.startswith(EXCEPTION_PREFIX):
            return FAILED
        if event == "metadata":
            return COMPLETE
        return None


DIALECT = BedrockConverse()

__all__ = ["BEDROCK", "DIALECT", "BedrockCodec", "BedrockConverse"]
