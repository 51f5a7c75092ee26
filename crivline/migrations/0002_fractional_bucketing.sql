-- The fractional bucketing scheme of an environment's flag set (docs/flag-format.md,
-- "fractional"): it travels to the edge in the flag set's metadata.
-- Environments that exist when this runs keep v2, the only scheme before it, so an
-- upgrade re-buckets nobody; environments created afterwards get flagd's current v3.
ALTER TABLE environments
    ADD COLUMN fractional_bucketing text NOT NULL DEFAULT 'v2'
        CHECK (fractional_bucketing IN ('v2', 'v3'));
ALTER TABLE environments ALTER COLUMN fractional_bucketing SET DEFAULT 'v3';
