"""Account features: sign-up, email verification, password reset, account page."""


def init_app(app) -> None:
    from . import account  # part B: /account (profile, sessions), back-channel logout worker
    account.init_app(app)
