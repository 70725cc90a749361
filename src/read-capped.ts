import type { Dispatcher } from 'undici';

/** Reads an undici response body up to `limit` bytes; the rest is dropped and the body destroyed. */
export async function readCapped(body: Dispatcher.ResponseData['body'], limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    if (size + (chunk as Buffer).length > limit) {
      body.destroy();
      break;
    }
    size += (chunk as Buffer).length;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}
