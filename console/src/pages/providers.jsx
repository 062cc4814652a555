// Providers: the upstreams. The API key is write-only (only its last four
// characters come back). Test calls the upstream's model list; Sync models
// creates a model for each upstream model that has none yet.
import { useState } from 'preact/hooks';
import { get, post, patch, del } from '../api.js';
import { useLoad, Loaded, PageHead, Table, Pager, Badge, Dialog, Confirm,
  useForm, TextField, SelectField, CheckField, FormMessage, Empty } from '../ui.jsx';
import { setParams, go } from '../router.js';
import { invalidate } from '../lookups.js';
import { int } from '../format.js';

const PAGE = 50;
const TYPES = [{ value: 'openai', label: 'OpenAI-compatible' }, { value: 'anthropic', label: 'Anthropic' }];

export function Providers({ route }) {
  const page = Number(route.params.page) || 1;
  const [dialog, setDialog] = useState(null);
  const [checks, setChecks] = useState({});
  const load = useLoad(() => get('/api/admin/providers/', { page, page_size: PAGE }), [page]);
  const close = (changed) => { setDialog(null); if (changed) { invalidate('providers'); load.reload(); } };

  async function test(p) {
    setChecks((c) => ({ ...c, [p.id]: { busy: true } }));
    try {
      const r = await post(`/api/admin/providers/${p.id}/test/`);
      setChecks((c) => ({ ...c, [p.id]: { result: r } }));
    } catch (e) {
      setChecks((c) => ({ ...c, [p.id]: { error: e.message } }));
    }
  }

  return (
    <section>
      <PageHead title="Providers" sub="Upstream APIs the gateway forwards to.">
        <button type="button" class="primary" onClick={() => setDialog({ kind: 'create' })}>New provider</button>
      </PageHead>
      <Loaded load={load} what="providers">
        {(data) => data.count === 0 ? (
          <Empty><p>No providers yet. Add one: its base URL and API key, then press Test and Sync models.</p>
            <button type="button" class="primary" onClick={() => setDialog({ kind: 'create' })}>Add a provider</button></Empty>
        ) : (
          <>
            <Table caption="Providers" rows={data.results} columns={[
              { key: 'name', label: 'Name' },
              { key: 'type', label: 'Type', render: (p) => TYPES.find((t) => t.value === p.type)?.label || p.type },
              { key: 'base_url', label: 'Base URL', render: (p) => <span class="mono break">{p.base_url}</span> },
              { key: 'key', label: 'API key', render: (p) => p.api_key_set ? <span class="mono">••••{p.api_key_last4}</span> : <span class="muted">none</span> },
              { key: 'timeout_s', label: 'Timeout', num: true, render: (p) => `${p.timeout_s} s` },
              { key: 'is_active', label: 'Status', render: (p) => p.is_active ? <Badge kind="ok">active</Badge> : <Badge kind="off">off</Badge> },
              { key: 'check', label: 'Last test', render: (p) => <CheckResult c={checks[p.id]} /> },
              { key: 'actions', label: 'Actions', render: (p) => (
                <div class="row-actions">
                  <button type="button" onClick={() => test(p)} disabled={checks[p.id]?.busy}>Test</button>
                  <button type="button" onClick={() => setDialog({ kind: 'sync', provider: p })}>Sync models</button>
                  <button type="button" onClick={() => go('/models', { provider_id: p.id })}>Models</button>
                  <button type="button" onClick={() => setDialog({ kind: 'edit', provider: p })}>Edit</button>
                  <button type="button" class="danger" onClick={() => setDialog({ kind: 'delete', provider: p })}>Delete</button>
                </div>) },
            ]} />
            <Pager page={page} pageSize={PAGE} count={data.count} onPage={(n) => setParams(route, { page: n })} />
          </>
        )}
      </Loaded>
      {dialog?.kind === 'create' && <ProviderForm onClose={close} />}
      {dialog?.kind === 'edit' && <ProviderForm provider={dialog.provider} onClose={close} />}
      {dialog?.kind === 'sync' && <Sync provider={dialog.provider} onClose={close} />}
      {dialog?.kind === 'delete' && (
        <Confirm title="Delete provider" action="Delete" danger onConfirm={() => del(`/api/admin/providers/${dialog.provider.id}/`)} onClose={close}>
          <p>Delete the provider <strong>{dialog.provider.name}</strong>? Models routed only to it stop being served.</p>
        </Confirm>)}
    </section>
  );
}

function CheckResult({ c }) {
  if (!c) return <span class="muted">not tested</span>;
  if (c.busy) return <span class="muted" role="status">testing…</span>;
  if (c.error) return <span class="bad" role="status">{c.error}</span>;
  const r = c.result;
  return (
    <span class={'check-result ' + (r.ok ? 'good' : 'bad')} role="status">
      {r.ok ? 'OK' : 'Failed'}{r.status ? ` · HTTP ${r.status}` : ''} · {int(r.latency_ms)} ms
      {r.models_count !== null && r.models_count !== undefined ? ` · ${int(r.models_count)} models` : ''}
      {r.error && <><br />{r.error}</>}
    </span>
  );
}

function Sync({ provider, onClose }) {
  const [state, setState] = useState({ busy: false });
  async function run() {
    setState({ busy: true });
    try { setState({ result: await post(`/api/admin/providers/${provider.id}/sync-models/`) }); invalidate('models'); }
    catch (e) { setState({ error: e.message }); }
  }
  const r = state.result;
  const list = (title, names, note) => (
    <div class="sync-list">
      <h3>{title} <span class="muted">({names.length})</span></h3>
      {names.length ? <ul>{names.map((n, i) => <li key={i}>{n}</li>)}</ul> : <p class="muted">none</p>}
      {note && names.length > 0 && <p class="muted small">{note}</p>}
    </div>
  );
  return (
    <Dialog title={`Sync models of ${provider.name}`} onClose={() => onClose(!!r)} wide>
      {!r && <p>Ask <strong>{provider.name}</strong> for its models and create a model here for each one that has none yet.
        New models have no prices: a quota with a cost limit cannot use them until they get prices.</p>}
      {state.error && <p class="form-error" role="alert">{state.error}</p>}
      {r && (
        <div class="sync-result" role="status">
          {list('Created', r.created, 'Set their prices on the Models page before quotas with a cost limit use them.')}
          {list('Already there', r.existing)}
          {r.skipped && list('Skipped', r.skipped.map((s) => (typeof s === 'string' ? s : JSON.stringify(s))))}
        </div>
      )}
      <div class="actions">
        {r ? <>
          <button type="button" onClick={() => { onClose(true); go('/models', { provider_id: provider.id }); }}>See the models</button>
          <button type="button" class="primary" onClick={() => onClose(true)}>Done</button></>
          : <>
          <button type="button" onClick={() => onClose(false)}>Cancel</button>
          <button type="button" class="primary" disabled={state.busy} onClick={run}>{state.busy ? 'Syncing…' : 'Sync models'}</button></>}
      </div>
    </Dialog>
  );
}

function ProviderForm({ provider, onClose }) {
  const editing = !!provider;
  const form = useForm(editing
    ? { name: provider.name, type: provider.type, base_url: provider.base_url, api_key: '', timeout_s: String(provider.timeout_s), is_active: provider.is_active }
    : { name: '', type: 'openai', base_url: 'https://api.openai.com/v1', api_key: '', timeout_s: '', is_active: true });
  async function submit(e) {
    e.preventDefault();
    const r = await form.submit((v) => {
      const body = { name: v.name, type: v.type, base_url: v.base_url, is_active: v.is_active };
      if (v.api_key) body.api_key = v.api_key;
      const t = v.timeout_s.trim();
      if (t) body.timeout_s = /^\d+$/.test(t) ? Number(t) : t;
      return editing ? patch(`/api/admin/providers/${provider.id}/`, body) : post('/api/admin/providers/', body);
    });
    if (r) onClose(true);
  }
  return (
    <Dialog title={editing ? `Edit ${provider.name}` : 'New provider'} onClose={() => onClose(false)}>
      <form onSubmit={submit} noValidate>
        <TextField form={form} name="name" label="Name" required />
        <SelectField form={form} name="type" label="Type" options={TYPES}
          hint="Anthropic providers are reached through the same OpenAI-shaped /v1." />
        <TextField form={form} name="base_url" label="Base URL" type="url" required
          hint={form.values.type === 'anthropic' ? 'e.g. https://api.anthropic.com' : 'e.g. https://api.openai.com/v1'} />
        <TextField form={form} name="api_key" label="API key" type="password" autoComplete="off"
          hint={editing ? `Stored key ends in ${provider.api_key_last4 || '—'}; leave empty to keep it.` : 'Sealed at rest and never shown again.'} />
        <TextField form={form} name="timeout_s" label="Timeout (seconds)" inputMode="numeric" hint={editing ? undefined : 'Empty = the default'} />
        <CheckField form={form} name="is_active" label="Active" />
        <FormMessage form={form} />
        <div class="actions">
          <button type="button" onClick={() => onClose(false)}>Cancel</button>
          <button type="submit" class="primary" disabled={form.busy}>{editing ? 'Save' : 'Add provider'}</button>
        </div>
      </form>
    </Dialog>
  );
}
