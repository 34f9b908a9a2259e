"""Node lifecycle rules in PostgreSQL (catalog/lifecycle.py): TC-45, the bdSeq rule and reordering."""

from __future__ import annotations

import pytest
from django.utils import timezone

from catalog import lifecycle
from catalog.models import DeviceState, NodeState

pytestmark = pytest.mark.django_db


def node() -> NodeState:
    return NodeState.objects.get(group_id="G", edge="E")


def test_ndeath_counts_only_with_the_nbirths_bdseq():
    """TC-45: NDEATH(4) after NBIRTH(5) is ignored; NDEATH(5) ends the session and its devices."""
    now = timezone.now()
    lifecycle.node_birth("G", "E", 5, now)
    lifecycle.device_birth("G", "E", "D", now)
    assert lifecycle.node_death("G", "E", 4, now) is False
    assert node().online
    assert lifecycle.node_death("G", "E", 5, now) is True
    assert not node().online and not DeviceState.objects.get(device="D").online
    lifecycle.node_birth("G", "E", 6, now)  # the ignored death does not linger
    assert node().online


def test_ndeath_handled_before_its_nbirth_leaves_the_node_offline():
    """TC-45: two replicas handled a session's NDEATH(7) before its NBIRTH(7): the node ends offline;
    the next session's NBIRTH(8) brings it online."""
    now = timezone.now()
    lifecycle.node_birth("G", "E", 6, now)
    assert lifecycle.node_death("G", "E", 7, now) is False
    lifecycle.node_birth("G", "E", 7, now)
    assert not node().online
    lifecycle.node_birth("G", "E", 8, now)
    assert node().online
