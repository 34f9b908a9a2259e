"""Ledger payloads: lz4 TOAST compression where the server has it (faster than pglz to read back,
in slices too: apply reads a payload in slices to bound its memory)."""

from django.db import migrations

SQL = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)) THEN
        ALTER TABLE uns_meta.birth_frames ALTER COLUMN payload SET COMPRESSION lz4;
    END IF;
END $$;
"""


class Migration(migrations.Migration):
    dependencies = [("ingest", "0001_initial")]

    operations = [migrations.RunSQL(SQL, reverse_sql=migrations.RunSQL.noop)]
