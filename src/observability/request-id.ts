// Request ids: an inbound X-Request-Id is kept when it is safe to echo and log (printable ASCII,
// at most 128 characters), else replaced by a fresh one. The id goes back on every answer, on the
// access line and upstream.
import { randomUUID } from 'node:crypto';

export const REQUEST_ID_HEADER = 'x-request-id';

const ACCEPTED = /^[\x20-\x7e]{1,128}$/;

/** The inbound id when acceptable, else a new UUID. Fastify's `genReqId` calls it with the raw header. */
export function requestId(inbound: string | string[] | undefined): string {
  return typeof inbound === 'string' && ACCEPTED.test(inbound) ? inbound : randomUUID();
}
