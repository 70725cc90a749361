// A WebSocket handshake that the proxy must refuse: resolves with its HTTP status and JSON body.
// No subprotocol is offered, so the handshake goes to the relay whatever WS_MODE is: share mode
// accepts `graphql-ws` clients itself and reports trouble in the protocol instead.
import type { ClientRequest, IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { WebSocket, type ClientOptions } from 'ws';

export interface Refusal {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  body: { error: string; message: string };
  /** From the handshake's start to the end of the refusal. */
  ms: number;
}

export function wsRefusal(url: string, options: ClientOptions = {}): Promise<Refusal> {
  const started = performance.now();
  const ws = new WebSocket(url, [], options);
  return new Promise((resolve, reject) => {
    ws.on('error', reject);
    ws.once('open', () => {
      ws.terminate();
      reject(new Error('the handshake was accepted'));
    });
    ws.once('unexpected-response', (_req: ClientRequest, res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('end', () => {
        ws.removeAllListeners('error');
        ws.on('error', () => {});
        ws.terminate();
        const text = Buffer.concat(chunks).toString('utf8');
        try {
          resolve({ status: res.statusCode!, headers: res.headers, text, body: JSON.parse(text), ms: performance.now() - started });
        } catch (err) {
          reject(err);
        }
      });
    });
  });
}

/** Opens a WebSocket through the proxy and resolves once the handshake is accepted. */
export async function wsOpen(url: string): Promise<WebSocket> {
  const ws = new WebSocket(url, []);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return ws;
}
