// End to end: the demo app (examples/axum_login.rs) on a loopback port with a 25 s idle
// timeout, driven in Debian's headless Chromium by playwright-core.
//
// The server keeps real time, so this test does too; every wait is bounded and the whole run
// takes about 70 s. Screenshots of the warning and of the 440 page go to
// target/browser-artifacts/ (or $ARTIFACTS_DIR).
//
// Run from the repository root after `cargo test` (which builds the demo):
//   (cd browser/e2e && npm ci && npm test)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DEMO = process.env.DEMO_BIN || path.join(ROOT, 'target/debug/examples/axum_login');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = process.env.ARTIFACTS_DIR || path.join(ROOT, 'target/browser-artifacts');
// The demo derives the client's timing from this: warn 20 s ahead, keep-alive every 2.5 s.
const IDLE_SECS = 25;
const WARN_SECS = 20;
const INTERVAL_MS = 2500;

let demo;
let base;
let browser;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Starts the demo on any free port and reads its address from its first line. */

/** A screenshot, tried again a few times: a busy renderer (a loaded CI machine) can refuse one. */
async function screenshot(page, name) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      await page.screenshot({ path: path.join(ARTIFACTS, name) });
      return;
    } catch (error) {
      if (attempt >= 5) throw error;
      await page.waitForTimeout(500);
    }
  }
}

async function startDemo() {
  const child = spawn(DEMO, [], {
    env: { ...process.env, PORT: '0', IDLE_TIMEOUT_SECS: String(IDLE_SECS), SESSION_STORE: 'memory', RUST_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout });
  const first = await Promise.race([
    new Promise((resolve) => lines.once('line', resolve)),
    new Promise((_, reject) => child.once('exit', (code) => reject(new Error(`demo exited with ${code}; build it with cargo test`)))),
    sleep(30000).then(() => { throw new Error('demo did not print its address within 30 s'); }),
  ]);
  const match = /http:\/\/([^;\s]+)/.exec(first);
  assert.ok(match, `unexpected first line: ${first}`);
  lines.on('line', () => {}); // keep draining stdout
  return { child, base: `http://${match[1]}` };
}

before(async () => {
  ({ child: demo, base } = await startDemo());
  mkdirSync(ARTIFACTS, { recursive: true });
  // Playwright starts Chromium with a fresh temporary profile (--user-data-dir) of its own.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30000,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // Two pages of one context must both keep running their timers at full rate.
      '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
      '--disable-backgrounding-occluded-windows',
    ],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (demo) demo.kill();
});

async function signIn(context) {
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  await page.goto(`${base}/login`);
  await page.fill('input[name=username]', 'ada');
  await page.fill('input[name=password]', 'secret');
  await Promise.all([page.waitForURL(`${base}/dashboard`), page.click('button[type=submit]')]);
  await page.waitForFunction(() => typeof window.SessionTimeout === 'object');
  return page;
}

async function openDashboard(context) {
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  await page.goto(`${base}/dashboard`);
  await page.waitForFunction(() => typeof window.SessionTimeout === 'object');
  return page;
}

/** Whether the page's session is still active, by the passive status route. */
async function statusOf(page) {
  return page.evaluate((url) => fetch(url).then((response) => response.status), `${base}/session/status`);
}

const dialogOf = (page) => page.locator('[role=alertdialog]');

/** Counts keep-alive requests from every page of `context`. */
function countKeepAlives(context) {
  const counter = { count: 0 };
  context.on('response', (response) => {
    if (process.env.E2E_DEBUG) console.log('#', new Date().toISOString(), response.status(), response.url());
  });
  context.on('request', (request) => {
    if (new URL(request.url()).pathname === '/session/keepalive') counter.count += 1;
  });
  return counter;
}

test('the script is served with its settings', async () => {
  const response = await fetch(`${base}/session/timeout.js`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('content-type'), 'text/javascript; charset=utf-8');
  const text = await response.text();
  assert.match(text, /"warnBeforeMs":20000,"keepAliveIntervalMs":2500/);
});

test('sign-out in one tab reaches the others', { timeout: 30000 }, async () => {
  const context = await browser.newContext();
  try {
    const first = await signIn(context);
    const second = await openDashboard(context);
    await Promise.all([first.waitForURL(`${base}/login`), first.click('form[data-session-signout] button')]);
    await second.waitForURL(`${base}/login`, { timeout: 10000 });
  } finally {
    await context.close();
  }
});

test('active: stays signed in; idle: warned; "Stay signed in": extended; idle again: 440', { timeout: 110000 }, async () => {
  const started = Date.now();
  const context = await browser.newContext({ viewport: { width: 900, height: 600 } });
  try {
    const keepAlives = countKeepAlives(context);
    const page = await signIn(context);
    const other = await openDashboard(context);

    // Active past the idle timeout: one tab moves, the other is left alone; neither warns.
    const activeFor = (IDLE_SECS + 5) * 1000;
    const activeUntil = Date.now() + activeFor;
    for (let i = 0; Date.now() < activeUntil; i++) {
      await page.mouse.move(100 + (i % 2) * 50, 200);
      await sleep(500);
      assert.equal(await dialogOf(page).count(), 0, 'the active tab warned');
      assert.equal(await dialogOf(other).count(), 0, 'the idle tab warned while the other was active');
    }
    assert.equal(await statusOf(page), 200, 'signed out while active');
    assert.ok(keepAlives.count >= 2, `only ${keepAlives.count} keep-alives while active`);
    assert.ok(keepAlives.count <= Math.ceil(activeFor / INTERVAL_MS) + 1, `${keepAlives.count} keep-alives in ${activeFor} ms`);

    // Idle: the warning comes, in both tabs, and nothing refreshes the session meanwhile.
    // Activity just before the loop ended is still owed one refresh, at most an interval
    // later; let it go out before counting.
    await sleep(INTERVAL_MS + 1000);
    const beforeIdle = keepAlives.count;
    const dialog = dialogOf(page);
    await dialog.waitFor({ state: 'visible', timeout: (IDLE_SECS - WARN_SECS) * 1000 + INTERVAL_MS + 5000 });
    assert.equal(keepAlives.count, beforeIdle, 'a keep-alive went out while idle');
    assert.equal(await dialog.getAttribute('aria-modal'), 'true');
    const title = await page.locator('#' + (await dialog.getAttribute('aria-labelledby'))).textContent();
    assert.match(title, /session is about to expire/);
    const text = await page.locator('#' + (await dialog.getAttribute('aria-describedby'))).textContent();
    assert.match(text, /signed out in \d+ seconds/);
    assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Stay signed in', 'focus is not on the action');
    assert.equal(await page.locator('[data-session-timeout] [aria-live]').count(), 1);
    await dialogOf(other).waitFor({ state: 'visible', timeout: 5000 });
    await screenshot(page, 'warning.png');

    // "Stay signed in", by keyboard: the session is extended and both warnings close.
    await page.keyboard.press('Enter');
    await dialog.waitFor({ state: 'hidden', timeout: 5000 });
    await dialogOf(other).waitFor({ state: 'hidden', timeout: 5000 });
    assert.equal(await statusOf(page), 200, 'signed out after "Stay signed in"');
    assert.equal(keepAlives.count, beforeIdle + 1);

    // Idle again, one tab left (with two, either may be first to reach the server and the
    // other then finds the cookie cleared and lands on the login page): warned again, then
    // the page goes to the 440 page.
    await other.close();
    await dialog.waitFor({ state: 'visible', timeout: (IDLE_SECS - WARN_SECS) * 1000 + 5000 });
    const left = await page.waitForEvent('response', {
      predicate: (response) => response.request().isNavigationRequest(),
      timeout: (WARN_SECS + 10) * 1000,
    });
    await page.waitForLoadState('load');
    await screenshot(page, 'expired.png');
    assert.equal(left.status(), 440, `the page left to ${left.url()} (${left.status()})`);
    assert.equal(await page.title(), 'Login Time-out');
    assert.equal(keepAlives.count, beforeIdle + 1, 'a keep-alive went out while idle');
    console.log(`# e2e flow took ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    await context.close();
  }
});
