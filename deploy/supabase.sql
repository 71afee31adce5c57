-- streamgate schema for Supabase (PostgreSQL 15+). Apply it in the SQL editor or with
--   psql -v ON_ERROR_STOP=1 "$DATABASE_URL" -f deploy/supabase.sql
-- It can be applied again safely, and it never changes a table it did not create: when
-- the project already has a `public.channels` of its own, it stops before changing
-- anything and says so (streamgate can use such a table as it is: docs/supabase.md,
-- "An existing table").
--
-- public.channels   the node's table. Row-level security on; the client roles (anon,
--                   authenticated) get nothing of it, least of all the key column.
--                   service_role (a website's backend with the service key) may read,
--                   create, rename and delete channels; keys are made by the functions
--                   below, which store only their hash.
-- public.create_channel(name), public.rotate_stream_key(channel_id)
--                   for service_role only: generate a key in the database, store its
--                   SHA-256, return the key once (the backend shows it to the streamer
--                   and never stores it).
-- streamgate_node   a login role for the node with only what it uses: it reads
--                   channels, writes their live columns, keeps the nodes registry. Give
--                   it a password and log the node in as it (docs/supabase.md).
-- public.channel_status
--                   a key-free copy of the public columns, kept in sync by a trigger, readable
--                   by anyone, and published to Supabase Realtime (a view cannot be).
-- public.public_channels
--                   the view a website reads with the anon key:
--                   id, name, is_live, live_since, thumbnail (md5 of the id, ".jpg").
-- public.streamgate_nodes
--                   the fleet's registry: each node's id, address, version, start and
--                   last heartbeat. A node not heard from is declared dead by the others,
--                   which mark its channels offline. Not readable by the client roles.

-- All or nothing: one transaction (psql without ON_ERROR_STOP goes on after an error,
-- but inside an aborted transaction nothing more happens, and COMMIT rolls it back).
begin;

-- A `public.channels` this script did not make: stop, change nothing. Ours carries
-- the comment set below, or (made by an earlier version of this script, before the
-- comment) streamgate's own columns.
do $$
begin
    if to_regclass('public.channels') is not null
       and coalesce(obj_description(to_regclass('public.channels'), 'pg_class'), '') <> 'streamgate channels'
       and (select count(*) from information_schema.columns
            where table_schema = 'public' and table_name = 'channels'
              and column_name in ('stream_key_hash', 'live_session', 'live_node')) < 3
    then
        raise exception using
            message = 'public.channels already exists and was not created by this script: nothing was changed',
            hint = 'streamgate can use your table as it is (docs/supabase.md, "An existing table": set database.table and the column names), or apply this script in a project without a public.channels';
    end if;
end $$;

create extension if not exists pgcrypto;

create table if not exists public.channels (
    id              uuid primary key default gen_random_uuid(),
    name            text not null unique,
    stream_key_hash text not null unique,
    is_live         boolean not null default false,
    live_since      timestamptz,
    last_seen       timestamptz,
    live_session    uuid,
    live_node       text,
    live_peer       text,
    relay_targets   jsonb,
    srt_passphrase  text,
    created_at      timestamptz not null default now()
);
-- Added by later versions (a table made by an earlier script gets them here).
alter table public.channels add column if not exists live_peer text;
-- The passphrase an SRT publisher of the channel must encrypt with (NULL: none). A
-- secret like the key: the client roles cannot read this table.
alter table public.channels add column if not exists srt_passphrase text;

comment on table public.channels is 'streamgate channels';
alter table public.channels enable row level security;
revoke all on public.channels from anon, authenticated;
-- A website's backend (the service key): channels without their keys' plain text
-- (keys come from the functions below). service_role is not held back by RLS.
grant select, insert, update, delete on public.channels to service_role;
-- Supabase's service_role bypasses RLS; the policy makes that explicit where it does not.
drop policy if exists "the backend manages channels" on public.channels;
create policy "the backend manages channels" on public.channels
    for all to service_role using (true) with check (true);

create table if not exists public.streamgate_nodes (
    id             text primary key,
    address        text not null,
    version        text not null,
    started_at     timestamptz not null,
    last_heartbeat timestamptz not null default now(),
    -- where the other nodes fetch this node's thumbnails (http.advertise)
    http_url       text
);
alter table public.streamgate_nodes add column if not exists http_url text;
alter table public.streamgate_nodes enable row level security;
revoke all on public.streamgate_nodes from anon, authenticated;
grant select on public.streamgate_nodes to service_role;

create table if not exists public.channel_status (
    id         uuid primary key references public.channels (id) on delete cascade,
    name       text not null,
    is_live    boolean not null default false,
    live_since timestamptz,
    thumbnail  text not null
);

alter table public.channel_status enable row level security;
drop policy if exists "channel status is public" on public.channel_status;
create policy "channel status is public" on public.channel_status
    for select to anon, authenticated using (true);
revoke all on public.channel_status from anon, authenticated;
grant select on public.channel_status to anon, authenticated, service_role;

create or replace function public.streamgate_sync_channel_status() returns trigger
language plpgsql security definer set search_path = public as $$
begin
    insert into public.channel_status (id, name, is_live, live_since, thumbnail)
    values (new.id, new.name, new.is_live, new.live_since, md5(new.id::text) || '.jpg')
    on conflict (id) do update
        set name = excluded.name, is_live = excluded.is_live, live_since = excluded.live_since;
    return new;
end $$;
revoke all on function public.streamgate_sync_channel_status() from public, anon, authenticated;

-- Only the public columns fire it: heartbeats (last_seen) do not churn Realtime.
drop trigger if exists streamgate_channel_status on public.channels;
create trigger streamgate_channel_status
    after insert or update of name, is_live, live_since on public.channels
    for each row execute function public.streamgate_sync_channel_status();

-- Rows that existed before this script.
insert into public.channel_status (id, name, is_live, live_since, thumbnail)
select id, name, is_live, live_since, md5(id::text) || '.jpg' from public.channels
on conflict (id) do nothing;

create or replace view public.public_channels with (security_invoker = true) as
    select id, name, is_live, live_since, thumbnail from public.channel_status;
revoke all on public.public_channels from anon, authenticated;
grant select on public.public_channels to anon, authenticated, service_role;

-- Keys made in the database: `sg_` and 40 hex digits (160 random bits, the node's own
-- format), stored as their SHA-256, returned once.
create or replace function public.create_channel(channel_name text)
returns table (id uuid, stream_key text)
language plpgsql security definer set search_path = public, extensions as $$
declare
    key text := 'sg_' || encode(gen_random_bytes(20), 'hex');
begin
    insert into public.channels (name, stream_key_hash)
    values (channel_name, encode(sha256(convert_to(key, 'UTF8')), 'hex'))
    returning channels.id into id;
    stream_key := key;
    return next;
end $$;

-- A new key for a channel; the old one stops working (a live publish with it is
-- ended by the node within auth.recheck_interval).
create or replace function public.rotate_stream_key(channel_id uuid)
returns text
language plpgsql security definer set search_path = public, extensions as $$
declare
    key text := 'sg_' || encode(gen_random_bytes(20), 'hex');
begin
    update public.channels set stream_key_hash = encode(sha256(convert_to(key, 'UTF8')), 'hex')
    where id = channel_id;
    if not found then
        raise exception 'no channel %', channel_id using errcode = 'no_data_found';
    end if;
    return key;
end $$;

revoke all on function public.create_channel(text) from public, anon, authenticated;
revoke all on function public.rotate_stream_key(uuid) from public, anon, authenticated;
grant execute on function public.create_channel(text) to service_role;
grant execute on function public.rotate_stream_key(uuid) to service_role;

-- The node's login role: what the node does and nothing more. It logs in only once
-- given a password:  alter role streamgate_node with login password '...';
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'streamgate_node') then
        create role streamgate_node nologin;
    end if;
end $$;
grant usage on schema public to streamgate_node;
grant select on public.channels to streamgate_node;
grant update (is_live, live_since, last_seen, live_session, live_node, live_peer)
    on public.channels to streamgate_node;
grant select, insert, update, delete on public.streamgate_nodes to streamgate_node;
drop policy if exists "the node reads and marks channels" on public.channels;
create policy "the node reads and marks channels" on public.channels
    for all to streamgate_node using (true) with check (true);
drop policy if exists "the node keeps the registry" on public.streamgate_nodes;
create policy "the node keeps the registry" on public.streamgate_nodes
    for all to streamgate_node using (true) with check (true);

-- Supabase Realtime: follow public.channel_status (the view's source).
do $$
begin
    if exists (select 1 from pg_publication where pubname = 'supabase_realtime')
       and not exists (select 1 from pg_publication_tables
                       where pubname = 'supabase_realtime' and schemaname = 'public'
                         and tablename = 'channel_status') then
        alter publication supabase_realtime add table public.channel_status;
    end if;
end $$;

commit;
