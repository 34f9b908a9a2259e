"""Prometheus metrics of the ingest path (prefix ``metasync_``; see docs/metrics.md)."""

from prometheus_client import Counter, Gauge, Histogram

FRAMES_RECEIVED = Counter("metasync_ingest_frames_received_total", "MQTT frames received by ingest")
BYTES_RECEIVED = Counter("metasync_ingest_bytes_received_total", "Payload bytes received by ingest")
FRAMES_STORED = Counter("metasync_ingest_frames_stored_total", "Frames written to the birth ledger")
LEDGER_ERRORS = Counter("metasync_ingest_ledger_errors_total", "Failed ledger writes (retried)")
ENQUEUE_ERRORS = Counter("metasync_ingest_enqueue_errors_total",
                         "process_birth enqueue failures (beat re-enqueues those frames)")
BACKLOG_FRAMES = Gauge("metasync_ingest_backlog_frames", "Frames received but not yet in the ledger")
BACKLOG_BYTES = Gauge("metasync_ingest_backlog_bytes", "Bytes received but not yet in the ledger")
BACKLOG_FULL = Counter("metasync_ingest_backlog_full_total",
                       "Times the network thread waited because the backlog was full")
CONNECTED = Gauge("metasync_ingest_connected", "1 while connected to the MQTT broker")
DISCONNECTS = Counter("metasync_ingest_disconnects_total", "Unexpected MQTT disconnections")
LAST_FRAME = Gauge("metasync_ingest_last_frame_timestamp_seconds", "Unix time of the last frame received")
LEDGER_WRITE_SECONDS = Histogram("metasync_ingest_ledger_write_seconds", "Time to store one frame in the ledger",
                                 buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30))
TOPICS_IGNORED = Counter("metasync_ingest_topics_ignored_total",
                         "Frames dropped because their group is not in SPARKPLUG_GROUPS")
STATE_ONLINE = Gauge("metasync_ingest_primary_host_online", "1 while ingest's primary-host STATE is online")
LIFECYCLE_EVENTS = Counter("metasync_lifecycle_events_total",
                           "NBIRTH/NDEATH/DBIRTH/DDEATH seen by ingest, by verb and outcome "
                           "(recorded; ignored: an NDEATH whose bdSeq is not the NBIRTH's; error)",
                           ["verb", "outcome"])
NODES_ONLINE = Gauge("metasync_nodes_online", "Edge nodes whose last lifecycle message is an NBIRTH")
DEVICES_ONLINE = Gauge("metasync_devices_online", "Devices whose last lifecycle message is a DBIRTH")
HEARTBEAT = Gauge("metasync_ingest_heartbeat_timestamp_seconds",
                  "Unix time the main loop last went round (every <= 0.5 s); `healthcheck ingest` checks its age")
