"""Drop canary_inflight's foreign key to canary_push_batches for real: 0004 meant to, but Django does
not find constraints of tables named with a schema (`uns_meta"."…`), so it changed nothing. Its
rows are written in the transaction that writes their batch; the deferred check per row cost a
third of the flush's insert time."""

from django.db import migrations

SQL = """
DO $$
DECLARE fk record;
BEGIN
    FOR fk IN SELECT conname FROM pg_constraint
               WHERE conrelid = 'uns_meta.canary_inflight'::regclass AND contype = 'f' LOOP
        EXECUTE format('ALTER TABLE uns_meta.canary_inflight DROP CONSTRAINT %I', fk.conname);
    END LOOP;
END $$;
"""


class Migration(migrations.Migration):
    dependencies = [("canary", "0006_mapping_one_key_per_name")]

    operations = [migrations.RunSQL(SQL, reverse_sql=migrations.RunSQL.noop)]
