// Overview: the live figures (refreshed every few seconds), what was spent
// and used over today / 7 / 30 days, per day (cost stacked by model, from one
// group_by=day,model answer), per hour, per model, user and provider, and the
// quotas close to a limit. Days and hours follow the
// browser's zone when the gateway counts in zones (src/stats.js), else they
// are UTC days.
import { useEffect, useRef, useState } from 'preact/hooks';
import { get, all } from '../api.js';
import { useLoad, Loaded, PageHead, Money, Table, Empty } from '../ui.jsx';
import { BarChart } from '../chart.jsx';
import { go, setParams } from '../router.js';
import { useLookup, name } from '../lookups.js';
import { statsMode, stats, optional, bucket } from '../stats.js';
import { int, errorRate, toNano, fromNano, money, perMille, pctText, lastDays, lastHours, dayStart, dayEnd,
  isoUtc, duration, localTime } from '../format.js';

const S = '/api/admin/statistics/';
const RANGES = [['1', 'Today'], ['7', '7 days'], ['30', '30 days']];
const LIVE_EVERY_MS = 2000;
// GET /api/admin/status/ upstream_errors kinds, in words
const KINDS = { connect: 'could not connect', timeout: 'timed out', status: 'error answers', no_response: 'no answer',
  cut: 'cut off', other: 'other' };

function byCostDesc(a, b) {
  const x = toNano(a.cost) || 0n, y = toNano(b.cost) || 0n;
  return x > y ? -1 : x < y ? 1 : b.requests - a.requests;
}

function dayLabel(d) {
  const [, m, dd] = d.split('-');
  return `${Number(m)}/${Number(dd)}`;
}

const ZERO = { requests: 0, errors: 0, cost: '0', prompt_tokens: 0, completion_tokens: 0, cached_tokens: 0 };
// The cost chart stacks this many models; with more, the rest are summed as "other".
const STACKED = 5;

/** The cost per day stacked by model, from a group_by=day,model answer:
 *  {series: [{label, values (bar heights), costs (exact, nano)}], total(i)}
 *  for the day keys; the STACKED costliest models of the range, each day's
 *  rest summed (in nano-units) as "other". */
function costByModel(dayModel, keys) {
  const perModel = new Map(); // model_id -> {name, total nano}
  for (const e of dayModel.series) {
    const m = perModel.get(e.model_id) || { id: e.model_id, name: e.name, total: 0n };
    m.total += toNano(e.cost) || 0n;
    perModel.set(e.model_id, m);
  }
  const ranked = [...perModel.values()].filter((m) => m.total > 0n)
    .sort((a, b) => (a.total > b.total ? -1 : a.total < b.total ? 1 : a.id - b.id));
  const top = ranked.length <= STACKED + 1 ? ranked : ranked.slice(0, STACKED);
  const rest = ranked.length > top.length;
  const col = new Map(keys.map((d, i) => [d, i]));
  const costs = [...top.map(() => keys.map(() => 0n)), ...(rest ? [keys.map(() => 0n)] : [])];
  const slot = new Map(top.map((m, k) => [m.id, k]));
  for (const e of dayModel.series) {
    const i = col.get(bucket(e, 'day'));
    if (i === undefined) continue;
    const k = slot.has(e.model_id) ? slot.get(e.model_id) : rest ? top.length : -1;
    if (k >= 0) costs[k][i] += toNano(e.cost) || 0n;
  }
  const labels = [...top.map((m) => (m.name === null ? `model #${m.id}` : m.name)), ...(rest ? ['other'] : [])];
  return labels.map((label, k) => ({
    label, costs: costs[k],
    values: costs[k].map((n) => Number(fromNano(n))), // bar heights only
    ...(rest && k === top.length ? { colorVar: '--chart-6' } : {}),
  }));
}

/** The gateway's live figures (GET /api/admin/status/), polled while the page is open. */
function Live() {
  const [state, setState] = useState({ data: null, error: null, at: null });
  const timer = useRef(null);
  useEffect(() => {
    let live = true;
    async function poll() {
      if (document.visibilityState !== 'hidden') {
        try {
          const data = await get('/api/admin/status/');
          if (live) setState({ data, error: null, at: new Date() });
        } catch (error) {
          if (live) setState((s) => ({ ...s, error }));
        }
      }
      if (live) timer.current = setTimeout(poll, LIVE_EVERY_MS);
    }
    poll();
    return () => { live = false; clearTimeout(timer.current); };
  }, []);
  const { data, error } = state;
  if (!data) {
    return (
      <div class="card live">
        <h2>Live</h2>
        {error ? <p class="muted">Live figures are not available: {error.message}</p> : <p class="muted">Reading the live figures…</p>}
      </div>
    );
  }
  const r = data.requests, b = data.billing;
  const upTotal = Object.values(data.upstream_errors).reduce((x, y) => x + y, 0);
  const upKinds = Object.entries(data.upstream_errors).filter(([, n]) => n > 0);
  const lag = b.lag_events === 0 ? 'none' : `${int(b.lag_events)} events` + (b.lag_s === null ? '' : ` · ${b.lag_s} s`);
  return (
    <div class="card live" aria-labelledby="live-h">
      <header class="card-head">
        <h2 id="live-h">Live <span class={'dot' + (error ? ' stale' : '')} aria-hidden="true" /></h2>
        <p class="muted small">{error ? `Not refreshed: ${error.message}` : `Every ${LIVE_EVERY_MS / 1000} s · last at ${state.at.toLocaleTimeString()}`}</p>
      </header>
      <dl class="figures">
        <div><dt>Requests/s</dt><dd>{r.per_s === null ? '—' : r.per_s}<small>last {r.window_s >= 60 ? 'minute' : `${r.window_s} s`}</small></dd></div>
        <div><dt>In flight</dt><dd>{int(r.in_flight)}<small>{int(r.total)} since start</small></dd></div>
        <div class={b.alive ? '' : 'bad'}><dt>Billing</dt><dd>{b.alive ? 'alive' : 'down'}<small>lag {lag}</small></dd></div>
        <div><dt>Ring depth</dt><dd>{int(data.ring.depth)}<small>{int(data.ring.pending)} waiting in workers</small></dd></div>
        <div class={upTotal > 0 ? 'warn' : ''}><dt>Upstream errors</dt><dd>{int(upTotal)}
          <small>{upKinds.length ? upKinds.map(([k, n]) => `${int(n)} ${KINDS[k] || k}`).join(' · ') : 'none since start'}</small></dd></div>
        <div><dt>Workers</dt><dd>{int(data.workers)}<small>{data.worker_restarts ? `${int(data.worker_restarts)} restarted` : 'no restarts'}</small></dd></div>
        <div><dt>Up</dt><dd><span title={data.started_at ? 'since ' + localTime(data.started_at) : undefined}>{duration(data.uptime_s)}</span><small>version {data.version}</small></dd></div>
      </dl>
    </div>
  );
}

export function Overview({ route }) {
  const range = RANGES.some(([v]) => v === route.params.range) ? route.params.range : '7';
  const load = useLoad(async () => {
    const mode = await statsMode(S);
    const days = lastDays(Number(range), mode.zoned);
    const hours = lastHours(24);
    const since = days.since;
    const [byDay, byDayModel, byModel, byUser, byProvider, byHour, quotas] = await Promise.all([
      stats(S, mode, { since, group_by: 'day' }),
      optional(stats(S, mode, { since, group_by: 'day,model' })),
      stats(S, mode, { since, group_by: 'model' }),
      stats(S, mode, { since, group_by: 'user', limit: 8 }),
      mode.zoned ? optional(stats(S, mode, { since, group_by: 'provider' })) : null,
      mode.zoned ? optional(stats(S, mode, { since: isoUtc(hours[0]), group_by: 'hour' })) : null,
      all('/api/admin/quotas/'),
    ]);
    return { mode, days, hours, since, byDay, byDayModel, byModel, byUser, byProvider, byHour, quotas };
  }, [range]);
  const users = useLookup('users');
  const groups = useLookup('groups');
  const providers = useLookup('providers');
  const zoneText = load.data ? (load.data.mode.zoned ? `Days in ${load.data.mode.zone}.` : 'Days are UTC days.') : '';

  return (
    <section>
      <PageHead title="Overview" sub={`Spend and use across all quotas. ${zoneText}`}>
        <div class="segmented" role="group" aria-label="Time range">
          {RANGES.map(([v, label]) => (
            <button type="button" key={v} aria-pressed={v === range ? 'true' : 'false'}
              onClick={() => setParams(route, { range: v })}>{label}</button>
          ))}
        </div>
      </PageHead>
      <Live />
      <Loaded load={load} what="statistics">
        {({ mode, days, hours, since, byDay, byDayModel, byModel, byUser, byProvider, byHour, quotas }) => {
          const t = byDay.totals;
          const perDay = new Map(byDay.series.map((e) => [bucket(e, 'day'), e]));
          const rows = days.keys.map((d) => ({ ...(perDay.get(d) || ZERO), key: d }));
          const toRequests = (i) => go('/requests', { since: dayStart(rows[i].key, mode.zoned), until: dayEnd(rows[i].key, mode.zoned) });
          const stack = byDayModel ? costByModel(byDayModel, days.keys) : null;
          const perHour = byHour ? new Map(byHour.series.map((e) => [Date.parse(bucket(e, 'hour')), e])) : null;
          const hourRows = perHour ? hours.map((h) => ({ ...(perHour.get(h.getTime()) || ZERO), at: h })) : null;
          const hourLabel = (h) => `${String(h.getHours()).padStart(2, '0')}:00`;
          const near = quotas.map((q) => ({ q, pm: Math.max(
            perMille(q.usage.cost_used, q.cost_limit, true) ?? -1,
            perMille(q.usage.tokens_used, q.token_limit) ?? -1,
            perMille(q.usage.requests_used, q.request_limit) ?? -1) }))
            .filter((x) => x.q.is_active && (x.q.usage.warnings.length > 0 || x.pm >= 800))
            .sort((a, b) => b.pm - a.pm);
          return (
            <>
              <div class="cards">
                <div class="card stat"><h2>Cost</h2><p class="big"><Money value={t.cost} /></p>
                  <p class="muted">{range === '1' ? 'today' : `last ${range} days`}</p></div>
                <div class="card stat"><h2>Tokens</h2><p class="big">{int(t.prompt_tokens + t.completion_tokens)}</p>
                  <p class="muted">{int(t.prompt_tokens)} in · {int(t.completion_tokens)} out · {int(t.cached_tokens)} cached</p></div>
                <div class="card stat"><h2>Requests</h2><p class="big">{int(t.requests)}</p>
                  <p class="muted">{int(t.requests - t.errors)} answered</p></div>
                <div class={'card stat' + (t.errors > 0 ? ' warn' : '')}><h2>Error rate</h2><p class="big">{errorRate(t.errors, t.requests)}</p>
                  <p class="muted">{int(t.errors)} {t.errors === 1 ? 'error' : 'errors'}</p></div>
              </div>
              {t.requests === 0 && (
                <Empty>
                  <p>No requests in this range yet.</p>
                  <p>To get started: add a <a href="#/providers">provider</a>, give its <a href="#/models">models</a> prices,
                    put them in a <a href="#/groups">group</a>, and give a user a <a href="#/quotas">quota</a>; its key calls <code>/v1</code>.</p>
                </Empty>
              )}
              <div class="grid2">
                <div class="card">
                  {stack && stack.length > 0 ? <>
                    <h2>Cost per day <span class="muted small">by model</span></h2>
                    <BarChart title="Cost per day by model" stacked legend labels={rows.map((r) => dayLabel(r.key))}
                      series={stack.map(({ label, values, colorVar }) => ({ label, values, colorVar }))}
                      readout={(i) => `${dayLabel(rows[i].key)}: ${money(rows[i].cost)} in all` + stack
                        .filter((x) => x.costs[i] > 0n).map((x) => ` · ${x.label} ${money(fromNano(x.costs[i]))}`).join('')}
                      onPick={toRequests} hint="Point at a day for its cost by model; click it for its requests." />
                  </> : <>
                    <h2>Cost per day</h2>
                    <BarChart title="Cost per day" labels={rows.map((r) => dayLabel(r.key))}
                      series={[{ label: 'cost', values: rows.map((r) => Number(r.cost)) /* bar heights only */ }]}
                      format={(i) => money(rows[i].cost)} onPick={toRequests}
                      hint="Point at a day for its cost; click it for its requests." />
                  </>}
                </div>
                <div class="card">
                  <h2>Requests per day</h2>
                  <BarChart title="Requests per day" stacked counts labels={rows.map((r) => dayLabel(r.key))}
                    series={[{ label: 'answered', values: rows.map((r) => r.requests - r.errors) },
                      { label: 'errors', values: rows.map((r) => r.errors), colorVar: '--error' }]}
                    format={(i, k) => int(k === 0 ? rows[i].requests - rows[i].errors : rows[i].errors)} onPick={toRequests}
                    hint="Click a day for its requests." />
                </div>
              </div>
              {hourRows && (
                <div class="card">
                  <h2>Requests per hour <span class="muted small">last 24 hours</span></h2>
                  <BarChart title="Requests per hour" stacked counts height={180} labels={hourRows.map((r) => hourLabel(r.at))}
                    series={[{ label: 'answered', values: hourRows.map((r) => r.requests - r.errors) },
                      { label: 'errors', values: hourRows.map((r) => r.errors), colorVar: '--error' }]}
                    format={(i, k) => int(k === 0 ? hourRows[i].requests - hourRows[i].errors : hourRows[i].errors)}
                    onPick={(i) => go('/requests', { since: isoUtc(hourRows[i].at), until: isoUtc(new Date(hourRows[i].at.getTime() + 3600000)) })}
                    hint="Click an hour for its requests." />
                </div>
              )}
              <div class="grid2">
                <div class="card">
                  <h2>Top models</h2>
                  {byModel.series.length === 0 ? <p class="muted">No requests yet.</p> : (
                    <Table caption="Top models" rowKey={(r) => String(r.model_id) + String(r.key)} rows={[...byModel.series].sort(byCostDesc).slice(0, 8)}
                      onRow={(r) => r.key !== null && go('/requests', { model: r.key, since })}
                      columns={[
                        { key: 'key', label: 'Model', render: (r) => r.key === null ? <span class="muted">unknown model</span> : r.key },
                        { key: 'requests', label: 'Requests', num: true, render: (r) => int(r.requests) },
                        { key: 'tokens', label: 'Tokens', num: true, render: (r) => int(r.prompt_tokens + r.completion_tokens) },
                        { key: 'cost', label: 'Cost', num: true, render: (r) => <Money value={r.cost} /> },
                      ]} />)}
                </div>
                <div class="card">
                  <header class="card-head"><h2>Top users</h2>{byUser.top && byUser.top.of > byUser.series.length && (
                    <span class="small muted">the {byUser.series.length} costliest of {int(byUser.top.of)}</span>)}</header>
                  {byUser.series.length === 0 ? <p class="muted">No requests yet.</p> : (
                    <Table caption="Top users" rowKey={(r) => String(bucket(r, 'user'))} rows={[...byUser.series].sort(byCostDesc).slice(0, 8)}
                      onRow={(r) => go('/requests', { user_id: bucket(r, 'user'), since })}
                      columns={[
                        { key: 'key', label: 'User', render: (r) => name(users, bucket(r, 'user'), 'email') },
                        { key: 'requests', label: 'Requests', num: true, render: (r) => int(r.requests) },
                        { key: 'errors', label: 'Errors', num: true, render: (r) => int(r.errors) },
                        { key: 'cost', label: 'Cost', num: true, render: (r) => <Money value={r.cost} /> },
                      ]} />)}
                </div>
              </div>
              <div class={byProvider ? 'grid2' : ''}>
                {byProvider && (
                  <div class="card">
                    <h2>Providers</h2>
                    {byProvider.series.length === 0 ? <p class="muted">No requests yet.</p> : (
                      <Table caption="Providers" rowKey={(r) => String(bucket(r, 'provider'))} rows={[...byProvider.series].sort(byCostDesc)}
                        columns={[
                          { key: 'key', label: 'Provider', render: (r) => bucket(r, 'provider') ? name(providers, bucket(r, 'provider')) : <span class="muted">none (refused before a provider)</span> },
                          { key: 'requests', label: 'Requests', num: true, render: (r) => int(r.requests) },
                          { key: 'errors', label: 'Error rate', num: true, render: (r) => <span class={r.errors > 0 ? 'bad' : ''}>{errorRate(r.errors, r.requests)}</span> },
                          { key: 'cost', label: 'Cost', num: true, render: (r) => <Money value={r.cost} /> },
                        ]} />)}
                  </div>
                )}
                <div class="card">
                  <header class="card-head"><h2>Quotas near a limit</h2><a href="#/warnings" class="small">All warnings →</a></header>
                  {near.length === 0 ? <p class="muted">No active quota has reached a warning threshold or 80% of a limit.</p> : (
                    <Table caption="Quotas near a limit" rowKey={(x) => x.q.id} rows={near.slice(0, 10)}
                      onRow={(x) => go('/quotas', { user_id: x.q.user_id })}
                      columns={[
                        { key: 'user', label: 'User', render: (x) => name(users, x.q.user_id, 'email') },
                        { key: 'group', label: 'Group', render: (x) => name(groups, x.q.group_id) },
                        { key: 'cost', label: 'Cost / limit', num: true, render: (x) => <><Money value={x.q.usage.cost_used} /> / <Money value={x.q.cost_limit} none="no limit" /></> },
                        { key: 'pm', label: 'Use', num: true, render: (x) => x.pm >= 0 ? pctText(x.pm) : '—' },
                        { key: 'w', label: 'Warned at', render: (x) => x.q.usage.warnings.length ? x.q.usage.warnings.map((w) => w + '%').join(', ') : '—' },
                      ]} />)}
                </div>
              </div>
            </>
          );
        }}
      </Loaded>
    </section>
  );
}
