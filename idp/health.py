"""Liveness and readiness probes."""

from flask import Blueprint, jsonify
from sqlalchemy import text

from .extensions import idp
from .storage.models import db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    failed = []
    try:
        db.session.execute(text("SELECT 1"))
    except Exception:
        failed.append("database")
    finally:
        db.session.remove()
    try:
        idp().store.ping()
    except Exception:
        failed.append("store")
    if failed:
        return jsonify(status="unavailable", failed=failed), 503
    return jsonify(status="ok")
