-- Duplicates: every identity the catalog promises to keep unique (docs/catalog.md).
-- Each verify_*.sql returns one row per violation: (check, detail); no rows means the check holds.
-- Run with psql (psql "$DATABASE_URL" -f ops/sql/verify_duplicates.sql) or `manage.py verify_integrity`.
SELECT 'device identity (group_id, edge, device) repeated' AS check,
       format('%s/%s/%s: %s rows', group_id, edge, device, count(*)) AS detail
  FROM uns_meta.devices GROUP BY group_id, edge, device HAVING count(*) > 1
UNION ALL
SELECT 'device uns_path repeated', format('%s: %s rows', uns_path, count(*))
  FROM uns_meta.devices GROUP BY uns_path HAVING count(*) > 1
UNION ALL
SELECT 'metric identity (device, name) repeated', format('device %s %L: %s rows', device_id, name, count(*))
  FROM uns_meta.metrics GROUP BY device_id, name HAVING count(*) > 1
UNION ALL
SELECT 'metric uns_path repeated', format('%s: %s rows', uns_path, count(*))
  FROM uns_meta.metrics GROUP BY uns_path HAVING count(*) > 1
UNION ALL
SELECT 'Canary tag (canary_id) shared by two metrics', format('%s: metrics %s', canary_id, string_agg(id::text, ', '))
  FROM uns_meta.metrics GROUP BY canary_id HAVING count(*) > 1
UNION ALL
SELECT 'property key repeated on a metric', format('metric %s key %L: %s rows', metric_id, key, count(*))
  FROM uns_meta.metric_properties GROUP BY metric_id, key HAVING count(*) > 1
UNION ALL
SELECT 'override key repeated on a metric', format('metric %s key %L: %s rows', metric_id, key, count(*))
  FROM uns_meta.property_overrides GROUP BY metric_id, key HAVING count(*) > 1
UNION ALL
SELECT 'metric created twice', format('metric %s: %s created versions', metric_id, count(*))
  FROM uns_meta.metric_versions WHERE kind = 'created' GROUP BY metric_id HAVING count(*) > 1;
