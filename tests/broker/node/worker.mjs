// A minimal MDP/0.1 worker in Node.js, written from docs/PROTOCOL.md alone.
//
// usage: node worker.mjs ENDPOINT SERVICE [HEARTBEAT_MS]
// Registers SERVICE and answers the command "greet" ({name} -> {greeting, runtime, length}).
// Prints "ready" once READY is sent; on SIGTERM/SIGINT sends DISCONNECT and exits.
import { randomUUID, randomBytes } from "node:crypto";
import { Dealer } from "zeromq";

const [endpoint, service, heartbeatArg = "2500"] = process.argv.slice(2);
const heartbeatMs = Number(heartbeatArg);
const W = "MDPW01";
const READY = Buffer.from([1]);
const REQUEST = 2;
const REPLY = Buffer.from([3]);
const HEARTBEAT = Buffer.from([4]);
const DISCONNECT = Buffer.from([5]);

let sock = null;
let stopping = false;

async function open() {
  // A fresh socket per conversation: after DISCONNECT the spec requires a new one.
  sock = new Dealer({ linger: 0 });
  sock.connect(endpoint);
  await sock.send(["", W, READY, service]);
}

const heartbeat = setInterval(() => {
  try {
    if (sock && !sock.closed) sock.send(["", W, HEARTBEAT]).catch(() => {});
  } catch {}
}, heartbeatMs);

async function stop() {
  stopping = true;
  clearInterval(heartbeat);
  try {
    await sock.send(["", W, DISCONNECT]);
  } catch {}
  sock.close();
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

function handle(request) {
  const { command, parameters = {} } = request.payload || {};
  if (command !== "greet") {
    return { status: "error", error: { code: "UNKNOWN_COMMAND", message: `no command ${command}` } };
  }
  const name = String(parameters.name ?? "world");
  return { status: "success", result: { greeting: `hello ${name}`, runtime: "node", length: name.length } };
}

function replyTo(request, payload) {
  return {
    messageId: randomUUID(),
    correlationId: request.messageId,
    timestamp: new Date().toISOString(),
    source: service,
    destination: request.source ?? "*",
    topic: `plugin/${service}/response`,
    messageType: "response",
    priority: request.priority ?? 5,
    headers: { ...(request.headers || {}), spanId: randomBytes(8).toString("hex") },
    payload,
  };
}

async function serve() {
  for await (const frames of sock) {
    if (frames.length < 3 || frames[1].toString() !== W) continue;
    const cmd = frames[2][0];
    if (cmd === DISCONNECT[0]) return; // the broker forgot us (e.g. it restarted)
    if (cmd !== REQUEST || frames.length < 6) continue;
    const client = frames[3];
    let body;
    try {
      const request = JSON.parse(frames[5].toString());
      body = JSON.stringify(replyTo(request, handle(request)));
    } catch (err) {
      body = JSON.stringify({ payload: { status: "error", error: { code: "BAD_REQUEST", message: String(err) } } });
    }
    await sock.send(["", W, REPLY, client, "", body]);
  }
}

await open();
process.stdout.write("ready\n");
while (!stopping) {
  await serve();
  if (stopping) break;
  sock.close();
  await new Promise((resolve) => setTimeout(resolve, 200));
  await open();
}
