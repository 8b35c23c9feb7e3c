"""Checks every protocol request passes before Authlib sees it, so that malformed input is
answered with invalid_request and never reaches code that would choke on it."""

from __future__ import annotations

from flask import Request

MAX_VALUE_LENGTH = 8192
FORM_TYPE = "application/x-www-form-urlencoded"


def malformed_reason(request: Request, form_required: bool = False) -> str | None:
    """Why this request is malformed (one safe sentence), or None."""
    if form_required and request.method == "POST" and request.mimetype != FORM_TYPE:
        return f"The request body must be {FORM_TYPE}."
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
