"""Audit of property-mapping changes (who, when, before/after); data stewards may view it."""

import django.db.models.functions.datetime
from django.contrib.auth.management import create_permissions
from django.db import migrations, models


def steward_may_view(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0)
        app_config.models_module = None
    group = apps.get_model("auth", "Group").objects.filter(name="Data steward").first()
    if group is not None:
        group.permissions.add(*apps.get_model("auth", "Permission").objects.filter(
            content_type__app_label="canary", codename="view_mappingchange"))


class Migration(migrations.Migration):

    dependencies = [
        ('canary', '0008_sync_state_unconfirmed'),
    ]

    operations = [
        migrations.CreateModel(
            name='MappingChange',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('key', models.TextField()),
                ('action', models.CharField(max_length=16)),
                ('before', models.JSONField(null=True)),
                ('after', models.JSONField(null=True)),
                ('changed_by', models.TextField()),
                ('changed_at', models.DateTimeField(db_default=django.db.models.functions.datetime.Now(),
                                                    editable=False)),
            ],
            options={
                'verbose_name': 'property mapping change',
                'db_table': 'uns_meta"."canary_property_map_changes',
                'ordering': ['-id'],
            },
        ),
        migrations.RunPython(steward_may_view, migrations.RunPython.noop),
    ]
