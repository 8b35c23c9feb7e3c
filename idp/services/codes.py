"""Authorization codes (RFC 6749 §4.1.2): stored in the ephemeral store under the SHA-256 of
the code, consumed exactly once with an atomic take.

A code's record carries the ids of the tokens it will produce (refresh-token family, access
token jti), fixed at creation. A second redemption finds the code gone but its `redeemed:`
marker present, and revokes exactly those tokens (RFC 6749 §4.1.2, "SHOULD revoke"), even
when both redemptions race.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from ..storage.store import Store


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def save_code(store: Store, code: str, record: dict, ttl: int, reuse_window: int) -> None:
    record = {**record, "family_id": secrets.token_hex(16), "jti": secrets.token_urlsafe(16),
              "created_at": time.time()}
    key = _digest(code)
    store.set_json("code:" + key, record, ttl)
    # Kept longer than the code: lets a late replay find what to revoke.
    store.set_json("code-tokens:" + key, {"family_id": record["family_id"], "jti": record["jti"]},
                   ttl + reuse_window)


def consume_code(store: Store, code: str) -> tuple[dict | None, dict | None]:
    """Atomically take the code. Returns (record, None) the first time; (None, tokens) for a
    replayed code, where tokens names what was issued from it; (None, None) for unknown."""
    if not code or len(code) > 512:
        return None, None
    key = _digest(code)
    record = store.take_json("code:" + key)
    if record is not None:
        return record, None
    return None, store.get_json("code-tokens:" + key)
