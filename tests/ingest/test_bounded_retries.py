"""Bounded retries of a frame's processing (TC-41), through a real Celery worker loop.

The worker runs in this process (Celery's ``contrib.testing`` worker, solo pool) on a Redis database
of its own: retries with a countdown, the task's final state and the ledger row are observed as
support staff would see them. Prefork behaviour (pool children killed, metrics across forks) stays
with the subprocess workers of tests/stack.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from celery import Celery, signals
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.db import connection

from births import birth, prod
from ingest import processing, tasks
from ingest.ledger import store_frame
from ingest.models import BirthFrame
from stack import claim_redis_db, daemon_redis_url, release_redis_db, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker(settings) -> Iterator[dict[str, str]]:
    """A births worker in this process; yields the final Celery state of each task by task id."""
    token = uuid.uuid4().hex[:8]
    db = claim_redis_db(token)
    app = Celery("metasync-test", set_as_current=True)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.broker_url = daemon_redis_url(db)
    states: dict[str, str] = {}

    def record(sender: object = None, task_id: str | None = None, state: str | None = None, **kw: object) -> None:
        if task_id:
            states[task_id] = "FAILURE" if state is None else state

    def retried(request: object = None, **kw: object) -> None:
        states[getattr(request, "id", "")] = "RETRY"

    def succeeded(sender: object = None, **kw: object) -> None:
        states[getattr(getattr(sender, "request", None), "id", "")] = "SUCCESS"

    def close_connection(**kw: object) -> None:  # the worker thread's own: it must not outlive the test
        connection.close()

    signals.task_failure.connect(record, weak=False)
    signals.task_retry.connect(retried, weak=False)
    signals.task_success.connect(succeeded, weak=False)
    signals.task_postrun.connect(close_connection, weak=False)
    settings.BIRTH_RETRY_SECONDS = 0.2
    try:
        with start_worker(app, queues=["births"], pool="solo", perform_ping_check=False, shutdown_timeout=30):
            yield states
    finally:
        signals.task_failure.disconnect(record)
        signals.task_retry.disconnect(retried)
        signals.task_success.disconnect(succeeded)
        signals.task_postrun.disconnect(close_connection)
        release_redis_db(db, token)


def frame_row(frame_id: int) -> dict:
    return BirthFrame.objects.filter(pk=frame_id).values("status", "reason", "attempts", "failures").get()


def test_an_unexpected_error_is_retried_a_bounded_number_of_times_then_the_frame_fails(worker, monkeypatch):
    """TC-41: apply raises something unexpected on every attempt → BIRTH_MAX_ATTEMPTS attempts with
    backoff, then the frame ends `failed` with the error, the task fails (Flower shows it), beat's
    stuck-frame requeue leaves it alone, and a later birth of the same device applies."""
    settings.BIRTH_MAX_ATTEMPTS = 3
    poisoned: set[str] = set()
    real_apply = processing.apply_birth

    def apply(topic, payload, **kwargs):  # noqa: ANN001, ANN202 - same signature as the real one
        if f"{topic.group_id}/{topic.edge}/{topic.device}" in poisoned and b"poison" in bytes(payload):
            raise RuntimeError("a bug nobody foresaw")
        return real_apply(topic, payload, **kwargs)

    monkeypatch.setattr(processing, "apply_birth", apply)
    group = f"R{uuid.uuid4().hex[:8]}"
    topic = f"spBv1.0/{group}/DBIRTH/Portugal/Kiln"
    poisoned.add(f"{group}/Portugal/Kiln")

    bad = store_frame(topic, birth(prod("Plant/poison")))
    result = tasks.process_birth.apply_async(args=(bad,))
    wait_for(lambda: worker.get(result.id) == "FAILURE", 60, "the task to fail for good", context=lambda: str(worker))
    row = frame_row(bad)
    assert row["status"] == "failed" and (row["attempts"], row["failures"]) == (3, 3)
    assert "RuntimeError: a bug nobody foresaw" in row["reason"] and "failed 3 attempt(s)" in row["reason"]
    assert tasks.requeue_stuck_frames() == 0

    good = store_frame(topic, birth(prod("Plant/fine")))
    later = tasks.process_birth.apply_async(args=(good,))
    wait_for(lambda: worker.get(later.id) == "SUCCESS", 60, "the next birth of the device", context=lambda: str(worker))
    assert frame_row(good)["status"] == "applied"


def test_a_frame_that_recovers_before_the_limit_is_applied(worker, monkeypatch):
    """TC-41: a transient fault of the frame's processing is retried and the frame applies."""
    settings.BIRTH_MAX_ATTEMPTS = 5
    calls = {"n": 0}
    real_apply = processing.apply_birth

    def flaky(topic, payload, **kwargs):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] < 3:
            raise RuntimeError("not yet")
        return real_apply(topic, payload, **kwargs)

    monkeypatch.setattr(processing, "apply_birth", flaky)
    frame_id = store_frame(f"spBv1.0/R{uuid.uuid4().hex[:8]}/DBIRTH/Portugal/Kiln", birth(prod("Plant/x")))
    result = tasks.process_birth.apply_async(args=(frame_id,))
    wait_for(lambda: worker.get(result.id) == "SUCCESS", 60, "the frame to apply", context=lambda: str(worker))
    row = frame_row(frame_id)
    assert row["status"] == "applied" and (row["attempts"], row["failures"]) == (3, 2)


def test_a_rejected_frame_fails_its_task_with_the_reason(worker):
    """TC-40: a rejected birth is a failure support staff can see: the task fails with the reason."""
    frame_id = store_frame(f"spBv1.0/R{uuid.uuid4().hex[:8]}/DBIRTH/Portugal/Kiln", b"\xff\xff\xff")
    result = tasks.process_birth.apply_async(args=(frame_id,))
    wait_for(lambda: worker.get(result.id) == "FAILURE", 60, "the task to fail", context=lambda: str(worker))
    assert frame_row(frame_id)["status"] == "rejected"
