-- Schema, enum and trigger functions the catalog tables rely on.
CREATE SCHEMA IF NOT EXISTS uns_meta;

CREATE TYPE uns_meta.property_type AS ENUM
    ('int', 'long', 'float', 'double', 'boolean', 'string', 'datetime', 'json');

-- updated_at follows every real UPDATE; created_at can never be rewritten.
CREATE FUNCTION uns_meta.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    NEW.created_at := OLD.created_at;
    RETURN NEW;
END;
$$;

CREATE FUNCTION uns_meta.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
