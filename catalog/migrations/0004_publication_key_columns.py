"""The publication carries only the columns the CDC consumer reads: the metric id and the key.

Every row change still reaches the slot (TC-15: exactly metrics and metric_properties), but a
100,000-metric birth's 1.1M changes come out of logical decoding as 33 MB instead of 190 MB
(docs/cdc.md, "Decoding speed"). The key columns are the replica identity, so updates and
deletes stay publishable.
"""

from django.db import migrations

FORWARD = "ALTER PUBLICATION uns_meta_pub SET TABLE uns_meta.metrics (id), uns_meta.metric_properties (metric_id, key)"
REVERSE = "ALTER PUBLICATION uns_meta_pub SET TABLE uns_meta.metrics, uns_meta.metric_properties"


class Migration(migrations.Migration):
    dependencies = [("catalog", "0003_data_steward_group")]

    operations = [migrations.RunSQL(FORWARD, reverse_sql=REVERSE)]
