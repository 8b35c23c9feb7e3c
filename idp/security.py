"""Security headers for every response."""

from __future__ import annotations

from flask import Flask


def init_security_headers(app: Flask, https: bool) -> None:
    @app.after_request
    def add_headers(response):
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        headers.setdefault(
            "Content-Security-Policy",
            # Scripts and fetch() only from this origin (the passkey ceremony, form_post):
            # no inline script, no eval.
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:; "
            "form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")
        if https:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        if response.mimetype == "text/html":
            # Hosted pages carry CSRF tokens and personal data: never cache them.
            headers.setdefault("Cache-Control", "no-store")
        return response
