"""Default mapping (everything verbatim except Quality), batch timestamps, steward permissions."""

from django.contrib.auth.management import create_permissions
from django.db import migrations


def defaults(apps, schema_editor):
    Mapping = apps.get_model("canary", "PropertyMapping")
    Mapping.objects.get_or_create(
        key="Quality", defaults={"include": False, "note": "live value quality, not metadata"})
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.get(name="Data steward")
    wanted = [("canary", c) for c in ("view_propertymapping", "add_propertymapping", "change_propertymapping",
                                      "view_pushbatch", "view_syncstate")] + [("cdcsync", "view_pendingsync")]
    group.permissions.add(*[Permission.objects.get(content_type__app_label=a, codename=c) for a, c in wanted])


class Migration(migrations.Migration):
    dependencies = [("canary", "0001_initial"), ("cdcsync", "0001_initial"), ("catalog", "0003_data_steward_group")]

    operations = [
        migrations.RunSQL(
            "CREATE TRIGGER canary_push_batches_touch BEFORE UPDATE ON uns_meta.canary_push_batches"
            " FOR EACH ROW EXECUTE FUNCTION uns_meta.touch_updated_at()",
            reverse_sql="DROP TRIGGER canary_push_batches_touch ON uns_meta.canary_push_batches",
        ),
        migrations.RunPython(defaults, migrations.RunPython.noop),
    ]
