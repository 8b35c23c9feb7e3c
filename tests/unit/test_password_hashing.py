"""argon2id parameters are settings, and a hash made with other parameters or another scheme
is upgraded transparently at the next successful login."""

from __future__ import annotations

import pytest
from passlib.hash import pbkdf2_sha256

from idp.services import users
from idp.settings import Settings, SettingsError
from tests.factories import PASSWORD, make_user


@pytest.fixture()
def restore_parameters():
    saved = dict(users._ARGON2)
    yield
    users.configure_password_hashing(**saved)


def test_default_is_argon2id_with_owasp_parameters():
    assert users.hash_password("a long passphrase").startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_new_parameters_upgrade_the_hash_at_the_next_login(ctx, restore_parameters):
    user = make_user()
    assert user.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    users.configure_password_hashing(memory_cost=8192, time_cost=3, parallelism=1)
    assert users.authenticate(user.email, PASSWORD).id == user.id
    assert user.password_hash.startswith("$argon2id$v=19$m=8192,t=3,p=1$")


def test_another_scheme_is_upgraded_to_argon2id(ctx):
    user = make_user()
    user.password_hash = pbkdf2_sha256.hash(PASSWORD)
    users.db.session.commit()
    users.authenticate(user.email, PASSWORD)
    assert user.password_hash.startswith("$argon2id$")


@pytest.mark.parametrize("changes", [{"argon2_time_cost": 0}, {"argon2_parallelism": 0},
                                     {"argon2_memory_kib": 7}])
def test_unusable_parameters_are_refused_at_startup(changes):
    with pytest.raises(SettingsError):
        Settings(**changes).validate()


def test_parameters_come_from_the_environment():
    s = Settings.from_env({"IDP_ARGON2_MEMORY_KIB": "65536", "IDP_ARGON2_TIME_COST": "3",
                           "IDP_ARGON2_PARALLELISM": "4"}, dotenv=None)
    assert (s.argon2_memory_kib, s.argon2_time_cost, s.argon2_parallelism) == (65536, 3, 4)
