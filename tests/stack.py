"""Start the real gateway (Envoy + ext_proc + mock providers) on free ports for tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from ext_proc.config import DEFAULT_CONFIG
from gateway_tools.supervisor import Stack


def free_ports(n: int) -> list[int]:
    """n distinct ports free right now (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def config_on_free_ports(base: dict[str, Any] | None = None, workers: int = 1) -> dict[str, Any]:
    """The default config (or ``base``) with every port moved to a free one.

    ext_proc ports for several workers are consecutive; the block is probed
    as a whole.
    """
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text()) if base is None else base
    listen, admin, *rest = free_ports(2 + len(cfg["providers"]))
    cfg["listen"] = {"address": "127.0.0.1", "port": listen}
    cfg["admin"] = {"address": "127.0.0.1", "port": admin}
    taken = {listen, admin, *rest}
    grpc_base = _consecutive_free(workers, taken)
    metrics_base = _consecutive_free(workers, taken | set(range(grpc_base, grpc_base + workers)))
    cfg["ext_proc"] = {
        **cfg.get("ext_proc", {}),
        "address": "127.0.0.1",
        "port": grpc_base,
        "metrics_port": metrics_base,
        "workers": workers,
    }
    for (_name, p), port in zip(cfg["providers"].items(), rest, strict=True):
        if p.get("mock"):
            path = "/v1" if p["dialect"] in ("openai", "openai_responses") else ""
            p["base_url"] = f"http://127.0.0.1:{port}{path}"
    return cfg


def _consecutive_free(n: int, taken: set[int] = frozenset()) -> int:  # type: ignore[assignment]
    """``n`` consecutive free ports, none of them already handed out (``taken``)."""
    for _ in range(50):
        (start,) = free_ports(1)
        block = range(start, start + n)
        if start + n < 65535 and not taken.intersection(block) and all(_free(p) for p in block):
            return start
    raise RuntimeError("no block of free ports")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def start_stack(tmp: Path, cfg: dict[str, Any], env: dict[str, str] | None = None) -> Stack:
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return Stack(path, run_dir=tmp / "run", env=env or {}).start()


# AWS credentials of the test account the Bedrock mocks verify signatures with.
AWS_KEY_ID = "AKIDGATEWAYTEST"
AWS_SECRET = "gateway-test-secret-key"
AWS_REGION = "us-east-1"


@contextmanager
def aws_credentials(tmp: Path, **extra: str) -> Iterator[dict[str, str]]:
    """The environment botocore's chain reads, for this process and the stack it starts:
    the test account in AWS_* variables, shared files of the test's own (``tmp``), and no
    instance metadata (nothing may ever reach AWS)."""
    env = {
        "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "aws-credentials"),
        "AWS_CONFIG_FILE": str(tmp / "aws-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
        **extra,
    }
    with pytest.MonkeyPatch.context() as mp:
        for name in (
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_ROLE_ARN",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ):
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        yield env


def bedrock_provider(**extra: Any) -> dict[str, Any]:
    """A mock Bedrock provider (its port is set by ``config_on_free_ports``)."""
    return {
        "dialect": "bedrock",
        "base_url": "http://127.0.0.1:1",
        "aws_region": AWS_REGION,
        "mock": True,
        **extra,
    }
