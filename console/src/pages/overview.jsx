// Overview: what was spent and used over today / 7 / 30 days, per day, per
// model and per user, and the quotas close to a limit. Days are UTC days:
// the gateway's statistics count in UTC.
import { get, all } from '../api.js';
import { useLoad, Loaded, PageHead, Money, Table, Empty } from '../ui.jsx';
import { BarChart } from '../chart.jsx';
import { go, setParams } from '../router.js';
import { useLookup, name } from '../lookups.js';
import { int, errorRate, toNano, money, perMille, pctText, utcDay } from '../format.js';

const RANGES = [['1', 'Today'], ['7', '7 days'], ['30', '30 days']];
const DAY_MS = 86400000;

function days(n) {
  const today = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate());
  const out = [];
  for (let i = n - 1; i >= 0; i--) out.push(utcDay(new Date(today - i * DAY_MS)));
  return out;
}

function byCostDesc(a, b) {
  const x = toNano(a.cost) || 0n, y = toNano(b.cost) || 0n;
  return x > y ? -1 : x < y ? 1 : b.requests - a.requests;
}

function dayLabel(d) {
  const [, m, dd] = d.split('-');
  return `${Number(m)}/${Number(dd)}`;
}

export function Overview({ route }) {
  const range = RANGES.some(([v]) => v === route.params.range) ? route.params.range : '7';
  const list = days(Number(range));
  const since = list[0] + 'T00:00:00Z';
  const load = useLoad(async () => {
    const [byDay, byModel, byUser, quotas] = await Promise.all([
      get('/api/admin/statistics/', { since, group_by: 'day' }),
      get('/api/admin/statistics/', { since, group_by: 'model' }),
      get('/api/admin/statistics/', { since, group_by: 'user' }),
      all('/api/admin/quotas/'),
    ]);
    return { byDay, byModel, byUser, quotas };
  }, [since]);
  const users = useLookup('users');
  const groups = useLookup('groups');

  return (
    <section>
      <PageHead title="Overview" sub="Spend and use across all quotas. Days are UTC days.">
        <div class="segmented" role="group" aria-label="Time range">
          {RANGES.map(([v, label]) => (
            <button type="button" key={v} aria-pressed={v === range ? 'true' : 'false'}
              onClick={() => setParams(route, { range: v })}>{label}</button>
          ))}
        </div>
      </PageHead>
      <Loaded load={load} what="statistics">
        {({ byDay, byModel, byUser, quotas }) => {
          const t = byDay.totals;
          const perDay = new Map(byDay.series.map((e) => [e.key, e]));
          const rows = list.map((d) => perDay.get(d) || { key: d, requests: 0, errors: 0, cost: '0', prompt_tokens: 0, completion_tokens: 0 });
          const toRequests = (i) => go('/requests', { since: rows[i].key + 'T00:00:00Z',
            until: utcDay(new Date(Date.parse(rows[i].key) + DAY_MS)) + 'T00:00:00Z' });
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
                  <h2>Cost per day</h2>
                  <BarChart title="Cost per day" labels={rows.map((r) => dayLabel(r.key))}
                    series={[{ label: 'cost', values: rows.map((r) => Number(r.cost)) /* bar heights only */ }]}
                    format={(i) => money(rows[i].cost)} onPick={toRequests}
                    hint="Point at a day for its cost; click it for its requests." />
                </div>
                <div class="card">
                  <h2>Requests per day</h2>
                  <BarChart title="Requests per day" stacked labels={rows.map((r) => dayLabel(r.key))}
                    series={[{ label: 'answered', values: rows.map((r) => r.requests - r.errors) },
                      { label: 'errors', values: rows.map((r) => r.errors), colorVar: '--error' }]}
                    format={(i, k) => int(k === 0 ? rows[i].requests - rows[i].errors : rows[i].errors)} onPick={toRequests}
                    hint="Click a day for its requests." />
                </div>
              </div>
              <div class="grid2">
                <div class="card">
                  <h2>Top models</h2>
                  {byModel.series.length === 0 ? <p class="muted">No requests yet.</p> : (
                    <Table caption="Top models" rowKey={(r) => String(r.key)} rows={[...byModel.series].sort(byCostDesc).slice(0, 8)}
                      onRow={(r) => r.key !== null && go('/requests', { model: r.key, since })}
                      columns={[
                        { key: 'key', label: 'Model', render: (r) => r.key === null ? <span class="muted">unknown model</span> : r.key },
                        { key: 'requests', label: 'Requests', num: true, render: (r) => int(r.requests) },
                        { key: 'tokens', label: 'Tokens', num: true, render: (r) => int(r.prompt_tokens + r.completion_tokens) },
                        { key: 'cost', label: 'Cost', num: true, render: (r) => <Money value={r.cost} /> },
                      ]} />)}
                </div>
                <div class="card">
                  <h2>Top users</h2>
                  {byUser.series.length === 0 ? <p class="muted">No requests yet.</p> : (
                    <Table caption="Top users" rowKey={(r) => String(r.key)} rows={[...byUser.series].sort(byCostDesc).slice(0, 8)}
                      onRow={(r) => go('/requests', { user_id: r.key, since })}
                      columns={[
                        { key: 'key', label: 'User', render: (r) => name(users, r.key, 'email') },
                        { key: 'requests', label: 'Requests', num: true, render: (r) => int(r.requests) },
                        { key: 'errors', label: 'Errors', num: true, render: (r) => int(r.errors) },
                        { key: 'cost', label: 'Cost', num: true, render: (r) => <Money value={r.cost} /> },
                      ]} />)}
                </div>
              </div>
              <div class="card">
                <h2>Quotas near a limit</h2>
                {near.length === 0 ? <p class="muted">No active quota has reached a warning threshold or 80% of a limit.</p> : (
                  <Table caption="Quotas near a limit" rowKey={(x) => x.q.id} rows={near.slice(0, 10)}
                    onRow={(x) => go('/quotas', { user_id: x.q.user_id })}
                    columns={[
                      { key: 'user', label: 'User', render: (x) => name(users, x.q.user_id, 'email') },
                      { key: 'group', label: 'Group', render: (x) => name(groups, x.q.group_id) },
                      { key: 'cost', label: 'Cost used / limit', num: true, render: (x) => <><Money value={x.q.usage.cost_used} /> / <Money value={x.q.cost_limit} none="no limit" /></> },
                      { key: 'pm', label: 'Highest use', num: true, render: (x) => x.pm >= 0 ? pctText(x.pm) : '—' },
                      { key: 'w', label: 'Warnings reached', render: (x) => x.q.usage.warnings.length ? x.q.usage.warnings.map((w) => w + '%').join(', ') : '—' },
                    ]} />)}
              </div>
            </>
          );
        }}
      </Loaded>
    </section>
  );
}
