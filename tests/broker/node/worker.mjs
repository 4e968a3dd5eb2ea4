// A minimal MDP/0.1 worker in Node.js, written from docs/PROTOCOL.md alone.
//
// usage: node worker.mjs ENDPOINT SERVICE [HEARTBEAT_MS] [LIVENESS] [CREDIT] [packed|batched]
// Registers SERVICE and answers the command "greet" ({name} -> {greeting, runtime, length}).
// With CREDIT it declares the credit extension; with "packed" it asks for packed delivery
// (PROTOCOL.md §5.1) and answers packed requests packed; with "batched" it asks for batched
// delivery (§5.2) and answers each batch with one batch.
// Prints "ready" once READY is sent; on SIGTERM/SIGINT sends DISCONNECT and exits.
// Follows the worker checklist: heartbeats every interval, reconnects on a new socket after
// DISCONNECT or after LIVENESS silent intervals.
// With ARBITER_CURVE_KEY and ARBITER_BROKER_KEY set, it speaks CURVE (curve.mjs).
import { randomUUID, randomBytes } from "node:crypto";
import { Dealer } from "zeromq";
import { curveOptions } from "./curve.mjs";

const [endpoint, service, heartbeatArg = "2500", livenessArg = "3", credit, delivery] = process.argv.slice(2);
const packed = delivery === "packed" || delivery === "batched"; // both leave out the MDP preamble
const TOKEN_BYTES = 8;
const heartbeatMs = Number(heartbeatArg);
const liveness = Number(livenessArg);
const W = "MDPW01";
const READY = Buffer.from([1]);
const REQUEST = 2;
const REPLY = Buffer.from([3]);
const HEARTBEAT = Buffer.from([4]);
const DISCONNECT = 5;

let sock = null;
let stopping = false;
let sending = Promise.resolve();

// zeromq.js allows one send at a time per socket; heartbeats and replies take turns here.
function send(frames) {
  const target = sock;
  sending = sending.then(() => (target.closed ? undefined : target.send(frames))).catch(() => {});
  return sending;
}

async function open() {
  // A fresh socket per conversation: after DISCONNECT the spec requires a new one.
  sock = new Dealer({ linger: 0, receiveTimeout: heartbeatMs, ...curveOptions() });
  sock.connect(endpoint);
  const options = credit ? [credit, ...(packed ? [delivery] : [])] : [];
  await send(["", W, READY, service, ...options]);
}

const heartbeat = setInterval(() => {
  if (sock && !sock.closed) send(["", W, HEARTBEAT]);
}, heartbeatMs);

async function stop() {
  stopping = true;
  clearInterval(heartbeat);
  if (sock && !sock.closed) {
    await send(["", W, Buffer.from([DISCONNECT])]);
    await new Promise((resolve) => setTimeout(resolve, 100)); // let it leave before the socket goes
    sock.close();
  }
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
    headers: { ...(request.headers || {}), parentSpanId: request.headers?.spanId, spanId: randomBytes(8).toString("hex") },
    payload,
  };
}

function answer(body) {
  try {
    const request = JSON.parse(body.toString());
    return JSON.stringify(replyTo(request, handle(request)));
  } catch (err) {
    return JSON.stringify({
      messageType: "response",
      source: service,
      payload: { status: "error", error: { code: "BAD_REQUEST", message: String(err) } },
    });
  }
}

// Serve one socket until the broker disconnects us or stays silent for LIVENESS intervals.
async function serve() {
  let lastHeard = Date.now();
  while (!stopping) {
    let frames;
    try {
      frames = await sock.receive();
    } catch (err) {
      if (stopping) return;
      if (err.code !== "EAGAIN") throw err;
      if (Date.now() - lastHeard > liveness * heartbeatMs) return; // the broker is gone
      continue;
    }
    lastHeard = Date.now();
    if (packed && frames[0].length >= TOKEN_BYTES) {
      // Packed: one REQUEST, the token then body frame 0 in frame 0. Batched: every frame is a
      // request, token then body. Either way the replies go back in the same shape.
      const requests = delivery === "batched" ? frames : [frames[0]];
      const replies = requests.map((frame) => {
        const token = frame.subarray(0, TOKEN_BYTES);
        return Buffer.concat([token, Buffer.from(answer(frame.subarray(TOKEN_BYTES)))]);
      });
      await send(replies);
      continue;
    }
    if (frames.length < 3 || frames[0].length !== 0 || frames[1].toString() !== W) continue;
    const cmd = frames[2][0];
    if (cmd === DISCONNECT) return; // the broker forgot us (e.g. it restarted)
    if (cmd !== REQUEST || frames.length < 6) continue; // HEARTBEAT: being alive is all it says
    await send(["", W, REPLY, frames[3], "", answer(frames[5])]);
  }
}

await open();
process.stdout.write("ready\n");
let backoff = 100;
while (!stopping) {
  const started = Date.now();
  await serve();
  if (stopping) break;
  sock.close();
  backoff = Date.now() - started > liveness * heartbeatMs ? 100 : Math.min(backoff * 2, 5000);
  await new Promise((resolve) => setTimeout(resolve, backoff));
  if (!stopping) await open();
}
