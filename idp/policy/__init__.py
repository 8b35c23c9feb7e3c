"""Authorization policy: RBAC with hierarchy, ABAC rules, decisions, claims by scope.

    conditions.py  the rule condition language (parser, three-valued evaluation; no eval)
    engine.py      CompiledPolicy.decide(subject, permission, resource, context) -> Decision
    store.py       read the policy and subjects from the database; the version stamp
    cache.py       per-worker compiled policy, reloaded when the stamp moves
    admin.py       operator writes (roles, groups, assignments, attributes)
    files.py       policy files: validate, load (one transaction), show
    claims.py      claims by scope; the token size budget
    api.py         POST /api/v1/authorize, GET /api/v1/me/permissions
"""


def init_app(app) -> None:
    from .api import bp
    from .cache import PolicyCache

    app.extensions["policy"] = PolicyCache(app.extensions["idp"].settings.policy_refresh_ttl)
    app.register_blueprint(bp)
