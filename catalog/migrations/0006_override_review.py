"""Needs review: each override keeps the edge value it was set against (``edge_seen``).

A trigger fills ``edge_seen`` on every insert and update of an override, whichever path writes it
(the metric page, bulk correction, an import), with ``uns_meta.edge_snapshot(metric, key)``: the
edge row's type and value as jsonb, NULL when the edge sends no such key. An override needs review
when its ``edge_seen`` is distinct from the edge's snapshot now (catalog.review; docs/catalog.md).
Existing overrides are taken as reviewed.
"""

from django.db import migrations, models

FORWARD = """
CREATE FUNCTION uns_meta.edge_snapshot(p_metric_id bigint, p_key text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('type', p.type::text, 'value', CASE WHEN p.is_null THEN 'null'::jsonb
        ELSE CASE p.type::text
            WHEN 'int' THEN to_jsonb(p.int_value) WHEN 'long' THEN to_jsonb(p.long_value)
            WHEN 'float' THEN to_jsonb(p.float_value) WHEN 'double' THEN to_jsonb(p.double_value)
            WHEN 'boolean' THEN to_jsonb(p.boolean_value) WHEN 'string' THEN to_jsonb(p.string_value)
            WHEN 'datetime' THEN to_jsonb(p.datetime_value) ELSE p.json_value END END)
      FROM uns_meta.metric_properties p WHERE p.metric_id = p_metric_id AND p.key = p_key
$$;
CREATE FUNCTION uns_meta.override_edge_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.edge_seen := uns_meta.edge_snapshot(NEW.metric_id, NEW.key);
    RETURN NEW;
END $$;
CREATE TRIGGER property_overrides_edge_seen BEFORE INSERT OR UPDATE ON uns_meta.property_overrides
    FOR EACH ROW EXECUTE FUNCTION uns_meta.override_edge_seen();
UPDATE uns_meta.property_overrides SET edge_seen = uns_meta.edge_snapshot(metric_id, key);
"""
REVERSE = """
DROP TRIGGER property_overrides_edge_seen ON uns_meta.property_overrides;
DROP FUNCTION uns_meta.override_edge_seen();
DROP FUNCTION uns_meta.edge_snapshot(bigint, text);
"""


class Migration(migrations.Migration):
    dependencies = [("catalog", "0005_lifecycle")]

    operations = [
        migrations.AddField(
            model_name="propertyoverride", name="edge_seen",
            field=models.JSONField(editable=False, null=True,
                                   help_text="the edge's type and value when the override was last set or kept"),
        ),
        migrations.RunSQL(FORWARD, reverse_sql=REVERSE),
    ]
