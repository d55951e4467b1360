// The baseline: a bare undici loop that sends the same heartbeat traffic as the keeper, with no lease
// logic (no state machine, no fence, no jobs, no logging, no metrics). Run as its own process so that
// its CPU can be read from /proc like the keeper's.
//
//   node bench/baseline.mjs <url> <token> <environment_id> <items>
//
// 1. Prep (not measured): poll + ack `items` items, take each lease (NO_HEARTBEAT), then heartbeat
//    every item at `intervalMs` (from the first stdin line) so no lease lapses. Prints {"ready":true}.
// 2. On stdin `go <count>`: counts heartbeats from zero and stops sending after <count> of them;
//    prints {"done":true,...} once the last reply has been read.
// Per heartbeat it does what any correct sender must: a fresh x-request-id and Idempotency-Key, the
// precondition carried from the previous reply (JSON parse of the body), same headers as the keeper.
import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import { Pool } from 'undici';

const [url, token, envId, itemsArg] = process.argv.slice(2);
const ITEMS = Number(itemsArg);
const WORKER = 'bench-baseline';
const base = `/api/v1/cloud/environments/${envId}/work`;
const pool = new Pool(url, { headersTimeout: 0, bodyTimeout: 0 });
const headers = { authorization: `Bearer ${token}`, 'user-agent': `bench-baseline (node ${process.version})`, accept: 'application/json' };

async function call(method, path, extra = {}) {
  const res = await pool.request({ path: base + path, method, headers: { ...headers, 'x-request-id': randomUUID(), ...extra } });
  const body = await res.body.json();
  if (res.statusCode >= 300) throw new Error(`${method} ${path}: ${res.statusCode} ${JSON.stringify(body)}`);
  return body;
}

const heartbeat = (id, expected) =>
  call('POST', `/${id}/heartbeat?expected_last_heartbeat=${encodeURIComponent(expected)}&desired_ttl_seconds=60`, { 'idempotency-key': randomUUID() });

const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((r) => lines.once('line', r));

const intervalMs = Number((await nextLine()).trim());

// ---- prep: claim everything with parallel pollers, take the leases, keep them alive ----
const held = []; // { id, precondition }
let counting = false;
let counted = 0;
let limit = Infinity;
let inFlight = 0;
let failures = 0;
let finished = null;

// The keeper's timing rule, so that both send the same traffic in time as well as in count: the next beat
// is planned from the SEND time of the last one, at the interval minus up to 10 % jitter. (A fixed delay
// after each reply keeps the beats of items claimed together bunched up, and bunched beats share
// wake-ups: the same emulator then spent ~40 % less CPU per beat than under the keeper's spread beats.)
// `intervalMs` is the keeper's measured mean interval; with jitter uniform in [0, 10 %] the mean is 0.95 x.
const planMs = () => (intervalMs / 0.95) * (1 - Math.random() * 0.1);

function beat(item) {
  if (counting && counted >= limit) return;
  if (counting) counted++;
  inFlight++;
  const sentAt = performance.now();
  heartbeat(item.id, item.precondition).then(
    (reply) => {
      item.precondition = reply.last_heartbeat;
      done();
    },
    () => {
      failures++;
      done();
    },
  );
  function done() {
    inFlight--;
    if (!counting || counted < limit) item.timer = setTimeout(() => beat(item), Math.max(0, sentAt + planMs() - performance.now()));
    else if (inFlight === 0) finished?.();
  }
}

async function poller() {
  while (held.length < ITEMS) {
    const item = await call('GET', `/poll?block_ms=200`, { 'worker-id': WORKER });
    if (item === null) continue;
    await call('POST', `/${item.id}/ack`, { 'worker-id': WORKER });
    const reply = await heartbeat(item.id, 'NO_HEARTBEAT');
    const h = { id: item.id, precondition: reply.last_heartbeat, timer: null };
    held.push(h);
    h.timer = setTimeout(() => beat(h), planMs());
  }
}
await Promise.all(Array.from({ length: 16 }, poller));
process.stdout.write(`${JSON.stringify({ ready: true, held: held.length })}\n`);

const go = (await nextLine()).trim().split(' ');
limit = Number(go[1]);
counted = 0;
counting = true;
const t0 = performance.now();
await new Promise((r) => (finished = r));
process.stdout.write(`${JSON.stringify({ done: true, sent: counted, failures, seconds: (performance.now() - t0) / 1000 })}\n`);
for (const h of held) clearTimeout(h.timer);
await pool.close();
setInterval(() => {}, 60_000); // stay (for the driver's last /proc reading) until killed
