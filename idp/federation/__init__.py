"""SAML 2.0 bridging: idp as a service provider towards upstream identity providers."""


def init_app(app) -> None:
    pass
