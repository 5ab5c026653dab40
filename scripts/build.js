#!/usr/bin/env node
// npm run build: compiles src/ to dist/ with tsc (tsconfig.build.json) and copies the other files
// of src/ the CLI reads at run time (src/core/vm/domain.xml.hbs), so that nothing is compiled when ivm
// runs. `npm install`/`npm ci` (the prepare script) and the test suite (vitest's globalSetup) run it.
//
// tsc writes into a fresh folder first; dist/ is then brought up to date file by file, each changed
// file renamed into place whole and files whose source is gone removed. So an ivm started while a
// build runs (a test suite running beside another one) never reads a half-written or missing file,
// and a build of unchanged sources changes nothing.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const src = path.join(root, 'src');
const dist = path.join(root, 'dist');

let tsc;
try {
  tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
} catch {
  console.error('build: typescript is not installed (a dev dependency): run `npm ci` (or `npm install`) first');
  process.exit(1);
}

fs.mkdirSync(path.join(root, '.cache'), { recursive: true });
const stage = fs.mkdtempSync(path.join(root, '.cache', 'dist-'));
try {
  const compiled = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json'), '--outDir', stage], { stdio: 'inherit' });
  if (compiled.status !== 0) {
    console.error(`build: tsc failed (${compiled.status === null ? `signal ${compiled.signal}` : `exit ${compiled.status}`}); dist/ is unchanged`);
    process.exit(1);
  }
  for (const file of walk(src)) {
    if (!file.endsWith('.ts')) fs.copyFileSync(path.join(src, file), ensureDir(path.join(stage, file)));
  }
  const built = new Set(walk(stage));
  let changed = 0;
  for (const file of built) {
    const from = path.join(stage, file);
    const to = path.join(dist, file);
    const content = fs.readFileSync(from);
    if (fs.existsSync(to) && content.equals(fs.readFileSync(to))) continue;
    const temporary = `${ensureDir(to)}.build-${process.pid}`;
    fs.writeFileSync(temporary, content);
    fs.renameSync(temporary, to);
    changed += 1;
  }
  let removed = 0;
  for (const file of fs.existsSync(dist) ? walk(dist) : []) {
    if (built.has(file) || /\.build-\d+$/.test(file)) continue;
    fs.rmSync(path.join(dist, file), { force: true });
    removed += 1;
  }
  removeEmptyFolders(dist);
  if (changed + removed > 0) console.error(`build: dist/ up to date (${changed} written, ${removed} removed)`);
} finally {
  fs.rmSync(stage, { recursive: true, force: true });
}

/** Every file below `dir`, as paths relative to it. */
function walk(dir, prefix = '') {
  const files = [];
  for (const entry of fs.readdirSync(path.join(dir, prefix), { withFileTypes: true })) {
    const rel = path.join(prefix, entry.name);
    if (entry.isDirectory()) files.push(...walk(dir, rel));
    else files.push(rel);
  }
  return files;
}

function ensureDir(file) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  return file;
}

function removeEmptyFolders(dir) {
  if (!fs.existsSync(dir)) return;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    const sub = path.join(dir, entry.name);
    removeEmptyFolders(sub);
    if (fs.readdirSync(sub).length === 0) fs.rmdirSync(sub);
  }
}
