"""Checks every protocol request passes before Authlib sees it, so that malformed input is
answered with invalid_request and never reaches code that would choke on it."""

from __future__ import annotations

import base64
from urllib.parse import unquote_to_bytes

from flask import Request

MAX_VALUE_LENGTH = 8192
FORM_TYPE = "application/x-www-form-urlencoded"


def malformed_reason(request: Request, form_required: bool = False) -> str | None:
    """Why this request is malformed (one safe sentence), or None."""
    if form_required and request.method == "POST" and request.mimetype != FORM_TYPE:
        return f"The request body must be {FORM_TYPE}."
    # Before request.args/request.form: Werkzeug raises UnicodeDecodeError (a 500) on raw
    # non-UTF-8 bytes in the query string, silently drops a whole form body containing them,
    # and keeps invalid %XX sequences as literal text. So look at the bytes ourselves.
    if _not_utf8(request.query_string) or (
            request.method == "POST" and request.mimetype == FORM_TYPE and _not_utf8(request.get_data(cache=True))):
        return "The request is not valid UTF-8."
    if _bad_basic_credentials(request.headers.get("Authorization", "")):
        return "The Authorization header is malformed."
    for source in (request.args, request.form) if request.method == "POST" else (request.args,):
        for key, values in source.lists():
            # RFC 6749 §3.1 and §3.2: parameters MUST NOT be included more than once.
            if len(values) > 1:
                return f"The parameter '{_safe(key)}' is repeated."
            value = values[0]
            if len(value) > MAX_VALUE_LENGTH or len(key) > 256:
                return "A parameter is too long."
            if "\x00" in value or "\x00" in key or "\ufffd" in value or "\ufffd" in key:
                return "A parameter contains invalid characters."
    return None


def _safe(text: str) -> str:
    return "".join(c for c in text[:40] if c.isalnum() or c in "_-.")


def _not_utf8(raw: bytes) -> bool:
    """Whether urlencoded bytes, once percent-decoded, are not UTF-8 (raw or %XX invalid
    bytes, overlong forms, surrogates)."""
    try:
        unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _bad_basic_credentials(header: str) -> bool:
    """Basic credentials Authlib's extract_basic_authorization would crash on: it catches
    binascii.Error only, not the UnicodeDecodeError of non-UTF-8 credentials nor the
    ValueError of non-ASCII base64 text (a 500 at /token, /introspect, /revoke)."""
    parts = header.split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "basic":
        return False
    try:
        base64.b64decode(parts[1]).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return True
    return False
