"""docs/traceability.md maps every spec id used in the tests to its tests, and is current."""

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit  # pure: no database, broker or Redis (the `unit` stage of make test)

ROOT = Path(__file__).resolve().parent.parent


def test_traceability_doc_is_current():
    spec = importlib.util.spec_from_file_location("traceability", ROOT / "scripts" / "traceability.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.render(module.collect())
    assert (ROOT / "docs" / "traceability.md").read_text(encoding="utf-8") == expected, (
        "docs/traceability.md is stale: run .venv/bin/python scripts/traceability.py")
