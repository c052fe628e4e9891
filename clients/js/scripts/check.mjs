// Fails if a checked-in build is stale: dist/ (the published form, so that
// `npm install ./clients/js` needs no build step) or the web chat's bundle.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
const fresh = mkdtempSync(join(tmpdir(), 'palaver-client-dist-'));
try {
  execFileSync(join(pkg, 'node_modules', '.bin', 'tsc'), ['-p', join(pkg, 'tsconfig.json'), '--outDir', fresh], { stdio: 'inherit' });
  const list = (dir) => readdirSync(dir).sort();
  const read = (dir, name) => {
    try {
      return readFileSync(join(dir, name), 'utf8');
    } catch {
      return undefined;
    }
  };
  const names = [...new Set([...list(fresh), ...list(join(pkg, 'dist'))])];
  const stale = names.filter((name) => read(fresh, name) !== read(join(pkg, 'dist'), name));
  if (stale.length > 0) {
    console.error(`clients/js/dist is out of date with src (${stale.join(', ')}): run \`npm run build\` and commit it`);
    process.exit(1);
  }
  console.log('clients/js/dist is up to date');
} finally {
  rmSync(fresh, { recursive: true, force: true });
}
execFileSync(process.execPath, [join(pkg, 'scripts', 'bundle.mjs'), '--check'], { stdio: 'inherit' });
