// The ftmesh dashboard: hosts, sessions and failover timelines, read from a
// gateway with an operator token over the client protocol (the `mesh` frame,
// once a second), and a button per session that crashes the process serving
// its primary (the `crash` frame). Plain DOM, no framework, no build step:
// the gateway serves this file as it is (gateway/PROTOCOL.md, "Pages").
import { connect } from '../ftmesh-client.js';

const POLL_MS = 1_000;
const DEFAULT_JAEGER = 'http://localhost:16686';
/** Close codes after which the same token cannot get in (gateway/PROTOCOL.md). */
const TERMINAL_CLOSES = new Set([4400, 4401, 4402, 4403, 4404, 4410]);
const SVG_NS = 'http://www.w3.org/2000/svg';

const hash = new URLSearchParams(location.hash.slice(1));
const query = new URLSearchParams(location.search);
// The gateway that served this page: the token never goes anywhere else.
const gatewayUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`;

const $ = (id) => document.getElementById(id);
const tokenInput = $('token');
const jaegerInput = $('jaeger');
tokenInput.value = hash.get('token') ?? '';
jaegerInput.value =
  query.get('jaeger') ??
  hash.get('jaeger') ??
  localStorage.getItem('ftmesh.jaeger') ??
  DEFAULT_JAEGER;

/** Which run of the connection loop is current: a new token starts another. */
let generation = 0;
/** The current connection, while there is one. */
let session;
/** Resolves the poll loop's wait early (after a crash, to show the failover sooner). */
let wake = () => undefined;

function setText(el, text, tone) {
  if (el.textContent !== text) el.textContent = text;
  el.className = el.className.replace(/\b(good|bad|warn|muted)\b/g, '').trim();
  if (tone) el.classList.add(tone);
}

const say = (text, tone) => setText($('connection'), text, tone);
const notice = (text, tone) => setText($('notice'), text, tone);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k in e) e[k] = v;
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  e.append(...children);
  return e;
}

/**
 * Updates `tbody` to one row per item, keyed by `key`: existing rows are
 * updated in place (a button a person is about to click stays the same
 * element), new ones created, gone ones removed, the order kept.
 */
function syncRows(tbody, items, key, create, update) {
  const rows = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
  let before = tbody.firstElementChild;
  for (const item of items) {
    const k = key(item);
    let tr = rows.get(k);
    rows.delete(k);
    if (!tr) {
      tr = create(item);
      tr.dataset.key = k;
    }
    update(tr, item);
    if (tr !== before) tbody.insertBefore(tr, before);
    else before = before.nextElementSibling;
  }
  for (const tr of rows.values()) tr.remove();
}

const cells = (n) => Array.from({ length: n }, () => el('td'));
const ms = (v) => (v === undefined ? '-' : `${v >= 0 ? '+' : ''}${v.toFixed(1)} ms`);

function ago(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

// ---- hosts and sessions ---------------------------------------------------------------------

function renderHosts(hosts) {
  syncRows(
    $('hosts'),
    hosts,
    (h) => h.id,
    () => el('tr', {}, ...cells(5)),
    (tr, h) => {
      const [id, state, load, primaries, standbys] = tr.children;
      setText(id, h.id);
      if (!h.live) setText(state, `gone (${h.downCause ?? 'unknown'})`, 'bad');
      else if (h.draining) setText(state, 'draining', 'warn');
      else setText(state, 'live', 'good');
      const used = h.primaries + h.standbys;
      const bar = el('span');
      bar.style.width = `${h.capacity ? Math.min(100, (100 * used) / h.capacity) : 0}%`;
      load.replaceChildren(el('span', { className: 'load' }, bar), `${used}/${h.capacity}`);
      setText(primaries, String(h.primaries));
      setText(standbys, String(h.standbys));
      tr.dataset.live = String(h.live);
    },
  );
}

function renderSessions(sessions) {
  syncRows(
    $('sessions'),
    sessions,
    (s) => s.sid,
    (s) => {
      const kill = el('button', {
        type: 'button',
        className: 'kill',
        textContent: 'kill primary',
        title: "SIGKILL the process serving this session's primary",
        dataset: { kill: s.sid },
      });
      kill.addEventListener('click', () => void crash(kill));
      return el('tr', {}, ...cells(7), el('td', {}, kill));
    },
    (tr, s) => {
      const [sid, actor, primary, standby, epoch, seq, lag, action] = tr.children;
      setText(sid, s.sid);
      setText(actor, s.actor);
      setText(primary, s.primary);
      if (s.standby) setText(standby, s.standby);
      else setText(standby, '(none)', 'warn');
      setText(epoch, String(s.epoch));
      setText(seq, s.primarySeq === undefined ? '?' : String(s.primarySeq));
      if (!s.standby) setText(lag, '-', 'muted');
      else if (s.lag === undefined) setText(lag, '?', 'muted');
      else setText(lag, String(s.lag), s.lag > 0 ? 'warn' : undefined);
      for (const td of [epoch, seq, lag]) td.classList.add('num');
      const kill = action.firstElementChild;
      kill.dataset.epoch = String(s.epoch);
      kill.dataset.primary = s.primary;
    },
  );
}

/** The kill button: asks the gateway to crash the process serving the session's primary. */
async function crash(button) {
  const { kill: sid, epoch, primary } = button.dataset;
  if (!session) return;
  button.disabled = true;
  notice(`asking ${primary} to crash (${sid}, epoch ${epoch})…`, 'muted');
  try {
    const r = await session.crash(sid, Number(epoch));
    notice(
      `${r.host} (pid ${r.pid}) SIGKILLed itself: ${sid}'s standby takes over in epoch ${r.epoch + 1}`,
      'good',
    );
    wake();
  } catch (err) {
    notice(`${sid}: ${err.code ?? err.name}: ${err.message}`, 'bad');
  } finally {
    button.disabled = false;
  }
}

// ---- failover timelines -------------------------------------------------------------------

function traceHref(traceId) {
  const given = jaegerInput.value.trim().replace(/\/+$/, '');
  const base = /^https?:\/\/[^/]/i.test(given) ? given : DEFAULT_JAEGER;
  return `${base}/trace/${encodeURIComponent(traceId)}`;
}

/** A step of the axis giving about 6 ticks over `span` ms: 1, 2 or 5 times a power of ten. */
function tickStep(span) {
  const raw = span / 6;
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
}

/**
 * One failover as a timeline on one axis in ms from the detection, in the
 * manner of the FTMesh paper's Figure 1(b): a lane for the old primary (down
 * from the kill to the detection, when the kill came from here), one for the
 * new primary (taking over until its first reply, then serving), one for the
 * new standby (the session unprotected until it is re-protected), and a mark
 * with its time for each step.
 */
function timeline(f) {
  const W = 720;
  const L = 150;
  const R = 20;
  const TIERS = 4;
  const TIER_H = 13;
  const LANE_H = 16;
  const LANE_GAP = 5;
  const top = TIERS * TIER_H + 6;
  const axisY = top + 3 * (LANE_H + LANE_GAP);
  const H = axisY + 22;
  const marks = [
    f.crashMs === undefined ? undefined : ['crash', 'kill', f.crashMs],
    ['detect', 'detected', 0],
    f.promotedMs === undefined ? undefined : ['promote', 'promoted', f.promotedMs],
    f.replayed > 0 && f.replayedMs !== undefined
      ? ['replay', `replayed ${f.replayed}`, f.replayedMs]
      : undefined,
    f.firstReplyMs === undefined ? undefined : ['first-reply', 'first reply', f.firstReplyMs],
    f.reprotectedMs === undefined ? undefined : ['reprotect', 're-protected', f.reprotectedMs],
  ].filter(Boolean);
  const times = marks.map((m) => m[2]).sort((a, b) => a - b);
  const t0 = Math.min(0, times[0]);
  const last = times[times.length - 1];
  const runnerUp = Math.max(1, times[times.length - 2] ?? 0);
  // A step far later than the others (a first reply that waited for a client's
  // request, in a room that only ticks) goes past a break in the axis, so that
  // the others keep their room.
  const broken = last - t0 > 4 * (runnerUp - t0);
  const span = (broken ? runnerUp : Math.max(1, last)) - t0;
  const tEnd = t0 + span * (broken ? 1.1 : 1.08);
  const xEnd = broken ? W - R - 90 : W - R;
  const xOutlier = W - R - 40;
  /** Ms to x; Infinity is the right end (a phase still going on). */
  const x = (t) =>
    t === Infinity ? W - R : t > tEnd ? xOutlier : L + ((t - t0) / (tEnd - t0)) * (xEnd - L);

  const root = svg('svg', {
    viewBox: `0 0 ${W} ${H}`,
    width: W,
    height: H,
    role: 'img',
    'aria-label': `failover of ${f.sid} to epoch ${f.epoch}`,
  });
  const lanes = [
    `${f.from} (old primary)`,
    `${f.to} (new primary)`,
    `${f.standby || '-'} (new standby)`,
  ];
  const laneY = (i) => top + i * (LANE_H + LANE_GAP);
  lanes.forEach((name, i) =>
    root.append(svg('text', { x: 4, y: laneY(i) + LANE_H - 4, class: 'lane-label' }, name)),
  );
  const phase = (lane, from, to, cls, title) => {
    if (x(to) <= x(from)) return;
    root.append(
      svg(
        'rect',
        {
          x: x(from),
          y: laneY(lane),
          width: x(to) - x(from),
          height: LANE_H,
          class: `phase ${cls}`,
        },
        svg('title', {}, title),
      ),
    );
  };
  if (f.crashMs !== undefined) phase(0, f.crashMs, 0, 'down', 'dead, not yet detected');
  const serving = f.firstReplyMs ?? f.promotedMs;
  phase(1, 0, serving ?? Infinity, 'taking-over', 'taking over');
  if (serving !== undefined) phase(1, serving, Infinity, 'serving', 'serving');
  phase(2, 0, f.reprotectedMs ?? Infinity, 'unprotected', 'no standby yet');

  // The axis, with ticks in ms (and the break before a far step).
  const axis = svg('g', { class: 'axis' });
  if (broken) {
    const b = xEnd + 14;
    axis.append(
      svg('line', { x1: L, y1: axisY, x2: b - 3, y2: axisY }),
      svg('line', { x1: b + 3, y1: axisY, x2: W - R, y2: axisY }),
      svg('line', { x1: b - 6, y1: axisY + 5, x2: b, y2: axisY - 5 }),
      svg('line', { x1: b, y1: axisY + 5, x2: b + 6, y2: axisY - 5 }),
      svg('line', { x1: xOutlier, y1: axisY, x2: xOutlier, y2: axisY + 4 }),
      svg('text', { x: xOutlier, y: axisY + 16, 'text-anchor': 'middle' }, `${last.toFixed(0)} ms`),
    );
  } else axis.append(svg('line', { x1: L, y1: axisY, x2: W - R, y2: axisY }));
  const step = tickStep(tEnd - t0);
  for (let v = Math.ceil(t0 / step) * step; v <= tEnd; v += step) {
    axis.append(
      svg('line', { x1: x(v), y1: axisY, x2: x(v), y2: axisY + 4 }),
      svg('text', { x: x(v), y: axisY + 16, 'text-anchor': 'middle' }, `${+v.toFixed(3)} ms`),
    );
  }
  root.append(axis);

  // Marks; each label on the first tier where it does not overlap the last one
  // there, right of its line (left of it at the right edge). Labels are drawn
  // after every line, so that no line crosses a label.
  const labels = svg('g', { class: 'labels' });
  const tierEnd = Array(TIERS).fill(-Infinity);
  for (const [name, label, t] of [...marks].sort((a, b) => a[2] - b[2])) {
    const text = `${label} ${ms(t)}`;
    const mx = x(t);
    const width = text.length * 6.2;
    const atEnd = mx + 3 + width > W - 2;
    let from = atEnd ? mx - 3 - width : mx + 3;
    let tier = tierEnd.findIndex((end) => end < from);
    if (tier < 0) {
      tier = tierEnd.indexOf(Math.min(...tierEnd));
      if (!atEnd) from = tierEnd[tier];
    }
    tierEnd[tier] = from + width + 6;
    const ty = (tier + 1) * TIER_H;
    root.append(
      svg(
        'g',
        { class: 'mark', 'data-mark': name, 'data-ms': t },
        svg('title', {}, text),
        svg('line', { x1: mx, y1: ty + 2, x2: mx, y2: axisY }),
      ),
    );
    labels.append(
      atEnd
        ? svg('text', { x: mx - 3, y: ty, 'text-anchor': 'end', 'data-label': name }, text)
        : svg('text', { x: from, y: ty, 'data-label': name }, text),
    );
  }
  root.append(labels);
  return root;
}

function caption(f, now) {
  const cap = el(
    'figcaption',
    {},
    el('strong', {}, f.sid),
    ` epoch ${f.epoch}: ${f.from} → ${f.to} (${f.cause}), `,
    el(
      'span',
      { className: 'ago', dataset: { at: String(f.detectedAt) } },
      ago(now - f.detectedAt),
    ),
    f.crashMs === undefined || f.firstReplyMs === undefined
      ? ''
      : ` · first reply ${(f.firstReplyMs - f.crashMs).toFixed(1)} ms after the kill`,
    ' · ',
  );
  if (f.traceId)
    cap.append(
      el('a', {
        href: traceHref(f.traceId),
        target: '_blank',
        rel: 'noopener noreferrer',
        textContent: 'trace',
        dataset: { trace: f.traceId },
      }),
    );
  else cap.append(el('span', { className: 'muted', textContent: 'no trace recorded' }));
  return cap;
}

/** Newest first; a figure is drawn again only when its record changed (re-protected later). */
function renderFailovers(failovers, now) {
  const box = $('failovers');
  if (!failovers.length) return;
  box.querySelector(':scope > p')?.remove();
  const figures = new Map([...box.children].map((fig) => [fig.dataset.key, fig]));
  let before = box.firstElementChild;
  for (const f of [...failovers].reverse()) {
    const key = `${f.sid}/${f.epoch}/${f.detectedAt}`;
    const json = JSON.stringify(f);
    let fig = figures.get(key);
    figures.delete(key);
    if (!fig || fig.dataset.json !== json) {
      const fresh = el(
        'figure',
        { className: 'failover', dataset: { key, json, sid: f.sid, epoch: String(f.epoch) } },
        caption(f, now),
        timeline(f),
      );
      if (fig) fig.replaceWith(fresh);
      fig = fresh;
    } else {
      const age = fig.querySelector('.ago');
      setText(age, ago(now - Number(age.dataset.at)));
    }
    if (fig !== before) box.insertBefore(fig, before);
    else before = before.nextElementSibling;
  }
  for (const fig of figures.values()) fig.remove();
}

jaegerInput.addEventListener('change', () => {
  localStorage.setItem('ftmesh.jaeger', jaegerInput.value.trim());
  for (const a of document.querySelectorAll('a[data-trace]')) a.href = traceHref(a.dataset.trace);
});

// ---- the connection and the poll --------------------------------------------------------

function render(answer) {
  renderHosts(answer.hosts);
  renderSessions(answer.sessions);
  renderFailovers(answer.failovers, answer.at);
  const slow = answer.unanswered.map((u) => u.host).join(', ');
  say(
    `gateway ${session.gateway} · ${answer.hosts.filter((h) => h.live).length} live hosts · ` +
      `${answer.sessions.length} sessions · reconnects ${session.reconnects} · ` +
      `updated ${new Date().toLocaleTimeString()}${slow ? ` · not answering: ${slow}` : ''}`,
    slow ? 'warn' : 'good',
  );
}

const pause = (ms) =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    wake = () => {
      clearTimeout(t);
      resolve();
    };
  });

/** Connects with `token` and polls until another token is entered; reconnects when it loses the gateway. */
async function run(token, mine) {
  while (mine === generation) {
    say(`connecting to ${gatewayUrl}…`, 'muted');
    let s;
    try {
      s = await connect([gatewayUrl], {
        token,
        onConnectionChange: (e) => {
          if (e.type === 'disconnected') say(`lost the gateway (${e.code}): reconnecting…`, 'warn');
        },
      });
    } catch (err) {
      say(`not connected: ${err.message}`, 'bad');
      if (TERMINAL_CLOSES.has(err.closeCode)) return; // a new token is needed
      await pause(2_000);
      continue;
    }
    if (mine !== generation) return void s.close();
    session = s;
    let closed = false;
    void s.closed().then(() => (closed = true));
    while (mine === generation && !closed) {
      try {
        render(await s.mesh());
      } catch (err) {
        if (err.name === 'ConnectionClosedError') break;
        say(`${err.code ?? err.name}: ${err.message}`, 'bad');
        if (err.code === 'forbidden') return void s.close(); // not an operator token
      }
      await pause(POLL_MS);
    }
    await s.close();
  }
}

function start() {
  const token = tokenInput.value.trim();
  const mine = ++generation;
  wake();
  void session?.close();
  session = undefined;
  if (!token) return say('enter an operator token (ftmesh dev prints a link with one)', 'warn');
  void run(token, mine);
}

$('settings').addEventListener('submit', (e) => {
  e.preventDefault();
  start();
});
start();
