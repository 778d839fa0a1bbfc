"""Bedrock token counting: ``POST /model/{modelId}/count-tokens`` (the CountTokens API,
https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_CountTokens.html, and
botocore's ``bedrock-runtime`` service model), signed with SigV4 like Converse (the
signature covers the final body and this path: ``BedrockConverse.sign``).

The request is ``{"input": {"converse": {...}}}``: ``CountTokensInput`` is a union of
``converse`` (a ``ConverseTokensRequest``: ``messages``, ``system``, ``toolConfig``,
``additionalModelRequestFields``, the input side of a Converse request) and
``invokeModel`` (a model-native body, which the gateway never sends). The answer is
``{"inputTokens": N}`` (``CountTokensResponse``). The count is free of charge (Bedrock
user guide, "Monitor your token usage by counting tokens before running inference").

The path names the *foundation model* (``modelId``: "The unique identifier or ARN of the
foundation model to use for token counting"). Newer Claude models are invoked only through
cross-region inference profiles (``us.anthropic...``), which CountTokens refuses with
"The provided model doesn't support counting tokens" while the same model's base ID
counts (a live probe in Boise-State-Development/agentcore-public-stack#430; also
maximhq/bifrost#2169, pydantic/pydantic-ai#4001): a profile ID is counted under its base
model, whose tokenizer it shares. ARNs are sent as they are.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from ...errors import invalid
from ...translation.fields import answer_count, invalid_answer, type_error
from ...translation.operations import CountingCodec

# ConverseTokensRequest: what the counting endpoint takes of a Converse request.
COUNTED = ("messages", "system", "toolConfig", "additionalModelRequestFields")
# A system-defined cross-region inference profile ID: a geography, then the model ID
# (Bedrock user guide, "Supported Regions and models for inference profiles").
PROFILE = re.compile(r"^(?:us|eu|apac|us-gov|global|jp|au|ca)\.(?=[a-z0-9-]+\.)")


def foundation_model(model_id: str) -> str:
    """The foundation model of ``model_id``: a cross-region profile's ID without its geography."""
    return PROFILE.sub("", model_id, count=1)


class BedrockCounting(CountingCodec):
    forwards = True

    def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """A CountTokens body (one the gateway built, read back on failover) as its Converse body."""
        inner = body.get("input")
        if not isinstance(inner, dict):
            raise type_error("input", "an object")
        if set(inner) != {"converse"}:
            raise invalid(
                "input: exactly one of its members must be set, and only 'converse' is read", "input"
            )
        converse = inner["converse"]
        if not isinstance(converse, dict):
            raise type_error("input.converse", "an object")
        return dict(converse)

    def render_count(self, tokens: int) -> dict[str, Any]:
        return {"inputTokens": tokens}

    def build_request(self, chat_body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
        return {"input": {"converse": {k: chat_body[k] for k in COUNTED if k in chat_body}}}

    def request_path(self, upstream_model: str) -> str:
        # The model ID (or ARN) is one path segment, percent-encoded as for Converse.
        return f"/model/{quote(foundation_model(upstream_model), safe='')}/count-tokens"

    def parse_count(self, data: Any) -> int:
        if not isinstance(data, dict) or "inputTokens" not in data:
            raise invalid_answer("it has no 'inputTokens'")
        return answer_count(data["inputTokens"], "inputTokens")


BEDROCK_COUNTING = BedrockCounting()
