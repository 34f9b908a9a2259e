"""``replay_birth --dry-run`` previews the Canary rows a frame would send (canary.sync.preview_rows)."""

from __future__ import annotations

import io
import json
import time
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from canary.models import SyncState
from catalog.models import Metric
from ingest.models import BirthFrame
from sparkplug.codec import MetricSpec, encode_birth
from sparkplug.datatypes import DataType as T

pytestmark = pytest.mark.django_db


def frame_file(tmp_path: Path, unit: str, hi: float) -> Path:
    payload = encode_birth([MetricSpec("Kiln/Temperature", T.Double, value=1.0, properties={
        "engUnit": (T.String, unit), "Hi": (T.Double, hi), "Quality": (T.Int32, 192)})],
        timestamp=int(time.time() * 1000))
    path = tmp_path / "frame.bin"
    path.write_bytes(payload)
    return path


def dry_run(path: Path, topic: str) -> list[str]:
    out = io.StringIO()
    call_command("replay_birth", str(path), topic=topic, dry_run=True, stdout=out)
    return out.getvalue().splitlines()


def canary_lines(lines: list[str]) -> dict[str, list]:
    found = {}
    for line in lines:
        if line.startswith("canary "):
            tag, rows = line[len("canary "):].split(" ", 1)
            found[json.loads(tag)] = json.loads(rows)
    return found


def test_dry_run_prints_the_canary_rows_of_a_new_and_a_changed_metric(tmp_path):
    """TC-44: the dry run prints, per tag, the rows Canary would receive (mapped: Quality left out); for a
    metric Canary already holds, only what differs; nothing is written."""
    group = f"P{uuid.uuid4().hex[:8]}"
    topic = f"spBv1.0/{group}/DBIRTH/Portugal/Kiln"
    tag = f"{group}.Portugal.Kiln.Kiln.Temperature"
    lines = dry_run(frame_file(tmp_path, "°C", 1450.0), topic)
    rows = canary_lines(lines)[tag]
    assert [(r[0], r[2], r[3]) for r in rows] == [("Hi", 1450.0, 192), ("engUnit", "°C", 192)]
    assert not Metric.objects.filter(device__group_id=group).exists()
    assert not BirthFrame.objects.filter(topic=topic).exists()

    call_command("replay_birth", str(frame_file(tmp_path, "°C", 1450.0)), topic=topic, stdout=io.StringIO())
    m = Metric.objects.get(device__group_id=group)
    SyncState.objects.create(metric_id=m.pk, canary_id=m.canary_id, properties={"engUnit": "°C", "Hi": 1450.0},
                             acked_at=timezone.now())
    rows = canary_lines(dry_run(frame_file(tmp_path, "°C", 1500.0), topic))[tag]
    assert [(r[0], r[2]) for r in rows] == [("Hi", 1500.0)]
