create schema if not exists broadcast;

-- pgbroadcast SQL kit: table changes and explicit emits -> pg_notify -> WebSocket clients.
-- See sql/README.md. Plain SQL, transaction-safe (no CONCURRENTLY, no VACUUM).
-- Every step of the kit is idempotent: run again on a database that has it,
-- it succeeds and changes nothing (create or replace, if not exists, grants),
-- so any migration tool may apply it, and `pgbroadcast migrate` after it.

grant usage on schema broadcast to public;

-------------------------------------------------------------------------------
-- Name validation (shared by enable and emit)
-------------------------------------------------------------------------------
create or replace function broadcast._check_name(kind text, val text)
returns void
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $fn$
begin
    if kind = 'channel' then
        if val is null or val !~ '^[A-Za-z0-9_./-]{1,64}$' then
            raise exception using
                errcode = 'invalid_parameter_value',
                message = format('broadcast: invalid channel name %s', coalesce(quote_literal(val), 'NULL')),
                hint    = 'A channel is 1-64 characters from A-Z a-z 0-9 _ . / - (no ":", which WebSocket clients use in "channel:entity"), e.g. ''order''.';
        end if;
    elsif kind = 'route' then
        if val is null or val !~ '^[A-Za-z0-9_./-]{1,40}$' then
            raise exception using
                errcode = 'invalid_parameter_value',
                message = format('broadcast: invalid route name %s', coalesce(quote_literal(val), 'NULL')),
                hint    = 'A route name is 1-40 characters from A-Z a-z 0-9 _ . / -; it defaults to the channel, so pass name => ''...'' when the channel is longer than 40 characters.';
        end if;
    elsif kind = 'event' then
        if val is null or val !~ '^[A-Za-z0-9_.-]{1,64}$' then
            raise exception using
                errcode = 'invalid_parameter_value',
                message = format('broadcast: invalid event name %s', coalesce(quote_literal(val), 'NULL')),
                hint    = 'An event name is 1-64 characters from A-Z a-z 0-9 _ . - (no "/" or ":"), e.g. ''created'' or ''status_changed''.';
        end if;
        if val = 'resync' then
            raise exception using
                errcode = 'invalid_parameter_value',
                message = 'broadcast: event name "resync" is reserved',
                hint    = 'The pgbroadcast server sends "resync" itself; choose another event name.';
        end if;
    else
        raise exception 'broadcast._check_name: unknown kind %', kind;
    end if;
end
$fn$;

-------------------------------------------------------------------------------
-- The one place that builds and sends a notification.
-- Payload layout (compact JSON, fixed key order, no timestamps/counters so that
-- Postgres de-duplicates identical signals within a transaction):
--   {"channel":C,"event":E,"payload":{["entity_id":ID,]"txid":N[,"table":T][,"schema":S],"op":OP
--                                      [,"rows":N][,"extra":{..}][,"extra_dropped":true][,"entity_id_dropped":true]}}
-- Never raises for oversized input: payloads >= 7900 bytes first lose "extra",
-- then "entity_id" (becoming channel-wide).
-------------------------------------------------------------------------------
create or replace function broadcast._notify(
    channel    text,
    event      text,
    entity_id  text,
    txid       bigint,
    tbl        text,
    tbl_schema text,
    op         text,
    extra      jsonb  default null,
    nrows      bigint default null)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $fn$
declare
    pg_channel    text := coalesce(nullif(current_setting('pgbroadcast.channel', true), ''), 'pgbroadcast');
    body          text;
    inner_json    text;
    extra_dropped boolean := false;
    id_dropped    boolean := false;
begin
    -- NOTIFY rejects channel names >= 64 bytes; mirror identifier truncation
    -- (LISTEN truncates the same way) instead of failing the write.
    while octet_length(pg_channel) > 63 loop
        pg_channel := left(pg_channel, -1);
    end loop;

    if txid is null then
        txid := (pg_current_xact_id()::xid::text)::bigint;
    end if;

    loop
        inner_json := '{'
            || case when entity_id is not null then '"entity_id":' || to_json(entity_id)::text || ',' else '' end
            || '"txid":' || txid::text
            || case when tbl is not null then ',"table":' || to_json(tbl)::text else '' end
            || case when tbl_schema is not null then ',"schema":' || to_json(tbl_schema)::text else '' end
            || ',"op":' || to_json(op)::text
            || case when nrows is not null then ',"rows":' || nrows::text else '' end
            || case when extra is not null then ',"extra":' || extra::text else '' end
            || case when extra_dropped then ',"extra_dropped":true' else '' end
            || case when id_dropped then ',"entity_id_dropped":true' else '' end
            || '}';
        body := '{"channel":' || to_json(channel)::text
             || ',"event":' || to_json(event)::text
             || ',"payload":' || inner_json || '}';
        exit when octet_length(body) < 7900;
        if extra is not null then
            extra := null;
            extra_dropped := true;
        elsif entity_id is not null then
            entity_id := null;
            id_dropped := true;
        else
            exit;  -- unreachable in practice: names are length-limited
        end if;
    end loop;

    perform pg_notify(pg_channel, body);
end
$fn$;

-------------------------------------------------------------------------------
-- The generic trigger function. One AFTER ... FOR EACH STATEMENT trigger per
-- (table, route, operation); its single argument is the route's JSON config:
--   {"route":"order_status","channel":"order","op":"UPDATE","event":"status_changed",
--    "id_column":"id","key":["id"],"when_changed":["status"],"max_rows":100}
-- No dynamic SQL: plpgsql caches one set of plans per trigger, and columns are
-- read generically with to_jsonb(row) ->> column.
-------------------------------------------------------------------------------
create or replace function broadcast.on_change()
returns trigger
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $fn$
-- A user's column may share a name with a variable below; the variable wins.
#variable_conflict use_variable
declare
    cfg        jsonb;
    v_channel  text;
    v_event    text;
    v_idcol    text;
    v_max      int;
    v_wc       text[];
    v_keep     text[];
    v_drop     text[];
    v_sample   jsonb;
    v_missing  text;
    v_schema   text;
    v_txid     bigint;
    v_rows     bigint;
    v_ids      text[];
    v_id       text;
begin
    if TG_LEVEL <> 'STATEMENT' or TG_WHEN <> 'AFTER' or TG_NARGS <> 1 then
        raise warning 'broadcast.on_change() on %.% must be an AFTER ... FOR EACH STATEMENT trigger with one argument; create routes with broadcast.enable()',
            TG_TABLE_SCHEMA, TG_TABLE_NAME;
        return null;
    end if;

    cfg       := TG_ARGV[0]::jsonb;
    v_channel := cfg ->> 'channel';
    v_event   := cfg ->> 'event';
    v_idcol   := cfg ->> 'id_column';
    v_max     := coalesce((cfg ->> 'max_rows')::int, 100);
    v_schema  := case when TG_TABLE_SCHEMA <> 'public' then TG_TABLE_SCHEMA end;

    if TG_OP = 'TRUNCATE' then
        perform broadcast._notify(v_channel, v_event, null, null, TG_TABLE_NAME, v_schema, TG_OP);
        return null;
    end if;

    -- Cheap first: how many rows did the statement touch?
    if TG_OP = 'DELETE' then
        select count(*) into v_rows from old_rows;
        select to_jsonb(o.*) into v_sample from old_rows o limit 1;
    else
        select count(*) into v_rows from new_rows;
        select to_jsonb(n.*) into v_sample from new_rows n limit 1;
    end if;
    if v_rows = 0 then
        return null;  -- statement matched no rows: nothing changed
    end if;

    v_txid := (pg_current_xact_id()::xid::text)::bigint;

    -- Columns named in the config must still exist (a rename/drop after enable
    -- makes the route stale). Degrade to a channel-wide signal, never to silence.
    if TG_OP = 'UPDATE' and cfg ? 'when_changed' and jsonb_typeof(cfg -> 'when_changed') = 'array' then
        v_wc   := array(select jsonb_array_elements_text(cfg -> 'when_changed'));
        v_keep := array(select distinct c from (
                      select jsonb_array_elements_text(cfg -> 'key') c
                      union all select unnest(v_wc)) s);
    else
        v_keep := array[]::text[];
    end if;
    select c into v_missing
      from unnest(array_append(v_keep, v_idcol)) c
     where c is null or not (v_sample ? c)
     limit 1;
    if found then
        raise warning 'broadcast route "%" on %.%: column % no longer exists; sending a channel-wide signal',
            cfg ->> 'route', TG_TABLE_SCHEMA, TG_TABLE_NAME, coalesce(quote_ident(v_missing), 'NULL')
            using hint = 'Re-run broadcast.enable() for this route after renaming or dropping columns.';
        perform broadcast._notify(v_channel, v_event, null, v_txid, TG_TABLE_NAME, v_schema, TG_OP);
        return null;
    end if;

    if TG_OP = 'INSERT' then
        v_ids := array(select distinct to_jsonb(n.*) ->> v_idcol from new_rows n limit v_max::bigint + 1);

    elsif TG_OP = 'DELETE' then
        v_ids := array(select distinct to_jsonb(o.*) ->> v_idcol from old_rows o limit v_max::bigint + 1);

    elsif v_wc is null then
        -- UPDATE, every row counts. New ids first (usually decides the bulk case);
        -- then add old ids, which differ only when the id column itself changed.
        v_ids := array(select distinct to_jsonb(n.*) ->> v_idcol from new_rows n limit v_max::bigint + 1);
        if cardinality(v_ids) <= v_max then
            v_ids := array(
                select id from (
                    select to_jsonb(n.*) ->> v_idcol as id from new_rows n
                    union
                    select to_jsonb(o.*) ->> v_idcol from old_rows o) s
                limit v_max::bigint + 1);
        end if;

    else
        -- UPDATE with when_changed: a row changed when its projection onto
        -- (primary key columns + watched columns) has no equal in the other
        -- transition table (jsonb equality: NULL = NULL, i.e. IS DISTINCT FROM).
        -- A row whose key changed therefore counts as changed.
        v_drop := array(select k from jsonb_object_keys(v_sample) k where k <> all (v_keep));
        v_ids := array(
            select distinct n.id
              from (select j - v_drop as p, j ->> v_idcol as id
                      from (select to_jsonb(n0.*) as j from new_rows n0 offset 0) s) n
             where not exists (select 1 from old_rows o where to_jsonb(o.*) - v_drop = n.p)
             limit v_max::bigint + 1);
        -- Keys are unique on both sides, so if no new projection is missing from
        -- the old side, none of the old ones is missing from the new side either.
        if cardinality(v_ids) between 1 and v_max then
            -- add the old-side ids of changed rows (differ when the id column changed)
            v_ids := array(
                select id from (
                    select unnest(v_ids) as id
                    union
                    select o.id
                      from (select j - v_drop as p, j ->> v_idcol as id
                              from (select to_jsonb(o0.*) as j from old_rows o0 offset 0) s) o
                     where not exists (select 1 from new_rows n where to_jsonb(n.*) - v_drop = o.p)) u
                limit v_max::bigint + 1);
        end if;
        if cardinality(v_ids) = 0 then
            return null;  -- no watched column changed
        end if;
    end if;

    if cardinality(v_ids) > v_max then
        -- bulk: one channel-wide signal carrying the number of affected rows
        perform broadcast._notify(v_channel, v_event, null, v_txid, TG_TABLE_NAME, v_schema, TG_OP, null, v_rows);
    elsif array_position(v_ids, null) is not null then
        -- some row has a NULL id: tell clients "anything may have changed"
        perform broadcast._notify(v_channel, v_event, null, v_txid, TG_TABLE_NAME, v_schema, TG_OP);
    else
        foreach v_id in array v_ids loop
            perform broadcast._notify(v_channel, v_event, v_id, v_txid, TG_TABLE_NAME, v_schema, TG_OP);
        end loop;
    end if;
    return null;
end
$fn$;

-------------------------------------------------------------------------------
-- broadcast.routes: the installed routes, read straight from pg_trigger.
-------------------------------------------------------------------------------
create or replace view broadcast.routes as
select t.tgrelid::regclass                                         as table_name,
       cfg ->> 'route'                                             as route,
       cfg ->> 'channel'                                           as channel,
       cfg ->> 'op'                                                as operation,
       cfg ->> 'event'                                             as event,
       cfg ->> 'id_column'                                         as id_column,
       case when jsonb_typeof(cfg -> 'when_changed') = 'array'
            then array(select jsonb_array_elements_text(cfg -> 'when_changed')) end
                                                                   as when_changed,
       (cfg ->> 'max_rows')::int                                   as max_rows,
       t.tgenabled <> 'D'                                          as enabled,
       t.tgname                                                    as trigger_name
  from pg_catalog.pg_trigger t
  join pg_catalog.pg_class c      on c.oid = t.tgrelid
  join pg_catalog.pg_namespace ns on ns.oid = c.relnamespace
 cross join lateral (
       select pg_catalog.convert_from(
                  pg_catalog.substr(t.tgargs, 1, pg_catalog.octet_length(t.tgargs) - 1),
                  pg_catalog.getdatabaseencoding())::jsonb as cfg) a
 where t.tgfoid = 'broadcast.on_change()'::pg_catalog.regprocedure
   and t.tgnargs = 1
 order by ns.nspname, c.relname, cfg ->> 'route',
          pg_catalog.array_position(array['INSERT','UPDATE','DELETE','TRUNCATE'], cfg ->> 'op');

comment on view broadcast.routes is
'pgbroadcast routes installed by broadcast.enable(): one row per (table, route, operation), decoded from the trigger arguments in pg_trigger. What you see here is what fires.';

-------------------------------------------------------------------------------
-- broadcast.disable
-------------------------------------------------------------------------------
create or replace function broadcast.disable(tbl regclass, name text default null)
returns int
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $fn$
declare
    r record;
    n int := 0;
begin
    if tbl is null then
        raise exception using
            errcode = 'null_value_not_allowed',
            message = 'broadcast.disable: tbl must not be NULL',
            hint    = 'Pass a table, e.g. broadcast.disable(''orders'').';
    end if;
    for r in
        select trigger_name from broadcast.routes
         where table_name = tbl and (disable.name is null or route = disable.name)
    loop
        if n = 0 and not pg_has_role((select relowner from pg_class where oid = tbl), 'USAGE') then
            raise exception using
                errcode = 'insufficient_privilege',
                message = format('broadcast.disable: must be owner of table %s', tbl),
                hint    = format('Run broadcast.disable as the table owner (%s) or a member of that role.',
                                 (select relowner from pg_class where oid = tbl)::regrole);
        end if;
        execute format('drop trigger %I on %s', r.trigger_name, tbl);
        n := n + 1;
    end loop;
    return n;
end
$fn$;

comment on function broadcast.disable(regclass, text) is
'broadcast.disable(tbl, name => NULL): drop route "name" on tbl (NULL: every broadcast route on tbl). Returns the number of triggers dropped; 0 if nothing was enabled (not an error).';

-------------------------------------------------------------------------------
-- broadcast.enable
-------------------------------------------------------------------------------
create or replace function broadcast.enable(
    tbl          regclass,
    channel      text,
    name         text    default null,
    id_column    text    default null,
    events       jsonb   default null,
    when_changed text[]  default null,
    max_rows     int     default 100)
returns setof broadcast.routes
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $fn$
declare
    v_rel      pg_class%rowtype;
    v_route    text := coalesce(enable.name, enable.channel);
    v_events   jsonb := coalesce(enable.events, '{"INSERT":"created","UPDATE":"updated","DELETE":"deleted"}');
    v_map      jsonb := '{}';
    v_key      text[];
    v_idcol    text := enable.id_column;
    v_wc       text[];
    v_col      text;
    v_op       text;
    v_cfg      jsonb;
    v_ref      text;
    r          record;
begin
    if tbl is null then
        raise exception using
            errcode = 'null_value_not_allowed',
            message = 'broadcast.enable: tbl must not be NULL',
            hint    = 'Pass a table, e.g. broadcast.enable(''orders'', ''order'').';
    end if;

    select * into v_rel from pg_class where oid = tbl;
    if v_rel.relkind not in ('r', 'p') then
        raise exception using
            errcode = 'wrong_object_type',
            message = format('broadcast.enable: %s is not a table (relkind %L)', tbl, v_rel.relkind),
            hint    = 'Only regular and partitioned tables can be broadcast; enable the underlying table of a view, or call broadcast.emit() yourself.';
    end if;
    if not pg_has_role(v_rel.relowner, 'USAGE') then
        raise exception using
            errcode = 'insufficient_privilege',
            message = format('broadcast.enable: must be owner of table %s', tbl),
            hint    = format('Run broadcast.enable as the table owner (%s) or a member of that role.', v_rel.relowner::regrole);
    end if;

    perform broadcast._check_name('channel', enable.channel);
    perform broadcast._check_name('route', v_route);

    if max_rows is null or max_rows < 1 then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = format('broadcast.enable: max_rows must be at least 1 (got %s)', coalesce(max_rows::text, 'NULL')),
            hint    = 'max_rows caps per-entity signals per statement; larger statements send one channel-wide signal. The default is 100.';
    end if;

    -- events: {"OPERATION": "event", ...}, operations case-insensitive
    if jsonb_typeof(v_events) <> 'object' or v_events = '{}' then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = format('broadcast.enable: events must be a non-empty JSON object, got %s', v_events),
            hint    = 'Map operations to event names, e.g. ''{"INSERT": "created", "UPDATE": "updated", "DELETE": "deleted"}''; omit events for that default.';
    end if;
    for r in select key, value from jsonb_each(v_events) loop
        v_op := upper(r.key);
        if v_op not in ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE') then
            raise exception using
                errcode = 'invalid_parameter_value',
                message = format('broadcast.enable: unknown operation %s in events', to_json(r.key)),
                hint    = 'events keys must be INSERT, UPDATE, DELETE or TRUNCATE (any case).';
        end if;
        if v_map ? v_op then
            raise exception using
                errcode = 'invalid_parameter_value',
                message = format('broadcast.enable: operation %s appears more than once in events', v_op),
                hint    = 'Operation names are case-insensitive; map each one once.';
        end if;
        if jsonb_typeof(r.value) is distinct from 'string' then
            raise exception using
                errcode = 'invalid_parameter_value',
                message = format('broadcast.enable: event for %s must be a JSON string, got %s', v_op, r.value),
                hint    = 'e.g. ''{"UPDATE": "updated"}''; leave an operation out to not signal it.';
        end if;
        perform broadcast._check_name('event', r.value #>> '{}');
        v_map := v_map || jsonb_build_object(v_op, r.value);
    end loop;
    -- default TRUNCATE handling: a mapped DELETE also signals TRUNCATE (channel-wide)
    if not v_map ? 'TRUNCATE' and v_map ? 'DELETE' then
        v_map := v_map || jsonb_build_object('TRUNCATE', v_map -> 'DELETE');
    end if;

    -- primary key columns (in key order)
    select array_agg(a.attname::text order by k.ord) into v_key
      from pg_constraint con
     cross join lateral unnest(con.conkey) with ordinality k(attnum, ord)
      join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum
     where con.conrelid = tbl and con.contype = 'p';

    -- id column
    if v_idcol is not null then
        if not exists (select 1 from pg_attribute
                        where attrelid = tbl and attname = v_idcol and attnum > 0 and not attisdropped) then
            raise exception using
                errcode = 'undefined_column',
                message = format('broadcast.enable: id_column %I does not exist in table %s', v_idcol, tbl),
                hint    = 'id_column is a column name, matched exactly (case-sensitive, no quotes needed).';
        end if;
    elsif v_map ?| array['INSERT', 'UPDATE', 'DELETE'] then
        if v_key is null then
            raise exception using
                errcode = 'invalid_parameter_value',
                message = format('broadcast.enable: table %s has no primary key', tbl),
                hint    = 'Pass id_column => ''column'' to name the entity id column, or add a primary key.';
        elsif cardinality(v_key) > 1 then
            raise exception using
                errcode = 'invalid_parameter_value',
                message = format('broadcast.enable: table %s has a composite primary key (%s)', tbl, array_to_string(v_key, ', ')),
                hint    = 'Pass id_column => ''column'' to choose which column is the entity id.';
        end if;
        v_idcol := v_key[1];
    end if;

    -- when_changed
    if when_changed is not null then
        if not v_map ? 'UPDATE' then
            raise exception using
                errcode = 'invalid_parameter_value',
                message = 'broadcast.enable: when_changed is given but events maps no UPDATE',
                hint    = 'when_changed filters UPDATE signals only; add an "UPDATE" entry to events or drop when_changed.';
        end if;
        if cardinality(when_changed) = 0 or array_position(when_changed, null) is not null then
            raise exception using
                errcode = 'invalid_parameter_value',
                message = 'broadcast.enable: when_changed must be a non-empty list of column names without NULLs',
                hint    = 'e.g. when_changed => ''{status}''; pass NULL to signal every UPDATE.';
        end if;
        foreach v_col in array when_changed loop
            if not exists (select 1 from pg_attribute
                            where attrelid = tbl and attname = v_col and attnum > 0 and not attisdropped) then
                raise exception using
                    errcode = 'undefined_column',
                    message = format('broadcast.enable: when_changed column %I does not exist in table %s', v_col, tbl),
                    hint    = 'when_changed lists column names, matched exactly (case-sensitive, no quotes needed).';
            end if;
        end loop;
        if v_key is null then
            raise exception using
                errcode = 'invalid_parameter_value',
                message = format('broadcast.enable: when_changed needs a primary key, and table %s has none', tbl),
                hint    = 'when_changed matches old and new rows by primary key; add a primary key to the table.';
        end if;
        v_wc := array(select distinct c from unnest(when_changed) c order by c);
    end if;

    -- serialize concurrent enable/disable on this table, then replace the route
    execute format('lock table %s in share row exclusive mode', tbl);
    for r in select trigger_name from broadcast.routes where table_name = tbl and route = v_route loop
        execute format('drop trigger %I on %s', r.trigger_name, tbl);
    end loop;

    foreach v_op in array array['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'] loop
        continue when not v_map ? v_op;
        v_cfg := jsonb_build_object(
            'route',        v_route,
            'channel',      enable.channel,
            'op',           v_op,
            'event',        v_map ->> v_op,
            'id_column',    case when v_op <> 'TRUNCATE' then v_idcol end,
            'key',          case when v_op = 'UPDATE' and v_wc is not null then to_jsonb(v_key) end,
            'when_changed', case when v_op = 'UPDATE' then to_jsonb(v_wc) end,
            'max_rows',     case when v_op <> 'TRUNCATE' then enable.max_rows end);
        v_cfg := jsonb_strip_nulls(v_cfg);
        v_ref := case v_op
                   when 'INSERT' then 'referencing new table as new_rows'
                   when 'UPDATE' then 'referencing old table as old_rows new table as new_rows'
                   when 'DELETE' then 'referencing old table as old_rows'
                   else '' end;
        execute format('create trigger %I after %s on %s %s for each statement execute function broadcast.on_change(%L)',
                       'broadcast:' || v_route || ':' || lower(v_op), v_op, tbl, v_ref, v_cfg::text);
    end loop;

    return query select * from broadcast.routes where table_name = tbl and route = v_route;
end
$fn$;

comment on function broadcast.enable(regclass, text, text, text, jsonb, text[], int) is
'broadcast.enable(tbl, channel, name => channel, id_column => primary key, events => {"INSERT":"created","UPDATE":"updated","DELETE":"deleted"}, when_changed => NULL, max_rows => 100): install (or replace) route "name" on tbl, sending a signal per changed entity id on channel. A mapped DELETE also signals TRUNCATE unless TRUNCATE is mapped. Returns the route''s rows of broadcast.routes.';

-------------------------------------------------------------------------------
-- broadcast.emit
-------------------------------------------------------------------------------
create or replace function broadcast.emit(channel text, event text, entity_id text, extra jsonb default null)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $fn$
begin
    perform broadcast._check_name('channel', emit.channel);
    perform broadcast._check_name('event', emit.event);
    if emit.entity_id = '' then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = 'broadcast.emit: entity_id must not be an empty string',
            hint    = 'Pass NULL for a channel-wide signal.';
    end if;
    if emit.extra is not null and jsonb_typeof(emit.extra) <> 'object' then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = format('broadcast.emit: extra must be a JSON object, got %s', jsonb_typeof(emit.extra)),
            hint    = 'e.g. ''{"printer": "kitchen-2"}''; pass NULL for no extra data.';
    end if;
    perform broadcast._notify(emit.channel, emit.event, emit.entity_id, null, null, null, 'EMIT', emit.extra);
end
$fn$;

comment on function broadcast.emit(text, text, text, jsonb) is
'broadcast.emit(channel, event, entity_id, extra => NULL): send one signal at COMMIT (nothing on ROLLBACK). entity_id NULL = channel-wide. An extra that would make the payload >= 7900 bytes is dropped ("extra_dropped": true).';

comment on function broadcast.on_change() is
'pgbroadcast trigger function (internal). Installed by broadcast.enable(); its single argument is the route config shown in broadcast.routes.';
comment on function broadcast._notify(text, text, text, bigint, text, text, text, jsonb, bigint) is
'pgbroadcast internal: build the JSON payload, enforce the size limit and pg_notify() on the pgbroadcast.channel setting (default ''pgbroadcast'').';
comment on function broadcast._check_name(text, text) is
'pgbroadcast internal: validate a channel, route or event name.';

-- Writers of enabled tables run the trigger function (and thus the helpers) as themselves.
grant execute on function broadcast._notify(text, text, text, bigint, text, text, text, jsonb, bigint) to public;
grant execute on function broadcast._check_name(text, text) to public;
grant execute on function broadcast.on_change() to public;
grant execute on function broadcast.emit(text, text, text, jsonb) to public;
grant execute on function broadcast.enable(regclass, text, text, text, jsonb, text[], int) to public;
grant execute on function broadcast.disable(regclass, text) to public;
grant select on broadcast.routes to public;
