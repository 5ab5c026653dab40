import { defineConfig } from 'vitest/config';

// End-to-end tests boot real VMs under TCG (about 15 s a boot) and run guestfish appliances
// (15-30 s a launch), so timeouts are generous. The test machines have 2 cores: test files run
// one at a time so boots and appliance launches never overlap. The tests run the real CLI
// (bin/ivm.js runs the compiled dist/cli.js): globalSetup builds dist/ from the sources first.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/build-dist.ts'],
    testTimeout: 300_000,
    hookTimeout: 300_000,
    teardownTimeout: 120_000,
    fileParallelism: false,
    pool: 'forks',
  },
});
