"""HTTP face of a simulated vLLM server: the OpenAI-compatible routes vLLM serves, its
``/metrics`` with vLLM's metric names, and a control surface (``/sim/stats``, ``/sim/fault``)."""

from __future__ import annotations

import json
import time
import uuid
from collections import deque
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..mocks.common import _drop_connection
from .engine import BLOCK_SIZE, Engine, Profile, Sequence

FAULTS = ("none", "slow", "down", "stalled", "kv_thrash")
SLOW_FACTOR = 5.0  # the "slow" fault: every step takes this many times longer
THRASH_BLOCKS = 8  # the "kv_thrash" fault: a cache this small evicts every prefix at once

# vLLM's own buckets (vllm/v1/metrics/loggers.py), so dashboards and scrapers read the same shape.
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def chat_tokens(messages: list[Any]) -> list[str]:
    """Whitespace tokens of a chat: a role marker, then each text part's words, per message."""
    out: list[str] = []
    for m in messages:
        out.append(f"<|{m.get('role', '')}|>")
        content = m.get("content")
        if isinstance(content, str):
            out += content.split()
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    out += part["text"].split()
    return out


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    # vLLM's ErrorResponse (vllm/entrypoints/openai/protocol.py): OpenAI's error envelope.
    kind = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return web.json_response(body, status=status)


class _Collector(Collector):
    """Gauges and counters read from the engine at scrape time, under vLLM's names and labels."""

    def __init__(self, server: SimServer) -> None:
        self.s = server

    def collect(self) -> Iterable[Any]:
        e, labels = self.s.engine, ["model_name", "engine"]
        values = [self.s.model, "0"]

        def gauge(name: str, doc: str, v: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(values, v)
            return g

        def counter(name: str, doc: str, v: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=labels)
            c.add_metric(values, v)
            return c

        yield gauge(
            "vllm:num_requests_running", "Number of requests in model execution batches.", len(e.running)
        )
        yield gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed.", len(e.waiting)
        )
        yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", e.kv_usage())
        info = GaugeMetricFamily(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            labels=["block_size", "num_gpu_blocks", "enable_prefix_caching", "cache_dtype"],
        )
        info.add_metric([str(BLOCK_SIZE), str(e.kv.num_blocks), "True", "auto"], 1.0)
        yield info
        yield counter(
            "vllm:prefix_cache_queries", "Prefix cache queries, in terms of tokens.", e.prefix_queries
        )
        yield counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of tokens.", e.prefix_hits)
        yield counter("vllm:prompt_tokens", "Number of prefill tokens processed.", e.prompt_tokens)
        yield counter("vllm:generation_tokens", "Number of generation tokens processed.", e.generation_tokens)
        yield counter(
            "vllm:num_preemptions", "Cumulative number of preemption from the engine.", e.preemptions
        )
        yield counter("vllm:request_success", "Count of successfully processed requests.", e.finished)


class SimServer:
    """One simulated model server (an engine plus its aiohttp app)."""

    def __init__(
        self,
        model: str = "sim-llama",
        profile: Profile | None = None,
        time_scale: float = 1.0,
        default_output_tokens: int = 32,
        name: str = "sim",
    ) -> None:
        self.name = name
        self.model = model
        self.profile = profile or Profile()
        self.engine = Engine(self.profile, time_scale)
        self.default_output_tokens = default_output_tokens
        self.fault = "none"
        self.requests = 0  # accepted generation requests
        self.rejected = 0
        self.recent: deque[str] = deque(maxlen=256)  # last user text of recent requests
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            ["model_name", "engine"],
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        ).labels(model, "0")
        self.itl = Histogram(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            ["model_name", "engine"],
            buckets=ITL_BUCKETS,
            registry=self.registry,
        ).labels(model, "0")
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            ["model_name", "engine"],
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        ).labels(model, "0")
        self.engine.on_token.append(self._observe)

    def _observe(self, seq: Sequence, now: float) -> None:
        if seq.first_token_at is None:
            self.ttft.observe(now - seq.arrival)
        elif seq.last_token_at is not None:
            self.itl.observe(now - seq.last_token_at)

    # ------------------------------------------------------------------ faults and stats

    def set_fault(self, fault: str) -> None:
        """``none``, ``slow`` (steps x5), ``stalled`` (no steps; requests hang), ``kv_thrash``
        (a cache of 8 blocks) or ``down`` (the pool closes the port; see ``SimPool``)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
        self.fault = fault
        self.engine.slow_factor = SLOW_FACTOR if fault == "slow" else 1.0
        if fault == "stalled":
            self.engine.stalled.set()
        else:
            self.engine.stalled.clear()
        blocks = THRASH_BLOCKS if fault == "kv_thrash" else self.profile.num_blocks
        if blocks != self.engine.kv.num_blocks:  # only a resize loses the cached blocks
            self.engine.kv.shrink(blocks)

    def stats(self) -> dict[str, Any]:
        e = self.engine
        return {
            "name": self.name,
            "model": self.model,
            "fault": self.fault,
            "requests": self.requests,
            "rejected": self.rejected,
            "finished": e.finished,
            "running": len(e.running),
            "waiting": len(e.waiting),
            "kv_cache_usage": e.kv_usage(),
            "num_blocks": e.kv.num_blocks,
            "prefix_cache_queries": e.prefix_queries,
            "prefix_cache_hits": e.prefix_hits,
            "prompt_tokens": e.prompt_tokens,
            "generation_tokens": e.generation_tokens,
            "preemptions": e.preemptions,
            "recent": list(self.recent),
        }

    # ------------------------------------------------------------------ HTTP

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._down])
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        app.router.add_get("/sim/stats", self._stats)
        app.router.add_post("/sim/fault", self._fault)
        return app

    @web.middleware
    async def _down(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """A server that is down drops the connections clients still hold (keep-alive) too."""
        if self.fault == "down":
            _drop_connection(request)
            return web.Response(status=503)  # never written: the connection is gone
        return await handler(request)

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _fault(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            self.set_fault(str(body.get("fault")))
        except ValueError as e:
            return _error(400, str(e), "fault")
        return web.json_response({"fault": self.fault})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain", charset="utf-8")

    async def _models(self, request: web.Request) -> web.Response:
        card = {
            "id": self.model,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "vllm",
            "root": self.model,
            "parent": None,
            "max_model_len": self.profile.num_blocks * BLOCK_SIZE,
        }
        return web.json_response({"object": "list", "data": [card]})

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        # vLLM checks the served model name first (OpenAIServing._check_model): 404 otherwise.
        if body.get("model") != self.model:
            return _error(404, f"The model `{body.get('model')}` does not exist.", "model")
        mt = body.get("max_completion_tokens", body.get("max_tokens"))
        if mt is not None and (not isinstance(mt, int) or isinstance(mt, bool) or mt < 1):
            # vLLM's SamplingParams: "max_tokens must be at least 1"
            return _error(400, f"max_tokens must be at least 1, got {mt}.", "max_tokens")
        return body

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        if isinstance(body, web.Response):
            self.rejected += 1
            return body
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            self.rejected += 1  # OpenAI chat API: messages is a required non-empty array
            return _error(400, "messages: a non-empty list of message objects is required", "messages")
        last = messages[-1].get("content")
        self.recent.append(last if isinstance(last, str) else json.dumps(last)[:200])
        return await self._generate(request, body, chat_tokens(messages), chat=True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        if isinstance(body, web.Response):
            self.rejected += 1
            return body
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            # the simulator serves one string prompt; vLLM also takes token ids and batches
            self.rejected += 1
            return _error(400, "prompt: a string (or a list of one string) is required", "prompt")
        suffix = body.get("suffix")
        if suffix is not None and not isinstance(suffix, str):
            self.rejected += 1
            return _error(400, "suffix: must be a string", "suffix")
        self.recent.append(prompt[:200])
        tokens = prompt.split() + ((["<|fim_suffix|>", *suffix.split()]) if suffix else [])
        return await self._generate(request, body, tokens, chat=False)

    async def _generate(
        self, request: web.Request, body: dict[str, Any], tokens: list[str], chat: bool
    ) -> web.StreamResponse:
        self.requests += 1
        mt = body.get("max_completion_tokens", body.get("max_tokens"))
        n_out = mt if isinstance(mt, int) else (self.default_output_tokens if chat else 16)
        reason = "length" if isinstance(mt, int) else "stop"
        seq = Sequence(prompt=tokens or ["<|empty|>"], max_tokens=n_out)
        self.engine.submit(seq)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        usage = {
            "prompt_tokens": len(seq.prompt),
            "completion_tokens": n_out,
            "total_tokens": len(seq.prompt) + n_out,
        }
        usage["prompt_tokens_details"] = {"cached_tokens": 0}  # type: ignore[assignment]
        obj = "chat.completion" if chat else "text_completion"
        words: list[str] = []
        try:
            if not body.get("stream"):
                while (i := await seq.out.get()) is not None:
                    words.append(f"tok{len(words)}")
                    del i
                if len(words) < n_out:
                    return _error(500, "engine stopped")
                usage["prompt_tokens_details"] = {"cached_tokens": seq.cached_tokens}  # type: ignore[assignment]
                self.e2e.observe(time.monotonic() - seq.arrival)
                text = " ".join(words)
                choice: dict[str, Any] = (
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}
                    if chat
                    else {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
                )
                return web.json_response(
                    {
                        "id": rid,
                        "object": obj,
                        "created": created,
                        "model": self.model,
                        "choices": [choice],
                        "usage": usage,
                    }
                )
            resp = web.StreamResponse(
                headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
            )
            await resp.prepare(request)
            chunk_obj = "chat.completion.chunk" if chat else "text_completion"

            async def send(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> None:
                data = {
                    "id": rid,
                    "object": chunk_obj,
                    "created": created,
                    "model": self.model,
                    "choices": choices,
                }
                await resp.write(b"data: " + json.dumps({**data, **(extra or {})}).encode() + b"\n\n")

            if chat:
                await send(
                    [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
                )
            while (await seq.out.get()) is not None:
                piece = ("" if not words else " ") + f"tok{len(words)}"
                words.append(piece)
                last = len(words) == n_out
                fr = reason if last else None
                delta = {"index": 0, "delta": {"content": piece}, "finish_reason": fr}
                await send(
                    [delta if chat else {"index": 0, "text": piece, "logprobs": None, "finish_reason": fr}]
                )
            if len(words) == n_out:
                self.e2e.observe(time.monotonic() - seq.arrival)
                if (body.get("stream_options") or {}).get("include_usage"):
                    usage["prompt_tokens_details"] = {"cached_tokens": seq.cached_tokens}  # type: ignore[assignment]
                    await send([], {"usage": usage})
                await resp.write(b"data: [DONE]\n\n")
            return resp
        finally:
            if len(words) < n_out:
                self.engine.cancel(seq)
