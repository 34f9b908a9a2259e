"""Canary Write API client (docs/canary-api.md): shared session, retries, global rate limit, breaker.

One session for all workers (its token in Redis); the outcome comes from the JSON body, not the HTTP
code. Transient failures (timeouts, connection errors, 5xx, 429) are retried within
``CANARY_OPERATION_DEADLINE_SECONDS``; ``Errors`` and other 4xx raise :class:`CanaryRejected`, never
retried blindly. Every HTTP call is first admitted in one Redis round trip (:meth:`CanaryClient._admit`:
a global rate-limit slot, the breaker's count, the session token), then goes through the shared
breaker. Details: docs/architecture.md, "Canary client".
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable

import pybreaker
import redis
import requests
from django.conf import settings

from canary import metrics
from canary.breaker import breaker, count_call, record_server_error
from canary.errors import CanaryError, CanaryRejected, CanaryUnavailable
from canary.ratelimit import RateLimiter
from metasync.env import ConfigError
from metasync.logging import register_secret
from metasync.redis_client import redis_client

log = logging.getLogger(__name__)

_JSON = {"Content-Type": "application/json"}
SESSION_KEY = "metasync:canary:session"
SESSION_USED_KEY = "metasync:canary:session:used"
LOGIN_LOCK = "metasync:canary:login"
SLOT_TOLERANCE_SECONDS = 0.05  # see CanaryClient._post
LATE_RESERVATIONS_MAX = 5  # then the call goes anyway (a machine this overloaded has other problems)


class _Transient(Exception):
    def __init__(self, why: str, server_error: bool = False) -> None:
        super().__init__(why)
        self.server_error = server_error


class _BadSession(Exception):
    def __init__(self, token: str) -> None:
        super().__init__("BadSessionToken")
        self.token = token


class CanaryClient:
    def __init__(self, *, base_url: str | None = None, views_url: str | None = None,
                 api_token: str | None = None, http: requests.Session | None = None,
                 store: redis.Redis | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = (base_url or settings.CANARY_URL).rstrip("/")
        self.views_url = (views_url or settings.CANARY_VIEWS_URL).rstrip("/")
        self.api_token = api_token or settings.CANARY_API_TOKEN
        if not self.api_token:
            raise ConfigError("CANARY_API_TOKEN", "is required to talk to Canary")
        self.http = http or requests.Session()
        verify = settings.CANARY_VERIFY
        self.http.verify = {"true": True, "false": False}.get(verify.lower(), verify)
        if self.http.trust_env:  # the environment (proxies, REQUESTS_CA_BUNDLE) read once, not on every call
            merged = self.http.merge_environment_settings(self.base_url, {}, None, self.http.verify, None)
            self.http.proxies, self.http.verify = merged["proxies"], merged["verify"]
            self.http.trust_env = False
        self.redis = store or redis_client()
        self.sleep = sleep
        self.limiter = RateLimiter(self.redis, settings.CANARY_RATE_LIMIT_RPS, sleep=sleep)

    # --- operations ------------------------------------------------------------------
    def store_properties(self, properties: dict[str, list] | str) -> None:
        """storeData with properties only (a dict, or its JSON text as stored in a push batch);
        returns when Canary said Good."""
        if isinstance(properties, str):  # pre-encoded: spliced in, not parsed and re-encoded
            self._operation("storeData", lambda token: '{"sessionToken":' + json.dumps(token)
                            + ',"properties":' + properties + "}")
        else:
            self._operation("storeData", lambda token: {"sessionToken": token, "properties": properties})

    def keep_alive(self) -> bool:
        """keepAlive the shared session; False when there is none (or it had expired)."""
        token = self._cached_token()
        if token is None:
            return False
        try:
            self._call("keepAlive", lambda _admitted: {"sessionToken": token})
        except _BadSession:
            self._drop_token(token)
            return False
        return True

    def keep_alive_if_idle(self) -> bool:
        """keepAlive only when no call used the session for CANARY_KEEPALIVE_SECONDS."""
        used = self.redis.get(SESSION_USED_KEY)
        if used and time.time() - float(used) < settings.CANARY_KEEPALIVE_SECONDS:
            return False
        return self.keep_alive()

    def revoke(self) -> None:
        token = self._cached_token()
        if token is not None:
            self._drop_token(token)
            try:
                self._call("revokeSessionToken", lambda _admitted: {"sessionToken": token})
            except (CanaryError, _Transient, _BadSession, pybreaker.CircuitBreakerError):
                log.info("revokeSessionToken failed; the session will expire on its own")

    def get_tag_properties(self, tags: list[str]) -> dict[str, dict]:
        """Views API read-back (used by parity checks and the runbook)."""
        body = self._post(f"{self.views_url}/getTagProperties", {"apiToken": self.api_token, "tags": tags})
        if body.get("statusCode") != "Good":
            raise CanaryRejected(list(body.get("errors") or [str(body.get("statusCode"))]))
        return body.get("properties") or {}

    # --- machinery -----------------------------------------------------------------------
    def _operation(self, method: str, make_body: Callable[[str | None], dict | str]) -> dict:
        """``method`` on the shared session (``make_body(token)``), retried (docs/architecture.md, "Canary client")."""
        deadline = time.monotonic() + settings.CANARY_OPERATION_DEADLINE_SECONDS
        backoff = settings.CANARY_BACKOFF_SECONDS
        last = "no attempt"
        for attempt in range(1, settings.CANARY_ATTEMPTS + 1):
            try:
                return self._call(method, make_body, session=True)
            except _BadSession as exc:
                self._drop_token(exc.token)
                last = "BadSessionToken"
            except _Transient as exc:
                last = str(exc)
            except pybreaker.CircuitBreakerError:
                raise CanaryUnavailable("circuit open: Canary calls are paused") from None
            if attempt == settings.CANARY_ATTEMPTS:
                break
            pause = min(backoff, settings.CANARY_BACKOFF_MAX_SECONDS) * random.uniform(0.5, 1.0)
            if time.monotonic() + pause >= deadline:
                break
            metrics.RETRIES.inc()
            log.warning("%s attempt %d failed (%s); retrying in %.2fs", method, attempt, last, pause)
            self.sleep(pause)
            backoff *= 2
        raise CanaryUnavailable(f"{method} failed after {attempt} attempt(s): {last}")

    def _admit(self) -> tuple[str | None, float]:
        """Before every HTTP call, in one Redis round trip: take a slot from the global bucket
        (then sleep until it comes), count the call for the breaker's 5xx ratio, mark the
        session used (keepAlive only runs when idle) and read the shared session token.
        Returns the token and the monotonic time after which the slot is gone (see _post)."""
        answers = self._admission()
        slot = time.monotonic() + float(answers[0])
        waited = self.limiter.wait(answers[0])
        if waited:
            metrics.RATE_WAITS.inc()
            metrics.RATE_WAIT.inc(waited)
        token = answers[-1]
        return (token.decode() if token else None), slot + SLOT_TOLERANCE_SECONDS

    def _admission(self) -> list:
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            self.limiter.reserve(pipe)
            count_call(pipe)
            pipe.set(SESSION_USED_KEY, time.time())
            pipe.get(SESSION_KEY)
            try:
                return pipe.execute()
            except redis.exceptions.NoScriptError:  # Redis restarted and forgot the bucket script
                if attempt == 2:
                    raise
                self.limiter.load()
        raise AssertionError("unreachable")

    def _call(self, method: str, make_body: Callable[[str | None], dict | str], *, session: bool = False) -> dict:
        """One admitted HTTP call through the breaker; classifies the answer. ``make_body`` gets
        the shared session token (``session=True``: logging in first when there is none)."""
        token, slot_ends = self._admit()
        if session:
            if token is None:
                token = self._session_token()
            register_secret(token)  # a session another worker opened: redacted here too
        answer = breaker().call(self._post, f"{self.base_url}/{method}", make_body(token), slot_ends)
        status = answer.get("statusCode")
        if status == "Good":
            metrics.REQUESTS.labels(method, "good").inc()
            return answer
        if status == "BadSessionToken":
            metrics.REQUESTS.labels(method, "bad_session").inc()
            raise _BadSession(token or "")
        metrics.REQUESTS.labels(method, "errors").inc()
        raise CanaryRejected([str(e) for e in answer.get("errors") or [f"statusCode {status!r}"]], method)

    def _post(self, url: str, body: dict | str, slot_ends: float | None = None) -> dict:
        """The HTTP exchange; a raise here counts as a failure for the breaker.

        A rate-limited call must leave within ``SLOT_TOLERANCE_SECONDS`` of its slot: one that
        is later (its process was not scheduled, its thread waited for the GIL or for Redis)
        would land among the callers of later slots and crowd a second beyond the budget, so it
        takes a new slot first."""
        for _ in range(LATE_RESERVATIONS_MAX):
            if slot_ends is None or time.monotonic() <= slot_ends:
                break
            metrics.RATE_LATE.inc()
            _, slot_ends = self._admit()
        method = url.rsplit("/", 1)[-1]
        started = time.monotonic()
        try:
            if isinstance(body, str):
                response = self.http.post(url, data=body.encode(), headers=_JSON,
                                          timeout=settings.CANARY_TIMEOUT_SECONDS)
            else:
                response = self.http.post(url, json=body, timeout=settings.CANARY_TIMEOUT_SECONDS)
        except requests.Timeout:
            metrics.REQUESTS.labels(method, "timeout").inc()
            record_server_error()
            raise _Transient(f"timeout after {settings.CANARY_TIMEOUT_SECONDS}s") from None
        except requests.ConnectionError as exc:
            metrics.REQUESTS.labels(method, "connection_error").inc()
            record_server_error()
            raise _Transient(f"connection error: {exc.__class__.__name__}") from None
        finally:
            metrics.LATENCY.labels(method).observe(time.monotonic() - started)
        code = response.status_code
        if code >= 500:
            record_server_error()
        if code >= 500 or code == 429:
            metrics.REQUESTS.labels(method, f"http_{code}").inc()
            raise _Transient(f"HTTP {code}", server_error=code >= 500)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if code != 200 or not isinstance(answer, dict):
            metrics.REQUESTS.labels(method, f"http_{code}").inc()
            # A refusal, not an outage: CanaryRejected is excluded from the breaker's failures.
            raise CanaryRejected([f"HTTP {code}: {response.text[:500]}"], method)
        return answer

    # --- the shared session ----------------------------------------------------------------
    def _cached_token(self) -> str | None:
        token = self.redis.get(SESSION_KEY)
        if not token:
            return None
        text = token.decode() if isinstance(token, bytes) else str(token)
        register_secret(text)  # a session another worker opened
        return text

    def _session_token(self) -> str:
        deadline = time.monotonic() + 15
        while True:
            token = self._cached_token()
            if token:
                return token
            if self.redis.set(LOGIN_LOCK, "1", nx=True, ex=15):
                try:
                    return self._login()
                finally:
                    self.redis.delete(LOGIN_LOCK)
            if time.monotonic() > deadline:
                raise _Transient("another worker's Canary login did not finish")
            self.sleep(0.05)

    def _login(self) -> str:
        answer = self._call("getSessionToken", lambda _none: {
            "apiToken": self.api_token,
            "historians": settings.CANARY_HISTORIANS,
            "clientId": settings.CANARY_CLIENT_ID,
            "settings": {"clientTimeout": settings.CANARY_CLIENT_TIMEOUT_MS, "autoCreateDatasets": False,
                         "autoWriteNoData": False, "extendData": False},
        })
        token = str(answer["sessionToken"])
        register_secret(token)  # redacted from logs even where it appears bare
        self.redis.set(SESSION_KEY, token)
        log.info("new Canary session for client id %s", settings.CANARY_CLIENT_ID)
        return token

    _DROP = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

    def _drop_token(self, token: str) -> None:
        """Forget ``token`` unless another worker already replaced it."""
        self.redis.eval(self._DROP, 1, SESSION_KEY, token)
