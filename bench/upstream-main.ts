/** The benchmark's static upstream as its own process; GET /__count?suffix=X counts requests. */
import { startStaticUpstream } from '../fixtures/static-server.js';

const root = process.argv[2];
const up = await startStaticUpstream(root, Number(process.argv[3] ?? 0));
up.fault = (req, res) => {
  if (!req.url?.startsWith('/__count')) return false;
  const suffix = new URL(req.url, 'http://x').searchParams.get('suffix') ?? '';
  const n = up.requests.filter((r) => !r.url.startsWith('/__') && r.url.endsWith(suffix)).length;
  res.end(String(n));
  return true;
};
process.stdout.write(`${up.url}\n`);
process.on('SIGTERM', () => void up.close().then(() => process.exit(0)));
