"""Request logging: one line per request with a request id; JSON lines on demand; never a
query string or body (they carry codes, tokens and passwords)."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from idp import create_app
from idp.logs import TextFormatter

SECRET = "SECRETVALUE"


@pytest.fixture()
def idp_logger():
    """The `idp` logger (propagate=False), restored after the test: create_app reconfigures it."""
    logger = logging.getLogger("idp")
    saved = (logger.handlers[:], logger.level, logger.propagate, logger.disabled)
    yield logger
    logger.handlers[:] = saved[0]
    logger.level, logger.propagate, logger.disabled = saved[1], saved[2], saved[3]


def capture(logger: logging.Logger, formatter: logging.Formatter) -> io.StringIO:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    # The session `app` ran Alembic, whose logging.config.fileConfig disables unnamed loggers.
    logger.disabled = False
    return stream


def test_request_logs_one_text_line_with_request_id_method_path_status(client, idp_logger):
    stream = capture(idp_logger, TextFormatter("%(levelname)s %(name)s %(message)s"))
    response = client.get(f"/healthz?code={SECRET}&state=xyz")
    assert response.status_code == 200
    request_id = response.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{16}", request_id)

    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    line = lines[0]
    assert f"request_id={request_id}" in line
    assert "method=GET" in line and "path=/healthz " in line and "status=200" in line
    assert SECRET not in line and "code=" not in line


def test_each_request_gets_its_own_request_id(client, idp_logger):
    stream = capture(idp_logger, TextFormatter("%(message)s"))
    ids = {client.get("/healthz").headers["X-Request-Id"] for _ in range(3)}
    assert len(ids) == 3
    logged = set(re.findall(r"request_id=(\S+)", stream.getvalue()))
    assert logged == ids


def test_query_string_and_form_body_never_logged(client, idp_logger):
    stream = capture(idp_logger, TextFormatter("%(message)s"))
    client.get(f"/no-such-page?access_token={SECRET}")  # 404
    client.post("/healthz", data={"password": SECRET, "client_secret": SECRET})  # 405
    client.get(f"/readyz?refresh_token={SECRET}#{SECRET}")
    output = stream.getvalue()
    assert len(output.splitlines()) == 3, output
    assert "status=404" in output and "status=405" in output and "path=/no-such-page" in output
    assert SECRET not in output


def test_tame_incoming_request_id_is_kept(client, idp_logger):
    stream = capture(idp_logger, TextFormatter("%(message)s"))
    response = client.get("/healthz", headers={"X-Request-Id": "abc123DEF"})
    assert response.headers["X-Request-Id"] == "abc123DEF"
    assert "request_id=abc123DEF " in stream.getvalue()


@pytest.mark.parametrize("incoming", ["evil status=200 forged", "x" * 65, "a-b", "../../etc"])
def test_untrusted_incoming_request_id_is_replaced(client, idp_logger, incoming):
    stream = capture(idp_logger, TextFormatter("%(message)s"))
    response = client.get("/healthz", headers={"X-Request-Id": incoming})
    request_id = response.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{16}", request_id)
    output = stream.getvalue()
    assert len(output.splitlines()) == 1
    assert incoming not in output and f"request_id={request_id} " in output


def test_json_format_writes_one_parseable_json_object_per_request(settings, idp_logger, capsys):
    app = create_app(settings.replace(log_format="json", log_level="INFO"))
    # create_app configured the `idp` logger: JSON lines on stderr (here: pytest's capture).
    assert idp_logger.handlers and not idp_logger.propagate
    client = app.test_client()
    capsys.readouterr()
    first = client.get(f"/healthz?code={SECRET}")
    client.get("/nope", headers={"X-Request-Id": "fromproxy42"})
    err = capsys.readouterr().err
    assert SECRET not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 2, err
    entries = [json.loads(line) for line in lines]
    for entry in entries:
        assert entry["level"] == "INFO" and entry["logger"] == "idp" and entry["message"] == "request"
        assert entry["time"] and entry["method"] == "GET" and isinstance(entry["ms"], float | int)
    assert (entries[0]["request_id"], entries[0]["path"], entries[0]["status"]) == (
        first.headers["X-Request-Id"], "/healthz", 200)
    assert (entries[1]["request_id"], entries[1]["path"], entries[1]["status"]) == ("fromproxy42", "/nope", 404)


def test_production_defaults_to_json_and_development_to_text(settings):
    assert settings.replace(env="production").effective_log_format == "json"
    assert settings.replace(env="development").effective_log_format == "text"
    assert settings.replace(env="production", log_format="text").effective_log_format == "text"


def test_text_format_from_settings_is_not_json(settings, idp_logger, capsys):
    app = create_app(settings.replace(log_format="text", log_level="INFO"))
    capsys.readouterr()
    response = app.test_client().get(f"/healthz?code={SECRET}")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    with pytest.raises(ValueError):
        json.loads(lines[0])
    assert f"request_id={response.headers['X-Request-Id']}" in lines[0] and SECRET not in lines[0]
