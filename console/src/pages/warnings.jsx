// Warnings: the warn_at thresholds quotas reached (raised once per period by
// billing), newest first, with what was used then and how their webhook
// delivery went (GET /api/admin/warnings/).
import { useState } from 'preact/hooks';
import { get } from '../api.js';
import { useLoad, Loaded, PageHead, Table, Pager, Time, Badge, Money, Empty } from '../ui.jsx';
import { setParams, go } from '../router.js';
import { useLookup, name } from '../lookups.js';
import { int, localInputToIso, isoToLocalInput, zoneName, perMille, pctText } from '../format.js';

const PAGE = 50;
const STATES = {
  delivered: ['ok', 'delivered'],
  pending: ['warn', 'pending'],
  failed: ['bad', 'failed'],
  none: ['off', 'no webhook'],
};

/** What was used against which limit when the threshold was reached. */
function Used({ w }) {
  // a limit of 0 is one the quota did not have (docs/API.md)
  const has = (l) => l !== null && l !== undefined && l !== 0 && l !== '0';
  const pct = (u, l, m) => { const pm = perMille(u, l, m); return pm === null ? '' : ` (${pctText(pm)})`; };
  const parts = [];
  if (has(w.cost_limit)) parts.push(<span key="c"><Money value={w.cost_used} /> of <Money value={w.cost_limit} />{pct(w.cost_used, w.cost_limit, true)}</span>);
  if (has(w.token_limit)) parts.push(<span key="t">{int(w.tokens_used)} of {int(w.token_limit)} tokens{pct(w.tokens_used, w.token_limit)}</span>);
  if (has(w.request_limit)) parts.push(<span key="r">{int(w.requests_used)} of {int(w.request_limit)} requests{pct(w.requests_used, w.request_limit)}</span>);
  if (!parts.length) return <span class="muted">—</span>;
  return <span class="stack">{parts}</span>;
}

function Delivery({ w }) {
  const [kind, label] = STATES[w.webhook_state] || ['off', w.webhook_state];
  if (w.webhook_state === 'none') return <span title="No webhook was configured when it was raised."><Badge kind={kind}>{label}</Badge></span>;
  const detail = `${w.webhook_attempts} ${w.webhook_attempts === 1 ? 'attempt' : 'attempts'}` +
      (w.webhook_status > 0 ? `, last HTTP ${w.webhook_status}` : w.webhook_status < 0 ? ', no answer' : '') +
      (w.webhook_error ? `: ${w.webhook_error}` : '');
  return (
    <span class="stack">
      <Badge kind={kind}>{label}</Badge>
      <small class="muted">{detail}{w.webhook_at ? <> · <Time iso={w.webhook_at} rel /></> : null}</small>
    </span>
  );
}

export function Warnings({ route }) {
  const p = route.params;
  const page = Number(p.page) || 1;
  const users = useLookup('users');
  const [draft, setDraft] = useState({ quota_id: p.quota_id || '', since: isoToLocalInput(p.since), until: isoToLocalInput(p.until) });
  const load = useLoad(() => get('/api/admin/warnings/', { user_id: p.user_id, quota_id: p.quota_id, webhook_state: p.webhook_state,
    since: p.since, until: p.until, page, page_size: PAGE }), [p.user_id, p.quota_id, p.webhook_state, p.since, p.until, page]);
  const filtered = ['user_id', 'quota_id', 'webhook_state', 'since', 'until'].some((k) => p[k]);
  const d = (k) => (e) => setDraft({ ...draft, [k]: e.currentTarget.value });
  function apply(e) {
    e.preventDefault();
    setParams(route, { quota_id: draft.quota_id.trim(), since: localInputToIso(draft.since), until: localInputToIso(draft.until), page: '' });
  }
  return (
    <section>
      <PageHead title="Warnings" sub={`Warning thresholds quotas reached (their warn_at), newest first, and the webhook sent for each. Times in ${zoneName()}.`} />
      <form class="filters" role="search" aria-label="Filter warnings" onSubmit={apply}>
        <label>User <select value={p.user_id || ''} onChange={(e) => setParams(route, { user_id: e.currentTarget.value, page: '' })}>
          <option value="">all users</option>
          {(users?.list || []).map((u) => <option key={u.id} value={String(u.id)}>{u.email}</option>)}</select></label>
        <label>Quota <input class="short" inputMode="numeric" value={draft.quota_id} placeholder="id" onInput={d('quota_id')} /></label>
        <label>Webhook <select value={p.webhook_state || ''} onChange={(e) => setParams(route, { webhook_state: e.currentTarget.value, page: '' })}>
          <option value="">any state</option>
          {Object.entries(STATES).map(([k, [, label]]) => <option key={k} value={k}>{label}</option>)}</select></label>
        <label>From <input type="datetime-local" value={draft.since} onInput={d('since')} /></label>
        <label>To <input type="datetime-local" value={draft.until} onInput={d('until')} /></label>
        <button type="submit" class="primary">Apply</button>
        {filtered && <button type="button" onClick={() => { setDraft({ quota_id: '', since: '', until: '' }); go('/warnings'); }}>Clear</button>}
      </form>
      <Loaded load={load} what="warnings">
        {(data) => data.count === 0 ? (
          <Empty>{filtered ? <p>No warning matches these filters. <a href="#/warnings">Show all warnings</a>.</p>
            : <><p>No quota has reached a warning threshold yet.</p>
              <p>Each quota warns at the percentages of its limits set in “Warn at” (<a href="#/quotas">Quotas</a>); with
                <code>warning_webhook_url</code> set, each warning is also posted there.</p></>}</Empty>
        ) : (
          <>
            <Table caption="Warnings" rows={data.results} rowKey={(w) => w.id} columns={[
              { key: 'raised_at', label: 'Reached', render: (w) => <Time iso={w.raised_at} /> },
              { key: 'user', label: 'User', render: (w) => name(users, w.user_id, 'email') },
              { key: 'quota', label: 'Quota', render: (w) => <a href={`#/quotas?user_id=${w.user_id}`}>#{w.quota_id}</a> },
              { key: 'threshold', label: 'Threshold', num: true, render: (w) => <Badge kind={w.threshold >= 90 ? 'bad' : 'warn'}>{w.threshold}%</Badge> },
              { key: 'used', label: 'Used then', render: (w) => <Used w={w} /> },
              { key: 'period', label: 'Period from', render: (w) => <Time iso={w.period_start} short /> },
              { key: 'webhook', label: 'Webhook', render: (w) => <Delivery w={w} /> },
            ]} />
            <Pager page={page} pageSize={PAGE} count={data.count} onPage={(n) => setParams(route, { page: n })} />
          </>
        )}
      </Loaded>
    </section>
  );
}
