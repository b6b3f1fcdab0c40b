// A Laravel Echo + pusher-js client, configured as the Expo app configures it, for
// tests/test_pusher_js.py. Config comes as JSON in $ECHO_CONFIG:
//   {host, port, key, token, sessionId, userId}
// Everything it sees is printed as one JSON object per line; it reads commands on stdin:
//   "whisper"  -> whisper `typing` on the presence channel
//   "quit"     -> disconnect and exit
import readline from "node:readline";

import Echo from "laravel-echo";
import Pusher from "pusher-js";

const cfg = JSON.parse(process.env.ECHO_CONFIG);
const out = (line) => process.stdout.write(JSON.stringify(line) + "\n");

const echo = new Echo({
  broadcaster: "pusher",
  key: cfg.key,
  cluster: "mt1",
  wsHost: cfg.host,
  wsPort: cfg.port,
  wssPort: cfg.port,
  forceTLS: false,
  enabledTransports: ["ws"],
  disableStats: true,
  authEndpoint: `http://${cfg.host}:${cfg.port}/broadcasting/auth`,
  auth: { headers: { Authorization: `Bearer ${cfg.token}` } },
  Pusher,
});

const connection = echo.connector.pusher.connection;
connection.bind("state_change", (s) => out({ kind: "state", state: s.current }));
connection.bind("error", (e) => out({ kind: "error", error: e?.data ?? e?.error?.data ?? null }));

const session = `sport-session.${cfg.sessionId}`;
const track = (channel, name) =>
  channel
    .subscribed(() => out({ kind: "subscribed", channel: name }))
    .error((e) => out({ kind: "subscription_error", channel: name, status: e?.status ?? null }));
const event = (channel, name) => (data) => out({ kind: "event", channel, event: name, data });

track(echo.private(session), `private-${session}`)
  .listen(".comment.created", event(`private-${session}`, "comment.created"))
  .listen(".comment.deleted", event(`private-${session}`, "comment.deleted"));

const presence = track(echo.join(session), `presence-${session}`)
  .here((users) => out({ kind: "here", users }))
  .joining((user) => out({ kind: "joining", user }))
  .leaving((user) => out({ kind: "leaving", user }))
  .listen(".user.typing", event(`presence-${session}`, "user.typing"))
  .listenForWhisper("typing", (data) => out({ kind: "whisper", data }));

track(echo.private(`user.${cfg.userId}`), `private-user.${cfg.userId}`)
  .listen(".mention.created", event(`private-user.${cfg.userId}`, "mention.created"));

const input = readline.createInterface({ input: process.stdin });
input.on("line", (line) => {
  const command = line.trim();
  if (command === "whisper") {
    presence.whisper("typing", { isTyping: true });
    out({ kind: "whispered" });
  } else if (command === "quit") {
    echo.disconnect();
    input.close();
    process.exit(0);
  }
});
