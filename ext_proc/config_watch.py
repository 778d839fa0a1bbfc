"""Reload a worker's config when its file changes (``serve --watch-config``).

Made for Kubernetes: a ConfigMap or Secret mounted as a directory is updated
by the kubelet with an atomic symlink swap. The files are symlinks
(``gateway.yaml -> ..data/gateway.yaml``), ``..data`` points to a timestamped
directory (``..2024_01_02_03_04_05.123``), and an update writes a new
timestamped directory and renames a new ``..data`` over the old one. Nothing
is written to the path the worker was given, so inotify on it sees nothing,
but its resolved real path changes. This watcher polls the real path, mtime,
size and inode of the config file and of every provider ``api_key_file``:

- the config file changed: reload it (the same as SIGHUP: switch only if it
  is valid and its content differs);
- a key file changed (a rotated Secret): rebuild the worker's state even if
  the config text is the same, so new requests use the new key.

Off by default: ``llm-gateway up`` switches its workers itself (``apply``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from .config import GatewayConfig

log = logging.getLogger("llm_gateway.config_watch")

DEFAULT_INTERVAL = 1.0
ENV = "LLM_GATEWAY_WATCH_CONFIG"  # "1"/"true": watch every second; a number: every that many seconds

Stamp = tuple[Any, ...]


def interval_from_env(env: dict[str, str] | None = None) -> float:
    """The watch interval ``LLM_GATEWAY_WATCH_CONFIG`` asks for (0: off)."""
    value = (os.environ if env is None else env).get(ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return 0.0
    if value in ("1", "true", "yes", "on"):
        return DEFAULT_INTERVAL
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{ENV}={value!r}: expected 1/true, 0/false or a number of seconds") from None
    if seconds < 0:
        raise ValueError(f"{ENV}={value!r}: the interval cannot be negative")
    return seconds


def stamp(path: str) -> Stamp:
    """What changes when ``path`` (or what its symlinks point to) is replaced."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return (path, None)
    return (real, st.st_mtime_ns, st.st_size, st.st_ino)


def key_files(config: GatewayConfig) -> list[str]:
    return sorted({p.api_key_file for p in config.providers.values() if p.api_key_file})


def stamps(paths: Iterable[str]) -> tuple[Stamp, ...]:
    return tuple(stamp(p) for p in paths)


async def watch(
    current: Callable[[], GatewayConfig],
    reload: Callable[[bool], Awaitable[None] | None],
    interval: float = DEFAULT_INTERVAL,
) -> None:
    """Until cancelled: every ``interval`` seconds, compare the files of the
    config ``current()`` returns with what they were, and call
    ``reload(keys_changed)`` when they differ."""
    config = current()
    seen_config, seen_keys = stamp(config.source), stamps(key_files(config))
    log.info("watching %s (and %d key files) for changes every %gs", config.source, len(seen_keys), interval)
    while True:
        await asyncio.sleep(interval)
        config = current()
        now_config, now_keys = stamp(config.source), stamps(key_files(config))
        if now_config == seen_config and now_keys == seen_keys:
            continue
        keys_changed = now_keys != seen_keys
        log.info("%s changed on disk: reloading", "a provider key file" if keys_changed else config.source)
        try:
            done = reload(keys_changed)
            if inspect.isawaitable(done):  # a reload built off the loop: wait for its switch
                await done
        except Exception:  # a failed reload must not end the watch
            log.exception("config reload failed")
        # What was seen before the reload read the files: a change during it is seen next round.
        seen_config, seen_keys = now_config, now_keys
        reloaded = current()
        if key_files(reloaded) != key_files(config):  # the new config names other key files
            seen_keys = stamps(key_files(reloaded))


def start(
    current: Callable[[], GatewayConfig], reload: Callable[[bool], Awaitable[None] | None], interval: float
) -> asyncio.Task[None] | None:
    """The watch as a task on the running loop; None when ``interval`` is 0 (off)."""
    return asyncio.create_task(watch(current, reload, interval)) if interval > 0 else None
