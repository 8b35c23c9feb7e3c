"""Multi-factor authentication: second factors that users enrol (TOTP, passkeys), recovery
codes and email one-time codes, the MFA step of the login flow, and step-up via acr_values."""
