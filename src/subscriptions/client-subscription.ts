// One client subscription in share mode (what a stream's subscriber list holds: its id and framing
// prefix, no event queue).
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
