// A user's own pages: quotas with their use, how to call the gateway, and
// the password. (Superadmins see them too, under "My account".)
import { useState } from 'preact/hooks';
import { get, post, setToken } from '../api.js';
import { useLoad, Loaded, PageHead, Time, Badge, Empty, CopyButton, useForm, TextField, FormMessage } from '../ui.jsx';
import { UsageBar } from './quotas.jsx';
import { int } from '../format.js';

export function MyQuotas() {
  const load = useLoad(() => get('/api/quotas/'), []);
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
                    : <>This {q.period}: <Time iso={q.usage.period_start} /> to <Time iso={q.usage.period_end} />
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
              </article>
            ))}
          </div>
        )}
      </Loaded>
    </section>
  );
}

/** Examples for one key (or, without one, the TOKENAUDIT_API_KEY environment variable). */
function snippets(base, key, model) {
  const m = model || 'MODEL_NAME';
  return {
    curl: `curl ${base}/chat/completions \\
  -H "Authorization: Bearer ${key || '$TOKENAUDIT_API_KEY'}" \\
  -H "Content-Type: application/json" \\
  -d '{"model": "${m}", "messages": [{"role": "user", "content": "Hello"}]}'`,
    Python: `# pip install openai
${key ? '' : 'import os\n'}from openai import OpenAI

client = OpenAI(base_url="${base}", api_key=${key ? `"${key}"` : 'os.environ["TOKENAUDIT_API_KEY"]'})
reply = client.chat.completions.create(
    model="${m}",
    messages=[{"role": "user", "content": "Hello"}],
)
print(reply.choices[0].message.content)`,
    Node: `// npm install openai
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: '${base}', apiKey: ${key ? `'${key}'` : 'process.env.TOKENAUDIT_API_KEY'} });
const reply = await client.chat.completions.create({
  model: '${m}',
  messages: [{ role: 'user', content: 'Hello' }],
});
console.log(reply.choices[0].message.content);`,
  };
}

export function HowTo() {
  const base = `${location.origin}/v1`;
  const [key, setKey] = useState('');
  const [model, setModel] = useState('');
  const [tab, setTab] = useState('curl');
  const s = snippets(base, key.trim(), model.trim());
  return (
    <section>
      <PageHead title="How to call it" sub="The gateway speaks the OpenAI API: point any OpenAI client at it with your quota’s key." />
      <div class="card">
        <dl class="inline">
          <dt>Base URL</dt>
          <dd><code>{base}</code> <CopyButton text={base} /></dd>
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
        <div class="tabs" role="tablist" aria-label="Language">
          {Object.keys(s).map((t) => (
            <button type="button" role="tab" key={t} aria-selected={tab === t ? 'true' : 'false'} onClick={() => setTab(t)}>{t}</button>
          ))}
        </div>
        <pre class="snippet" role="tabpanel"><code>{s[tab]}</code></pre>
        <CopyButton text={s[tab]} label={`Copy the ${tab} example`} />
        <p class="muted small">Streaming (<code>"stream": true</code>), <code>/v1/embeddings</code>, <code>/v1/models</code> and <code>/v1/usage</code> work the same way.</p>
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
