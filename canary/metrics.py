"""Prometheus metrics of the Canary side (prefix ``metasync_``; docs/metrics.md)."""

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("metasync_canary_requests_total", "Canary HTTP calls by method and outcome",
                   ["method", "outcome"])
LATENCY = Histogram("metasync_canary_request_seconds", "Canary call latency", ["method"],
                    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
RETRIES = Counter("metasync_canary_retries_total", "Canary call retries after a transient failure")
RATE_WAIT = Counter("metasync_canary_rate_limit_wait_seconds_total", "Seconds spent waiting for the global budget")
RATE_LATE = Counter("metasync_canary_rate_limit_late_total",
                    "Calls that woke too late for their reserved slot and took a new one")
RATE_WAITS = Counter("metasync_canary_rate_limit_waits_total", "Calls that had to wait for the global budget")
# Celery workers aggregate their pool processes (metasync/metrics.py): the latest value set wins.
CIRCUIT = Gauge("metasync_canary_circuit_state", "Circuit breaker: 0 closed, 1 half-open, 2 open",
                multiprocess_mode="mostrecent")
BATCHES = Counter("metasync_canary_batches_total", "Push batches by outcome", ["outcome"])
MAPPING_CONFLICTS = Counter("metasync_sync_mapping_conflicts_total",
                            "Two keys of one metric mapped to one Canary property name (the mapped key wins)")
TAGS_PUSHED = Counter("metasync_canary_tags_pushed_total", "Tags acknowledged by Canary")
END_TO_END = Histogram("metasync_end_to_end_seconds", "Birth received -> Canary acknowledged",
                       buckets=(1, 5, 10, 30, 60, 120, 180, 240, 300, 600, 1200, 3600))
for _outcome in ("acked", "failed", "rejected", "split", "quarantined"):
    BATCHES.labels(_outcome)  # every series exists (at 0) from the start: increase() sees the first batch
