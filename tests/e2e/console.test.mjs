// The operator's console in a real browser (Debian's chromium driven by playwright-core), after
// payments by the official v2 client on the local chain: the revenue totals and chart, the route
// table, the payments needing attention with markup in their payer and route shown as text, the
// transaction links, a phone-sized screen, and the admin API refusing a request without the token.
import assert from 'node:assert/strict';
import { appendFileSync, existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runJson } from '../support/proc.mjs';
import { useRig } from './rig.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const TOKEN = 'console-token-8d1f0a77';
// Values a payer or a route may carry: they must be shown as text, never run.
const PAYER_MARKUP = '<img src=x onerror="window.__xss_payer=1">';
const ROUTE_MARKUP = 'GET /<img src=x onerror="window.__xss_route=1">';

let playwright = null;
try {
  playwright = await import('playwright-core');
} catch {
  playwright = null;
}
const skip = !existsSync(CHROMIUM)
  ? `chromium is not installed at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_BIN)`
  : !playwright
    ? 'playwright-core is not installed (npm ci --prefix tests)'
    : false;
if (skip) console.log(`# SKIPPED the console tests: ${skip}`);

const dir = mkdtempSync(join(tmpdir(), 'x402-console-'));
const journal = join(dir, 'journal.jsonl');
const rig = skip ? () => null : useRig({
  admin: `token = "${TOKEN}"`,
  config: `[journal]\npath = "${journal}"\nreconcile_interval = "1h"\n`,
});

describe('the operator console', { skip, timeout: 180000 }, () => {
  let browser;
  const payments = [];

  before(async () => {
    if (skip) return;
    const r = rig();
    for (const buyer of r.buyers.slice(0, 2)) {
      const out = await runJson('client_v2.mjs', ['--url', r.url('/paid'), '--key', buyer.key, '--rpc', r.rpc, '--asset', r.token]);
      assert.equal(out.status, 200, `${out.error || out.body}\n${r.gatewayLog()}`);
      payments.push(out);
    }
    // Entries as another gateway version or a hand edit could have left them: a pending payment
    // whose payer is markup, and a settled one on a route whose name is markup.
    const now = Date.now();
    const line = (fields) => `${JSON.stringify({
      network: 'eip155:84532', asset: r.token, pay_to: r.payTo, facilitator: 'x402', transaction: '', reason: '', ...fields,
    })}\n`;
    appendFileSync(journal, line({ time: new Date(now - 60000).toISOString(), id: 'injected-pending', state: 'verified', route: 'GET /paid', payer: PAYER_MARKUP, amount: '10000' }));
    appendFileSync(journal, line({ time: new Date(now - 59000).toISOString(), id: 'injected-pending', state: 'pending', route: 'GET /paid', payer: PAYER_MARKUP, amount: '10000', reason: 'settlement_timeout' }));
    appendFileSync(journal, line({ time: new Date(now - 30000).toISOString(), id: 'injected-settled', state: 'settled', route: ROUTE_MARKUP, payer: r.buyers[2].address, amount: '5000', transaction: `0x${'ab'.repeat(32)}` }));
    browser = await playwright.chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
  }, { timeout: 120000 });

  after(async () => {
    await browser?.close();
  });

  // A page with the console open, signed in with `token`; dialogs (an injected alert) fail.
  async function openConsole(options = {}) {
    const page = await browser.newPage(options);
    const problems = [];
    page.on('dialog', (d) => {
      problems.push(`dialog: ${d.message()}`);
      d.dismiss();
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    await page.goto(rig().adminUrl('/console'));
    await page.waitForSelector('#login:not([hidden])');
    await page.fill('#token', TOKEN);
    await page.click('#login button[type=submit]');
    await page.waitForSelector('#main:not([hidden])');
    await page.waitForSelector('#totals .total');
    return { page, problems };
  }

  test('the admin API refuses a request without the token, and the console asks for it', async () => {
    const r = rig();
    for (const endpoint of ['payments', 'revenue', 'attention', 'health', 'config']) {
      const res = await fetch(r.adminUrl(`/admin/api/${endpoint}`));
      assert.equal(res.status, 401, endpoint);
      assert.equal((await res.json()).error, 'unauthorized');
    }
    const wrong = await fetch(r.adminUrl('/admin/api/payments'), { headers: { authorization: 'Bearer not-the-token' } });
    assert.equal(wrong.status, 401);
    const page = await browser.newPage();
    await page.goto(r.adminUrl('/console'));
    await page.waitForSelector('#login:not([hidden])');
    assert.equal(await page.isHidden('#main'), true, 'no data without the token');
    await page.fill('#token', 'not-the-token');
    await page.click('#login button[type=submit]');
    await page.waitForFunction(() => document.getElementById('error').textContent.includes('refused'));
    assert.equal(await page.isHidden('#main'), true);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('x402-admin-token')), null, 'a refused token is not kept');
    await page.close();
  });

  test('the console shows the revenue totals, a chart with the data, and the routes', async () => {
    const { page, problems } = await openConsole();
    // Two payments of 0.01 by the official client, one injected of 0.005.
    const totals = await page.locator('#totals .total').allTextContents();
    assert.deepEqual(totals, ['0.025 USDC']);
    assert.match(await page.locator('#totals .card').first().textContent(), /3 payments on eip155:84532/);

    const bars = await page.$$eval('#chart svg rect.bar', (rects) => rects.map((r) => Number(r.getAttribute('data-value'))));
    assert.ok(bars.length >= 1, 'the chart draws bars');
    assert.ok(Math.abs(bars.reduce((a, b) => a + b, 0) - 0.025) < 1e-9, `bars: ${bars}`);
    assert.equal(await page.getAttribute('#chart svg', 'data-symbol'), 'USDC');

    const routes = await page.$$eval('#routes tbody tr', (rows) => rows.map((tr) => [...tr.cells].map((td) => td.textContent)));
    const paid = routes.find((row) => row[0] === 'GET /paid');
    assert.deepEqual(paid, ['GET /paid', '0.01 USDC on eip155:84532', '2', '0.02 USDC']);
    const injected = routes.find((row) => row[0] === ROUTE_MARKUP);
    assert.ok(injected, `the injected route is listed as text: ${JSON.stringify(routes)}`);
    assert.deepEqual(injected.slice(2), ['1', '0.005 USDC']);

    // The tokens never left as anything but text.
    assert.equal(await page.evaluate(() => document.querySelectorAll('img').length), 0);
    assert.equal(await page.evaluate(() => window.__xss_payer ?? window.__xss_route ?? null), null);
    assert.deepEqual(problems, []);
    await page.close();
  });

  test('payments needing attention and recent payments are listed with their transaction links', async () => {
    const { page, problems } = await openConsole();
    const attention = await page.$$eval('#attention tbody tr', (rows) => rows.map((tr) => ({ why: tr.cells[1].textContent, payer: tr.cells[3].textContent, reason: tr.cells[6].textContent })));
    assert.deepEqual(attention, [{ why: 'unknown outcome', payer: PAYER_MARKUP, reason: 'settlement_timeout' }]);
    assert.match(await page.textContent('#attention-summary'), /1 unknown outcome/);

    const rows = await page.$$eval('#payments tbody tr', (trs) => trs.map((tr) => ({
      state: tr.cells[1].textContent,
      route: tr.cells[2].textContent,
      payer: tr.cells[3].textContent,
      amount: tr.cells[4].textContent,
      link: tr.cells[5].querySelector('a')?.getAttribute('href') ?? null,
      rel: tr.cells[5].querySelector('a')?.getAttribute('rel') ?? null,
    })));
    assert.equal(rows.length, 4, JSON.stringify(rows));
    const real = rows.filter((row) => row.route === 'GET /paid' && row.state === 'settled');
    assert.equal(real.length, 2);
    const transactions = payments.map((p) => p.paymentResponse.transaction.toLowerCase()).sort();
    assert.deepEqual(real.map((row) => row.link.replace('https://sepolia.basescan.org/tx/', '').toLowerCase()).sort(), transactions);
    for (const row of real) {
      assert.equal(row.amount, '0.01 USDC');
      assert.match(row.rel, /noopener/);
    }
    assert.ok(rows.some((row) => row.payer === PAYER_MARKUP && row.state === 'pending'));

    // Health: the facilitator the gateway probes, and the journal it reads.
    const health = await page.$$eval('#health dt', (dts) => dts.map((dt) => `${dt.textContent}: ${dt.nextElementSibling.textContent}`));
    assert.ok(health.some((h) => /^Facilitator .*: reachable/.test(h)), health.join('\n'));
    assert.ok(health.includes('Journal: file'), health.join('\n'));
    assert.ok(health.some((h) => h.startsWith('Shared store: none')), health.join('\n'));

    assert.equal(await page.evaluate(() => document.querySelectorAll('img').length), 0);
    assert.equal(await page.evaluate(() => window.__xss_payer ?? window.__xss_route ?? null), null);
    assert.deepEqual(problems, []);
    await page.close();
  });

  test('the console fits a phone-sized screen', async () => {
    const { page, problems } = await openConsole({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true });
    const widths = await page.evaluate(() => ({ page: document.documentElement.scrollWidth, screen: window.innerWidth }));
    assert.ok(widths.page <= widths.screen + 1, `the page scrolls sideways: ${JSON.stringify(widths)}`);
    const chart = await page.locator('#chart svg').boundingBox();
    assert.ok(chart && chart.width <= 375 && chart.width > 200, JSON.stringify(chart));
    assert.deepEqual(problems, []);
    await page.close();
  });
});
