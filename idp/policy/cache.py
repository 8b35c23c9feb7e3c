"""The compiled policy of this worker, and a cache of subjects.

Every policy write bumps `policy_state.version` in its own transaction. A worker reads that
stamp at most every IDP_POLICY_REFRESH_TTL seconds (default 2) and recompiles when it moved,
so a change made on any node reaches every worker of every node within that time, without a
restart and without a per-request query. Subjects are cached per version (and never past the
earliest expiry of their role assignments).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from flask import current_app

from ..storage.models import User
from .engine import CompiledPolicy, Subject
from .store import current_version, load_policy, load_subject

SUBJECT_CACHE_SIZE = 10_000


class PolicyCache:
    def __init__(self, refresh_ttl: float):
        self.refresh_ttl = refresh_ttl
        self._policy: CompiledPolicy | None = None
        self._checked_at = 0.0
        self._subjects: OrderedDict[str, Subject] = OrderedDict()
        self._lock = threading.Lock()

    def policy(self) -> CompiledPolicy:
        now = time.monotonic()
        if self._policy is None or now - self._checked_at >= self.refresh_ttl:
            version = current_version()
            with self._lock:
                if self._policy is None or self._policy.version != version:
                    self._policy = load_policy()
                    self._subjects.clear()
                self._checked_at = now
        return self._policy

    def subject(self, user: User) -> Subject:
        version = self.policy().version
        with self._lock:
            cached = self._subjects.get(user.id)
            if cached is not None and cached.cache_version == version and (
                    cached.valid_until is None or cached.valid_until > time.time()):
                self._subjects.move_to_end(user.id)
                return cached
        subject = load_subject(user)
        subject.cache_version = version
        with self._lock:
            self._subjects[user.id] = subject
            if len(self._subjects) > SUBJECT_CACHE_SIZE:
                self._subjects.popitem(last=False)
        return subject

    def invalidate(self) -> None:
        """This worker's own writes are visible at once (others within refresh_ttl)."""
        with self._lock:
            self._policy = None
            self._subjects.clear()


def policy_cache() -> PolicyCache:
    return current_app.extensions["policy"]
