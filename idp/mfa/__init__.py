"""Multi-factor authentication: second factors that users enrol (TOTP, passkeys), recovery
codes and email one-time codes, the MFA step of the login flow, and step-up via acr_values.

    policy.py    is a second factor required? (pure)        flow.py      the pending login (the seam)
    methods.py   registry of the MFA step's methods          trusted.py   "trust this browser"
    totp.py recovery.py email_codes.py   the factors        notify.py    mails + audit of changes
    views.py     /login/mfa/...  (login side)               account_views.py  /account/mfa/...
"""


def init_app(app) -> None:
    from .account_views import bp as account_bp
    from .views import bp

    app.register_blueprint(bp)
    app.register_blueprint(account_bp)
