"""gunicorn entry point: `gunicorn wsgi:app`."""

from idp import create_app

# The web server never migrates (`idp db upgrade` does): no Alembic in the workers.
app = create_app(migrations=False)
