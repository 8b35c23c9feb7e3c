"""Models of WebAuthn passkeys."""

from __future__ import annotations
