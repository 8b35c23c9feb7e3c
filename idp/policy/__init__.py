"""Authorization policy: RBAC with hierarchy, ABAC rules, decisions, claims by scope."""


def init_app(app) -> None:
    pass
