-- Per-tag isolation: a refused batch of several tags is split into exactly two halves that carry
-- its tags; only a refused one-tag batch quarantines its metric. A quarantined metric whose
-- change was reverted is fine (the next flush sends what the refusal left unconfirmed, and the
-- acknowledgement ends the quarantine).
-- (An in-flight row still held by a split batch is reported by verify_sync_queue.sql.)
SELECT 'split batch without exactly two halves' AS check,
       format('batch %s (%s tags, %s halves)', p.id, p.tags, count(c.id)) AS detail
  FROM uns_meta.canary_push_batches p LEFT JOIN uns_meta.canary_push_batches c ON c.parent_id = p.id
 WHERE p.status = 'split'
 GROUP BY p.id, p.tags HAVING count(c.id) <> 2
UNION ALL
SELECT 'split batch of fewer than two tags (a refused one-tag batch quarantines its metric)',
       format('batch %s (%s tags)', b.id, b.tags)
  FROM uns_meta.canary_push_batches b WHERE b.status = 'split' AND b.tags < 2
UNION ALL
SELECT 'half of a batch that was not split', format('batch %s, parent %s (%s)', c.id, p.id, p.status)
  FROM uns_meta.canary_push_batches c JOIN uns_meta.canary_push_batches p ON p.id = c.parent_id
 WHERE p.status <> 'split'
UNION ALL
SELECT 'halves that do not carry their split batch''s tags',
       format('batch %s (%s tags, halves %s)', p.id, p.tags, sum(c.tags))
  FROM uns_meta.canary_push_batches p JOIN uns_meta.canary_push_batches c ON c.parent_id = p.id
 WHERE p.status = 'split'
 GROUP BY p.id, p.tags HAVING sum(c.tags) <> p.tags
UNION ALL
SELECT 'quarantined metric without Canary''s reason', format('metric %s (%s)', q.metric_id, q.canary_id)
  FROM uns_meta.canary_quarantine q WHERE q.reason = ''
UNION ALL
SELECT 'quarantined metric whose refused batch did not end rejected',
       format('metric %s (%s) batch %s (%s)', q.metric_id, q.canary_id, b.id, b.status)
  FROM uns_meta.canary_quarantine q JOIN uns_meta.canary_push_batches b ON b.id = q.batch_id
 WHERE b.status <> 'rejected'
UNION ALL
SELECT 'quarantined metric that does not exist', format('metric %s (%s)', q.metric_id, q.canary_id)
  FROM uns_meta.canary_quarantine q WHERE NOT EXISTS (SELECT 1 FROM uns_meta.metrics m WHERE m.id = q.metric_id);
