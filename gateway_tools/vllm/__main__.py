"""``python -m gateway_tools.vllm``: build the tiny model, or run N vLLM replicas until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gateway_tools.vllm", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-model", help="write the tiny random-weight Llama (needs transformers)")
    b.add_argument("out", help="model directory to write")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--force", action="store_true", help="rebuild even if DIR already holds this model")
    s = sub.add_parser("serve", help="run N vLLM replicas of a model directory until Ctrl-C")
    s.add_argument("n", type=int)
    s.add_argument("--python", required=True, help="the python of the venv vLLM is installed in")
    s.add_argument("--model", required=True, help="model directory (build-model's output)")
    s.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for readiness")
    s.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more vLLM server arguments")
    args = p.parse_args(argv)
    if args.cmd == "build-model":
        from .model import build_model, ensure_model

        print((build_model if args.force else ensure_model)(args.out, seed=args.seed))
        return 0
    from .replicas import VllmStartError, start_vllm_replicas, stop_replicas

    extra = [a for a in args.extra if a != "--"]
    try:
        reps = start_vllm_replicas(args.n, args.python, args.model, extra_args=extra, timeout=args.timeout)
    except VllmStartError as e:
        print(f"vllm: {e}", file=sys.stderr)
        return 1
    for r in reps:
        print(f"{r.url} pid {r.pid} log {r.log}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_replicas(reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
