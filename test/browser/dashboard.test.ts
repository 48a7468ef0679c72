/**
 * The dashboard and the demo page in a real browser (headless Chromium
 * driven by playwright-core), served by `ftmesh dev`: a real nats-server,
 * its three host processes (run with --allow-crash) and its gateway process
 * (with --dashboard), and the links dev prints. A person plays the game in
 * the demo page, kills the game session's primary from the dashboard, and
 * keeps playing on the same connection while the dashboard draws the
 * failover. Screenshots of both pages go to test-artifacts/.
 */
import { strict as assert } from 'node:assert';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import type { MeshClient } from '../../runtime/index.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { createTestClient, spawnNode, type NodeProcess } from '../helpers/processes.ts';
import { until } from '../helpers/until.ts';
import { launchChromium, pageProblems, screenshot } from './chromium.ts';

/** What the demo page shows, read from the page: its SDK session and its DOM. */
type DemoView = {
  connected: boolean;
  reconnects: number;
  tick: number;
  x: number;
  y: number;
  tickText: string;
  statusText: string;
  problem: string;
};

/** The page setting of the Jaeger UI that failovers link their traces to. */
const JAEGER = 'http://jaeger.test:16686';
/** actors/game.ts: the world wraps around at 100. */
const SIZE = 100;
/** Steps from `a` to `b` going forward on the torus. */
const forward = (a: number, b: number) => (b - a + SIZE) % SIZE;

/**
 * Reads the demo page's state in the page: a string, because tsx would wrap
 * a named function of the test's source in a helper the page does not have.
 */
const READ_DEMO = `(() => {
  const s = globalThis.ftmeshDemo?.session;
  const view = s?.state;
  const me = view?.players?.[view.you];
  const text = (id) => document.getElementById(id)?.textContent ?? '';
  return {
    connected: Boolean(s?.connected),
    reconnects: s?.reconnects ?? -1,
    tick: view?.tick ?? -1,
    x: me?.x ?? -1,
    y: me?.y ?? -1,
    tickText: text('tick'),
    statusText: text('connection'),
    problem: text('problem'),
  };
})()`;
const readDemo = (page: Page) => page.evaluate<DemoView>(READ_DEMO);

describe('browser: the dashboard kills the primary of the game the demo page plays', function () {
  this.timeout(120_000);
  let dev: NodeProcess | undefined;
  let browser: Browser | undefined;
  let context: BrowserContext | undefined;
  let mesh: MeshClient | undefined;
  const pages = new Map<string, Page>();
  /** Stands in for a trace collector: the OTLP/JSON bodies the hosts export. */
  let traces: Server | undefined;
  const exported: string[] = [];

  // Registered before useNatsServer's: the mesh goes before its nats-server.
  after(async function () {
    this.timeout(30_000);
    await context?.close();
    await browser?.close();
    await mesh?.close();
    await dev?.stop(); // SIGTERM: dev stops every child it started, by pid
    traces?.close();
    traces?.closeAllConnections(); // the exporters' keep-alive sockets
    // Whatever dev left behind (when it was killed itself, after 3 s) goes by pid.
    for (const line of dev?.stdout ?? [])
      for (const m of line.matchAll(/pid (\d+)/g)) {
        try {
          process.kill(Number(m[1]), 'SIGKILL');
        } catch {
          // gone already: what should be
        }
      }
  });
  const nats = useNatsServer();
  afterEach(async function () {
    if (this.currentTest?.state !== 'failed') return;
    for (const [name, page] of pages)
      console.log(`      screenshot: ${await screenshot(page, `${name}-failed.png`)}`);
    if (dev)
      console.log(`--- ftmesh dev ---\n${[...dev.stdout, ...dev.stderr].slice(-40).join('\n')}`);
  });

  it('the demo plays on the same connection while the dashboard kills its primary and draws the failover', async () => {
    // ---- ftmesh dev, and the links it prints ------------------------------------------------
    browser = await launchChromium(); // first: without Chromium the test fails at once, saying so
    traces = createServer((req, res) => {
      const body: Buffer[] = [];
      req.on('data', (c: Buffer) => body.push(c));
      req.on('end', () => {
        exported.push(Buffer.concat(body).toString('utf8'));
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((resolve) => traces!.listen(0, '127.0.0.1', resolve));
    const collector = `http://127.0.0.1:${(traces.address() as AddressInfo).port}/v1/traces`;
    // The hosts and the gateway export traces (failover traces are always kept), every 200 ms.
    dev = spawnNode('cli/ftmesh.ts', ['dev', '--nats', nats.url, '--port', '0'], {
      env: {
        FTMESH_SECRET: undefined,
        OTEL_EXPORTER_OTLP_ENDPOINT: undefined,
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: collector,
        OTEL_BSP_SCHEDULE_DELAY: '200',
      },
    });
    mesh = await createTestClient(nats.url);
    await dev.waitForLine(/^stop: +Ctrl-C$/, 60_000);
    const link = (name: string) => {
      const line = dev!.stdout.find((l) => l.startsWith(`${name}:`)) ?? '';
      const url = line.split(/\s+/)[1] ?? '';
      assert.match(url, new RegExp(`^http://127\\.0\\.0\\.1:\\d+/${name}/#token=[\\w.-]+$`), line);
      return url;
    };
    const demoUrl = link('demo');
    const dashboardUrl = link('dashboard');
    context = await browser.newContext({ viewport: { width: 1100, height: 900 } });

    // ---- the demo page: the game-1 session opens on its hello; play ----------------------
    const demo = await context.newPage();
    pages.set('demo', demo);
    const demoProblems = pageProblems(demo, 'demo');
    await demo.goto(demoUrl);
    const start = (await until(
      async () => {
        const v = await readDemo(demo);
        return v.connected && v.tick > 5 && v.x >= 0 ? v : undefined;
      },
      { timeoutMs: 15_000, message: 'the demo page connected and the room ticks' },
    ))!;
    assert.match(start.tickText, /^\d+$/, 'the page shows the tick');
    await demo.keyboard.down('ArrowRight');
    await until(async () => forward(start.x, (await readDemo(demo)).x) >= 3, {
      message: 'ArrowRight moves the player right',
    });
    await demo.keyboard.up('ArrowRight');
    const played = await readDemo(demo);
    assert.match(played.tickText, /^\d+$/);
    assert.ok(Number(played.tickText) > start.tick, 'the page shows the tick going on');

    // ---- the dashboard: hosts, the session, its kill button ------------------------------
    const dash = await context.newPage();
    pages.set('dashboard', dash);
    const dashProblems = pageProblems(dash, 'dashboard');
    // A Jaeger of the page's setting: where a failover's trace links to.
    await dash.goto(dashboardUrl.replace('/#', `/?jaeger=${encodeURIComponent(JAEGER)}#`));
    assert.equal(await dash.inputValue('#jaeger'), JAEGER);
    const kill = dash.locator('button[data-kill="game-1"]');
    await kill.waitFor({ timeout: 15_000 });
    await until(async () => (await dash.locator('#hosts tr[data-live="true"]').count()) === 3, {
      message: 'three live hosts on the dashboard',
    });
    const row = dash.locator('#sessions tr[data-key="game-1"]');
    const before = mesh.owner('game-1')!;
    assert.ok(before.standby, 'game-1 has a standby to fail over to');
    await until(async () => (await row.textContent())?.includes(before.primary), {
      message: `the dashboard shows ${before.primary} as game-1's primary`,
    });

    // ---- kill the primary from the dashboard, and walk down at once -----------------------
    // The button carries the epoch the page shows: the same as the record's.
    await until(async () => (await kill.getAttribute('data-epoch')) === String(before.epoch), {
      message: `the kill button of epoch ${before.epoch}`,
    });
    const atKill = await readDemo(demo);
    await kill.click();
    // An input sent while the primary is dead: the new primary's first reply answers it.
    await demo.keyboard.down('ArrowDown');
    // A crash under CI load: the host's answer, then its death, may take seconds.
    await until(async () => /SIGKILLed itself/.test((await dash.textContent('#notice')) ?? ''), {
      message: 'the dashboard says the host killed itself',
      timeoutMs: 20_000,
    });
    const after = (await until(
      () => {
        const o = mesh!.owner('game-1');
        return o && o.epoch > before.epoch && o.primary !== before.primary ? o : undefined;
      },
      { timeoutMs: 10_000, message: `a new primary for game-1 after ${before.primary}` },
    ))!;

    // ---- the demo goes on, on the same connection ---------------------------------------
    await until(async () => (await readDemo(demo)).tick > atKill.tick + 20, {
      timeoutMs: 10_000,
      message: 'a second of ticks after the kill',
    });
    await until(async () => forward(atKill.y, (await readDemo(demo)).y) >= 3, {
      message: 'ArrowDown, pressed as the primary died, moves the player down',
    });
    await demo.keyboard.up('ArrowDown');
    // And a new input once the room runs on the new primary.
    const beforeLeft = await readDemo(demo);
    await demo.keyboard.down('ArrowLeft');
    await until(async () => forward((await readDemo(demo)).x, beforeLeft.x) >= 3, {
      message: 'ArrowLeft moves the player left after the failover',
    });
    await demo.keyboard.up('ArrowLeft');
    const end = await readDemo(demo);
    assert.equal(end.reconnects, 0, 'the demo kept its connection');
    assert.equal(end.connected, true);
    assert.match(end.statusText, /^connected · gateway dev-gw · reconnects 0$/);
    assert.equal(end.problem, '');

    // ---- the dashboard draws the failover: kill, detect, promote, first reply ------------
    const figure = dash.locator(
      `figure.failover[data-sid="game-1"][data-epoch="${before.epoch + 1}"]`,
    );
    const marks = ['crash', 'detect', 'promote', 'first-reply'];
    await until(
      async () => {
        for (const m of marks)
          if ((await figure.locator(`svg [data-mark="${m}"]`).count()) !== 1) return false;
        return true;
      },
      {
        timeoutMs: 15_000,
        message: `the timeline of epoch ${before.epoch + 1} with ${marks.join(', ')}`,
      },
    );
    const caption = (await figure.locator('figcaption').textContent()) ?? '';
    assert.ok(caption.includes(`${before.primary} → `), caption);
    const at = async (m: string) =>
      Number(await figure.locator(`[data-mark="${m}"]`).getAttribute('data-ms'));
    assert.ok((await at('crash')) < 0, 'the kill before the detection');
    assert.equal(await at('detect'), 0);
    assert.ok((await at('promote')) >= 0 && (await at('first-reply')) >= (await at('promote')));
    // The failover's trace: linked from the figure, exported by the new primary.
    const record = (await mesh.failoversOf(after.primary)).find(
      (f) => f.sid === 'game-1' && f.epoch === before.epoch + 1,
    );
    assert.ok(record?.traceId, `${after.primary} recorded the failover with its trace`);
    assert.equal(
      await figure.locator('a[data-trace]').getAttribute('href'),
      `${JAEGER}/trace/${record.traceId}`,
    );
    await until(() => exported.some((body) => body.includes(record.traceId)), {
      timeoutMs: 10_000,
      message: `trace ${record.traceId} exported`,
    });
    await until(async () => (await row.textContent())?.includes(after.primary), {
      message: `the dashboard shows ${after.primary} as game-1's primary`,
    });

    console.log(`      screenshot: ${await screenshot(demo, 'demo.png')}`);
    console.log(`      screenshot: ${await screenshot(dash, 'dashboard.png')}`);
    assert.deepEqual([...demoProblems, ...dashProblems], []);
  });
});
