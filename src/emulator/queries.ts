import type { WorkQueueStats } from '../api/types.js';
import type { WorkItem } from '../api/types.js';
import { formatMicros } from './clock.js';
import type { ItemRecord } from './store.js';

export interface WorkPage {
  data: WorkItem[];
  first_id: string | null;
  last_id: string | null;
  has_more: boolean;
  next_page: string | null;
}


/** Pollers seen within this window count in workers_polling. */
export const WORKERS_POLLING_WINDOW_MS = 30_000;

/**
 * Ascending id order (= creation order). `after` (also what `page` means) returns the first `limit` items
 * after it; `before` the last `limit` items before it, still ascending. `has_more`: more items lie beyond
 * the page in the direction of travel; `next_page` = last_id when has_more (forward paging only).
 */
export function listItems(
  records: Iterable<ItemRecord>,
  q: { limit: number; after?: string; before?: string },
): WorkPage {
  const all = [...records].map((r) => r.item).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  let data: WorkItem[];
  let hasMore: boolean;
  if (q.before !== undefined) {
    const earlier = all.filter((i) => i.id < q.before!);
    data = earlier.slice(Math.max(0, earlier.length - q.limit));
    hasMore = earlier.length > q.limit;
  } else {
    const later = q.after === undefined ? all : all.filter((i) => i.id > q.after!);
    data = later.slice(0, q.limit);
    hasMore = later.length > q.limit;
  }
  const first = data[0]?.id ?? null;
  const last = data[data.length - 1]?.id ?? null;
  return {
    data: data.map((i) => ({ ...i, data: { ...i.data }, metadata: { ...i.metadata } })),
    first_id: first,
    last_id: last,
    has_more: hasMore,
    next_page: hasMore && q.before === undefined ? last : null,
  };
}

/**
 * depth: queued items a poll could take now; pending: queued items delivered within their reclaim window
 * (not acked yet); oldest_queued_at: when the longest-waiting queued item (re-)entered the queue;
 * workers_polling: distinct Worker-IDs that polled in the last 30 s.
 */
export function queueStats(records: Iterable<ItemRecord>, pollers: ReadonlyMap<string, number>, nowMs: number): WorkQueueStats {
  let depth = 0;
  let pending = 0;
  let oldestUs: number | null = null;
  for (const rec of records) {
    if (rec.item.state !== 'queued') continue;
    const d = rec.delivery;
    if (d && nowMs - d.atMs < d.reclaimMs) pending++;
    else depth++;
    if (oldestUs === null || rec.queuedAtUs < oldestUs) oldestUs = rec.queuedAtUs;
  }
  let workers = 0;
  for (const seen of pollers.values()) if (nowMs - seen <= WORKERS_POLLING_WINDOW_MS) workers++;
  return {
    type: 'work_queue_stats',
    depth,
    pending,
    oldest_queued_at: oldestUs === null ? null : formatMicros(oldestUs),
    workers_polling: workers,
  };
}
