import { strict as assert } from 'node:assert';
import { stopAll } from '../helpers/processes.ts';
import { runCli } from './cli-helpers.ts';

/**
 * The demos as a user runs them, each with its own nats-server and
 * processes: `ftmesh demo` (the short tour, ending with a real crash) and
 * `ftmesh demo failover --kills 1 --json` (the quick form of the failover
 * demo: its JSON verdict must say nothing was lost or applied twice).
 */

describe('cli: demos', function () {
  this.timeout(90_000);
  after(stopAll);

  it('demo failover --kills 1 --json: one failover, nothing lost or applied twice, no reconnect, replicas equal', async () => {
    const run = await runCli(['demo', 'failover', '--kills', '1', '--clients', '2', '--json'], {
      timeoutMs: 80_000,
    });
    const last = run.stdout.at(-1) ?? '';
    assert.equal(run.code, 0, `${run.stderr.join('\n')}\n${last}`);
    const verdict = JSON.parse(last) as Record<string, any>;
    assert.equal(verdict['failovers'], 1);
    assert.equal(verdict['lost'], 0);
    assert.equal(verdict['duplicated'], 0);
    assert.equal(verdict['reconnects'], 0);
    assert.equal(verdict['state_equal'], true);
    assert.equal(verdict['ok'], true);
    assert.ok(verdict['acknowledged'] > 0);
    const gap = verdict['gap_ms'] as Record<string, number>;
    for (const k of ['p50', 'p99', 'max']) assert.equal(typeof gap[k], 'number', k);
    assert.ok(gap['max']! >= gap['p99']! && gap['p99']! >= gap['p50']! && gap['p50']! > 0);
    const [t] = verdict['timelines'] as Record<string, any>[];
    assert.ok(t!['detected_ms'] <= t!['promoted_ms'] && t!['promoted_ms'] <= t!['first_reply_ms']);
    // The story went to stderr; stdout is the JSON line alone.
    assert.equal(run.stdout.length, 1);
    assert.ok(run.stderr.some((l) => /^kill 1\/1: SIGKILL demo-h\d \(pid \d+\)/.test(l)));
  });

  it('demo: replication, then a real crash of the primary process, nothing lost', async () => {
    const run = await runCli(['demo'], { timeoutMs: 60_000 });
    assert.equal(run.code, 0, run.stderr.join('\n'));
    const out = run.stdout.join('\n');
    assert.match(out, /the standby holds the same state/);
    assert.match(out, /SIGKILL to the primary's process \(pid \d+\): a crash/);
    assert.match(out, /the ledger: 6 appends, 0 lost, 0 applied twice/);
  });
});
