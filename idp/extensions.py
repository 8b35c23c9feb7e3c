"""Per-app state that is not a Flask extension object: settings, store, key ring."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from .services.keys import KeyRing
from .settings import Settings
from .storage.store import Store


@dataclass
class Idp:
    settings: Settings
    store: Store
    keyring: KeyRing


def idp() -> Idp:
    return current_app.extensions["idp"]
