"""The Canary client against the real mock server and real Redis (TC-20, TC-22)."""

from __future__ import annotations

import pybreaker
import pytest

from canary.breaker import NAMESPACE, breaker, circuit_open
from canary.client import SESSION_KEY, CanaryClient
from canary.errors import CanaryRejected, CanaryUnavailable
from canary.sync import canary_timestamp

pytestmark = pytest.mark.usefixtures("canary")


def rows(value: object = "°C") -> dict[str, list]:
    return {"Secil.Portugal.Cement.Kiln.Temp": [["Eng Units", canary_timestamp(), value, 192]]}


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_store_uses_one_shared_session_with_metadata_only_settings(canary):
    """TC-20: getSessionToken with autoWriteNoData/extendData false; storeData properties-only; status Good."""
    CanaryClient().store_properties(rows("°C"))
    CanaryClient().store_properties(rows("K"))  # a second client (worker) reuses the session in Redis
    stats = canary.stats()
    assert stats["sessions_created"] == 1 and stats["unsafe_sessions"] == 0
    (session,) = stats["sessions"]
    assert session["settings"]["autoWriteNoData"] is False and session["settings"]["extendData"] is False
    assert canary.properties("Secil.Portugal.Cement.Kiln.Temp") == {"Eng Units": "K"}
    assert stats["requests_by_method"].get("storeData") == 2


def test_expired_session_is_replaced(canary, canary_redis):
    """TC-22: BadSessionToken (session dropped or expired) → new session, the call succeeds."""
    client = CanaryClient()
    client.store_properties(rows())
    old = canary_redis.get(SESSION_KEY)
    canary.drop_sessions()
    client.store_properties(rows("K"))
    assert canary.stats()["sessions_created"] == 2
    assert canary_redis.get(SESSION_KEY) != old


def test_transient_5xx_is_retried_with_growing_jittered_backoff(canary):
    """TC-22: 5xx answers are retried with exponential backoff and jitter, then succeed."""
    canary.set_faults(fail_next=3)
    sleeps = Sleeps()
    CanaryClient(sleep=sleeps).store_properties(rows())
    assert len(sleeps) == 3
    for pause, base in zip(sleeps, (0.2, 0.4, 0.8), strict=True):
        assert base * 0.5 <= pause <= base
    assert canary.properties("Secil.Portugal.Cement.Kiln.Temp") == {"Eng Units": "°C"}


def test_exhausted_retries_raise_unavailable_after_six_attempts(canary):
    """TC-22: six attempts (0.2 → 6.4 s backoff), then the operation gives up as unavailable."""
    canary.set_faults(error_rate=1.0)
    sleeps = Sleeps()
    with pytest.raises(CanaryUnavailable, match="after 6 attempt"):
        CanaryClient(sleep=sleeps).store_properties(rows())
    assert len(sleeps) == 5
    assert canary.stats()["http_5xx"] >= 6


def test_timeouts_are_retried(canary, settings):
    """TC-22: an attempt that exceeds the per-attempt timeout is retried."""
    settings.CANARY_TIMEOUT_SECONDS = 0.3
    canary.set_faults(hang_seconds=2)
    with pytest.raises(CanaryUnavailable, match="timeout"):
        CanaryClient(sleep=lambda s: None).store_properties(rows())
    canary.set_faults(hang_seconds=0)


def test_errors_answer_is_not_retried_and_shows_canarys_message(canary):
    """TC-20 / TC-22: a malformed row → Errors with Canary's reason, raised at once, no retry."""
    bad = {"Secil.Portugal.Cement.Kiln.Temp": [["Eng Units", "2025-08-26T12:00:00", "°C", 192]]}  # no zone
    with pytest.raises(CanaryRejected) as err:
        CanaryClient(sleep=lambda s: pytest.fail("no retry expected")).store_properties(bad)
    assert "Secil.Portugal.Cement.Kiln.Temp" in str(err.value)
    assert canary.stats()["requests_by_method"]["storeData"] == 1


def test_breaker_opens_half_opens_and_closes(canary, settings):
    """TC-22: 20 consecutive failures open the shared breaker; after the hold a probe closes it."""
    settings.CANARY_BREAKER_RESET_SECONDS = 1
    settings.CANARY_BREAKER_MIN_REQUESTS = 10_000  # isolate the consecutive-failure rule
    canary.set_faults(error_rate=1.0)
    client = CanaryClient(sleep=lambda s: None)
    for _ in range(4):  # 6 attempts each: the 20th consecutive failure opens the circuit
        with pytest.raises(CanaryUnavailable):
            client.store_properties(rows())
    assert canary.stats()["http_5xx"] == 20
    assert breaker().current_state == pybreaker.STATE_OPEN and circuit_open()
    before = canary.stats()["requests_total"]
    with pytest.raises(CanaryUnavailable, match="circuit open"):
        client.store_properties(rows())
    assert canary.stats()["requests_total"] == before  # open: no call reached Canary
    canary.set_faults(error_rate=0.0)
    import time

    deadline = time.monotonic() + 5
    while circuit_open():  # hold of 1 s, polled with a deadline
        assert time.monotonic() < deadline, "breaker did not leave the open state"
        time.sleep(0.05)
    client.store_properties(rows("K"))  # the half-open probe succeeds
    assert breaker().current_state == pybreaker.STATE_CLOSED


def test_share_of_5xx_over_a_minute_opens_the_breaker(canary, settings, canary_redis):
    """TC-22: ≥ 2 % 5xx over the last minute opens the breaker even without 20 in a row."""
    settings.CANARY_BREAKER_MIN_REQUESTS = 50
    client = CanaryClient(sleep=lambda s: None)
    for _ in range(48):  # + the session call: 49 good answers
        client.store_properties(rows())
    assert breaker().current_state == pybreaker.STATE_CLOSED
    # A call that missed its rate-limit slot on a busy machine is admitted (and counted) twice:
    # the rule is checked against the calls Redis actually counted, not against 49.
    counted = sum(int(canary_redis.hget(key, "total") or 0) for key in canary_redis.keys(f"{NAMESPACE}:m:*"))
    settings.CANARY_BREAKER_MIN_REQUESTS = counted + 1
    settings.CANARY_BREAKER_5XX_RATIO = 1 / (counted + 3)  # (+ 2: the failing call may be counted twice too)
    canary.set_faults(fail_next=1)
    with pytest.raises(CanaryUnavailable, match="circuit open"):
        client.store_properties(rows())  # one 5xx in ~50 answers (~2 %): open before the retry
    assert breaker().current_state == pybreaker.STATE_OPEN


def test_keepalive_keeps_the_shared_session(canary):
    """TC-22: keepAlive on the shared session; without a session it is a no-op."""
    client = CanaryClient()
    assert client.keep_alive() is False
    client.store_properties(rows())
    assert client.keep_alive() is True
    assert canary.stats()["requests_by_method"]["keepAlive"] == 1


def test_revoke_ends_the_session(canary, canary_redis):
    """docs/canary-api.md: revokeSessionToken on shutdown."""
    client = CanaryClient()
    client.store_properties(rows())
    client.revoke()
    assert canary_redis.get(SESSION_KEY) is None
    assert canary.stats()["sessions_revoked"] == 1


def test_keepalive_only_when_the_session_is_idle(canary, settings):
    """TC-22: beat's keepAlive skips a session that was just used and refreshes an idle one."""
    client = CanaryClient()
    client.store_properties(rows())
    assert client.keep_alive_if_idle() is False
    settings.CANARY_KEEPALIVE_SECONDS = 0
    assert client.keep_alive_if_idle() is True
    assert canary.stats()["requests_by_method"]["keepAlive"] == 1


def test_a_call_that_wakes_too_late_for_its_slot_takes_a_new_one(canary, settings):
    """TC-21: a caller that wakes more than 50 ms after its reserved slot (descheduled, waiting for
    the GIL) would land among the callers of later slots and crowd their second past the budget:
    it reserves a new slot instead of sending late."""
    import time

    from prometheus_client import REGISTRY

    def late_calls() -> float:
        return REGISTRY.get_sample_value("metasync_canary_rate_limit_late_total") or 0.0

    settings.CANARY_RATE_LIMIT_RPS = 10  # 8.5 slots/s, burst 1: from the second call on, calls wait
    oversleep: list[float] = []

    def sleep(seconds: float) -> None:
        time.sleep(seconds + (oversleep.pop() if oversleep else 0.0))

    client = CanaryClient(sleep=sleep)
    client.store_properties(rows())  # the session first
    before = late_calls()
    oversleep.append(0.15)
    client.store_properties(rows("K"))  # wakes 150 ms late: a new slot (a loaded box may add one more)
    assert late_calls() >= before + 1 and oversleep == []
    assert canary.stats()["requests_by_method"] == {"getSessionToken": 1, "storeData": 2}
    assert canary.properties("Secil.Portugal.Cement.Kiln.Temp") == {"Eng Units": "K"}


def test_the_bucket_script_is_loaded_again_after_redis_forgot_it(canary, canary_redis):
    """TC-31 (unit): a restarted Redis has no scripts; the admission loads the bucket's again."""
    client = CanaryClient()
    client.store_properties(rows())
    canary_redis.script_flush()
    client.store_properties(rows("K"))
    assert canary.properties("Secil.Portugal.Cement.Kiln.Temp") == {"Eng Units": "K"}
