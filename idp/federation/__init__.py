"""SAML 2.0 bridging: idp as a service provider towards upstream identity providers.

    identity.py     ExternalIdentity: the protocol-neutral user record
    mapping.py      upstream attributes -> claims and user attributes (declarative, per connection)
    connections.py  connections, SP keys, IdP metadata (refresh keeps the last good copy)
    saml.py         python3-saml: settings, AuthnRequest, SP metadata, the ACS checks
    provisioning.py ExternalIdentity -> local account (jit, link-by-email, existing-only)
    views.py        /saml/NAME/metadata, /saml/NAME/login, /saml/NAME/acs, /saml/continue
"""


def init_app(app) -> None:
    from .views import bp

    app.register_blueprint(bp)

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
