"""The peer: LiteLLM's proxy in front of the same canned upstream as the gateway.

It does the work of the gateway's ``translated`` scenario: an OpenAI chat
request in, LiteLLM's Anthropic provider out to the canned upstream's
``/v1/messages`` (with the provider key the canned upstream checks), a master
key checked on every request, as many worker processes as the gateway has
ext_proc workers. It runs as documented for production (``LITELLM_MODE=
PRODUCTION``, errors-only logging), offline: telemetry off and the model cost
map read from the package instead of fetched at startup.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

MODEL = "bench-translated"  # the client-facing name, as on the gateway
MISSING = "litellm is not installed (pip install 'litellm[proxy]': the peer extra)"
ENV = {
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_MODE": "PRODUCTION",
    "LITELLM_LOG": "ERROR",
    "DISABLE_ADMIN_UI": "True",
}
START_TIMEOUT = 120.0  # it imports a lot: ~10 s on a quiet 2-core machine


def missing() -> str | None:
    """Why the peer cannot run here (None: it can)."""
    return MISSING if importlib.util.find_spec("litellm") is None else None


def config(canned_port: int, anthropic_key_env: str, master_key_env: str) -> dict[str, Any]:
    """LiteLLM proxy config: the bench's model on the canned Anthropic endpoint."""
    return {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": "anthropic/claude-bench",
                    "api_base": f"http://127.0.0.1:{canned_port}",
                    "api_key": f"os.environ/{anthropic_key_env}",
                },
            }
        ],
        "general_settings": {"master_key": f"os.environ/{master_key_env}"},
    }


def argv(config_path: Path, port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "litellm.proxy.proxy_cli",
        "--config",
        str(config_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        str(workers),
    ]
