#!/usr/bin/env node
// Entry point for the `ivm` bin: runs the compiled CLI (dist/cli.js, made by `npm run build`, which
// `npm install` and `npm ci` run too), so that no TypeScript is compiled at run time.
import { existsSync } from 'node:fs';

const cli = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(cli)) {
  const root = decodeURIComponent(new URL('..', import.meta.url).pathname);
  process.stderr.write(
    `ivm: the compiled CLI (${root}dist/cli.js) is missing.\n` +
      `hint: build it: cd ${root} && npm run build (npm install and npm ci build it too)\n`,
  );
  process.exit(4);
}
await import(cli.href);
