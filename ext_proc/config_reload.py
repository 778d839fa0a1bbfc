"""A worker's config switch, built off its event loop.

A config with tens of thousands of tenants takes seconds to parse and validate.
Built on the event loop (as the SIGHUP handler used to), it held every request
in flight, and those held past Envoy's message timeout failed with 504
(issue 13). Now:

1. a child process (``python -m ext_proc.config_reload FILE``) reads the file
   and parses its YAML, the CPU-heavy half: in a thread, the C parser and the
   collector would still hold the interpreter lock for long stretches. It hands
   back the text and the parsed data, pickled (exactly the types YAML made);
2. a thread validates the data and builds the ``GatewayState``, with the cyclic
   garbage collector paused: a full collection during the build walked the
   half-built config and stalled the loop for 0.7 s;
3. the caller swaps the state in on the loop (one assignment) and freezes what
   is alive, so later full collections never walk the big config again (as
   ``server.serve`` does at start). Configs and states hold no reference
   cycles: a replaced one is freed by reference counting once its last stream
   ends (``tests/test_config_scale.py`` checks it), frozen or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import ConfigError, build_config, load_yaml
from .state import GatewayState


async def build_state(path: str, previous: GatewayState | None, force: bool = False) -> GatewayState | None:
    """The state of the config in ``path``, or None when it is the one ``previous``
    serves (and not ``force``). Raises ``ConfigError`` for an invalid config."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise ConfigError(
            [
                f"{path}: the config parser exited with {proc.returncode}: "
                f"{err.decode(errors='replace').strip()[-2000:]}"
            ]
        )
    return await asyncio.get_running_loop().run_in_executor(None, _build, out, path, previous, force)


def _build(blob: bytes, path: str, previous: GatewayState | None, force: bool) -> GatewayState | None:
    with collector_paused():
        parsed: tuple[Any, ...] = pickle.loads(blob)  # our own child's answer
        if parsed[0] == "error":
            raise ConfigError(parsed[1])
        _, text, data = parsed
        config = build_config(data, text, path)
        del data, parsed
        if not force and previous is not None and config.version == previous.config.version:
            return None
        return GatewayState(config, previous=previous)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic cyclic collection meanwhile (process-wide: requests served
    meanwhile leave their cycles to the next collection)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def parse_file(path: str) -> tuple[Any, ...]:
    """What the child hands back: ("ok", text, data) or ("error", problems)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        return ("error", [f"{path}: cannot read: {e.strerror}"])
    try:
        return ("ok", text, load_yaml(text, path))
    except ConfigError as e:
        return ("error", e.problems)


def main(argv: list[str]) -> int:
    sys.stdout.buffer.write(pickle.dumps(parse_file(argv[0]), protocol=pickle.HIGHEST_PROTOCOL))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
