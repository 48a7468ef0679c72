import { accessSync, constants } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { REPO_ROOT } from '../helpers/processes.ts';

/** Where browser tests leave their screenshots (gitignored; CI keeps it as an artifact). */
export const ARTIFACTS = join(REPO_ROOT, 'test-artifacts');

const isExecutable = (path: string) => {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
};

/**
 * The Chromium to drive: `CHROMIUM_BIN`, else `chromium` or
 * `chromium-browser` on PATH. Throws when there is none: a browser test
 * fails (it is never skipped) on a machine without Chromium.
 */
export function findChromium(): string {
  const given = process.env['CHROMIUM_BIN'];
  if (given) {
    if (!isExecutable(given))
      throw new Error(`CHROMIUM_BIN=${given} is not an executable file: fix or unset it`);
    return given;
  }
  for (const name of ['chromium', 'chromium-browser'])
    for (const dir of (process.env['PATH'] ?? '').split(delimiter))
      if (dir && isExecutable(join(dir, name))) return join(dir, name);
  throw new Error(
    'no Chromium for the browser tests: install it (Debian: apt-get install chromium; .ci/run does) or set CHROMIUM_BIN to its binary',
  );
}

/** Headless Chromium as root on a machine without network: no sandbox, no GPU, no calls home. */
export async function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: findChromium(),
    headless: true,
    timeout: 30_000,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
    ],
  });
}

/** What went wrong in a page: console errors and uncaught exceptions, as lines. */
export function pageProblems(page: Page, name: string): string[] {
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`${name} console: ${m.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`${name} threw: ${err.message}`));
  return problems;
}

/** Saves a screenshot of the whole page under test-artifacts/; resolves with its path. */
export async function screenshot(page: Page, file: string): Promise<string> {
  await mkdir(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, file);
  await page.screenshot({ path, fullPage: true });
  return path;
}
