-- Database-enforced rules of the catalog (see catalog/models.py docstring).

-- metric_properties is keyed by (metric_id, key): the primary key, and therefore
-- the replica identity CDC sees on DELETE. `id` stays as a unique handle.
ALTER TABLE uns_meta.metric_properties DROP CONSTRAINT metric_properties_pkey;
ALTER TABLE uns_meta.metric_properties ADD CONSTRAINT metric_properties_pkey PRIMARY KEY (metric_id, key);
ALTER TABLE uns_meta.metric_properties ADD CONSTRAINT metric_properties_id_key UNIQUE (id);

-- Exactly the column of the row's type is set; all NULL only for an is_null value.
ALTER TABLE uns_meta.metric_properties ADD CONSTRAINT metric_properties_one_typed_value CHECK (
    CASE WHEN is_null
        THEN num_nonnulls(int_value, long_value, float_value, double_value, boolean_value,
                          string_value, datetime_value, json_value) = 0
        ELSE num_nonnulls(int_value, long_value, float_value, double_value, boolean_value,
                          string_value, datetime_value, json_value) = 1
             AND CASE type
                 WHEN 'int' THEN int_value IS NOT NULL
                 WHEN 'long' THEN long_value IS NOT NULL
                 WHEN 'float' THEN float_value IS NOT NULL
                 WHEN 'double' THEN double_value IS NOT NULL
                 WHEN 'boolean' THEN boolean_value IS NOT NULL
                 WHEN 'string' THEN string_value IS NOT NULL
                 WHEN 'datetime' THEN datetime_value IS NOT NULL
                 WHEN 'json' THEN json_value IS NOT NULL
             END
    END);
ALTER TABLE uns_meta.property_overrides ADD CONSTRAINT property_overrides_one_typed_value CHECK (
    CASE WHEN is_null
        THEN num_nonnulls(int_value, long_value, float_value, double_value, boolean_value,
                          string_value, datetime_value, json_value) = 0
        ELSE num_nonnulls(int_value, long_value, float_value, double_value, boolean_value,
                          string_value, datetime_value, json_value) = 1
             AND CASE type
                 WHEN 'int' THEN int_value IS NOT NULL
                 WHEN 'long' THEN long_value IS NOT NULL
                 WHEN 'float' THEN float_value IS NOT NULL
                 WHEN 'double' THEN double_value IS NOT NULL
                 WHEN 'boolean' THEN boolean_value IS NOT NULL
                 WHEN 'string' THEN string_value IS NOT NULL
                 WHEN 'datetime' THEN datetime_value IS NOT NULL
                 WHEN 'json' THEN json_value IS NOT NULL
             END
    END);
-- long_value holds Int64 and UInt64 exactly, and nothing else.
ALTER TABLE uns_meta.metric_properties ADD CONSTRAINT metric_properties_long_range
    CHECK (long_value BETWEEN -9223372036854775808 AND 18446744073709551615);

CREATE TRIGGER devices_touch BEFORE UPDATE ON uns_meta.devices
    FOR EACH ROW EXECUTE FUNCTION uns_meta.touch_updated_at();
CREATE TRIGGER metrics_touch BEFORE UPDATE ON uns_meta.metrics
    FOR EACH ROW EXECUTE FUNCTION uns_meta.touch_updated_at();
CREATE TRIGGER metric_properties_touch BEFORE UPDATE ON uns_meta.metric_properties
    FOR EACH ROW EXECUTE FUNCTION uns_meta.touch_updated_at();
CREATE TRIGGER property_overrides_touch BEFORE UPDATE ON uns_meta.property_overrides
    FOR EACH ROW EXECUTE FUNCTION uns_meta.touch_updated_at();

CREATE TRIGGER metric_versions_append_only BEFORE UPDATE OR DELETE ON uns_meta.metric_versions
    FOR EACH ROW EXECUTE FUNCTION uns_meta.refuse_change();

CREATE PUBLICATION uns_meta_pub FOR TABLE uns_meta.metrics, uns_meta.metric_properties;
