/** Every command prints text for people or, with --json, one JSON document for scripts. */
export function print(opts: { json?: boolean }, data: unknown, text: () => string): void {
  process.stdout.write(opts.json ? `${JSON.stringify(data, null, 2)}\n` : `${text()}\n`);
}
