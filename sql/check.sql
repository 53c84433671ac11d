-- pgbroadcast SQL kit walkthrough / self-check.
--
--   psql -v ON_ERROR_STOP=1 -d scratch_db -f sql/check.sql
--
-- Run against a SCRATCH database on which migrations/V1__broadcast.sql has been
-- applied. It creates the order example, LISTENs on the default Postgres channel
-- "pgbroadcast" (so psql prints every signal after the command that caused it,
-- once its transaction commits), asserts that every misuse raises an error with
-- the expected message and a HINT, and drops what it created at the end.
-- Notification payloads cannot be asserted from SQL: read them.

\set ON_ERROR_STOP 1
\pset pager off
set client_min_messages = notice;
set plpgsql.check_asserts = on;

do $$
begin
    if to_regclass('public.orders') is not null or to_regclass('public.order_items') is not null then
        raise exception 'check.sql: tables orders/order_items already exist; run this against a scratch database';
    end if;
    if nullif(current_setting('pgbroadcast.channel', true), '') is not null then
        raise exception 'check.sql: pgbroadcast.channel is set; this walkthrough LISTENs on the default channel "pgbroadcast"';
    end if;
end $$;

\echo '== order example: tables + routes (order, order_status on orders; order on order_items)'
\ir examples/orders.sql
select * from broadcast.routes;

do $$
begin
    assert (select count(*) from broadcast.routes) = 8, 'expected 8 route rows';
    assert (select count(*) from broadcast.routes
             where table_name = 'orders'::regclass and route = 'order_status'
               and operation = 'UPDATE' and when_changed = '{status}') = 1, 'order_status route missing';
    assert (select event from broadcast.routes
             where table_name = 'order_items'::regclass and operation = 'TRUNCATE') = 'item_removed',
           'a mapped DELETE must also signal TRUNCATE';
end $$;

-- enabling again replaces the route (same rows, no duplicates)
select count(*) as order_rows from broadcast.enable('orders', 'order');
do $$ begin assert (select count(*) from broadcast.routes) = 8, 'enable must be idempotent'; end $$;

listen pgbroadcast;

\echo '== INSERT: one "created" per order, one "item_added" per distinct order_id'
insert into orders (customer) values ('alice'), ('bob');
insert into order_items (order_id, sku, quantity) values (1, 'tea', 1), (1, 'cake', 2), (2, 'tea', 1);

\echo '== status change: "updated" AND "status_changed"'
update orders set status = 'paid' where id = 1;

\echo '== other column: only "updated"'
update orders set customer = 'Alice' where id = 1;

\echo '== ROLLBACK: nothing'
begin;
update orders set status = 'cancelled';
rollback;

\echo '== two updates of one row in one transaction: one "updated" (Postgres de-duplicates)'
begin;
update orders set customer = 'A.' where id = 1;
update orders set customer = 'A' where id = 1;
commit;

\echo '== bulk: 500 rows > max_rows 100: ONE channel-wide signal per route with "rows"'
insert into orders (customer) select 'bulk ' || g from generate_series(1, 500) g;
update orders set status = 'archived' where customer like 'bulk %';

\echo '== emit: extra kept; 20 kB extra dropped ("extra_dropped"), the write still commits'
select broadcast.emit('order', 'printed', '123', '{"printer": "kitchen-2"}');
select broadcast.emit('order', 'printed', '124', jsonb_build_object('blob', repeat('x', 20000)));
select broadcast.emit('order', 'refresh', null);

\echo '== DELETE (cascades to items) and TRUNCATE (channel-wide)'
delete from orders where id = 2;
truncate orders cascade;

unlisten *;

\echo '== misuse must raise with a clear message and a HINT'
create table check_nopk (a int, b int);
create table check_composite (a int, b int, primary key (a, b));
create view check_view as select * from orders;

create function pg_temp.expect_error(stmt text, expected text) returns void
language plpgsql as $$
declare
    msg text;
    hnt text;
begin
    begin
        execute stmt;
    exception when others then
        get stacked diagnostics msg = message_text, hnt = pg_exception_hint;
        if strpos(msg, expected) = 0 then
            raise exception 'check failed: %  raised "%", expected "%"', stmt, msg, expected;
        end if;
        if coalesce(hnt, '') = '' then
            raise exception 'check failed: %  raised "%" without a HINT', stmt, msg;
        end if;
        raise notice 'ok: %  ->  % (HINT: %)', stmt, msg, hnt;
        return;
    end;
    raise exception 'check failed: %  did not raise (expected "%")', stmt, expected;
end $$;

select count(*) as misuse_cases_raised
  from (values
    ($$select broadcast.enable('check_nopk', 'x')$$,
     'has no primary key'),
    ($$select broadcast.enable('check_composite', 'x')$$,
     'composite primary key'),
    ($$select broadcast.enable('orders', 'order', id_column => 'nope')$$,
     'id_column nope does not exist'),
    ($$select broadcast.enable('orders', 'order', when_changed => '{nope}')$$,
     'when_changed column nope does not exist'),
    ($$select broadcast.enable('check_nopk', 'x', id_column => 'a', when_changed => '{b}')$$,
     'needs a primary key'),
    ($$select broadcast.enable('orders', 'order', events => '{"UPSERT": "x"}')$$,
     'unknown operation "UPSERT"'),
    ($$select broadcast.enable('orders', 'order', events => '{"insert": "a", "INSERT": "b"}')$$,
     'more than once'),
    ($$select broadcast.enable('orders', 'order', events => '{}')$$,
     'non-empty JSON object'),
    ($$select broadcast.enable('orders', 'order', events => '{"INSERT": 1}')$$,
     'must be a JSON string'),
    ($$select broadcast.enable('orders', 'order', events => '{"INSERT": "new order"}')$$,
     'invalid event name'),
    ($$select broadcast.enable('orders', 'order', events => '{"INSERT": "resync"}')$$,
     'reserved'),
    ($$select broadcast.enable('orders', 'order', events => '{"INSERT": "created"}', when_changed => '{status}')$$,
     'maps no UPDATE'),
    ($$select broadcast.enable('orders', 'order:1')$$,
     'invalid channel name'),
    ($$select broadcast.enable('orders', '')$$,
     'invalid channel name'),
    ($$select broadcast.enable('orders', 'order', name => repeat('r', 41))$$,
     'invalid route name'),
    ($$select broadcast.enable('orders', 'order', max_rows => 0)$$,
     'max_rows must be at least 1'),
    ($$select broadcast.enable('check_view', 'x')$$,
     'is not a table'),
    ($$select broadcast.emit('a:b', 'x', '1')$$,
     'invalid channel name'),
    ($$select broadcast.emit('order', 'resync', '1')$$,
     'reserved'),
    ($$select broadcast.emit('order', 'printed', '1', '[1, 2]')$$,
     'extra must be a JSON object')
  ) as c(stmt, expected),
  lateral pg_temp.expect_error(c.stmt, c.expected);

\echo '== disable: number of triggers dropped; disabling what is not enabled returns 0'
do $$
begin
    assert broadcast.disable('order_items', 'order') = 3, 'expected 3 triggers dropped';
    assert broadcast.disable('order_items', 'order') = 0, 'second disable must be a no-op';
    assert broadcast.disable('check_nopk') = 0, 'disable on a table without routes must return 0';
    assert broadcast.disable('orders') = 5, 'expected 5 triggers dropped (order: 4, order_status: 1)';
    assert (select count(*) from broadcast.routes) = 0, 'routes should be empty';
end $$;

drop view check_view;
drop table check_nopk, check_composite, order_items, orders;
\echo '== all checks passed'
