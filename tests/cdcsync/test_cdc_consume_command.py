"""``cdc_consume --setup-only``: the slot exists before the first changes, then the command exits."""

from __future__ import annotations

import uuid

import pytest
from django.core.management import call_command

from cdcsync.consumer import replication_connection
from cdcsync.slot import slot_status

pytestmark = pytest.mark.django_db(transaction=True)


def test_setup_only_creates_the_missing_slot_and_exits(settings):
    """The slot is created (and the publication verified) without starting the daemon,
    so that changes made before the daemon's first start are in the slot (the demo relies on it);
    a second call finds it."""
    settings.CDC_SLOT = f"t_setup_{uuid.uuid4().hex[:8]}"
    try:
        call_command("cdc_consume", "--setup-only", "--metrics-port", "0")
        with replication_connection() as conn:
            assert slot_status(conn, settings.CDC_SLOT) is not None
        call_command("cdc_consume", "--setup-only", "--metrics-port", "0")  # idempotent
    finally:
        with replication_connection() as conn:
            if slot_status(conn, settings.CDC_SLOT) is not None:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (settings.CDC_SLOT,))
