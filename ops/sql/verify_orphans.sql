-- Orphans: rows that point at something that does not exist. The tables between the stages carry
-- no foreign keys on purpose (docs/architecture.md), so this is where a lost reference shows.
SELECT 'pending row of a metric that does not exist' AS check, format('metric %s', p.metric_id) AS detail
  FROM uns_meta.sync_pending p WHERE NOT EXISTS (SELECT 1 FROM uns_meta.metrics m WHERE m.id = p.metric_id)
UNION ALL
SELECT 'Canary sync state of a metric that does not exist', format('metric %s (%s)', s.metric_id, s.canary_id)
  FROM uns_meta.canary_sync_state s WHERE NOT EXISTS (SELECT 1 FROM uns_meta.metrics m WHERE m.id = s.metric_id)
UNION ALL
SELECT 'in-flight row of a metric that does not exist', format('metric %s batch %s', i.metric_id, i.batch_id)
  FROM uns_meta.canary_inflight i WHERE NOT EXISTS (SELECT 1 FROM uns_meta.metrics m WHERE m.id = i.metric_id)
UNION ALL
SELECT 'in-flight row of a batch that does not exist', format('metric %s batch %s', i.metric_id, i.batch_id)
  FROM uns_meta.canary_inflight i
 WHERE NOT EXISTS (SELECT 1 FROM uns_meta.canary_push_batches b WHERE b.id = i.batch_id)
UNION ALL
SELECT 'metric without its created version', format('metric %s %s', m.id, m.uns_path)
  FROM uns_meta.metrics m
 WHERE NOT EXISTS (SELECT 1 FROM uns_meta.metric_versions v WHERE v.metric_id = m.id AND v.kind = 'created');
