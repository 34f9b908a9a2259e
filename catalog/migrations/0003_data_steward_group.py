"""The "Data steward" group: view everything, change properties (overrides), never identities."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Data steward"
VIEW_ONLY = [
    ("catalog", "device"), ("catalog", "metricproperty"), ("catalog", "metricversion"),
    ("catalog", "metricpathlineage"), ("ingest", "birthframe"),
]
# change_metric lets a steward open the metric form; every identity field on it is
# read-only in the admin, so what they can change there is the overrides inline.
EXTRA = [
    ("catalog", "view_metric"), ("catalog", "change_metric"),
    ("catalog", "view_propertyoverride"), ("catalog", "add_propertyoverride"),
    ("catalog", "change_propertyoverride"), ("catalog", "delete_propertyoverride"),
]


def create_group(apps, schema_editor):
    # Permissions are normally created after all migrations; make sure they exist now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    wanted = [(app, f"view_{model}") for app, model in VIEW_ONLY] + EXTRA
    perms = [Permission.objects.get(content_type__app_label=app, codename=code) for app, code in wanted]
    group.permissions.set(perms)


def drop_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0002_database_rules"),
        ("ingest", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_group, drop_group)]
