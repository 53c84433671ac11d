-- pgbroadcast SQL kit, step 3: the transport is chosen in SQL.
--
-- pgbroadcast.transport (a setting, read when a signal is sent):
--   notify (the default) -- pg_notify on the pgbroadcast.channel setting, as before;
--   wal                  -- pg_logical_emit_message(true, <channel>, payload): a
--                           transactional logical decoding message, which takes no
--                           cluster-wide lock at commit. The service reads it over
--                           the logical replication protocol (serve --transport wal).
-- Payload, routes, the bulk rule and the size rule are the same for both.

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

    -- The transport, read at run time: `alter database ... set
    -- pgbroadcast.transport = 'wal'` switches every route and emit at once.
    case coalesce(nullif(current_setting('pgbroadcast.transport', true), ''), 'notify')
        when 'notify' then
            perform pg_notify(pg_channel, body);
        when 'wal' then
            -- Transactional: decoded at commit, in commit order, and never
            -- for a transaction that rolls back; the prefix is the channel.
            perform pg_logical_emit_message(true, pg_channel, body);
        else
            raise exception 'pgbroadcast.transport is %, which is not a transport',
                quote_literal(current_setting('pgbroadcast.transport', true))
                using errcode = '22023',
                      hint = 'set it to notify (the default) or wal, e.g. alter database ... set pgbroadcast.transport = ''wal''';
    end case;
end
$fn$;

comment on function broadcast._notify(text, text, text, bigint, text, text, text, jsonb, bigint) is
'pgbroadcast internal: build the JSON payload, enforce the size limit and send it by the pgbroadcast.transport setting (notify: pg_notify on the pgbroadcast.channel setting, default ''pgbroadcast''; wal: a transactional logical decoding message with that prefix).';
