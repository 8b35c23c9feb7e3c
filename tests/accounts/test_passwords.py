"""NIST SP 800-63B §5.1.1.2 password rules for passwords users choose."""

from __future__ import annotations

import pytest

from idp.errors import InvalidInput
from idp.services.passwords import check_new_password, common_passwords


def test_the_shipped_list_has_the_10000_most_common_passwords():
    words = common_passwords()
    assert len(words) >= 9900  # a few differ only in case
    assert {"password", "123456", "qwerty", "iloveyou", "password1"} <= words


@pytest.mark.parametrize("password", ["password1", "PASSWORD1", "Iloveyou", "1q2w3e4r5t", "qwertyuiop"])
def test_common_passwords_are_rejected_case_insensitively(password):
    with pytest.raises(InvalidInput, match="commonly used"):
        check_new_password(password, email="x@example.com")


def test_minimum_length_is_8_by_default_and_configurable():
    with pytest.raises(InvalidInput, match="at least 8"):
        check_new_password("k7#vQz!", email="x@example.com")
    check_new_password("k7#vQz!p", email="x@example.com")
    with pytest.raises(InvalidInput, match="at least 12"):
        check_new_password("k7#vQz!p", email="x@example.com", min_length=12)


def test_long_passwords_and_any_characters_are_accepted():
    check_new_password("ä" * 64, email="x@example.com")
    check_new_password("correct horse 🐎 battery staple " * 30, email="x@example.com")  # 900+ chars
    check_new_password("   spaces   only   here   ", email="x@example.com")
    with pytest.raises(InvalidInput, match="at most 1024"):
        check_new_password("a" * 1025, email="x@example.com")


def test_no_composition_rules():
    check_new_password("abcdefghijklmnopq", email="x@example.com")  # lower-case letters only


@pytest.mark.parametrize("password", ["mallory-secret-word", "MALLORY2024!!", "my mallory@example.org key"])
def test_passwords_containing_the_email_or_its_local_part_are_rejected(password):
    with pytest.raises(InvalidInput, match="email"):
        check_new_password(password, email="mallory@example.org")
