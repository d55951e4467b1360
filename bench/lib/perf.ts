// `perf record` of one process over a window, and its summary.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parsePerfScript, perfSummary, printPerfSummary } from '../tools/perf-report.js';

/**
 * `perf record -g` of one process for `seconds` (needs perf and the process started with
 * --perf-basic-prof for JS names); resolves to the text of `perf script`.
 */
export function perfRecord(pid: number, seconds: number, name: string, work: string): Promise<string> {
  const data = join(work, `${name}.perf.data`);
  return new Promise((resolve, reject) => {
    const rec = spawn('perf', ['record', '-F', '999', '-g', '-p', String(pid), '-o', data, '--', 'sleep', String(Math.max(1, Math.round(seconds)))], {
      stdio: ['ignore', 'ignore', 'ignore'],
    });
    rec.once('error', reject);
    rec.once('exit', () => {
      const script = spawn('perf', ['script', '-i', data], { stdio: ['ignore', 'pipe', 'ignore'] });
      let text = '';
      script.stdout.on('data', (c: Buffer) => (text += c.toString()));
      script.once('exit', () => {
        writeFileSync(join(work, `${name}.perf.txt`), text); // kept with --keep-logs
        resolve(text);
      });
      script.once('error', reject);
    });
  });
}

export function printPerf(title: string, text: string, pid: number): void {
  console.log(`\n==== perf: ${title}`);
  printPerfSummary(perfSummary(parsePerfScript(text), { pid, top: 25 }));
}
