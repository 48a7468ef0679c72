// Runs in a worker thread of every host: sends the host's heartbeats and
// watches everyone else's. On its own thread and its own NATS connection, a
// garbage collection or a long burst of work on the host's main thread
// neither delays our beats nor makes us misjudge theirs; SIGSTOP and SIGKILL
// stop this thread with the rest of the process, which is what must be seen.
// Plain JavaScript: it starts without a TypeScript loader.
import { parentPort, workerData } from 'node:worker_threads';
import { connect } from '@nats-io/transport-node';

const { servers, hostId, intervalMs, timeoutMs, mainHangMs, ticks } = workerData;
const mainTick = new Int32Array(ticks);
const prefix = 'ftm.hb.';
const nc = await connect({
  servers,
  name: `ftm-live-${hostId}`,
  reconnectTimeWait: 100,
  maxReconnectAttempts: -1,
});
let load = new Uint8Array(0);
/** host id -> last beat (performance.now()) */
const lastSeen = new Map();
/** Loads are forwarded to the main thread at most this often per host. */
const forwardEveryMs = 50;
const forwardedAt = new Map();

nc.subscribe(`${prefix}*`, {
  callback: (_err, msg) => {
    const id = msg.subject.slice(prefix.length);
    const now = performance.now();
    if (id === hostId) {
      lastEcho = now;
      return;
    }
    // An empty beat is a goodbye: the host is leaving (closing) and says so.
    if (msg.data.length === 0) {
      lastSeen.delete(id);
      forwardedAt.delete(id);
      parentPort.postMessage({
        type: 'down',
        id,
        at: performance.timeOrigin + now,
        cause: 'leave',
      });
      return;
    }
    const fresh = !lastSeen.has(id);
    lastSeen.set(id, now);
    if (fresh || now - (forwardedAt.get(id) ?? 0) >= forwardEveryMs) {
      forwardedAt.set(id, now);
      parentPort.postMessage({ type: 'beat', id, load: msg.data });
    }
  },
});

// The main thread ticks a shared counter; when it stops ticking for
// mainHangMs (an endless loop), we stop beating: the host is hung.
let lastTick = Atomics.load(mainTick, 0);
let lastTickChange = performance.now();
const beat = () => {
  const now = performance.now();
  const tick = Atomics.load(mainTick, 0);
  if (tick !== lastTick) {
    lastTick = tick;
    lastTickChange = now;
  }
  if (now - lastTickChange > mainHangMs || load.length === 0) return;
  nc.publish(`${prefix}${hostId}`, load);
};

let lastCheck = performance.now();
/** When our own last beat came back through the server. */
let lastEcho = performance.now();
const check = () => {
  const now = performance.now();
  const stalled = now - lastCheck > timeoutMs / 2;
  lastCheck = now;
  // This thread was held up, or our own beats come back late (the server or the
  // machine is congested): the others' beats may be late for the same reason.
  // Judge nobody until our own beats flow again.
  if (stalled || now - lastEcho > timeoutMs / 2) {
    for (const [id, seen] of lastSeen) lastSeen.set(id, Math.max(seen, now - intervalMs));
    return;
  }
  for (const [id, seen] of lastSeen) {
    if (now - seen > timeoutMs) {
      lastSeen.delete(id);
      forwardedAt.delete(id);
      parentPort.postMessage({ type: 'down', id, at: performance.timeOrigin + now });
    }
  }
};

// One timer for both: every wake-up costs CPU on a small machine.
beat();
const timers = [
  setInterval(() => {
    beat();
    check();
  }, intervalMs),
];
await nc.flush();

parentPort.on('message', (m) => {
  if (m.type === 'load') {
    load = m.load;
  } else if (m.type === 'beat-now') {
    beat();
  } else if (m.type === 'stop') {
    for (const t of timers) clearInterval(t);
    nc.publish(`${prefix}${hostId}`, new Uint8Array(0));
    // close() alone drops what is not yet written: flush the goodbye first.
    nc.flush()
      .then(() => nc.close())
      .then(
        () => parentPort.postMessage({ type: 'stopped' }),
        () => parentPort.postMessage({ type: 'stopped' }),
      );
  }
});
parentPort.postMessage({ type: 'ready' });
