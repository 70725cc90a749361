// One client paired with its upstream: messages both ways, close codes passed on, backpressure,
// keep-alive. Whichever side goes, the other is closed; the pair ends when both have. Listeners
// are module functions that find their stream through the socket, not closures made per stream.
import { WebSocket, type RawData } from 'ws';
import { batching } from '../../ws-batching.js';

export type Side = 'client' | 'upstream';

/** Why the proxy itself ended a stream (absent when a peer closed it). */
export type Cause = 'slow_client' | 'slow_upstream' | 'client_ping_timeout' | 'upstream_ping_timeout' | 'client_message_too_large' | 'upstream_message_too_large' | 'shutdown';

/** A stream's life: both sides open; one has gone or the proxy ended it, the other is being closed; both gone. */
const enum State {
  Open,
  Closing,
  Closed,
}

/** How the stream ended, once it is closing. */
export interface Ending {
  closedBy: Side | 'proxy';
  cause?: Cause;
  code: number;
  reason: string;
}

/** What a stream counted, for its closing event. */
export interface Counts {
  bytesFromClient: number;
  bytesToClient: number;
  messagesFromClient: number;
  messagesToClient: number;
}

/** After a stream starts closing, how long both sides get to finish the closing handshake before they are cut. */
const CLOSE_GRACE_MS = 2000;

/** True for codes a close frame may carry (RFC 6455 7.4, as ws checks them). */
function sendable(code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999);
}

/**
 * How a close received on one side is passed to the other. Codes that can be sent go through
 * unchanged, reason included. The ones that only exist locally are mapped:
 *  - 1005 (the peer's close frame had no code) becomes a close frame without a code, so the other
 *    side sees 1005 too, exactly as without the proxy;
 *  - 1006 (the connection dropped without a close frame) becomes 1001 "going away": that is what
 *    happened, and it stays a code clients reconnect after. 1011 was not chosen because graphql-ws
 *    and others treat it as fatal and stop retrying, while the 1006 a direct connection would have
 *    seen is retried;
 *  - 1015 (TLS handshake failure) and anything else unsendable become 1011.
 */
function forwardClose(ws: WebSocket, code: number, reason: Buffer, lostReason: string): void {
  if (ws.readyState !== WebSocket.OPEN) return;
  if (code === 1005) ws.close();
  else if (code === 1006) ws.close(1001, lostReason);
  else if (sendable(code)) ws.close(code, reason);
  else ws.close(1011);
}

/** Closes one side with a code of the proxy's own (terminates it if it never opened). */
export function closeSide(ws: WebSocket, code: number, reason: string): void {
  if (ws.readyState === WebSocket.OPEN) ws.close(code, reason);
  else if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
}

function size(data: RawData): number {
  return Buffer.isBuffer(data) ? data.length : Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : data.byteLength;
}

const kStream = Symbol('stream');
const kSide = Symbol('side');

interface PairedSocket extends WebSocket {
  [kStream]: Stream;
  [kSide]: Side;
}

export interface StreamHooks {
  /** A message was relayed. */
  message(direction: 'to_client' | 'to_upstream', bytes: number): void;
  /** A side errored (the close that follows ends the stream). */
  error(side: Side, err: Error): void;
  /** Both sides are closed. */
  closed(stream: Stream, ending: Ending, counts: Counts, ms: number): void;
}

function onMessage(this: WebSocket, data: RawData, isBinary: boolean): void {
  const ws = this as PairedSocket;
  ws[kStream].relay(ws[kSide], data, isBinary);
}

function onSeen(this: WebSocket): void {
  const ws = this as PairedSocket;
  ws[kStream].seen(ws[kSide]);
}

function onError(this: WebSocket, err: Error): void {
  const ws = this as PairedSocket;
  if ((err as { code?: string }).code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') ws[kStream].tooLarge(ws[kSide]);
  ws[kStream].hooks.error(ws[kSide], err);
}

function onClose(this: WebSocket, code: number, reason: Buffer): void {
  const ws = this as PairedSocket;
  ws[kStream].sideClosed(ws[kSide], code, reason);
}

function pair(ws: WebSocket, stream: Stream, side: Side): void {
  const paired = ws as PairedSocket;
  paired[kStream] = stream;
  paired[kSide] = side;
  ws.on('message', onMessage).on('ping', onSeen).on('pong', onSeen).on('error', onError).once('close', onClose);
}

export class Stream {
  private readonly started = performance.now();
  private readonly counts: Counts = { bytesFromClient: 0, bytesToClient: 0, messagesFromClient: 0, messagesToClient: 0 };
  private state = State.Open;
  private ending?: Ending;
  /** Sides not closed yet: the stream is Closed when none is left. */
  private sidesOpen = 2;
  private clientAlive = true;
  private upstreamAlive = true;
  private grace?: NodeJS.Timeout;
  private readonly toClient: () => void;
  private readonly toUpstream: () => void;

  constructor(
    private readonly client: WebSocket,
    private readonly upstream: WebSocket,
    private readonly maxBuffered: number,
    readonly hooks: StreamHooks,
  ) {
    this.toClient = batching(client);
    this.toUpstream = batching(upstream);
    pair(client, this, 'client');
    pair(upstream, this, 'upstream');
  }

  /** A message from `from`, sent on to the other side. */
  relay(from: Side, data: RawData, isBinary: boolean): void {
    this.seen(from);
    if (this.state !== State.Open) return;
    const bytes = size(data);
    const { counts, maxBuffered } = this;
    if (from === 'client') {
      counts.messagesFromClient += 1;
      counts.bytesFromClient += bytes;
      this.toUpstream();
      this.upstream.send(data as Buffer, { binary: isBinary });
      this.hooks.message('to_upstream', bytes);
      // The upstream normally reads faster than a client writes; this only bounds memory if it stalls.
      if (this.upstream.bufferedAmount > maxBuffered) this.end('slow_upstream', 1013, 'upstream not consuming fast enough', 1001, 'too much queued');
    } else {
      counts.messagesToClient += 1;
      counts.bytesToClient += bytes;
      this.toClient();
      this.client.send(data as Buffer, { binary: isBinary });
      this.hooks.message('to_client', bytes);
      // What the client has not taken yet stays in this process: past the limit the client is
      // dropped with 1013, as Bitquery drops a consumer that falls behind.
      if (this.client.bufferedAmount > maxBuffered) this.end('slow_client', 1013, 'not consuming fast enough', 1001, 'client not consuming fast enough');
    }
  }

  /** Anything from a side (a message, a ping, a pong) shows it is alive. */
  seen(side: Side): void {
    if (side === 'client') this.clientAlive = true;
    else this.upstreamAlive = true;
  }

  /** The one place a stream starts closing: records how, and cuts both sides after the grace. */
  private startClosing(ending: Ending): void {
    this.state = State.Closing;
    this.ending = ending;
    // A peer that never answers the close frame (or never reads it) is cut after the grace.
    this.grace = setTimeout(() => {
      this.client.terminate();
      this.upstream.terminate();
    }, CLOSE_GRACE_MS);
    this.grace.unref();
  }

  sideClosed(side: Side, code: number, reason: Buffer): void {
    this.sidesOpen -= 1;
    if (this.state === State.Open) {
      this.startClosing({ closedBy: side, code, reason: reason.toString('utf8') });
      if (side === 'client') forwardClose(this.upstream, code, reason, 'client went away');
      else forwardClose(this.client, code, reason, 'upstream went away');
    }
    if (this.sidesOpen === 0) this.finish();
  }

  /** The proxy ends the stream itself: each side gets its own code. */
  end(cause: Cause, clientCode: number, clientReason: string, upstreamCode: number, upstreamReason: string): void {
    if (this.state !== State.Open) return;
    this.startClosing({ closedBy: 'proxy', cause, code: clientCode, reason: clientReason });
    closeSide(this.client, clientCode, clientReason);
    closeSide(this.upstream, upstreamCode, upstreamReason);
  }

  /**
   * A side sent a message over its bound (maxPayload): ws has already closed that side with 1009.
   * A client over WS_MAX_MESSAGE_BYTES: the upstream is closed with 1001, as when a client goes.
   * The upstream over WS_MAX_UPSTREAM_MESSAGE_BYTES: the client is closed with 1009 too, since it
   * cannot be given the message.
   */
  tooLarge(side: Side): void {
    if (side === 'client') this.end('client_message_too_large', 1009, 'message too large', 1001, 'client went away');
    else this.end('upstream_message_too_large', 1009, 'upstream message too large', 1009, 'message too large');
  }

  /** Cuts both sides now (shutdown deadline). */
  terminate(): void {
    this.client.terminate();
    this.upstream.terminate();
  }

  /**
   * Called every WS_PING_INTERVAL_MS. A side that sent nothing at all (not even a pong) since the
   * previous call is dead: it is terminated, and the other side is closed with 1001.
   */
  heartbeat(): void {
    if (this.state !== State.Open) return;
    if (!this.clientAlive || !this.upstreamAlive) {
      const dead: Side = this.clientAlive ? 'upstream' : 'client';
      const [deadSocket, other] = dead === 'client' ? [this.client, this.upstream] : [this.upstream, this.client];
      const reason = dead === 'client' ? 'client not responding' : 'upstream not responding';
      this.startClosing({ closedBy: 'proxy', cause: `${dead}_ping_timeout`, code: 1001, reason });
      deadSocket.terminate();
      closeSide(other, 1001, reason);
      return;
    }
    this.clientAlive = false;
    this.upstreamAlive = false;
    if (this.client.readyState === WebSocket.OPEN) this.client.ping();
    if (this.upstream.readyState === WebSocket.OPEN) this.upstream.ping();
  }

  private finish(): void {
    this.state = State.Closed;
    clearTimeout(this.grace);
    this.hooks.closed(this, this.ending!, this.counts, Math.round(performance.now() - this.started));
  }
}
