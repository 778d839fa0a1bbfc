"""What the bench runs: the processes it starts and the requests each scenario sends.

One gateway serves the gateway scenarios (a model per scenario), one bare
Envoy serves the floors, and both reach the same canned Envoy upstream and the
same paced stream server. Budgets would change that gateway's data path for
every scenario, so each admission variant has a gateway of its own (same
config plus budgets), so has the traced variant (same config plus traces to
an OTLP sink), and the peer (LiteLLM's proxy) reaches the same canned
upstream. All of them are up for the whole run, so scenarios can alternate
round by round and drift on a shared machine hits all alike.

Each gateway scenario is paired with a floor that sends the same load shape
through bare Envoy (same body size, same stream), so "added" means what the
gateway costs and nothing else.
"""

from __future__ import annotations

import random
import secrets
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml

from ..ports import free_ports
from ..supervisor import Stack, StackError, envoy_binary
from . import admission, noop, otlp_sink, peer, upstream
from .load import Request

LARGE_PROMPT_BYTES = 200 * 1024
ENV_KEYS = {
    "openai": "BENCH_OPENAI_KEY",
    "anthropic": "BENCH_ANTHROPIC_KEY",
    "stream": upstream.KEY_ENV,
    "tenant": "BENCH_TENANT_KEY",
    "peer": "BENCH_PEER_KEY",
}
TENANT = "bench"


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: Literal["unary", "stream"]
    floor: str  # the floor probe it is compared with
    what: str
    # A gateway scenario whose figures this one is read next to: it runs too.
    beside: str | None = None


# Gateway scenarios (the floors are probes of their own, see ``FLOORS``).
SCENARIOS = {
    s.name: s
    for s in (
        Scenario("passthrough", "unary", "floor", "OpenAI client -> OpenAI backend"),
        Scenario(
            "completions",
            "unary",
            "floor",
            "code-completion client (/v1/completions, prompt + suffix) -> OpenAI backend, untranslated",
        ),
        Scenario("translated", "unary", "floor", "OpenAI client -> Anthropic backend"),
        Scenario(
            "responses",
            "unary",
            "floor",
            "OpenAI Responses client -> Anthropic backend (answer kept, in process)",
            beside="translated",
        ),
        Scenario("large", "unary", "floor-large", "translated, 200 KB prompt"),
        Scenario(
            "streamed",
            "stream",
            "floor-stream",
            f"OpenAI client -> Anthropic backend, {upstream.STREAM_EVENTS}-event SSE stream",
        ),
        Scenario(
            "admission-memory",
            "unary",
            "floor",
            "translated, tenant budgets in the ext_proc process",
            beside="translated",
        ),
        Scenario(
            "admission-redis", "unary", "floor", "translated, tenant budgets in Redis", beside="translated"
        ),
        Scenario(
            "translated-traced",
            "unary",
            "floor",
            "translated, traces at sampling ratio 1.0 to an OTLP sink",
            beside="translated",
        ),
    )
}
# Gateway scenarios served by a gateway of their own (their config changes every
# request's path), and whether it keeps budgets in Redis.
OWN_GATEWAY = {"admission-memory": False, "admission-redis": True, "translated-traced": False}
TRACED = ("translated-traced",)  # traces instead of budgets
PEER = Scenario(
    "peer", "unary", "floor", "LiteLLM proxy: OpenAI client -> Anthropic backend", beside="translated"
)
# References: the floors' requests through a do-nothing Python ext_proc (see ``noop``).
REFERENCES = {
    s.name: s
    for s in (
        Scenario(
            "noop-unary", "unary", "floor", "floor request, do-nothing ext_proc (same messages as translated)"
        ),
        Scenario(
            "noop-stream", "stream", "floor-stream", "floor stream, do-nothing ext_proc (a message per event)"
        ),
    )
}
# Every probe besides the floors, in report order.
PROBES = (*SCENARIOS, *REFERENCES, PEER.name)
FLOORS = {"floor": "unary", "floor-large": "unary", "floor-stream": "stream"}
# Names that stand for several scenarios on the command line.
GROUPS = {"admission": ("admission-memory", "admission-redis"), "noop": tuple(REFERENCES)}
# Scenarios that need something this machine, install or run may not have.
OPTIONAL = ("admission-memory", "admission-redis", "peer")


def scenario(name: str) -> Scenario:
    """A gateway scenario, a reference or the peer, by name."""
    return PEER if name == PEER.name else SCENARIOS.get(name) or REFERENCES[name]


def expand(names: tuple[str, ...]) -> tuple[str, ...]:
    """Scenario names with groups replaced by their members, each once, in the given order."""
    out: list[str] = []
    for n in names:
        out += [m for m in GROUPS.get(n, (n,)) if m not in out]
    return tuple(out)


def unavailable(name: str, workers: int) -> str | None:
    """Why an optional scenario cannot run here (None: it can)."""
    if name == "admission-memory" and workers > 1:
        return "needs --workers 1: in-memory budgets are per ext_proc process (admission-redis shares them)"
    if name == "admission-redis":
        return admission.redis_missing()
    if name == "peer":
        return peer.missing()
    return None


def port_block(count: int) -> int:
    """First port of ``count`` consecutive free ones, below the kernel's ephemeral range."""
    return free_ports(count, consecutive=True)[0]


@dataclass(frozen=True)
class GatewayPorts:
    listen: int
    admin: int
    ext_proc: int  # worker i listens on ext_proc + i
    metrics: int  # and serves metrics on metrics + i


class Ports:
    """Every port of a bench run, from one block of consecutive free ports."""

    def __init__(self, workers: int, gateways: int = 1):
        self.workers = workers
        per_gateway = 2 + 2 * workers
        base = port_block(11 + per_gateway * gateways)
        (
            self.canned,
            self.canned_admin,
            self.floor,
            self.floor_admin,
            self.stream,
            self.redis,
            self.peer,
            self.noop,
            self.noop_admin,
            self.noop_ext_proc,
            self.otlp,
        ) = range(base, base + 11)
        starts = range(base + 11, base + 11 + per_gateway * gateways, per_gateway)
        self.gateways = [GatewayPorts(s, s + 1, s + 2, s + 2 + workers) for s in starts]
        self.main = self.gateways[0]


def gateway_config_dict(ports: Ports, gateway: GatewayPorts, workers: int) -> dict[str, Any]:
    """A gateway's config: one model per scenario, providers on the bench upstreams."""
    canned = f"http://127.0.0.1:{ports.canned}"
    return {
        "listen": {"address": "127.0.0.1", "port": gateway.listen},
        "admin": {"address": "127.0.0.1", "port": gateway.admin},
        "ext_proc": {
            "address": "127.0.0.1",
            "port": gateway.ext_proc,
            "metrics_port": gateway.metrics,
            "workers": workers,
        },
        "providers": {
            "canned-openai": {
                "dialect": "openai",
                "base_url": canned + "/v1",
                "api_key_env": ENV_KEYS["openai"],
            },
            "canned-anthropic": {
                "dialect": "anthropic",
                "base_url": canned,
                "api_key_env": ENV_KEYS["anthropic"],
            },
            "paced-anthropic": {
                "dialect": "anthropic",
                "base_url": f"http://127.0.0.1:{ports.stream}",
                "api_key_env": ENV_KEYS["stream"],
            },
        },
        # Each model has a failover backend, as in production: the per-attempt
        # stage and its matcher are configured, and skipped, as they would be.
        "models": {
            "bench-passthrough": {
                "backends": [
                    {"provider": "canned-openai"},
                    {"provider": "canned-anthropic", "model": "claude-bench"},
                ]
            },
            "bench-translated": {
                "backends": [
                    {"provider": "canned-anthropic", "model": "claude-bench"},
                    {"provider": "canned-openai", "model": "bench-passthrough"},
                ]
            },
            "bench-streamed": {
                "backends": [
                    {"provider": "paced-anthropic", "model": "claude-bench"},
                    {"provider": "canned-openai", "model": "bench-passthrough"},
                ]
            },
        },
        "tenants": {TENANT: {"api_keys": [{"env": ENV_KEYS["tenant"]}]}},
    }


def _chat(model: str, prompt: str, stream: bool = False) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 256,
        "temperature": 0.7,
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": prompt},
        ],
    }
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


def _completion(model: str) -> bytes:
    """A fill-in-the-middle request as code-completion clients send it."""
    return orjson.dumps(
        {
            "model": model,
            "prompt": "def add(a: int, b: int) -> int:\n",
            "suffix": "\n\nprint(add(1, 2))\n",
            "max_tokens": 16,
            "temperature": 0,
        }
    )


def _responses(model: str, prompt: str) -> bytes:
    """The translated scenario's request as a Responses client sends it (store defaults to true:
    the gateway keeps the answer)."""
    return orjson.dumps(
        {
            "model": model,
            "max_output_tokens": 256,
            "temperature": 0.7,
            "instructions": "You are a concise assistant.",
            "input": prompt,
        }
    )


def _large_prompt() -> str:
    words = (
        "gateway",
        "envoy",
        "provider",
        "translate",
        "stream",
        "token",
        "budget",
        "latency",
        "tenant",
        "model",
        "route",
        "backend",
        "failover",
        "dialect",
        "request",
        "response",
        "chunk",
        "event",
    )
    rng = random.Random(6)
    out: list[str] = []
    size = 0
    while size < LARGE_PROMPT_BYTES:
        w = rng.choice(words)
        out.append(w)
        size += len(w) + 1
    return "Summarise this log: " + " ".join(out)


def _write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants: LiteLLM with several workers forks them."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        out.append(todo.pop())
        todo += children.get(out[-1], [])
    return out


class BenchStack(Stack):
    """The gateway stack plus the bench's upstreams, floor Envoy, budgeted gateways and peer.

    All are started and stopped together; ``own_gateways`` names the scenarios
    (see ``OWN_GATEWAY``) that get a budgeted or traced gateway of their own.
    """

    def __init__(
        self,
        run_dir: Path,
        workers: int,
        own_gateways: tuple[str, ...] = (),
        with_peer: bool = False,
        with_noop: bool = False,
        envoy_concurrency: int = 2,
    ):
        self.ports = Ports(workers, gateways=1 + len(own_gateways))
        self.keys = {k: secrets.token_urlsafe(18) for k in ENV_KEYS}
        self.keys["peer"] = "sk-" + self.keys["peer"]  # LiteLLM wants its master key to start so
        self.with_peer = with_peer
        self.with_noop = with_noop
        run_dir.mkdir(parents=True, exist_ok=True)
        env = {ENV_KEYS[k]: v for k, v in self.keys.items()}
        main = gateway_config_dict(self.ports, self.ports.main, workers)
        super().__init__(
            _write_yaml(run_dir / "gateway.yaml", main),
            run_dir=run_dir / "run",
            envoy_concurrency=envoy_concurrency,
            env={**env, **(peer.ENV if with_peer else {})},
        )
        self.own: dict[str, Stack] = {}
        for name, ports in zip(own_gateways, self.ports.gateways[1:], strict=True):
            cfg = gateway_config_dict(self.ports, ports, workers)
            if name in TRACED:
                cfg = otlp_sink.traced(cfg, self.ports.otlp)
            else:
                redis = f"redis://127.0.0.1:{self.ports.redis}/0" if OWN_GATEWAY[name] else None
                cfg = admission.budgeted(cfg, TENANT, "bench-translated", redis)
            self.own[name] = Stack(
                _write_yaml(run_dir / f"gateway-{name}.yaml", cfg),
                run_dir=run_dir / f"run-{name}",
                envoy_concurrency=envoy_concurrency,
                env=env,
            )

    def _start(self, timeout: float) -> None:
        assert self.run_dir is not None
        p, k = self.ports, self.keys
        canned = upstream.canned_bootstrap(p.canned, p.canned_admin, k["openai"], k["anthropic"])
        floor = upstream.floor_bootstrap(p.floor, p.floor_admin, p.canned, p.stream)
        self._spawn(
            "bench-stream-upstream",
            [sys.executable, "-m", "gateway_tools.bench.upstream", "--port", str(p.stream)],
        )
        if self.with_peer:  # the slowest to start: it starts while the rest does
            litellm = _write_yaml(
                self.run_dir / "litellm.yaml", peer.config(p.canned, ENV_KEYS["anthropic"], ENV_KEYS["peer"])
            )
            self._spawn("bench-peer", peer.argv(litellm, p.peer, p.workers))
        for name, bootstrap, port in (
            ("bench-canned-upstream", canned, p.canned),
            ("bench-floor", floor, p.floor),
        ):
            self._spawn(
                name,
                [
                    envoy_binary(),
                    "-c",
                    str(_write_yaml(self.run_dir / f"{name}.yaml", bootstrap)),
                    "--disable-hot-restart",
                    "--concurrency",
                    str(self.envoy_concurrency),
                    "--log-level",
                    "warning",
                ],
            )
            self._wait(name, [("127.0.0.1", port)], timeout)
        self._wait("bench-stream-upstream", [("127.0.0.1", p.stream)], timeout)
        if self.with_noop:
            self._spawn(
                "bench-noop-server",
                [sys.executable, "-m", "gateway_tools.bench.noop", "--port", str(p.noop_ext_proc)],
            )
            self._wait("bench-noop-server", [("127.0.0.1", p.noop_ext_proc)], timeout)
            bootstrap = noop.bootstrap(p.noop, p.noop_admin, p.canned, p.stream, p.noop_ext_proc)
            self._spawn(
                "bench-noop-envoy",
                [
                    envoy_binary(),
                    "-c",
                    str(_write_yaml(self.run_dir / "noop.yaml", bootstrap)),
                    "--disable-hot-restart",
                    "--concurrency",
                    str(self.envoy_concurrency),
                    "--log-level",
                    "warning",
                ],
            )
            self._wait("bench-noop-envoy", [("127.0.0.1", p.noop)], timeout)
        if any(name in TRACED for name in self.own):
            self._spawn(
                "bench-otlp-sink",
                [sys.executable, "-m", "gateway_tools.bench.otlp_sink", "--port", str(p.otlp)],
            )
            self._wait("bench-otlp-sink", [("127.0.0.1", p.otlp)], timeout)
        if any(OWN_GATEWAY[name] for name in self.own):
            self._spawn("bench-redis", admission.redis_argv(p.redis, self.run_dir))
            self._wait("bench-redis", [("127.0.0.1", p.redis)], timeout)
        super()._start(timeout)
        for name, stack in self.own.items():
            stack.start(timeout)
            self._first_answer(name)
        if self.with_peer:
            self._wait("bench-peer", [("127.0.0.1", p.peer)], peer.START_TIMEOUT)
            self._first_answer("peer")

    def _first_answer(self, probe: str) -> None:
        """One request before measuring: it must succeed, and a budgeted gateway must have checked budgets."""
        try:
            status, headers, body = self.requests()[probe].send(timeout=60)
        except OSError as e:
            status, headers, body = 0, {}, str(e).encode()
        problem = f"answered {status}: {body[:500].decode(errors='replace')}" if status != 200 else ""
        if (
            not problem
            and probe in self.own
            and probe not in TRACED
            and admission.RATE_LIMIT_HEADER not in headers
        ):
            problem = f"answered without {admission.RATE_LIMIT_HEADER}: its budgets are not in force"
        if problem:
            child = self._child("bench-peer") if probe == "peer" else self.own[probe]._child("ext_proc-0")
            raise StackError(f"{probe}: a first request {problem}\n{child.tail() if child else ''}")

    def check(self) -> None:
        super().check()
        for stack in self.own.values():
            stack.check()

    def stop(self, grace: float = 10.0) -> None:
        for stack in reversed(self.own.values()):
            stack.stop(grace)
        super().stop(grace)

    # ---- processes --------------------------------------------------------------------
    def pids(self, prefix: str, stack: Stack | None = None) -> list[int]:
        return [c.proc.pid for c in (stack or self).children if c.name.startswith(prefix) and c.proc]

    def proxy_pids(self, probe: str) -> list[int]:
        """The Python processes that handle ``probe``'s requests: its gateway's ext_proc, or LiteLLM."""
        if probe == "peer":
            return [pid for root in self.pids("bench-peer") for pid in process_tree(root)]
        if probe in FLOORS or probe == "upstream":
            return []
        if probe in REFERENCES:
            return self.pids("bench-noop-server")
        return self.pids("ext_proc", self.own.get(probe))

    def envoy_pids(self, probe: str) -> list[int]:
        if probe in FLOORS:
            return self.pids("bench-floor")
        if probe in ("upstream", "peer"):
            return []
        if probe in REFERENCES:
            return self.pids("bench-noop-envoy")
        return self.pids("envoy", self.own.get(probe))

    def envoy_admin(self, probe: str) -> str | None:
        """The admin address of the Envoy that serves ``probe`` (None: no Envoy of ours)."""
        p = self.ports
        if probe in FLOORS:
            return f"127.0.0.1:{p.floor_admin}"
        if probe in REFERENCES:
            return f"127.0.0.1:{p.noop_admin}"
        if probe in ("upstream", "peer"):
            return None
        admin = (self.own.get(probe) or self).config.admin
        return f"{admin.address}:{admin.port}"

    def ext_proc_messages(self, probe: str) -> dict[str, int]:
        """Envoy's own counts of ext_proc streams and messages so far (every ext_proc
        filter of ``probe``'s Envoy summed: the router stage and any per-attempt stage)."""
        admin = self.envoy_admin(probe)
        out = {"streams": 0, "sent": 0, "received": 0}
        if admin is None:
            return out
        url = (
            f"http://{admin}/stats?filter=ext_proc\\.(streams_started|stream_msgs_sent|stream_msgs_received)$"
        )
        with urllib.request.urlopen(url, timeout=5) as r:
            for line in r.read().decode().splitlines():
                name, _, value = line.rpartition(": ")
                key = {"streams_started": "streams", "stream_msgs_sent": "sent"}.get(
                    name.rpartition(".")[2], "received"
                )
                out[key] += int(value)
        return out

    def spans_exported(self, probe: str) -> int:
        """Spans the Envoy of a traced probe exported (its tracer's own counter): proof it traced."""
        admin = self.own[probe].config.admin
        url = f"http://{admin.address}:{admin.port}/stats?filter=^tracing\\.opentelemetry\\.spans_sent$"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        return int(text.rpartition(":")[2]) if ":" in text else 0

    def all_pids(self) -> list[int]:
        """Every process of the run (the bench's own CPU is told apart from other load with them)."""
        roots = [c.proc.pid for s in (self, *self.own.values()) for c in s.children if c.proc]
        return [pid for root in roots for pid in process_tree(root)]

    # ---- requests ---------------------------------------------------------------------
    def requests(self) -> dict[str, Request]:
        """Every probe's request: the floors, the gateway scenarios and the peer."""
        p, k = self.ports, self.keys
        prompt = "Write a haiku about load balancers."
        large = _large_prompt()
        tenant = {"authorization": f"Bearer {k['tenant']}", "content-type": "application/json"}
        to_openai = {"authorization": f"Bearer {k['openai']}", "content-type": "application/json"}
        paced = {
            "x-api-key": k["stream"],
            "anthropic-version": "2023-06-01",
            "content-type": "application/json",
            upstream.TARGET_HEADER: "stream",
        }
        chat, listen = "/v1/chat/completions", p.main.listen
        floor_stream = _chat("claude-bench", prompt, stream=True)
        return {
            "floor": Request(p.floor, chat, to_openai, _chat("bench-passthrough", prompt)),
            "noop-unary": Request(p.noop, chat, to_openai, _chat("bench-passthrough", prompt)),
            "noop-stream": Request(p.noop, "/v1/messages", paced, floor_stream),
            "floor-large": Request(p.floor, chat, to_openai, _chat("bench-passthrough", large)),
            "floor-stream": Request(p.floor, "/v1/messages", paced, floor_stream),
            "upstream": Request(p.canned, chat, to_openai, _chat("bench-passthrough", prompt)),
            "passthrough": Request(listen, chat, tenant, _chat("bench-passthrough", prompt)),
            "completions": Request(listen, "/v1/completions", tenant, _completion("bench-passthrough")),
            "translated": Request(listen, chat, tenant, _chat("bench-translated", prompt)),
            "responses": Request(listen, "/v1/responses", tenant, _responses("bench-translated", prompt)),
            "large": Request(listen, chat, tenant, _chat("bench-translated", large)),
            "streamed": Request(listen, chat, tenant, _chat("bench-streamed", prompt, stream=True)),
            **{
                name: Request(stack.config.listen.port, chat, tenant, _chat("bench-translated", prompt))
                for name, stack in self.own.items()
            },
            "peer": Request(
                p.peer, chat, {**tenant, "authorization": f"Bearer {k['peer']}"}, _chat(peer.MODEL, prompt)
            ),
        }

    def slow_stream(self, events: int, pace_ms: int) -> Request:
        """The streamed scenario's request, paced slowly so many streams stay open at once."""
        req = self.requests()["streamed"]
        headers = {**req.headers, upstream.PACE_HEADER: str(pace_ms), upstream.EVENTS_HEADER: str(events)}
        return Request(req.port, req.path, headers, req.body)
