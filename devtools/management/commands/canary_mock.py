"""``canary_mock``: serve the contract-faithful Canary fake (:mod:`devtools.canary_mock`) until SIGTERM/SIGINT.

For dev, the demo, tests and benchmarks — never production. The Write API is under ``/api/v1/``, the
Views read-back under ``/api/v2/``, the control API (faults, state, stats, transcript) under
``/_mock/``. Follows the daemon pattern of ``ingest_births``: the signal handler only sets a flag;
the server runs in a thread and the loop logs a stats line when something changed.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from devtools.canary_mock import DEFAULT_PORT, CanaryMock, make_server

log = logging.getLogger("canary.mock")

STEP = 0.2  # seconds between checks of the stop flag
FREEZE_EVERY_ROWS = 100_000
STATUS_EVERY = 30.0  # seconds between stats lines (only when requests arrived)


class Command(BaseCommand):
    help = "Serve a contract-faithful Canary Write API fake (with Views read-back and fault injection)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=DEFAULT_PORT)
        parser.add_argument("--api-token", default=None,
                            help="the apiToken clients must send (default: the CANARY_API_TOKEN setting)")
        parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every Write API request")
        parser.add_argument("--error-rate", type=float, default=0.0,
                            help="fraction of Write API requests answered HTTP 500/502/503 (test aid)")
        parser.add_argument("--hang-seconds", type=float, default=0.0,
                            help="sleep before answering each Write API request (test aid)")
        parser.add_argument("--rate-limit-rps", type=int, default=None,
                            help="answer HTTP 429 above this many requests in a 1-second window (test aid)")
        parser.add_argument("--limit-rps", type=int, default=500,
                            help="what counts as a rate violation in the stats (default 500)")
        parser.add_argument("--session-timeout", type=float, default=60.0,
                            help="inactivity timeout (s) of sessions whose settings give no clientTimeout")
        parser.add_argument("--transcript", default=None, metavar="FILE",
                            help="also append every exchange to FILE as JSON lines (secrets masked)")
        parser.add_argument("--transcript-size", type=int, default=10_000,
                            help="exchanges kept in memory for GET /_mock/transcript (0 = none)")
        parser.add_argument("--seed", type=int, default=None, help="seed of the injected-error draw")

    def handle(self, *args: Any, **opts: Any) -> None:
        token = opts["api_token"] or getattr(settings, "CANARY_API_TOKEN", None)
        if not token:
            raise CommandError("--api-token is required (there is no CANARY_API_TOKEN setting)")
        try:
            mock = CanaryMock(
                str(token), session_timeout=opts["session_timeout"], limit_rps=opts["limit_rps"],
                error_rate=opts["error_rate"], latency_ms=opts["latency_ms"], hang_seconds=opts["hang_seconds"],
                rate_limit_rps=opts["rate_limit_rps"], seed=opts["seed"], transcript_size=opts["transcript_size"],
                transcript_path=opts["transcript"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        try:
            server = make_server(opts["host"], opts["port"], mock)
        except OSError as exc:
            raise CommandError(f"cannot listen on {opts['host']}:{opts['port']}: {exc}") from None

        self.stopping = False
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": STEP}, name="canary-mock",
                                  daemon=True)
        thread.start()
        url = server.url
        log.info("canary mock serving: write API %s/api/v1/ views API %s/api/v2/ control %s/_mock/ "
                 "(limit %s rps, faults %s)", url, url, url, opts["limit_rps"], _active(mock.faults()))
        last_status, last_total, frozen_at = time.monotonic(), 0, 0
        try:
            while not self.stopping:
                time.sleep(STEP)
                frozen_at = _keep_gc_cheap(mock, frozen_at)
                if time.monotonic() - last_status >= STATUS_EVERY:
                    last_status = time.monotonic()
                    last_total = _log_stats(mock, last_total)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        _log_stats(mock, -1)
        log.info("canary mock stopped")

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True


def _keep_gc_cheap(mock: CanaryMock, frozen_at: int) -> int:
    """The mock keeps every stored row (millions in a benchmark); Python's full collections would
    walk them all again and again. Rows stored so far are moved out of the collector's sight
    (``gc.freeze``) after every FREEZE_EVERY_ROWS; a reset gives them back to it."""
    stored = mock.rows_stored
    if stored < frozen_at:  # reset: the frozen state is garbage now
        gc.unfreeze()
        return 0
    if stored - frozen_at >= FREEZE_EVERY_ROWS:
        gc.freeze()
        return stored
    return frozen_at


def _active(faults: dict[str, Any]) -> dict[str, Any] | str:
    return {key: value for key, value in faults.items() if value and key != "limit_rps"} or "none"


def _log_stats(mock: CanaryMock, last_total: int) -> int:
    stats = mock.stats()
    if stats["requests_total"] != last_total:
        rate = stats["rate"]
        log.info("canary mock: %d requests, %d rows stored, %d tags, max %d/s (sliding %d/s), %d violation(s) "
                 "of %s rps, %d x 429, %d x 5xx, %d active session(s), %d unsafe", stats["requests_total"],
                 stats["rows_stored"], stats["tags"], rate["max_in_second_window"], rate["max_in_sliding_window"],
                 rate["violations"], rate["limit_rps"], stats["http_429"], stats["http_5xx"],
                 stats["sessions_active"], stats["unsafe_sessions"])
    return int(stats["requests_total"])
