"""Config validation: every error found at once, each with file and field path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ext_proc.config import DEFAULT_CONFIG, ConfigError, load_config, parse_config, resolve_secrets

REPO = Path(__file__).resolve().parents[1]


def test_embedded_default_is_the_repo_config() -> None:
    assert DEFAULT_CONFIG.read_text() == (REPO / "config" / "gateway.yaml").read_text()


def test_default_config_serves_three_models_with_fallbacks() -> None:
    cfg = load_config()
    assert list(cfg.models) == ["gpt-5.5", "claude-sonnet-4-6", "gemini-3.5-flash"]
    providers = {m: [b.provider_name for b in chain] for m, chain in cfg.chains.items()}
    assert providers == {
        "gpt-5.5": ["openai", "anthropic", "gemini"],
        "claude-sonnet-4-6": ["anthropic", "openai", "gemini"],
        "gemini-3.5-flash": ["gemini", "openai", "anthropic"],
    }
    assert cfg.listen.port == 8080 and cfg.admin.port == 9901 and cfg.ext_proc.metrics_port == 9464


def test_demo_key_maps_to_a_tenant() -> None:
    cfg = load_config()
    resolve_secrets(
        cfg, {"MOCK_OPENAI_API_KEY": "a", "MOCK_ANTHROPIC_API_KEY": "b", "MOCK_GEMINI_API_KEY": "c"}
    )
    assert set(cfg.key_digests.values()) == {"demo"}


def broken() -> str:
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["models"]["gpt-5.5"]["backends"][1]["provider"] = "antropic"
    data["providers"]["gemini"]["dialect"] = "gemni"
    data["admin"]["port"] = 8080
    data["ext_proc"]["colour"] = "red"
    del data["providers"]["openai"]["api_key_env"]
    data["tenants"]["demo"]["api_keys"][0]["sha256"] = "not-hex"
    return yaml.safe_dump(data)


def test_all_errors_reported_at_once_with_paths() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(broken(), "broken.yaml")
    problems = e.value.problems
    expected = [
        "broken.yaml: models.gpt-5.5.backends[1].provider: unknown provider 'antropic'",
        "broken.yaml: providers.gemini.dialect: Input should be 'openai', 'anthropic', 'gemini', 'openai_responses', ",
        "broken.yaml: admin.port: port 8080 is already used by listen.port",
        "broken.yaml: ext_proc.colour: unknown field",
        "broken.yaml: providers.openai: needs api_key_env or api_key_file",
        "broken.yaml: tenants.demo.api_keys[0].sha256: String should match pattern",
    ]
    for want in expected:
        assert any(p.startswith(want) for p in problems), (want, problems)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("listen: [", "invalid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("providers: {}\nmodels: {}\n", "providers: Dictionary should have at least 1 item"),
    ],
)
def test_malformed_files(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "x.yaml")
    assert any(message in p for p in e.value.problems), e.value.problems


def test_missing_secret_is_named() -> None:
    cfg = load_config()
    with pytest.raises(ConfigError) as e:
        resolve_secrets(cfg, {})
    assert any(
        "providers.openai.api_key_env: environment variable MOCK_OPENAI_API_KEY is not set" in p
        for p in e.value.problems
    )


def test_inline_credentials_in_headers_are_refused() -> None:
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["providers"]["openai"]["headers"] = {"Authorization": "Bearer sk-live"}
    with pytest.raises(ConfigError) as e:
        parse_config(yaml.safe_dump(data), "x.yaml")
    assert any("providers.openai.headers" in p and "credential" in p for p in e.value.problems)


def test_forward_headers_are_names_a_client_may_send() -> None:
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["providers"]["anthropic"]["forward_headers"] = ["Anthropic-Beta"]
    assert parse_config(yaml.safe_dump(data), "x.yaml").providers["anthropic"].forward_headers == [
        "anthropic-beta"
    ]
    data["providers"]["anthropic"]["forward_headers"] = ["x-api-key", "Host", "x-gw-route", "bad header"]
    with pytest.raises(ConfigError) as e:
        parse_config(yaml.safe_dump(data), "x.yaml")
    assert [p.split(": ", 2)[2] for p in e.value.problems] == [
        "Value error, 'x-api-key' carries a credential: a client's never reaches a provider"
    ]
    for name, says in (
        ("Host", "is set by the gateway or Envoy"),
        ("x-gw-route", "is set by the gateway or Envoy"),
        ("bad header", "is not a header name"),
    ):
        data["providers"]["anthropic"]["forward_headers"] = [name]
        with pytest.raises(ConfigError) as e:
            parse_config(yaml.safe_dump(data), "x.yaml")
        assert e.value.problems == [
            f"x.yaml: providers.anthropic.forward_headers: Value error, '{name}' {says}"
            + ("" if "name" in says else ", not forwarded")
        ]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ext_proc", *args], capture_output=True, text=True, timeout=60
    )


def test_check_command(tmp_path: Path) -> None:
    ok = run_cli("check")
    assert ok.returncode == 0 and "OK (3 providers, 3 models, 9 backends, 1 tenants)" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(broken())
    result = run_cli("check", str(bad))
    assert result.returncode == 1
    assert f"{bad}: models.gpt-5.5.backends[1].provider: unknown provider 'antropic'" in result.stderr
    assert f"{bad}: admin.port: port 8080 is already used by listen.port" in result.stderr
