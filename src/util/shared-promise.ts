/**
 * At most one running `work()` per key in this process: callers that arrive
 * while it runs share its promise; the key is free again once it settles.
 */
export class SharedPromises<T> {
  private readonly running = new Map<string, Promise<T>>();

  run(key: string, work: () => Promise<T>): Promise<T> {
    let p = this.running.get(key);
    if (!p) {
      p = work().finally(() => this.running.delete(key));
      this.running.set(key, p);
    }
    return p;
  }
}
