// Clicks through Flotilla's web UI in headless Chromium, as a person would, and fails on the
// first thing that is not as it should be. Started by main.rs with:
//   GATEWAY (http://host:port), PLAYWRIGHT_CORE (its folder), CHROMIUM (the binary),
//   SCREENSHOTS and DOWNLOADS (folders), SLOW_SQL (a query that runs for many seconds),
//   REPORT (where the JSON report goes).
// Every wait is bounded; the whole run is bounded by main.rs.

import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const gateway = env('GATEWAY');
const origin = new URL(gateway).origin;
const { chromium } = createRequire(import.meta.url)(env('PLAYWRIGHT_CORE'));
const WAIT = { timeout: 30_000 };

const offOrigin = [];
const consoleErrors = [];
const expectedFailures = new Set();

function check(condition, message) {
  if (!condition) throw new Error(message);
  console.log(`ok: ${message}`);
}

/** The page shows no stray `null`/`undefined` and no token form (auth is off under local). */
async function looksRight(page, where) {
  const text = await page.locator('#view').innerText();
  check(!/\b(null|undefined|NaN)\b/.test(text), `${where}: no null, undefined or NaN on the page`);
  check(await page.locator('#token').isHidden(), `${where}: no token form, as auth is off`);
}

async function resultCells(page) {
  return page.$$eval('table[data-result] tbody tr', (rows) =>
    rows.map((row) => Array.from(row.cells, (cell) => cell.textContent)));
}

/** Types `sql` into the console, runs it with Ctrl+Enter, waits for it to end; its id. */
async function runInConsole(page, sql) {
  await page.goto(`${gateway}/ui/#/console`);
  const before = await page.locator('[data-detail]').getAttribute('data-detail', { timeout: 1 }).catch(() => null);
  const editor = page.locator('textarea');
  await editor.fill(sql);
  await editor.press('Control+Enter');
  await page.waitForFunction((before) => {
    const summary = document.querySelector('[data-summary]');
    return summary && summary.dataset.query !== before;
  }, before, WAIT);
  return page.locator('[data-summary]').getAttribute('data-query');
}

async function overview(page) {
  await page.goto(`${gateway}/ui/`);
  for (const role of ['jobmanager', 'taskmanager']) {
    await page.waitForFunction(
      (role) => document.querySelectorAll(`section[data-role="${role}"] tbody [data-state="serving"]`).length === 2,
      role, WAIT);
    check(true, `the overview lists 2 serving ${role}s`);
  }
  const slots = await page.$$eval('section[data-role="taskmanager"] tbody tr', (rows) =>
    rows.map((row) => row.cells[4].textContent));
  check(slots.every((text) => /^\d+ \/ \d+$/.test(text)), `slots used/total per TaskManager: ${slots}`);
  const counts = await page.locator('[data-counts="taskmanager"]').textContent();
  check(counts.startsWith('2 of 2 serving'), `TaskManager counts by state and pool: ${counts}`);
  // Two samples make a rate; the page polls every 2 s.
  await page.waitForFunction(() => document.querySelectorAll('[data-rate] canvas').length === 3, null, WAIT);
  check(true, 'queries/s, errors/s and rows/s are drawn from the counters');
  await looksRight(page, 'overview');

  // A hidden tab polls nothing; shown again, it polls at once.
  const setHidden = (hidden) => page.evaluate((hidden) => {
    Object.defineProperty(document, 'hidden', { value: hidden, configurable: true });
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
  let polls = 0;
  const counter = (request) => { if (new URL(request.url()).pathname === '/v1/cluster') polls += 1; };
  page.on('request', counter);
  await setHidden(true);
  await page.waitForTimeout(500);
  polls = 0;
  await page.waitForTimeout(5_000);
  check(polls === 0, `a hidden tab polls nothing (${polls} polls in 5 s)`);
  await setHidden(false);
  for (let waited = 0; polls === 0 && waited < 30; waited += 1) await page.waitForTimeout(100);
  check(polls > 0, 'shown again, it polls within 3 s');
  page.off('request', counter);
}

/** The overview again, with a few seconds of queries sent meanwhile, for its screenshot. */
async function overviewUnderLoad(page) {
  await page.goto(`${gateway}/ui/#/`);
  const until = Date.now() + 6_000;
  let sent = 0;
  while (Date.now() < until && sent < 200) {
    const answer = await fetch(`${gateway}/v1/query`, { method: 'POST', body: 'SELECT n_name FROM nation', headers: { accept: 'application/json' } });
    await answer.arrayBuffer();
    sent += 1;
    await new Promise((resolve) => setTimeout(resolve, 40));
  }
  await page.waitForFunction(() => Number(document.querySelector('[data-rate="queries"] .value').textContent) > 0, null, WAIT);
  check(true, `the queries/s rate rose while ${sent} queries were sent`);
  await page.screenshot({ path: join(env('SCREENSHOTS'), 'overview.png'), fullPage: true });
}

async function consoleRows(page) {
  await page.goto(`${gateway}/ui/#/console`);
  const region = page.locator('[data-table="region"]');
  await region.waitFor(WAIT);
  const listed = await page.locator('[data-table]').count();
  const label = await region.textContent();
  check(listed === 8 && label === 'region parquet', `the console lists TPC-H's 8 tables with their format: ${listed}, "${label}"`);
  await region.click();
  const picked = await page.locator('textarea').inputValue();
  check(picked === 'SELECT * FROM region LIMIT 100', `a table's name starts a query of it: "${picked}"`);

  const capped = await runInConsole(page, 'SELECT l_orderkey, l_linenumber FROM lineitem ORDER BY l_orderkey, l_linenumber LIMIT 1500');
  const summary = await page.locator('[data-summary]').textContent();
  const shown = await page.locator('table[data-result] tbody tr').count();
  check(summary.startsWith('1,500 rows (showing the first 1,000)') && shown === 1000,
    `a large result is capped at 1,000 rows and says so: "${summary}", ${shown} rows shown (query ${capped})`);

  await runInConsole(page, 'SELECT r_regionkey, r_name FROM region ORDER BY r_regionkey');
  const cells = await resultCells(page);
  const expected = [['0', 'AFRICA'], ['1', 'AMERICA'], ['2', 'ASIA'], ['3', 'EUROPE'], ['4', 'MIDDLE EAST']];
  check(JSON.stringify(cells) === JSON.stringify(expected), `the console shows TPC-H's five regions: ${JSON.stringify(cells)}`);

  const [download] = await Promise.all([
    page.waitForEvent('download', WAIT),
    page.getByRole('button', { name: 'Download CSV' }).click(),
  ]);
  const file = join(env('DOWNLOADS'), download.suggestedFilename());
  await download.saveAs(file);
  const csv = readFileSync(file, 'utf8').trim().split('\n');
  check(csv.length === 6 && csv[5] === '4,MIDDLE EAST', `Download CSV saves the whole result: ${JSON.stringify(csv)}`);

  await runInConsole(page, "SELECT r_name, count(*) AS nations\nFROM nation JOIN region ON n_regionkey = r_regionkey\nGROUP BY r_name\nORDER BY r_name");
  const counts = await resultCells(page);
  check(counts.length === 5 && counts.every(([, nations]) => nations === '5'), `five nations per region: ${JSON.stringify(counts)}`);
  await looksRight(page, 'console');
  await page.screenshot({ path: join(env('SCREENSHOTS'), 'console.png'), fullPage: true });
}

async function errorQuery(page) {
  expectedFailures.add('/v1/query');
  const failed = await runInConsole(page, 'SELECT * FROM no_such_table');
  const code = await page.locator('[data-error]').getAttribute('data-error');
  check(code === 'sql_planning', `an unknown table shows its code in the console: ${code}`);
  await page.goto(`${gateway}/ui/#/queries?state=failed`);
  const row = page.locator(`tr[data-query="${failed}"]`);
  await row.waitFor(WAIT);
  check((await row.textContent()).includes('sql_planning'), 'the failed query is listed with its code');
  return failed;
}

async function cancelQuery(page) {
  await page.goto(`${gateway}/ui/#/console`);
  await page.locator('textarea').fill(env('SLOW_SQL'));
  await page.locator('textarea').press('Control+Enter');
  await page.locator('[data-running]').waitFor(WAIT);
  const slow = await page.locator('[data-detail]').getAttribute('data-detail');
  await page.goto(`${gateway}/ui/#/queries`);
  const row = page.locator(`tr[data-query="${slow}"][data-state="running"]`);
  await row.waitFor(WAIT);
  check(true, `the long query ${slow} is listed as running`);
  await looksRight(page, 'queries');
  await page.screenshot({ path: join(env('SCREENSHOTS'), 'queries.png'), fullPage: true });
  await row.click();
  const cancel = page.locator('[data-action="cancel"]');
  await cancel.waitFor(WAIT);
  page.once('dialog', (dialog) => dialog.accept());
  await cancel.click();
  await page.locator('.actions [data-state="cancelled"]').waitFor(WAIT);
  const code = await page.locator('[data-error]').getAttribute('data-error');
  check(code === 'cancelled', `Cancel ends it and its detail shows cancelled (${code})`);
  await page.waitForFunction(() => document.querySelectorAll('[data-timeline] .span').length >= 1, null, WAIT);
  check(await cancel.count() === 0, 'an ended query has no Cancel button');
  await looksRight(page, 'query detail');
  let polls = 0;
  const counter = (request) => { if (new URL(request.url()).pathname === `/v1/query/${slow}`) polls += 1; };
  page.on('request', counter);
  await page.waitForTimeout(3_000);
  page.off('request', counter);
  check(polls === 0, `the detail of an ended query stops polling (${polls} polls in 3 s)`);
  await page.screenshot({ path: join(env('SCREENSHOTS'), 'detail.png'), fullPage: true });
  return slow;
}

async function main() {
  const browser = await chromium.launch({
    executablePath: env('CHROMIUM'),
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
      '--no-first-run', '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
    const page = await context.newPage();
    page.on('request', (request) => {
      const url = request.url();
      if (!url.startsWith(`${origin}/`) && !url.startsWith(`blob:${origin}/`) && !url.startsWith('data:')) offOrigin.push(url);
    });
    page.on('console', (message) => {
      if (message.type() === 'error') consoleErrors.push({ text: message.text(), url: message.location().url });
    });
    page.on('pageerror', (error) => consoleErrors.push({ text: String(error), url: 'pageerror' }));

    await overview(page);
    await consoleRows(page);
    const failed = await errorQuery(page);
    const cancelled = await cancelQuery(page);
    await overviewUnderLoad(page);

    check(offOrigin.length === 0, `no request left ${origin}: ${JSON.stringify(offOrigin)}`);
    // Chromium logs every 4xx answer; only the console's deliberate failures may appear.
    const unexpected = consoleErrors.filter(({ text, url }) =>
      !(text.startsWith('Failed to load resource') && expectedFailures.has(new URL(url, origin).pathname)));
    check(unexpected.length === 0, `no console errors: ${JSON.stringify(consoleErrors)}`);
    writeFileSync(env('REPORT'), JSON.stringify({ failed_query: failed, cancelled_query: cancelled, console_errors: consoleErrors }));
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(`FAILED: ${error.stack ?? error}`);
  process.exitCode = 1;
});
