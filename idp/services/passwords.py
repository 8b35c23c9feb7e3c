"""Password rules for passwords users choose (sign-up, reset, change), after NIST SP 800-63B
§5.1.1.2: a minimum length (IDP_PASSWORD_MIN_LENGTH, at least 8), at least 64 characters
allowed (we take 1024), every character allowed, no composition rules, and a check against
a list of commonly used passwords (idp/data/common-passwords.txt, the 10,000 most common)
and context-specific words (the email address and its local part)."""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from importlib import resources

from ..errors import InvalidInput
from .users import MAX_PASSWORD_LENGTH


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    text = resources.files("idp").joinpath("data/common-passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip())


def _fold(value: str) -> str:
    # SP 800-63B §5.1.1.2: normalise (NFKC) before comparing; case-insensitive so that
    # "Password1" counts as the listed "password1".
    return unicodedata.normalize("NFKC", value).casefold()


def check_new_password(password: str, *, email: str, min_length: int = 8) -> None:
    """Raise InvalidInput (message for the form, next to the password field) if the password
    breaks a rule; return nothing when it is acceptable."""
    if len(password) < min_length:
        raise InvalidInput(f"Use at least {min_length} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"Use at most {MAX_PASSWORD_LENGTH} characters.")
    folded = _fold(password)
    if folded in common_passwords():
        raise InvalidInput("This password is one of the most commonly used ones. Choose another.")
    email = _fold(email or "")
    local = email.partition("@")[0]
    if (email and email in folded) or (len(local) >= 3 and local in folded):
        raise InvalidInput("The password must not contain your email address.")
