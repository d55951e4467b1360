// The scaling chart as plain SVG (no browser, no dependency): two panels against leases held (log x):
// keeper CPU per heartbeat, and the resident memory one more lease costs (log y on both).

export interface ChartPoint {
  leases: number;
  cpu_us_per_heartbeat: number | null;
  rss_marginal_kb_per_lease: number | null;
}

const W = 360;
const H = 260;
const M = { left: 62, right: 16, top: 34, bottom: 46 };

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
const fmt = (v: number): string => (v >= 1000 ? `${v / 1000}k` : String(v));

function decades(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) out.push(10 ** e);
  return out;
}

function panel(x0: number, title: string, unit: string, pts: { x: number; y: number }[], color: string): string {
  if (pts.length === 0) return `<text x="${x0 + W / 2}" y="${H / 2}" text-anchor="middle">${esc(title)}: no data</text>`;
  const xs = decades(Math.min(...pts.map((p) => p.x)), Math.max(...pts.map((p) => p.x)));
  const ys = decades(Math.min(...pts.map((p) => p.y)), Math.max(...pts.map((p) => p.y)));
  const [xl, xh] = [Math.log10(xs[0]!), Math.log10(xs[xs.length - 1]!)];
  const [yl, yh] = [Math.log10(ys[0]!), Math.log10(ys[ys.length - 1]!)];
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const px = (x: number): number => x0 + M.left + (xh === xl ? pw / 2 : ((Math.log10(x) - xl) / (xh - xl)) * pw);
  const py = (y: number): number => M.top + ph - (yh === yl ? ph / 2 : ((Math.log10(y) - yl) / (yh - yl)) * ph);
  const parts: string[] = [];
  parts.push(`<text x="${x0 + W / 2}" y="18" text-anchor="middle" font-weight="bold">${esc(title)}</text>`);
  for (const x of xs) {
    parts.push(`<line x1="${px(x)}" y1="${M.top}" x2="${px(x)}" y2="${M.top + ph}" stroke="#ddd"/>`);
    parts.push(`<text x="${px(x)}" y="${M.top + ph + 16}" text-anchor="middle">${fmt(x)}</text>`);
  }
  for (const y of ys) {
    parts.push(`<line x1="${x0 + M.left}" y1="${py(y)}" x2="${x0 + M.left + pw}" y2="${py(y)}" stroke="#ddd"/>`);
    parts.push(`<text x="${x0 + M.left - 6}" y="${py(y) + 4}" text-anchor="end">${fmt(y)}</text>`);
  }
  parts.push(`<rect x="${x0 + M.left}" y="${M.top}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`);
  parts.push(`<text x="${x0 + M.left + pw / 2}" y="${H - 8}" text-anchor="middle">leases held (log)</text>`);
  parts.push(`<text transform="translate(${x0 + 14},${M.top + ph / 2}) rotate(-90)" text-anchor="middle">${esc(unit)} (log)</text>`);
  const sorted = [...pts].sort((a, b) => a.x - b.x);
  parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${sorted.map((p) => `${px(p.x).toFixed(1)},${py(p.y).toFixed(1)}`).join(' ')}"/>`);
  for (const p of sorted) {
    parts.push(`<circle cx="${px(p.x).toFixed(1)}" cy="${py(p.y).toFixed(1)}" r="3.5" fill="${color}"/>`);
    parts.push(`<text x="${(px(p.x) + 5).toFixed(1)}" y="${(py(p.y) - 7).toFixed(1)}" font-size="10">${p.y}</text>`);
  }
  return parts.join('\n');
}

/** The SVG text of the scaling chart (points at the default ttl only). */
export function scalingSvg(points: ChartPoint[], caption: string): string {
  const cpu = points.filter((p) => p.cpu_us_per_heartbeat !== null && p.cpu_us_per_heartbeat > 0).map((p) => ({ x: p.leases, y: p.cpu_us_per_heartbeat! }));
  const rss = points.filter((p) => p.rss_marginal_kb_per_lease !== null && p.rss_marginal_kb_per_lease > 0).map((p) => ({ x: p.leases, y: p.rss_marginal_kb_per_lease! }));
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * W}" height="${H + 24}" viewBox="0 0 ${2 * W} ${H + 24}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    panel(0, 'keeper CPU per heartbeat', 'µs', cpu, '#1f77b4'),
    panel(W, 'resident memory per added lease', 'kB', rss, '#d62728'),
    `<text x="${W}" y="${H + 16}" text-anchor="middle" font-size="11" fill="#555">${esc(caption)}</text>`,
    '</svg>',
    '',
  ].join('\n');
}
