// Bundles the package into the single ES module the embedded web chat loads
// (crates/palaver-gateway/web/palaver-client.js, compiled into the binary).
// `--check` rebuilds it in memory and fails if the checked-in copy differs.

import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = join(here, '..');
const target = join(pkg, '..', '..', 'crates', 'palaver-gateway', 'web', 'palaver-client.js');
const banner = '// palaver-client, bundled for the web chat by `npm run bundle` in clients/js. Do not edit: edit clients/js/src.';

const result = await build({
  entryPoints: [join(pkg, 'src', 'index.ts')],
  absWorkingDir: pkg,
  bundle: true,
  format: 'esm',
  target: 'es2022',
  platform: 'browser',
  charset: 'utf8',
  legalComments: 'none',
  banner: { js: banner },
  write: false,
  logLevel: 'error',
});
const code = result.outputFiles[0].text;
const shown = relative(process.cwd(), target);

if (process.argv.includes('--check')) {
  let current = '';
  try {
    current = readFileSync(target, 'utf8');
  } catch {
    /* missing counts as stale */
  }
  if (current !== code) {
    console.error(`${shown} is out of date with clients/js/src: run \`npm run bundle\` in clients/js and commit it`);
    process.exit(1);
  }
  console.log(`${shown} is up to date`);
} else {
  writeFileSync(target, code);
  console.log(`wrote ${shown} (${code.length} bytes)`);
}
