"""Test set-up: the suite runs against the devstack (real PostgreSQL, Redis, Mosquitto)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("METASYNC_ENV_FILE", str(ROOT / ".devstack" / "env"))
if not Path(os.environ["METASYNC_ENV_FILE"]).is_file() and "DATABASE_URL" not in os.environ:
    raise SystemExit(
        "tests need the devstack: run `make test` (or `.venv/bin/python scripts/devstack up` first)"
    )
