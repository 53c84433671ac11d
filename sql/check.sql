-- pgbroadcast SQL kit walkthrough / self-check.
--
--   psql -v ON_ERROR_STOP=1 -d scratch_db -f sql/check.sql
--
-- Run against a SCRATCH database on which migrations/ (V1__broadcast.sql and
-- V2__authorize.sql) have been applied. It creates the order example, LISTENs on
-- the default Postgres channel "pgbroadcast" (so psql prints every signal after
-- the command that caused it, once its transaction commits), asserts that every
-- misuse raises an error with the expected message and a HINT, checks
-- broadcast.grant / authorize / revoke, and drops what it created at the end.
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
    if exists (select 1 from broadcast.grants) then
        raise exception 'check.sql: broadcast.grants is not empty; run this against a scratch database';
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

\echo '== authorization: broadcast.grant / broadcast.authorize / broadcast.revoke'
select count(*) as grant_calls
  from (values
    ('role',   'kitchen', 'order'),              -- role = kitchen: channel order, all its entities
    ('role',   'kitchen', 'order'),              -- again: idempotent
    ('roles',  'admin',   '*'),                  -- "roles" array containing admin: every channel
    ('sub',    '*',       'user:{sub}'),         -- every user: user:<own sub> only
    ('tenant', '*',       'menu:*'),             -- any tenant: channel menu
    ('tenant', '42',      'invoice:{tenant}'),   -- tenant 42: invoice:42 only
    ('sub',    'carol',   'order:7')             -- one entity
  ) as g(claim, value, pattern),
  lateral broadcast.grant(g.claim, g.value, g.pattern);
select claim, value, pattern from broadcast.grants order by id;

do $$
declare
    kitchen constant jsonb := '{"sub": "k1", "role": "kitchen"}';
    admin   constant jsonb := '{"sub": "a1", "roles": ["kitchen", "admin"]}';
begin
    assert (select count(*) from broadcast.grants) = 6, 'grant must be idempotent';
    -- (claim, value) -> pattern '<channel>': the channel and every entity in it
    assert broadcast.authorize(kitchen, 'order', null), 'kitchen: whole order channel';
    assert broadcast.authorize(kitchen, 'order', '5'), 'kitchen: an order entity';
    assert not broadcast.authorize(kitchen, 'menu', null), 'kitchen: not menu';
    assert not broadcast.authorize('{"role": "waiter"}', 'order', '5'), 'waiter: nothing';
    -- array claims match when they contain the value; '*' pattern = every channel
    assert broadcast.authorize(admin, 'anything', null), 'admin via roles array: every channel';
    assert broadcast.authorize(admin, 'user', 'bob'), 'admin via roles array: any entity';
    assert not broadcast.authorize('{"roles": ["kitchen"]}', 'anything', null), 'roles without admin';
    assert not broadcast.authorize('{"role": ["admin"]}', 'anything', null), 'other claim name';
    -- 'user:{sub}': own entity only, never the whole channel; missing/null claim: nothing
    assert broadcast.authorize('{"sub": "alice"}', 'user', 'alice'), 'alice: own entity';
    assert not broadcast.authorize('{"sub": "alice"}', 'user', 'bob'), 'alice: not bob';
    assert not broadcast.authorize('{"sub": "alice"}', 'user', null), 'alice: not the whole user channel';
    assert not broadcast.authorize('{"sub": "alice"}', 'user', '{sub}'), 'a literal "{sub}" entity is no placeholder';
    assert not broadcast.authorize('{"sub": null}', 'user', 'null'), 'null sub: nothing';
    assert not broadcast.authorize('{"name": "alice"}', 'user', 'alice'), 'no sub: nothing';
    -- value '*': any value of a present claim; numbers compare by their text form
    assert broadcast.authorize('{"tenant": 7}', 'menu', null), 'any tenant: menu';
    assert broadcast.authorize('{"tenant": "x"}', 'menu', '3'), 'any tenant: menu entity';
    assert not broadcast.authorize('{"tenant": null}', 'menu', null), 'null tenant is absent';
    assert not broadcast.authorize('{}', 'menu', null), 'no tenant: no menu';
    assert broadcast.authorize('{"tenant": 42}', 'invoice', '42'), 'numeric tenant 42: own invoice';
    assert not broadcast.authorize('{"tenant": 42}', 'invoice', '43'), 'tenant 42: not invoice 43';
    assert not broadcast.authorize('{"tenant": 41}', 'invoice', '41'), 'tenant 41: no grant';
    -- 'order:7': that entity only
    assert broadcast.authorize('{"sub": "carol"}', 'order', '7'), 'carol: order 7';
    assert not broadcast.authorize('{"sub": "carol"}', 'order', '8'), 'carol: not order 8';
    assert not broadcast.authorize('{"sub": "carol"}', 'order', null), 'carol: not the whole channel';
    -- odd input: false, never NULL or an error
    assert broadcast.authorize(null, 'order', null) = false, 'NULL claims';
    assert broadcast.authorize('[1, 2]', 'order', null) = false, 'array claims';
    assert broadcast.authorize('"kitchen"', 'order', null) = false, 'string claims';
    assert broadcast.authorize(kitchen, null, null) = false, 'NULL channel';
    assert broadcast.authorize(kitchen, 'order:5', null) = false, 'a topic is no channel';
    -- revoke: rows deleted; 0 is not an error; NULL pattern = all of (claim, value)
    assert broadcast.revoke('role', 'kitchen', 'order') = 1, 'revoke one grant';
    assert broadcast.revoke('role', 'kitchen', 'order') = 0, 'revoke again: 0';
    assert not broadcast.authorize(kitchen, 'order', '5'), 'kitchen after revoke';
    assert broadcast.revoke('sub', 'carol', 'order:8') = 0, 'revoke a grant that does not exist';
    assert broadcast.revoke('sub', 'carol') = 1, 'revoke all of sub = carol';
    assert not broadcast.authorize('{"sub": "carol"}', 'order', '7'), 'carol after revoke';
end $$;

select count(*) as authz_misuse_cases_raised
  from (values
    ($$select broadcast.grant('role', 'kitchen', 'order:')$$,
     'invalid pattern'),
    ($$select broadcast.grant('role', 'kitchen', 'bad channel')$$,
     'invalid pattern'),
    ($$select broadcast.grant('role', 'kitchen', 'user:{sub')$$,
     'invalid pattern'),
    ($$select broadcast.grant('role', 'kitchen', null)$$,
     'invalid pattern'),
    ($$select broadcast.grant('', 'kitchen', 'order')$$,
     'claim must be a non-empty claim name'),
    ($$select broadcast.grant('role', '', 'order')$$,
     'value must be non-empty'),
    ($$select broadcast.revoke(null, 'kitchen')$$,
     'must not be NULL')
  ) as c(stmt, expected),
  lateral pg_temp.expect_error(c.stmt, c.expected);

do $$
begin
    assert broadcast.revoke('roles', 'admin') + broadcast.revoke('sub', '*')
         + broadcast.revoke('tenant', '*') + broadcast.revoke('tenant', '42') = 4, 'expected 4 grants left';
    assert (select count(*) from broadcast.grants) = 0, 'grants should be empty';
end $$;

drop view check_view;
drop table check_nopk, check_composite, order_items, orders;
\echo '== all checks passed'
