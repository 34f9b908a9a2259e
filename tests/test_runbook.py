"""Every runbook command marked `# checked` runs as written (against the test database)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from stack import daemon_database_url

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = ROOT / "docs" / "runbook.md"
CHECKED = re.compile(r"^(?P<cmd>\.venv/bin/python .+?)\s+# checked$", re.M)


def checked_commands() -> list[str]:
    return [m.group("cmd") for m in CHECKED.finditer(RUNBOOK.read_text(encoding="utf-8"))]


def test_runbook_has_checked_commands():
    assert len(checked_commands()) >= 8


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("command", checked_commands())
def test_runbook_command_runs(command: str):
    """Runbook: a documented command exits 0."""
    argv = shlex.split(command)
    argv[0] = sys.executable
    env = {**os.environ, "DATABASE_URL": daemon_database_url(), "METASYNC_PROCESS": "runbook-check"}
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{command}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
