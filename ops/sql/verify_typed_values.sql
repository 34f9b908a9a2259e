-- Typed values: exactly the column of a row's storage type is set (all null only for a null value),
-- and the storage type is the one its Sparkplug type maps to (docs/catalog.md, "Typed properties").
WITH props AS (
    SELECT 'metric_properties' AS tbl, metric_id, key, sparkplug_type, type::text AS type, is_null,
           num_nonnulls(int_value, long_value, float_value, double_value, boolean_value, string_value,
                        datetime_value, json_value) AS set_columns,
           CASE type WHEN 'int' THEN int_value IS NOT NULL WHEN 'long' THEN long_value IS NOT NULL
                     WHEN 'float' THEN float_value IS NOT NULL WHEN 'double' THEN double_value IS NOT NULL
                     WHEN 'boolean' THEN boolean_value IS NOT NULL WHEN 'string' THEN string_value IS NOT NULL
                     WHEN 'datetime' THEN datetime_value IS NOT NULL WHEN 'json' THEN json_value IS NOT NULL
           END AS own_column_set
      FROM uns_meta.metric_properties
    UNION ALL
    SELECT 'property_overrides', metric_id, key, NULL, type::text, is_null,
           num_nonnulls(int_value, long_value, float_value, double_value, boolean_value, string_value,
                        datetime_value, json_value),
           CASE type WHEN 'int' THEN int_value IS NOT NULL WHEN 'long' THEN long_value IS NOT NULL
                     WHEN 'float' THEN float_value IS NOT NULL WHEN 'double' THEN double_value IS NOT NULL
                     WHEN 'boolean' THEN boolean_value IS NOT NULL WHEN 'string' THEN string_value IS NOT NULL
                     WHEN 'datetime' THEN datetime_value IS NOT NULL WHEN 'json' THEN json_value IS NOT NULL
           END
      FROM uns_meta.property_overrides
)
SELECT 'typed value columns disagree with the row''s type' AS check,
       format('%s metric %s key %L: type %s, null %s, %s column(s) set', tbl, metric_id, key, type, is_null,
              set_columns) AS detail
  FROM props
 WHERE (is_null AND set_columns <> 0) OR (NOT is_null AND (set_columns <> 1 OR NOT own_column_set))
UNION ALL
SELECT 'storage type does not match the Sparkplug type',
       format('metric %s key %L: Sparkplug type %s stored as %s', metric_id, key, sparkplug_type, type)
  FROM props
 WHERE tbl = 'metric_properties' AND type IS DISTINCT FROM CASE
         WHEN sparkplug_type IN (1, 2, 3, 5, 6) THEN 'int'
         WHEN sparkplug_type IN (4, 7, 8) THEN 'long'
         WHEN sparkplug_type = 9 THEN 'float'
         WHEN sparkplug_type = 10 THEN 'double'
         WHEN sparkplug_type = 11 THEN 'boolean'
         WHEN sparkplug_type IN (12, 14, 15) THEN 'string'
         WHEN sparkplug_type = 13 THEN 'datetime'
         WHEN sparkplug_type IN (20, 21) THEN 'json'
       END;
