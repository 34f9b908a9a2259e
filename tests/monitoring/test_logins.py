"""Admin logins (SEC-06): lockout after repeated failures, failed logins logged without the password."""

from __future__ import annotations

import logging
import secrets

import pytest
from django.contrib.auth.models import User
from django.test import Client

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture
def admin_user() -> tuple[str, str]:
    password = secrets.token_urlsafe(16)
    User.objects.create_superuser("sec06-admin", "a@example.invalid", password)
    return "sec06-admin", password


def _login(client: Client, username: str, password: str, address: str) -> int:
    return client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"},
                       REMOTE_ADDR=address).status_code


def test_repeated_wrong_passwords_lock_the_account_out(settings, admin_user):
    """SEC-06: after LOGIN_FAILURE_LIMIT wrong passwords the right one is refused (429) from that address."""
    username, password = admin_user
    limit = settings.AXES_FAILURE_LIMIT
    client = Client()
    for _ in range(limit - 1):
        assert _login(client, username, "wrong-" + secrets.token_hex(4), "198.51.100.7") == 200  # form again
    assert _login(client, username, "wrong-last", "198.51.100.7") == 429
    assert _login(client, username, password, "198.51.100.7") == 429
    assert "_auth_user_id" not in client.session


def test_the_right_password_logs_in_below_the_limit(settings, admin_user):
    """SEC-06: fewer failures than the limit do not lock out; success resets the count (the lockout above is real)."""
    username, password = admin_user
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, username, "wrong", "198.51.100.8")
    assert _login(client, username, password, "198.51.100.8") == 302
    assert "_auth_user_id" in client.session


def test_failed_login_is_logged_with_the_address_never_the_password(caplog, admin_user):
    """SEC-06: a failed login leaves a warning naming the user and client address, without the password."""
    username, _ = admin_user
    wrong = "wrong-" + secrets.token_urlsafe(12)
    with caplog.at_level(logging.WARNING, logger="metasync.security"):
        _login(Client(), username, wrong, "203.0.113.9")
    lines = [r for r in caplog.records if r.name == "metasync.security"]
    assert len(lines) == 1
    assert "203.0.113.9" in lines[0].getMessage() and username in lines[0].getMessage()
    assert lines[0].client_address == "203.0.113.9"  # type: ignore[attr-defined]
    assert all(wrong not in r.getMessage() and wrong not in str(r.__dict__) for r in caplog.records)


def test_admin_login_over_https_behind_the_proxy(settings, admin_user):
    """SEC-06: behind the TLS proxy (X-Forwarded-Proto: https) the admin login works with Secure
    cookies and HSTS; the same request without the proxy header is not taken for HTTPS."""
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    settings.CSRF_TRUSTED_ORIGINS = ["https://testserver"]  # the public name, as compose sets it
    username, password = admin_user
    client = Client(enforce_csrf_checks=True)
    page = client.get(LOGIN, HTTP_X_FORWARDED_PROTO="https")
    assert page["Strict-Transport-Security"] == "max-age=31536000"
    assert page.cookies["csrftoken"]["secure"]
    token = page.cookies["csrftoken"].value
    answer = client.post(LOGIN, {"username": username, "password": password, "next": "/admin/",
                                 "csrfmiddlewaretoken": token}, HTTP_X_FORWARDED_PROTO="https",
                         HTTP_REFERER="https://testserver/admin/login/")
    assert answer.status_code == 302 and answer["Location"] == "/admin/"
    assert answer.cookies["sessionid"]["secure"]
    assert "Strict-Transport-Security" not in Client().get(LOGIN)  # plain HTTP: no HSTS
