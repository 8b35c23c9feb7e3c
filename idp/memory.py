"""Give freed heap memory back to the operating system once a worker is idle.

A password hash (argon2id, IDP_ARGON2_MEMORY_KIB: 19 MiB by default) allocates and frees one
large buffer. glibc raises its mmap threshold to the size of the first such buffer it frees, so
later buffers come from the heap and stay there once freed: every worker that has checked a
password keeps about that much more resident for its whole life. Returning the memory after each
hash would cost page faults on the next one (a fixed mmap threshold measured 20 -> 27 ms per
hash), so a worker returns it with malloc_trim(0) only after IDLE_TTL seconds without a request.
Nothing happens where libc has no malloc_trim (musl, macOS).
"""

from __future__ import annotations

import ctypes
import threading
import time

from flask import Flask

from . import background

IDLE_TTL = 2.0  # seconds without a request before a worker gives memory back
THREAD = "memory-trim"

_activity = {"last": 0.0, "pending": False}


def _malloc_trim():
    try:
        # The process's own symbols: libc is loaded already (find_library would run ldconfig).
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def init_app(app: Flask) -> None:
    if app.extensions["idp"].settings.testing:
        return
    trim = _malloc_trim()
    if trim is None:
        return
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int

    @app.before_request
    def note_activity():
        _activity["last"], _activity["pending"] = time.monotonic(), True
        background.ensure_thread(THREAD, _run, trim)


def _run(stop: threading.Event, trim) -> None:
    while not stop.wait(IDLE_TTL / 2):
        if _activity["pending"] and time.monotonic() - _activity["last"] >= IDLE_TTL:
            _activity["pending"] = False
            trim(0)
