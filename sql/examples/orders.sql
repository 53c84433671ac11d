-- pgbroadcast order example. Run after migrations/V1__broadcast.sql.
-- Idempotent: `pgbroadcast demo` applies it on every start.

create table if not exists orders (
    id         bigserial primary key,
    customer   text,
    status     text not null default 'new',
    created_at timestamptz not null default now()
);

create table if not exists order_items (
    id       bigserial primary key,
    order_id bigint not null references orders(id) on delete cascade,
    sku      text not null,
    quantity int not null check (quantity > 0),
    unique (order_id, sku)
);

-- Route "order" on orders: created / updated / deleted (and a channel-wide
-- "deleted" on TRUNCATE), entity id = orders.id.
select broadcast.enable('orders', 'order');

-- Route "order" on order_items: item changes are signalled as changes of the
-- order (entity id = order_id). UPDATEs of items are not signalled.
select broadcast.enable('order_items', 'order',
       id_column => 'order_id',
       events    => '{"INSERT": "item_added", "DELETE": "item_removed"}');

-- Route "order_status" on orders: an extra "status_changed" on the same channel,
-- only for rows whose status really changed.
select broadcast.enable('orders', 'order', name => 'order_status',
       events => '{"UPDATE": "status_changed"}', when_changed => '{status}');

-- Application-level signal, e.g. after printing a ticket:
--   select broadcast.emit('order', 'printed', '123', '{"printer": "kitchen-2"}');
-- What is installed:
--   select * from broadcast.routes;
