"""One suite for every store backend: TTLs, atomic take, atomic add, atomic increment."""

from __future__ import annotations

import threading
import time

import pytest

from idp.storage.store import RedisStore, SqlStore
from tests.conftest import TEST_REDIS_URL


@pytest.fixture(params=["sql", "redis"])
def store(request, app):
    if request.param == "sql":
        from idp.storage.models import db

        with app.app_context():
            engine = db.engine
        backend = SqlStore(engine)
    else:
        if not TEST_REDIS_URL:
            pytest.skip("no Redis: `make test` starts one and sets IDP_TEST_REDIS_URL")
        backend = RedisStore(TEST_REDIS_URL, prefix="idp-test:")
    backend.clear()
    yield backend
    backend.clear()


def hammer(n: int, fn) -> list:
    """Run fn from n threads released at the same instant; return their results."""
    barrier = threading.Barrier(n)
    results = [None] * n
    errors = []

    def run(i):
        try:
            barrier.wait()
            results[i] = fn()
        except Exception as exc:  # surfaced below: a failed thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


def test_set_get_and_expiry(store):
    store.set("k", b"v", 0.3)
    assert store.get("k") == b"v"
    assert 0 < store.ttl("k") <= 0.3
    time.sleep(0.4)
    assert store.get("k") is None
    assert store.ttl("k") is None


def test_set_overwrites_value_and_ttl(store):
    store.set("k", b"one", 0.2)
    store.set("k", b"two", 10)
    time.sleep(0.3)
    assert store.get("k") == b"two"


def test_take_returns_once(store):
    store.set("code", b"payload", 10)
    assert store.take("code") == b"payload"
    assert store.take("code") is None
    assert store.get("code") is None


def test_take_of_expired_value_returns_nothing(store):
    store.set("code", b"payload", 0.1)
    time.sleep(0.2)
    assert store.take("code") is None


def test_add_only_when_absent_or_expired(store):
    assert store.add("lock", b"a", 0.2) is True
    assert store.add("lock", b"b", 10) is False
    assert store.get("lock") == b"a"
    time.sleep(0.3)
    assert store.add("lock", b"c", 10) is True
    assert store.get("lock") == b"c"


def test_delete(store):
    store.set("k", b"v", 10)
    assert store.delete("k") is True
    assert store.delete("k") is False
    assert store.get("k") is None


def test_incr_counts_in_a_fixed_window(store):
    assert store.incr("n", 0.3) == 1
    assert store.incr("n", 0.3) == 2
    assert store.incr("n", 0.3, amount=5) == 7
    time.sleep(0.4)
    assert store.incr("n", 10) == 1


def test_json_helpers(store):
    store.set_json("j", {"a": [1, "x"]}, 10)
    assert store.get_json("j") == {"a": [1, "x"]}
    assert store.take_json("j") == {"a": [1, "x"]}
    assert store.take_json("j") is None


def test_concurrent_take_has_exactly_one_winner(store):
    for round_ in range(5):
        store.set(f"code{round_}", b"single-use", 10)
        results = hammer(16, lambda key=f"code{round_}": store.take(key))
        assert results.count(b"single-use") == 1, results
        assert results.count(None) == 15


def test_concurrent_add_has_exactly_one_winner(store):
    results = hammer(16, lambda: store.add("once", b"x", 10))
    assert results.count(True) == 1


def test_concurrent_incr_is_exact(store):
    def work():
        return [store.incr("counter", 30) for _ in range(25)]

    results = hammer(8, work)
    seen = sorted(v for r in results for v in r)
    # Every increment is counted once and every caller saw a distinct value.
    assert seen == list(range(1, 201))
    assert store.incr("counter", 30) == 201


def test_ping(store):
    store.ping()
