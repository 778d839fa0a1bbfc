"""Cloud backends through the real stack: Google Vertex AI (Gemini and Claude) and Azure OpenAI.

Token refresh (short lifetimes, several expiries, a slow token endpoint that never delays a
request, a token file kept fresh by a sidecar), a refused credential failing over, Claude failing
over from Anthropic to Vertex under concurrent load (and back), Azure's content filter in every
client's dialect, start-up errors for credentials that cannot be loaded, and no secret in any log.
The clouds are mocks with their own token endpoints (tests/cloud.py); nothing reaches Google or
Microsoft.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import yaml
from google.genai import errors as genai_errors

from ext_proc.config import DEFAULT_CONFIG, ConfigError
from gateway_tools.mocks import BackgroundMocks, MockSpec, start_in_thread
from gateway_tools.supervisor import Stack
from tests.cloud import CLIENT_ID, cloud_config, cloud_providers, with_clouds
from tests.conftest import DEMO_KEY, MockAdmin, clean_mocks
from tests.stack import start_stack
from tests.test_failover import hammer
from tests.test_provider_headers import CLIENTS, check_withheld
from tests.test_translation_matrix import ADAPTERS, Ask, _error_of

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

AZURE_KEY = "azure-" + DEMO_KEY


def direct_providers() -> dict[str, Any]:
    """The default config's mock OpenAI, Anthropic and Gemini: the clouds' fallbacks."""
    return yaml.safe_load(DEFAULT_CONFIG.read_text())["providers"]


def auth_stats(stack: Stack, provider: str, update: dict[str, Any] | None = None) -> dict[str, Any]:
    """A cloud mock's token counts (``/_mock/auth``), after applying ``update``."""
    p = stack.config.providers[provider]
    req = urllib.request.Request(
        f"http://{p.host}:{p.port}/_mock/auth",
        method="POST" if update else "GET",
        data=json.dumps(update).encode() if update else None,
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def ask(stack: Stack, client: str, model: str, text: str, stream: bool = False) -> Any:
    return ADAPTERS[client](stack).ask(Ask(model, text, stream=stream))


# ---- tokens: refreshed before they expire, off the request path --------------------------------------


@pytest.fixture(scope="module")
def short_tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    """Every cloud mock issues tokens valid for 2 s; Azure also with a token file a test keeps fresh."""
    tmp = tmp_path_factory.mktemp("short-tokens")
    token_file = tmp / "entra-token"
    token_file.write_text("not-yet-a-token")  # the sidecar writes the real one once the cloud is up
    models = {
        "gemini-on-vertex": {"backends": [{"provider": "vertex_gemini", "model": "gemini-3.5-flash"}]},
        "claude-on-vertex": {"backends": [{"provider": "vertex_anthropic", "model": "claude-sonnet-4-6"}]},
        "gpt-on-entra": {"backends": [{"provider": "azure_entra", "model": "gpt-4o-prod"}]},
        "gpt-by-file": {"backends": [{"provider": "azure_file", "model": "gpt-4o-file"}]},
    }
    file_provider = {
        "dialect": "azure_openai",
        "base_url": "http://127.0.0.1:1",
        "mock": True,
        "oauth": {"token_file": str(token_file)},
    }
    cfg, env = cloud_config(tmp, models, extra_providers={"azure_file": file_provider})
    stack = start_stack(tmp, cfg, {**env, "LLM_GATEWAY_MOCK_TOKEN_TTL_S": "2"})
    yield stack, token_file
    stack.stop()


def test_tokens_are_refreshed_across_expiries(short_tokens: tuple[Stack, Path]) -> None:
    """Requests for 7 s over 2 s tokens: every one answered, no token ever refused."""
    stack, _ = short_tokens
    models = {
        "gemini-on-vertex": "vertex_gemini",
        "claude-on-vertex": "vertex_anthropic",
        "gpt-on-entra": "azure_entra",
    }
    before = {p: auth_stats(stack, p)["issued"] for p in models.values()}
    clients = ["openai", "anthropic", "gemini"]
    deadline, n = time.monotonic() + 7, 0
    while time.monotonic() < deadline:
        model = list(models)[n % 3]
        res = ask(stack, clients[n // 3 % 3], model, f"request {n}", stream=n % 2 == 1)
        assert res.text.endswith(f"request {n}") and res.backend.startswith(models[model])
        n += 1
        time.sleep(0.1)
    for provider in models.values():
        st = auth_stats(stack, provider)
        assert st["issued"] - before[provider] >= 3, st  # a new token about every second
        assert st["refused"] == 0, st


def test_a_slow_token_endpoint_never_delays_a_request(short_tokens: tuple[Stack, Path]) -> None:
    """The token endpoint takes 2 s to answer; requests meanwhile take what they always take."""
    stack, _ = short_tokens
    auth_stats(stack, "vertex_gemini", {"token_ttl_s": 6})
    time.sleep(2.5)  # the next refresh fetched a 6 s token: 3 s of it remain after a 2 s fetch
    auth_stats(stack, "vertex_gemini", {"token_delay_s": 2.0})
    try:
        before = auth_stats(stack, "vertex_gemini")["issued"]
        slowest, n = 0.0, 0
        deadline = time.monotonic() + 7
        sdk = ADAPTERS["openai"](stack)
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            res = sdk.ask(Ask("gemini-on-vertex", f"quick {n}"))
            slowest = max(slowest, time.monotonic() - t0)
            assert res.text.endswith(f"quick {n}")
            n += 1
            time.sleep(0.05)
        st = auth_stats(stack, "vertex_gemini")
        assert st["issued"] > before and st["refused"] == 0, st  # refreshes happened, each taking 2 s
        assert slowest < 1.0, f"a request waited {slowest:.2f} s: the token fetch blocked it"
    finally:
        auth_stats(stack, "vertex_gemini", {"token_delay_s": 0, "token_ttl_s": 2})


def test_a_token_file_kept_fresh_by_a_sidecar(short_tokens: tuple[Stack, Path]) -> None:
    """oauth.token_file: a sidecar writes a new 2 s token every second; the gateway re-reads it."""
    stack, token_file = short_tokens
    stop = threading.Event()

    def sidecar() -> None:
        while not stop.is_set():
            token = auth_stats(stack, "azure_file", {"issue": True})["access_token"]
            tmp = token_file.with_suffix(".new")
            tmp.write_text(token)
            tmp.replace(token_file)  # atomically, as a sidecar should
            stop.wait(1.0)

    writer = threading.Thread(target=sidecar, daemon=True)
    writer.start()
    try:
        time.sleep(1.5)  # the gateway reads the file every second
        refused = auth_stats(stack, "azure_file")["refused"]
        for n in range(40):
            res = ask(stack, "openai", "gpt-by-file", f"filed {n}", stream=n % 2 == 1)
            assert res.text == f"[azure_file:gpt-4o-file] filed {n}"
            time.sleep(0.1)
        assert auth_stats(stack, "azure_file")["refused"] == refused
    finally:
        stop.set()
        writer.join(5)


# ---- failover: Claude from Anthropic to Vertex, refused credentials -------------------------------------

# client-facing model -> its backends, primary first (distinct upstream names: distinct health entries)
FAILOVER_MODELS = {
    "claude": [("anthropic", "claude-sonnet-4-6"), ("vertex_anthropic", "claude-sonnet-4-6")],
    "claude-vertex-first": [
        ("vertex_anthropic", "claude-opus-4-1@20250805"),
        ("anthropic", "claude-opus-4-1"),
    ],
    "claude-vertex-ha": [
        ("vertex_anthropic", "claude-haiku-4-5@20251001"),
        ("anthropic", "claude-haiku-4-5"),
    ],
    "gemini-ha": [("vertex_gemini", "gemini-2.5-pro"), ("gemini", "gemini-2.5-pro")],
    "gpt-ha": [("azure_entra", "gpt-4o-ha"), ("openai", "gpt-5.5")],
    "gpt-azure": [("azure_openai", "gpt-4o-prod")],
    # each cloud alone (no fallback, health of its own): does its credential work right now?
    "claude-vertex-only": [("vertex_anthropic", "claude-3-5-haiku@20241022")],
    "gemini-vertex-only": [("vertex_gemini", "gemini-2.0-flash")],
    "gpt-entra-only": [("azure_entra", "gpt-4o-mini")],
}


# An Azure resource with one deployment, and a provider whose backends misspell it.
DEPLOYED, MISSPELT = "gpt-4o-prod", "gpt-4o-prdo"
MISCONFIGURED = {
    # a model per client and mode: the misspelt backend cools down once it answered 404 (health),
    **{
        f"gpt-misspelt-ha-{c}-{m}": [("azure_misspelt", MISSPELT), ("openai", "gpt-5.5")]
        for c in ("openai", "anthropic", "gemini")
        for m in ("plain", "streamed")
    },
    **{f"gpt-misspelt-only-{c}": [("azure_misspelt", MISSPELT)] for c in ("openai", "anthropic", "gemini")},
}


@pytest.fixture(scope="module")
def azure_resource() -> Iterator[BackgroundMocks]:
    """The Azure OpenAI resource behind ``azure_misspelt``: only DEPLOYED is created on it."""
    bg = start_in_thread([MockSpec("azure_misspelt", "azure_openai", 0, AZURE_KEY, deployments=(DEPLOYED,))])
    yield bg
    bg.stop()


@pytest.fixture(scope="module")
def clouds(tmp_path_factory: pytest.TempPathFactory, azure_resource: BackgroundMocks) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("cloud-failover")
    models = {
        m: {
            "backends": [{"provider": p, "model": u} for p, u in chain],
            "per_try_timeout_ms": 5000,
            "per_try_idle_timeout_ms": 5000,
        }
        for m, chain in FAILOVER_MODELS.items()
    }
    models["claude-vertex-cached"] = {
        "backends": [{"provider": "vertex_anthropic", "model": "claude-sonnet-4-6"}],
        "auto_cache": True,
    }
    cfg, env = cloud_config(tmp, models, extra_providers=direct_providers())
    # Added after the ports are chosen: its resource is this module's, already listening.
    cfg["providers"]["azure_misspelt"] = {
        "dialect": "azure_openai",
        "base_url": f"http://127.0.0.1:{azure_resource.ports['azure_misspelt']}",
        "api_key_env": "AZURE_OPENAI_API_KEY",
    }
    for m, chain in MISCONFIGURED.items():
        # Backends named per model: health learned by one test must not skip the next one's.
        cfg["models"][m] = {"backends": [{"provider": p, "model": u, "name": f"{p}/{m}"} for p, u in chain]}
    stack = start_stack(tmp, cfg, {**env, "AZURE_OPENAI_API_KEY": AZURE_KEY})
    yield stack
    stack.stop()


@pytest.fixture
def cmocks(clouds: Stack) -> Iterator[MockAdmin]:
    with clean_mocks(clouds) as admin:
        yield admin


CROSS_CLOUD_FAULTS = {
    "down": {"mode": "down"},
    "error-529": {"mode": "error", "status": 529},  # Anthropic's overloaded
    "rate_limit": {"mode": "rate_limit", "retry_after": 30},
    "key-refused": {"mode": "error", "status": 401},
    "stream_error": {"mode": "stream_error"},  # 200, then overloaded_error as the first event
}


# (fault, streamed): an in-band stream error needs a stream
FAULT_CASES = [(f, s) for f in CROSS_CLOUD_FAULTS for s in (False, True) if s or f != "stream_error"]


@pytest.mark.parametrize("client", ["anthropic", "openai"])
@pytest.mark.parametrize(
    ("fault", "stream"), FAULT_CASES, ids=[f"{f}-{'streamed' if s else 'plain'}" for f, s in FAULT_CASES]
)
def test_claude_fails_over_from_anthropic_to_vertex_under_load(
    clouds: Stack, cmocks: MockAdmin, fault: str, stream: bool, client: str
) -> None:
    """One model, Anthropic direct (faulted) then Claude on Vertex: 48 concurrent requests, none
    fails. An Anthropic client's body passes through to Vertex (model moved to the path,
    anthropic_version added); an OpenAI client's is translated."""
    cmocks.fault("anthropic", **CROSS_CLOUD_FAULTS[fault])
    out = asyncio.run(
        hammer(
            clouds,
            client,
            "claude",
            stream,
            n=48,
            concurrency=16,
            expect_prefix="[vertex_anthropic:claude-sonnet-4-6]",
        )
    )
    assert out.statuses == Counter({200: 48}), out.wrong[:3]
    assert not out.wrong, out.wrong[:3]
    assert out.backends == Counter({"vertex_anthropic/claude-sonnet-4-6": 48})
    body = cmocks.stats("vertex_anthropic")["last_request"]["body"]
    assert body["anthropic_version"] == "vertex-2023-10-16" and "model" not in body


def test_claude_fails_over_from_vertex_to_anthropic(clouds: Stack, cmocks: MockAdmin) -> None:
    """The other way: a Vertex body (no model) becomes an Anthropic one (model, no anthropic_version)."""
    cmocks.fault("vertex_anthropic", mode="error", status=503)
    for stream in (False, True):
        out = asyncio.run(
            hammer(
                clouds,
                "anthropic",
                "claude-vertex-first",
                stream,
                n=24,
                concurrency=8,
                expect_prefix="[anthropic:claude-opus-4-1]",
            )
        )
        assert out.statuses == Counter({200: 24}), out.wrong[:3]
        assert not out.wrong, out.wrong[:3]
    body = cmocks.stats("anthropic")["last_request"]["body"]
    assert body["model"] == "claude-opus-4-1" and "anthropic_version" not in body


# model -> (client dialect, the cloud whose credential is refused, the fallback backend, that cloud alone)
REFUSED = {
    "claude-vertex-ha": ("anthropic", "vertex_anthropic", "anthropic/claude-haiku-4-5", "claude-vertex-only"),
    "gemini-ha": ("gemini", "vertex_gemini", "gemini/gemini-2.5-pro", "gemini-vertex-only"),
    "gpt-ha": ("openai", "azure_entra", "openai/gpt-5.5", "gpt-entra-only"),
}


@pytest.mark.parametrize("model", list(REFUSED))
def test_a_revoked_token_fails_over_then_is_replaced(clouds: Stack, cmocks: MockAdmin, model: str) -> None:
    """The cloud revokes every token it issued (a rotated key, a revoked grant): its 401s fail over
    with no client error, and the first 401 makes the gateway fetch a new token at once (not at its
    planned refresh, an hour away), which the cloud accepts."""
    client, cloud, fallback, alone = REFUSED[model]
    issued = auth_stats(clouds, cloud, {"revoke": True})["issued"]
    out = asyncio.run(hammer(clouds, client, model, False, n=30, concurrency=10))
    assert out.statuses == Counter({200: 30}), out.wrong[:3]
    assert not out.wrong, out.wrong[:3]
    assert out.backends[fallback] >= 1
    st = auth_stats(clouds, cloud)
    assert st["refused"] >= 1 and st["issued"] == issued + 1, st  # one new token, not one per 401
    # The backend itself now cools down (backend health); the same cloud serving another model
    # shows the new token works.
    res = ask(clouds, client, alone, "are you back")
    assert res.text == f"[{cloud}:{FAILOVER_MODELS[alone][0][1]}] are you back"


def test_a_forbidden_project_fails_over(clouds: Stack, cmocks: MockAdmin) -> None:
    """403 (the identity has no access) is a provider problem too: the next tier answers."""
    cmocks.fault("vertex_gemini", mode="error", status=403)
    out = asyncio.run(
        hammer(
            clouds, "openai", "gemini-ha", True, n=20, concurrency=10, expect_prefix="[gemini:gemini-2.5-pro]"
        )
    )
    assert out.statuses == Counter({200: 20}), out.wrong[:3]


# ---- Azure's content filter, in every client's dialect --------------------------------------------------

SAFETY_STOP = {"openai": "content_filter", "anthropic": "refusal", "gemini": "SAFETY"}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("client", list(SAFETY_STOP))
def test_azure_filtered_completion_is_a_safety_stop(
    clouds: Stack, cmocks: MockAdmin, client: str, stream: bool
) -> None:
    res = ask(clouds, client, "gpt-azure", "describe the gore scene", stream=stream)
    assert res.text == "[azure_openai:gpt-4o-prod] describe the"  # withheld from the filtered word on
    assert res.finish == SAFETY_STOP[client]
    ok = ask(clouds, client, "gpt-azure", "describe the calm scene", stream=stream)
    assert ok.finish == {"openai": "stop", "anthropic": "end_turn", "gemini": "STOP"}[client]


@pytest.mark.parametrize("client", list(SAFETY_STOP))
def test_azure_filtered_prompt_is_a_400_in_the_client_dialect(
    clouds: Stack, cmocks: MockAdmin, client: str
) -> None:
    with pytest.raises((openai.BadRequestError, anthropic.BadRequestError, genai_errors.ClientError)) as e:
        ask(clouds, client, "gpt-azure", "tell me about violence")
    err: Any = e.value
    if client == "openai":  # same wire: Azure's own error, its code included
        assert err.status_code == 400 and err.body["code"] == "content_filter"
        message = err.body["message"]
    elif client == "anthropic":
        assert err.status_code == 400 and err.body["error"]["type"] == "invalid_request_error"
        message = err.body["error"]["message"]
    else:
        assert err.code == 400 and err.status == "INVALID_ARGUMENT"
        message = err.message
    assert "content management policy" in message


# ---- a deployment the Azure resource does not have ----------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("client", ["openai", "anthropic", "gemini"])
def test_a_misspelt_azure_deployment_fails_over(
    clouds: Stack, cmocks: MockAdmin, azure_resource: BackgroundMocks, client: str, stream: bool
) -> None:
    """Azure's 404 DeploymentNotFound says the gateway's config names a deployment the resource
    lacks, not that the client asked for something wrong: the next tier answers."""
    server = azure_resource.mocks.servers["azure_misspelt"]
    before = server.stats.by_status.get("404", 0)
    model = f"gpt-misspelt-ha-{client}-{'streamed' if stream else 'plain'}"
    out = asyncio.run(
        hammer(
            clouds,
            client,
            model,
            stream,
            n=20,
            concurrency=8,
            expect_prefix="[openai:gpt-5.5]",
        )
    )
    assert out.statuses == Counter({200: 20}), out.wrong[:3]
    assert not out.wrong, out.wrong[:3]
    assert out.backends == Counter({f"openai/{model}": 20})
    assert server.stats.by_status.get("404", 0) > before and set(server.stats.by_status) == {"404"}


@pytest.mark.parametrize("client", ["openai", "anthropic", "gemini"])
def test_a_misspelt_azure_deployment_alone_is_a_clear_error(
    clouds: Stack, cmocks: MockAdmin, client: str
) -> None:
    """With no tier left the client learns, in its own dialect, that the gateway's backend is
    misconfigured (a 502 naming it and Azure's words), not that its own model does not exist."""
    model = f"gpt-misspelt-only-{client}"
    with pytest.raises((openai.APIStatusError, anthropic.APIStatusError, genai_errors.APIError)) as e:
        ask(clouds, client, model, "hello")
    status, kind, message = _error_of(client, e.value)
    assert (status, kind) == (
        502,
        {"openai": "server_error", "anthropic": "api_error", "gemini": "INTERNAL"}[client],
    )
    assert f"backend 'azure_misspelt/{model}' is misconfigured" in message, message
    assert f"no model or deployment '{MISSPELT}'" in message, message
    assert "API deployment for this resource does not exist" in message, message


# ---- nothing secret in logs, metrics or responses ---------------------------------------------------------


def test_no_credential_in_logs_or_metrics(clouds: Stack) -> None:
    """After everything above: the gateway's logs and metrics hold no token, key or secret."""
    run = clouds.run_dir
    assert run is not None
    secrets = [AZURE_KEY, "ya29.mock-", "PRIVATE KEY", "Bearer ", clouds.env["AZURE_CLIENT_SECRET"]]
    key_files = [
        Path(p.gcp_credentials_file) for p in clouds.config.providers.values() if p.gcp_credentials_file
    ]
    key_files.append(Path(clouds.env["GOOGLE_APPLICATION_CREDENTIALS"]))
    secrets += [json.loads(f.read_text())["private_key_id"] for f in key_files]
    texts = {
        p.name: p.read_text(errors="replace")
        for p in run.iterdir()
        if p.suffix == ".log" and p.name != "mock-providers.log"
    }
    for port in clouds.config.metrics_ports():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            texts[f"metrics:{port}"] = r.read().decode()
    assert "ext_proc-0.log" in texts and "access.log" in texts
    for name, text in texts.items():
        for s in secrets:
            assert s not in text, f"{s[:12]}... appears in {name}"


# ---- credentials that cannot be loaded: start-up errors naming the provider --------------------------------


def _check(tmp: Path, providers: dict[str, Any], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cfg = {
        "providers": providers,
        "models": {"m": {"backends": [{"provider": next(iter(providers)), "model": "x"}]}},
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "CLOUDSDK_"))}
    # No application default credentials here: no gcloud file (HOME), no metadata server probe.
    clean.update(
        {
            "HOME": str(tmp),
            "CLOUDSDK_CONFIG": str(tmp / "gcloud"),
            "NO_GCE_CHECK": "true",
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
            **env,
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "ext_proc", "check", "--secrets", str(path)],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


VERTEX = {
    "dialect": "vertex_gemini",
    "base_url": "https://us-central1-aiplatform.googleapis.com",
    "gcp_project": "p-123456",
    "gcp_location": "us-central1",
}


def test_check_secrets_names_the_provider_whose_credential_cannot_load(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"type": "service_account", "project_id": "p"}')
    (tmp_path / "odd.json").write_text('{"type": "api_key"}')
    result = _check(
        tmp_path,
        {
            "vertex-missing": {**VERTEX, "gcp_credentials_file": str(tmp_path / "nope.json")},
            "vertex-broken": {**VERTEX, "gcp_credentials_file": str(tmp_path / "broken.json")},
            "vertex-odd": {**VERTEX, "gcp_credentials_file": str(tmp_path / "odd.json")},
            "vertex-adc": VERTEX,
            "azure": {
                "dialect": "azure_openai",
                "base_url": "https://r.openai.azure.com",
                "oauth": {
                    "token_url": "https://login.microsoftonline.com/t/oauth2/v2.0/token",
                    "client_id": CLIENT_ID,
                    "client_secret_env": "UNSET_SECRET",
                },
            },
        },
        {},
    )
    assert result.returncode == 1, result.stdout
    err = result.stderr
    assert "providers.vertex-missing: gcp_credentials_file: cannot load" in err and "nope.json" in err
    assert "providers.vertex-broken: gcp_credentials_file: cannot load" in err
    assert (
        "providers.vertex-odd: gcp_credentials_file: cannot load" in err
        and "unsupported credentials type" in err
    )
    assert "providers.vertex-adc: no Google application default credentials" in err
    assert "providers.azure: oauth.client_secret_env: environment variable UNSET_SECRET is not set" in err


def test_check_secrets_passes_with_loadable_credentials(tmp_path: Path) -> None:
    from tests.cloud import service_account_key

    key = service_account_key(tmp_path / "key.json", "http://127.0.0.1:9/token")
    result = _check(tmp_path, {"vertex": VERTEX}, {"GOOGLE_APPLICATION_CREDENTIALS": str(key)})
    assert result.returncode == 0, result.stderr
    # Loading never fetched a token: the token endpoint in the key does not even exist.


def test_up_refuses_to_start_with_an_unloadable_credential(tmp_path: Path) -> None:
    providers = cloud_providers()
    cfg = {
        "providers": {"vertex_gemini": providers["vertex_gemini"]},
        "models": {"m": {"backends": [{"provider": "vertex_gemini", "model": "gemini-3.5-flash"}]}},
    }
    cfg, _ = with_clouds(cfg, tmp_path)
    Path(cfg["providers"]["vertex_gemini"]["gcp_credentials_file"]).unlink()
    with pytest.raises(ConfigError) as e:
        start_stack(tmp_path, cfg)
    assert any("providers.vertex_gemini: gcp_credentials_file: cannot load" in p for p in e.value.problems)


def test_cloud_config_is_checked(tmp_path: Path) -> None:
    from ext_proc.config import parse_config

    text = yaml.safe_dump(
        {
            "providers": {
                "v": {
                    "dialect": "vertex_anthropic",
                    "base_url": "https://europe-west1-aiplatform.googleapis.com",
                    "gcp_location": "us-east5",
                    "api_key_env": "K",
                },
                "o": {
                    "dialect": "openai",
                    "base_url": "https://api.openai.com/v1",
                    "api_key_env": "K",
                    "gcp_project": "p",
                    "api_version": "v1",
                },
                "a": {"dialect": "azure_openai", "base_url": "https://r.openai.azure.com"},
                "b": {
                    "dialect": "azure_openai",
                    "base_url": "https://r.openai.azure.com",
                    "api_key_env": "K",
                    "oauth": {"token_file": "/t"},
                },
            },
            "models": {"m": {"backends": [{"provider": "v"}]}},
        }
    )
    with pytest.raises(ConfigError) as e:
        parse_config(text, "c.yaml")
    problems = "\n".join(e.value.problems)
    for want in (
        "c.yaml: providers.v.gcp_project: required for Vertex AI",
        "c.yaml: providers.v.api_key_env: Vertex AI takes Google credentials",
        "c.yaml: providers.v.base_url: Vertex AI serves location 'us-east5' at "
        "https://us-east5-aiplatform.googleapis.com",
        "c.yaml: providers.o.gcp_project: only providers of dialect vertex_anthropic, vertex_gemini take it",
        "c.yaml: providers.o.api_version: only providers of dialect azure_openai take it",
        "c.yaml: providers.a: needs api_key_env or api_key_file",
        "c.yaml: providers.b: set an API key (api_key_env, api_key_file) or oauth, not both",
    ):
        assert want in problems, (want, problems)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_prompt_caching_on_claude_on_vertex(clouds: Stack, cmocks: MockAdmin, stream: bool) -> None:
    """Claude on Vertex caches as Anthropic does (docs/caching.md): an OpenAI client gets
    breakpoints from the model's auto_cache and reads from its second turn; an Anthropic
    client's own cache_control passes through."""
    from tests.test_caching_e2e import anthropic_turns, openai_turns

    turns = openai_turns(clouds, "claude-vertex-cached", stream, turns=2)
    assert turns[0][0] == 0 and turns[1][0] > 1200, turns
    body = cmocks.stats("vertex_anthropic")["last_request"]["body"]
    assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
    reads = [r for r, _ in anthropic_turns(clouds, "claude-vertex-only", stream)]
    assert reads[0] == 0 and reads[1] >= 1200, reads


# cloud provider -> a model it alone serves
CLOUD_ONLY = {
    "vertex_anthropic": "claude-vertex-only",
    "vertex_gemini": "gemini-vertex-only",
    "azure_openai": "gpt-azure",
    "azure_entra": "gpt-entra-only",
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("provider", list(CLOUD_ONLY))
def test_no_cloud_account_header_reaches_a_client(
    clouds: Stack, cmocks: MockAdmin, provider: str, client: str, stream: bool
) -> None:
    """Azure's region, quota and request ids, Google's front-end headers: withheld from every
    client (tests/test_provider_headers.py)."""
    check_withheld(clouds, cmocks, provider, client, CLOUD_ONLY[provider], stream)
