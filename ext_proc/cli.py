"""``llm-gateway``: run, check and render the gateway."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .config import ConfigError, load_config


def _config_arg(p: argparse.ArgumentParser, positional: bool = False) -> None:
    help_text = "gateway config file (default: the embedded config/gateway.yaml)"
    if positional:
        p.add_argument("config", nargs="?", help=help_text)
    else:
        p.add_argument("--config", "-c", help=help_text)


def cmd_check(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    backends = sum(len(c) for c in cfg.chains.values())
    print(f"{cfg.source}: OK ({len(cfg.providers)} providers, {len(cfg.models)} models, "
          f"{backends} backends, {len(cfg.tenants)} tenants)")
    return 0


def cmd_render_envoy(args: argparse.Namespace) -> int:
    from . import envoy_config

    cfg = load_config(args.config)
    out = envoy_config.write(cfg, args.output)
    print(f"wrote {out}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from . import server
    from .state import GatewayState

    cfg = load_config(args.config)
    GatewayState(cfg)  # fail fast on missing secrets, before listening
    port = args.port or cfg.ext_proc.port
    metrics_port = cfg.ext_proc.metrics_port if args.metrics_port is None else args.metrics_port
    server.run(cfg, port, metrics_port or None)
    return 0


def cmd_mock_providers(args: argparse.Namespace) -> int:
    import os

    from . import mock_providers
    from .config import provider_key

    cfg = load_config(args.config)
    specs = []
    for name, p in cfg.mock_providers().items():
        specs.append(mock_providers.MockSpec(name=name, dialect=p.dialect, port=p.port,
                                             api_key=provider_key(name, p, dict(os.environ)),
                                             host=args.host or p.host))
    if not specs:
        print(f"{cfg.source}: no provider has 'mock: true'", file=sys.stderr)
        return 2
    mock_providers.run_forever(specs)
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from .supervisor import StackError, control_request, pointer_file, running_gateways

    cfg = load_config(args.config)  # invalid: every error printed, nothing sent
    running = running_gateways()
    if running and cfg.listen.port not in running and not pointer_file(cfg.listen.port).exists():
        # The file moves the listener: the gateway is found by its port, and could not move anyway.
        ports = ", ".join(map(str, running))
        print(f"llm-gateway apply: this config listens on port {cfg.listen.port}, the running gateway on {ports}: "
              "listen: changing it needs a restart of the gateway", file=sys.stderr)
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

    return run_up(args.config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-gateway", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="log level of gateway processes (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", help="run mock providers, the ext_proc server and Envoy until Ctrl-C")
    _config_arg(p)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("apply", help="switch a running gateway (`up`) to a config, without a restart")
    _config_arg(p, positional=True)
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("status", help="backends, models, tenants and the last config change of a running gateway")
    _config_arg(p, positional=True)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between the two samples (recent error rate)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("check", help="validate a gateway config; non-zero exit on errors")
    _config_arg(p, positional=True)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("render-envoy", help="render the Envoy bootstrap for a gateway config")
    _config_arg(p, positional=True)
    p.add_argument("--output", "-o", default=str(Path("envoy") / "envoy.yaml"), help="default: envoy/envoy.yaml")
    p.set_defaults(func=cmd_render_envoy)

    p = sub.add_parser("serve", help="run one ext_proc server process (what `up` starts)")
    _config_arg(p)
    p.add_argument("--port", type=int, help="gRPC port (default: ext_proc.port from config)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port, 0 disables (default: from config)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("mock-providers", help="run the mock OpenAI, Anthropic and Gemini providers of a config")
    _config_arg(p)
    p.add_argument("--host", help="bind address, e.g. 0.0.0.0 in a container (default: each base_url's host)")
    p.set_defaults(func=cmd_mock_providers)

    from .loadtest import add_parser as add_loadtest

    add_loadtest(sub)

    from .bench import add_parser as add_bench

    add_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.func(args)
    except ConfigError as e:
        print("configuration errors:" if len(e.problems) > 1 else "configuration error:", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
