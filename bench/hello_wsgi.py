"""The smallest WSGI app: what gunicorn alone costs per request (bench/floor.sh)."""

BODY = b'{"ok": true}'


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]
