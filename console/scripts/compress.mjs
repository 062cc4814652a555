// After `vite build`: writes a gzip sibling (.gz) of every compressible file
// so that tokenauditd (h2o's file handler with H2O_FILE_FLAG_SEND_COMPRESSED)
// sends it to clients that accept gzip, prints the sizes, and fails when the
// console's assets total more than the budget (300 KB compressed).
import { readdirSync, readFileSync, statSync, writeFileSync, unlinkSync } from 'node:fs';
import { join, relative } from 'node:path';
import { gzipSync, constants } from 'node:zlib';

const out = process.env.TA_CONSOLE_OUT || 'dist';
const BUDGET = 300 * 1024;
const compressible = /\.(html|js|css|svg|json|txt)$/;

function walk(dir) {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

let total = 0;
const rows = [];
for (const p of walk(out)) {
  if (p.endsWith('.gz')) { unlinkSync(p); continue; }
  const raw = readFileSync(p);
  let size = raw.length;
  if (compressible.test(p)) {
    const gz = gzipSync(raw, { level: constants.Z_BEST_COMPRESSION });
    writeFileSync(p + '.gz', gz);
    size = gz.length;
  }
  total += size;
  rows.push([relative(out, p), raw.length, size]);
}
for (const [name, raw, gz] of rows)
  console.log(`  ${name.padEnd(40)} ${String(raw).padStart(8)} B  ${String(gz).padStart(8)} B compressed`);
console.log(`console assets: ${total} B compressed in all (budget ${BUDGET} B)`);
if (total > BUDGET) {
  console.error(`console assets exceed the budget by ${total - BUDGET} B`);
  process.exit(1);
}
