// vitest's globalSetup: builds dist/ from the current sources (npm run build) once, before any test
// file runs, since the tests run the real CLI (node bin/ivm.js, which runs dist/cli.js). So
// `npx vitest run test/x.test.ts` always tests what src/ holds now.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export default function setup(): void {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  execFileSync(process.execPath, [path.join(root, 'scripts', 'build.js')], { cwd: root, stdio: 'inherit' });
}
