"""Hostile births (TC-40): every frame of the corpus (tests/hostile.py) ends with its precise reason,
nothing of a rejected metric or frame is written, no frame is left waiting, and the workers keep
applying births — through replay_birth and through MQTT with real daemons."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from hostile import Case, cases

from catalog.models import Device, Metric, MetricVersion
from ingest.models import BirthFrame
from stack import integrity_violations, publish, running_stack, wait_for

CASES = cases()


def check_catalog(case: Case, group: str, frame: dict) -> None:
    assert frame["status"] == case.status, (case.name, frame)
    assert case.reason in frame["reason"], (case.name, frame["reason"])
    assert case.status == "applied" or frame["reason"], case.name  # a rejection always says why
    names = set(Metric.objects.filter(device__group_id=group).values_list("name", flat=True))
    assert names == set(case.applied), (case.name, names)  # nothing of a rejected metric is written
    versions = MetricVersion.objects.filter(metric__device__group_id=group).count()
    assert versions == len(case.applied), (case.name, versions)
    if case.status == "rejected":
        assert not Device.objects.filter(group_id=group).exists(), case.name


@pytest.mark.django_db
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_replay_birth_ends_every_hostile_frame_with_its_reason(case, tmp_path):
    """TC-40: replay_birth of each hostile frame: the precise reason, only the good metric written."""
    group = f"H{uuid.uuid4().hex[:8]}"
    path = Path(tmp_path) / "frame.bin"
    path.write_bytes(case.payload)
    topic = f"spBv1.0/{group}/DBIRTH/Portugal/{case.device}"
    try:
        call_command("replay_birth", str(path), topic=topic, stdout=open("/dev/null", "w"))  # noqa: SIM115
    except CommandError as exc:
        if case.replay_error:
            assert case.replay_error in str(exc) and not BirthFrame.objects.filter(topic=topic).exists(), exc
            return
        assert case.status == "rejected" and "frame rejected" in str(exc), (case.name, exc)
    frame = BirthFrame.objects.filter(topic=topic).values("status", "reason").get()
    check_catalog(case, group, frame)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_corpus_through_mqtt_leaves_nothing_stuck_and_the_workers_applying(tmp_path):
    """TC-40: the whole corpus published to the broker: every frame reaches its end state with its
    reason (none left `received`), nothing half-written, the verification scripts find nothing,
    and a good birth published afterwards still applies."""
    groups = {case.name: f"H{uuid.uuid4().hex[:8]}" for case in CASES}
    with running_stack(tmp_path, topic="spBv1.0/#") as stack:
        topics = {}
        for case in CASES:
            topics[case.name] = f"spBv1.0/{groups[case.name]}/DBIRTH/Portugal/{case.device}"
            publish(topics[case.name], case.payload)

        def all_ended() -> bool:
            rows = BirthFrame.objects.filter(topic__in=list(topics.values()))
            return rows.count() == len(CASES) and not rows.filter(status="received").exists()

        stack.wait_for(all_ended, 120, "every hostile frame to reach its end state")
        for case in CASES:
            frame = BirthFrame.objects.filter(topic=topics[case.name]).values("status", "reason").get()
            check_catalog(case, groups[case.name], frame)
        assert integrity_violations() == []

        from births import birth, prod

        after = f"spBv1.0/H{uuid.uuid4().hex[:8]}/DBIRTH/Portugal/Kiln"
        publish(after, birth(prod("Plant/after")))
        wait_for(lambda: BirthFrame.objects.filter(topic=after, status="applied").exists(), 60,
                 "a good birth after the corpus to apply", context=stack.logs)
        for name in stack.names():
            assert stack.daemons[name].alive(), name
