"""The catalog's one outgoing seam: changes that logical replication does not carry.

``metrics_need_sync`` is sent, inside the sender's transaction, when catalog rows outside the
publication change what Canary should hold (a steward's override). Keyword arguments:
``metric_ids`` (list of metric ids) and ``reason`` (a short word for the pending row).
``cdcsync`` receives it and marks the metrics pending (docs/architecture.md, "Seams"), so the
catalog never imports the stages built on it.
"""

from __future__ import annotations

from django.dispatch import Signal

metrics_need_sync = Signal()
