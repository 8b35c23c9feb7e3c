"""SAML 2.0 bridging: idp as a service provider towards upstream identity providers.

    identity.py     ExternalIdentity: the protocol-neutral user record
    mapping.py      upstream attributes -> claims and user attributes (declarative, per connection)
    connections.py  connections, SP keys, IdP metadata (refresh keeps the last good copy)
    saml.py         python3-saml: settings, AuthnRequest, SP metadata, the ACS checks
    provisioning.py ExternalIdentity -> local account (jit, link-by-email, existing-only)
    views.py        /saml/NAME/metadata, /saml/NAME/login, /saml/NAME/acs, /saml/continue
    slo.py          python3-saml: single logout messages (LogoutRequest/LogoutResponse, both ways)
    slo_views.py    /saml/NAME/slo; upstream_sessions.py: which sessions came from which IdP login
    routing.py      email domain -> connection (login page); clock.py: clock skew on timestamps
    metadata_refresh.py  IdP metadata from its URL, refreshed in the background by one node
"""


def init_app(app) -> None:
    from . import metadata_refresh, slo_views  # noqa: F401  (slo_views: its route joins the blueprint)
    from .views import bp

    app.register_blueprint(bp)
    app.before_request(lambda: metadata_refresh.ensure_refresher(app))
    from ..mfa import flow
    from .upstream_sessions import session_started

    flow.on_session_started(session_started)

    @app.context_processor
    def saml_links():
        def saml_connections() -> list[str]:
            from sqlalchemy import select

            from ..storage.federation_models import SamlConnection
            from ..storage.models import db

            try:  # the model only: python3-saml stays unloaded until a SAML request
                return list(db.session.scalars(select(SamlConnection.name).order_by(SamlConnection.name)))
            except Exception:  # the login page must render even if this table is unreachable
                return []

        return {"saml_connections": saml_connections}


def upstream_logout(session: dict | None, then: str | None):
    """Call after ending `session` locally. When it came from a SAML IdP with single logout: a
    response that sends the browser there (signed LogoutRequest) and on to `then` (a URL, or
    None for the logged-out page). Else None."""
    from .slo_views import start_upstream_logout

    return start_upstream_logout(session, then)
