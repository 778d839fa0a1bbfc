"""``python -m gateway_tools.vllm``: build the tiny model, run N vLLM replicas until Ctrl-C, or measure
a running server into a profile for ``llm-gateway plan``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []  # serve: more vLLM server arguments
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(
        prog="python -m gateway_tools.vllm",
        description=__doc__,
        epilog="serve N ... -- ARGS: ARGS go to each vLLM server (e.g. -- --max-num-seqs 8)",
    )
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
    m = sub.add_parser("profile", help="measure a running server; print a server profile for `plan`")
    m.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8000")
    m.add_argument("--batches", default="1,2,4", help="batch sizes to time a decode step at (default 1,2,4)")
    m.add_argument("--max-num-seqs", type=int, default=256, help="the server's --max-num-seqs")
    m.add_argument("--gpu-hour-usd", type=float, default=0.0, help="what the server costs per hour")
    args = p.parse_args(argv)
    if args.cmd == "profile":
        import yaml

        from .profile import measure

        prof = measure(args.url.rstrip("/"), batches=tuple(int(b) for b in args.batches.split(",")))
        prof.update(max_num_seqs=args.max_num_seqs, gpu_hour_usd=args.gpu_hour_usd)
        print(yaml.safe_dump({"server": prof}, sort_keys=False), end="")
        return 0
    if args.cmd == "build-model":
        from .model import build_model, ensure_model

        print((build_model if args.force else ensure_model)(args.out, seed=args.seed))
        return 0
    from .replicas import VllmStartError, start_vllm_replicas, stop_replicas

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
