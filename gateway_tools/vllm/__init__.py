"""vLLM's CPU build as a real engine for tests and local pools.

``python -m gateway_tools.vllm build-model DIR`` (with the vLLM venv's python)
writes a tiny random-weight Llama; ``python -m gateway_tools.vllm serve N
--python VENV_PYTHON --model DIR`` runs N replicas until Ctrl-C; ``python -m
gateway_tools.vllm profile URL`` measures a running server into a server
profile for ``llm-gateway plan``. From code:
``start_vllm_replicas(n, python, model_dir)`` / ``stop_replicas``. See README,
"A real engine in CI".
"""

from __future__ import annotations

from .replicas import Replica, VllmStartError, replicas, start_vllm_replicas, stop_replicas

__all__ = ["Replica", "VllmStartError", "replicas", "start_vllm_replicas", "stop_replicas"]
