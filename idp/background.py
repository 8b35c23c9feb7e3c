"""Threads that run beside the requests, one of each per process: back-channel logout
deliveries (services/backchannel.py), the SAML metadata refresh (federation/metadata_refresh.py)
and giving idle memory back (memory.py).

Threads do not survive gunicorn's fork, so each is started from a before_request hook, on the
first request a process serves, and again in a forked child: the pid tells a fresh process.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

_running: dict[str, tuple[int, threading.Thread, threading.Event]] = {}
_lock = threading.Lock()


def ensure_thread(name: str, target: Callable, *args) -> None:
    """Run `target(stop_event, *args)` in a daemon thread called `name`, once per process."""
    if is_running(name):
        return
    with _lock:
        if is_running(name):
            return
        stop = threading.Event()
        thread = threading.Thread(target=target, args=(stop, *args), name=name, daemon=True)
        _running[name] = (os.getpid(), thread, stop)
        thread.start()


def is_running(name: str) -> bool:
    entry = _running.get(name)
    return entry is not None and entry[0] == os.getpid() and entry[1].is_alive()


def stop_thread(name: str, timeout: float = 5.0) -> None:
    """Ask the thread to stop and wait for it (tests; a server process just exits)."""
    with _lock:
        entry = _running.pop(name, None)
    if entry is not None and entry[0] == os.getpid():
        entry[2].set()
        entry[1].join(timeout)
