"""Account features: sign-up, email verification, password reset, account page."""


def init_app(app) -> None:
    pass
