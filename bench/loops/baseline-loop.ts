// The baseline: a bare undici loop that sends the same heartbeat traffic as the keeper, with no lease
// logic (no state machine, no fence, no jobs, no logging, no metrics). Run as its own process so that
// its CPU can be read from /proc like the keeper's.
//
//   node --import tsx bench/loops/baseline-loop.ts <url> <token> <environment_id> <items>
//
// 1. Prep (not measured): poll + ack `items` items, take each lease (NO_HEARTBEAT), then heartbeat
//    every item at `intervalMs` (from the first stdin line) so no lease lapses. Prints {"ready":true}.
// 2. On stdin `go <count>`: counts heartbeats from zero and stops sending after <count> of them;
//    prints {"done":true,...} once the last reply has been read.
// Per heartbeat it does what any correct sender must: a fresh x-request-id and Idempotency-Key, the
// precondition carried from the previous reply (JSON parse of the body), same headers as the keeper.
import { BareApi, say, stayUntilKilled, stdinLines } from './api.js';

const [url = '', token = '', envId = '', itemsArg = '0'] = process.argv.slice(2);
const ITEMS = Number(itemsArg);
const api = new BareApi(url, token, envId, 'bench-baseline');
const nextLine = stdinLines();
const intervalMs = Number(await nextLine());

interface Held {
  id: string;
  precondition: string;
  timer: NodeJS.Timeout | null;
}

const held: Held[] = [];
let counting = false;
let counted = 0;
let limit = Infinity;
let inFlight = 0;
let failures = 0;
let finished: (() => void) | null = null;

// The keeper's timing rule, so that both send the same traffic in time as well as in count: the next beat
// is planned from the SEND time of the last one, at the interval minus up to 10 % jitter. (A fixed delay
// after each reply keeps the beats of items claimed together bunched up, and bunched beats share
// wake-ups: the same emulator then spent ~40 % less CPU per beat than under the keeper's spread beats.)
// `intervalMs` is the keeper's measured mean interval; with jitter uniform in [0, 10 %] the mean is 0.95 x.
const planMs = (): number => (intervalMs / 0.95) * (1 - Math.random() * 0.1);

function beat(item: Held): void {
  if (counting && counted >= limit) return;
  if (counting) counted++;
  inFlight++;
  const sentAt = performance.now();
  const done = (): void => {
    inFlight--;
    if (!counting || counted < limit) item.timer = setTimeout(() => beat(item), Math.max(0, sentAt + planMs() - performance.now()));
    else if (inFlight === 0) finished?.();
  };
  api.heartbeat(item.id, item.precondition).then(
    (reply) => {
      item.precondition = reply.last_heartbeat;
      done();
    },
    () => {
      failures++;
      done();
    },
  );
}

// Prep: claim everything with parallel pollers, take the leases, keep them alive.
async function poller(): Promise<void> {
  while (held.length < ITEMS) {
    const item = await api.poll(200);
    if (item === null) continue;
    await api.ack(item.id);
    const reply = await api.heartbeat(item.id, 'NO_HEARTBEAT');
    const h: Held = { id: item.id, precondition: reply.last_heartbeat, timer: null };
    held.push(h);
    // The first beat at a uniform phase of the interval: the prep claims all items within a fraction of
    // one interval, and beats planned from there stay bunched for many intervals (the jitter spreads them
    // only slowly), where the keeper's, claimed over a fill of several seconds, are spread over the interval.
    h.timer = setTimeout(() => beat(h), Math.random() * intervalMs);
  }
}
await Promise.all(Array.from({ length: 16 }, poller));
say({ ready: true, held: held.length });

const go = (await nextLine()).split(' ');
limit = Number(go[1]);
counted = 0;
counting = true;
const t0 = performance.now();
await new Promise<void>((r) => (finished = r));
say({ done: true, sent: counted, failures, seconds: (performance.now() - t0) / 1000 });
for (const h of held) if (h.timer) clearTimeout(h.timer);
await api.close();
stayUntilKilled();
