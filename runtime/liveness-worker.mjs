// Runs in a worker thread of every host, on a NATS connection of its own:
// sends the host's heartbeats, judges the beats of the hosts it is told to
// watch (those it shares a session with), and answers probes. On its own
// thread and connection, a garbage collection or a burst of work on the
// host's main thread neither delays our beats nor makes us misjudge theirs;
// SIGSTOP and SIGKILL stop this thread with the rest of the process, which
// is what must be seen. Plain JavaScript: it starts without a TypeScript loader.
//
// A host beats on ftm.hb.<id> every intervalMs while it holds sessions (and
// not at all otherwise: nobody watches it). Watchers run a phi-accrual
// detector per watched host (phi-accrual.mjs) and post a suspicion to the
// main thread, which confirms it with a probe before anyone is declared dead.
// The probe goes out early, from here: once a host has been silent for
// `minSilenceMs - probeTimeoutMs` (2 beats at least), and waits until
// `minSilenceMs + probeTimeoutMs` of silence, so that when phi suspects the
// host the probe's answer (any answer counts as a beat) or its timeout is
// known soon, and the suspicion arrives confirmed.
import { Buffer } from 'node:buffer';
import { parentPort, workerData } from 'node:worker_threads';
import { connect } from '@nats-io/transport-node';
import { PhiAccrualDetector } from './phi-accrual.mjs';

const {
  servers,
  hostId,
  connectionName,
  intervalMs,
  detector: detectorOptions,
  minSilenceMs,
  mainHangMs,
  ticks,
} = workerData;
const mainTick = new Int32Array(ticks);
const prefix = 'ftm.hb.';
const nc = await connect({
  servers,
  name: connectionName,
  reconnectTimeWait: 100,
  maxReconnectAttempts: -1,
});
const detector = new PhiAccrualDetector(detectorOptions);
/** Whether this host holds sessions, and so beats. */
let fast = false;
/** The incarnation the probes answer with. */
let incarnation = new Uint8Array(0);
/**
 * Whether the host's main connection is up: a host that cannot reach its
 * sessions' subjects is gone for everyone else, even if this thread runs.
 */
let connected = true;
/**
 * Watched host id -> { sub, suspected, since, probe }: `probe` is the early
 * probe of the current silence: 'pending', 'unanswered', or undefined.
 */
const watched = new Map();
/** How long an early probe waits (the main thread's adaptive probe timeout). */
let probeTimeoutMs = 10;
/** A watched host that never beat is suspected after this long. */
const firstBeatMs = 1_000;

const onBeat = (id) => {
  const w = watched.get(id);
  if (!w) return;
  detector.heartbeat(id, performance.now());
  w.suspected = false;
  w.probe = undefined;
};

/**
 * Probes a silent host now; an answer is a beat, no answer confirms a
 * suspicion. It waits until the probe timeout past the shortest suspicion
 * (`minSilenceMs`), not less: a probe sent early in a hiccup must not be
 * judged within the same hiccup.
 */
const probeEarly = (id, w, silence) => {
  w.probe = 'pending';
  // Each probe settles only the silence it was sent in: a late answer or
  // timeout of an earlier one must not decide a later silence.
  const generation = ++w.probes;
  const timeout = probeTimeoutMs + Math.max(0, minSilenceMs - silence);
  const current = () => watched.get(id) === w && w.probes === generation && w.probe === 'pending';
  nc.request(`ftm.h.${id}.probe`, new Uint8Array(0), { timeout }).then(
    () => {
      // An answer is a sign of life whenever it comes.
      if (watched.get(id) === w && w.probe !== undefined) onBeat(id);
    },
    (err) => {
      if (!current()) return;
      w.probe = 'unanswered';
      w.probeWhy = `${err?.code === '503' || /no responders/i.test(String(err?.message)) ? 'no responders' : 'no answer'} in ${timeout.toFixed(0)} ms, sent after ${silence.toFixed(1)} ms of silence`;
      if (w.suspectWaits) suspect(id, w, performance.now());
    },
  );
};

const suspect = (id, w, now) => {
  w.suspected = true;
  w.suspectWaits = false;
  parentPort.postMessage({
    type: 'suspect',
    id,
    at: performance.timeOrigin + now,
    confirmed: w.probe === 'unanswered',
    why: `silent ${(now - (detector.has(id) ? detector.lastHeartbeatMs(id) : w.since)).toFixed(1)} ms${w.probe === 'unanswered' ? `, probe: ${w.probeWhy}` : ''}`,
  });
};

const watch = (ids) => {
  const want = new Set(ids);
  for (const [id, w] of watched)
    if (!want.has(id)) {
      w.sub.unsubscribe();
      detector.remove(id);
      watched.delete(id);
    }
  for (const id of want) {
    if (watched.has(id) || id === hostId) continue;
    const sub = nc.subscribe(`${prefix}${id}`, { callback: () => onBeat(id) });
    watched.set(id, {
      sub,
      suspected: false,
      since: performance.now(),
      probe: undefined,
      probes: 0,
      probeWhy: '',
      suspectWaits: false,
    });
  }
};

// Our own beats, echoed by the server: when they come back late, the server
// or this machine is congested, and the others' beats may be late for the
// same reason: judge nobody until ours flow again.
let lastEcho = performance.now();
nc.subscribe(`${prefix}${hostId}`, { callback: () => (lastEcho = performance.now()) });

// The main thread ticks a shared counter; when it stops ticking for
// mainHangMs (an endless loop), we stop beating and answering probes: the host is hung.
let lastTick = Atomics.load(mainTick, 0);
let lastTickChange = performance.now();
const mainAlive = (now) => {
  const tick = Atomics.load(mainTick, 0);
  if (tick !== lastTick) {
    lastTick = tick;
    lastTickChange = now;
  }
  return now - lastTickChange <= mainHangMs;
};

nc.subscribe(`ftm.h.${hostId}.probe`, {
  callback: (_err, msg) => {
    if (connected && mainAlive(performance.now())) msg.respond(incarnation);
  },
});

const beatFrame = new Uint8Array([1]);
/**
 * This thread, or our own beats' echo, late by more than this: the silence
 * we would measure is ours. Half the shortest suspicion on top of the period
 * (bench/README.md, detector: that catches the delays that hit every host at once).
 */
const guardMs = intervalMs + minSilenceMs / 2;
let lastCheck = performance.now();
const tick = () => {
  const now = performance.now();
  if (fast && connected && mainAlive(now)) nc.publish(`${prefix}${hostId}`, beatFrame);
  const late = now - lastCheck > guardMs;
  lastCheck = now;
  if (late || (fast && now - lastEcho > guardMs)) {
    // This thread was held up, or our own beats come back late: the
    // silence we would measure is ours, not theirs.
    for (const id of watched.keys()) if (detector.has(id)) detector.heartbeat(id, now);
    return;
  }
  for (const [id, w] of watched) {
    if (w.suspected || w.suspectWaits) continue;
    const silence = detector.has(id) ? now - detector.lastHeartbeatMs(id) : 0;
    if (
      detector.has(id) &&
      w.probe === undefined &&
      silence >= Math.max(2 * intervalMs, minSilenceMs - probeTimeoutMs)
    )
      probeEarly(id, w, silence);
    // phi says how improbable the silence is given the host's own beats; the
    // floor keeps a very steady history from turning a short delay into one.
    const suspected = detector.has(id)
      ? silence >= minSilenceMs && detector.phi(id, now) >= detector.threshold
      : now - w.since > firstBeatMs;
    if (!suspected) continue;
    // The early probe still waits: its answer (a beat) or its timeout decides.
    if (w.probe === 'pending') w.suspectWaits = true;
    else suspect(id, w, now);
  }
};
// One timer for both: every wake-up costs CPU on a small machine.
let timer = setInterval(tick, intervalMs);
await nc.flush();

parentPort.on('message', (m) => {
  if (m.type === 'watch') watch(m.ids);
  else if (m.type === 'fast') {
    if (m.on && !fast) lastEcho = lastCheck = performance.now();
    fast = m.on;
    if (fast) nc.publish(`${prefix}${hostId}`, beatFrame);
  } else if (m.type === 'incarnation') incarnation = Buffer.from(m.value, 'utf8');
  else if (m.type === 'connected') connected = m.on;
  else if (m.type === 'probe-timeout') probeTimeoutMs = m.ms;
  else if (m.type === 'stop') {
    clearInterval(timer);
    timer = undefined;
    nc.flush()
      .then(() => nc.close())
      .then(
        () => parentPort.postMessage({ type: 'stopped' }),
        () => parentPort.postMessage({ type: 'stopped' }),
      );
  }
});
parentPort.postMessage({ type: 'ready' });
