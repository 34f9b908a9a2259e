"""Canary Write API client (CANARY_API.md): shared session, retries, global rate limit, breaker.

- One session for all workers, its token kept in Redis; whoever meets
  ``BadSessionToken`` drops that token and one worker logs in again (Redis lock).
- Status comes from the JSON body (``Good`` / ``Errors`` / ``BadSessionToken``), not the HTTP code.
- Transient failures (timeouts, connection errors, 5xx, 429) are retried: up to
  ``CANARY_ATTEMPTS`` attempts of at most ``CANARY_TIMEOUT_SECONDS`` each, exponential
  backoff with jitter (0.2 s doubling to 6.4 s), never past ``CANARY_OPERATION_DEADLINE_SECONDS``.
- ``Errors`` and other 4xx are Canary saying no: raised as :class:`CanaryRejected`
  with Canary's own messages, never retried blindly.
- Every HTTP call first takes a slot from the global token bucket and goes through
  the shared circuit breaker.
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
from canary.breaker import breaker, record_response, redis_client
from canary.errors import CanaryError, CanaryRejected, CanaryUnavailable
from canary.ratelimit import RateLimiter
from metasync.logging import register_secret

log = logging.getLogger(__name__)

_JSON = {"Content-Type": "application/json"}
SESSION_KEY = "metasync:canary:session"
SESSION_USED_KEY = "metasync:canary:session:used"
LOGIN_LOCK = "metasync:canary:login"


class _Transient(Exception):
    def __init__(self, why: str, server_error: bool = False) -> None:
        super().__init__(why)
        self.server_error = server_error


class _BadSession(Exception):
    pass


class CanaryClient:
    def __init__(self, *, base_url: str | None = None, views_url: str | None = None,
                 api_token: str | None = None, http: requests.Session | None = None,
                 store: redis.Redis | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = (base_url or settings.CANARY_URL).rstrip("/")
        self.views_url = (views_url or settings.CANARY_VIEWS_URL).rstrip("/")
        self.api_token = api_token or settings.CANARY_API_TOKEN
        if not self.api_token:
            from metasync.env import ConfigError

            raise ConfigError("CANARY_API_TOKEN", "is required to talk to Canary")
        self.http = http or requests.Session()
        verify = settings.CANARY_VERIFY
        self.http.verify = {"true": True, "false": False}.get(verify.lower(), verify)
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
        """keepAlive the shared session if it has been idle; False when there is none."""
        token = self._cached_token()
        if token is None:
            return False
        try:
            self._call("keepAlive", {"sessionToken": token})
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
                self._call("revokeSessionToken", {"sessionToken": token})
            except (CanaryError, _Transient, _BadSession, pybreaker.CircuitBreakerError):
                log.info("revokeSessionToken failed; the session will expire on its own")

    def get_tag_properties(self, tags: list[str]) -> dict[str, dict]:
        """Views API read-back (used by parity checks and the runbook)."""
        body = self._post(f"{self.views_url}/getTagProperties", {"apiToken": self.api_token, "tags": tags})
        if body.get("statusCode") != "Good":
            raise CanaryRejected(list(body.get("errors") or [str(body.get("statusCode"))]))
        return body.get("properties") or {}

    # --- machinery -----------------------------------------------------------------------
    def _operation(self, method: str, make_body: Callable[[str], dict | str]) -> dict:
        deadline = time.monotonic() + settings.CANARY_OPERATION_DEADLINE_SECONDS
        backoff = settings.CANARY_BACKOFF_SECONDS
        last = "no attempt"
        for attempt in range(1, settings.CANARY_ATTEMPTS + 1):
            try:
                token = self._session_token()
                return self._call(method, make_body(token))
            except _BadSession:
                self._drop_token(token)
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

    def _call(self, method: str, body: dict | str) -> dict:
        """One HTTP call through the rate limit and the breaker; classifies the answer."""
        waited = self.limiter.acquire()
        if waited:
            metrics.RATE_WAITS.inc()
            metrics.RATE_WAIT.inc(waited)
        answer = breaker().call(self._post, f"{self.base_url}/{method}", body)
        status = answer.get("statusCode")
        if status == "Good":
            metrics.REQUESTS.labels(method, "good").inc()
            self.redis.set(SESSION_USED_KEY, time.time())
            return answer
        if status == "BadSessionToken":
            metrics.REQUESTS.labels(method, "bad_session").inc()
            raise _BadSession()
        metrics.REQUESTS.labels(method, "errors").inc()
        raise CanaryRejected([str(e) for e in answer.get("errors") or [f"statusCode {status!r}"]])

    def _post(self, url: str, body: dict | str) -> dict:
        """The HTTP exchange; a raise here counts as a failure for the breaker."""
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
            record_response(server_error=True)
            raise _Transient(f"timeout after {settings.CANARY_TIMEOUT_SECONDS}s") from None
        except requests.ConnectionError as exc:
            metrics.REQUESTS.labels(method, "connection_error").inc()
            record_response(server_error=True)
            raise _Transient(f"connection error: {exc.__class__.__name__}") from None
        finally:
            metrics.LATENCY.labels(method).observe(time.monotonic() - started)
        code = response.status_code
        record_response(server_error=code >= 500)
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
            raise CanaryRejected([f"HTTP {code}: {response.text[:500]}"])
        return answer

    # --- the shared session ----------------------------------------------------------------
    def _cached_token(self) -> str | None:
        token = self.redis.get(SESSION_KEY)
        if not token:
            return None
        register_secret(token.decode())  # a session another worker opened
        return token.decode()

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
        answer = self._call("getSessionToken", {
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
