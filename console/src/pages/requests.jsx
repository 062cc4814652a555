// Requests: the audit log with filters (in the address, so a link from the
// overview opens the same view), pages, one record in detail (also by its
// request id, #/requests?id=...: what a client's X-Request-Id names), and
// the filtered set exported as CSV or JSON lines. A normal user's own
// requests (MyRequests) use the same table and detail.
import { useState } from 'preact/hooks';
import { get, download, all } from '../api.js';
import { useLoad, Loaded, PageHead, Table, Pager, Time, Badge, Dialog, Money, Empty, Loading, ErrorBox } from '../ui.jsx';
import { setParams, go } from '../router.js';
import { useLookup, name } from '../lookups.js';
import { int, localInputToIso, isoToLocalInput, zoneName } from '../format.js';

const PAGE = 50;
const FILTERS = ['user_id', 'quota_id', 'model', 'status', 'since', 'until'];

function Status({ r }) {
  const kind = r.status < 400 ? 'ok' : r.status < 500 ? 'warn' : 'bad';
  return <Badge kind={kind}>{r.status}{r.error_type ? ' ' + r.error_type : ''}</Badge>;
}

/** The filter bar: quota (a select of the caller's own, or an id), model,
 *  status, time range; users (admin) is a select of every user. */
function Filters({ route, users, quotas }) {
  const p = route.params;
  const [draft, setDraft] = useState({ quota_id: p.quota_id || '', model: p.model || '', status: p.status || '',
    since: isoToLocalInput(p.since), until: isoToLocalInput(p.until) });
  const d = (k) => (e) => setDraft({ ...draft, [k]: e.currentTarget.value });
  const filtered = FILTERS.some((k) => p[k]);
  function apply(e) {
    e.preventDefault();
    setParams(route, { quota_id: draft.quota_id.trim(), model: draft.model.trim(), status: draft.status.trim(),
      since: localInputToIso(draft.since), until: localInputToIso(draft.until), page: '', id: '', at: '' });
  }
  return (
    <form class="filters" role="search" aria-label="Filter requests" onSubmit={apply}>
      {users && <label>User <select value={p.user_id || ''} onChange={(e) => setParams(route, { user_id: e.currentTarget.value, page: '' })}>
        <option value="">all users</option>
        {(users.list || []).map((u) => <option key={u.id} value={String(u.id)}>{u.email}</option>)}</select></label>}
      {quotas ? <label>Quota <select value={draft.quota_id} onChange={d('quota_id')}>
        <option value="">all my quotas</option>
        {quotas.map((q) => <option key={q.id} value={String(q.id)}>#{q.id} ({q.key_prefix}…)</option>)}</select></label>
        : <label>Quota <input class="short" inputMode="numeric" value={draft.quota_id} placeholder="id" onInput={d('quota_id')} /></label>}
      <label>Model <input value={draft.model} placeholder="name" onInput={d('model')} /></label>
      <label>Status <input class="short" inputMode="numeric" value={draft.status} placeholder="e.g. 429" onInput={d('status')} /></label>
      <label>From <input type="datetime-local" value={draft.since} onInput={d('since')} /></label>
      <label>To <input type="datetime-local" value={draft.until} onInput={d('until')} /></label>
      <button type="submit" class="primary">Apply</button>
      {filtered && <button type="button" onClick={() => { setDraft({ quota_id: '', model: '', status: '', since: '', until: '' }); go(route.path); }}>Clear</button>}
    </form>
  );
}

function columns(users, open) {
  return [
    { key: 'created_at', label: 'Time', render: (r) => <Time iso={r.created_at} /> },
    ...(users ? [{ key: 'user', label: 'User', render: (r) => name(users, r.user_id, 'email') }] : [{ key: 'quota', label: 'Quota', render: (r) => `#${r.quota_id}` }]),
    { key: 'model', label: 'Model', render: (r) => <span class="mono">{r.model || '—'}</span> },
    { key: 'status', label: 'Status', render: (r) => <Status r={r} /> },
    { key: 'tokens', label: 'Tokens in / out', num: true, render: (r) => `${int(r.prompt_tokens)} / ${int(r.completion_tokens)}` },
    { key: 'cost', label: 'Cost', num: true, render: (r) => <Money value={r.cost} /> },
    { key: 'latency', label: 'Latency', num: true, render: (r) => `${int(r.latency_ms)} ms` },
    { key: 'more', label: '', render: (r) => <button type="button" onClick={() => open(r)} aria-label={`Details of request ${r.id}`}>Details</button> },
  ];
}

/** Export the filtered set: the gateway streams it, the browser saves it. */
function Export({ params }) {
  const [busy, setBusy] = useState('');
  const [error, setError] = useState(null);
  async function run(format) {
    setBusy(format); setError(null);
    const stamp = new Date().toISOString().slice(0, 19).replace(/:/g, '-');
    try {
      await download('/api/admin/requests/export/', { ...params, format }, `requests-${stamp}.${format}`);
    } catch (e) {
      setError(e.message);
    }
    setBusy('');
  }
  return (
    <div class="export" role="group" aria-label="Export these requests">
      <span class="muted small">Export these, oldest first:</span>
      <button type="button" disabled={!!busy} onClick={() => run('csv')}>{busy === 'csv' ? 'Exporting…' : 'CSV'}</button>
      <button type="button" disabled={!!busy} onClick={() => run('jsonl')}>{busy === 'jsonl' ? 'Exporting…' : 'JSON lines'}</button>
      {error && <span class="form-error" role="alert">{error}</span>}
    </div>
  );
}

export function Requests({ route }) {
  const p = route.params;
  const page = Number(p.page) || 1;
  const users = useLookup('users');
  const [find, setFind] = useState('');
  const [findError, setFindError] = useState('');
  const params = { user_id: p.user_id, quota_id: p.quota_id, model: p.model, status: p.status, since: p.since, until: p.until };
  const load = useLoad(() => get('/api/admin/requests/', { ...params, page, page_size: PAGE }),
    [p.user_id, p.quota_id, p.model, p.status, p.since, p.until, page]);
  const filtered = FILTERS.some((k) => p[k]);
  // a row opens with its time, so the lookup reads one key (docs/API.md)
  const open = (r) => setParams(route, { id: r.id, at: r.created_at });

  function lookUp(e) {
    e.preventDefault();
    const id = find.trim().toLowerCase();
    if (!/^[0-9a-f]{32}$/.test(id)) { setFindError('A request id is 32 hexadecimal characters (the X-Request-Id header).'); return; }
    setFindError('');
    setParams(route, { id, at: '' });
  }

  return (
    <section>
      <PageHead title="Requests" sub={`Every call through /v1, newest first. Times in ${zoneName()}; hover a time for UTC.`}>
        <form class="find" role="search" aria-label="Find a request by id" onSubmit={lookUp}>
          <label for="find-id" class="sr-only">Request id</label>
          <input id="find-id" class="mono" value={find} placeholder="request id (X-Request-Id)" aria-invalid={findError ? 'true' : undefined}
            aria-describedby={findError ? 'find-err' : undefined} onInput={(e) => setFind(e.currentTarget.value)} />
          <button type="submit">Open</button>
          {findError && <small class="field-error" id="find-err" role="alert">{findError}</small>}
        </form>
      </PageHead>
      <Filters route={route} users={users || { list: [] }} key={JSON.stringify(params)} />
      <Loaded load={load} what="requests">
        {(data) => data.count === 0 ? (
          <Empty>{filtered ? <p>No request matches these filters. <a href="#/requests">Show all requests</a>.</p>
            : <p>No requests yet. Calls to <code>/v1</code> with a quota’s key show up here.</p>}</Empty>
        ) : (
          <>
            <Table caption="Requests" rows={data.results} onRow={open} columns={columns(users, open)} />
            <div class="list-foot">
              <Pager page={page} pageSize={PAGE} count={data.count} estimated={data.count_estimated} onPage={(n) => setParams(route, { page: n })} />
              <Export params={params} />
            </div>
          </>
        )}
      </Loaded>
      {p.id && <RecordById id={p.id} at={p.at} users={users} onClose={() => setParams(route, { id: '', at: '' })} />}
    </section>
  );
}

/** GET /api/admin/requests/{id}/, narrowed to the record's own millisecond when known. */
function RecordById({ id, at, users, onClose }) {
  const load = useLoad(() => {
    const t = at ? Date.parse(at) : NaN;
    const range = isNaN(t) ? {} : { since: at, until: new Date(t + 1).toISOString() };
    return get(`/api/admin/requests/${encodeURIComponent(id)}/`, range);
  }, [id, at]);
  if (load.error) {
    return (
      <Dialog title="Request" onClose={onClose}>
        <ErrorBox error={load.error} />
        <div class="actions"><button type="button" onClick={onClose}>Close</button></div>
      </Dialog>
    );
  }
  if (!load.data) return <Dialog title="Request" onClose={onClose}><Loading what="the request" /></Dialog>;
  return <Detail r={load.data} users={users} onClose={onClose} />;
}

export function Detail({ r, users, onClose }) {
  const providers = useLookup(users ? 'providers' : null);
  const rows = [
    ['Request id', <span class="mono break">{r.id}</span>],
    ['Time', <span class="stack"><Time iso={r.created_at} /><small class="muted">UTC {r.created_at.replace('T', ' ').replace('Z', '')}</small></span>],
    ...(users ? [['User', name(users, r.user_id, 'email')]] : []),
    ['Quota', <>#{r.quota_id} <span class="muted mono">{r.key_prefix}…</span></>],
    ['Endpoint', <span class="mono">{r.endpoint}</span>],
    ['Model asked', <span class="mono">{r.model || '—'}</span>],
    ['Model served', <span class="mono">{r.served_model || '—'}</span>],
    ...(users ? [['Provider', r.provider_id ? name(providers, r.provider_id) : '—']] : []),
    ['Streamed', r.stream ? 'yes' : 'no'],
    ['Status', <Status r={r} />],
    ['Prompt tokens', int(r.prompt_tokens)],
    ['Completion tokens', int(r.completion_tokens)],
    ['Cached tokens (read)', int(r.cached_tokens)],
    ['Cache write tokens', int(r.cache_write_tokens)],
    ['Usage', r.usage_estimated ? <Badge kind="warn">estimated by the gateway</Badge> : 'reported by the provider'],
    ['Cost', <Money value={r.cost} />],
    ['Latency', `${int(r.latency_ms)} ms`],
    ['Time to first token', r.ttft_ms ? `${int(r.ttft_ms)} ms` : '—'],
    ['Client IP', <span class="mono">{r.client_ip || '—'}</span>],
  ];
  return (
    <Dialog title="Request" onClose={onClose}>
      <dl class="detail">{rows.map(([k, v]) => <><dt key={'k' + k}>{k}</dt><dd key={'v' + k}>{v}</dd></>)}</dl>
      <div class="actions"><button type="button" onClick={onClose}>Close</button></div>
    </Dialog>
  );
}

/** A normal user's own requests (GET /api/requests/). */
export function MyRequests({ route }) {
  const p = route.params;
  const page = Number(p.page) || 1;
  const [open, setOpen] = useState(null);
  const quotas = useLoad(() => all('/api/quotas/'), []);
  const load = useLoad(() => get('/api/requests/', { quota_id: p.quota_id, model: p.model, status: p.status, since: p.since,
    until: p.until, page, page_size: PAGE }), [p.quota_id, p.model, p.status, p.since, p.until, page]);
  const filtered = FILTERS.some((k) => p[k]);
  return (
    <section>
      <PageHead title="My requests" sub={`Your calls through /v1 and what each cost, newest first. Times in ${zoneName()}; hover a time for UTC.`} />
      <Filters route={route} quotas={quotas.data || []} key={JSON.stringify(p) + (quotas.data ? 'q' : '')} />
      <Loaded load={load} what="your requests">
        {(data) => data.count === 0 ? (
          <Empty>{filtered ? <p>None of your requests matches these filters. <a href="#/me/requests">Show all</a>.</p>
            : <p>No requests yet. Calls with your key show up here; <a href="#/me/howto">how to call the gateway</a>.</p>}</Empty>
        ) : (
          <>
            <Table caption="My requests" rows={data.results} onRow={setOpen} columns={columns(null, setOpen)} />
            <Pager page={page} pageSize={PAGE} count={data.count} estimated={data.count_estimated} onPage={(n) => setParams(route, { page: n })} />
          </>
        )}
      </Loaded>
      {open && <Detail r={open} onClose={() => setOpen(null)} />}
    </section>
  );
}

