"""`idp roles|groups|policy|claims` commands (authorization policy)."""


def register(cli) -> None:
    pass
