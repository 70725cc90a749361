// Sends to one WebSocket batched per tick, for the relay (proxy/ws/stream.ts) and share mode
// (subscriptions/session.ts) alike.
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';

/**
 * Corks the socket under `ws` until the end of the current tick: ws emits every message of one
 * network read in the same tick, and sent together they leave in one write instead of one write
 * (one syscall) per message. Returns the function to call before each send.
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
