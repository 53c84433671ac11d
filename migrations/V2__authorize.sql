-- pgbroadcast SQL kit, part 2: per-channel authorization.
-- The server verifies a client's JWT and asks broadcast.authorize(claims, channel, entity_id)
-- whether those claims may subscribe to "channel" or "channel:entity_id".
-- The default authorize() reads broadcast.grants, maintained with broadcast.grant() and
-- broadcast.revoke(). See sql/README.md, "Authorization". Plain SQL, transaction-safe.

-------------------------------------------------------------------------------
-- broadcast.grants: claim = value  ->  may subscribe to topics matching pattern
-------------------------------------------------------------------------------
create table if not exists broadcast.grants (
    id         bigserial   primary key,
    claim      text        not null,
    value      text        not null,
    pattern    text        not null,
    created_at timestamptz not null default now(),
    unique (claim, value, pattern),
    -- Rows inserted by hand must be well-formed too; broadcast.grant() explains the rules.
    constraint grants_claim_not_empty check (claim <> ''),
    constraint grants_value_not_empty check (value <> ''),
    constraint grants_pattern_valid check (
        pattern ~ '^([*]|[A-Za-z0-9_./-]{1,64}(:([{][^{}]+[}]|[^{}]+))?)$')
);

-- authorize() looks grants up by exact pattern, and scans the (few) "{claim}" grants.
create index if not exists grants_pattern_idx on broadcast.grants (pattern);
create index if not exists grants_placeholder_idx on broadcast.grants (pattern) where pattern like '%}';

comment on table broadcast.grants is
'pgbroadcast grants: clients whose JWT claim "claim" equals "value" (''*'': any value; array claims: contains value) may subscribe to topics matching "pattern": ''*'', ''<channel>'', ''<channel>:*'', ''<channel>:<entity>'' or ''<channel>:{<claim>}''. Maintain with broadcast.grant()/broadcast.revoke(). Readable by everyone (the bridge reads it through broadcast.authorize): grants are not secret, they list claim values and channel patterns.';

-------------------------------------------------------------------------------
-- Does a claim of these claims "have" the string val?
--   string/number/boolean claim: its text form (claims ->> name) equals val;
--   array claim: contains val as a string element;
--   missing, null or object claim: no.
-------------------------------------------------------------------------------
create or replace function broadcast._claim_has(claims jsonb, name text, val text)
returns boolean
language sql
immutable
set search_path = pg_catalog, pg_temp
as $fn$
    select coalesce(
        case jsonb_typeof(claims -> name)
            when 'array'   then (claims -> name) ? val
            when 'string'  then (claims ->> name) = val
            when 'number'  then (claims ->> name) = val
            when 'boolean' then (claims ->> name) = val
            else false
        end, false)
$fn$;

comment on function broadcast._claim_has(jsonb, text, text) is
'pgbroadcast internal: true when claims -> name is a string/number/boolean whose text form (claims ->> name) equals val, or an array containing val as a string; false otherwise (never NULL).';

-------------------------------------------------------------------------------
-- broadcast.authorize: the one function the server calls.
-------------------------------------------------------------------------------
create or replace function broadcast.authorize(claims jsonb, channel text, entity_id text)
returns boolean
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $fn$
begin
    if claims is null or jsonb_typeof(claims) <> 'object'
       or channel is null or channel !~ '^[A-Za-z0-9_./-]{1,64}$' then
        return false;
    end if;

    return exists (
        -- the client's claims satisfy the grant's (claim, value) ...
        select 1
          from broadcast.grants g
         where g.pattern in ('*', channel, channel || ':*',
                             channel || ':' || coalesce(entity_id, '*'))
           and g.pattern not like '%}'   -- a literal entity "{x}" is no placeholder grant
           and (case when g.value = '*'
                     then coalesce(jsonb_typeof(claims -> g.claim), 'null') <> 'null'
                     else broadcast._claim_has(claims, g.claim, g.value) end))
        or (entity_id is not null and exists (
        -- ... or a "<channel>:{c}" grant and claim c has this very entity id
        select 1
          from broadcast.grants g
         where g.pattern like '%}'
           and left(g.pattern, length(channel) + 2) = channel || ':{'
           and broadcast._claim_has(claims,
                   substr(g.pattern, length(channel) + 3, length(g.pattern) - length(channel) - 3),
                   entity_id)
           and (case when g.value = '*'
                     then coalesce(jsonb_typeof(claims -> g.claim), 'null') <> 'null'
                     else broadcast._claim_has(claims, g.claim, g.value) end)));
end
$fn$;

comment on function broadcast.authorize(jsonb, text, text) is
'broadcast.authorize(claims, channel, entity_id): may a client with these verified JWT claims subscribe to channel (entity_id NULL: the whole channel) or to channel:entity_id? The pgbroadcast server calls it for each subscription, caches the answer per connection and re-checks periodically. This default reads broadcast.grants (see broadcast.grant); it returns false, never NULL or an error, for NULL/non-object claims or an invalid channel. DBAs may CREATE OR REPLACE it with their own logic (e.g. joining an app''s memberships table): keep this exact signature, return true/false, keep it fast, and make sure the server''s role can read what it reads (or use SECURITY DEFINER with a pinned search_path).';

-------------------------------------------------------------------------------
-- broadcast.grant
-------------------------------------------------------------------------------
create or replace function broadcast.grant(claim text, value text, pattern text)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $fn$
declare
    -- The parameters share their names with the table's columns; use these.
    v_claim   text := $1;
    v_value   text := $2;
    v_pattern text := $3;
    v_channel text;
    v_entity  text;
    v_reason  text;
    v_seq     text := pg_get_serial_sequence('broadcast.grants', 'id');
begin
    if v_claim is null or v_claim = '' then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = format('broadcast.grant: claim must be a non-empty claim name, got %s', coalesce(quote_literal(v_claim), 'NULL')),
            hint    = 'claim is a top-level JWT claim name, e.g. broadcast.grant(''role'', ''kitchen'', ''order'') or broadcast.grant(''sub'', ''*'', ''user:{sub}'').';
    end if;
    if v_value is null or v_value = '' then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = format('broadcast.grant: value must be non-empty, got %s', coalesce(quote_literal(v_value), 'NULL')),
            hint    = 'value is the claim value to match (an element, for array claims), or ''*'' for any value of a present claim, e.g. broadcast.grant(''role'', ''kitchen'', ''order'').';
    end if;

    if v_pattern is null then
        v_reason := 'a pattern is required';
    elsif v_pattern <> '*' then
        v_channel := split_part(v_pattern, ':', 1);
        v_entity  := case when strpos(v_pattern, ':') > 0 then substr(v_pattern, strpos(v_pattern, ':') + 1) end;
        if v_channel !~ '^[A-Za-z0-9_./-]{1,64}$' then
            v_reason := format('channel %s is not 1-64 characters from A-Z a-z 0-9 _ . / -', quote_literal(v_channel));
        elsif v_entity = '' then
            v_reason := 'nothing follows ":"';
        elsif v_entity ~ '[{}]' and v_entity !~ '^[{][^{}]+[}]$' then
            v_reason := 'braces are only allowed as a whole "{claim}" entity';
        end if;
    end if;
    if v_reason is not null then
        raise exception using
            errcode = 'invalid_parameter_value',
            message = format('broadcast.grant: invalid pattern %s (%s)', coalesce(quote_literal(v_pattern), 'NULL'), v_reason),
            hint    = 'A pattern is ''*'' (every channel), ''<channel>'' or ''<channel>:*'' (a whole channel and all its entities), ''<channel>:<entity>'' (one entity) or ''<channel>:{<claim>}'' (the entity equal to the client''s own claim), e.g. ''order'', ''order:42'', ''user:{sub}''.';
    end if;

    if not (has_table_privilege('broadcast.grants', 'INSERT') and has_sequence_privilege(v_seq, 'USAGE')) then
        raise exception using
            errcode = 'insufficient_privilege',
            message = format('broadcast.grant: role %I may not add grants', current_user),
            hint    = format('Run broadcast.grant as the owner of broadcast.grants (%s), or grant insert on broadcast.grants and usage on sequence %s to this role.',
                             (select relowner from pg_class where oid = 'broadcast.grants'::regclass)::regrole, v_seq);
    end if;

    insert into broadcast.grants (claim, value, pattern)
    values (v_claim, v_value, v_pattern)
    on conflict do nothing;
end
$fn$;

comment on function broadcast.grant(text, text, text) is
'broadcast.grant(claim, value, pattern): let clients whose JWT claim "claim" equals "value" (''*'': any value of a present claim; array claims: contains value) subscribe to topics matching pattern: ''*'', ''<channel>'', ''<channel>:*'', ''<channel>:<entity>'' or ''<channel>:{<claim>}''. Idempotent. Needs INSERT on broadcast.grants (the migration owner has it).';

-------------------------------------------------------------------------------
-- broadcast.revoke
-------------------------------------------------------------------------------
create or replace function broadcast.revoke(claim text, value text, pattern text default null)
returns int
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $fn$
declare
    v_claim   text := $1;
    v_value   text := $2;
    v_pattern text := $3;
    n         int;
begin
    if v_claim is null or v_value is null then
        raise exception using
            errcode = 'null_value_not_allowed',
            message = 'broadcast.revoke: claim and value must not be NULL',
            hint    = 'Pass the claim and value given to broadcast.grant, e.g. broadcast.revoke(''role'', ''kitchen'', ''order''); omit the pattern to revoke all of that claim value''s grants.';
    end if;
    if not has_table_privilege('broadcast.grants', 'DELETE') then
        raise exception using
            errcode = 'insufficient_privilege',
            message = format('broadcast.revoke: role %I may not remove grants', current_user),
            hint    = format('Run broadcast.revoke as the owner of broadcast.grants (%s), or grant delete on broadcast.grants to this role.',
                             (select relowner from pg_class where oid = 'broadcast.grants'::regclass)::regrole);
    end if;

    delete from broadcast.grants g
     where g.claim = v_claim
       and g.value = v_value
       and (v_pattern is null or g.pattern = v_pattern);
    get diagnostics n = row_count;
    return n;
end
$fn$;

comment on function broadcast.revoke(text, text, text) is
'broadcast.revoke(claim, value, pattern => NULL): delete the grant (claim, value, pattern), or every grant of (claim, value) when pattern is NULL. Patterns are compared as written (''order'' and ''order:*'' are different grants). Returns the number of grants deleted; 0 is not an error. Subscriptions already open end at the server''s next re-check.';

-- The server's role only needs to call authorize(), which reads grants as that role:
-- grants are not secret (claim values and channel patterns), so everyone may read them.
-- Adding and removing grants needs INSERT/DELETE on the table: only its owner has them.
grant select on broadcast.grants to public;
grant execute on function broadcast._claim_has(jsonb, text, text) to public;
grant execute on function broadcast.authorize(jsonb, text, text) to public;
grant execute on function broadcast.grant(text, text, text) to public;
grant execute on function broadcast.revoke(text, text, text) to public;
