import { defineConfig } from 'vitest/config';

export default defineConfig({
  // Two files at a time: the Isar build (the longest, started first) waits on the
  // mirror and on its own tools much of the time, so the bootstrap and apt files run beside it.
  test: { include: ['test/e2e/**/*.e2e.test.ts'], testTimeout: 2_400_000, maxWorkers: 2 },
});
