// Requests: the audit log with filters (in the address, so a link from the
// overview opens the same view), pages, and one record in detail.
import { useState } from 'preact/hooks';
import { get } from '../api.js';
import { useLoad, Loaded, PageHead, Table, Pager, Time, Badge, Dialog, Money, Empty } from '../ui.jsx';
import { setParams, go } from '../router.js';
import { useLookup, name } from '../lookups.js';
import { int, localInputToIso, isoToLocalInput, zoneName } from '../format.js';

const PAGE = 50;

function Status({ r }) {
  const kind = r.status < 400 ? 'ok' : r.status < 500 ? 'warn' : 'bad';
  return <Badge kind={kind}>{r.status}{r.error_type ? ' ' + r.error_type : ''}</Badge>;
}

export function Requests({ route }) {
  const p = route.params;
  const page = Number(p.page) || 1;
  const users = useLookup('users');
  const [open, setOpen] = useState(null);
  const [draft, setDraft] = useState({ quota_id: p.quota_id || '', model: p.model || '', status: p.status || '',
    since: isoToLocalInput(p.since), until: isoToLocalInput(p.until) });
  const load = useLoad(() => get('/api/admin/requests/', { user_id: p.user_id, quota_id: p.quota_id, model: p.model, status: p.status,
    since: p.since, until: p.until, page, page_size: PAGE }), [p.user_id, p.quota_id, p.model, p.status, p.since, p.until, page]);
  const filtered = ['user_id', 'quota_id', 'model', 'status', 'since', 'until'].some((k) => p[k]);
  const d = (k) => (e) => setDraft({ ...draft, [k]: e.currentTarget.value });

  function apply(e) {
    e.preventDefault();
    setParams(route, { quota_id: draft.quota_id.trim(), model: draft.model.trim(), status: draft.status.trim(),
      since: localInputToIso(draft.since), until: localInputToIso(draft.until), page: '' });
  }

  return (
    <section>
      <PageHead title="Requests" sub={`Every call through /v1, newest first. Times in ${zoneName()}; hover a time for UTC.`} />
      <form class="filters" role="search" onSubmit={apply}>
        <label>User <select value={p.user_id || ''} onChange={(e) => setParams(route, { user_id: e.currentTarget.value, page: '' })}>
          <option value="">all users</option>
          {(users?.list || []).map((u) => <option key={u.id} value={String(u.id)}>{u.email}</option>)}</select></label>
        <label>Quota <input class="short" inputMode="numeric" value={draft.quota_id} placeholder="id" onInput={d('quota_id')} /></label>
        <label>Model <input value={draft.model} placeholder="name" onInput={d('model')} /></label>
        <label>Status <input class="short" inputMode="numeric" value={draft.status} placeholder="e.g. 429" onInput={d('status')} /></label>
        <label>From <input type="datetime-local" value={draft.since} onInput={d('since')} /></label>
        <label>To <input type="datetime-local" value={draft.until} onInput={d('until')} /></label>
        <button type="submit" class="primary">Apply</button>
        {filtered && <button type="button" onClick={() => { setDraft({ quota_id: '', model: '', status: '', since: '', until: '' }); go('/requests'); }}>Clear</button>}
      </form>
      <Loaded load={load} what="requests">
        {(data) => data.count === 0 ? (
          <Empty>{filtered ? <p>No request matches these filters.</p>
            : <p>No requests yet. Calls to <code>/v1</code> with a quota’s key show up here.</p>}</Empty>
        ) : (
          <>
            <Table caption="Requests" rows={data.results} onRow={setOpen} columns={[
              { key: 'created_at', label: 'Time', render: (r) => <Time iso={r.created_at} /> },
              { key: 'user', label: 'User', render: (r) => name(users, r.user_id, 'email') },
              { key: 'model', label: 'Model', render: (r) => <span class="mono">{r.model || '—'}</span> },
              { key: 'status', label: 'Status', render: (r) => <Status r={r} /> },
              { key: 'tokens', label: 'Tokens in / out', num: true, render: (r) => `${int(r.prompt_tokens)} / ${int(r.completion_tokens)}` },
              { key: 'cost', label: 'Cost', num: true, render: (r) => <Money value={r.cost} /> },
              { key: 'latency', label: 'Latency', num: true, render: (r) => `${int(r.latency_ms)} ms` },
              { key: 'more', label: '', render: (r) => <button type="button" onClick={() => setOpen(r)} aria-label={`Details of request ${r.id}`}>Details</button> },
            ]} />
            <Pager page={page} pageSize={PAGE} count={data.count} onPage={(n) => setParams(route, { page: n })} />
          </>
        )}
      </Loaded>
      {open && <Detail r={open} users={users} onClose={() => setOpen(null)} />}
    </section>
  );
}

function Detail({ r, users, onClose }) {
  const providers = useLookup('providers');
  const rows = [
    ['Request id', <span class="mono break">{r.id}</span>],
    ['Time', <><Time iso={r.created_at} /> <span class="muted">(UTC {r.created_at})</span></>],
    ['User', name(users, r.user_id, 'email')],
    ['Quota', <>#{r.quota_id} <span class="muted mono">{r.key_prefix}…</span></>],
    ['Endpoint', <span class="mono">{r.endpoint}</span>],
    ['Model asked', <span class="mono">{r.model || '—'}</span>],
    ['Model served', <span class="mono">{r.served_model || '—'}</span>],
    ['Provider', r.provider_id ? name(providers, r.provider_id) : '—'],
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
