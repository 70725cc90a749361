// pino set up so that secrets cannot reach a log line: URLs lose their secret query parameters,
// and the headers that carry credentials are censored wherever a request is logged.
import pino, { type DestinationStream, type Logger } from 'pino';
import { decodeParam, pairName, queryPairs } from './query-string.js';

const SECRET_PARAM = /^(token|access_token|(x[_-]?)?api[_-]?key|key|secret|client_secret|auth|authorization)$/i;

/** The URL with the values of secret-looking query parameters replaced, for logging only. */
export function redactUrl(url: string): string {
  const q = url.indexOf('?');
  if (q === -1) return url;
  const pairs = queryPairs(url.slice(q + 1)).map((pair) => {
    const name = pairName(pair);
    return SECRET_PARAM.test(decodeParam(name)) ? `${name}=[REDACTED]` : pair;
  });
  return `${url.slice(0, q)}?${pairs.join('&')}`;
}

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { name: 'bitquery-proxy' },
      // Belt and braces: nothing should log headers, but if anything does, these are censored.
      redact: {
        paths: [
          'headers.authorization',
          'headers["x-api-key"]',
          'headers.cookie',
          'req.headers.authorization',
          'req.headers["x-api-key"]',
          'req.headers.cookie',
          '*.access_token',
          '*.client_secret',
          'access_token',
          'client_secret',
        ],
        censor: '[REDACTED]',
      },
      serializers: {
        req: (req: { method?: string; url?: string }) => ({ method: req.method, url: redactUrl(req.url ?? '') }),
        err: pino.stdSerializers.err,
      },
    },
    destination,
  );
}

/**
 * The logger for access lines. Those are built field by field from values that hold no secret
 * (the URL has been through redactUrl when the event was published, so the `req` serializer does
 * not run it again), so the censoring pass, a large part of the cost of a line, is skipped for them
 * alone. Every other line keeps it.
 */
export function accessLogger(logger: Logger): Logger {
  return logger.child({}, { redact: [], serializers: { req: (req: unknown) => req } });
}
