"""``llm-gateway``: run, check and render the gateway.

The product's commands: ``python -m ext_proc serve|check|render-envoy`` (``up``
starts its workers with ``python -m ext_proc serve``). The ``llm-gateway``
console command is ``gateway_tools.cli``, which adds the tools (``up``,
``apply``, ``status``, ``mock-providers``, ``loadtest``, ``bench``) to this
parser.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import credentials
from .config import ConfigError, credential_problems, load_config, resolve_secrets, retirement_warnings

CREDENTIALS_READY_S = 15.0


def _config_arg(p: argparse.ArgumentParser, positional: bool = False) -> None:
    help_text = "gateway config file (default: the embedded config/gateway.yaml)"
    if positional:
        p.add_argument("config", nargs="?", help=help_text)
    else:
        p.add_argument("--config", "-c", help=help_text)


def cmd_check(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    # Providers that sign load their credentials here as they would at startup, so a
    # profile that does not resolve is found now.
    problems = credential_problems(cfg)
    if problems:
        raise ConfigError([f"{cfg.source}: {p}" for p in problems])
    if args.secrets:
        resolve_secrets(cfg)  # provider keys, tenant keys and cloud credentials, as `serve` loads them
    backends = sum(len(c) for c in cfg.chains.values())
    for warning in retirement_warnings(cfg):
        print(f"{cfg.source}: warning: {warning}", file=sys.stderr)
    print(
        f"{cfg.source}: OK ({len(cfg.providers)} providers, {len(cfg.models)} models, "
        f"{backends} backends, {len(cfg.tenants)} tenants)"
    )
    return 0


def cmd_render_envoy(args: argparse.Namespace) -> int:
    from . import envoy_config

    cfg = load_config(args.config)
    out = envoy_config.write(cfg, args.output)
    print(f"wrote {out}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from . import config_watch, server
    from .state import GatewayState

    try:
        watch = args.watch_config if args.watch_config is not None else config_watch.interval_from_env()
    except ValueError as e:
        print(f"llm-gateway serve: {e}", file=sys.stderr)
        return 2
    cfg = load_config(args.config)
    GatewayState(cfg)  # fail fast on missing secrets and unloadable credentials, before listening
    # Cloud credentials get their first token before the first request (on their own threads).
    for label in credentials.wait_ready(CREDENTIALS_READY_S):
        logging.getLogger("llm_gateway").warning(
            "no token yet for %s: its providers' attempts fail over until one arrives", label
        )
    port = args.port or cfg.ext_proc.port
    metrics_port = cfg.ext_proc.metrics_port if args.metrics_port is None else args.metrics_port
    server.run(
        cfg,
        port,
        metrics_port or None,
        watch_config=watch,
        shutdown_delay=args.shutdown_delay,
        drain_seconds=args.drain_seconds,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-gateway", description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-level", default="INFO", help="log level of gateway processes (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check", help="validate a gateway config; non-zero exit on errors")
    _config_arg(p, positional=True)
    p.add_argument(
        "--secrets",
        action="store_true",
        help="also read every provider key and tenant key and load every cloud credential "
        "(as serve does at start), from this environment",
    )
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("render-envoy", help="render the Envoy bootstrap for a gateway config")
    _config_arg(p, positional=True)
    p.add_argument(
        "--output", "-o", default=str(Path("envoy") / "envoy.yaml"), help="default: envoy/envoy.yaml"
    )
    p.set_defaults(func=cmd_render_envoy)

    p = sub.add_parser("serve", help="run one ext_proc server process (what `up` starts)")
    _config_arg(p)
    p.add_argument("--port", type=int, help="gRPC port (default: ext_proc.port from config)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port, 0 disables (default: from config)")
    p.add_argument(
        "--watch-config",
        type=float,
        nargs="?",
        const=1.0,
        metavar="SECONDS",
        help="reload when the config file or a provider key file changes (e.g. a Kubernetes "
        "ConfigMap or Secret volume), checking every SECONDS (1 if not given); off unless "
        "given or LLM_GATEWAY_WATCH_CONFIG=1|SECONDS",
    )
    p.add_argument(
        "--shutdown-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="on SIGTERM, report NOT_SERVING to health checks and keep serving this long "
        "before draining (default 0)",
    )
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="after a config switch, how long the replaced config still serves failover attempts of "
        "requests routed under it, as long as Envoy keeps its routes (default 60, as `up`)",
    )
    p.set_defaults(func=cmd_serve)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the command ``args`` were parsed for; configuration errors are printed, exit code 1."""
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


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
