import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Long fault runs live in npm run test:chaos.
    exclude: ['test/chaos/**', 'test/e2e/**', 'node_modules/**'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Real apt-get runs and servers: two workers match the 2-core CI machines.
    maxWorkers: 2,
  },
});
