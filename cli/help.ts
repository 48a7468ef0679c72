/**
 * The usage text of every command, in one place: `ftmesh --help`, `ftmesh help
 * COMMAND` and `ftmesh COMMAND --help` print these, and cli/README.md says the
 * same at more length.
 */

const exitCodes = `Exit codes:
  0  done
  1  the command failed, or a guarantee it checks broke (demo failover)
  2  usage error: unknown option, bad value, an --actors module that cannot be used
  3  start-up failure: NATS unreachable or without JetStream, --replicas above 1 on
     one server, port in use, no nats-server binary, host id in use`;

const natsOption = `  --nats URL          NATS server(s), comma-separated (default: $FTMESH_NATS, else
                      nats://127.0.0.1:4222); JetStream must be on (ftmesh nats prints a config)`;

const actorsOption = `  --actors MODULE...  .js/.mjs/.ts/.mts files exporting actors (defineActor results,
                      default or named exports, or arrays of them); TypeScript loads
                      through tsx (npm i -D tsx). Default: the example actors`;

export const usage = {
  main: `ftmesh: fault-tolerant session actors over NATS

Usage: ftmesh COMMAND [options]        ftmesh COMMAND --help

Start here:
  dev                  a local mesh (nats-server, hosts, a gateway) that reloads your
                       actors when their files change; prints tokens to connect with
  demo                 a short tour: replication, then a real crash of the primary
  demo failover        SIGKILL the primary of a live session N times, clients attached;
                       checks nothing acknowledged is lost or applied twice

Run a mesh:
  host                 serve sessions of your actors
  gateway              let clients in (WebSocket, UDP) with signed tokens
  nats                 print a nats-server config that works with ftmesh
  token                mint a client or operator token for a gateway

Look and act:
  status               hosts, sessions (with standby lag), recent failovers
  session open|close|list

${exitCodes}

Environment: FTMESH_NATS (default --nats), FTMESH_SECRET (gateway and token secret),
NATS_SERVER_BIN (the nats-server binary dev and demo start),
OTEL_EXPORTER_OTLP_ENDPOINT and the other OTEL_* variables (host and gateway export
traces and metrics over OTLP/HTTP; off without an endpoint).`,

  dev: `Usage: ftmesh dev [--actors MODULE...] [--nats URL] [--hosts N] [--port N] [--secret S]

Runs a local mesh for development, every part its own process: a nats-server
with JetStream (unless --nats), N hosts and a gateway. Prints the gateway's URL,
a client token per actor (a client connecting with one opens its session if it
does not exist), an operator token, links to the dashboard and the game demo
page (their tokens in the link), and what to try next. Its hosts run with
--allow-crash (the dashboard's kill button). When a file next to an --actors
module changes, the hosts restart one at a time, each drained first, so
sessions live through the reload; then the gateway, if the actors changed.
A child that dies is reported and started again. Ctrl-C (or SIGTERM) stops
every process dev started, and dev exits 0.

Options:
${actorsOption}
  --nats URL          use this NATS (JetStream on) instead of starting a nats-server
  --hosts N           host processes (default 3; 2 at least for a standby)
  --port N            the gateway's WebSocket port (default 8080; 0: any free port)
  --secret S          token secret (default: $FTMESH_SECRET, else a random one per run)

${exitCodes}`,

  demo: `Usage: ftmesh demo [--nats URL]

A short tour of a few seconds: a session of a small ledger actor whose primary
is a separate host process and whose hot standby is a host in this process.
Appends go through the primary; each reply is released once the standby applied
it, and both copies hash the same. Then the primary's process is killed with
SIGKILL (a crash, not a polite leave): the standby detects it, takes over in
the next epoch, and the session goes on with nothing lost. Starts a local
nats-server unless --nats is given.

Options:
${natsOption}

${exitCodes}`,

  'demo failover': `Usage: ftmesh demo failover [--actor NAME] [--kills N] [--clients C] [--json] [--nats URL]

Separate processes: a nats-server (unless --nats), 3 hosts and a gateway.
C clients connect through the gateway with the SDK and send a steady stream of
appends to one session; the process serving its primary is killed with SIGKILL
N times (a host is started again after each kill, so there is always a
standby). Prints a timeline per failover (detected, promoted, first reply, the
longest gap a client saw) and a verdict: acknowledged appends lost, appends
applied twice, client reconnects, primary and standby state equal.
Exits 1 when any of these does not hold.

Options:
  --actor NAME        demo-ledger (default: replies released once the standby has
                      them) or demo-ledger-durable (once the log has them too)
  --kills N           primaries to kill, one after the other (default 3)
  --clients C         clients streaming appends (default 4)
  --json              end with one line of JSON: failovers, gap_ms {p50, p99, max},
                      lost, duplicated, reconnects, state_equal, ...
${natsOption}

${exitCodes}`,

  host: `Usage: ftmesh host [--nats URL] [--actors MODULE...] [--id ID] [options]

Runs a host: it serves sessions of its actors as primary or standby. Prints
"ready ID" once it has joined the mesh. SIGTERM or SIGINT drains it (every
primary handed to its standby, every standby moved), then it exits 0; a second
signal stops it at once.

Options:
${natsOption}
${actorsOption}
  --id ID             host id (default: random); letters, digits, _ and -
  --capacity N        most sessions (primaries + standbys) placed here (default 10000)
  --replicas N        JetStream replicas of the log and records: 1 for one server,
                      3 for a cluster of 3 or more (default 1)
  --heartbeat-timeout MS   shortest silence that raises a suspicion (default 15)
  --drain-timeout MS  how long a drain may take before the host stops (default 30000)
  --trace             print every ownership decision, timed, on stderr
  --allow-crash       let an operator crash this process (SIGKILL) on request, from
                      the dashboard; for development and demos only

${exitCodes}`,

  gateway: `Usage: ftmesh gateway [--nats URL] [--actors MODULE...] [options]

Runs a client gateway: WebSocket (and UDP for datagrams) in front of the mesh.
Clients connect with a signed token (ftmesh token). Prints
"ready gateway ID URL udp PORT|off". SIGTERM or SIGINT drains it: in-flight
requests are answered, then clients are sent to another gateway.

Options:
${natsOption}
${actorsOption}
  --id ID             gateway id (default: random)
  --port N            WebSocket port (default 0: any free port, shown in the ready line)
  --udp-port N|off    UDP port for datagrams (default 0: any free port)
  --bind ADDR         address to listen on (default 127.0.0.1)
  --secret S          token secret, 32 bytes at least (default: $FTMESH_SECRET)
  --dashboard         also serve /dashboard/ (hosts, sessions, failover timelines;
                      needs an operator token) and /demo/ (the game example in a
                      browser) over HTTP on the WebSocket port

${exitCodes}`,

  session: `Usage: ftmesh session open ACTOR SID [--init JSON] [--nats URL]
       ftmesh session close SID [--nats URL]
       ftmesh session list [--json] [--nats URL]

open   places a new session on the least loaded live host, its standby on another
close  ends a session: its copies stop, its snapshot and log are deleted
list   every open session: actor, primary, standby, epoch, and the standby's lag
       (how many commits it is behind the primary)

Options:
  --init JSON         the session's initial argument (open)
  --json              one JSON object instead of a table (list)
${natsOption}

${exitCodes}`,

  status: `Usage: ftmesh status [--json] [--nats URL]

The mesh at a glance: hosts (live, load/capacity, sessions), open sessions
(primary, standby, epoch, standby lag), and the recent failovers as timelines
in ms from the detection: detected, promoted, first reply, re-protected.

Options:
  --json              one JSON object: { hosts, sessions, failovers }
${natsOption}

${exitCodes}`,

  nats: `Usage: ftmesh nats [--out FILE] [--port N] [--http-port N] [--store DIR]
                   [--cluster [--node 1|2|3]]

Prints a nats-server config that works with ftmesh (JetStream on, the
disconnect advisories imported into the application account, 8MB payloads,
2 s pings), with comments, and the command that starts nats-server with it.

Options:
  --out FILE          write the config to FILE instead of printing it
  --port N            client port (default 4222)
  --http-port N       monitoring port (default 8222)
  --store DIR         JetStream's directory (default ./ftmesh-jetstream)
  --cluster           the config of one node of a 3-node cluster on this machine
                      (ports +0/+1/+2 per node; hosts then run with --replicas 3)
  --node N            which node of the cluster: 1 (default), 2 or 3

${exitCodes}`,

  token: `Usage: ftmesh token --sub ID [--sid SID] [--role client|operator] [--actor NAME]
                    [--ttl SECONDS] [--secret S]

Prints a signed token (HS256 JWT) for a gateway.

Options:
  --sub ID            the client id
  --sid SID           the one session the token reaches (required for clients)
  --role ROLE         client (default) or operator
  --actor NAME        join-or-create: the gateway opens SID with this actor when
                      it does not exist
  --ttl SECONDS       lifetime (default 3600)
  --secret S          the gateway's secret, 32 bytes at least (default: $FTMESH_SECRET)

${exitCodes}`,
} as const;

export type UsageTopic = keyof typeof usage;

/** The help topic for `ftmesh help WORDS...`, or undefined when there is none. */
export function helpTopic(words: readonly string[]): UsageTopic | undefined {
  if (words.length === 0) return 'main';
  const joined = words.join(' ');
  if (Object.hasOwn(usage, joined)) return joined as UsageTopic;
  if (words[0] === 'session') return 'session';
  if (words[0] === 'demo' && words.length === 1) return 'demo';
  return undefined;
}
