-- Pending and in-flight work agree: a metric is in flight only with an open batch, an open batch
-- holds its metrics, nothing waits far longer than the debounce cap allows, and what a failed or
-- refused batch left unconfirmed is on its way again (or its metric is quarantined or retired).
SELECT 'in-flight row of a batch that already ended' AS check,
       format('metric %s batch %s (%s)', i.metric_id, b.id, b.status) AS detail
  FROM uns_meta.canary_inflight i JOIN uns_meta.canary_push_batches b ON b.id = i.batch_id
 WHERE b.status NOT IN ('queued', 'sending')
UNION ALL
SELECT 'open batch without in-flight metrics', format('batch %s (%s, %s tags)', b.id, b.status, b.tags)
  FROM uns_meta.canary_push_batches b
 WHERE b.status IN ('queued', 'sending')
   AND NOT EXISTS (SELECT 1 FROM uns_meta.canary_inflight i WHERE i.batch_id = b.id)
UNION ALL
SELECT 'open batch not touched for an hour (its task is lost and re-drive is not running)',
       format('batch %s (%s since %s)', b.id, b.status, b.updated_at)
  FROM uns_meta.canary_push_batches b
 WHERE b.status IN ('queued', 'sending') AND b.updated_at < now() - interval '1 hour'
UNION ALL
SELECT 'pending change due for more than an hour (the flush is not running)',
       format('metric %s due %s', p.metric_id, p.due_at)
  FROM uns_meta.sync_pending p WHERE p.due_at < now() - interval '1 hour'
UNION ALL
SELECT 'unconfirmed keys that nothing will send again (not pending, in flight or quarantined)',
       format('metric %s (%s) batch %s', s.metric_id, s.canary_id, s.batch_id)
  FROM uns_meta.canary_sync_state s JOIN uns_meta.metrics m ON m.id = s.metric_id
 WHERE m.retired_at IS NULL
   AND EXISTS (SELECT 1 FROM jsonb_each(s.properties) e WHERE jsonb_typeof(e.value) = 'object')
   AND NOT EXISTS (SELECT 1 FROM uns_meta.sync_pending p WHERE p.metric_id = s.metric_id)
   AND NOT EXISTS (SELECT 1 FROM uns_meta.canary_inflight i WHERE i.metric_id = s.metric_id)
   AND NOT EXISTS (SELECT 1 FROM uns_meta.canary_quarantine q WHERE q.metric_id = s.metric_id);
