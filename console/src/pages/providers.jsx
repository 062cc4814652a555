// Providers: the upstreams. The API key is write-only (only its last four
// characters come back). Health is the gateway's view of the calls of the
// last few minutes (docs/API.md, Providers: Health), read again whenever the
// page is shown. Test calls the upstream's model list; Sync models creates a
// model for each upstream model that has none yet, updates the context sizes
// of those that have, and marks routes the provider no longer lists.
import { useEffect, useState } from 'preact/hooks';
import { get, post, patch, del } from '../api.js';
import { useLoad, Loaded, PageHead, Table, Pager, Badge, Dialog, Confirm, Time,
  useForm, TextField, SelectField, CheckField, FormMessage, Empty } from '../ui.jsx';
import { setParams, go } from '../router.js';
import { invalidate } from '../lookups.js';
import { int, errorRate } from '../format.js';

const PAGE = 50;
const TYPES = [{ value: 'openai', label: 'OpenAI-compatible' }, { value: 'anthropic', label: 'Anthropic' }];

export function Providers({ route }) {
  const page = Number(route.params.page) || 1;
  const [dialog, setDialog] = useState(null);
  const [checks, setChecks] = useState({});
  const load = useLoad(() => get('/api/admin/providers/', { page, page_size: PAGE }), [page]);
  const close = (changed) => { setDialog(null); if (changed) { invalidate('providers'); load.reload(); } };
  // Health moves on its own: read it again when the tab is shown again.
  useEffect(() => {
    const f = () => { if (document.visibilityState === 'visible') load.reload(); };
    document.addEventListener('visibilitychange', f);
    return () => document.removeEventListener('visibilitychange', f);
  }, [load.reload]);

  async function test(p) {
    setChecks((c) => ({ ...c, [p.id]: { busy: true } }));
    try {
      const r = await post(`/api/admin/providers/${p.id}/test/`);
      setChecks((c) => ({ ...c, [p.id]: { result: r } }));
    } catch (e) {
      setChecks((c) => ({ ...c, [p.id]: { error: e.message } }));
    }
    load.reload(); // a test may have changed its health
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
            <Failing providers={data.results} />
            <Table caption="Providers" rows={data.results} columns={[
              { key: 'name', label: 'Name', render: (p) => <>{p.name}<br /><span class="muted small">
                <span class="nowrap">{TYPES.find((t) => t.value === p.type)?.label || p.type}</span> · <span class="nowrap">timeout {p.timeout_s} s</span></span></> },
              { key: 'base_url', label: 'Base URL', render: (p) => <span class="mono break">{p.base_url}</span> },
              { key: 'key', label: 'API key', render: (p) => p.api_key_set ? <span class="mono">••••{p.api_key_last4}</span> : <span class="muted">none</span> },
              { key: 'is_active', label: 'Status', render: (p) => p.is_active ? <Badge kind="ok">active</Badge> : <Badge kind="off">off</Badge> },
              { key: 'health', label: 'Health', render: (p) => <Health h={p.health} /> },
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

const STATES = { healthy: 'ok', degraded: 'warn', down: 'bad' };

/** A state badge: healthy / degraded / down. */
function StateBadge({ state }) {
  return <Badge kind={STATES[state] || 'off'}>{state}</Badge>;
}

/** "p95 ≤ 250 ms": the API gives the upper bound of the bin the quantile
 *  falls in (60001: slower than the last bin). */
function p95(ms) {
  if (ms === null || ms === undefined) return null;
  return ms > 60000 ? 'p95 > 60 s' : `p95 ≤ ${int(ms)} ms`;
}

/** The figures of a health window: error rate (from the counts) and p95. */
function figures(h) {
  if (!h.calls) return 'no calls';
  return [`${errorRate(h.errors, h.calls)} errors (${int(h.errors)} of ${int(h.calls)})`, p95(h.p95_ms)].filter(Boolean).join(' · ');
}

// last_error kinds (the API's words, shown on hover) in plain words; "HTTP 503"
// and "probe: ..." read as they are.
const ERRORS = { connect: 'could not connect', timeout_connect: 'timed out connecting',
  timeout_first_byte: 'timed out waiting for the answer', timeout_idle: 'the answer stalled',
  timeout_total: 'took longer than the timeout', no_response: 'no answer', cut: 'answer cut off' };

function errorWords(e) {
  return ERRORS[e] || e;
}

function LastError({ h }) {
  if (!h.last_error) return null;
  return (
    <span class="health-error">Last error: <span class="bad" title={h.last_error}>{errorWords(h.last_error)}</span>{' '}
      (<Time iso={h.last_error_at} rel />)</span>
  );
}

/** The Health cell: the provider's state, its figures over the window, its
 *  last error and when (UTC on hover), and each route in a detail list. */
function Health({ h }) {
  if (!h) return <span class="muted">—</span>;
  const mins = Math.round((h.window_s || 300) / 60);
  return (
    <div class="health">
      <StateBadge state={h.state} />
      <span class="muted small">{h.calls ? `last ${mins} min: ` : `no calls in the last ${mins} min`}{h.calls ? figures(h) : ''}</span>
      <LastError h={h} />
      {h.routes.length > 0 && (
        <details class="health-routes">
          <summary>{h.routes.length === 1 ? '1 route' : `${h.routes.length} routes`}</summary>
          <ul>
            {h.routes.map((r) => (
              <li key={r.upstream_name}>
                <span class="mono">{r.upstream_name}</span> <StateBadge state={r.state} />
                <span class="muted small">{figures(r)}{r.consecutive_failures > 0 ? ` · ${int(r.consecutive_failures)} failed in a row` : ''}</span>
                {r.cooldown_until && r.state === 'down' && <span class="muted small">skipped until <Time iso={r.cooldown_until} /></span>}
                <LastError h={r} />
              </li>
            ))}
          </ul>
        </details>
      )}
    </div>
  );
}

/** A plain line above the table naming the providers that are not healthy. */
function Failing({ providers }) {
  const bad = providers.filter((p) => p.health && p.health.state !== 'healthy');
  if (bad.length === 0) return null;
  return (
    <p class="warning" role="note">
      {bad.map((p, i) => (
        <span key={p.id}>{i > 0 && '; '}<strong>{p.name}</strong> is {p.health.state}
          {p.health.last_error && <> (last error: {errorWords(p.health.last_error)}, <Time iso={p.health.last_error_at} rel />)</>}</span>
      ))}.
      {' '}While a route is down, requests skip it and go to the model’s next route, if it has one.
    </p>
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

// What each list of the sync answer means (docs/API.md, Model sync).
const SYNC_LISTS = [
  ['created', 'Created', 'New models, with no prices yet: set their prices on the Models page before quotas with a cost limit use them.'],
  ['updated', 'Updated', 'Context window or max output taken from the provider’s list, or listed again after being missing.'],
  ['missing', 'No longer listed', 'Routed to an upstream model the provider no longer lists. Still served (a list can lag); edit or delete them on the Models page.'],
  ['skipped', 'Skipped', 'Names that cannot be model names here.'],
  ['existing', 'Already there', null],
];

function Sync({ provider, onClose }) {
  const [state, setState] = useState({ busy: false });
  async function run() {
    setState({ busy: true });
    try { setState({ result: await post(`/api/admin/providers/${provider.id}/sync-models/`) }); invalidate('models'); }
    catch (e) { setState({ error: e.message }); }
  }
  const r = state.result;
  const items = (k) => (r[k] || []).map((x) => (typeof x === 'string' ? { name: x } : x));
  return (
    <Dialog title={`Sync models of ${provider.name}`} onClose={() => onClose(!!r)} wide>
      {!r && <p>Ask <strong>{provider.name}</strong> for its models: create a model here for each one that has none yet,
        take context sizes from its list, and mark routes to models it no longer lists.
        New models have no prices: a quota with a cost limit cannot use them until they get prices.</p>}
      {state.error && <p class="form-error" role="alert">{state.error}</p>}
      {r && (
        <div role="status">
          <ul class="sync-summary" aria-label="Sync result">
            {SYNC_LISTS.map(([k, title]) => (
              <li key={k} class={items(k).length && (k === 'missing' || k === 'skipped') ? 'warn' : ''}>
                <strong>{int(items(k).length)}</strong> {title.toLowerCase()}</li>))}
          </ul>
          <div class="sync-result">
            {SYNC_LISTS.filter(([k]) => items(k).length > 0).map(([k, title, note]) => (
              <section class={'sync-list ' + k} key={k}>
                <h3>{title} <span class="muted">({items(k).length})</span></h3>
                {note && <p class="muted small">{note}</p>}
                <ul>{items(k).map((x, i) => <li key={i}><span class="mono">{x.name}</span>{x.reason && <span class="muted small"> — {x.reason}</span>}</li>)}</ul>
              </section>
            ))}
          </div>
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
