// One client subscription in share mode (what a stream's subscriber list holds: its id and framing
// prefix, no event queue), and the per-tick corking of a client socket's sends.
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import { frameNext, type ErrorLike } from './protocol.js';
import type { Release, Subscriber } from './types.js';
import type { UpstreamStream } from './upstream.js';

/** The client session a subscription belongs to (session.ts). */
export interface SubscriptionOwner {
  send(data: Buffer | string): void;
  ended(sub: ClientSubscription, errors?: readonly ErrorLike[]): void;
}

export const noRelease: Release = () => {};

export class ClientSubscription implements Subscriber {
  /** Unset while its per-key slot is being taken. */
  stream?: UpstreamStream;
  release: Release = noRelease;

  constructor(
    private readonly session: SubscriptionOwner,
    readonly id: string,
    readonly idJson: string,
    private readonly prefix: Buffer,
  ) {}

  next(payload: Buffer): void {
    this.session.send(frameNext(this.prefix, payload));
  }

  fail(errors: readonly ErrorLike[]): void {
    this.session.ended(this, errors);
  }

  complete(): void {
    this.session.ended(this);
  }
}

/**
 * Corks the socket under `ws` until the end of the current tick: the events of one upstream read
 * leave in one write per client instead of one write (one syscall) per event. Returns the function
 * to call before each send.
 */
export function batching(ws: WebSocket): () => void {
  const socket = (ws as unknown as { _socket: Duplex })._socket;
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  return () => {
    if (corked) return;
    corked = true;
    socket.cork();
    process.nextTick(uncork);
  };
}
