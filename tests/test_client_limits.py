"""What a client may do to the gateway, over raw HTTP: slow clients are let go
within the listener's bounds, and every refusal Envoy makes itself (too slow,
too large, HTTP/1.0, unknown path) is a clear status with a JSON body, in the
client's dialect when its request headers said it (before them, the default
dialect's). Every read is bounded by a socket deadline.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from gateway_tools.supervisor import Stack
from tests.conftest import DEMO_KEY, MockAdmin, clean_mocks
from tests.stack import config_on_free_ports, start_stack
from tests.test_failover import request_for

# client dialect -> (path of a chat request, its key header)
CHAT = {
    "openai": ("/v1/chat/completions", f"authorization: Bearer {DEMO_KEY}"),
    "anthropic": ("/v1/messages", f"x-api-key: {DEMO_KEY}\r\nanthropic-version: 2023-06-01"),
    "gemini": ("/v1beta/models/gpt-5.5:generateContent", f"x-goog-api-key: {DEMO_KEY}"),
}
BODY = b'{"model": "gpt-5.5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}'


def error_of(dialect: str, body: bytes) -> tuple[str, str]:
    """(error type or code in the dialect's own shape, message)."""
    obj = json.loads(body)
    if dialect == "anthropic":
        assert obj["type"] == "error"
        return obj["error"]["type"], obj["error"]["message"]
    if dialect == "gemini":
        return obj["error"]["status"], obj["error"]["message"]
    return f"{obj['error']['type']}/{obj['error']['code']}", obj["error"]["message"]


@pytest.fixture(scope="module")
def gateway_limits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    cfg = config_on_free_ports()
    cfg["listen"].update(request_headers_timeout_ms=1500, request_timeout_ms=3000, idle_timeout_ms=2000)
    cfg["providers"]["anthropic"]["forward_headers"] = ["Anthropic-Beta"]
    stack = start_stack(tmp_path_factory.mktemp("limits"), cfg)
    yield stack
    stack.stop()


class Raw:
    """One client connection; ``answer`` reads until the gateway closes it or the deadline."""

    def __init__(self, stack: Stack):
        self.sock = socket.create_connection((stack.config.listen.address, stack.config.listen.port))
        self.sock.settimeout(0.25)

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def trickle(self, data: bytes, per_byte: float, deadline: float) -> bool:
        """Send one byte every ``per_byte`` s; False once the gateway answered or closed."""
        for byte in data:
            try:
                self.sock.send(bytes([byte]))
                self.sock.recv(1, socket.MSG_PEEK)  # waits per_byte (the socket timeout)
                return False  # an answer, or the end of the connection
            except TimeoutError:
                pass
            except OSError:
                return False
            if time.monotonic() > deadline:
                return False
        return True

    def answer(self, deadline: float) -> tuple[int, dict[str, str], bytes]:
        """The response, once complete (or what came before the connection closed or the deadline)."""
        raw = b""
        while time.monotonic() < deadline and not complete(raw):
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            raw += chunk
        return parse(raw)


def complete(raw: bytes) -> bool:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        None,
    )
    return len(body) >= length if length is not None else body.endswith(b"0\r\n\r\n")


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head:
        return 0, {}, b""
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        out = b""
        while body:
            size, _, rest = body.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, body = out + rest[:n], rest[n + 2 :]
        body = out
    return int(lines[0].split()[1]), headers, body


def request_head(dialect: str, length: int) -> bytes:
    path, key = CHAT[dialect]
    return (
        f"POST {path} HTTP/1.1\r\nhost: gateway\r\n{key}\r\ncontent-type: application/json\r\n"
        f"content-length: {length}\r\n\r\n"
    ).encode()


def test_headers_sent_slowly_get_a_408(gateway_limits: Stack) -> None:
    t0 = time.monotonic()
    with Raw(gateway_limits) as c:
        c.trickle(request_head("openai", len(BODY)), 0.25, t0 + 15)
        status, headers, body = c.answer(t0 + 15)
    assert time.monotonic() - t0 < 15
    assert status == 408 and headers["content-type"] == "application/json"
    # Before its headers the dialect is unknown: the default one's shape.
    assert error_of("openai", body) == (
        "invalid_request_error/None",
        "request not received in time: the gateway "
        "waits 1.5 s for the request headers and 3 s for the whole request",
    )


@pytest.mark.parametrize("dialect", list(CHAT))
def test_body_sent_slowly_gets_a_408_in_the_client_dialect(gateway_limits: Stack, dialect: str) -> None:
    t0 = time.monotonic()
    with Raw(gateway_limits) as c:
        c.send(request_head(dialect, len(BODY)))
        assert not c.trickle(BODY, 0.25, t0 + 15), "the whole body went through at 4 bytes per second"
        status, _, body = c.answer(t0 + 15)
    assert time.monotonic() - t0 < 15
    assert status == 408
    etype, message = error_of(dialect, body)
    assert (
        etype
        == {
            "openai": "invalid_request_error/None",
            "anthropic": "invalid_request_error",
            "gemini": "INVALID_ARGUMENT",
        }[dialect]
    )
    assert message.startswith("request not received in time")


def test_idle_connection_is_closed(gateway_limits: Stack) -> None:
    t0 = time.monotonic()
    with Raw(gateway_limits) as c:
        assert c.answer(t0 + 15) == (0, {}, b"")  # closed without a word
    assert time.monotonic() - t0 < 15


def test_http_10_gets_a_426_with_a_json_body(gateway_limits: Stack) -> None:
    with Raw(gateway_limits) as c:
        c.send(b"POST /v1/chat/completions HTTP/1.0\r\nhost: gateway\r\ncontent-length: 2\r\n\r\n{}")
        status, headers, body = c.answer(time.monotonic() + 10)
    assert status == 426 and headers["content-type"] == "application/json"
    assert error_of("openai", body)[1] == "HTTP/1.0 is not supported: use HTTP/1.1 or HTTP/2"


def test_oversized_headers_get_a_431_with_a_json_body(gateway_limits: Stack) -> None:
    with Raw(gateway_limits) as c:
        c.send(b"GET /v1/models HTTP/1.1\r\nhost: gateway\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n")
        status, headers, body = c.answer(time.monotonic() + 10)
    assert status == 431 and headers["content-type"] == "application/json"
    assert error_of("openai", body) == (
        "invalid_request_error/request_too_large",
        "request headers are larger than the gateway's limit of 60 KiB",
    )


@pytest.mark.parametrize("dialect", list(CHAT))
def test_oversized_body_gets_a_413_saying_the_limit(gateway_limits: Stack, dialect: str) -> None:
    size = 33 * 2**20
    with Raw(gateway_limits) as c:
        c.send(request_head(dialect, size))
        c.sock.settimeout(10)
        sent = 0
        try:
            while sent < size:
                sent += c.sock.send(b"x" * min(2**16, size - sent))
        except OSError:
            pass  # the gateway answered and closed before the whole body
        c.sock.settimeout(0.25)
        status, _, body = c.answer(time.monotonic() + 10)
    assert status == 413
    etype, message = error_of(dialect, body)
    assert (
        etype
        == {
            "openai": "invalid_request_error/request_too_large",
            "anthropic": "request_too_large",
            "gemini": "INVALID_ARGUMENT",
        }[dialect]
    )
    assert message == "request body is larger than the gateway's limit of 32 MiB"


@pytest.mark.parametrize(
    ("dialect", "key"),
    [
        ("openai", f"authorization: Bearer {DEMO_KEY}"),
        ("anthropic", f"x-api-key: {DEMO_KEY}"),
        ("gemini", f"x-goog-api-key: {DEMO_KEY}"),
    ],
)
def test_unknown_path_is_a_404_that_names_no_model(gateway_limits: Stack, dialect: str, key: str) -> None:
    with Raw(gateway_limits) as c:
        c.send(f"GET /v1/files HTTP/1.1\r\nhost: gateway\r\n{key}\r\n\r\n".encode())
        status, _, body = c.answer(time.monotonic() + 10)
    assert status == 404
    assert error_of(dialect, body) == (
        {
            "openai": "invalid_request_error/unknown_url",
            "anthropic": "not_found_error",
            "gemini": "NOT_FOUND",
        }[dialect],
        "no such endpoint: GET /v1/files",
    )


# Client headers that would act under the operator's key (organisation, project, beta
# features, billing project), or that are the client's own business.
CLIENT_EXTRAS = {
    "openai-organization": "org-of-the-client",
    "openai-project": "proj-of-the-client",
    "anthropic-beta": "some-beta-2099-01-01",
    "x-goog-user-project": "billing-of-the-client",
    "cookie": "session=client",
    "x-forwarded-for": "203.0.113.9",
    "x-foo": "bar",
    "user-agent": "client-sdk/1.0",
}


@pytest.fixture
def limits_mocks(gateway_limits: Stack) -> Iterator[MockAdmin]:
    with clean_mocks(gateway_limits) as admin:
        yield admin


def arrived(admin: MockAdmin, provider: str) -> dict[str, str]:
    return {k.lower(): v for k, v in admin.stats(provider)["last_request"]["headers"].items()}


def chat(stack: Stack, dialect: str, model: str) -> int:
    """A chat request carrying ``CLIENT_EXTRAS``; its status."""
    path, headers, body = request_for(dialect, model, False, "hi")
    req = urllib.request.Request(
        stack.base_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={**headers, **CLIENT_EXTRAS, "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


# What reaches a provider besides the allow-list: Envoy's host, framing and request id, and the
# gateway's credentials and version header.
GATEWAY_SET = {
    "host",
    "content-length",
    "x-request-id",
    "authorization",
    "x-api-key",
    "anthropic-version",
    "x-goog-api-key",
}


# provider of the stack -> the model whose first backend it is
FIRST_BACKEND = {"openai": "gpt-5.5", "anthropic": "claude-sonnet-4-6", "gemini": "gemini-3.5-flash"}


@pytest.mark.parametrize("provider", list(FIRST_BACKEND))
@pytest.mark.parametrize("dialect", list(CHAT))
def test_client_headers_reach_no_provider_by_default(
    gateway_limits: Stack, limits_mocks: MockAdmin, dialect: str, provider: str
) -> None:
    """Every provider of the stack gets the allow-list and what it lists itself, nothing else of
    ``CLIENT_EXTRAS``: each client dialect, passed through or translated."""
    assert chat(gateway_limits, dialect, FIRST_BACKEND[provider]) == 200
    got = arrived(limits_mocks, provider)
    listed = {h.lower() for h in gateway_limits.config.providers[provider].forward_headers}
    assert set(got) <= {"content-type", "accept", *GATEWAY_SET, *listed}, got
    assert {h for h in CLIENT_EXTRAS if h in got} == listed & set(CLIENT_EXTRAS), got


def test_a_listed_header_reaches_only_the_provider_that_lists_it(
    gateway_limits: Stack, limits_mocks: MockAdmin
) -> None:
    """providers.anthropic.forward_headers: [anthropic-beta] (and nothing else forwards it)."""
    assert chat(gateway_limits, "openai", "claude-sonnet-4-6") == 200
    got = arrived(limits_mocks, "anthropic")
    assert got["anthropic-beta"] == CLIENT_EXTRAS["anthropic-beta"]
    assert set(got) <= {"content-type", "accept", "anthropic-beta", *GATEWAY_SET}, got
    # Failed over to a provider that does not list it: removed on that attempt.
    limits_mocks.fault("anthropic", mode="error", status=503)
    assert chat(gateway_limits, "openai", "claude-sonnet-4-6") == 200
    got = arrived(limits_mocks, "openai")
    assert set(got) <= {"content-type", "accept", *GATEWAY_SET}, got
