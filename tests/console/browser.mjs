// browser.mjs - the console end to end in Debian's chromium, driven by
// playwright-core (from console/node_modules; no downloaded browser).
// Started by test_browser.py, which runs the real tokenauditd and the fake
// upstream and passes their addresses in the environment:
//   TA_URL (gateway), TA_FAKE_URL (fake upstream /v1), TA_ADMIN_EMAIL,
//   TA_ADMIN_PASSWORD, TA_SHOTS (screenshot directory), TA_CONSOLE_DIR
// Prints "BROWSER OK" when every flow passed; any dialog, CSP violation,
// page error, console error or request to another origin fails the run.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const env = process.env;
const require = createRequire(join(env.TA_CONSOLE_DIR, 'package.json'));
const { chromium } = require('playwright-core');

const BASE = env.TA_URL;
const SHOTS = env.TA_SHOTS;
const HOSTILE_IMG = '<img src=x onerror=alert(1)>';
const HOSTILE_SCRIPT = '"><script>alert(2)</script>';
const ALICE = 'alice@example.com';
const ALICE_PW = 'correct horse battery';
const DESKTOP = { width: 1440, height: 900 };
// the browser runs in Europe/Paris (below); the charts' day labels are its dates, as "12/3"
const PARIS_DAY = new Intl.DateTimeFormat('en-US', { timeZone: 'Europe/Paris', month: 'numeric', day: 'numeric' });
const PHONE = { width: 390, height: 844 };
const problems = [];
mkdirSync(SHOTS, { recursive: true });

function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + what);
}

async function api(method, path, token, body) {
  const r = await fetch(BASE + path, {
    method, headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, json: text ? JSON.parse(text) : null };
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const context = await browser.newContext({ viewport: DESKTOP, colorScheme: 'light', locale: 'en-US', timezoneId: 'Europe/Paris' });
await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });
await context.exposeBinding('__taCsp', (_src, v) => problems.push('CSP violation: ' + v));
await context.addInitScript(() => {
  document.addEventListener('securitypolicyviolation', (e) =>
    window.__taCsp(`${e.violatedDirective} blocked ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`));
});
const page = await context.newPage();
page.setDefaultTimeout(10000);
page.on('dialog', (d) => { problems.push(`a ${d.type()} dialog opened: ${d.message()}`); d.dismiss().catch(() => {}); });
page.on('pageerror', (e) => problems.push('page error: ' + e.message));
page.on('console', (m) => {
  // The browser logs every 4xx answer the tests provoke (bad password, field errors, 403).
  if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of 4\d\d/.test(m.text()))
    problems.push('console error: ' + m.text());
});
page.on('request', (r) => {
  const u = new URL(r.url());
  if (u.origin !== BASE && u.protocol !== 'data:') problems.push('request to another origin: ' + r.url());
  if (/\/x$/.test(u.pathname)) problems.push('a hostile <img> was rendered as markup: ' + r.url());
});

const dlg = () => page.locator('dialog[open]');
// Let the page react (two frames), then wait until no API call is in flight
// and nothing shows as loading.
async function settled() {
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(r, 0)))));
  await page.waitForFunction(() => !document.documentElement.hasAttribute('data-busy') && !document.querySelector('.state.loading'));
}
async function go(hash) {
  await page.goto(`${BASE}/console/#${hash}`);
  await settled();
}
async function noMarkupFromData() {
  // Nothing from the data became an element: the app itself renders no <img>
  // and no inline <script>.
  check(await page.locator('img').count() === 0, 'an <img> element exists on ' + page.url());
  check(await page.locator('script:not([src])').count() === 0, 'an inline <script> exists on ' + page.url());
}
async function shot(name, viewport = DESKTOP) {
  await page.setViewportSize(viewport);
  await settled();
  await page.waitForTimeout(150); // let charts resize to the new width
  const tag = `${viewport.width}x${viewport.height}`;
  await page.screenshot({ path: join(SHOTS, `${name}-${tag}.png`), fullPage: viewport === PHONE });
}
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
  } catch (e) {
    await page.screenshot({ path: join(SHOTS, `FAILED-${name.replace(/\W+/g, '-')}.png`), fullPage: true }).catch(() => {});
    throw new Error(`${name}: ${e.message}`);
  }
  console.log(`ok  ${name} (${Date.now() - t0} ms)`);
}
async function login(email, password) {
  await page.goto(BASE + '/');
  check(page.url() === BASE + '/console/', 'GET / lands on /console/, got ' + page.url());
  const emailBox = page.getByLabel('Email');
  await emailBox.waitFor();
  // By keyboard: the email field has the focus, Tab to the password, Enter submits.
  await page.keyboard.type(email);
  await page.keyboard.press('Tab');
  await page.keyboard.type(password);
  await page.keyboard.press('Enter');
}

let adminToken, key, keyPrefix;

await step('login: a wrong password is refused with the API\'s words', async () => {
  await login(env.TA_ADMIN_EMAIL, 'not-the-password');
  await page.getByRole('alert').first().waitFor();
  await shot('login-error');
  check(await page.getByRole('navigation', { name: 'Console' }).count() === 0, 'no navigation before login');
});

await step('login as superadmin', async () => {
  await login(env.TA_ADMIN_EMAIL, env.TA_ADMIN_PASSWORD);
  await page.getByRole('link', { name: 'Overview' }).waitFor();
  await settled();
  check(page.url().endsWith('#/overview'), 'superadmin lands on the overview: ' + page.url());
  await page.getByText('No requests in this range yet').waitFor();
  const r = await fetch(BASE + '/api/auth/login/', { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ email: env.TA_ADMIN_EMAIL, password: env.TA_ADMIN_PASSWORD }) });
  adminToken = (await r.json()).access_token;
  await shot('overview-empty');
});

await step('providers: create (hostile name), Test, Sync models', async () => {
  await go('/providers');
  await page.getByText('No providers yet').waitFor();
  await shot('providers-empty');
  await page.getByRole('button', { name: 'New provider' }).click();
  await dlg().getByLabel('Name', { exact: true }).fill(HOSTILE_IMG);
  await dlg().getByLabel('Base URL').fill(env.TA_FAKE_URL);
  await dlg().getByLabel('API key').fill('sk-upstream-7777');
  await shot('providers-new');
  await dlg().getByRole('button', { name: 'Add provider' }).click();
  await dlg().waitFor({ state: 'detached' });
  const row = page.getByRole('row').filter({ hasText: HOSTILE_IMG });
  await row.waitFor();
  check(await row.getByText('••••7777').count() === 1, 'key shown as its last four');
  // never called yet: healthy, no calls in the window
  const health = row.locator('td[data-label="Health"]');
  await health.locator('.health > .badge').getByText('healthy', { exact: true }).waitFor();
  await health.getByText('no calls in the last 5 min').waitFor();
  await row.getByRole('button', { name: 'Test' }).click();
  await row.getByText(/^OK · HTTP 200 · \d+ ms · 3 models$/).waitFor();
  await row.getByRole('button', { name: 'Sync models' }).click();
  await dlg().getByRole('button', { name: 'Sync models' }).click();
  await dlg().getByRole('heading', { name: 'Created (3)' }).waitFor();
  for (const m of ['gpt-4o-mini', 'text-embedding-3-small', 'fake-model'])
    await dlg().getByRole('listitem').filter({ hasText: m }).waitFor();
  const summary = await dlg().getByRole('list', { name: 'Sync result' }).textContent();
  check(summary === '3 created0 updated0 no longer listed0 skipped0 already there', 'sync summary: ' + summary);
  check(await dlg().getByRole('heading', { name: /^Already there/ }).count() === 0, 'no list for an empty part');
  await shot('providers-sync');
  await dlg().getByRole('button', { name: 'Done' }).click();
  await page.getByText(/^OK · HTTP 200/).waitFor();
  await noMarkupFromData();
  await shot('providers');
});

await step('models: a price that is not a number is refused beside its field, nothing written', async () => {
  await go('/models');
  await page.getByRole('button', { name: 'New model' }).click();
  await dlg().getByLabel('Name (what clients send as model)').fill(HOSTILE_SCRIPT);
  await dlg().getByLabel('Input', { exact: true }).fill('abc');
  await dlg().getByLabel('Output', { exact: true }).fill('2');
  await dlg().getByLabel('Provider').selectOption({ label: HOSTILE_IMG });
  await dlg().getByLabel('Upstream model').fill('gpt-4o-mini');
  await dlg().getByRole('button', { name: 'Create model' }).click();
  const field = dlg().locator('.field').filter({ has: page.getByLabel('Input', { exact: true }) });
  await field.getByRole('alert').filter({ hasText: 'input_price: must be a decimal number' }).waitFor();
  check(await dlg().getByLabel('Input', { exact: true }).getAttribute('aria-invalid') === 'true', 'the field is marked invalid');
  const models = await api('GET', '/api/admin/models/', adminToken);
  check(models.json.count === 3 && !models.json.results.some((m) => m.name === HOSTILE_SCRIPT), 'nothing written on a field error');
  await shot('models-field-error');
  await dlg().getByLabel('Input', { exact: true }).fill('1.5');
  // a route weight out of 1..1000: the API's words beside the Weight field, nothing written
  await dlg().getByText('Weight (1–1000): the share of traffic among routes of equal priority').waitFor();
  await dlg().getByLabel('Weight').fill('1001');
  await dlg().getByRole('button', { name: 'Create model' }).click();
  const weight = dlg().locator('.route-field').filter({ has: page.getByLabel('Weight') });
  await weight.getByRole('alert').filter({ hasText: 'routes[0].weight: must be at most 1000' }).waitFor();
  check(await dlg().getByLabel('Weight').getAttribute('aria-invalid') === 'true', 'the weight is marked invalid');
  check(await dlg().getByRole('alert').count() === 1, 'the error once, beside its field (not again below the form)');
  check((await api('GET', '/api/admin/models/', adminToken)).json.count === 3, 'nothing written on a weight error');
  await shot('models-weight-error');
  await dlg().getByLabel('Weight').fill('2');
  await dlg().getByRole('button', { name: 'Create model' }).click();
  await dlg().waitFor({ state: 'detached' });
  const row = page.getByRole('row').filter({ hasText: HOSTILE_SCRIPT });
  await row.waitFor();
  check(await row.getByText('1.5', { exact: true }).count() === 1, 'input price shown as the API gave it');
  const created = (await api('GET', '/api/admin/models/?search=script', adminToken)).json.results[0];
  check(created.routes[0].weight === 2, 'the weight written: ' + JSON.stringify(created.routes));
  await noMarkupFromData();
  await shot('models');
});

await step('providers: a second sync names what was updated, no longer listed and skipped; Models marks the route', async () => {
  // a model routed to an upstream name the provider does not list, and a list with context sizes and a name too long
  const prov = (await api('GET', '/api/admin/providers/', adminToken)).json.results[0];
  const retired = await api('POST', '/api/admin/models/', adminToken, { name: 'retired-model',
    routes: [{ provider_id: prov.id, upstream_name: 'gpt-3-retired', weight: 3 }, { provider_id: prov.id, upstream_name: 'fake-model' }],
    input_price: '1', output_price: '1' });
  check(retired.status === 201, 'retired-model: ' + retired.status);
  const fakeRoot = env.TA_FAKE_URL.replace(/\/v1\/?$/, '');
  const long = 'x'.repeat(130);
  const set = await fetch(fakeRoot + '/_fake/models', { method: 'POST', body: JSON.stringify({ data: [
    { id: 'gpt-4o-mini', context_window: 128000, max_output_tokens: 16384 }, { id: 'text-embedding-3-small' },
    { id: 'fake-model' }, { id: long }] }) });
  check(set.status === 200, 'fake models list: ' + set.status);
  await go('/providers');
  await page.getByRole('row').filter({ hasText: HOSTILE_IMG }).getByRole('button', { name: 'Sync models' }).click();
  await dlg().getByRole('button', { name: 'Sync models' }).click();
  const summary = dlg().getByRole('list', { name: 'Sync result' });
  await summary.waitFor();
  const text = await summary.textContent();
  check(text === '0 created2 updated1 no longer listed1 skipped3 already there', 'second sync summary: ' + text);
  const updated = dlg().locator('section.sync-list.updated');
  await updated.getByRole('heading', { name: 'Updated (2)' }).waitFor();
  check(await updated.getByText(HOSTILE_SCRIPT, { exact: true }).count() === 1, 'the hostile model updated, as text');
  await dlg().locator('section.sync-list.missing').getByText('retired-model', { exact: true }).waitFor();
  await dlg().locator('section.sync-list.missing').getByText('Still served').waitFor();
  await dlg().locator('section.sync-list.skipped').getByText('longer than 127 bytes').waitFor();
  await noMarkupFromData();
  await shot('providers-sync-changes');
  await shot('providers-sync-changes', PHONE);
  await page.setViewportSize(DESKTOP);
  await dlg().getByRole('button', { name: 'See the models' }).click();
  await dlg().waitFor({ state: 'detached' });
  await page.waitForFunction(() => location.hash.startsWith('#/models?provider_id='));
  await settled();
  const rrow = page.getByRole('row').filter({ hasText: 'retired-model' });
  await rrow.getByText('no longer listed by the provider', { exact: true }).waitFor();
  check(await page.getByText('no longer listed by the provider', { exact: true }).count() === 1, 'only the missing route is marked');
  // routes of equal priority show their weights, and the editor has them
  await rrow.getByText('(priority 0, weight 3)').waitFor();
  await rrow.getByText('(priority 0, weight 1)').waitFor();
  await rrow.getByRole('button', { name: 'Edit' }).click();
  check(await dlg().locator('#route-0-weight').inputValue() === '3' && await dlg().locator('#route-1-weight').inputValue() === '1', 'weights in the editor');
  await dlg().locator('.route-field').filter({ has: page.locator('#route-0-upstream') }).getByText('no longer listed by the provider').waitFor();
  check(await dlg().getByText('no longer listed by the provider').count() === 1, 'only the missing route says so in the editor');
  await shot('models-edit-weights');
  await shot('models-edit-weights', PHONE);
  await page.setViewportSize(DESKTOP);
  await dlg().getByRole('button', { name: 'Cancel' }).click();
  await dlg().waitFor({ state: 'detached' });
  await (await fetch(fakeRoot + '/_fake/models', { method: 'POST', body: JSON.stringify({ data: null }) })).text();
});

await step('groups: a group with the model and a default cost limit', async () => {
  await go('/groups');
  await page.getByRole('button', { name: 'New group' }).click();
  await dlg().getByLabel('Name', { exact: true }).fill('basic');
  await dlg().getByRole('checkbox', { name: HOSTILE_SCRIPT }).check();
  await dlg().getByLabel('Cost limit per period').fill('10');
  await shot('groups-new');
  await dlg().getByRole('button', { name: 'Create group' }).click();
  await dlg().waitFor({ state: 'detached' });
  await page.getByRole('row').filter({ hasText: 'basic' }).getByText(HOSTILE_SCRIPT).waitFor();
  await shot('groups');
});

await step('users: create a user (hostile name) and give access; the key is shown once', async () => {
  await go('/users');
  await page.getByRole('button', { name: 'New user' }).click();
  await dlg().getByLabel('Email').fill(ALICE);
  await dlg().getByLabel('Name', { exact: true }).fill(HOSTILE_IMG);
  await dlg().getByLabel('Password').fill(ALICE_PW);
  await dlg().getByRole('button', { name: 'Create user' }).click();
  await dlg().getByText(`User ${ALICE} created.`).waitFor();
  await dlg().getByLabel('Model group').selectOption({ label: 'basic' });
  await dlg().getByText('Group default: 10').waitFor();
  await dlg().getByRole('button', { name: 'Create quota and key' }).click();
  const keyBox = dlg().getByLabel('API key');
  await keyBox.waitFor();
  key = await keyBox.inputValue();
  check(/^sk-[A-Za-z0-9_-]{20,}$/.test(key), 'a key: ' + key);
  await dlg().getByText('Shown once.').waitFor();
  await dlg().getByRole('button', { name: 'Copy key' }).click();
  await dlg().getByText('Copied').waitFor();
  check(await page.evaluate(() => navigator.clipboard.readText()) === key, 'the copy button copied the key');
  await shot('users-key-once');
  await dlg().getByRole('button', { name: 'Done' }).click();
  await dlg().waitFor({ state: 'detached' });
  const row = page.getByRole('row').filter({ hasText: ALICE });
  await row.getByText(HOSTILE_IMG, { exact: true }).waitFor();
  // the list is refreshed after "give access": the new quota's group is in the Access column
  await row.getByRole('link', { name: `Quotas of ${ALICE}` }).getByText('basic').waitFor();
  await noMarkupFromData();
});

await step('users: a duplicate email is refused beside the Email field', async () => {
  await page.getByRole('button', { name: 'New user' }).click();
  await dlg().getByLabel('Email').fill(ALICE);
  await dlg().getByLabel('Password').fill('another password 1');
  await dlg().getByRole('button', { name: 'Create user' }).click();
  const field = dlg().locator('.field').filter({ has: page.getByLabel('Email') });
  await field.getByRole('alert').filter({ hasText: 'already exists' }).waitFor();
  await shot('users-duplicate');
  await dlg().getByRole('button', { name: 'Cancel' }).click();
  const users = await api('GET', '/api/admin/users/', adminToken);
  check(users.json.count === 2, 'nothing written on a duplicate: ' + users.json.count);
  await shot('users');
});

await step('the key cannot be seen again after a reload', async () => {
  await page.reload();
  await settled();
  await go('/quotas');
  const row = page.getByRole('row').filter({ hasText: ALICE });
  await row.waitFor();
  const q = (await api('GET', '/api/admin/quotas/', adminToken)).json.results[0];
  keyPrefix = q.key_prefix;
  check(key.startsWith(keyPrefix), 'prefix of the key');
  await row.getByText(keyPrefix + '…').waitFor();
  check(!(await page.content()).includes(key), 'the key is in the page after a reload');
  const stored = await page.evaluate(() => JSON.stringify({ ...sessionStorage }) + JSON.stringify({ ...localStorage }));
  check(!stored.includes(key), 'the key is in browser storage');
  await shot('quotas');
});

await step('a /v1 call with the key appears in Requests, with its detail', async () => {
  for (const scenario of ['ok', 'ok', 'status:500']) {
    const r = await fetch(BASE + '/v1/chat/completions', {
      method: 'POST', headers: { Authorization: 'Bearer ' + key, 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: HOSTILE_SCRIPT, messages: [{ role: 'user', content: 'hello' }], fake_scenario: scenario }),
    });
    await r.text();
    check(scenario === 'ok' ? r.status === 200 : r.status >= 500, `chat (${scenario}): ${r.status}`);
  }
  // Billing writes the audit records shortly after the answers; reload until they are there.
  let rows = 0;
  // (the same address again loads nothing: reload the page itself)
  await go('/requests');
  for (let i = 0; i < 40; i++) {
    rows = await page.getByRole('row').filter({ hasText: HOSTILE_SCRIPT }).count();
    if (rows >= 3) break;
    await page.waitForTimeout(250);
    await page.reload();
    await settled();
  }
  check(rows === 3, 'three requests listed, got ' + rows);
  await noMarkupFromData();
  await shot('requests');
  await page.getByRole('row').filter({ hasText: HOSTILE_SCRIPT }).filter({ hasText: '200' }).first().click();
  await dlg().getByText('Prompt tokens').waitFor();
  await dlg().getByText('reported by the provider').waitFor();
  check(await dlg().getByText(HOSTILE_SCRIPT).count() >= 1, 'model in the detail, as text');
  check(page.url().includes('id=') && page.url().includes('at='), 'the detail is in the address: ' + page.url());
  await shot('requests-detail');
  await dlg().getByRole('button', { name: 'Close', exact: true }).click();
  await dlg().waitFor({ state: 'detached' });
  // by its request id alone (what a client's X-Request-Id names)
  const failed = (await api('GET', '/api/admin/requests/', adminToken)).json.results.find((r) => r.status >= 500);
  check(failed, 'the upstream failure is recorded');
  await page.getByLabel('Request id').fill('not-an-id');
  await page.getByRole('button', { name: 'Open', exact: true }).click();
  await page.getByText('A request id is 32 hexadecimal characters').waitFor();
  await page.getByLabel('Request id').fill(failed.id.toUpperCase());
  await page.getByRole('button', { name: 'Open', exact: true }).click();
  await dlg().getByText(failed.id).waitFor();
  await dlg().getByText('upstream_error').waitFor();
  await dlg().getByRole('button', { name: 'Close', exact: true }).click();
  await dlg().waitFor({ state: 'detached' });
  // the filtered set exported: the gateway streams it, the browser saves it
  for (const [label, ext] of [['CSV', 'csv'], ['JSON lines', 'jsonl']]) {
    const [file] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: label, exact: true }).click()]);
    check(file.suggestedFilename().endsWith('.' + ext), 'file name ' + file.suggestedFilename());
    const text = readFileSync(await file.path(), 'utf8');
    const lines = text.trim().split('\n');
    if (ext === 'csv') {
      check(lines.length === 4 && lines[0].startsWith('id,created_at,'), 'CSV: a header and three rows: ' + lines.length);
      check(text.includes('"' + HOSTILE_SCRIPT.replace(/"/g, '""') + '"'), 'CSV: the model as a quoted cell');
    } else {
      check(lines.length === 3 && lines.every((l) => JSON.parse(l).model === HOSTILE_SCRIPT), 'JSON lines: three records');
    }
  }
  // filter by status
  await page.getByLabel('Status').fill('200');
  await page.getByRole('button', { name: 'Apply' }).click();
  await page.waitForFunction(() => location.hash.includes('status=200'));
  await settled();
  check(await page.getByRole('row').filter({ hasText: HOSTILE_SCRIPT }).count() === 2, 'status filter');
});

await step('the overview shows the requests, per day, model and user', async () => {
  await go('/overview');
  const card = page.locator('.stat').filter({ hasText: 'Requests' });
  await card.getByText('3', { exact: true }).waitFor();
  await page.locator('.stat').filter({ hasText: 'Error rate' }).getByText('33.3%').waitFor();
  await page.getByRole('row').filter({ hasText: ALICE }).waitFor();
  await page.getByRole('row').filter({ hasText: HOSTILE_SCRIPT }).waitFor();
  const live = page.locator('.live');
  await live.getByText('3 since start').waitFor();
  await live.getByText('1 error answers').waitFor(); // the upstream 500
  await live.getByText('alive').waitFor();
  await noMarkupFromData();
  await shot('overview');
  await page.emulateMedia({ colorScheme: 'dark' });
  await shot('overview-dark');
  await page.emulateMedia({ colorScheme: 'light' });
  // today's bar (the last of 7) shows the exact cost and drills down to its requests
  const cost = (await api('GET', '/api/admin/statistics/', adminToken)).json.totals.cost;
  const over = page.locator('.chart').first().locator('.u-over');
  await settled(); // the charts are drawn again for the colour scheme
  await over.waitFor();
  const b = await over.boundingBox();
  await page.mouse.move(b.x + (b.width * 6.5) / 7, b.y + b.height - 4);
  const today = PARIS_DAY.format(new Date()); // the last bar: today in the browser's zone
  // one model so far: the stack has one part, and its legend
  await page.getByText(`${today}: ${cost} in all · ${HOSTILE_SCRIPT} ${cost}`).waitFor();
  check(JSON.stringify(await page.locator('.card').filter({ hasText: 'Cost per day' }).locator('.legend-item').allTextContents()) ===
    JSON.stringify([HOSTILE_SCRIPT]), 'the cost chart\'s legend names the model');
  await page.mouse.click(b.x + (b.width * 6.5) / 7, b.y + b.height - 4);
  await page.waitForFunction(() => location.hash.startsWith('#/requests?since='));
  await settled();
  check(await page.getByRole('row').filter({ hasText: HOSTILE_SCRIPT }).count() === 3, 'the day\'s requests');
});

await step('a quota reaches a warning threshold: Warnings shows it; the live figures move', async () => {
  await go('/overview');
  await page.locator('.live').getByText('3 since start').waitFor();
  // the superadmin's own small quota: one request passes a quarter of its cost limit
  const me = (await api('GET', '/api/auth/me/', adminToken)).json;
  const group = (await api('GET', '/api/admin/groups/', adminToken)).json.results[0];
  const q = await api('POST', '/api/admin/quotas/', adminToken, { user_id: me.id, group_id: group.id, cost_limit: '0.0001', warn_at: [25] });
  check(q.status === 201, 'quota: ' + q.status);
  const r = await fetch(BASE + '/v1/chat/completions', {
    method: 'POST', headers: { Authorization: 'Bearer ' + q.json.api_key, 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: HOSTILE_SCRIPT, messages: [{ role: 'user', content: 'hello' }], max_tokens: 10 }),
  });
  await r.text();
  check(r.status === 200, 'chat on the small quota: ' + r.status);
  // the overview's live figures are polled: the call shows without a reload
  await page.locator('.live').getByText('4 since start').waitFor({ timeout: 5000 });
  let found = false;
  await go('/warnings');
  for (let i = 0; i < 40; i++) {
    found = await page.getByRole('row').filter({ hasText: me.email }).count() === 1;
    if (found) break;
    await page.waitForTimeout(250);
    await page.reload();
    await settled();
  }
  check(found, 'the warning is listed');
  const row = page.getByRole('row').filter({ hasText: me.email });
  await row.getByText('25%').waitFor();
  await row.getByText('no webhook', { exact: true }).waitFor();
  await row.getByText(`#${q.json.id}`).waitFor();
  await page.getByLabel('Webhook').selectOption('failed');
  await page.getByText('No warning matches these filters.').waitFor();
  await shot('warnings-empty-filter');
});

await step('providers: a failing provider reads down, with its last error and figures, when the page is shown again', async () => {
  // a provider nothing listens for, behind a model of alice's group
  const dead = await api('POST', '/api/admin/providers/', adminToken, { name: 'dead-end', type: 'openai',
    base_url: 'http://127.0.0.1:9/v1', api_key: 'sk-dead', timeout_s: 5 });
  check(dead.status === 201, 'dead provider: ' + dead.status);
  const m = await api('POST', '/api/admin/models/', adminToken, { name: 'dead-model', input_price: '1', output_price: '1',
    routes: [{ provider_id: dead.json.id, upstream_name: 'gone-upstream' }] });
  check(m.status === 201, 'dead model: ' + m.status);
  const group = (await api('GET', '/api/admin/groups/', adminToken)).json.results.find((g) => g.name === 'basic');
  check((await api('PATCH', `/api/admin/groups/${group.id}/`, adminToken, { model_ids: [...group.model_ids, m.json.id] })).status === 200, 'group');
  await go('/providers');
  const row = page.getByRole('row').filter({ hasText: 'dead-end' });
  await row.locator('.health > .badge').getByText('healthy', { exact: true }).waitFor();
  for (let i = 0; i < 3; i++) {
    const r = await fetch(BASE + '/v1/chat/completions', {
      method: 'POST', headers: { Authorization: 'Bearer ' + key, 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'dead-model', messages: [{ role: 'user', content: 'hello' }] }),
    });
    await r.text();
    check(r.status >= 500, 'a call to the dead provider: ' + r.status);
  }
  // the tab shown again reads the health again (no navigation)
  await page.evaluate(() => document.dispatchEvent(new Event('visibilitychange')));
  const health = row.locator('td[data-label="Health"]');
  await health.locator('.health > .badge').getByText('down', { exact: true }).waitFor();
  await health.getByText(/100\.0% errors \(\d+ of \d+\)/).first().waitFor();
  await health.locator('.health > .health-error').getByText('could not connect').waitFor();
  check(await health.locator('.health > .health-error .bad').getAttribute('title') === 'connect', 'the API\'s word on hover');
  const when = health.locator('.health > .health-error time');
  check(/^UTC \d{4}-\d\d-\d\d \d\d:\d\d:\d\d/.test(await when.getAttribute('title')), 'the exact UTC time on hover');
  await page.getByRole('note').filter({ hasText: 'dead-end is down' }).waitFor();
  await health.getByText('1 route').click();
  const route = health.locator('.health-routes li').filter({ hasText: 'gone-upstream' });
  await route.getByText('3 failed in a row').waitFor();
  await route.getByText(/^skipped until /).waitFor();
  // the hostile provider: still healthy, its one upstream error and p95 shown
  const fake = page.getByRole('row').filter({ hasText: HOSTILE_IMG }).locator('td[data-label="Health"]');
  await fake.locator('.health > .badge').getByText('healthy', { exact: true }).waitFor();
  await fake.getByText(/^last 5 min: [\d.]+% errors \(1 of \d+\) · p95 ≤ [\d,]+ ms$/).waitFor();
  await fake.locator('.health > .health-error').getByText('HTTP 500').waitFor();
  await noMarkupFromData();
  await shot('providers-health');
  await shot('providers-health', PHONE);
  await page.setViewportSize(DESKTOP);
});

// six more models for the stacked cost chart (names as the README's screenshot shows them)
const STACK = ['llama-3.3-70b', 'mistral-small', 'gemini-flash', 'claude-haiku', 'gpt-4.1-mini', 'deepseek-chat'];

await step('overview: cost per day stacked by the costliest models, the rest summed as "other", exactly', async () => {
  // six more priced models in alice's group, each called once with a known usage
  const prov = (await api('GET', '/api/admin/providers/', adminToken)).json.results.find((p) => p.name === HOSTILE_IMG);
  const group = (await api('GET', '/api/admin/groups/', adminToken)).json.results.find((g) => g.name === 'basic');
  const ids = [];
  for (let n = 1; n <= 6; n++) {
    const m = await api('POST', '/api/admin/models/', adminToken, { name: STACK[n - 1], input_price: `${n}.5`, output_price: String(n),
      routes: [{ provider_id: prov.id, upstream_name: 'fake-model' }] });
    check(m.status === 201, `${STACK[n - 1]}: ${m.status}`);
    ids.push(m.json.id);
  }
  check((await api('PATCH', `/api/admin/groups/${group.id}/`, adminToken, { model_ids: [...group.model_ids, ...ids] })).status === 200, 'group');
  for (let n = 1; n <= 6; n++) {
    const r = await fetch(BASE + '/v1/chat/completions', {
      method: 'POST', headers: { Authorization: 'Bearer ' + key, 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: STACK[n - 1], messages: [{ role: 'user', content: 'hello' }], fake_usage: `${1000 * n},${777 * n},0` }),
    });
    await r.text();
    check(r.status === 200, `${STACK[n - 1]} call: ${r.status}`);
  }
  // billing writes the records behind the answers: wait until the statistics count them
  let st;
  for (let i = 0; i < 40; i++) {
    st = (await api('GET', '/api/admin/statistics/?group_by=model', adminToken)).json;
    if (st.series.filter((e) => STACK.includes(e.name) && e.requests === 1).length === 6) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  // the expected stack from the API's exact strings: the five costliest models, then the rest summed
  const nano = (s) => { const [w, f = ''] = s.split('.'); return BigInt(w) * 1000000000n + BigInt(f.padEnd(9, '0')); };
  const str = (n) => { const f = (n % 1000000000n).toString().padStart(9, '0').replace(/0+$/, ''); return (n / 1000000000n).toString() + (f ? '.' + f : ''); };
  const costly = st.series.filter((e) => nano(e.cost) > 0n).sort((a, b) => (nano(b.cost) > nano(a.cost) ? 1 : nano(b.cost) < nano(a.cost) ? -1 : a.model_id - b.model_id));
  check(costly.length === 7, 'seven models with a cost: ' + costly.length);
  const top = costly.slice(0, 5), rest = costly.slice(5);
  const other = rest.reduce((t, e) => t + nano(e.cost), 0n);
  await go('/overview');
  const card = page.locator('.card').filter({ hasText: 'Cost per day' });
  const legend = await card.locator('.legend-item').allTextContents();
  check(JSON.stringify(legend) === JSON.stringify([...top.map((e) => e.name), 'other']), 'legend: ' + legend);
  const over = card.locator('.u-over');
  const b = await over.boundingBox();
  await page.mouse.move(b.x + (b.width * 6.5) / 7, b.y + b.height - 4);
  const today = PARIS_DAY.format(new Date()); // the last bar: today in the browser's zone
  const total = (await api('GET', '/api/admin/statistics/', adminToken)).json.totals.cost;
  const want = `${today}: ${total} in all` + top.map((e) => ` · ${e.name} ${e.cost}`).join('') + ` · other ${str(other)}`;
  await card.getByText(want, { exact: true }).waitFor();
  await noMarkupFromData();
  await shot('overview-stacked');
});

await step('overview: top users are the 8 costliest, and the card says of how many', async () => {
  // nine more users, each with a quota and one call costing more than the last
  const group = (await api('GET', '/api/admin/groups/', adminToken)).json.results.find((g) => g.name === 'basic');
  for (let n = 1; n <= 9; n++) {
    const u = await api('POST', '/api/admin/users/', adminToken, { email: `spender${n}@example.com`, password: `password-spender-${n}`, role: 'user' });
    check(u.status === 201, `user ${n}: ${u.status}`);
    const q = await api('POST', '/api/admin/quotas/', adminToken, { user_id: u.json.id, group_id: group.id });
    check(q.status === 201, `quota ${n}: ${q.status}`);
    const r = await fetch(BASE + '/v1/chat/completions', {
      method: 'POST', headers: { Authorization: 'Bearer ' + q.json.api_key, 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: STACK[5], messages: [{ role: 'user', content: 'hello' }], fake_usage: `${100000 * n},0,0` }),
    });
    await r.text();
    check(r.status === 200, `spender ${n} call: ${r.status}`);
  }
  let st;
  for (let i = 0; i < 40; i++) {
    st = (await api('GET', '/api/admin/statistics/?group_by=user&limit=8', adminToken)).json;
    if (st.series.filter((e) => e.name && e.name.startsWith('spender')).length >= 8) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  check(st.top.limit === 8 && st.top.of > 8, 'ranked: ' + JSON.stringify(st.top));
  await go('/overview');
  await page.reload(); // the same address as the last step's: load it again
  await settled();
  const card = page.locator('.card').filter({ has: page.getByRole('heading', { name: 'Top users' }) });
  await card.getByText(`the 8 costliest of ${st.top.of}`).waitFor();
  const rows = await card.locator('tbody tr').allTextContents();
  check(rows.length === 8 && rows[0].includes('spender9@example.com'), 'the costliest first: ' + rows[0]);
  await card.scrollIntoViewIfNeeded();
  await shot('overview-top-users');
});

await step('the API reference renders the gateway\'s own document', async () => {
  await go('/reference');
  const op = page.locator('details.op').filter({ hasText: '/api/admin/warnings/' });
  await op.locator('summary').click();
  await op.getByText('webhook_state').first().waitFor();
  await op.getByText('WarningPage').waitFor();
  await shot('reference-open');
  await page.getByLabel('Find').fill('export');
  check(await page.locator('details.op').count() === 1, 'one operation matches "export"');
  await page.getByLabel('Find').fill('');
});

await step('every admin page at 1440x900 and 390x844', async () => {
  for (const p of ['overview', 'requests', 'warnings', 'providers', 'models', 'groups', 'users', 'quotas', 'me/quotas', 'me/usage',
    'me/requests', 'me/howto', 'me/password', 'reference']) {
    await go('/' + p);
    await noMarkupFromData();
    await shot(p.replace('/', '-'), DESKTOP);
    await shot(p.replace('/', '-'), PHONE);
  }
  await go('/overview');
  await page.getByRole('button', { name: 'Menu' }).click();
  await page.getByRole('link', { name: 'Users' }).waitFor();
  await shot('menu-open', PHONE);
  await page.setViewportSize(DESKTOP);
});

await step('a normal user sees only their own data and no admin navigation', async () => {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByText('You signed out.').waitFor();
  await login(ALICE, ALICE_PW);
  await page.getByRole('heading', { name: 'My quotas' }).waitFor();
  await settled();
  const links = await page.getByRole('navigation', { name: 'Console' }).getByRole('link').allTextContents();
  check(JSON.stringify(links) === JSON.stringify(['My quotas', 'My usage', 'My requests', 'How to call it', 'Password', 'API reference']),
    'user navigation: ' + links);
  await page.getByText(keyPrefix + '…').waitFor();
  check(await page.locator('article.card').count() === 1, 'one quota');
  await shot('user-my-quotas', DESKTOP);
  await shot('user-my-quotas', PHONE);
  await page.setViewportSize(DESKTOP);
  const status = await page.evaluate(async () => (await fetch('/api/admin/users/', {
    headers: { Authorization: 'Bearer ' + sessionStorage.getItem('tokenaudit.session') } })).status);
  check(status === 403, 'admin API as a user: ' + status);
  await go('/users');
  await page.getByRole('heading', { name: 'Not found' }).waitFor();
  check(await page.getByRole('link', { name: 'Users' }).count() === 0, 'no admin link');
  for (const path of ['/api/admin/requests/', '/api/admin/warnings/', '/api/admin/status/', '/api/admin/requests/export/']) {
    const st = await page.evaluate(async (p) => (await fetch(p, {
      headers: { Authorization: 'Bearer ' + sessionStorage.getItem('tokenaudit.session') } })).status, path);
    check(st === 403, `${path} as a user: ${st}`);
  }
  // my requests: my three, none of the superadmin's
  await go('/me/requests');
  check(await page.getByRole('row').filter({ hasText: HOSTILE_SCRIPT }).count() === 3, 'alice sees her three requests');
  check(await page.getByRole('columnheader', { name: 'User' }).count() === 0, 'no user column');
  await page.getByRole('row').filter({ hasText: HOSTILE_SCRIPT }).filter({ hasText: '200' }).first().click();
  await dlg().getByText('reported by the provider').waitFor();
  await shot('user-requests-detail');
  await dlg().getByRole('button', { name: 'Close', exact: true }).click();
  await shot('user-requests', DESKTOP);
  await shot('user-requests', PHONE);
  await page.setViewportSize(DESKTOP);
  // my usage: charts from GET /api/statistics/, or a plain word when the gateway has none
  await go('/me/usage');
  check(await page.getByText('This gateway does not give usage charts yet.').count() === 1 ||
    await page.locator('.chart').count() === 2, 'usage charts or the plain word');
  await noMarkupFromData();
  await shot('user-usage', DESKTOP);
  await shot('user-usage', PHONE);
  await page.setViewportSize(DESKTOP);
  // reset my key: a plain warning first, the new key shown once with a copy button
  await go('/me/quotas');
  await page.getByRole('button', { name: 'Reset key' }).click();
  await dlg().getByText('stops working at once').waitFor();
  await dlg().getByRole('button', { name: 'Reset key' }).click();
  const newKey = await dlg().getByLabel('API key').inputValue();
  check(newKey !== key && /^sk-/.test(newKey), 'a new key');
  await dlg().getByText('Shown once.').waitFor();
  await dlg().getByRole('button', { name: 'Copy key' }).click();
  await dlg().getByText('Copied').waitFor();
  await shot('user-key-reset');
  await dlg().getByRole('button', { name: 'Done' }).click();
  await dlg().waitFor({ state: 'detached' });
  const usage = async (k) => (await fetch(BASE + '/v1/usage', { headers: { Authorization: 'Bearer ' + k } })).status;
  check(await usage(key) === 401 && await usage(newKey) === 200, 'the old key is refused, the new one works');
  keyPrefix = newKey.slice(0, keyPrefix.length);
  await page.getByText(keyPrefix + '…').first().waitFor();
  await page.reload();
  await settled();
  check(!(await page.content()).includes(newKey), 'the new key is not in the page after a reload');
  key = newKey;
  await go('/me/howto');
  await page.getByText(`${BASE}/v1`, { exact: true }).waitFor();
  await page.getByLabel('Your key').fill(key);
  // the curl examples work as shown: run by the shell against the gateway with the key
  // (the hostile model name stays one JSON string inside the shell's quotes)
  const snippet = async () => page.locator('pre.snippet').textContent();
  const run = (text) => JSON.parse(execFileSync('sh', ['-c', text], { encoding: 'utf8', timeout: 20000 }));
  await page.getByLabel('Model').fill(HOSTILE_SCRIPT);
  check((await snippet()).includes(`Bearer ${key}`), 'curl snippet with the key');
  const chat = run(await snippet());
  check(chat.object === 'chat.completion' && chat.choices[0].message.role === 'assistant', 'the chat example answers: ' + JSON.stringify(chat).slice(0, 200));
  await page.getByLabel('Model').fill(STACK[0]);
  await page.getByRole('button', { name: 'Responses', exact: true }).click();
  await page.getByText('OpenAI’s /v1/responses').waitFor();
  check((await snippet()).startsWith(`curl ${BASE}/v1/responses`), 'the responses example');
  const resp = run(await snippet());
  check(resp.object === 'response' && resp.usage && resp.usage.input_tokens > 0, 'the responses example answers: ' + JSON.stringify(resp).slice(0, 200));
  await page.getByRole('button', { name: 'Anthropic Messages', exact: true }).click();
  const text = await snippet();
  check(text.startsWith(`curl ${BASE}/v1/messages`) && text.includes(`'x-api-key: ${key}'`) && text.includes('"anthropic-version: 2023-06-01"') &&
    !text.includes('Authorization'), 'the messages example: x-api-key and anthropic-version: ' + text);
  const msg = run(text);
  check(msg.type === 'message' && msg.role === 'assistant' && msg.content[0].type === 'text', 'the messages example answers: ' + JSON.stringify(msg).slice(0, 200));
  await shot('user-howto-messages', DESKTOP);
  await page.getByRole('tab', { name: 'Python' }).click();
  check((await snippet()).includes(`Anthropic(base_url="${BASE}", api_key="${key}")`), 'anthropic python: the address without /v1');
  await page.getByRole('button', { name: 'Chat Completions', exact: true }).click();
  check((await snippet()).includes(`base_url="${BASE}/v1"`), 'python snippet');
  await page.getByRole('tab', { name: 'Node' }).click();
  await page.getByLabel('Your key').fill('');
  check((await snippet()).includes('process.env.TOKENAUDIT_API_KEY'), 'node snippet without a key');
  await page.getByRole('button', { name: 'Responses', exact: true }).click();
  await page.getByRole('tab', { name: 'curl' }).click();
  check((await snippet()).includes('"Authorization: Bearer $TOKENAUDIT_API_KEY"'), 'curl without a key reads the environment');
  await shot('user-howto', DESKTOP);
  await shot('user-howto', PHONE);
  await page.setViewportSize(DESKTOP);
  await go('/me/password');
  await page.getByLabel('Current password').fill('wrong password 1');
  await page.getByLabel('New password', { exact: true }).fill('a new password 2');
  await page.getByLabel('New password again').fill('a new password 2');
  await page.getByRole('button', { name: 'Change password' }).click();
  const field = page.locator('.field').filter({ has: page.getByLabel('Current password') });
  await field.getByRole('alert').filter({ hasText: 'does not match' }).waitFor();
  await shot('user-password-error');
  await page.getByLabel('Current password').fill(ALICE_PW);
  await page.getByRole('button', { name: 'Change password' }).click();
  await page.getByText(/^Password changed\./).waitFor();
  await go('/me/quotas'); // this session goes on with the token the change answered with
  await page.getByText(keyPrefix + '…').waitFor();
});

await step('a revoked session returns to the login page and says why', async () => {
  const token = await page.evaluate(() => sessionStorage.getItem('tokenaudit.session'));
  check((await api('POST', '/api/auth/logout/', token, {})).status === 204, 'logout from elsewhere');
  await go('/me/howto'); // no API call there
  await go('/me/quotas');
  await page.getByText(/^You were signed out: .+ Sign in again\.$/).waitFor();
  check(await page.evaluate(() => sessionStorage.getItem('tokenaudit.session')) === null, 'the dead token is dropped');
  await page.getByLabel('Email').waitFor();
  await shot('login');
  await shot('login', PHONE);
});

await browser.close();
if (problems.length) {
  console.log('PROBLEMS:\n  ' + problems.join('\n  '));
  process.exit(1);
}
console.log('BROWSER OK');
