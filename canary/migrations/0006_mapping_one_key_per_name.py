"""One included key per Canary property name: two keys under one name would overwrite each other."""

from django.db import migrations, models
from django.db.models.functions import Coalesce, NullIf


class Migration(migrations.Migration):
    dependencies = [("canary", "0005_quarantine")]

    operations = [
        migrations.AddConstraint(
            model_name="propertymapping",
            constraint=models.UniqueConstraint(
                Coalesce(NullIf("canary_name", models.Value("")), "key"), condition=models.Q(include=True),
                name="canary_property_map_one_key_per_name",
                violation_error_message="another included key is already sent under this Canary name"),
        ),
    ]
