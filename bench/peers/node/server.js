// A SYNC-009 server as a Node team writes it by hand: `ws` for the sockets,
// `pg` LISTENing on the kit's Postgres channel. Every notification is already
// {"channel","event","payload"}; it goes to the channel's subscribers as it is.
// No acknowledgement of a subscribe (the protocol has none).
//
//   DATABASE_URL=postgres://… [PORT=0] [PG_CHANNEL=pgbroadcast] node server.js
const { Client } = require('pg');
const { WebSocketServer } = require('ws');

const subscribers = new Map(); // channel -> Set<WebSocket>

function topics(list) {
  return Array.isArray(list) ? list.filter((t) => typeof t === 'string') : [];
}

async function main() {
  const pg = new Client({ connectionString: process.env.DATABASE_URL });
  pg.on('error', (err) => { console.error(`postgres: ${err.message}`); process.exit(1); });
  pg.on('end', () => { console.error('postgres connection ended'); process.exit(1); });
  pg.on('notification', (n) => {
    let channel;
    try { channel = JSON.parse(n.payload).channel; } catch { return; }
    const sockets = subscribers.get(channel);
    if (!sockets) return;
    for (const ws of sockets) ws.send(n.payload);
  });
  await pg.connect();
  await pg.query(`LISTEN "${(process.env.PG_CHANNEL || 'pgbroadcast').replace(/"/g, '""')}"`);

  const wss = new WebSocketServer({ host: '127.0.0.1', port: Number(process.env.PORT || 0), path: '/ws/broadcast' });
  wss.on('connection', (ws) => {
    const mine = new Set();
    ws.on('message', (raw) => {
      let msg;
      try { msg = JSON.parse(raw); } catch { return; }
      for (const c of topics(msg.subscribe)) {
        mine.add(c);
        if (!subscribers.has(c)) subscribers.set(c, new Set());
        subscribers.get(c).add(ws);
      }
      for (const c of topics(msg.unsubscribe)) {
        mine.delete(c);
        subscribers.get(c)?.delete(ws);
      }
    });
    ws.on('close', () => { for (const c of mine) subscribers.get(c)?.delete(ws); });
  });
  wss.on('listening', () => {
    console.log(`listening on ws://127.0.0.1:${wss.address().port}/ws/broadcast`);
  });
}

main().catch((err) => { console.error(err.message); process.exit(1); });
