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

from sqlalchemy import Engine, case, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

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

    def _insert(self):
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            return postgresql.insert(_table)
        if dialect == "sqlite":
            return sqlite.insert(_table)
        raise RuntimeError(f"SqlStore does not support {dialect}")

    def _execute(self, statement):
        with self.engine.begin() as conn:
            result = conn.execute(statement)
            rows = result.all() if result.returns_rows else None
            if random.random() < self.PURGE_PROBABILITY:
                conn.execute(delete(_table).where(_table.c.expires_at <= time.time()))
        return rows

    def get(self, key):
        rows = self._execute(
            select(_table.c.value).where(_table.c.key == key, _table.c.expires_at > time.time())
        )
        return rows[0][0] if rows else None

    def set(self, key, value, ttl):
        stmt = self._insert().values(key=key, value=value, counter=0, expires_at=time.time() + ttl)
        stmt = stmt.on_conflict_do_update(
            index_elements=[_table.c.key],
            set_={"value": stmt.excluded.value, "counter": 0, "expires_at": stmt.excluded.expires_at},
        )
        self._execute(stmt)

    def add(self, key, value, ttl):
        now = time.time()
        stmt = self._insert().values(key=key, value=value, counter=0, expires_at=now + ttl)
        # Replace only an expired row; a live one makes the upsert a no-op returning nothing.
        stmt = stmt.on_conflict_do_update(
            index_elements=[_table.c.key],
            set_={"value": stmt.excluded.value, "counter": 0, "expires_at": stmt.excluded.expires_at},
            where=_table.c.expires_at <= now,
        ).returning(_table.c.key)
        return bool(self._execute(stmt))

    def take(self, key):
        rows = self._execute(
            delete(_table).where(_table.c.key == key).returning(_table.c.value, _table.c.expires_at)
        )
        if not rows or rows[0][1] <= time.time():
            return None
        return rows[0][0]

    def delete(self, key):
        rows = self._execute(
            delete(_table).where(_table.c.key == key).returning(_table.c.expires_at)
        )
        return bool(rows) and rows[0][0] > time.time()

    def incr(self, key, ttl, amount=1):
        now = time.time()
        stmt = self._insert().values(key=key, value=None, counter=amount, expires_at=now + ttl)
        expired = _table.c.expires_at <= now
        stmt = stmt.on_conflict_do_update(
            index_elements=[_table.c.key],
            set_={
                "counter": case((expired, amount), else_=_table.c.counter + amount),
                "expires_at": case((expired, stmt.excluded.expires_at), else_=_table.c.expires_at),
            },
        ).returning(_table.c.counter)
        return int(self._execute(stmt)[0][0])

    def ttl(self, key):
        rows = self._execute(select(_table.c.expires_at).where(_table.c.key == key))
        if not rows:
            return None
        remaining = rows[0][0] - time.time()
        return remaining if remaining > 0 else None

    def ping(self):
        self._execute(select(func.count()).select_from(_table).where(_table.c.key == "ping"))

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
