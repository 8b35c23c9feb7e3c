"""Models of multi-factor authentication (TOTP factors, recovery codes). Passkeys live in
passkey_models.py."""

from __future__ import annotations
