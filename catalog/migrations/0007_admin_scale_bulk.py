"""The steward's workbench at 10^6 metrics (docs/admin-scale.md): pg_trgm (a trusted extension, so
the database owner may create it) and trigram indexes for the admin's substring search, indexes
for the plant/device filters in path order; bulk changes, viewable by the "Data steward" group."""

import django.contrib.postgres.indexes
import django.db.models.deletion
import django.db.models.functions.datetime
import django.db.models.functions.text
from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations, models

from catalog.permissions import grant_steward_view

TRGM = ("uns_path", "name", "canary_id")


def grant_view(apps, schema_editor):
    grant_steward_view(apps, "view_bulkchange")


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0006_override_review"),
    ]

    operations = [
        TrigramExtension(),
        migrations.CreateModel(
            name="BulkChange",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "action",
                    models.CharField(choices=[("set", "Set"), ("clear", "Clear"), ("import", "Import")], max_length=16),
                ),
                ("key", models.TextField(blank=True, default="")),
                ("value", models.JSONField(blank=True, null=True)),
                ("selection", models.TextField(blank=True, default="")),
                ("why", models.TextField()),
                ("metrics", models.IntegerField(default=0)),
                ("changed_by", models.TextField()),
                (
                    "changed_at",
                    models.DateTimeField(db_default=django.db.models.functions.datetime.Now(), editable=False),
                ),
            ],
            options={
                "db_table": 'uns_meta"."bulk_changes',
                "ordering": ["-id"],
            },
        ),
        # Django writes OpClass inside an extra pair of parentheses, which PostgreSQL refuses here.
        migrations.RunSQL(
            [f"CREATE INDEX metrics_{c}_trgm ON uns_meta.metrics USING gin (upper({c}) gin_trgm_ops)" for c in TRGM],
            reverse_sql=[f"DROP INDEX uns_meta.metrics_{c}_trgm" for c in TRGM],
            state_operations=[
                migrations.AddIndex(
                    model_name="metric",
                    index=django.contrib.postgres.indexes.GinIndex(
                        django.contrib.postgres.indexes.OpClass(
                            django.db.models.functions.text.Upper("uns_path"), name="gin_trgm_ops"
                        ),
                        name="metrics_uns_path_trgm",
                    ),
                ),
                migrations.AddIndex(
                    model_name="metric",
                    index=django.contrib.postgres.indexes.GinIndex(
                        django.contrib.postgres.indexes.OpClass(
                            django.db.models.functions.text.Upper("name"), name="gin_trgm_ops"
                        ),
                        name="metrics_name_trgm",
                    ),
                ),
                migrations.AddIndex(
                    model_name="metric",
                    index=django.contrib.postgres.indexes.GinIndex(
                        django.contrib.postgres.indexes.OpClass(
                            django.db.models.functions.text.Upper("canary_id"), name="gin_trgm_ops"
                        ),
                        name="metrics_canary_id_trgm",
                    ),
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="metric",
            index=models.Index(fields=["plant", "uns_path"], name="metrics_plant_path_idx"),
        ),
        migrations.AddIndex(
            model_name="metric",
            index=models.Index(fields=["device", "uns_path"], name="metrics_device_path_idx"),
        ),
        migrations.AddIndex(
            model_name="metric",
            index=models.Index(fields=["device", "plant"], name="metrics_device_plant_idx"),
        ),
        migrations.AddIndex(
            model_name="metric",
            index=models.Index(
                condition=models.Q(("retired_at__isnull", False)),
                fields=["uns_path"],
                name="metrics_retired_path_idx",
            ),
        ),
        # Django leaves the foreign key's own index in place when db_index becomes False.
        migrations.RunSQL(
            "DROP INDEX IF EXISTS uns_meta.metrics_device_id_d2665da5",
            reverse_sql="CREATE INDEX IF NOT EXISTS metrics_device_id_d2665da5 ON uns_meta.metrics (device_id)",
        ),
        migrations.AlterField(
            model_name="metric",
            name="device",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="metrics",
                to="catalog.device",
            ),
        ),
        migrations.CreateModel(
            name="StagedImport",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("filename", models.TextField()),
                ("rows", models.JSONField()),
                ("uploaded_by", models.TextField()),
                (
                    "uploaded_at",
                    models.DateTimeField(db_default=django.db.models.functions.datetime.Now(), editable=False),
                ),
            ],
            options={
                "db_table": 'uns_meta"."staged_imports',
            },
        ),
        migrations.RunPython(grant_view, migrations.RunPython.noop),
    ]
