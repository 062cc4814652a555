// browser.mjs - the console end to end in Debian's chromium, driven by
// playwright-core (from console/node_modules; no downloaded browser).
// Started by test_browser.py, which runs the real tokenauditd and the fake
// upstream and passes their addresses in the environment:
//   TA_URL (gateway), TA_FAKE_URL (fake upstream /v1), TA_ADMIN_EMAIL,
//   TA_ADMIN_PASSWORD, TA_SHOTS (screenshot directory), TA_CONSOLE_DIR
// Prints "BROWSER OK" when every flow passed; any dialog, CSP violation,
// page error, console error or request to another origin fails the run.
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
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
  await row.getByRole('button', { name: 'Test' }).click();
  await row.getByText(/^OK · HTTP 200 · \d+ ms · 3 models$/).waitFor();
  await row.getByRole('button', { name: 'Sync models' }).click();
  await dlg().getByRole('button', { name: 'Sync models' }).click();
  await dlg().getByRole('heading', { name: 'Created (3)' }).waitFor();
  for (const m of ['gpt-4o-mini', 'text-embedding-3-small', 'fake-model'])
    await dlg().getByRole('listitem').filter({ hasText: m }).waitFor();
  await dlg().getByRole('heading', { name: 'Already there (0)' }).waitFor();
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
  await dlg().getByRole('button', { name: 'Create model' }).click();
  await dlg().waitFor({ state: 'detached' });
  const row = page.getByRole('row').filter({ hasText: HOSTILE_SCRIPT });
  await row.waitFor();
  check(await row.getByText('1.5', { exact: true }).count() === 1, 'input price shown as the API gave it');
  await noMarkupFromData();
  await shot('models');
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
  await page.getByRole('row').filter({ hasText: ALICE }).getByText(HOSTILE_IMG, { exact: true }).waitFor();
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
  for (let i = 0; i < 40 && rows < 3; i++) {
    await go('/requests');
    rows = await page.getByRole('row').filter({ hasText: HOSTILE_SCRIPT }).count();
    if (rows < 3) await page.waitForTimeout(250);
  }
  check(rows === 3, 'three requests listed, got ' + rows);
  await noMarkupFromData();
  await shot('requests');
  await page.getByRole('row').filter({ hasText: HOSTILE_SCRIPT }).filter({ hasText: '200' }).first().click();
  await dlg().getByText('Prompt tokens').waitFor();
  await dlg().getByText('reported by the provider').waitFor();
  check(await dlg().getByText(HOSTILE_SCRIPT).count() >= 1, 'model in the detail, as text');
  await shot('requests-detail');
  await dlg().getByRole('button', { name: 'Close', exact: true }).click();
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
  await noMarkupFromData();
  await shot('overview');
  await page.emulateMedia({ colorScheme: 'dark' });
  await shot('overview-dark');
  await page.emulateMedia({ colorScheme: 'light' });
  // today's bar (the last of 7) shows the exact cost and drills down to its requests
  const cost = (await api('GET', '/api/admin/statistics/', adminToken)).json.totals.cost;
  const over = page.locator('.chart').first().locator('.u-over');
  const b = await over.boundingBox();
  await page.mouse.move(b.x + (b.width * 6.5) / 7, b.y + b.height - 4);
  const today = new Date().toISOString().slice(5, 10).split('-').map(Number).join('/');
  await page.getByText(`${today}: cost ${cost}`).waitFor();
  await page.mouse.click(b.x + (b.width * 6.5) / 7, b.y + b.height - 4);
  await page.waitForFunction(() => location.hash.startsWith('#/requests?since='));
  await settled();
  check(await page.getByRole('row').filter({ hasText: HOSTILE_SCRIPT }).count() === 3, 'the day\'s requests');
});

await step('every admin page at 1440x900 and 390x844', async () => {
  for (const p of ['overview', 'requests', 'providers', 'models', 'groups', 'users', 'quotas', 'me/quotas', 'me/howto', 'me/password']) {
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
  check(JSON.stringify(links) === JSON.stringify(['My quotas', 'How to call it', 'Password']), 'user navigation: ' + links);
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
  await go('/me/howto');
  await page.getByText(`${BASE}/v1`, { exact: true }).waitFor();
  await page.getByLabel('Your key').fill(key);
  await page.getByLabel('Model').fill('gpt-4o-mini');
  check((await page.locator('pre.snippet').textContent()).includes(`Bearer ${key}`), 'curl snippet with the key');
  await page.getByRole('tab', { name: 'Python' }).click();
  check((await page.locator('pre.snippet').textContent()).includes(`base_url="${BASE}/v1"`), 'python snippet');
  await page.getByRole('tab', { name: 'Node' }).click();
  await page.getByLabel('Your key').fill('');
  check((await page.locator('pre.snippet').textContent()).includes('process.env.TOKENAUDIT_API_KEY'), 'node snippet without a key');
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
