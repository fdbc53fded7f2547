import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Real apt-get runs and servers: two workers match the 2-core CI machines.
    maxWorkers: 2,
  },
});
