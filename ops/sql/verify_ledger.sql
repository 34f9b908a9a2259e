-- Ledger completeness: every frame ingest stored reached an end state with what that state needs.
SELECT 'frame still received after 10 minutes (its task is lost and beat is not re-enqueueing)' AS check,
       format('frame %s %s received %s', id, topic, received_at) AS detail
  FROM uns_meta.birth_frames WHERE status = 'received' AND received_at < now() - interval '10 minutes'
UNION ALL
SELECT 'applied frame without device or counts', format('frame %s %s', id, topic)
  FROM uns_meta.birth_frames WHERE status = 'applied' AND (device_id IS NULL OR counts IS NULL)
UNION ALL
SELECT 'frame ended without a reason', format('frame %s %s (%s)', id, topic, status)
  FROM uns_meta.birth_frames WHERE status IN ('rejected', 'duplicate', 'stale', 'failed') AND reason = ''
UNION ALL
SELECT 'frame processed but never marked processed', format('frame %s %s (%s)', id, topic, status)
  FROM uns_meta.birth_frames WHERE status <> 'received' AND processed_at IS NULL;
