// A SYNC-009 server on Bun.serve, whose WebSockets are uWebSockets (C++): a
// subscribe is ws.subscribe(topic), a signal is server.publish(topic, frame),
// fanned out natively with corked writes. `pg` LISTENs on the kit's Postgres
// channel; every notification is already {"channel","event","payload"} and is
// published to its channel as it is. No acknowledgement of a subscribe (the
// protocol has none).
//
//   DATABASE_URL=postgres://… [PORT=0] [PG_CHANNEL=pgbroadcast] bun server.js
const { Client } = require('pg');

function topics(list) {
  return Array.isArray(list) ? list.filter((t) => typeof t === 'string') : [];
}

async function main() {
  const pg = new Client({ connectionString: process.env.DATABASE_URL });
  pg.on('error', (err) => { console.error(`postgres: ${err.message}`); process.exit(1); });
  pg.on('end', () => { console.error('postgres connection ended'); process.exit(1); });
  await pg.connect();

  const server = Bun.serve({
    hostname: '127.0.0.1',
    port: Number(process.env.PORT || 0),
    fetch(req, srv) {
      if (new URL(req.url).pathname === '/ws/broadcast' && srv.upgrade(req)) return;
      return new Response('not found', { status: 404 });
    },
    websocket: {
      message(ws, raw) {
        let msg;
        try { msg = JSON.parse(raw); } catch { return; }
        for (const c of topics(msg.subscribe)) ws.subscribe(c);
        for (const c of topics(msg.unsubscribe)) ws.unsubscribe(c);
      },
    },
  });

  pg.on('notification', (n) => {
    let channel;
    try { channel = JSON.parse(n.payload).channel; } catch { return; }
    if (typeof channel === 'string') server.publish(channel, n.payload);
  });
  await pg.query(`LISTEN "${(process.env.PG_CHANNEL || 'pgbroadcast').replace(/"/g, '""')}"`);
  console.log(`listening on ws://127.0.0.1:${server.port}/ws/broadcast`);
}

main().catch((err) => { console.error(err.message); process.exit(1); });
