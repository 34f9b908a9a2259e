"""Bounded retries of a frame's processing: status ``failed`` and the time its next attempt is due."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("ingest", "0002_payload_lz4")]

    operations = [
        migrations.AddField(
            model_name="birthframe", name="retry_at", field=models.DateTimeField(blank=True, null=True)),
        migrations.AddField(model_name="birthframe", name="failures", field=models.IntegerField(db_default=0)),
        migrations.AlterField(
            model_name="birthframe", name="status",
            field=models.CharField(choices=[("received", "Received"), ("applied", "Applied"),
                                            ("duplicate", "Duplicate"), ("stale", "Stale"), ("rejected", "Rejected"),
                                            ("failed", "Failed")], default="received", max_length=16)),
    ]
