import type { Logger } from 'pino';
import type { Events } from '../events.js';
import { readSecretFile, type Config, type CredentialSetConfig } from '../config/index.js';
import { ClientCredentialsSource } from './client-credentials.js';
import { TokenRefresher } from './refresher.js';
import { StaticTokenProvider } from './static-token.js';
import type { TokenProvider } from './types.js';

export { provesToken, TokenUnavailableError, type TokenProvider, type Readiness } from './types.js';

/** The token holder for one credential set; call start() to fetch the first token. */
export function createTokenProvider({ name, credentials }: CredentialSetConfig, config: Config, logger: Logger, events: Events): TokenProvider {
  const report = { events, credentials: name };
  if (credentials.mode === 'static') {
    const { token } = credentials;
    const initial = 'value' in token ? token.value : readSecretFile(token.file, 'BITQUERY_TOKEN_FILE');
    return new StaticTokenProvider({ token, initial, logger, report });
  }
  return new TokenRefresher({
    source: new ClientCredentialsSource({ credentials, timeoutMs: config.tokenTimeoutMs }),
    logger,
    report,
    refreshMargin: config.tokenRefreshMargin,
    retryMinMs: config.tokenRetryMinMs,
    retryMaxMs: config.tokenRetryMaxMs,
    rejectedRetryMs: config.tokenRejectedRetryMs,
  });
}
