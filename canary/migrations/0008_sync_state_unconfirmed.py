# The sync state may hold a metric never acknowledged (keys unconfirmed): acked_at NULL.

import django.db.models.functions.datetime
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('canary', '0007_drop_inflight_foreign_key'),
    ]

    operations = [
        migrations.AlterField(
            model_name='syncstate',
            name='acked_at',
            field=models.DateTimeField(db_default=django.db.models.functions.datetime.Now(), null=True),
        ),
    ]
