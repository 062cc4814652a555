// A user's own pages: quotas with their use (and their key reset), usage
// charts, how to call the gateway, and the password. (Superadmins see them
// too, under "My account".)
import { useState } from 'preact/hooks';
import { get, post, all, setToken } from '../api.js';
import { useLoad, Loaded, PageHead, Time, Badge, Empty, CopyButton, useForm, TextField, FormMessage, Money, Table } from '../ui.jsx';
import { UsageBar, ResetKey } from './quotas.jsx';
import { BarChart } from '../chart.jsx';
import { setParams, go } from '../router.js';
import { statsMode, stats, bucket } from '../stats.js';
import { int, errorRate, money, lastDays, dayStart, dayEnd, toNano } from '../format.js';

export function MyQuotas() {
  const load = useLoad(() => get('/api/quotas/'), []);
  const [reset, setReset] = useState(null);
  return (
    <section>
      <PageHead title="My quotas" sub="Your API keys, what each may still spend, and when it renews." />
      <Loaded load={load} what="your quotas">
        {(data) => data.results.length === 0 ? (
          <Empty><p>You have no quota yet. Ask an administrator to give you access to a model group.</p></Empty>
        ) : (
          <div class="quota-cards">
            {data.results.map((q) => (
              <article class="card" key={q.id}>
                <header class="card-head">
                  <h2>Quota #{q.id} <span class="muted mono">{q.key_prefix}…</span></h2>
                  {q.is_active ? <Badge kind="ok">active</Badge> : <Badge kind="off">revoked</Badge>}
                </header>
                <p class="muted">
                  {q.period === 'none' ? 'One budget, never renewed.'
                    : <>This {q.period}: <Time iso={q.usage.period_start} short /> to <Time iso={q.usage.period_end} short />
                      {q.auto_renew ? <> · renews <Time iso={q.usage.period_end} rel /></> : ' · does not renew'}</>}
                </p>
                <UsageBar label="Cost" used={q.usage.cost_used} limit={q.cost_limit} isMoney />
                <UsageBar label="Tokens" used={q.usage.tokens_used} limit={q.token_limit} />
                <UsageBar label="Requests" used={q.usage.requests_used} limit={q.request_limit} />
                <dl class="inline">
                  <dt>Rate limits</dt>
                  <dd>{[q.rpm !== null && `${int(q.rpm)} requests/min`, q.tpm !== null && `${int(q.tpm)} tokens/min`,
                    q.max_concurrency !== null && `${int(q.max_concurrency)} at once`].filter(Boolean).join(' · ') || 'none'}</dd>
                  <dt>Warnings</dt>
                  <dd>{q.usage.warnings.length ? q.usage.warnings.map((w) => <Badge kind="warn" key={w}>{w}% reached</Badge>)
                    : q.warn_at.length ? `at ${q.warn_at.map((w) => w + '%').join(', ')} of a limit` : 'none'}</dd>
                  {q.expires_at && <><dt>Expires</dt><dd><Time iso={q.expires_at} /></dd></>}
                </dl>
                <div class="card-actions">
                  <a href={`#/me/requests?quota_id=${q.id}`}>Requests</a>
                  <a href={`#/me/usage?quota_id=${q.id}`}>Usage</a>
                  {q.is_active && <button type="button" onClick={() => setReset(q)}>Reset key</button>}
                </div>
              </article>
            ))}
          </div>
        )}
      </Loaded>
      {reset && <ResetKey quota={reset} own path={`/api/quotas/${reset.id}/reset_api_key/`}
        onClose={(changed) => { setReset(null); if (changed) load.reload(); }} />}
    </section>
  );
}

const RANGES = [['7', '7 days'], ['30', '30 days']];

/** My usage: cost and requests per day and per model, for all my quotas or one. */
export function MyUsage({ route }) {
  const p = route.params;
  const range = RANGES.some(([v]) => v === p.range) ? p.range : '7';
  const load = useLoad(async () => {
    const quotas = await all('/api/quotas/');
    let mode;
    try {
      mode = await statsMode('/api/statistics/');
    } catch (e) {
      if (e.status === 404) return { quotas, missing: true };
      throw e;
    }
    const path = p.quota_id ? `/api/quotas/${encodeURIComponent(p.quota_id)}/statistics/` : '/api/statistics/';
    const days = lastDays(Number(range), mode.zoned);
    const [byDay, byModel] = await Promise.all([
      stats(path, mode, { since: days.since, group_by: 'day' }),
      stats(path, mode, { since: days.since, group_by: 'model' }),
    ]);
    return { quotas, mode, days, byDay, byModel };
  }, [range, p.quota_id]);

  return (
    <section>
      <PageHead title="My usage" sub={load.data && load.data.mode ? `What your requests used and cost. Days in ${load.data.mode.zoned ? load.data.mode.zone : 'UTC'}.`
        : 'What your requests used and cost.'}>
        {!(load.data && load.data.missing) && (
          <div class="segmented" role="group" aria-label="Time range">
            {RANGES.map(([v, label]) => (
              <button type="button" key={v} aria-pressed={v === range ? 'true' : 'false'}
                onClick={() => setParams(route, { range: v })}>{label}</button>
            ))}
          </div>)}
      </PageHead>
      <Loaded load={load} what="your usage">
        {({ quotas, missing, mode, days, byDay, byModel }) => {
          if (missing) {
            return (
              <Empty><p>This gateway does not give usage charts yet.</p>
                <p>What each quota used this period is on <a href="#/me/quotas">My quotas</a>, and what each request cost on <a href="#/me/requests">My requests</a>.</p></Empty>
            );
          }
          const t = byDay.totals;
          const perDay = new Map(byDay.series.map((e) => [bucket(e, 'day'), e]));
          const rows = days.keys.map((d) => ({ requests: 0, errors: 0, cost: '0', ...(perDay.get(d) || {}), key: d }));
          const label = (d) => `${Number(d.slice(5, 7))}/${Number(d.slice(8))}`;
          const toRequests = (i) => go('/me/requests', { quota_id: p.quota_id, since: dayStart(rows[i].key, mode.zoned), until: dayEnd(rows[i].key, mode.zoned) });
          const models = [...byModel.series].sort((a, b) => { const x = toNano(a.cost) || 0n, y = toNano(b.cost) || 0n; return x > y ? -1 : x < y ? 1 : 0; });
          return (
            <>
              <form class="filters" aria-label="Which quota">
                <label>Quota <select value={p.quota_id || ''} onChange={(e) => setParams(route, { quota_id: e.currentTarget.value })}>
                  <option value="">all my quotas</option>
                  {quotas.map((q) => <option key={q.id} value={String(q.id)}>#{q.id} ({q.key_prefix}…)</option>)}</select></label>
              </form>
              <div class="cards">
                <div class="card stat"><h2>Cost</h2><p class="big"><Money value={t.cost} /></p><p class="muted">last {range} days</p></div>
                <div class="card stat"><h2>Tokens</h2><p class="big">{int(t.prompt_tokens + t.completion_tokens)}</p>
                  <p class="muted">{int(t.prompt_tokens)} in · {int(t.completion_tokens)} out</p></div>
                <div class="card stat"><h2>Requests</h2><p class="big">{int(t.requests)}</p><p class="muted">{int(t.requests - t.errors)} answered</p></div>
                <div class={'card stat' + (t.errors > 0 ? ' warn' : '')}><h2>Error rate</h2><p class="big">{errorRate(t.errors, t.requests)}</p>
                  <p class="muted">{int(t.errors)} {t.errors === 1 ? 'error' : 'errors'}</p></div>
              </div>
              <div class="grid2">
                <div class="card">
                  <h2>Cost per day</h2>
                  <BarChart title="My cost per day" labels={rows.map((r) => label(r.key))}
                    series={[{ label: 'cost', values: rows.map((r) => Number(r.cost)) /* bar heights only */ }]}
                    format={(i) => money(rows[i].cost)} onPick={toRequests} hint="Point at a day for its cost; click it for its requests." />
                </div>
                <div class="card">
                  <h2>Requests per day</h2>
                  <BarChart title="My requests per day" stacked counts labels={rows.map((r) => label(r.key))}
                    series={[{ label: 'answered', values: rows.map((r) => r.requests - r.errors) },
                      { label: 'errors', values: rows.map((r) => r.errors), colorVar: '--error' }]}
                    format={(i, k) => int(k === 0 ? rows[i].requests - rows[i].errors : rows[i].errors)} onPick={toRequests}
                    hint="Click a day for its requests." />
                </div>
              </div>
              <div class="card">
                <h2>By model</h2>
                {models.length === 0 ? <p class="muted">No requests in this range.</p> : (
                  <Table caption="My usage by model" rowKey={(r) => String(r.model_id) + String(r.key)} rows={models} columns={[
                    { key: 'key', label: 'Model', render: (r) => r.key === null ? <span class="muted">unknown model</span> : <span class="mono">{r.key}</span> },
                    { key: 'requests', label: 'Requests', num: true, render: (r) => int(r.requests) },
                    { key: 'tokens', label: 'Tokens', num: true, render: (r) => int(r.prompt_tokens + r.completion_tokens) },
                    { key: 'cost', label: 'Cost', num: true, render: (r) => <Money value={r.cost} /> },
                  ]} />)}
              </div>
            </>
          );
        }}
      </Loaded>
    </section>
  );
}

// The APIs a key calls (docs/API.md: OpenAI-compatible proxy): each with a
// line on what it is and an example per language.
const APIS = [
  ['chat', 'Chat Completions', <>OpenAI’s <code>/v1/chat/completions</code>: any OpenAI client, pointed at the base URL.</>],
  ['responses', 'Responses', <>OpenAI’s <code>/v1/responses</code>: the same key and base URL; non-streaming and <code>"stream": true</code>.</>],
  ['messages', 'Anthropic Messages', <>Anthropic’s <code>/v1/messages</code>: the key in <code>x-api-key</code> with an <code>anthropic-version</code> header
    (Anthropic’s clients send both; their base URL is the gateway’s address without <code>/v1</code>). <code>max_tokens</code> is required.</>],
];
const LANGS = ['curl', 'Python', 'Node'];

/** A string as a shell word in single quotes. */
function shq(s) {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Examples for one key (or, without one, the TOKENAUDIT_API_KEY environment
 *  variable). origin: the gateway's address; model: as typed (quoted as a
 *  JSON / Python / JavaScript string, so any name stays one string). */
function snippets(api, origin, key, model) {
  const base = `${origin}/v1`;
  const m = JSON.stringify(model || 'MODEL_NAME');
  const curlKey = key ? key : '$TOKENAUDIT_API_KEY';
  const pyKey = key ? JSON.stringify(key) : 'os.environ["TOKENAUDIT_API_KEY"]';
  const jsKey = key ? JSON.stringify(key) : 'process.env.TOKENAUDIT_API_KEY';
  const pyOs = key ? '' : 'import os\n';
  // JSON with a space after each ":" and ",", as people write it (strings stay JSON.stringify's)
  const json = (v) => (Array.isArray(v) ? `[${v.map(json).join(', ')}]`
    : v && typeof v === 'object' ? `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${json(x)}`).join(', ')}}`
      : JSON.stringify(v));
  const body = (o) => shq(json(o));
  if (api === 'responses') {
    return {
      curl: `curl ${base}/responses \\
  -H ${key ? shq('Authorization: Bearer ' + key) : '"Authorization: Bearer $TOKENAUDIT_API_KEY"'} \\
  -H "Content-Type: application/json" \\
  -d ${body({ model: model || 'MODEL_NAME', input: 'Hello' })}`,
      Python: `# pip install openai
${pyOs}from openai import OpenAI

client = OpenAI(base_url="${base}", api_key=${pyKey})
reply = client.responses.create(model=${m}, input="Hello")
print(reply.output_text)`,
      Node: `// npm install openai
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: '${base}', apiKey: ${jsKey} });
const reply = await client.responses.create({ model: ${m}, input: 'Hello' });
console.log(reply.output_text);`,
    };
  }
  if (api === 'messages') {
    return {
      curl: `curl ${base}/messages \\
  -H ${key ? shq('x-api-key: ' + key) : '"x-api-key: $TOKENAUDIT_API_KEY"'} \\
  -H "anthropic-version: 2023-06-01" \\
  -H "Content-Type: application/json" \\
  -d ${body({ model: model || 'MODEL_NAME', max_tokens: 1024, messages: [{ role: 'user', content: 'Hello' }] })}`,
      Python: `# pip install anthropic
${pyOs}from anthropic import Anthropic

client = Anthropic(base_url="${origin}", api_key=${pyKey})
reply = client.messages.create(
    model=${m},
    max_tokens=1024,
    messages=[{"role": "user", "content": "Hello"}],
)
print(reply.content[0].text)`,
      Node: `// npm install @anthropic-ai/sdk
import Anthropic from '@anthropic-ai/sdk';

const client = new Anthropic({ baseURL: '${origin}', apiKey: ${jsKey} });
const reply = await client.messages.create({
  model: ${m},
  max_tokens: 1024,
  messages: [{ role: 'user', content: 'Hello' }],
});
console.log(reply.content[0].text);`,
    };
  }
  return {
    curl: `curl ${base}/chat/completions \\
  -H ${key ? shq('Authorization: Bearer ' + key) : '"Authorization: Bearer $TOKENAUDIT_API_KEY"'} \\
  -H "Content-Type: application/json" \\
  -d ${body({ model: model || 'MODEL_NAME', messages: [{ role: 'user', content: 'Hello' }] })}`,
    Python: `# pip install openai
${pyOs}from openai import OpenAI

client = OpenAI(base_url="${base}", api_key=${pyKey})
reply = client.chat.completions.create(
    model=${m},
    messages=[{"role": "user", "content": "Hello"}],
)
print(reply.choices[0].message.content)`,
    Node: `// npm install openai
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: '${base}', apiKey: ${jsKey} });
const reply = await client.chat.completions.create({
  model: ${m},
  messages: [{ role: 'user', content: 'Hello' }],
});
console.log(reply.choices[0].message.content);`,
  };
}

export function HowTo() {
  const origin = location.origin;
  const base = `${origin}/v1`;
  const [key, setKey] = useState('');
  const [model, setModel] = useState('');
  const [api, setApi] = useState('chat');
  const [tab, setTab] = useState('curl');
  const s = snippets(api, origin, key.trim(), model.trim());
  const about = APIS.find(([a]) => a === api)[2];
  return (
    <section>
      <PageHead title="How to call it" sub="The gateway speaks OpenAI’s Chat Completions and Responses APIs and Anthropic’s Messages API: point a client at it with your quota’s key." />
      <div class="card">
        <dl class="inline">
          <dt>Base URL</dt>
          <dd><code>{base}</code> <CopyButton text={base} /></dd>
          <dt>Anthropic clients</dt>
          <dd><code>{origin}</code> <CopyButton text={origin} /> <span class="muted small">(they add <code>/v1/messages</code> themselves)</span></dd>
          <dt>API key</dt>
          <dd>The key of one of your quotas (it starts like the prefix on <a href="#/me/quotas">My quotas</a>).
            It was shown once when the quota was made; an administrator can reset it if it is lost.</dd>
        </dl>
        <p class="muted small">If this gateway serves <code>/v1</code> on another address than the console, use that address instead.</p>
        <div class="form-grid">
          <div class="field"><label for="howto-key">Your key (stays in this page, to fill in the examples)</label>
            <input id="howto-key" type="password" autoComplete="off" value={key} placeholder="sk-…" onInput={(e) => setKey(e.currentTarget.value)} /></div>
          <div class="field"><label for="howto-model">Model</label>
            <input id="howto-model" value={model} placeholder="e.g. gpt-4o-mini" onInput={(e) => setModel(e.currentTarget.value)} /></div>
        </div>
      </div>
      <div class="card">
        <div class="api-choice" role="group" aria-label="API">
          {APIS.map(([a, label]) => (
            <button type="button" key={a} aria-pressed={api === a ? 'true' : 'false'} onClick={() => setApi(a)}>{label}</button>
          ))}
        </div>
        <p class="api-about">{about}</p>
        <div class="tabs" role="tablist" aria-label="Language">
          {LANGS.map((t) => (
            <button type="button" role="tab" key={t} aria-selected={tab === t ? 'true' : 'false'} onClick={() => setTab(t)}>{t}</button>
          ))}
        </div>
        <pre class="snippet" role="tabpanel"><code>{s[tab]}</code></pre>
        <CopyButton text={s[tab]} label={`Copy the ${tab} example`} />
        <p class="muted small">Streaming (<code>"stream": true</code>), <code>/v1/embeddings</code>, <code>/v1/models</code>, <code>/v1/usage</code> and
          {' '}<code>/v1/messages/count_tokens</code> take the same key.</p>
      </div>
    </section>
  );
}

export function Password() {
  const form = useForm({ old_password: '', new_password: '', confirm: '' });
  const [done, setDone] = useState(false);
  async function submit(e) {
    e.preventDefault();
    setDone(false);
    const ok = await form.submit(async (v) => {
      if (v.new_password !== v.confirm) throw Object.assign(new Error('The two new passwords differ.'), { fields: { confirm: 'Type the same new password twice.' } });
      // Every earlier session of the user ends; the answer carries the new one.
      const r = await post('/api/auth/password/', { old_password: v.old_password, new_password: v.new_password });
      if (r && r.access_token) setToken(r.access_token);
      return true;
    });
    if (ok) { setDone(true); form.setValues({ old_password: '', new_password: '', confirm: '' }); }
  }
  return (
    <section>
      <PageHead title="Password" sub="Change the password you sign in with." />
      <form class="card narrow" onSubmit={submit} noValidate>
        <TextField form={form} name="old_password" label="Current password" type="password" autoComplete="current-password" />
        <TextField form={form} name="new_password" label="New password" type="password" autoComplete="new-password" />
        <TextField form={form} name="confirm" label="New password again" type="password" autoComplete="new-password" />
        <FormMessage form={form} />
        {done && <p class="notice" role="status">Password changed. Your other sessions have ended; this one goes on.</p>}
        <div class="actions"><button type="submit" class="primary" disabled={form.busy}>Change password</button></div>
      </form>
    </section>
  );
}
