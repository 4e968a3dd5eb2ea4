// CURVE keys for a broker with security on (docs/SECURITY.md), from the environment the Python
// SDK reads too: ARBITER_CURVE_KEY names this peer's secret key file, ARBITER_BROKER_KEY the
// broker's public key file. The files are ZeroMQ certificates (as pyzmq's zmq.auth writes them):
// the keys are the Z85 strings after "public-key =" and "secret-key =". Without the variables,
// no options: the broker is spoken to in the clear.
import { readFileSync } from "node:fs";

function keyIn(path, name) {
  const found = readFileSync(path, "utf8").match(new RegExp(`${name}\\s*=\\s*"([^"]{40})"`));
  if (!found) throw new Error(`${path} holds no ${name}`);
  return found[1];
}

export function curveOptions() {
  const own = process.env.ARBITER_CURVE_KEY;
  const broker = process.env.ARBITER_BROKER_KEY;
  if (!own || !broker) return {};
  return {
    curveServerKey: keyIn(broker, "public-key"),
    curvePublicKey: keyIn(own, "public-key"),
    curveSecretKey: keyIn(own, "secret-key"),
  };
}
