-- What one single-row INSERT costs, in µs of the backend's time: with no
-- trigger, with a minimal trigger that emits one logical decoding message,
-- and with a kit route under each transport. 20,000 inserts in one
-- transaction each, so no commit is counted. Run against a database with
-- the SQL kit (e.g. the private Postgres `pgbroadcast serve` prints):
--   psql "$URL" -q -f bench/sql/trigger_cost.sql
set client_min_messages = warning;
create temporary table t_none (id bigserial primary key, slot int not null);
create table pg_temp.t_kit (id bigserial primary key, slot int not null);
\o /dev/null
select broadcast.enable('pg_temp.t_kit', 'trigger_cost', id_column => 'slot', events => '{"INSERT": "tick"}');
\o
create temporary table t_min (id bigserial primary key, slot int not null);
create function pg_temp.f_min() returns trigger language plpgsql as
    $$ begin perform pg_logical_emit_message(true, 'trigger_cost', '{"a":1}'); return null; end $$;
create trigger tr_min after insert on t_min for each row execute function pg_temp.f_min();
create function pg_temp.per_insert(tbl text) returns numeric language plpgsql as $$
declare t0 timestamptz := clock_timestamp();
begin
    for i in 1..20000 loop
        execute format('insert into %s (slot) values ($1)', tbl) using i % 16;
    end loop;
    return round((extract(epoch from clock_timestamp() - t0) * 1e6 / 20000)::numeric, 1);
end $$;
select 'no trigger' as insert, pg_temp.per_insert('pg_temp.t_none') as µs
union all select 'minimal trigger: pg_logical_emit_message', pg_temp.per_insert('pg_temp.t_min')
union all select 'kit route, transport notify', pg_temp.per_insert('pg_temp.t_kit');
set pgbroadcast.transport = 'wal';
select 'kit route, transport wal' as insert, pg_temp.per_insert('pg_temp.t_kit') as µs;
