// The README's benchmark tables from a results file: `node --import tsx bench/tools/readme-table.ts [file]`.
import { readFileSync } from 'node:fs';

const r = JSON.parse(readFileSync(process.argv[2] ?? 'bench/results/latest.json', 'utf8')) as Record<string, any>;
const v = (x: unknown, unit = ''): string => (x === null || x === undefined ? '–' : `${String(x)}${unit}`);
const rows: string[] = [];
const row = (figure: string, value: string, target = ''): void => void rows.push(`| ${figure} | ${value} | ${target} |`);

const s = r.scale;
if (s) {
  row(`scale: 1000 leases (ttl 10 s, ${v(s.heartbeats_per_s)} heartbeats/s), keeper CPU over ${v(s.hold_s)} s`, `${v(s.cpu_pct)}% of a core`, '<= 10');
  row('scale: peak RSS', `${v(s.rss_mb)} MB`, '<= 150');
  if (s.lateness_ms) row(`scale: heartbeat lateness p50 / p99 / max (${v(s.lateness_samples)} beats, a \`debug\` run)`, `${v(s.lateness_ms.p50)} / ${v(s.lateness_ms.p99)} / ${v(s.lateness_ms.max)} ms`, 'p99 <= 20');
  row('scale: leases expired (both runs)', `**${v(s.expired)}**`, '0');
  row('scale: exec to the last of 1000 leases taken', `${v(s.claim_all_s)} s`, '<= 10');
}
const b = r.baseline;
if (b) {
  const n = b.windows?.length ?? 0;
  row(
    `keeper / bare-undici CPU per heartbeat, median of ${n} alternating pairs (min..max)`,
    `**${v(b.cpu_per_heartbeat_ratio)}** (${v(b.ratio_spread?.min)}..${v(b.ratio_spread?.max)}; ${v(b.keeper_cpu_us_per_heartbeat)} vs ${v(b.cpu_us_per_heartbeat)} µs)`,
    '<= 1.4',
  );
  row('control: the emulator\'s CPU per heartbeat, keeper\'s / baseline\'s windows (medians)', `${v(b.emulator_cpu_us_per_heartbeat?.keeper_window)} / ${v(b.emulator_cpu_us_per_heartbeat?.baseline_window)} µs`, '');
}
const re = r.reaction_ms;
if (re) {
  row(`reaction: 412/409/\`stopping\` reply to the job's TERM trap, p50 / p99 (${v(re.trials)} trials, ${v(re.containment)})`, `${v(re.p50)} / ${v(re.p99)} ms`, 'p99 <= 10');
  for (const [how, m] of Object.entries((re.mass_stop_by_containment ?? (re.mass_stop ? { [re.mass_stop.containment ?? 'default']: re.mass_stop } : {})) as Record<string, any>)) {
    row(`reaction, all ${v(m.trials)} stopped at once (${how}): p50 / p99`, `${v(m.p50)} / ${v(m.p99)} ms`, '');
  }
}
const f = r.fence_margin_ms;
if (f) row('fence margin with the network hung: min over the trials', `${v(f.min)} ms (configured ${v(f.configured)})`, '>= configured');
if (r.idle) row('idle: peak RSS / RSS at the end / CPU', `${v(r.idle.rss_mb)} / ${v(r.idle.rss_end_mb)} MB / ${v(r.idle.cpu_pct)}%`, '60 MB, 0.5%');
if (r.startup_ms !== undefined) row('start-up: exec to first poll at the emulator (median)', `${v(r.startup_ms)} ms`, '<= 300');
const t = r.turnover;
if (t) {
  for (const c of t.cold_fill ?? []) {
    row(`cold fill: exec to ${c.keeper.items} jobs running (${v(c.keeper.containment)}); the floor`, `${v(c.keeper.fill_s)} s; ${v(c.floor.fill_s)} s`, c.keeper.items === 10_000 ? '< 30 s' : '');
    row(`drain of ${c.keeper.items} jobs (one SIGTERM to exit); the floor`, `${v(c.keeper.drain_s)} s; ${v(c.floor.drain_s)} s`, '');
  }
  const pairs = (t.short_jobs_by_containment ?? { [t.short_jobs.keeper.containment ?? 'default']: t.short_jobs }) as Record<string, any>;
  for (const [how, p] of Object.entries(pairs)) {
    row(
      `short jobs (\`true\`, concurrency ${p.concurrency}, ${how}): items/s and CPU per item, keeper; floor`,
      `${v(p.keeper.items_per_s)}/s, ${v(p.keeper.cpu_ms_per_item)} ms; ${v(p.floor.items_per_s)}/s, ${v(p.floor.cpu_ms_per_item)} ms (**${v(p.cpu_per_item_ratio)}x**)`,
      'CPU <= 1.5x floor',
    );
  }
}
console.log('| figure | value | target |\n|---|---|---|');
console.log(rows.join('\n'));

const pts = r.scaling?.points as any[] | undefined;
if (pts) {
  console.log('\n| leases (ttl) | CPU % of a core | CPU µs / heartbeat | heartbeats/s | peak RSS | kB per added lease | lateness p50 / p99 / max (hold p99) | expired | 412 reaction p99 | fill |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const p of pts) {
    const lat = p.lateness_ms ? `${v(p.lateness_ms.p50)} / ${v(p.lateness_ms.p99)} / ${v(p.lateness_ms.max)} ms (${v(p.lateness_hold_ms?.p99)})` : '–';
    console.log(
      `| ${p.leases} (${p.ttl_s} s) | ${v(p.cpu_pct)} | ${v(p.cpu_us_per_heartbeat)} | ${v(p.heartbeats_per_s)} | ${v(p.rss_mb)} MB | ${v(p.rss_marginal_kb_per_lease)} | ${lat} | **${v(p.expired)}** | ${v(p.reaction_412_ms?.p99)} ms | ${v(p.fill_s)} s |`,
    );
  }
}
