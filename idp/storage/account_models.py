"""Models of the account features (verification, reset, audit, back-channel logout)."""
