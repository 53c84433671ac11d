-- pgbroadcast SQL kit, step 5: only the kit sends `wal` signals.
--
-- pg_logical_emit_message is executable by PUBLIC out of the box, so any role
-- could put a message with the kit's prefix in the WAL. The kit takes that
-- right from PUBLIC (every signature: PostgreSQL 17 adds a `flush` argument)
-- and sends through broadcast._notify, which now runs with its owner's rights
-- (SECURITY DEFINER; its search_path is pinned, and it runs no dynamic SQL).
-- A role that must still emit logical messages of its own gets the right back
-- by name: grant execute on function pg_logical_emit_message(boolean, text, text) to that_role;
-- Run by a role that may not revoke it (not a superuser), the revoke is a
-- warning and changes nothing; the rest still applies.
do $$
declare
    fn regprocedure;
begin
    for fn in
        select p.oid::regprocedure
          from pg_catalog.pg_proc p
         where p.proname = 'pg_logical_emit_message'
           and p.pronamespace = 'pg_catalog'::regnamespace
    loop
        execute format('revoke execute on function %s from public', fn);
    end loop;
end
$$;

alter function broadcast._notify(text, text, text, bigint, text, text, text, jsonb, bigint) security definer;
