// The `game` example (actors/game.ts) in the browser through the SDK's
// browser bundle: the room's state synced to this page (`session.state`,
// `session.on('state')`), arrow keys or WASD sent as `input`. The token
// comes from the URL (`#token=...`, which `ftmesh dev` prints) and must
// carry the `actor: 'game'` claim (join-or-create). The page's session is
// `window.ftmeshDemo.session`, for the console and tests.
import { connect } from '../ftmesh-client.js';

/** actors/game.ts: the world is SIZE x SIZE cells, wrapping around. */
const SIZE = 100;
const KEYS = {
  ArrowLeft: [-1, 0],
  ArrowRight: [1, 0],
  ArrowUp: [0, -1],
  ArrowDown: [0, 1],
  a: [-1, 0],
  d: [1, 0],
  w: [0, -1],
  s: [0, 1],
};

const hash = new URLSearchParams(location.hash.slice(1));
// The gateway that served this page: the token never goes anywhere else.
const gatewayUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`;
const $ = (id) => document.getElementById(id);
const canvas = $('world');
const g = canvas.getContext('2d');
const cell = canvas.width / SIZE;

let connection = 'connecting';
/** The longest wait between two state updates, ms: a failover shows here. */
let longestGap = 0;
let lastUpdate = 0;
let lastInput = '';

function status() {
  const s = window.ftmeshDemo?.session;
  $('connection').textContent = s
    ? `${connection} · gateway ${s.gateway} · reconnects ${s.reconnects}`
    : connection;
  $('connection').className = `status ${connection === 'connected' ? 'good' : 'warn'}`;
}

function problem(text) {
  $('problem').textContent = text;
}

function draw(view) {
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.strokeStyle = '#eef0f3';
  for (let i = 10; i < SIZE; i += 10) {
    g.beginPath();
    g.moveTo(i * cell, 0);
    g.lineTo(i * cell, canvas.height);
    g.moveTo(0, i * cell);
    g.lineTo(canvas.width, i * cell);
    g.stroke();
  }
  const ids = Object.keys(view.players).sort();
  for (const id of ids) {
    const p = view.players[id];
    const me = id === view.you;
    g.fillStyle = me ? '#1f5fbf' : '#9aa3ad';
    g.fillRect(p.x * cell - cell, p.y * cell - cell, cell * 3, cell * 3);
    g.fillStyle = '#1d232b';
    g.font = me ? 'bold 12px system-ui' : '12px system-ui';
    g.fillText(id, p.x * cell + 2 * cell, p.y * cell - cell);
  }
  $('tick').textContent = String(view.tick);
  const me = view.players[view.you];
  $('you').textContent = me
    ? `you are ${view.you}, at (${me.x}, ${me.y})${view.paused ? ' · the room is paused' : ''}`
    : `you are ${view.you}, not in the room`;
  $('players').replaceChildren(
    ...ids.map((id) => {
      const li = document.createElement('li');
      li.textContent = `${id}: (${view.players[id].x}, ${view.players[id].y})`;
      return li;
    }),
  );
}

/** The direction the held keys make; sent as `input` when it changes. */
const held = new Set();
function steer(session) {
  let dx = 0;
  let dy = 0;
  for (const k of held) {
    dx += KEYS[k][0];
    dy += KEYS[k][1];
  }
  dx = Math.sign(dx);
  dy = Math.sign(dy);
  const key = `${dx},${dy}`;
  if (key === lastInput) return;
  lastInput = key;
  session.request('input', { dx, dy }).then(
    () => problem(''),
    (err) => problem(`input: ${err.code ?? err.name}: ${err.message}`),
  );
}

async function main() {
  const token = hash.get('token');
  if (!token) {
    connection = 'no token';
    status();
    problem(
      'open this page with #token=... : ftmesh dev prints the link; or mint one with ' +
        'ftmesh token --sub NAME --sid game-1 --actor game',
    );
    return;
  }
  let session;
  try {
    session = await connect([gatewayUrl], {
      token,
      onConnectionChange: (e) => {
        if (e.type === 'connected') connection = 'connected';
        else if (e.type === 'disconnected') connection = `reconnecting (lost: ${e.code})`;
        else problem(`${e.code}: ${e.message}`);
        status();
      },
    });
  } catch (err) {
    connection = 'not connected';
    status();
    problem(err.message);
    return;
  }
  window.ftmeshDemo = { session };
  connection = 'connected';
  status();
  session.on('state', (view) => {
    const now = performance.now();
    if (lastUpdate) longestGap = Math.max(longestGap, now - lastUpdate);
    lastUpdate = now;
    $('stall').textContent = `longest wait between two updates: ${longestGap.toFixed(0)} ms`;
    draw(view);
  });
  if (session.state) draw(session.state);
  window.addEventListener('keydown', (e) => {
    const k = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    if (!(k in KEYS) || e.ctrlKey || e.metaKey || e.altKey) return;
    e.preventDefault();
    held.add(k);
    steer(session);
  });
  window.addEventListener('keyup', (e) => {
    const k = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    if (!held.delete(k)) return;
    steer(session);
  });
  window.addEventListener('blur', () => {
    held.clear();
    steer(session);
  });
  void session.closed().then((err) => {
    connection = 'closed';
    status();
    problem(err ? err.message : 'closed');
  });
  canvas.focus();
}

void main();
