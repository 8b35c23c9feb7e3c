"""Models of SAML federation (upstream identity providers)."""
