"""Test set-up: the suite runs against the devstack (real PostgreSQL, Redis, Mosquitto).

Settings read `.devstack/env` (see metasync/settings.py); `make test` starts the
devstack first.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Test helpers (builders, brokers) are imported as top-level modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))
