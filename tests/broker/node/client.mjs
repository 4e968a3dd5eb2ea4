// A minimal MDP/0.1 client in Node.js, written from docs/PROTOCOL.md alone.
//
// usage: node client.mjs ENDPOINT SERVICE COMMAND PARAMETERS_JSON [TIMEOUT_MS]
// Sends one request envelope to SERVICE through the broker and prints the reply body
// (a JSON envelope) on stdout. Exit 0 on a success reply, 1 on an error reply, 2 on timeout.
// With ARBITER_CURVE_KEY and ARBITER_BROKER_KEY set, it speaks CURVE (curve.mjs).
import { randomUUID, randomBytes } from "node:crypto";
import { Dealer } from "zeromq";
import { curveOptions } from "./curve.mjs";

const [endpoint, service, command, parametersJson = "{}", timeoutArg = "10000"] = process.argv.slice(2);
const timeoutMs = Number(timeoutArg);
const retries = 2;

function newEnvelope() {
  const now = new Date();
  const messageId = randomUUID();
  return {
    messageId,
    correlationId: messageId,
    timestamp: now.toISOString(),
    source: "node-client",
    destination: service,
    topic: `plugin/${service}/request`,
    messageType: "request",
    priority: 5,
    headers: { traceId: randomBytes(16).toString("hex"), spanId: randomBytes(8).toString("hex") },
    payload: { command, parameters: JSON.parse(parametersJson), context: {} },
    metadata: {
      retryCount: 0,
      timeout: timeoutMs * (retries + 1),
      expiresAt: new Date(now.getTime() + timeoutMs * (retries + 1)).toISOString(),
    },
  };
}

async function attempt(envelope) {
  // Lazy Pirate: a fresh socket per attempt, so a late reply to an earlier one cannot confuse us.
  const sock = new Dealer({ linger: 0, receiveTimeout: timeoutMs, ...curveOptions() });
  sock.connect(endpoint);
  try {
    await sock.send(["", "MDPC01", service, JSON.stringify(envelope)]);
    for (;;) {
      const frames = await sock.receive();
      if (frames.length < 4 || frames[0].length !== 0 || frames[1].toString() !== "MDPC01") continue;
      const reply = JSON.parse(frames[3].toString());
      if (reply.correlationId && reply.correlationId !== envelope.messageId) continue;
      return reply;
    }
  } catch (err) {
    if (err.code === "EAGAIN") return null;
    throw err;
  } finally {
    sock.close();
  }
}

const envelope = newEnvelope();
for (let i = 0; i <= retries; i++) {
  if (i > 0) envelope.metadata.retryCount = i;
  const reply = await attempt(envelope);
  if (reply) {
    process.stdout.write(JSON.stringify(reply) + "\n");
    process.exit(reply.payload && reply.payload.status === "error" ? 1 : 0);
  }
}
process.stderr.write(`no reply from ${service} after ${retries + 1} attempts\n`);
process.exit(2);
