-- pgbroadcast SQL kit, step 7: the database knows its kit version.
--
-- broadcast.kit_version() returns the version of the kit installed here,
-- whoever installed it (`pgbroadcast migrate`, or a team's own migration
-- tool running the output of `pgbroadcast sql`). `pgbroadcast serve
-- --no-migrate` reads it to refuse a kit older or newer than its own, and
-- `pgbroadcast migrate` to adopt a kit another tool installed.
--
-- Every later step replaces this function with its own number, in the same
-- form: create or replace function broadcast.kit_version() ... select <N>.
-- Idempotent and transaction-safe, as every step is.

create or replace function broadcast.kit_version()
returns integer
language sql
immutable
parallel safe
as $fn$
select 7
$fn$;

comment on function broadcast.kit_version() is
'pgbroadcast: the version of the SQL kit installed in this database (each step of the kit replaces this function with its own number).';

grant execute on function broadcast.kit_version() to public;
