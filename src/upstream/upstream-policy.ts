/**
 * Which upstream origins feedlock may contact. Never an open proxy: every URL
 * is checked here before any connection is made, redirects included.
 */
const DEFAULT_PORT: Record<string, number> = { 'http:': 80, 'https:': 443 };

export function originKey(url: URL): string {
  const port = url.port ? Number(url.port) : DEFAULT_PORT[url.protocol];
  return `${url.protocol}//${url.hostname.toLowerCase()}:${port}`;
}

export interface PolicySources {
  mirrors: Record<string, string>;
  allowHosts: string[];
  aptSourceUris: string[];
}

export class UpstreamPolicy {
  private readonly origins = new Set<string>();
  /** host[:port] reached through the /HOST/... remap that should use TLS. */
  private readonly httpsHosts = new Set<string>();
  readonly described: string[] = [];

  constructor(sources: PolicySources) {
    this.reload(sources);
  }

  /** Replaces the allowed origins at once (SIGHUP); requests already running keep going. */
  reload({ mirrors, allowHosts, aptSourceUris }: PolicySources): void {
    this.origins.clear();
    this.httpsHosts.clear();
    this.described.length = 0;
    for (const url of Object.values(mirrors)) this.addOrigin(new URL(url), 'mirror');
    for (const uri of aptSourceUris) {
      try {
        this.addOrigin(new URL(uri), 'apt sources');
      } catch {
        // an unparsable line in apt sources is apt's problem, not ours
      }
    }
    for (const entry of allowHosts) {
      const tls = entry.startsWith('https://');
      const hostPort = entry.replace(/^https?:\/\//, '');
      // Without a port this means the scheme's default port; with one, exactly that
      // endpoint. Either scheme may be used (a mirror can redirect http -> https).
      this.addOrigin(new URL(`http://${hostPort}`), 'allow-host');
      this.addOrigin(new URL(`https://${hostPort}`), 'allow-host');
      if (tls) this.httpsHosts.add(hostPort.toLowerCase());
    }
  }

  private addOrigin(url: URL, from: string): void {
    const key = originKey(url);
    if (!this.origins.has(key)) {
      this.origins.add(key);
      this.described.push(`${key} (${from})`);
    }
  }

  isAllowed(url: URL): boolean {
    return (url.protocol === 'http:' || url.protocol === 'https:') && this.origins.has(originKey(url));
  }

  /** Scheme for the apt-cacher-ng style /HOST[:PORT]/path remap. */
  remapScheme(hostPort: string): 'http:' | 'https:' {
    return this.httpsHosts.has(hostPort.toLowerCase()) ? 'https:' : 'http:';
  }
}
