"""Logging: one line per request with a request id; JSON lines in production.

Only the path is logged, never the query string or body: they carry codes, tokens and
passwords (RFC 6749 §10.3, §10.5)."""

from __future__ import annotations

import json
import logging
import secrets
import sys
import time

from flask import Flask, g, request

logger = logging.getLogger("idp")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


def configure_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    # logging.config.fileConfig (Alembic's env.py) disables every logger it does not name.
    logger.disabled = False


def init_request_logging(app: Flask) -> None:
    @app.before_request
    def start_request():
        g.request_started = time.perf_counter()
        incoming = request.headers.get("X-Request-Id", "")
        # Accept a proxy's id only if it is short and tame; it goes into our log lines.
        g.request_id = incoming if 0 < len(incoming) <= 64 and incoming.isalnum() else secrets.token_hex(8)

    @app.after_request
    def log_request(response):
        started = g.get("request_started")
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1) if started else None
        response.headers["X-Request-Id"] = g.get("request_id", "")
        logger.info("request", extra={"fields": {
            "request_id": g.get("request_id"), "method": request.method, "path": request.path[:200],
            "status": response.status_code, "ms": elapsed_ms, "ip": request.remote_addr}})
        return response
