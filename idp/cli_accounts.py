"""Account commands added to `idp users` (export, ...)."""


def register(cli) -> None:
    pass
