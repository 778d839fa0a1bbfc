"""A provider refused the gateway's own credentials, or has no model by the name the config
gives it: a backend failure, never the client's 401 or 404.

Envoy runs this upstream stage only for attempt responses with status 401, 403
or 404 (a matcher on the status), below the answer guard and the observer. The
status becomes 502, so Envoy fails over to the next tier as for any 5xx and the
observer counts the failure; the body says, in the backend's dialect (the
router stage renders it again in the client's), that the provider refused the
gateway's credentials (or that the backend's model is missing), in the provider's
words (``request.attempt.refused``).
"""

from __future__ import annotations

from typing import Any

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from .. import messages as M
from .. import protocol as P
from ..request.attempt import refused
from ..state import GatewayState


async def run(state: GatewayState, ctx: Any) -> None:
    backend, status = "", 0
    while True:
        req = await ctx.read()
        if req is grpc.aio.EOF:
            return
        kind = req.WhichOneof("request")
        if kind == "response_headers":
            backend = str(M.attribute(req, P.ATTR_BACKEND) or "")
            status = int(M.headers_of(req.response_headers).get(":status", "0") or 0)
            if status == 401 and backend:
                # A token refused before its expiry (revoked): fetch a new one now. The
                # observer, above this stage, sees the 502 this stage makes of it.
                state.router.credential_rejected(backend)
            mutation = M.header_mutation(
                {":status": "502", "content-type": "application/json"}, remove=["content-length"]
            )
            await ctx.write(
                pb.ProcessingResponse(
                    response_headers=pb.HeadersResponse(response=pb.CommonResponse(header_mutation=mutation))
                )
            )
        elif kind == "response_body":
            await ctx.write(M.response_body_response(refused(state, backend, status, req.response_body.body)))
        else:
            await ctx.write(M.continue_for(kind))
