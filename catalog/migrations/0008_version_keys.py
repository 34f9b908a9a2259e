"""History as key-level rows: a read-only view over metric_versions' key-level diffs
(docs/steward-guide.md, "History"); one row per key of each version."""

from django.db import migrations, models

from catalog.permissions import grant_steward_view

VIEW = """
CREATE VIEW uns_meta.metric_version_keys AS
SELECT v.id::text || ':' || k.part || ':' || k.key AS id,
       v.id AS version_id, v.metric_id, v.kind, v.changed_by, v.changed_at,
       k.part, k.key, k.old, k.new
FROM uns_meta.metric_versions v
CROSS JOIN LATERAL (
    -- the metric's own fields: [old, new] when changed, the value itself when created
    SELECT f.part, f.part AS key,
           CASE WHEN jsonb_typeof(v.change -> f.part) = 'array' AND jsonb_array_length(v.change -> f.part) = 2
                THEN v.change -> f.part -> 0 END AS old,
           CASE WHEN jsonb_typeof(v.change -> f.part) = 'array' AND jsonb_array_length(v.change -> f.part) = 2
                THEN v.change -> f.part -> 1 ELSE v.change -> f.part END AS new
    FROM unnest(ARRAY['name', 'uns_path', 'datatype']) AS f(part)
    WHERE v.change ? f.part
    UNION ALL
    -- properties and overrides: {key: value} for added/removed, {key: [old, new]} for changed
    SELECT p.part, e.key,
           CASE WHEN p.part IN ('added', 'override_added') THEN NULL
                WHEN p.part IN ('removed', 'override_removed') THEN e.value
                WHEN jsonb_typeof(e.value) = 'array' AND jsonb_array_length(e.value) = 2 THEN e.value -> 0 END,
           CASE WHEN p.part IN ('added', 'override_added') THEN e.value
                WHEN p.part IN ('removed', 'override_removed') THEN NULL
                WHEN jsonb_typeof(e.value) = 'array' AND jsonb_array_length(e.value) = 2 THEN e.value -> 1
                ELSE e.value END
    FROM unnest(ARRAY['added', 'changed', 'removed', 'override_added', 'override_changed',
                      'override_removed', 'override_kept']) AS p(part)
    CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(v.change -> p.part) = 'object'
                                       THEN v.change -> p.part ELSE '{}'::jsonb END) AS e
) AS k
"""


def grant_view(apps, schema_editor):
    grant_steward_view(apps, "view_versionkey")


class Migration(migrations.Migration):
    dependencies = [("catalog", "0007_admin_scale_bulk")]

    operations = [
        migrations.RunSQL(VIEW, "DROP VIEW uns_meta.metric_version_keys"),
        migrations.CreateModel(
            name="VersionKey",
            fields=[
                ("id", models.TextField(primary_key=True, serialize=False)),
                ("kind", models.CharField(max_length=16)),
                ("changed_by", models.TextField()),
                ("changed_at", models.DateTimeField()),
                ("part", models.TextField()),
                ("key", models.TextField()),
                ("old", models.JSONField(null=True)),
                ("new", models.JSONField(null=True)),
                ("version", models.ForeignKey(db_constraint=False, on_delete=models.DO_NOTHING,
                                              related_name="+", to="catalog.metricversion")),
                ("metric", models.ForeignKey(db_constraint=False, on_delete=models.DO_NOTHING,
                                             related_name="+", to="catalog.metric")),
            ],
            options={"db_table": 'uns_meta"."metric_version_keys', "managed": False,
                     "ordering": ["-version", "id"]},
        ),
        migrations.RunPython(grant_view, migrations.RunPython.noop),
    ]
