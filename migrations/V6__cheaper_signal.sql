-- pgbroadcast SQL kit, step 6: a signal costs its writer less.
--
-- What a route's statement paid for, measured per single-row INSERT
-- (bench/sql/trigger_cost.sql): each function with a `set search_path`
-- clause saves and restores the setting on every call (about 6 µs here), and
-- each PERFORM is run as a query of its own, where an assignment is evaluated
-- directly (about 1.3 µs against 0.04).
--
-- * broadcast._send() builds the payload and sends it, as _notify did, in
--   fewer statements, and returns true so callers assign rather than PERFORM.
--   It runs with its owner's rights (to send a wal signal) and, having no
--   `set search_path`, with its caller's search path: every function, type
--   and operator in it is therefore named with its schema, so nothing a
--   caller puts on its path (or in pg_temp) can stand in for them.
-- * broadcast._notify() keeps its signature and sends through _send().
-- * broadcast.on_change() calls _send by assignment, and reads a single-row
--   UPDATE (of a route without when_changed) with one query of the old
--   side, where two queries of both sides were run. It keeps its pinned
--   search_path: it runs with the rights of whoever writes, a table owner
--   or a superuser included, and calls functions by name that a function of
--   an exact argument type elsewhere on that writer's path would stand in for.

create or replace function broadcast._send(
    channel    text,
    event      text,
    entity_id  text,
    txid       bigint,
    tbl        text,
    tbl_schema text,
    op         text,
    extra      jsonb  default null,
    nrows      bigint default null)
returns boolean
language plpgsql
volatile
security definer
as $fn$
declare
    pg_channel    pg_catalog.text := pg_catalog.current_setting('pgbroadcast.channel', true);
    transport     pg_catalog.text := pg_catalog.current_setting('pgbroadcast.transport', true);
    body          pg_catalog.text;
    extra_dropped pg_catalog.bool := false;
    id_dropped    pg_catalog.bool := false;
    sent          pg_catalog.pg_lsn;
begin
    if pg_channel is null or pg_catalog.texteq(pg_channel, '') then
        pg_channel := 'pgbroadcast';
    end if;
    -- NOTIFY rejects channel names >= 64 bytes; mirror identifier truncation
    -- (LISTEN truncates the same way) instead of failing the write.
    while pg_catalog.int4gt(pg_catalog.octet_length(pg_channel), 63) loop
        pg_channel := pg_catalog."left"(pg_channel, -1);
    end loop;
    if txid is null then
        txid := pg_catalog.pg_current_xact_id()::pg_catalog.xid::pg_catalog.text::pg_catalog.int8;
    end if;

    loop
        body := pg_catalog.concat(
            '{"channel":', pg_catalog.to_json(channel),
            ',"event":', pg_catalog.to_json(event),
            ',"payload":{',
            case when entity_id is not null then pg_catalog.concat('"entity_id":', pg_catalog.to_json(entity_id), ',') end,
            '"txid":', txid,
            case when tbl is not null then pg_catalog.concat(',"table":', pg_catalog.to_json(tbl)) end,
            case when tbl_schema is not null then pg_catalog.concat(',"schema":', pg_catalog.to_json(tbl_schema)) end,
            ',"op":', pg_catalog.to_json(op),
            case when nrows is not null then pg_catalog.concat(',"rows":', nrows) end,
            case when extra is not null then pg_catalog.concat(',"extra":', extra) end,
            case when extra_dropped then ',"extra_dropped":true' end,
            case when id_dropped then ',"entity_id_dropped":true' end,
            '}}');
        exit when pg_catalog.int4lt(pg_catalog.octet_length(body), 7900);
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

    -- The transport, read at run time: `alter database ... set
    -- pgbroadcast.transport = 'wal'` switches every route and emit at once.
    if transport is null or pg_catalog.texteq(transport, '') or pg_catalog.texteq(transport, 'notify') then
        perform pg_catalog.pg_notify(pg_channel, body);
    elsif pg_catalog.texteq(transport, 'wal') then
        -- Transactional: decoded at commit, in commit order, and never for a
        -- transaction that rolls back; the prefix is the channel.
        sent := pg_catalog.pg_logical_emit_message(true, pg_channel, body);
    else
        raise exception 'pgbroadcast.transport is %, which is not a transport', pg_catalog.quote_literal(transport)
            using errcode = '22023',
                  hint = 'set it to notify (the default) or wal, e.g. alter database ... set pgbroadcast.transport = ''wal''';
    end if;
    return true;
end
$fn$;

comment on function broadcast._send(text, text, text, bigint, text, text, text, jsonb, bigint) is
'pgbroadcast internal: build the JSON payload, enforce the size limit and send it by the pgbroadcast.transport setting (notify: pg_notify on the pgbroadcast.channel setting, default ''pgbroadcast''; wal: a transactional logical decoding message with that prefix). Returns true.';

grant execute on function broadcast._send(text, text, text, bigint, text, text, text, jsonb, bigint) to public;

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
as $fn$
begin
    perform broadcast._send(channel, event, entity_id, txid, tbl, tbl_schema, op, extra, nrows);
end
$fn$;

comment on function broadcast._notify(text, text, text, bigint, text, text, text, jsonb, bigint) is
'pgbroadcast internal: send a signal (see broadcast._send).';

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
    v_first    jsonb[];
    v_col      text;
    v_missing  text;
    v_stale    boolean := false;
    v_schema   text;
    v_txid     bigint;
    v_rows     bigint;
    v_ids      text[];
    v_id       text;
    v_sent     boolean;
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
        v_sent := broadcast._send(v_channel, v_event, null, null, TG_TABLE_NAME, v_schema, TG_OP);
        return null;
    end if;

    -- Cheap first: the statement's first two rows, as jsonb. Most statements
    -- touch one row, and then that is all there is to read: it is the sample,
    -- and the count. Only a statement that touched more rows is counted.
    if TG_OP = 'DELETE' then
        v_first := array(select to_jsonb(o.*) from old_rows o limit 2);
    else
        v_first := array(select to_jsonb(n.*) from new_rows n limit 2);
    end if;
    if cardinality(v_first) = 0 then
        return null;  -- statement matched no rows: nothing changed
    end if;
    v_sample := v_first[1];
    if cardinality(v_first) = 1 then
        v_rows := 1;
    elsif TG_OP = 'DELETE' then
        select count(*) into v_rows from old_rows;
    else
        select count(*) into v_rows from new_rows;
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
    foreach v_col in array array_append(v_keep, v_idcol) loop
        if v_col is null or not (v_sample ? v_col) then
            v_missing := v_col;
            v_stale := true;
            exit;
        end if;
    end loop;
    if v_stale then
        raise warning 'broadcast route "%" on %.%: column % no longer exists; sending a channel-wide signal',
            cfg ->> 'route', TG_TABLE_SCHEMA, TG_TABLE_NAME, coalesce(quote_ident(v_missing), 'NULL')
            using hint = 'Re-run broadcast.enable() for this route after renaming or dropping columns.';
        v_sent := broadcast._send(v_channel, v_event, null, v_txid, TG_TABLE_NAME, v_schema, TG_OP);
        return null;
    end if;

    if TG_OP in ('INSERT', 'DELETE') and v_rows = 1 then
        v_ids := array[v_sample ->> v_idcol];  -- the one row, read already

    elsif TG_OP = 'UPDATE' and v_rows = 1 and v_wc is null then
        -- One row: its id now (read already) and its id before, which
        -- differs only when the id column itself changed.
        v_id := (select to_jsonb(o.*) ->> v_idcol from old_rows o);
        v_ids := case when v_id is distinct from (v_sample ->> v_idcol)
                      then array[v_sample ->> v_idcol, v_id]
                      else array[v_sample ->> v_idcol] end;

    elsif TG_OP = 'INSERT' then
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
        v_sent := broadcast._send(v_channel, v_event, null, v_txid, TG_TABLE_NAME, v_schema, TG_OP, null, v_rows);
    elsif array_position(v_ids, null) is not null then
        -- some row has a NULL id: tell clients "anything may have changed"
        v_sent := broadcast._send(v_channel, v_event, null, v_txid, TG_TABLE_NAME, v_schema, TG_OP);
    else
        foreach v_id in array v_ids loop
            v_sent := broadcast._send(v_channel, v_event, v_id, v_txid, TG_TABLE_NAME, v_schema, TG_OP);
        end loop;
    end if;
    return null;
end
$fn$;
