"""Start the real gateway (Envoy + ext_proc + mock providers) on free ports for tests."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from ext_proc.config import DEFAULT_CONFIG
from gateway_tools.ports import free_ports
from gateway_tools.supervisor import Stack

__all__ = ["free_ports"]


def config_on_free_ports(base: dict[str, Any] | None = None, workers: int = 1) -> dict[str, Any]:
    """The default config (or ``base``) with every port moved to a free one.

    Every port comes from one block below the kernel's ephemeral range
    (``gateway_tools.ports``): ext_proc ports for several workers are consecutive.
    """
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text()) if base is None else base
    # One block: listen, a spare port (tests move listen or admin to listen + 1 and expect
    # a port nobody uses), admin, the workers' gRPC ports, their metrics ports, the providers.
    block = free_ports(3 + 2 * workers + len(cfg["providers"]), consecutive=True)
    listen, _spare, admin = block[:3]
    grpc_base, metrics_base = block[3], block[3 + workers]
    rest = block[3 + 2 * workers :]
    cfg["listen"] = {"address": "127.0.0.1", "port": listen}
    cfg["admin"] = {"address": "127.0.0.1", "port": admin}
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


def start_stack(tmp: Path, cfg: dict[str, Any], env: dict[str, str] | None = None) -> Stack:
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return Stack(path, run_dir=tmp / "run", env=env or {}).start()


# AWS credentials of the test account the Bedrock mocks verify signatures with.
AWS_KEY_ID = "AKIDGATEWAYTEST"
AWS_SECRET = "gateway-test-secret-key"
AWS_REGION = "us-east-1"


@contextmanager
def aws_credentials(tmp: Path, static: bool = True, **extra: str) -> Iterator[dict[str, str]]:
    """The environment botocore's chain reads, for this process and the stack it starts:
    the test account in AWS_* variables (``static``; else no keys at all, for another source
    of the chain), shared files of the test's own (``tmp``), and no instance metadata
    (nothing may ever reach AWS)."""
    keys = {"AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET} if static else {}
    env = {
        **keys,
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "aws-credentials"),
        "AWS_CONFIG_FILE": str(tmp / "aws-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
        **extra,
    }
    with pytest.MonkeyPatch.context() as mp:
        for name in (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL",
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


def written_by(stack: Stack, logged: str) -> dict[str, str]:
    """What the stack wrote, for a scan for secrets: each ext_proc's /metrics and the run's logs
    (the mock providers' own log is a test double's and holds the secrets it verifies with),
    read once the access log shows ``logged`` (Envoy flushes it every second)."""
    run = stack.run_dir
    assert run is not None
    texts: dict[str, str] = {}
    for port in stack.config.metrics_ports():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            texts[f"metrics:{port}"] = r.read().decode()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and logged not in stack.access_log.read_text():
        time.sleep(0.1)
    texts.update(
        {p.name: p.read_text(errors="replace") for p in run.glob("*.log") if p.name != "mock-providers.log"}
    )
    assert {"ext_proc-0.log", "envoy.log", "access.log"} <= set(texts)
    return texts


def bedrock_provider(**extra: Any) -> dict[str, Any]:
    """A mock Bedrock provider (its port is set by ``config_on_free_ports``)."""
    return {
        "dialect": "bedrock",
        "base_url": "http://127.0.0.1:1",
        "aws_region": AWS_REGION,
        "mock": True,
        **extra,
    }
