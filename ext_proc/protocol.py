"""Names shared by the rendered Envoy config and the ext_proc stages.

The two kinds of ext_proc stream share no memory (docs/architecture.md): the router
stage tells Envoy and the per-attempt upstream stage what it decided through
the internal request headers below. Envoy strips every one of them before a
request leaves for a provider (upstream ``header_mutation`` filter) and from
every client request on arrival, so a client can neither see nor forge them.
"""

from __future__ import annotations

# gRPC metadata that tells a Process() stream which stage it serves.
STAGE_METADATA = "x-gw-stage"
STAGE_ROUTER = "router"
STAGE_UPSTREAM = "upstream"
STAGE_OBSERVER = "observer"  # sees the response headers of failed attempts only
STAGE_GUARD = "answer_guard"  # holds an attempt's 200 until it is known to be an answer
STAGE_REFUSAL = "refusal"  # a provider's 401/403 to the gateway's credentials, as the 502 it is

# Internal request headers: the router stage's decision, read by Envoy's route
# match only. Stripping them on the first attempt persists into later attempts
# (header mutations do: docs/architecture.md, "Envoy behaviours"), so the upstream stage reads the same
# facts from the matched route's metadata instead.
ROUTE_HEADER = "x-gw-route"  # client-facing model name
PRETRANSLATED_HEADER = "x-gw-pre"  # backend the body is already translated for
STREAM_HEADER = "x-gw-stream"  # present for streamed requests
VERSION_HEADER = "x-gw-version"  # config version the request was routed under
INTERNAL_HEADERS = (ROUTE_HEADER, STREAM_HEADER, PRETRANSLATED_HEADER, VERSION_HEADER)

# A pool's picked servers, best first ("host:port,host:port"): dynamic metadata the router
# stage sets and the model cluster's override_host policy reads (docs/pools.md). The
# namespace and key are the Gateway API Inference Extension's endpoint-picker protocol's;
# metadata, unlike a header, can be neither forged by a client nor leaked to a provider.
LB_NAMESPACE = "envoy.lb"
DESTINATION_KEY = "x-gateway-destination-endpoint"

# Route metadata keys (namespace METADATA_NAMESPACE) set on every model route.
ROUTE_MODEL_KEY = "model"
ROUTE_PRIMARY_KEY = "primary"
ROUTE_STREAM_KEY = "stream"
ROUTE_VERSION_KEY = "version"

# Response header naming the backend that answered (filled by Envoy from the
# answering endpoint's metadata, so it is right after failover too).
BACKEND_RESPONSE_HEADER = "x-gateway-backend"

# Endpoint metadata namespace and key naming the backend of an endpoint.
METADATA_NAMESPACE = "gw"
METADATA_BACKEND_KEY = "backend"
METADATA_GUARD_KEY = "guard_first_event"  # endpoint whose streams are held until their first event
METADATA_CHECK_KEY = "check_every_answer"  # endpoint whose every non-streamed answer is judged

# Dynamic metadata namespace of the per-request fields Envoy's access log prints.
ACCESS_LOG_NAMESPACE = "gw.request"
DIALECT_KEY = "dialect"  # set with the router stage's first answer (worker-failure replies read it)

# ext_proc attribute expressions (CEL) and the attribute map they arrive in.
ATTRIBUTES_KEY = "envoy.filters.http.ext_proc"
ATTR_BACKEND = f"xds.upstream_host_metadata.filter_metadata['{METADATA_NAMESPACE}']['{METADATA_BACKEND_KEY}']"
ATTR_RESPONSE_CODE = "response.code"


def route_attr(key: str) -> str:
    return f"xds.route_metadata.filter_metadata['{METADATA_NAMESPACE}']['{key}']"


ATTR_ROUTE_MODEL = route_attr(ROUTE_MODEL_KEY)
ATTR_ROUTE_PRIMARY = route_attr(ROUTE_PRIMARY_KEY)
ATTR_ROUTE_STREAM = route_attr(ROUTE_STREAM_KEY)
ATTR_ROUTE_VERSION = route_attr(ROUTE_VERSION_KEY)

# Traces (only when configured): the dynamic metadata namespace of the span
# attributes the router stage adds (request/trace.py), its key for the request
# span's name, and the endpoint metadata key of a backend's gen_ai.provider.name.
TRACE_NAMESPACE = "gw.trace"
TRACE_SPAN_NAME = "span_name"
METADATA_PROVIDER_KEY = "genai_provider"
# The attributes the router stage may set there, each under its own name.
TRACE_ATTRIBUTES = (
    "gen_ai.operation.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.response.time_to_first_chunk",
    "llm_gateway.tenant",
    "llm_gateway.primary_backend",
    "llm_gateway.admission",
    "llm_gateway.failover",
    "llm_gateway.local_reply",
)
