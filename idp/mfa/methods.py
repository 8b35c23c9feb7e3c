"""The second factors the MFA step can offer, as a small registry, so that a factor module
(TOTP, recovery codes, email codes here; passkeys in idp/mfa/passkey_views.py) plugs in
without the login flow importing it:

    register_method("passkey", "Use a passkey", available=lambda user: ..., endpoint="passkeys.verify",
                    enrolled=lambda user: number_of_passkeys(user))

`available(user)` says whether the choice page offers the method to this user; `enrolled(user)`
(optional) counts the factors the user enrolled of this kind: a user with any enrolled factor
is always asked for a second factor, and removing the last one needs the password. The
endpoint gets no arguments: it finds the pending login with `flow.load_pending()`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    available: Callable
    endpoint: str
    enrolled: Callable | None = None
    order: int = 50


_methods: dict[str, Method] = {}


def register_method(name: str, label: str, available: Callable, endpoint: str, *,
                    enrolled: Callable | None = None, order: int = 50) -> None:
    """Add (or replace, by name) a method of the MFA step. `order`: position on the choice page."""
    _methods[name] = Method(name, label, available, endpoint, enrolled, order)


def available_methods(user) -> list[Method]:
    return [m for m in sorted(_methods.values(), key=lambda m: (m.order, m.name)) if m.available(user)]


def enrolled_count(user) -> int:
    """How many factors the user enrolled (TOTP apps, passkeys); recovery codes and email
    codes are not factors of their own."""
    return sum(m.enrolled(user) for m in _methods.values() if m.enrolled is not None)


class FactorChangeBusy(Exception):
    """Another change to this user's factors is running (try again)."""


@contextmanager
def factor_change_lock(store, user_id: str):
    """One change to a user's factors at a time, across workers (store `add`): "is this the
    last factor?" and the removal must not interleave, or two concurrent removals of the
    last two factors would each see two and skip the password. Raises FactorChangeBusy."""
    key = "lock:mfa-factors:" + user_id
    if not store.add(key, b"1", 30):
        raise FactorChangeBusy()
    try:
        yield
    finally:
        store.delete(key)
