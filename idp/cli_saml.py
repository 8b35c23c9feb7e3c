"""`idp saml` commands (upstream SAML identity providers)."""


def register(cli) -> None:
    pass
