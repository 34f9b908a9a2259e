"""Steward journeys in a real headless browser: Playwright for Python driving Debian's chromium.

Playwright cannot download its own browser here, so it launches ``/usr/bin/chromium`` (the Debian
package the Makefile ``tools`` target installs; ``CHROMIUM`` overrides the path). Fixtures:

- ``browser``: one headless Chromium per test module.
- ``delivery_stack``: the daemons that carry a steward's change to Canary — CDC (``cdc_consume``),
  celery beat (the periodic flush), a canary worker (the pushes) and the in-process Canary mock
  (``stack.canary``) — against the test database, so a journey ends by reading the mock.
- ``steward_page``: a page on the live server, logged in through the login form as a member of the
  "Data steward" group; every response with a 5xx status fails the test at teardown.
- ``screenshot(page, name)``: writes ``docs/img/steward-<name>.png`` only when
  ``STEWARD_SCREENSHOTS=1`` (so ``make test`` leaves the tree clean); docs/steward-guide.md shows them.

The live server and the daemons share the test database, hence transactional tests; a flush after
each one empties every table, so the rows data migrations seed (the steward group and its
permissions, the default Canary mapping) are restored before each journey.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stack import Stack, running_stack

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = os.environ.get("STEWARD_SCREENSHOTS") == "1"
IMG_DIR = Path(__file__).resolve().parents[2] / "docs" / "img"
STEWARD = ("ana", "not-a-real-password-ana-1")
# Data migrations whose rows a transactional test's flush removes (RunPython forwards are idempotent).
SEED_MIGRATIONS = ("catalog.migrations.0003_data_steward_group", "canary.migrations.0002_defaults",
                   "canary.migrations.0005_quarantine", "catalog.migrations.0007_admin_scale_bulk",
                   "catalog.migrations.0008_version_keys",
                   "canary.migrations.0009_mapping_changes")
NAV_TIMEOUT_MS = 30_000


def restore_seed_rows() -> None:
    """Re-run the data migrations' forwards (the steward group, its permissions, the default mapping)."""
    from django.contrib.auth.models import Group
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor
    from django.db.migrations.operations import RunPython

    if Group.objects.filter(name="Data steward", permissions__isnull=False).exists():
        return
    apps = MigrationExecutor(connection).loader.project_state().apps
    for name in SEED_MIGRATIONS:
        for operation in importlib.import_module(name).Migration.operations:
            if isinstance(operation, RunPython):
                operation.code(apps, None)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make tools` (installs Debian's chromium)")
    # Playwright's sync API keeps an asyncio loop in this thread; the ORM calls of the tests
    # themselves are synchronous all the same (Playwright's documented set-up for Django).
    saved = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                  args=["--no-sandbox", "--disable-dev-shm-usage"])
            yield chromium
            chromium.close()
    finally:
        if saved is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = saved


@pytest.fixture
def steward_user(transactional_db):
    from django.contrib.auth.models import Group, User

    restore_seed_rows()
    user = User.objects.create_user(STEWARD[0], password=STEWARD[1], is_staff=True)
    user.groups.add(Group.objects.get(name="Data steward"))
    return user


@pytest.fixture
def delivery_stack(tmp_path, transactional_db) -> Iterator[Stack]:
    """CDC, beat (flush), one canary worker and the Canary mock; a Redis database of its own."""
    with running_stack(tmp_path / "stack", components=("worker", "cdc", "beat", "canary"), redis_db=None) as stack:
        yield stack


@pytest.fixture
def steward_page(browser, live_server, steward_user):
    """A logged-in steward's page; any 5xx response fails the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(NAV_TIMEOUT_MS)
    server_errors: list[str] = []
    page.on("response", lambda r: server_errors.append(f"{r.status} {r.request.method} {r.url}")
            if r.status >= 500 else None)
    page.base_url = live_server.url  # type: ignore[attr-defined]
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", STEWARD[0])
    page.fill("#id_password", STEWARD[1])
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    yield page
    context.close()
    assert server_errors == [], f"server errors: {server_errors}"


@pytest.fixture
def screenshot() -> Callable[..., None]:
    def take(page, name: str) -> None:  # type: ignore[no-untyped-def]
        if SCREENSHOTS:
            IMG_DIR.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(IMG_DIR / f"steward-{name}.png"), full_page=True)

    return take
