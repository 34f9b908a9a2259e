"""Prometheus metrics of the CDC stage (prefix ``metasync_``; docs/metrics.md)."""

from prometheus_client import Counter, Gauge

EVENTS = Counter("metasync_cdc_events_total", "Row changes read from the replication slot", ["table", "op"])
TRANSACTIONS = Counter("metasync_cdc_transactions_total", "Committed transactions read from the slot")
MARKED = Counter("metasync_cdc_metrics_marked_total", "Metric marks written to the pending table")
SLOT_LAG = Gauge("metasync_cdc_slot_lag_bytes", "WAL between the current position and the slot's confirmed position")
SLOT_RETAINED = Gauge("metasync_cdc_slot_retained_wal_bytes", "WAL the slot keeps on disk (from restart_lsn)")
SLOT_ACTIVE = Gauge("metasync_cdc_slot_present", "1 when the replication slot exists")
PENDING = Gauge("metasync_sync_pending_metrics", "Metrics waiting in the pending table")
PENDING_AGE = Gauge("metasync_sync_pending_oldest_age_seconds", "Age of the oldest pending change")
HEARTBEAT = Gauge("metasync_cdc_heartbeat_timestamp_seconds",
                  "Unix time the consumer's loop last finished a poll (or a stand-by round); "
                  "`healthcheck cdc` checks its age")
