-- streamgate schema for Supabase (PostgreSQL 15+). Apply it in the SQL editor or with
--   psql "$DATABASE_URL" -f deploy/supabase.sql
-- It can be applied again safely.
--
-- public.channels   the node's table. Row-level security on, and no policy for the client
--                   roles: with the anon or authenticated key nothing of it is readable,
--                   least of all the key column. streamgate connects as `postgres` (the
--                   table owner), which RLS does not restrict.
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

alter table public.channels enable row level security;
revoke all on public.channels from anon, authenticated;

create table if not exists public.streamgate_nodes (
    id             text primary key,
    address        text not null,
    version        text not null,
    started_at     timestamptz not null,
    last_heartbeat timestamptz not null default now()
);
alter table public.streamgate_nodes enable row level security;
revoke all on public.streamgate_nodes from anon, authenticated;

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
grant select on public.channel_status to anon, authenticated;

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
grant select on public.public_channels to anon, authenticated;

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
