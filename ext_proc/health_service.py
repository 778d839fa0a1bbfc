"""The standard ``grpc.health.v1.Health`` service on an ext_proc worker's gRPC port.

Envoy's active health check of the ext_proc cluster and Kubernetes' ``grpc:``
probes ask it. A worker answers NOT_SERVING until its config is loaded and the
server started, SERVING while it serves, and NOT_SERVING again from the moment
it starts shutting down, so Envoy stops opening streams to it before it stops
accepting them. (Backend health, what this process learned about providers,
lives in ``health.py``.)
"""

from __future__ import annotations

import asyncio

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

# Health is reported for the whole server ("") and for the ext_proc service by name.
EXT_PROC_SERVICE = pb.DESCRIPTOR.services_by_name["ExternalProcessor"].full_name
SERVICES = (health.OVERALL_HEALTH, EXT_PROC_SERVICE)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class WorkerHealth:
    """The health service of one ``grpc.aio`` server."""

    def __init__(self) -> None:
        self.servicer = health.aio.HealthServicer()

    @classmethod
    async def add_to(cls, server: grpc.aio.Server) -> WorkerHealth:
        self = cls()
        # The servicer starts out SERVING for "": a worker is not, until it says so.
        for service in SERVICES:
            await self.servicer.set(service, NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
        return self

    async def serving(self) -> None:
        for service in SERVICES:
            await self.servicer.set(service, SERVING)

    async def shutting_down(self, delay: float = 0.0) -> None:
        """NOT_SERVING for good (later ``serving()`` calls are ignored), then
        ``delay`` seconds of serving on, for health checkers to notice."""
        await self.servicer.enter_graceful_shutdown()
        if delay > 0:
            await asyncio.sleep(delay)
