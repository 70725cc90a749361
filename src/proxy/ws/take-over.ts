// The seam through which another mode (share mode, share.ts) serves some WebSocket clients itself
// instead of the 1:1 relay (proxy.ts).
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Caller } from '../../auth/caller.js';

/** An admitted handshake offered to a mode that may serve it itself. */
export interface Offered {
  req: IncomingMessage;
  socket: Duplex;
  head: Buffer;
  path: string;
  /** The subprotocols the client offered, in its order (validated). */
  protocols: string[];
  /** Undefined: keys are required and the handshake carried none; the taker must get one from the client. */
  caller: Caller | undefined;
}

/**
 * A mode that serves some clients itself (share mode takes `graphql-ws`/`graphql-transport-ws`
 * clients). Offered every handshake that passed the path, validity, caller and WS_MAX_STREAMS
 * checks, before any per-key slot is taken; the proxy counts its sockets under WS_MAX_STREAMS
 * and shuts it down with the relayed streams.
 */
export interface TakeOver {
  /** True when it has taken the socket: from then on the proxy does nothing more with it. */
  take(offered: Offered): boolean;
  /** Client sockets it serves. */
  readonly size: number;
  stopAccepting(): void;
  close(graceMs: number): Promise<void>;
}
