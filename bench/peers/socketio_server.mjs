// Socket.IO with @socket.io/postgres-adapter, fed the events courtside's triggers NOTIFY.
//
// The deployment a Node team would pick: a Socket.IO server whose adapter carries every
// broadcast through PostgreSQL to the other nodes, and a LISTEN on the channel the database
// already notifies, turning each event into io.to(topic).emit(...). One node: the adapter
// still publishes each broadcast (pg_notify on its own channel) before delivering locally,
// as it does in a cluster. Clients join a topic's room with emit("subscribe", topic).
//
// Environment: PORT, DATABASE_URL.
import http from "node:http";
import process from "node:process";

import { createAdapter } from "@socket.io/postgres-adapter";
import pg from "pg";
import { Server } from "socket.io";

const port = Number(process.env.PORT || 3000);
const connectionString = process.env.DATABASE_URL;
const pool = new pg.Pool({ connectionString, max: 4 });
pool.on("error", (err) => console.error("pool error", err));

await pool.query(`
  CREATE TABLE IF NOT EXISTS socket_io_attachments (
    id bigserial UNIQUE,
    created_at timestamptz DEFAULT NOW(),
    payload bytea
  );
`);

let listening = false;
const httpServer = http.createServer((req, res) => {
  if (req.url === "/readyz") {
    res.writeHead(listening ? 200 : 503, { "content-type": "text/plain" });
    res.end(listening ? "ok" : "starting");
    return;
  }
  res.writeHead(404);
  res.end();
});

const io = new Server(httpServer, {
  adapter: createAdapter(pool),
  transports: ["websocket"],
  perMessageDeflate: false,
  serveClient: false,
});

io.on("connection", (socket) => {
  socket.on("subscribe", (topic) => {
    if (typeof topic !== "string") return;
    socket.join(topic);
    socket.emit("subscribed", topic);
  });
});

const listener = new pg.Client({ connectionString });
await listener.connect();
listener.on("notification", (msg) => {
  let note;
  try {
    note = JSON.parse(msg.payload);
  } catch {
    return;
  }
  if (note.k !== "e" || note.d === undefined) return;
  io.to(note.t).emit(note.e, { topic: note.t, seq: note.s, data: note.d });
});
await listener.query("LISTEN courtside");

httpServer.listen(port, "127.0.0.1", () => {
  listening = true;
});

const stop = () => {
  io.close();
  listener.end().finally(() => pool.end().finally(() => process.exit(0)));
  setTimeout(() => process.exit(0), 3000).unref();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
