"""Per-tag isolation (docs/architecture.md, "Push and acknowledgement"): a batch Canary refuses is
split into two child batches (``parent_id``, status ``split``) until the refused tags are known;
a refused one-tag batch quarantines its metric in ``canary_quarantine``. Data stewards may view
the quarantine and push its tags again."""

import django.db.models.functions.datetime
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

STEWARD_PERMISSIONS = ("view_quarantine", "release_quarantine")


def steward_permissions(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.get(name="Data steward")
    group.permissions.add(*Permission.objects.filter(content_type__app_label="canary",
                                                     codename__in=STEWARD_PERMISSIONS))


def no_steward_permissions(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.filter(name="Data steward").first()
    if group is not None:
        group.permissions.remove(*Permission.objects.filter(content_type__app_label="canary",
                                                            codename__in=STEWARD_PERMISSIONS))


class Migration(migrations.Migration):

    dependencies = [
        ("canary", "0004_inflight_without_fk"),
    ]

    operations = [
        migrations.CreateModel(
            name="Quarantine",
            fields=[
                ("metric_id", models.BigIntegerField(primary_key=True, serialize=False)),
                ("canary_id", models.TextField()),
                ("reason", models.TextField(help_text="Canary's error messages")),
                ("batch_id", models.BigIntegerField(help_text="the one-tag batch Canary refused last", null=True)),
                ("quarantined_at", models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                ("attempts", models.IntegerField(default=1, help_text="refusals in a row")),
            ],
            options={
                "verbose_name": "quarantined tag",
                "db_table": 'uns_meta"."canary_quarantine',
                "ordering": ["-quarantined_at"],
                "permissions": [("release_quarantine", "Can push quarantined tags again")],
            },
        ),
        migrations.AddField(
            model_name="pushbatch",
            name="parent_id",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="pushbatch",
            name="status",
            field=models.CharField(choices=[("queued", "Queued"), ("sending", "Sending"), ("acked", "Acked"),
                                            ("failed", "Failed"), ("rejected", "Rejected"), ("split", "Split")],
                                   db_index=True, default="queued", max_length=16),
        ),
        migrations.RunPython(steward_permissions, no_steward_permissions),
    ]
