"""Push batch bodies as text (sent verbatim: no jsonb parse on write, no re-rendering on send),
and lz4 for the large batch columns where the server has it (PostgreSQL ≥ 14 built with lz4, as
Debian's and the official images are): several times cheaper than pglz to write and read."""

from django.db import migrations, models

LZ4 = """
DO $$
BEGIN
    ALTER TABLE uns_meta.canary_push_batches ALTER COLUMN body SET COMPRESSION lz4,
                                              ALTER COLUMN targets SET COMPRESSION lz4;
    ALTER TABLE uns_meta.canary_sync_state ALTER COLUMN properties SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available on this server: push batches keep the default compression';
END $$;
"""

DEFAULT = """
ALTER TABLE uns_meta.canary_push_batches ALTER COLUMN body SET COMPRESSION default,
                                          ALTER COLUMN targets SET COMPRESSION default;
ALTER TABLE uns_meta.canary_sync_state ALTER COLUMN properties SET COMPRESSION default;
"""


class Migration(migrations.Migration):
    dependencies = [("canary", "0002_defaults")]

    operations = [
        migrations.AlterField(model_name="pushbatch", name="body", field=models.TextField()),
        migrations.RunSQL(LZ4, reverse_sql=DEFAULT),
    ]
