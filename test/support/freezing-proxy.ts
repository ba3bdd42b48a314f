import net from 'node:net';

/** A TCP proxy in front of a Postgres URL whose connections can freeze as a dead network path does. */
export interface FreezingProxy {
  /** The database URL, with the proxy's host and port. */
  url: string;
  /**
   * Every connection open now stops forwarding in both directions, and a close on either side no longer
   * reaches the other (as when a path between client and server goes silent). Later connections pass.
   * Returns how many connections froze.
   */
  freeze(): number;
  /** The frozen connections forward again: what was held back arrives, and a close held back follows it. */
  thaw(): void;
  close(): Promise<void>;
}

interface Pair {
  client: net.Socket;
  server: net.Socket;
  frozen: boolean;
}

export async function startFreezingProxy(databaseUrl: string): Promise<FreezingProxy> {
  const target = new URL(databaseUrl);
  const pairs = new Set<Pair>();
  const proxy = net.createServer((client) => {
    const server = net.connect(Number(target.port || 5432), target.hostname);
    const pair: Pair = { client, server, frozen: false };
    pairs.add(pair);
    const forward = (from: net.Socket, to: net.Socket) => {
      from.on('data', (chunk) => {
        if (!pair.frozen) to.write(chunk);
      });
      // Read to its end, so a close arrives only after the data before it (a paused socket reads nothing).
      from.on('end', () => {
        if (pair.frozen) return;
        to.end();
        pairs.delete(pair);
      });
      from.on('close', () => {
        if (pair.frozen) return;
        to.end();
        pairs.delete(pair);
      });
      from.on('error', () => {});
    };
    forward(client, server);
    forward(server, client);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const url = new URL(databaseUrl);
  url.hostname = '127.0.0.1';
  url.port = String((proxy.address() as net.AddressInfo).port);
  return {
    url: url.toString(),
    freeze() {
      for (const pair of pairs) {
        pair.frozen = true;
        // Paused sockets read nothing more: what the peers send stays in the kernel's buffers, unanswered.
        pair.client.pause();
        pair.server.pause();
      }
      return pairs.size;
    },
    thaw() {
      for (const pair of pairs) {
        pair.frozen = false;
        pair.client.resume();
        pair.server.resume();
      }
    },
    async close() {
      for (const { client, server } of pairs) {
        client.destroy();
        server.destroy();
      }
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
    },
  };
}
