"""The layout rules that tools do not check themselves (docs/architecture.md, "Layers and the import
rule"); import-linter, ruff and mypy run as stages of `make test`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sparkplug", "metasync", "catalog", "ingest", "cdcsync", "canary", "monitoring", "devtools")
DEVTOOLS_COMMANDS = ("canary_mock", "simulate_edge", "demo_users")


@pytest.mark.unit
def test_an_import_inside_a_function_says_why():
    """ruff's PLC0415 refuses imports inside functions; a `noqa` for it must carry a reason on its
    line or a comment on the line above."""
    unexplained = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = path.read_text(encoding="utf-8").splitlines()
            for number, line in enumerate(lines, 1):
                match = re.search(r"#\s*noqa:[^#]*PLC0415(.*)$", line)
                if not match:
                    continue
                reason_here = bool(re.search(r"[A-Za-z]{3,}", match.group(1)))
                reason_above = number > 1 and lines[number - 2].strip().startswith("#")
                if not (reason_here or reason_above):
                    unexplained.append(f"{path.relative_to(ROOT)}:{number}")
    assert unexplained == []


@pytest.mark.unit
def test_no_product_code_cites_files_outside_the_repository():
    """The repo stands alone: code and docs cite docs/..., never an outside spec or an issue number."""
    pattern = re.compile(r"\.\./shared|\b(SYSTEM|CANARY_API|SPARKPLUG|TESTS|NOTES|STYLE)\.md\b|\b[Ii]ssue #?\d+")
    cited = []
    for path in [*(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")), *(ROOT / "docs").glob("*.md"),
                 ROOT / "README.md", ROOT / "docker-compose.yml", *(ROOT / "ops").rglob("*.yml")]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                cited.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:80]}")
    assert cited == []


@pytest.mark.parametrize("enabled", [True, False])
def test_devtools_commands_exist_only_where_devtools_are_enabled(enabled):
    """The Canary mock, the edge simulator and demo users are installed only with
    METASYNC_DEVTOOLS=true (the dev stack and the tests); production settings leave them out."""
    env = {**os.environ, "METASYNC_DEVTOOLS": "true" if enabled else "false"}
    listed = subprocess.run([sys.executable, "manage.py", "help", "--commands"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert all((name in listed) is enabled for name in DEVTOOLS_COMMANDS), listed
