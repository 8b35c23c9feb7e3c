"""idp: a standalone OAuth 2.0 / OpenID Connect identity provider."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from flask.sessions import SessionInterface
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.middleware.proxy_fix import ProxyFix

from .settings import Settings, decode_kek

ROOT = Path(__file__).resolve().parent.parent


class _NoCookieSession(SessionInterface):
    def open_session(self, app, request):
        return self.make_null_session(app)

    def save_session(self, app, session, response):
        pass


def create_app(settings: Settings | None = None, migrations: bool = True) -> Flask:
    """settings -> extensions -> blueprints -> error handlers -> CLI.

    `migrations=False` (the web server, wsgi.py) leaves Alembic out: ~10 MB less per worker."""
    from . import memory
    from .errors_http import init_error_handlers
    from .extensions import Idp
    from .health import bp as health_bp
    from .logs import configure_logging, init_request_logging
    from .security import init_security_headers
    from .services.keys import KeyPolicy, KeyRing
    from .services.users import configure_password_hashing
    from .storage.models import db
    from .storage.store import create_store

    settings = (settings or Settings.from_env()).validate()
    if not settings.production:
        settings = settings.with_generated_secrets()
    configure_logging(settings.effective_log_format, settings.log_level)
    configure_password_hashing(settings.argon2_memory_kib, settings.argon2_time_cost, settings.argon2_parallelism)

    instance = Path(settings.instance_path).resolve()
    instance.mkdir(parents=True, exist_ok=True)
    app = Flask("idp", template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "templates" / "static"),
                static_url_path="/static", instance_path=str(instance))
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SQLALCHEMY_DATABASE_URI=settings.sqlalchemy_url,
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(settings.sqlalchemy_url),
        MAX_CONTENT_LENGTH=1024 * 1024,
        TESTING=settings.testing,
        JSON_SORT_KEYS=False,
    )
    # SSO sessions live server-side (services/sessions.py); Flask's signed-cookie session is
    # never used, so do not parse or sign one on every request.
    app.session_interface = _NoCookieSession()
    if settings.trusted_proxy_hops:
        n = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n, x_prefix=n)

    db.init_app(app)
    if migrations:
        from flask_migrate import Migrate

        Migrate(app, db, directory=str(ROOT / "migrations"), render_as_batch=True, compare_type=True)
    with app.app_context():
        engine = db.engine
    store = create_store(settings.redis_url, engine)
    policy = KeyPolicy(rotation_days=settings.key_rotation_days, prepublish_ttl=settings.key_prepublish_ttl,
                       retire_ttl=max(settings.access_token_ttl, settings.id_token_ttl) + settings.jwks_max_age)

    def maintenance_lock() -> bool:
        # One process per refresh period advances the key life cycle; the others just read.
        return store.add("lock:key-maintenance", b"1", settings.key_refresh_ttl)

    keyring = KeyRing(decode_kek(settings.key_encryption_key), policy, settings.key_refresh_ttl,
                      lock=maintenance_lock)
    app.extensions["idp"] = Idp(settings=settings, store=store, keyring=keyring)

    init_request_logging(app)
    memory.init_app(app)
    init_security_headers(app, https=settings.cookie_secure)
    app.register_blueprint(health_bp)
    _init_protocol(app)
    init_error_handlers(app)
    return app


def _init_protocol(app: Flask) -> None:
    from . import federation, mfa, policy
    from .interaction import accounts
    from .interaction.login import bp as interaction_bp
    from .mfa import passkey_views
    from .protocol import authorize, discovery, logout, token, userinfo
    from .protocol.server import init_server

    init_server(app)
    for module in (discovery, authorize, token, userinfo, logout):
        app.register_blueprint(module.bp)
    app.register_blueprint(interaction_bp)
    accounts.init_app(app)
    mfa.init_app(app)
    policy.init_app(app)
    federation.init_app(app)
    passkey_views.init_app(app)


def _engine_options(url: str) -> dict:
    if url.startswith("sqlite"):
        # Several gunicorn workers write to one file: wait for the lock instead of failing.
        return {"connect_args": {"timeout": 30}}
    return {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 10}


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record):
    import sqlite3

    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()
