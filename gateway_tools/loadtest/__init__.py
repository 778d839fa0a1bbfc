"""``llm-gateway loadtest``: LLM-aware load tests against any gateway URL, with a readable report.

The same command runs against ``llm-gateway up`` on this machine, against the
compose stack (it is the compose file's load generator service), or against
a stack it starts itself (``--start``). Each scenario writes
``OUT/<scenario>/report.json`` (every figure), ``report.md`` (the summary) and
PNG plots over time. See README.md, "Load testing".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``loadtest`` subcommand on the ``llm-gateway`` parser."""
    from .scenarios import SCENARIOS

    p = sub.add_parser(
        "loadtest",
        help="load-test a gateway and write a report (JSON, Markdown, PNG plots)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "scenarios",
        nargs="+",
        metavar="SCENARIO",
        choices=[*SCENARIOS, "all"],
        help=f"one or more of {', '.join(SCENARIOS)}, or all",
    )
    p.add_argument(
        "--config",
        "-c",
        help="the gateway's config: models, tenants, mock providers "
        "(default: the embedded config/gateway.yaml, as `llm-gateway up` uses)",
    )
    p.add_argument(
        "--url",
        default=os.environ.get("LLM_GATEWAY_URL"),
        help="gateway base URL (default: $LLM_GATEWAY_URL, else the config's listen address)",
    )
    p.add_argument("--start", action="store_true", help="start the local stack from --config for the run")
    p.add_argument(
        "--out", "-o", default="loadtest-report", help="report directory (default: loadtest-report)"
    )
    p.add_argument("--duration", "-d", type=float, default=30.0, help="seconds per scenario (default 30)")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--rate", "-r", type=float, default=10.0, help="open-loop requests/s (default 10)")
    load.add_argument("--concurrency", type=int, default=0, help="closed loop: this many clients instead")
    p.add_argument(
        "--models", help="weighted models, e.g. gpt-5.5=3,claude-sonnet-4-6=1 (default: all, equal)"
    )
    p.add_argument("--dialects", default="openai,anthropic,gemini", help="weighted client dialects")
    p.add_argument(
        "--stream-fraction", type=float, default=0.5, help="share of streamed requests (default 0.5)"
    )
    p.add_argument("--prompt-words", default="8=6,64=3,256=1", help="weighted prompt sizes in words")
    p.add_argument(
        "--max-tokens",
        type=int,
        default=1024,
        help="max_tokens of every request (default 1024; model servers generate them all)",
    )
    p.add_argument(
        "--key",
        action="append",
        dest="keys",
        metavar="API_KEY",
        help="a tenant's API key; repeat for a mix of tenants "
        "(default: $LLM_GATEWAY_API_KEY, else demo-key when the config has tenants)",
    )
    p.add_argument("--spike-tenant", help="spike: the tenant that bursts (default: the first key's)")
    p.add_argument(
        "--budget-rps", type=float, help="spike: the tenant's budget in requests/s (default: --rate)"
    )
    p.add_argument(
        "--outage-provider",
        help="outage: the mock provider to take down "
        "(default: the primary provider of the most weighted model)",
    )
    p.add_argument("--apply-config", help="reconfigure: the config `llm-gateway apply` applies mid-run")
    p.add_argument("--seed", type=int, default=1, help="seed of the request mix (default 1)")
    p.add_argument("--poisson", action="store_true", help="Poisson arrivals instead of evenly spaced ones")
    p.add_argument("--max-in-flight", type=int, default=256, help="open loop: cap on pending requests")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (it is off anyway when stderr is not a terminal)",
    )
    p.set_defaults(func=cmd_loadtest)


def cmd_loadtest(args: argparse.Namespace) -> int:
    from ext_proc.config import load_config

    from . import report, scenarios
    from .traffic import parse_weights

    cfg = load_config(args.config)
    wanted = list(scenarios.SCENARIOS) if "all" in args.scenarios else list(dict.fromkeys(args.scenarios))
    if "all" in args.scenarios and not args.apply_config:
        wanted.remove("reconfigure")
        print("reconfigure: skipped (give --apply-config FILE to include it in all)", file=sys.stderr)
    if "all" in args.scenarios and not any(p.endpoints for p in cfg.providers.values()):
        wanted.remove("pool")
        print("pool: skipped (the config has no pool of model servers)", file=sys.stderr)
    try:
        keys = args.keys or (
            [os.environ["LLM_GATEWAY_API_KEY"]]
            if os.environ.get("LLM_GATEWAY_API_KEY")
            else ["demo-key"]
            if cfg.tenants
            else []
        )
        settings = scenarios.Settings(
            url="",
            config=cfg,
            duration=args.duration,
            rate=args.rate,
            concurrency=args.concurrency,
            models=parse_weights(args.models, "--models") if args.models else {},
            dialects=parse_weights(args.dialects, "--dialects"),
            stream_fraction=args.stream_fraction,
            prompt_words={int(k): v for k, v in parse_weights(args.prompt_words, "--prompt-words").items()},
            max_tokens=args.max_tokens,
            api_keys=keys,
            spike_tenant=args.spike_tenant,
            budget_rps=args.budget_rps,
            outage_provider=args.outage_provider,
            apply_config=args.apply_config,
            seed=args.seed,
            poisson=args.poisson,
            max_in_flight=args.max_in_flight,
            timeout=args.timeout,
            progress=sys.stderr.isatty() and not args.no_progress,
        )
        unknown = set(settings.mix().models) - set(cfg.models)
        if unknown:
            raise ValueError(f"--models: not served by {cfg.source}: {', '.join(sorted(unknown))}")
    except ValueError as e:
        print(f"llm-gateway loadtest: {e}", file=sys.stderr)
        return 2
    up = None
    if args.start:
        print(f"starting `llm-gateway up` from {cfg.source} ...", file=sys.stderr)
        up = _Up(args.config, cfg)
        try:
            up.start()
        except RuntimeError as e:
            print(f"llm-gateway loadtest: the stack did not start: {e}", file=sys.stderr)
            return 1
    listen = "127.0.0.1" if cfg.listen.address in ("0.0.0.0", "::") else cfg.listen.address
    settings.url = args.url if args.url and not args.start else f"http://{listen}:{cfg.listen.port}"
    code = 0
    try:
        for name in wanted:
            try:
                result = scenarios.run(name, settings)
            except scenarios.ScenarioUnavailable as e:
                print(f"{name}: {e}", file=sys.stderr)
                if len(wanted) == 1:
                    code = 3
                continue
            except ValueError as e:
                print(f"llm-gateway loadtest {name}: {e}", file=sys.stderr)
                code = 2
                continue
            files = report.write(result, Path(args.out) / name)
            print(_summary_line(result) + f"\n  report: {files[-1]}")
            if up is not None:
                up.check()
    finally:
        if up is not None:
            up.stop()
    return code


def _summary_line(r: dict) -> str:
    t, lat = r["totals"], r["latency_ms"]
    books = "books balance" if all(r["checks"].values()) else "BOOKS DO NOT BALANCE"
    return (
        f"{r['scenario']}: sent {t['sent']}, ok {t['ok']}, rejected {t['rejected']}, errors "
        f"{t['error'] + t['client_error']}, failovers {t['failovers']}, p50 {lat['p50']} ms, p99 {lat['p99']} ms; "
        f"{books}"
    )


class _Up:
    """``llm-gateway up`` as a child process, so ``--start`` runs against exactly what users run
    (``apply`` included, which the reconfigure scenario needs)."""

    def __init__(self, config: str | None, cfg: Any):
        self.argv = [sys.executable, "-m", "gateway_tools", "up", *(["--config", config] if config else [])]
        host = "127.0.0.1" if cfg.admin.address in ("0.0.0.0", "::") else cfg.admin.address
        self.ready_url = f"http://{host}:{cfg.admin.port}/ready"
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in stop)
            prefix="llm-gateway-loadtest-up-",
            suffix=".log",
            delete=False,
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            with contextlib.suppress(OSError), urllib.request.urlopen(self.ready_url, timeout=1) as r:
                if r.status == 200:
                    time.sleep(0.5)  # `up` announces itself (and its control socket) right after
                    self.check()  # not some other gateway answering on these ports
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"not ready within {timeout:.0f}s\n{self.tail()}")

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"`llm-gateway up` exited with code {self.proc.returncode}\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-20:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)
