"""A do-nothing ext_proc: the ceiling of any Python ext_proc on this machine.

It runs the gateway's gRPC stack with the gateway's server options and is
wired into Envoy with the router stage's processing modes, so Envoy sends it
exactly the messages a translated request costs (request headers, the
buffered request body, each response chunk). It answers every message with
"continue" without looking at it (a response chunk, in full duplex: with the
same bytes).

The ``noop`` probes send the floors' requests through it. Their gap to the
floor is what Envoy's ext_proc filter and a gRPC round trip per message cost
before the gateway does any work; the gateway's gap to them is its own work.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pbg

from ext_proc.envoy_config import ROUTER_STAGE_MODE
from ext_proc.messages import continue_for, streamed_body
from ext_proc.server import server_options

from . import upstream

_CONTINUE = {
    kind: continue_for(kind)
    for kind in ("request_headers", "request_body", "response_headers", "response_trailers")
}


class NoopProcessor(pbg.ExternalProcessorServicer):
    async def Process(self, request_iterator: Any, context: Any) -> None:
        eof = grpc.aio.EOF
        while True:
            req = await context.read()
            if req is eof:
                return
            kind = req.WhichOneof("request")
            if kind == "response_body":
                await context.write(streamed_body(req.response_body.body, req.response_body.end_of_stream))
            else:
                await context.write(_CONTINUE[kind])


async def serve(port: int) -> None:
    server = grpc.aio.server(options=server_options())
    pbg.add_ExternalProcessorServicer_to_server(NoopProcessor(), server)
    if not server.add_insecure_port(f"127.0.0.1:{port}"):
        raise OSError(f"cannot listen on 127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def bootstrap(
    port: int, admin_port: int, canned_port: int, stream_port: int, ext_proc_port: int
) -> dict[str, Any]:
    """The floor's Envoy plus an ext_proc filter on the no-op server."""
    ext_proc = {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": "noop"}},
            "processing_mode": ROUTER_STAGE_MODE,
            "message_timeout": "5s",
        },
    }
    return upstream.floor_bootstrap(
        port, admin_port, canned_port, stream_port, filters=[ext_proc], grpc_clusters={"noop": ext_proc_port}
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
