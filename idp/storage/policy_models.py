"""Models of the authorization policy module (RBAC/ABAC)."""
