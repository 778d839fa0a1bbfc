"""Traces: Envoy's OpenTelemetry spans, with the gateway's attributes, reach a real OTLP receiver.

The receiver is a gRPC ``TraceService`` in this process, built on the OTLP
messages xds-protos ships (the ``opentelemetry-proto`` package writes the same
module files, so installing both makes the result depend on install order); the gateway is the real stack (Envoy,
ext_proc, mock providers), driven by the official SDKs. What is asserted is
what an operator sees in a tracing backend: one trace per request, its spans
and their attributes, and the provider receiving the same trace.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import anthropic
import grpc
import openai
import pytest
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.trace.v1 import trace_pb2

from ext_proc import envoy_config
from ext_proc import protocol as P
from ext_proc.config import DEFAULT_CONFIG, ConfigError, key_digest, parse_config
from ext_proc.request import finish as F
from ext_proc.request import trace
from ext_proc.request.plan import Answer, RoutePlan
from ext_proc.stages.router import RouterStream
from ext_proc.translation.ir import Usage
from gateway_tools.supervisor import Stack, envoy_binary
from tests.conftest import DEMO_KEY, MockAdmin
from tests.stack import config_on_free_ports, start_stack
from tests.test_request_path import CHAT, OPENAI, do_plan, run, state_of

TIGHT_KEY = "tight-key"  # a tenant allowed one request per minute: its second is refused by admission
SERVER, CLIENT = trace_pb2.Span.SPAN_KIND_SERVER, trace_pb2.Span.SPAN_KIND_CLIENT
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def scope_spans(resource_spans: Any) -> Any:
    """ResourceSpans field 2: ``scope_spans`` in OTLP 0.19+, ``instrumentation_library_spans`` before.

    Same number and shape (a list of messages with ``spans``), so reading it by
    number works with whichever OTLP version of the generated module is installed.
    """
    return getattr(resource_spans, resource_spans.DESCRIPTOR.fields_by_number[2].name)


class Receiver:
    """An OTLP/gRPC trace receiver keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[trace_pb2.Span] = []
        self.resources: list[dict[str, Any]] = []
        self.changed = threading.Condition()

    def Export(self, request: ts.ExportTraceServiceRequest, context: Any) -> ts.ExportTraceServiceResponse:
        with self.changed:
            for rs in request.resource_spans:
                self.resources.append(attributes(rs.resource))
                for scope in scope_spans(rs):
                    self.spans.extend(scope.spans)
            self.changed.notify_all()
        return ts.ExportTraceServiceResponse()

    def of_trace(self, trace_id: str) -> list[trace_pb2.Span]:
        with self.changed:
            return [s for s in self.spans if s.trace_id.hex() == trace_id]

    def wait(
        self, trace_id: str, done: Callable[[list[trace_pb2.Span]], bool], timeout: float = 15.0
    ) -> list[trace_pb2.Span]:
        """The trace's spans once ``done`` holds for them (Envoy exports at least every second)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                spans = [s for s in self.spans if s.trace_id.hex() == trace_id]
                if done(spans) or time.monotonic() > deadline:
                    return spans
                self.changed.wait(max(0.0, min(0.5, deadline - time.monotonic())))


def attributes(item: Any) -> dict[str, Any]:
    out = {}
    for kv in item.attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, int]]:
    sink = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    export = grpc.unary_unary_rpc_method_handler(
        sink.Export,
        request_deserializer=ts.ExportTraceServiceRequest.FromString,
        response_serializer=ts.ExportTraceServiceResponse.SerializeToString,
    )
    service, method = EXPORT.rsplit("/", 1)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.lstrip("/"), {method: export}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield sink, port
    server.stop(grace=None)


def traced_config(port: int, ratio: float = 1.0) -> dict[str, Any]:
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg["tenants"]["tight"] = {
        "api_keys": [{"sha256": key_digest(TIGHT_KEY)}],
        "limits": {"requests_per_minute": 1},
    }
    cfg["tracing"] = {
        "otlp_endpoint": f"127.0.0.1:{port}",
        "sampling_ratio": ratio,
        "service_name": "gw-under-test",
    }
    return config_on_free_ports(cfg)


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, receiver: tuple[Receiver, int]) -> Iterator[Stack]:
    stack = start_stack(tmp_path_factory.mktemp("traced"), traced_config(receiver[1]))
    yield stack
    stack.stop()


@pytest.fixture
def mocks(traced: Stack) -> Iterator[MockAdmin]:
    admin = MockAdmin(traced)
    admin.reset()
    yield admin
    admin.reset()


def traceparent(admin: MockAdmin, provider: str) -> tuple[str, str, str]:
    """(trace id, parent span id, flags) of the last request ``provider`` received."""
    value = admin.stats(provider)["last_request"]["headers"]["traceparent"]
    version, trace_id, span_id, flags = value.split("-")
    assert version == "00"
    return trace_id, span_id, flags


def request_span(spans: list[trace_pb2.Span]) -> trace_pb2.Span:
    (span,) = [s for s in spans if s.kind == SERVER]
    return span


def attempt_spans(spans: list[trace_pb2.Span]) -> list[trace_pb2.Span]:
    return sorted(
        (s for s in spans if s.kind == CLIENT and s.name.startswith("attempt ")),
        key=lambda s: s.start_time_unix_nano,
    )


def has_request_and(attempts: int) -> Callable[[list[trace_pb2.Span]], bool]:
    return lambda spans: any(s.kind == SERVER for s in spans) and len(attempt_spans(spans)) >= attempts


# ---- end to end ------------------------------------------------------------------------------
def test_a_failover_is_one_trace_with_a_span_per_attempt(
    traced: Stack, mocks: MockAdmin, receiver: tuple[Receiver, int]
) -> None:
    sink, _ = receiver
    mocks.fault("openai", mode="error", status=503)  # gpt-5.5's primary; anthropic is next
    client = openai.OpenAI(base_url=traced.base_url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=20)
    reply = client.chat.completions.create(
        model="gpt-5.5", messages=[{"role": "user", "content": "trace me"}]
    )
    assert reply.usage is not None

    trace_id, last_parent, flags = traceparent(mocks, "anthropic")
    first_trace, first_parent, _ = traceparent(mocks, "openai")
    assert first_trace == trace_id and flags == "01"
    spans = sink.wait(trace_id, has_request_and(2))
    root = request_span(spans)
    attempts = attempt_spans(spans)
    assert root.name == "chat gpt-5.5" and root.parent_span_id == b""
    assert [a.name for a in attempts] == ["attempt openai/gpt-5.5", "attempt anthropic/claude-sonnet-4-6"]
    assert all(a.parent_span_id == root.span_id for a in attempts)
    # Each provider saw the trace, with its own attempt as the parent.
    assert [a.span_id.hex() for a in attempts] == [first_parent, last_parent]

    attrs = attributes(root)
    # Envoy's custom tags are strings, numbers included (README "Traces").
    assert (
        attrs
        | {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "gpt-5.5",
            "gen_ai.response.model": "claude-sonnet-4-6",
            "gen_ai.usage.input_tokens": str(reply.usage.prompt_tokens),
            "gen_ai.usage.output_tokens": str(reply.usage.completion_tokens),
            "llm_gateway.tenant": "demo",
            "llm_gateway.backend": "anthropic/claude-sonnet-4-6",
            "llm_gateway.primary_backend": "openai/gpt-5.5",
            "llm_gateway.failover": "true",
            "llm_gateway.attempts": "2",
            "llm_gateway.admission": "admitted",
            "http.status_code": "200",
        }
        == attrs
    )
    assert "gen_ai.response.time_to_first_chunk" not in attrs  # not a stream
    first, second = (attributes(a) for a in attempts)
    assert (first["http.status_code"], first["llm_gateway.backend"], first["gen_ai.provider.name"]) == (
        "503",
        "openai/gpt-5.5",
        "openai",
    )
    assert first["error"] == "true" and attempts[0].status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert (second["http.status_code"], second["llm_gateway.backend"], second["gen_ai.provider.name"]) == (
        "200",
        "anthropic/claude-sonnet-4-6",
        "anthropic",
    )
    assert (first["llm_gateway.attempts"], second["llm_gateway.attempts"]) == ("1", "2")
    assert {"service.name": "gw-under-test"}.items() <= sink.resources[-1].items()


def test_a_clients_traceparent_is_continued_to_the_provider(
    traced: Stack, mocks: MockAdmin, receiver: tuple[Receiver, int]
) -> None:
    sink, _ = receiver
    client = anthropic.Anthropic(base_url=traced.base_url, api_key=DEMO_KEY, max_retries=0, timeout=20)
    chunks = []
    with client.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=50,
        messages=[{"role": "user", "content": "continue my trace"}],
        extra_headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"},
    ) as stream:
        chunks.extend(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(chunks).endswith("continue my trace")

    trace_id, parent, flags = traceparent(mocks, "anthropic")
    assert (trace_id, flags) == (CLIENT_TRACE, "01")
    spans = sink.wait(CLIENT_TRACE, has_request_and(1))
    root = request_span(spans)
    (attempt,) = attempt_spans(spans)
    assert root.parent_span_id.hex() == CLIENT_SPAN  # a child of the client's span
    assert attempt.parent_span_id == root.span_id and attempt.span_id.hex() == parent
    attrs = attributes(root)
    assert (attrs["gen_ai.request.model"], attrs["gen_ai.response.model"], attrs["llm_gateway.failover"]) == (
        "claude-sonnet-4-6",
        "claude-sonnet-4-6",
        "false",
    )
    assert attrs["gen_ai.usage.output_tokens"] == str(final.usage.output_tokens)
    assert 0 < float(attrs["gen_ai.response.time_to_first_chunk"]) < 5  # seconds, streams only


def test_an_admission_refusal_is_traced_with_its_decision(
    traced: Stack, mocks: MockAdmin, receiver: tuple[Receiver, int]
) -> None:
    sink, _ = receiver
    client = openai.OpenAI(base_url=traced.base_url + "/v1", api_key=TIGHT_KEY, max_retries=0, timeout=20)
    ask = {"model": "gemini-3.5-flash", "messages": [{"role": "user", "content": "hi"}]}
    ids = [f"{n:032x}" for n in (1, 2)]  # each request its own trace, to find it
    client.chat.completions.create(**ask, extra_headers={"traceparent": f"00-{ids[0]}-{CLIENT_SPAN}-01"})
    with pytest.raises(openai.RateLimitError):  # one request per minute: refused before any provider
        client.chat.completions.create(**ask, extra_headers={"traceparent": f"00-{ids[1]}-{CLIENT_SPAN}-01"})
    admitted = attributes(request_span(sink.wait(ids[0], has_request_and(1))))
    refused_spans = sink.wait(ids[1], lambda spans: any(s.kind == SERVER for s in spans))
    refused = attributes(request_span(refused_spans))
    assert (admitted["llm_gateway.tenant"], admitted["llm_gateway.admission"]) == ("tight", "admitted")
    assert (refused["llm_gateway.tenant"], refused["llm_gateway.admission"]) == ("tight", "rejected")
    assert refused["llm_gateway.local_reply"] and refused["http.status_code"] == "429"
    assert refused["llm_gateway.attempts"] == "0" and not attempt_spans(refused_spans)
    assert request_span(refused_spans).name == "chat"  # the model is not known to a refusal
    assert mocks.stats("gemini")["requests"] == 1


def test_sampling_ratio_zero_traces_only_what_the_client_samples(
    tmp_path: Path, receiver: tuple[Receiver, int]
) -> None:
    sink, port = receiver
    stack = start_stack(tmp_path, traced_config(port, ratio=0.0))
    try:
        admin = MockAdmin(stack)
        client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=20)
        ask = {"model": "gpt-5.5", "messages": [{"role": "user", "content": "sampled?"}]}
        client.chat.completions.create(**ask)  # no traceparent: sampled at ratio 0, so not traced
        unsampled, _, flags = traceparent(admin, "openai")
        assert flags == "00"  # propagated all the same, marked not sampled
        client.chat.completions.create(
            **ask, extra_headers={"traceparent": f"00-{'c' * 32}-{CLIENT_SPAN}-00"}
        )
        assert traceparent(admin, "openai")[2] == "00"  # the client's "not sampled" is honoured
        client.chat.completions.create(
            **ask, extra_headers={"traceparent": f"00-{'d' * 32}-{CLIENT_SPAN}-01"}
        )
        assert traceparent(admin, "openai")[::2] == ("d" * 32, "01")
        assert request_span(sink.wait("d" * 32, has_request_and(1))).parent_span_id.hex() == CLIENT_SPAN
        # Exported in order: the sampled trace's batch came after the others would have.
        assert sink.of_trace(unsampled) == [] and sink.of_trace("c" * 32) == []
    finally:
        stack.stop()


def test_tracing_settings_need_a_restart(traced: Stack) -> None:
    data = yaml.safe_load(traced.config.text)
    data["tracing"]["sampling_ratio"] = 0.5
    with pytest.raises(ConfigError) as e:
        traced.apply(yaml.safe_dump(data))
    assert any("tracing: changing it needs a restart" in p for p in e.value.problems)


# ---- configuration and rendering ---------------------------------------------------------------
def parsed(tracing: Any) -> Any:
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["tracing"] = tracing
    return parse_config(yaml.safe_dump(data), "gw.yaml")


@pytest.mark.parametrize(
    ("tracing", "problem"),
    [
        ({"otlp_endpoint": "http://collector:4317"}, "tracing.otlp_endpoint: String should match pattern"),
        ({"otlp_endpoint": "collector"}, "tracing.otlp_endpoint: String should match pattern"),
        (
            {"otlp_endpoint": "collector:70000"},
            "tracing.otlp_endpoint: Value error, the port must be 1 to 65535",
        ),
        (
            {"otlp_endpoint": "collector:4317", "sampling_ratio": 1.5},
            "tracing.sampling_ratio: Input should be less",
        ),
        ({"otlp_endpoint": "collector:4317", "ratio": 0.1}, "tracing.ratio: unknown field"),
        ({"sampling_ratio": 0.1}, "tracing.otlp_endpoint: Field required"),
    ],
)
def test_bad_tracing_settings_are_named(tracing: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        parsed(tracing)
    assert any(p.startswith(f"gw.yaml: {problem}") for p in e.value.problems), e.value.problems


def test_tracing_off_renders_nothing() -> None:
    text = yaml.safe_dump(envoy_config.render(parsed(None)))
    for word in ("tracing", "otlp", P.TRACE_NAMESPACE, P.METADATA_PROVIDER_KEY, "opentelemetry"):
        assert word not in text, word


def test_tracing_on_passes_envoy_validate(tmp_path: Path) -> None:
    cfg = parsed({"otlp_endpoint": "otel-collector.observability:4317", "sampling_ratio": 0.25})
    rendered = envoy_config.render(cfg)
    hcm = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    sampler = hcm["tracing"]["provider"]["typed_config"]["sampler"]["typed_config"]["wrapped_sampler"]
    assert sampler["typed_config"]["sampling_percentage"] == {"numerator": 250_000, "denominator": "MILLION"}
    (otlp,) = [c for c in rendered["static_resources"]["clusters"] if c["name"] == envoy_config.OTLP_CLUSTER]
    assert otlp["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"
    ] == {"address": "otel-collector.observability", "port_value": 4317}
    out = tmp_path / "envoy.yaml"
    out.write_text(yaml.safe_dump(rendered))
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(out)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---- the request path: what the router stage adds ----------------------------------------------
def tracing_on(data: dict[str, Any]) -> None:
    data["tracing"] = {"otlp_endpoint": "127.0.0.1:4317"}


def test_span_fields_of_a_failover_and_only_known_attributes() -> None:
    state = state_of(tracing_on)
    p = do_plan(state, OPENAI, {**CHAT, "model": "gpt-5.5", "stream": True})
    assert isinstance(p, RoutePlan)
    planned = trace.planned(p)
    assert planned == {
        P.TRACE_SPAN_NAME: "chat gpt-5.5",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-5.5",
        "llm_gateway.tenant": "demo",
        "llm_gateway.primary_backend": "openai/gpt-5.5",
        "llm_gateway.admission": "unlimited",
    }
    done = F.finish(
        state, p, 200, "anthropic/claude-sonnet-4-6", Usage(3, 4), p.started.t0 + 0.25, p.started.t0 + 1
    )
    finished = trace.finished(state, p, done)
    assert finished == {
        "llm_gateway.failover": True,
        "gen_ai.response.model": "claude-sonnet-4-6",
        "gen_ai.response.time_to_first_chunk": pytest.approx(0.25),
    }
    refused = trace.local_reply(
        p.started, Answer(429, b"{}", reason="rate_limit", admission="tenant_requests")
    )
    # Envoy is told about every attribute the stage sets (its custom tags).
    for fields in (planned, finished, refused):
        assert set(fields) - {P.TRACE_SPAN_NAME} <= set(P.TRACE_ATTRIBUTES)
    assert refused["llm_gateway.admission"] == "rejected"


def headers_msg(headers: dict[str, str]) -> pb.HttpHeaders:
    return pb.HttpHeaders(
        headers=base_pb2.HeaderMap(
            headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()]
        )
    )


@pytest.mark.parametrize("on", [False, True], ids=["off", "on"])
def test_the_router_stage_adds_span_fields_only_when_tracing_is_on(on: bool) -> None:
    stream = RouterStream(state_of(tracing_on if on else None))
    assert run(stream.on_request_headers(headers_msg(OPENAI))) is not None
    resp = run(
        stream.on_request_body(
            pb.HttpBody(
                body=b'{"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]}',
                end_of_stream=True,
            )
        )
    )
    assert (P.TRACE_NAMESPACE in resp.dynamic_metadata.fields) is on


def test_every_dialect_names_its_provider_as_the_genai_conventions_do() -> None:
    """``gen_ai.provider.name`` takes the OpenTelemetry GenAI semantic conventions' well-known
    values (gen-ai-spans, "gen_ai.provider.name"): a Bedrock span says ``aws.bedrock``, a
    Responses-API span ``openai`` (the provider, not its API), never a dialect's own name."""
    from ext_proc.dialects import DIALECTS

    well_known = {
        "anthropic", "aws.bedrock", "azure.ai.inference", "azure.ai.openai", "cohere", "deepseek",
        "gcp.gemini", "gcp.gen_ai", "gcp.vertex_ai", "groq", "ibm.watsonx.ai", "mistral_ai",
        "openai", "perplexity", "x_ai",
    }  # fmt: skip
    named = {name: d.genai_provider for name, d in DIALECTS.items()}
    assert all(v in well_known for v in named.values()), named
    assert named["bedrock"] == "aws.bedrock" and named["openai_responses"] == "openai"
