"""An OTLP/gRPC trace sink for the traced scenario: accepts every export, keeps nothing.

The traced scenario measures what producing and exporting spans costs the
gateway, so the collector must cost as little as possible and never push back:
it answers each ``TraceService/Export`` with an empty (successful) response
without decoding the spans (no OpenTelemetry package needed). Envoy's own
``tracing.opentelemetry.spans_sent`` counter says how many spans it exported.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
from typing import Any

import grpc

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def traced(config: dict[str, Any], port: int) -> dict[str, Any]:
    """``config`` with every request traced (ratio 1.0, the dearest setting) to the sink on ``port``."""
    out = copy.deepcopy(config)
    out["tracing"] = {
        "otlp_endpoint": f"127.0.0.1:{port}",
        "sampling_ratio": 1.0,
        "service_name": "llm-gateway-bench",
    }
    return out


async def _export(request: bytes, context: Any) -> bytes:
    return b""  # an empty ExportTraceServiceResponse: all accepted


class _Handler(grpc.GenericRpcHandler):
    def service(self, details: Any) -> grpc.RpcMethodHandler | None:
        if details.method == EXPORT:
            return grpc.unary_unary_rpc_method_handler(_export)  # bytes in, bytes out
        return None


async def serve(port: int) -> None:
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.so_reuseport", 0)]
    )
    server.add_generic_rpc_handlers((_Handler(),))
    if not server.add_insecure_port(f"127.0.0.1:{port}"):
        raise OSError(f"cannot listen on 127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
