// Runs in a worker thread of every host: sends the host's heartbeats and
// watches everyone else's. A host that holds sessions beats fast (every
// intervalMs) and is judged on timeoutMs; a host with none has nobody's
// session to lose and beats slowly (slowIntervalMs, judged on slowTimeoutMs):
// it then costs next to nothing. Each beat says which: [1 fast | 0 slow][load].
// On its own thread and its own NATS connection, a garbage collection or a
// long burst of work on the host's main thread neither delays our beats nor
// makes us misjudge theirs; SIGSTOP and SIGKILL stop this thread with the
// rest of the process, which is what must be seen.
// Plain JavaScript: it starts without a TypeScript loader.
import { parentPort, workerData } from 'node:worker_threads';
import { connect } from '@nats-io/transport-node';

const { servers, hostId, intervalMs, timeoutMs, slowIntervalMs, slowTimeoutMs, mainHangMs, ticks } =
  workerData;
const mainTick = new Int32Array(ticks);
const prefix = 'ftm.hb.';
const nc = await connect({
  servers,
  name: `ftm-live-${hostId}`,
  reconnectTimeWait: 100,
  maxReconnectAttempts: -1,
});
let load = new Uint8Array(0);
/** Whether this host beats fast (it holds sessions). */
let fast = false;
/** host id -> last beat (performance.now()) */
const lastSeen = new Map();
/** Hosts whose last beat said they beat slowly. */
const slow = new Set();
/**
 * Beats are forwarded to the main thread at most every forwardEveryMs per
 * host (it learns that the host lives), and at once when a host's load
 * changed: placement needs the change now, not at the next forward.
 */
const forwardEveryMs = 50;
/** host id -> { at, load } of the last beat forwarded */
const forwarded = new Map();
const sameBytes = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

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
      forwarded.delete(id);
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
    if (msg.data[0] === 1) slow.delete(id);
    else slow.add(id);
    const theirs = msg.data.subarray(1);
    const last = forwarded.get(id);
    if (fresh || !last || now - last.at >= forwardEveryMs || !sameBytes(last.load, theirs)) {
      const copy = theirs.slice();
      forwarded.set(id, { at: now, load: copy });
      parentPort.postMessage({ type: 'beat', id, load: copy });
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
  const frame = new Uint8Array(load.length + 1);
  frame[0] = fast ? 1 : 0;
  frame.set(load, 1);
  nc.publish(`${prefix}${hostId}`, frame);
};

let lastCheck = performance.now();
/** When our own last beat came back through the server. */
let lastEcho = performance.now();
const check = () => {
  const now = performance.now();
  // Late beyond half a timeout, on top of the period we tick at.
  const late = (fast ? intervalMs : slowIntervalMs) + timeoutMs / 2;
  const stalled = now - lastCheck > late;
  lastCheck = now;
  // This thread was held up, or our own beats come back late (the server or the
  // machine is congested): the others' beats may be late for the same reason.
  // Judge nobody until our own beats flow again.
  if (stalled || now - lastEcho > late) {
    for (const [id, seen] of lastSeen) lastSeen.set(id, Math.max(seen, now - intervalMs));
    return;
  }
  for (const [id, seen] of lastSeen) {
    // Only a host that beats fast judges fast: its own checks every few ms
    // tell it when its thread was held up. A slow one holds no session and
    // could not tell; it judges everyone on the slow timeout.
    if (now - seen > (fast && !slow.has(id) ? timeoutMs : slowTimeoutMs)) {
      slow.delete(id);
      lastSeen.delete(id);
      forwarded.delete(id);
      parentPort.postMessage({ type: 'down', id, at: performance.timeOrigin + now });
    }
  }
};

// One timer for both: every wake-up costs CPU on a small machine (a beat
// every 5 ms costs a Node process about 10 % of a core here).
const tick = () => {
  beat();
  check();
};
let timer = setInterval(tick, slowIntervalMs);
const setFast = (on) => {
  if (on === fast) return;
  fast = on;
  clearInterval(timer);
  timer = setInterval(tick, fast ? intervalMs : slowIntervalMs);
  lastCheck = lastEcho = performance.now();
  // Say so at once: watchers switch to the timeout that fits.
  beat();
};
beat();
await nc.flush();

parentPort.on('message', (m) => {
  if (m.type === 'load') {
    load = m.load;
    setFast(m.fast);
  } else if (m.type === 'beat-now') {
    beat();
  } else if (m.type === 'stop') {
    clearInterval(timer);
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
