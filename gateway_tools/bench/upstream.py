"""The bench's upstreams: canned bodies from Envoy, paced streams from asyncio.

The upstream must never be the bottleneck, so non-streamed answers come from an
Envoy ``direct_response`` listener (one route per dialect path, each checking
that dialect's provider key: a missing or wrong key gets a 401, so the bench
also proves the gateway sets credentials). Streams need pacing, which Envoy
cannot do, so a minimal asyncio HTTP/1.1 server sends them.

Every streamed text delta carries the server's ``time.monotonic()`` when it
was written. The clock is system-wide on Linux, so the client can compute each
event's delivery latency through whatever sits in between (bare Envoy, the
gateway) without trusting pacing.

Also renders the floor: a bare Envoy (no ext_proc) in front of both upstreams.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from typing import Any

import orjson

from ext_proc.envoy_config import grpc_protocol_options

STREAM_EVENTS = (
    50  # message_start, content_block_start, 45 deltas, content_block_stop, message_delta, message_stop
)
DELTAS = STREAM_EVENTS - 5
PACE_HEADER = "x-bench-pace-ms"
EVENTS_HEADER = "x-bench-events"
TARGET_HEADER = "x-bench-target"  # floor only: "stream" selects the paced upstream
KEY_ENV = "BENCH_STREAM_KEY"

_REPLY = (
    "Load balancers hum, / requests drift like autumn leaves, / each finds a warm host. "
    "The gateway reads the model name, picks the backend, translates, and steps aside."
)

OPENAI_COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "bench-passthrough",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": _REPLY},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 24, "completion_tokens": 31, "total_tokens": 55},
}
# OpenAI's legacy completions object (code completion: /v1/completions, fill-in-the-middle)
OPENAI_TEXT_COMPLETION = {
    "id": "cmpl-bench",
    "object": "text_completion",
    "created": 1_700_000_000,
    "model": "bench-passthrough",
    "choices": [{"index": 0, "text": "    return a + b\n", "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 24, "completion_tokens": 8, "total_tokens": 32},
}
ANTHROPIC_MESSAGE = {
    "id": "msg_bench",
    "type": "message",
    "role": "assistant",
    "model": "claude-bench",
    "content": [{"type": "text", "text": _REPLY}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 24, "output_tokens": 31},
}
_UNAUTHORIZED = (
    b'{"type":"error","error":{"type":"authentication_error","message":"bench upstream: bad key"}}'
)


def _addr(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _hcm(name: str, routes: list[dict[str, Any]], filters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
            ".HttpConnectionManager",
            "stat_prefix": name,
            "codec_type": "AUTO",
            "route_config": {
                "name": name,
                "max_direct_response_body_size_bytes": 1 << 20,
                "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}],
            },
            "http_filters": [
                *filters,
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                        "suppress_envoy_headers": True,
                    },
                },
            ],
        },
    }


def _bootstrap(admin_port: int, listener: dict[str, Any], clusters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "admin": {"address": _addr(admin_port)},
        "static_resources": {"listeners": [listener], "clusters": clusters},
        "layered_runtime": {
            "layers": [
                {"name": "static", "static_layer": {"overload.global_downstream_max_connections": 50_000}}
            ]
        },
    }


def _canned_route(path: str, header: str, value: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "match": {"path": path, "headers": [{"name": header, "string_match": {"exact": value}}]},
        "direct_response": {"status": 200, "body": {"inline_string": orjson.dumps(body).decode()}},
        "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}],
    }


def canned_bootstrap(port: int, admin_port: int, openai_key: str, anthropic_key: str) -> dict[str, Any]:
    """Envoy answering the OpenAI and Anthropic chat paths with canned bodies.

    A buffer filter reads the whole request first: a direct response sent
    before a large body has arrived would make Envoy close the connection,
    and the gateway would pay a new upstream connection per request.
    """
    routes = [
        _canned_route("/v1/chat/completions", "authorization", f"Bearer {openai_key}", OPENAI_COMPLETION),
        _canned_route("/v1/completions", "authorization", f"Bearer {openai_key}", OPENAI_TEXT_COMPLETION),
        _canned_route("/v1/messages", "x-api-key", anthropic_key, ANTHROPIC_MESSAGE),
        {
            "match": {"prefix": "/"},
            "direct_response": {"status": 401, "body": {"inline_string": _UNAUTHORIZED.decode()}},
        },
    ]
    buffer = {
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": 8 << 20,
        },
    }
    listener = {
        "name": "canned",
        "address": _addr(port),
        "per_connection_buffer_limit_bytes": 8 << 20,
        "filter_chains": [{"filters": [_hcm("canned", routes, [buffer])]}],
    }
    return _bootstrap(admin_port, listener, [])


def _cluster(name: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _addr(port)}}]}],
        },
        "per_connection_buffer_limit_bytes": 32 << 20,
        "circuit_breakers": {
            "thresholds": [
                {"max_requests": 100_000, "max_pending_requests": 100_000, "max_connections": 100_000}
            ]
        },
    }


def floor_bootstrap(
    port: int,
    admin_port: int,
    canned_port: int,
    stream_port: int,
    filters: list[dict[str, Any]] | None = None,
    grpc_clusters: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Bare Envoy, no ext_proc: the same listener limits, proxying to the same upstreams.

    ``filters`` and ``grpc_clusters`` (name: port, HTTP/2) add HTTP filters and
    the gRPC services they call, for references built on the floor.
    """
    routes = [
        {
            "match": {
                "prefix": "/",
                "headers": [{"name": TARGET_HEADER, "string_match": {"exact": "stream"}}],
            },
            "route": {"cluster": "paced", "timeout": "0s"},
        },
        {"match": {"prefix": "/"}, "route": {"cluster": "canned", "timeout": "0s"}},
    ]
    listener = {
        "name": "floor",
        "address": _addr(port),
        "per_connection_buffer_limit_bytes": 32 << 20,
        "filter_chains": [{"filters": [_hcm("floor", routes, filters or [])]}],
    }
    clusters = [_cluster("canned", canned_port), _cluster("paced", stream_port)]
    for name, grpc_port in (grpc_clusters or {}).items():
        cluster = _cluster(name, grpc_port)
        cluster["typed_extension_protocol_options"] = grpc_protocol_options()
        clusters.append(cluster)
    return _bootstrap(admin_port, listener, clusters)


# ---- paced Anthropic stream server ----------------------------------------------------


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


_HEAD = _event(
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_bench_stream",
            "type": "message",
            "role": "assistant",
            "model": "claude-bench",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 24, "output_tokens": 1},
        },
    },
)
_BLOCK_START = _event(
    "content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
)
_TAIL = [
    _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
    _event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": DELTAS},
        },
    ),
    _event("message_stop", {"type": "message_stop"}),
]
_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def stamped_delta() -> bytes:
    """A text delta whose text is the send time (monotonic seconds)."""
    return (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"' + f"{time.monotonic():.6f} ".encode() + b'"}}\n\n'
    )


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _read_request(reader: asyncio.StreamReader) -> dict[str, str] | None:
    """Headers of the next request on a keep-alive connection (body read and dropped)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    if length:
        await reader.readexactly(length)
    return headers


async def _serve_stream(writer: asyncio.StreamWriter, pace: float, deltas: int) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    writer.write(_STREAM_HEAD + _chunk(_HEAD) + _chunk(_BLOCK_START))
    await writer.drain()
    for i in range(1, deltas + 1):
        # Paced against the start time, so a late wake-up does not push every later event.
        delay = start + i * pace - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        writer.write(_chunk(stamped_delta()))
        await writer.drain()
    writer.write(b"".join(_chunk(e) for e in _TAIL) + b"0\r\n\r\n")
    await writer.drain()


async def _connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
    try:
        while (headers := await _read_request(reader)) is not None:
            if headers.get("x-api-key") != key:
                writer.write(
                    b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(_UNAUTHORIZED), _UNAUTHORIZED)
                )
                await writer.drain()
                continue
            pace = float(headers.get(PACE_HEADER, "2")) / 1000
            deltas = max(1, int(headers.get(EVENTS_HEADER, str(STREAM_EVENTS))) - 5)
            await _serve_stream(writer, pace, deltas)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def serve_streams(port: int, key: str) -> None:
    server = await asyncio.start_server(lambda r, w: _connection(r, w, key), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (less load-generator CPU on a shared machine), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: list[str] | None = None) -> None:
    """Run the paced stream server: ``python -m gateway_tools.bench.upstream --port P`` (key in $BENCH_STREAM_KEY)."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    loop = new_event_loop()
    with contextlib.suppress(KeyboardInterrupt):
        loop.run_until_complete(serve_streams(args.port, os.environ[KEY_ENV]))


if __name__ == "__main__":
    main()
