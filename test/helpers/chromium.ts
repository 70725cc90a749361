// Headless Chromium for the browser tests: Debian's `chromium` package (installed by .ci/run),
// driven by playwright-core. Tests skip, saying why, where it is not installed.
import { existsSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';

/** The tap `skip` option: false when Chromium is there, else the reason. */
export const chromiumSkip = !existsSync(CHROMIUM) && `${CHROMIUM} is absent: install Debian's chromium package (apt-get install -y chromium) to run this test`;

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** Console errors and warnings (a CSP violation is one) and uncaught errors of `page`, as they come. */
export function pageProblems(page: Page): string[] {
  const problems: string[] = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') problems.push(msg.text());
  });
  page.on('pageerror', (err) => problems.push(err.message));
  return problems;
}
