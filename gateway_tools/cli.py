"""``llm-gateway``: run, check and render the gateway, and the tools around it.

The product's commands (``serve``, ``check``, ``render-envoy``) come from
``ext_proc.cli``; this adds ``up``, ``apply``, ``status``, ``mock-providers``, ``simulate-pool``,
``loadtest``, ``bench`` and ``plan``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ext_proc import cli as product
from ext_proc.cli import _config_arg
from ext_proc.config import GatewayConfig, load_config, provider_key


def deployments_of(cfg: GatewayConfig, provider: str) -> tuple[str, ...]:
    """The deployments a mock Azure OpenAI resource has: those the config's backends on it name,
    as an operator creates each one before routing to it."""
    return tuple(sorted({b.upstream_model for b in cfg.backends.values() if b.provider_name == provider}))


def cmd_mock_providers(args: argparse.Namespace) -> int:
    from . import mocks

    cfg = load_config(args.config)
    env = dict(os.environ)
    ttl = float(env.get("LLM_GATEWAY_MOCK_TOKEN_TTL_S") or 3600)  # cloud mocks' token lifetime
    specs = []
    for name, p in cfg.mock_providers().items():
        if p.dialect == "bedrock":  # verifies signatures: the mock needs the AWS secret, not a key
            from .mocks.bedrock import spec_for

            specs.append(spec_for(name, p, args.host or p.host))
            continue
        # Cloud mocks accept what the gateway will present: tokens signed by its service-account
        # key (Vertex), or issued to its OAuth client (Azure's Entra ID token endpoint).
        client_secret = None
        if p.oauth is not None and p.oauth.client_id:
            client_secret = (
                env.get(p.oauth.client_secret_env or "", "")
                if p.oauth.client_secret_env
                else Path(p.oauth.client_secret_file or "").read_text()
            ).strip()
        specs.append(
            mocks.MockSpec(
                name=name,
                dialect=p.dialect,
                port=p.port,
                api_key=provider_key(name, p, env) or "",
                host=args.host or p.host,
                credentials_file=p.gcp_credentials_file or env.get("GOOGLE_APPLICATION_CREDENTIALS"),
                client_id=p.oauth.client_id if p.oauth else None,
                client_secret=client_secret,
                token_ttl_s=ttl,
                deployments=deployments_of(cfg, name) if p.dialect == "azure_openai" else (),
            )
        )
    if not specs:
        print(f"{cfg.source}: no provider has 'mock: true'", file=sys.stderr)
        return 2
    mocks.run_forever(specs)
    return 0


def cmd_simulate_pool(args: argparse.Namespace) -> int:
    from .simulator import FAULTS, run_forever

    faults: dict[int, str] = {}
    for spec in args.fault or []:
        idx, _, fault = spec.partition("=")
        if not idx.isdigit() or fault not in FAULTS or int(idx) >= args.servers:
            print(f"--fault {spec}: expected INDEX=FAULT, FAULT one of {', '.join(FAULTS)}", file=sys.stderr)
            return 2
        faults[int(idx)] = fault
    ports = [args.port + i if args.port else 0 for i in range(args.servers)]
    run_forever(
        args.servers,
        model=args.model,
        host=args.host,
        ports=ports,
        time_scale=args.time_scale,
        num_blocks=args.kv_blocks,
        max_num_seqs=args.max_num_seqs,
        faults=faults,
    )
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from .supervisor import StackError, control_request, pointer_file, running_gateways

    cfg = load_config(args.config)  # invalid: every error printed, nothing sent
    running = running_gateways()
    if running and cfg.listen.port not in running and not pointer_file(cfg.listen.port).exists():
        # The file moves the listener: the gateway is found by its port, and could not move anyway.
        ports = ", ".join(map(str, running))
        print(
            f"llm-gateway apply: this config listens on port {cfg.listen.port}, the running gateway on {ports}: "
            "listen: changing it needs a restart of the gateway",
            file=sys.stderr,
        )
        return 1
    try:
        reply = control_request(cfg.listen.port, {"op": "apply", "config": cfg.text, "source": cfg.source})
    except StackError as e:
        print(f"llm-gateway apply: {e}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print("the running gateway rejected the config and keeps serving the previous one:", file=sys.stderr)
        for problem in reply.get("errors", []):
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"applied: the gateway on port {cfg.listen.port} now serves config {reply['version']}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .status import run_status

    return run_status(load_config(args.config), interval=args.interval, as_json=args.json)


def cmd_up(args: argparse.Namespace) -> int:
    from .supervisor import run_up

    return run_up(args.config, metrics_port=args.metrics_port)


def build_parser() -> argparse.ArgumentParser:
    """The product's parser (``ext_proc.cli.build_parser``) plus the tool commands."""
    parser = product.build_parser()
    parser.description = __doc__.split("\n\n")[0]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))

    p = sub.add_parser("up", help="run mock providers, the ext_proc server and Envoy until Ctrl-C")
    _config_arg(p)
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="the supervisor's Prometheus port (worker restarts); default: a free port, 0: off",
    )
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("apply", help="switch a running gateway (`up`) to a config, without a restart")
    _config_arg(p, positional=True)
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser(
        "status", help="backends, models, tenants and the last config change of a running gateway"
    )
    _config_arg(p, positional=True)
    p.add_argument(
        "--interval", type=float, default=1.0, help="seconds between the two samples (recent error rate)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "mock-providers", help="run the mock OpenAI, Anthropic and Gemini providers of a config"
    )
    _config_arg(p)
    p.add_argument("--host", help="bind address, e.g. 0.0.0.0 in a container (default: each base_url's host)")
    p.set_defaults(func=cmd_mock_providers)

    p = sub.add_parser("simulate-pool", help="run simulated vLLM model servers (a pool) until Ctrl-C")
    p.add_argument("--servers", type=int, default=4, help="how many servers (default 4)")
    p.add_argument("--port", type=int, default=0, help="first port; the others follow (default: free ports)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--model", default="sim-llama", help="the served model name (default sim-llama)")
    p.add_argument("--time-scale", type=float, default=1.0, help="step time multiplier (0.1 = 10x faster)")
    p.add_argument("--kv-blocks", type=int, help="KV cache blocks of 16 tokens (default: the A100 profile's)")
    p.add_argument("--max-num-seqs", type=int, help="sequences per batch (default 256)")
    p.add_argument("--fault", action="append", metavar="INDEX=FAULT", help="e.g. 2=stalled (repeatable)")
    p.set_defaults(func=cmd_simulate_pool)

    from .loadtest import add_parser as add_loadtest

    add_loadtest(sub)

    from .bench import add_parser as add_bench

    add_bench(sub)

    from .plan import add_parser as add_plan

    add_plan(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return product.run(build_parser().parse_args(argv))
