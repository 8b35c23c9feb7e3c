"""The ephemeral store: short-lived state shared by every gunicorn worker and node.

Login interactions, authorization codes, SSO sessions, rate-limit and lockout counters, the
access-token revocation denylist and MFA challenges live here. Two backends, one interface:

* `SqlStore`  (default, embedded): one table in the main database.
* `RedisStore` (`REDIS_URL`): for many nodes.

Both give TTLs, an atomic counter and an atomic take (get-and-delete), each in one round trip
that the database or Redis executes atomically; never look-then-delete, which would let two
workers both consume a single-use value.
"""

from __future__ import annotations

import json
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, delete, text

from .models import StoreEntry

_table = StoreEntry.__table__


class Store(ABC):
    """Keys are strings chosen by the caller with a namespace prefix (`code:`, `session:`...);
    values are bytes; `ttl` is in seconds and must be positive."""

    @abstractmethod
    def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    def set(self, key: str, value: bytes, ttl: float) -> None: ...

    @abstractmethod
    def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Set only if absent (or expired). True when this call created it. Atomic."""

    @abstractmethod
    def take(self, key: str) -> bytes | None:
        """Get and delete in one atomic step: of concurrent callers, exactly one gets the value."""

    @abstractmethod
    def delete(self, key: str) -> bool: ...

    @abstractmethod
    def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        """Atomically add `amount` and return the new value. A missing or expired counter
        starts from zero with a fresh `ttl` (a fixed window); later increments keep its expiry."""

    @abstractmethod
    def ttl(self, key: str) -> float | None:
        """Seconds until the key expires, or None if it does not exist."""

    @abstractmethod
    def ping(self) -> None:
        """Raise if the backend cannot be reached."""

    # --- JSON conveniences ------------------------------------------------------------------

    def set_json(self, key: str, value: Any, ttl: float) -> None:
        self.set(key, json.dumps(value, separators=(",", ":")).encode(), ttl)

    def add_json(self, key: str, value: Any, ttl: float) -> bool:
        return self.add(key, json.dumps(value, separators=(",", ":")).encode(), ttl)

    def get_json(self, key: str) -> Any:
        raw = self.get(key)
        return None if raw is None else json.loads(raw)

    def take_json(self, key: str) -> Any:
        raw = self.take(key)
        return None if raw is None else json.loads(raw)


# One statement per operation, written once: the same SQL runs on SQLite (>= 3.35) and
# PostgreSQL, and text() skips SQLAlchemy's per-call statement construction on the hot path
# (the token endpoint's rate-limit counter, the introspection denylist check).
_SQL_GET = text("SELECT value FROM store_entries WHERE key = :key AND expires_at > :now")
_SQL_TTL = text("SELECT expires_at FROM store_entries WHERE key = :key")
_SQL_SET = text(
    "INSERT INTO store_entries (key, value, counter, expires_at) VALUES (:key, :value, 0, :expires_at) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, counter = 0, expires_at = excluded.expires_at")
# Replace only an expired row; a live one makes the upsert a no-op that returns nothing.
_SQL_ADD = text(
    "INSERT INTO store_entries (key, value, counter, expires_at) VALUES (:key, :value, 0, :expires_at) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, counter = 0, expires_at = excluded.expires_at "
    "WHERE store_entries.expires_at <= :now RETURNING key")
_SQL_TAKE = text("DELETE FROM store_entries WHERE key = :key RETURNING value, expires_at")
_SQL_DELETE = text("DELETE FROM store_entries WHERE key = :key RETURNING expires_at")
# A counter past its expiry restarts at `amount` with a fresh window; a live one keeps its expiry.
_SQL_INCR = text(
    "INSERT INTO store_entries (key, value, counter, expires_at) VALUES (:key, NULL, :amount, :expires_at) "
    "ON CONFLICT (key) DO UPDATE SET "
    "counter = CASE WHEN store_entries.expires_at <= :now THEN :amount ELSE store_entries.counter + :amount END, "
    "expires_at = CASE WHEN store_entries.expires_at <= :now THEN excluded.expires_at "
    "ELSE store_entries.expires_at END "
    "RETURNING counter")
_SQL_PURGE = text("DELETE FROM store_entries WHERE expires_at <= :now")


class SqlStore(Store):
    """One row per key in `store_entries`; expired rows are ignored by every read and purged
    now and then. Each method is a single SQL statement in its own transaction, so callers
    must not hold a SQLite write transaction open around it (commit first)."""

    PURGE_PROBABILITY = 0.01

    def __init__(self, engine: Engine | Callable[[], Engine]):
        self._engine_or_factory = engine

    @property
    def engine(self) -> Engine:
        value = self._engine_or_factory
        return value if isinstance(value, Engine) else value()

    def _execute(self, statement, **params):
        with self.engine.begin() as conn:
            result = conn.execute(statement, params)
            rows = result.all() if result.returns_rows else None
            if random.random() < self.PURGE_PROBABILITY:
                conn.execute(_SQL_PURGE, {"now": time.time()})
        return rows

    def get(self, key):
        rows = self._execute(_SQL_GET, key=key, now=time.time())
        return rows[0][0] if rows else None

    def set(self, key, value, ttl):
        self._execute(_SQL_SET, key=key, value=value, expires_at=time.time() + ttl)

    def add(self, key, value, ttl):
        now = time.time()
        return bool(self._execute(_SQL_ADD, key=key, value=value, expires_at=now + ttl, now=now))

    def take(self, key):
        rows = self._execute(_SQL_TAKE, key=key)
        if not rows or rows[0][1] <= time.time():
            return None
        return rows[0][0]

    def delete(self, key):
        rows = self._execute(_SQL_DELETE, key=key)
        return bool(rows) and rows[0][0] > time.time()

    def incr(self, key, ttl, amount=1):
        now = time.time()
        return int(self._execute(_SQL_INCR, key=key, amount=amount, expires_at=now + ttl, now=now)[0][0])

    def ttl(self, key):
        rows = self._execute(_SQL_TTL, key=key)
        if not rows:
            return None
        remaining = rows[0][0] - time.time()
        return remaining if remaining > 0 else None

    def ping(self):
        self._execute(_SQL_TTL, key="ping")

    def purge_expired(self) -> int:
        with self.engine.begin() as conn:
            return conn.execute(delete(_table).where(_table.c.expires_at <= time.time())).rowcount

    def clear(self) -> None:
        """Tests only."""
        with self.engine.begin() as conn:
            conn.execute(delete(_table))


class RedisStore(Store):
    # INCRBY and the first EXPIRE must be one step, or a crash between them leaves a counter
    # that never expires (a permanent lockout).
    _INCR = """
    local v = redis.call('INCRBY', KEYS[1], ARGV[1])
    if v == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
    return v
    """

    def __init__(self, url: str, prefix: str = "idp:"):
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5,
                                          health_check_interval=30)
        self.prefix = prefix
        self._incr = self.redis.register_script(self._INCR)

    def _k(self, key: str) -> str:
        return self.prefix + key

    @staticmethod
    def _ms(ttl: float) -> int:
        return max(1, int(ttl * 1000))

    def get(self, key):
        return self.redis.get(self._k(key))

    def set(self, key, value, ttl):
        self.redis.set(self._k(key), value, px=self._ms(ttl))

    def add(self, key, value, ttl):
        return bool(self.redis.set(self._k(key), value, px=self._ms(ttl), nx=True))

    def take(self, key):
        return self.redis.getdel(self._k(key))

    def delete(self, key):
        return bool(self.redis.delete(self._k(key)))

    def incr(self, key, ttl, amount=1):
        return int(self._incr(keys=[self._k(key)], args=[amount, self._ms(ttl)]))

    def ttl(self, key):
        ms = self.redis.pttl(self._k(key))
        return None if ms < 0 else ms / 1000

    def ping(self):
        self.redis.ping()

    def clear(self) -> None:
        """Tests only: delete this store's keys."""
        for key in self.redis.scan_iter(match=self.prefix + "*", count=1000):
            self.redis.delete(key)


def create_store(redis_url: str | None, engine: Engine | Callable[[], Engine]) -> Store:
    return RedisStore(redis_url) if redis_url else SqlStore(engine)
