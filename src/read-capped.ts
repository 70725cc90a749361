// The one bounded reader of bodies the proxy keeps (a token endpoint's answer, a held 401, an
// upstream's refusal of a WebSocket handshake): at most `limit` bytes are kept, the rest dropped.

/** Chunks kept up to `limit` bytes; the part of a chunk past the limit is dropped. */
export class CappedChunks {
  private readonly chunks: Buffer[] = [];
  private size = 0;

  constructor(private readonly limit: number) {}

  /** Keeps what fits of `chunk`; false once the limit is reached (nothing more is worth reading). */
  push(chunk: Buffer): boolean {
    const room = this.limit - this.size;
    if (chunk.length < room) {
      this.chunks.push(chunk);
      this.size += chunk.length;
      return true;
    }
    if (room > 0) this.chunks.push(chunk.subarray(0, room));
    this.size = this.limit;
    return false;
  }

  concat(): Buffer {
    return Buffer.concat(this.chunks, this.size);
  }
}

/** Reads a body up to `limit` bytes; then the body is destroyed. */
export async function readCapped(body: AsyncIterable<Buffer> & { destroy(): unknown }, limit: number): Promise<Buffer> {
  const kept = new CappedChunks(limit);
  for await (const chunk of body) {
    if (!kept.push(chunk)) {
      body.destroy();
      break;
    }
  }
  return kept.concat();
}
