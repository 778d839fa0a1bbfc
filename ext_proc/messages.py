"""Small builders for ext_proc protocol messages.

Every message costs a round trip on the data path, so builders stay thin and
the constant ones are built once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2

from .protocol import ATTRIBUTES_KEY

OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD

CONTINUE_REQUEST_HEADERS = pb.ProcessingResponse(request_headers=pb.HeadersResponse())
CONTINUE_RESPONSE_BODY = pb.ProcessingResponse(response_body=pb.BodyResponse())
CONTINUE_REQUEST_BODY = pb.ProcessingResponse(request_body=pb.BodyResponse())


def headers_of(msg: pb.HttpHeaders) -> dict[str, str]:
    """Header map as a dict (values arrive in ``raw_value``, docs/architecture.md, Envoy behaviour 7)."""
    return {h.key: h.raw_value.decode("latin-1") for h in msg.headers.headers}


def attribute(req: pb.ProcessingRequest, name: str) -> str | float | bool | None:
    """One attribute value sent with this message, or None."""
    attrs = req.attributes.get(ATTRIBUTES_KEY)
    if attrs is None:
        return None
    value = attrs.fields.get(name)
    if value is None:
        return None
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    return None


# Header values a request sets are mostly the same from request to request (route,
# primary, config version, a provider's credentials): built once, copied by upb in C.
# Values that vary (content-length) only fill it up to the bound, which clears it.
_OPTIONS: dict[tuple[str, str], base_pb2.HeaderValueOption] = {}
_OPTIONS_BOUND = 4096


def _option(key: str, value: str) -> base_pb2.HeaderValueOption:
    found = _OPTIONS.get((key, value))
    if found is None:
        if len(_OPTIONS) >= _OPTIONS_BOUND:
            _OPTIONS.clear()
        found = _OPTIONS[key, value] = base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=key, raw_value=value.encode("latin-1")), append_action=OVERWRITE
        )
    return found


def header_mutation(
    set_headers: dict[str, str] | None = None, remove: Iterable[str] = ()
) -> pb.HeaderMutation:
    return fill_header_mutation(pb.HeaderMutation(), set_headers, remove)


def fill_header_mutation(
    target: pb.HeaderMutation, set_headers: dict[str, str] | None, remove: Iterable[str]
) -> pb.HeaderMutation:
    """``target`` (a field of the message being built) set and removing these headers."""
    if set_headers:
        target.set_headers.extend([_option(k, v) for k, v in set_headers.items()])
    target.remove_headers.extend(remove)
    return target


def request_body_response(
    *,
    set_headers: dict[str, str] | None = None,
    remove: Iterable[str] = (),
    body: bytes | None = None,
    clear_route_cache: bool = False,
) -> pb.ProcessingResponse:
    resp = pb.ProcessingResponse()
    common = resp.request_body.response  # set through the parent (see ``streamed_body``)
    if clear_route_cache:
        common.clear_route_cache = True
    if set_headers or remove:
        fill_header_mutation(common.header_mutation, set_headers, remove)
    if body is not None:
        common.body_mutation.body = body
    return resp


def response_body_response(body: bytes | None) -> pb.ProcessingResponse:
    """Replace this response chunk with ``body`` (None: pass it unchanged)."""
    if body is None:
        return CONTINUE_RESPONSE_BODY
    common = pb.CommonResponse()
    if body:
        common.body_mutation.body = body
    else:
        common.body_mutation.clear_body = True
    return pb.ProcessingResponse(response_body=pb.BodyResponse(response=common))


def streamed_body(body: bytes, end: bool) -> pb.ProcessingResponse:
    """Full-duplex mode: response bytes to send on; ``end`` ends the response.

    Set through the parent's fields, not built from nested constructors: a
    message per stream event, and that measured four times cheaper (0.8 us
    against 3.3 us)."""
    resp = pb.ProcessingResponse()
    out = resp.response_body.response.body_mutation.streamed_response
    out.body = body
    if end:
        out.end_of_stream = True
    return resp


def immediate(
    status: int, body: bytes, headers: dict[str, str] | None = None, details: str = ""
) -> pb.ProcessingResponse:
    """A local reply sent without touching any upstream (docs/architecture.md, Envoy behaviour 8)."""
    all_headers = {"content-type": "application/json"}
    if headers:
        all_headers.update(headers)
    return pb.ProcessingResponse(
        immediate_response=pb.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=status),
            headers=header_mutation(all_headers),
            body=body,
            details=details,
        )
    )


def continue_for(kind: str) -> pb.ProcessingResponse:
    """Pass-through answer for a phase a stage is not configured to change."""
    resp = pb.ProcessingResponse()
    getattr(resp, kind).SetInParent()
    return resp


def with_metadata(
    resp: pb.ProcessingResponse, namespace: str, fields: Mapping[str, object]
) -> pb.ProcessingResponse:
    """A copy of ``resp`` (which may be a shared constant) carrying dynamic metadata."""
    out = pb.ProcessingResponse()
    out.CopyFrom(resp)
    add_metadata(out, namespace, fields)
    return out


def add_metadata(resp: pb.ProcessingResponse, namespace: str, fields: Mapping[str, object]) -> None:
    """Dynamic metadata for Envoy (access log, response headers) under ``namespace``."""
    set_struct(resp.dynamic_metadata.fields[namespace].struct_value, fields)


def set_struct(target: struct_pb2.Struct, fields: Mapping[str, object]) -> None:
    """Fill a Struct from flat scalars; ``Struct.update`` walks every value
    through generic Python code, several times slower on the per-request path."""
    out = target.fields
    for key, value in fields.items():
        if isinstance(value, bool):
            out[key].bool_value = value
        elif isinstance(value, (int, float)):
            out[key].number_value = value
        elif isinstance(value, str):
            out[key].string_value = value
        else:
            target.update({key: value})
