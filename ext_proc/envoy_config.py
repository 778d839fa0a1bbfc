"""Render Envoy's bootstrap from the gateway config.

The shape follows the Envoy behaviours in docs/architecture.md (numbered there):

- One listener. Filters: strip client-sent internal headers, the router-level
  ext_proc (request headers + buffered body; response body streamed with the
  response headers skipped, which saves a round trip per request: status and
  answering backend arrive as attributes with the first body chunk), router.
- One route per model and streaming mode, selected by the internal headers the
  router stage sets together with ``clear_route_cache`` (behaviour 2). Retries walk
  the model's backends in priority order (behaviour 5).
- One cluster per model, its backends as endpoints in priorities, each naming
  its backend in endpoint metadata (behaviours 3-6).
- The per-attempt upstream ext_proc runs on that cluster, wrapped in a CEL
  matcher that skips it when the attempt goes to the backend the router stage
  already translated for: the common case costs no second gRPC stream, every
  failover attempt is still translated for the backend it lands on.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format

from . import dialects
from . import protocol as P
from .admission.headers import HEADERS as RATELIMIT_HEADERS
from .admission.headers import METADATA_NAMESPACE as RATELIMIT_NAMESPACE
from .config import GatewayConfig

BUFFER_LIMIT = 32 * 1024 * 1024  # prompts with images run to megabytes (behaviour 10: default 1 MiB)
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
ROUTER_FILTER = "envoy.filters.http.router"

_EXT_PROC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
_HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _ms(ms: int) -> str:
    return f"{ms / 1000:g}s"


def _addr(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


class _Cel:
    """Builds parsed CEL ASTs: Envoy 1.40's CEL matcher takes a parsed
    expression, not source text."""

    def __init__(self) -> None:
        import cel.expr.syntax_pb2 as cel  # from xds-protos

        self.cel = cel
        self.ids = itertools.count(1)

    def call(self, function: str, *args: Any) -> Any:
        return self.cel.Expr(id=next(self.ids), call_expr=self.cel.Expr.Call(function=function, args=list(args)))

    def metadata(self, source: str, key: str) -> Any:
        """``xds.<source>.filter_metadata['gw'][key]``."""
        cel = self.cel
        expr = cel.Expr(id=next(self.ids), ident_expr=cel.Expr.Ident(name="xds"))
        for field in (source, "filter_metadata"):
            expr = cel.Expr(id=next(self.ids), select_expr=cel.Expr.Select(operand=expr, field=field))
        for k in (P.METADATA_NAMESPACE, key):
            const = cel.Expr(id=next(self.ids), const_expr=cel.Constant(string_value=k))
            expr = self.call("_[_]", expr, const)
        return expr

    def parsed(self, expr: Any) -> dict[str, Any]:
        return json_format.MessageToDict(self.cel.ParsedExpr(expr=expr))


def _cel_skip_expression() -> dict[str, Any]:
    """``<attempt's backend> == <route's primary backend>``. The primary comes
    from route metadata, not a header: headers stripped on the first attempt
    stay stripped for the next."""
    c = _Cel()
    return c.parsed(c.call("_==_", c.metadata("upstream_host_metadata", P.METADATA_BACKEND_KEY),
                           c.metadata("route_metadata", P.ROUTE_PRIMARY_KEY)))


def _cel_unguarded(stream: bool) -> dict[str, Any]:
    """Streamed: ``route is streamed && !endpoint guards first events``; not streamed:
    ``!route is streamed && !endpoint checks every answer``."""
    c = _Cel()
    route_stream = c.metadata("route_metadata", P.ROUTE_STREAM_KEY)
    key = P.METADATA_GUARD_KEY if stream else P.METADATA_CHECK_KEY
    return c.parsed(c.call("_&&_", route_stream if stream else c.call("!_", route_stream),
                           c.call("!_", c.metadata("upstream_host_metadata", key))))


def _cel_predicate(name: str, expr: dict[str, Any], description: str = "") -> dict[str, Any]:
    matcher: dict[str, Any] = {"@type": "type.googleapis.com/xds.type.matcher.v3.CelMatcher",
                               "expr_match": {"cel_expr_parsed": expr}}
    if description:
        matcher["description"] = description
    return {
        "input": {"name": "request_attributes", "typed_config": {
            "@type": "type.googleapis.com/xds.type.matcher.v3.HttpAttributesCelMatchInput"}},
        "custom_match": {"name": name, "typed_config": matcher},
    }


def _skip_when(name: str, extension: dict[str, Any], predicate: dict[str, Any]) -> dict[str, Any]:
    """``extension`` wrapped so that it is skipped for a stream where ``predicate`` (a single
    predicate, or a whole ``or_matcher``/``and_matcher``/``not_matcher``) matches."""
    return {
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
            "extension_config": extension,
            "xds_matcher": {"matcher_list": {"matchers": [{
                "predicate": predicate if _is_compound(predicate) else {"single_predicate": predicate},
                "on_match": {"action": {"name": "skip", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter"}}},
            }]}},
        },
    }


def _is_compound(predicate: dict[str, Any]) -> bool:
    return bool({"or_matcher", "and_matcher", "not_matcher"} & set(predicate))


def _ext_proc_filter(cfg: GatewayConfig, stage: str, mode: dict[str, str],
                     request_attributes: list[str], response_attributes: list[str]) -> dict[str, Any]:
    timeout = _ms(cfg.ext_proc.message_timeout_ms)
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": _EXT_PROC_TYPE,
            "grpc_service": {
                "envoy_grpc": {"cluster_name": "ext_proc"},
                "initial_metadata": [{"key": P.STAGE_METADATA, "value": stage}],
            },
            "processing_mode": {"request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP", **mode},
            "request_attributes": request_attributes,
            "response_attributes": response_attributes,
            "message_timeout": timeout,
            "failure_mode_allow": False,
            "mutation_rules": {"allow_all_routing": True},
        },
    }


def _strip_internal_headers() -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"remove": h} for h in P.INTERNAL_HEADERS]},
        },
    }


# The messages each client request costs (the bench's no-op reference uses the same).
ROUTER_STAGE_MODE = {"request_header_mode": "SEND", "request_body_mode": "BUFFERED",
                     "response_header_mode": "SKIP", "response_body_mode": "STREAMED",
                     "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"}


def _router_stage(cfg: GatewayConfig) -> dict[str, Any]:
    stage = _ext_proc_filter(
        cfg, P.STAGE_ROUTER, ROUTER_STAGE_MODE,
        request_attributes=[],
        response_attributes=[P.ATTR_RESPONSE_CODE, P.ATTR_BACKEND],
    )
    # Rate-limit headers of admitted requests arrive as dynamic metadata (the
    # response headers phase is skipped); Envoy drops metadata it is not told to accept.
    stage["typed_config"]["metadata_options"] = {"receiving_namespaces": {"untyped": [
        RATELIMIT_NAMESPACE, P.ACCESS_LOG_NAMESPACE]}}
    return stage


def _upstream_stage(cfg: GatewayConfig) -> dict[str, Any]:
    stage = _ext_proc_filter(
        cfg, P.STAGE_UPSTREAM,
        {"request_header_mode": "SEND", "request_body_mode": "BUFFERED",
         "response_header_mode": "SKIP", "response_body_mode": "NONE"},
        request_attributes=[P.ATTR_BACKEND, P.ATTR_ROUTE_MODEL, P.ATTR_ROUTE_PRIMARY, P.ATTR_ROUTE_STREAM,
                            P.ATTR_ROUTE_VERSION],
        response_attributes=[],
    )
    return _skip_when("gw.upstream_stage", stage, _cel_predicate(
        "pretranslated", _cel_skip_expression(), "attempt goes to the backend the router stage translated for"))


def _response_header(name: str, match: dict[str, Any]) -> dict[str, Any]:
    """A predicate on one response header (absent: it does not match)."""
    return {"single_predicate": {
        "input": {"name": name, "typed_config": {
            "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpResponseHeaderMatchInput",
            "header_name": name}},
        "value_match": match,
    }}


def _answer_guard(cfg: GatewayConfig) -> dict[str, Any]:
    """Provider 200s that are not answers fail over (see ``answer_guard``).

    Its gRPC stream opens lazily, so an attempt it skips costs nothing. It is
    skipped for every response but a 200 (Envoy retries 5xx and 429 itself, a
    4xx is an answer), and for a 200 whose headers look like an answer:

    - a stream (``text/event-stream``, not declared empty) of a provider with
      ``guard_first_event`` off;
    - a non-streamed JSON answer of a declared, non-zero length, unless the
      provider has ``check_every_answer`` on. Judging every such body would
      cost a gRPC stream and two messages per request (README "Failover":
      measured +60% ext_proc CPU); what the guard does not judge the router
      stage still does, too late to fail over.
    """
    guard = _ext_proc_filter(
        cfg, P.STAGE_GUARD,
        {"request_header_mode": "SKIP", "request_body_mode": "NONE",
         "response_header_mode": "SEND", "response_body_mode": "STREAMED"},
        request_attributes=[],
        response_attributes=[P.ATTR_BACKEND, P.ATTR_ROUTE_STREAM],
    )
    # Body chunks reach the guard while it still holds the headers.
    guard["typed_config"]["send_body_without_waiting_for_header_response"] = True
    skip = {"or_matcher": {"predicate": [
        {"not_matcher": _response_header(":status", {"exact": "200"})},
        {"and_matcher": {"predicate": [
            {"single_predicate": _cel_predicate("unguarded_stream", _cel_unguarded(stream=True))},
            _response_header("content-type", {"contains": "event-stream", "ignore_case": True}),
            {"not_matcher": _response_header("content-length", {"exact": "0"})},
        ]}},
        {"and_matcher": {"predicate": [
            {"single_predicate": _cel_predicate("unchecked_answer", _cel_unguarded(stream=False))},
            _response_header("content-type", {"contains": "json", "ignore_case": True}),
            _response_header("content-length", {"safe_regex": {"google_re2": {}, "regex": "[1-9][0-9]*"}}),
        ]}},
    ]}}
    return _skip_when("gw.answer_guard", guard, skip)


def _attempt_observer(cfg: GatewayConfig) -> dict[str, Any]:
    """Reports failed attempts (status, retry-after, backend) to the ext_proc.

    Envoy retries internally, so the router stage never sees the primary's
    429 or 5xx. This filter sends response headers only and is skipped for
    2xx responses by its matcher; its gRPC stream is opened lazily, so a
    successful attempt costs nothing.
    """
    observer = _ext_proc_filter(
        cfg, P.STAGE_OBSERVER,
        {"request_header_mode": "SKIP", "request_body_mode": "NONE",
         "response_header_mode": "SEND", "response_body_mode": "NONE"},
        request_attributes=[],
        response_attributes=[P.ATTR_BACKEND, P.ATTR_ROUTE_MODEL],
    )
    observer["typed_config"]["observability_mode"] = True
    return _skip_when("gw.attempt_observer", observer, {
        "input": {"name": "status", "typed_config": {
            "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpResponseHeaderMatchInput",
            "header_name": ":status"}},
        "value_match": {"prefix": "2"},
    })


def _retry_policy(cfg: GatewayConfig, model: str, entry: int, stream: bool) -> dict[str, Any]:
    m = cfg.models[model]
    policy: dict[str, Any] = {
        "retry_on": "5xx,reset,connect-failure,refused-stream,retriable-status-codes",
        "retriable_status_codes": [429],
        "num_retries": cfg.retries(model, entry),
        "retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": 1,
            },
        },
        "retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
        }],
        "host_selection_retry_max_attempts": 5,
        # Failover should be immediate: the next attempt goes to another backend.
        "retry_back_off": {"base_interval": "0.01s", "max_interval": "0.05s"},
    }
    if stream:
        if m.per_try_idle_timeout_ms:
            policy["per_try_idle_timeout"] = _ms(m.per_try_idle_timeout_ms)
    elif m.per_try_timeout_ms:
        policy["per_try_timeout"] = _ms(m.per_try_timeout_ms)
    if m.hedge_after_ms and not stream:
        # With hedge_on_per_try_timeout the per-try timeout starts the race
        # instead of cancelling the slow attempt. Non-streamed only: for a
        # stream the per-try timeout would also bound the answer's length.
        policy["per_try_timeout"] = _ms(m.hedge_after_ms)
    return policy


# Provider response headers that would confuse a client of another dialect or
# expose provider account details (organisations, the provider's own limits):
# each dialect names its own; these are any provider's.
PROVIDER_RESPONSE_HEADERS = (
    "request-id", "server-timing", "cf-ray", "via", "alt-svc", *dialects.PROVIDER_RESPONSE_HEADERS,
)

# Envoy's own failures (no healthy upstream, connect failure, timeouts, retry
# limit...): their plain-text body is rewritten by the router stage into the
# client's error format, so the content type must say JSON.
ENVOY_FAILURE_FLAGS = ["UH", "UF", "UO", "NR", "URX", "UT", "UC", "UR", "UMSDR", "DPE", "UPE", "NC", "OM"]


def _local_reply_config() -> dict[str, Any]:
    return {"mappers": [{
        "filter": {"response_flag_filter": {"flags": ENVOY_FAILURE_FLAGS}},
        "body_format_override": {"text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"},
                                 "content_type": "application/json"},
    }]}


def _model_routes(cfg: GatewayConfig, model: str, versioned: bool = False) -> list[dict[str, Any]]:
    """Routes of one model: per possible primary backend and streaming mode,
    selected by the router stage's headers.

    A route sends attempt 1 to its primary's tier (the cluster that starts
    there), so a backend the router stage skipped (cooling down, no headroom)
    costs no attempt. Route metadata repeats the decision (model, primary,
    stream) for the upstream stage and its matcher, which cannot rely on
    headers.
    """
    routes = []
    tiers = cfg.tiers[model]
    for primary in cfg.chains[model]:
        entry = tiers.index(primary.tier)
        for stream in (True, False):
            headers: list[dict[str, Any]] = [{"name": P.ROUTE_HEADER, "string_match": {"exact": model}},
                       {"name": P.PRETRANSLATED_HEADER, "string_match": {"exact": primary.name}},
                       {"name": P.STREAM_HEADER, "present_match": stream}]
            if versioned:
                headers.append({"name": P.VERSION_HEADER, "string_match": {"exact": cfg.version}})
            routes.append(_model_route(cfg, model, primary.name, entry, stream, headers, versioned))
    return routes


def _cluster_name(cfg: GatewayConfig, model: str, entry: int, versioned: bool) -> str:
    name = cfg.cluster_name(model, entry)
    return f"{cfg.version}/{name}" if versioned else name


def _model_route(cfg: GatewayConfig, model: str, primary: str, entry: int, stream: bool,
                 headers: list[dict[str, Any]], versioned: bool) -> dict[str, Any]:
    return {
        "name": f"{cfg.version + ': ' if versioned else ''}{model} via {primary}{' (stream)' if stream else ''}",
        "match": {"prefix": "/", "headers": headers},
        "metadata": {"filter_metadata": {P.METADATA_NAMESPACE: {
            P.ROUTE_MODEL_KEY: model, P.ROUTE_PRIMARY_KEY: primary, P.ROUTE_STREAM_KEY: stream,
            P.ROUTE_VERSION_KEY: cfg.version}}},
        "route": {
            "cluster": _cluster_name(cfg, model, entry, versioned),
            "timeout": "0s",  # generations run long; per-try and idle timeouts bound them
            "auto_host_rewrite": True,
            "retry_policy": _retry_policy(cfg, model, entry, stream),
            **({"hedge_policy": {"hedge_on_per_try_timeout": True}}
               if cfg.models[model].hedge_after_ms and not stream else {}),
        },
        "response_headers_to_add": [{
            "header": {"key": P.BACKEND_RESPONSE_HEADER,
                       "value": f"%UPSTREAM_METADATA({P.METADATA_NAMESPACE}:{P.METADATA_BACKEND_KEY})%"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }, *_rate_limit_headers()],
        "response_headers_to_remove": list(PROVIDER_RESPONSE_HEADERS),
    }


def _rate_limit_headers() -> list[dict[str, Any]]:
    """The tenant's x-ratelimit-* headers, from the router stage's dynamic metadata
    (absent when the request was not budgeted: Envoy omits empty values)."""
    return [{"header": {"key": h, "value": f"%DYNAMIC_METADATA({RATELIMIT_NAMESPACE}:{h})%"},
             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"} for h in RATELIMIT_HEADERS]


def _route_config(configs: list[GatewayConfig], versioned: bool = False) -> dict[str, Any]:
    """Routes of every config still live (during a switch: the old and the new)."""
    routes: list[dict[str, Any]] = []
    for cfg in configs:
        for model in cfg.models:
            routes += _model_routes(cfg, model, versioned)
    # Reached only if the router stage let a request through without routing it.
    routes.append({
        "name": "unrouted",
        "match": {"prefix": "/"},
        "direct_response": {"status": 500, "body": {
            "inline_string": '{"error": {"message": "request was not routed by the gateway", "type": "server_error"}}'}},
    })
    return {
        "name": "gateway",
        "virtual_hosts": [{
            "name": "gateway",
            "domains": ["*"],
            "routes": routes,
            # Retries replay the buffered body; bigger bodies would disable them.
            "request_body_buffer_limit": BUFFER_LIMIT,
        }],
    }


def _access_log(path: str) -> list[dict[str, Any]]:
    """One JSON line per request: Envoy's view plus the fields the router stage set."""
    def meta(key: str) -> str:
        return f"%DYNAMIC_METADATA({P.ACCESS_LOG_NAMESPACE}:{key})%"

    fmt = {
        "time": "%START_TIME%", "method": "%REQ(:METHOD)%", "path": "%PATH(NQ)%",  # never the query: some dialects send keys there
        "status": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%", "details": "%RESPONSE_CODE_DETAILS%",
        "tenant": meta("tenant"), "dialect": meta("dialect"), "model": meta("model"), "backend": meta("backend"),
        "stream": meta("stream"), "input_tokens": meta("input_tokens"), "output_tokens": meta("output_tokens"),
        "cached_input_tokens": meta("cached_input_tokens"), "cost_usd": meta("cost_usd"),
        "ttfb_ms": meta("ttfb_ms"),
        "duration_ms": "%DURATION%", "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
        "upstream": "%UPSTREAM_HOST%", "request_id": "%REQ(X-REQUEST-ID)%",
        "bytes_in": "%BYTES_RECEIVED%", "bytes_out": "%BYTES_SENT%",
    }
    return [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": path, "log_format": {"json_format": fmt}}}]


def _listener(cfg: GatewayConfig, routes: dict[str, Any], access_log: str = "/dev/stdout") -> dict[str, Any]:
    """The client listener; ``routes`` is an inline ``route_config`` or an ``rds`` source."""
    hcm = {
        "@type": _HCM_TYPE,
        "stat_prefix": "gateway",
        "codec_type": "AUTO",
        **routes,
        "request_timeout": "0s",
        "stream_idle_timeout": "300s",
        "local_reply_config": _local_reply_config(),
        "access_log": _access_log(access_log),
        "http_filters": [
            _strip_internal_headers(),
            _router_stage(cfg),
            {"name": ROUTER_FILTER, "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                "suppress_envoy_headers": True}},
        ],
    }
    return {
        "name": "gateway",
        "address": _addr(cfg.listen.address, cfg.listen.port),
        "per_connection_buffer_limit_bytes": BUFFER_LIMIT,
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
    }


def grpc_protocol_options() -> dict[str, Any]:
    """A gRPC cluster's protocol: HTTP/2, with room for a stream per client request."""
    return {_HTTP_OPTIONS: {
        "@type": "type.googleapis.com/" + _HTTP_OPTIONS,
        "explicit_http_config": {"http2_protocol_options": {"max_concurrent_streams": 100_000}},
    }}


def _ext_proc_cluster(cfg: GatewayConfig) -> dict[str, Any]:
    # upstream_host (e.g. a compose service name) resolves to every replica.
    host = cfg.ext_proc.upstream_host or cfg.ext_proc.address
    endpoints = [{"endpoint": {"address": _addr(host, port)}} for port in cfg.extproc_ports()]
    return {
        "name": "ext_proc",
        "type": "STRICT_DNS" if cfg.ext_proc.upstream_host else "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": "ext_proc", "endpoints": [{"lb_endpoints": endpoints}]},
        "typed_extension_protocol_options": grpc_protocol_options(),
        # One gRPC stream per client request: the default 1024 would cap concurrency.
        "circuit_breakers": {"thresholds": [{"max_requests": 1_000_000, "max_pending_requests": 1_000_000,
                                             "max_connections": 1_000_000}]},
    }


def _model_cluster(cfg: GatewayConfig, model: str, entry: int, versioned: bool = False) -> dict[str, Any]:
    """The model's backends from its ``entry``-th tier on, as priorities 0, 1, 2..."""
    tiers = cfg.tiers[model][entry:]
    chain = [b for b in cfg.chains[model] if b.tier in tiers]
    localities = []
    for priority, tier in enumerate(tiers):
        lb_endpoints = []
        for b in (b for b in chain if b.tier == tier):
            p = b.provider
            lb_endpoints.append({
                "endpoint": {"address": _addr(p.host, p.port), "hostname": p.host},
                "load_balancing_weight": b.weight,
                "metadata": {"filter_metadata": {
                    P.METADATA_NAMESPACE: {P.METADATA_BACKEND_KEY: b.name,
                                           P.METADATA_GUARD_KEY: p.guard_first_event,
                                           P.METADATA_CHECK_KEY: p.check_every_answer},
                    "envoy.transport_socket_match": {"tls": p.tls},
                }},
            })
        localities.append({"priority": priority, "lb_endpoints": lb_endpoints})
    any_tls = any(b.provider.tls for b in chain)
    protocol: dict[str, Any] = {
        "@type": "type.googleapis.com/" + _HTTP_OPTIONS,
        "http_filters": [
            _attempt_observer(cfg),
            # Responses pass the filters bottom-up: the guard's 502 reaches the observer.
            _answer_guard(cfg),
            _upstream_stage(cfg),
            _strip_internal_headers(),
            {"name": "envoy.filters.http.upstream_codec", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}},
        ],
    }
    if any_tls:
        protocol["auto_config"] = {"http_protocol_options": {}, "http2_protocol_options": {}}
        protocol["upstream_http_protocol_options"] = {"auto_sni": True, "auto_san_validation": True}
    else:
        protocol["explicit_http_config"] = {"http_protocol_options": {}}
    cluster: dict[str, Any] = {
        "name": _cluster_name(cfg, model, entry, versioned),
        # Envoy's Prometheus tags end a cluster name at its first dot: a model
        # such as 'm-2.5-flash' would otherwise split into a broken metric name.
        "alt_stat_name": _cluster_name(cfg, model, entry, versioned).replace(".", "_"),
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": _ms(min(b.provider.connect_timeout_ms for b in chain)),
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": _cluster_name(cfg, model, entry, versioned), "endpoints": localities},
        # A fully ejected tier must not keep receiving traffic (behaviour 10).
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
        "outlier_detection": {
            "consecutive_5xx": 5,
            "consecutive_gateway_failure": 3,
            "enforcing_consecutive_gateway_failure": 100,
            "interval": "2s",
            "base_ejection_time": "5s",
            "max_ejection_time": "60s",
            "max_ejection_percent": 100,
        },
        "circuit_breakers": {"thresholds": [{
            "max_requests": 100_000, "max_pending_requests": 100_000, "max_connections": 100_000,
            # Retries are bounded by a budget, not Envoy's default of 3 concurrent retries.
            "retry_budget": {"budget_percent": {"value": 50.0}, "min_retry_concurrency": 64},
        }]},
        "per_connection_buffer_limit_bytes": BUFFER_LIMIT,
        "typed_extension_protocol_options": {_HTTP_OPTIONS: protocol},
    }
    if any_tls:
        cluster["transport_socket_matches"] = [{
            "name": "tls",
            "match": {"tls": True},
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {"validation_context": {"trusted_ca": {"filename": CA_BUNDLE}}},
            }},
        }, {
            "name": "plaintext",
            "match": {},
            "transport_socket": {"name": "envoy.transport_sockets.raw_buffer", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}},
        }]
    return cluster


def _model_clusters(configs: list[GatewayConfig], versioned: bool) -> list[dict[str, Any]]:
    return [_model_cluster(cfg, m, entry, versioned)
            for cfg in configs for m in cfg.models for entry in range(len(cfg.tiers[m]))]


def _bootstrap(cfg: GatewayConfig, static: dict[str, Any], dynamic: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "node": {"id": "llm-gateway", "cluster": "llm-gateway"},
        "admin": {"address": _addr(cfg.admin.address, cfg.admin.port)},
        "static_resources": static,
    }
    if dynamic:
        out["dynamic_resources"] = dynamic
    out["layered_runtime"] = {"layers": [{"name": "static", "static_layer": {
        # No limit is set on downstream connections by default; keep Envoy quiet about it.
        "overload.global_downstream_max_connections": 50_000}}]}
    return out


def render(cfg: GatewayConfig) -> dict[str, Any]:
    """A self-contained Envoy bootstrap for ``cfg`` (``render-envoy``, containers)."""
    return _bootstrap(cfg, {
        "listeners": [_listener(cfg, {"route_config": _route_config([cfg])})],
        "clusters": [_ext_proc_cluster(cfg), *_model_clusters([cfg], versioned=False)],
    })


# ---- live configuration (``up``): routes and clusters from watched files ------
# Envoy re-reads a file when a new version is moved into its watched directory.
# Every route and cluster carries the config version, so during a switch the old
# and new config are served side by side: requests routed under the old config
# finish on it, new ones use the new config; the old one is removed after a drain.

RDS_FILE = "routes.yaml"
CDS_FILE = "clusters.yaml"


def _file_source(xds_dir: Path, name: str) -> dict[str, Any]:
    return {"path_config_source": {"path": str(xds_dir / name), "watched_directory": {"path": str(xds_dir)}},
            "resource_api_version": "V3"}


def render_live_bootstrap(cfg: GatewayConfig, xds_dir: Path, access_log: Path) -> dict[str, Any]:
    rds = {"rds": {"route_config_name": "gateway", "config_source": _file_source(xds_dir, RDS_FILE)}}
    return _bootstrap(cfg, {"listeners": [_listener(cfg, rds, str(access_log))], "clusters": [_ext_proc_cluster(cfg)]},
                      {"cds_config": _file_source(xds_dir, CDS_FILE)})


def write_live_resources(xds_dir: Path, route_configs: list[GatewayConfig],
                         cluster_configs: list[GatewayConfig], version_info: str) -> None:
    """Write routes and clusters for the given configs, each file replaced atomically."""
    xds_dir.mkdir(parents=True, exist_ok=True)
    routes = {"version_info": version_info, "resources": [
        {"@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
         **_route_config(route_configs, versioned=True)}]}
    clusters = {"version_info": version_info, "resources": [
        {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", **c}
        for c in _model_clusters(cluster_configs, versioned=True)]}
    for name, doc in ((CDS_FILE, clusters), (RDS_FILE, routes)):
        tmp = xds_dir / f".{name}.tmp"
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False, width=120))
        tmp.replace(xds_dir / name)


def render_yaml(cfg: GatewayConfig) -> str:
    header = (f"# Rendered by `llm-gateway render-envoy` from {Path(cfg.source).name}. Do not edit:\n"
              "# change the gateway config and render again.\n")
    return header + yaml.safe_dump(render(cfg), sort_keys=False, width=120)


def write(cfg: GatewayConfig, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(render_yaml(cfg))
    tmp.replace(out)
    return out
