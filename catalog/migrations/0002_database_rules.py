"""Rules Django cannot express: PK (metric_id, key), typed-value CHECKs, triggers,
append-only versions, the CDC publication. SQL in catalog/sql/0002_rules*.sql."""

from pathlib import Path

from django.db import migrations

SQL = Path(__file__).resolve().parent.parent / "sql"


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]

    operations = [
        migrations.RunSQL(
            (SQL / "0002_rules.sql").read_text(),
            reverse_sql=(SQL / "0002_rules_reverse.sql").read_text(),
        ),
    ]
