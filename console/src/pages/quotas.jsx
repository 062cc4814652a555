// Quotas: one API key each, with limits and usage. Creating one (or
// resetting its key) shows the key once, with a copy button.
import { useState } from 'preact/hooks';
import { get, post, patch, del } from '../api.js';
import { useLoad, Loaded, PageHead, Table, Pager, Time, Badge, Dialog, Confirm, KeyReveal, Money,
  useForm, TextField, SelectField, CheckField, FormMessage, Empty } from '../ui.jsx';
import { setParams } from '../router.js';
import { useLookup, name } from '../lookups.js';
import { perMille, pctText, int } from '../format.js';

const PAGE = 50;
const PERIODS = ['month', 'week', 'day', 'none'];
const INT_LIMITS = [['token_limit', 'Tokens per period'], ['request_limit', 'Requests per period'],
  ['rpm', 'Requests per minute'], ['tpm', 'Tokens per minute'], ['max_concurrency', 'Requests at once']];

/** One limit against its use: "used / limit" and a bar (per-mille from integers). */
export function UsageBar({ label, used, limit, isMoney }) {
  const pm = perMille(used, limit, isMoney);
  const show = (v) => (isMoney ? <Money value={v} /> : int(v));
  return (
    <div class={'usage' + (pm !== null && pm >= 1000 ? ' full' : pm !== null && pm >= 800 ? ' high' : '')}>
      <div class="usage-text"><span>{label}</span>
        <span class="num">{show(used)} / {limit === null || limit === undefined ? <span class="muted">no limit</span> : show(limit)}
          {pm !== null && <span class="muted"> · {pctText(Math.min(pm, 9999))}</span>}</span></div>
      {pm !== null && <progress max="1000" value={Math.min(pm, 1000)} aria-label={label + ' used'} />}
    </div>
  );
}

/** Limits from the form: empty = left out (create: the group's default) or null (edit: no limit).
 *  Integers that do not parse are sent as typed, so the API names the field. */
function limitsBody(v, emptyAs) {
  const body = {};
  const put = (k, val) => {
    if (val === '' || val === undefined) { if (emptyAs !== undefined) body[k] = emptyAs; return; }
    body[k] = val;
  };
  if (v.period) body.period = v.period;
  put('cost_limit', v.cost_limit.trim());
  for (const [k] of INT_LIMITS) {
    const t = (v[k] || '').trim();
    put(k, /^\d+$/.test(t) ? Number(t) : t);
  }
  const w = (v.warn_at || '').trim();
  if (w === '') body.warn_at = [];
  else {
    const parts = w.split(/[\s,]+/).filter(Boolean);
    body.warn_at = parts.every((x) => /^\d+$/.test(x)) ? parts.map(Number) : w;
  }
  body.auto_renew = !!v.auto_renew;
  return body;
}

function LimitFields({ form, defaults }) {
  const hint = (k) => (defaults ? `Group default: ${defaults[k] === null || defaults[k] === undefined ? 'no limit' : defaults[k]}` : 'Empty = no limit');
  return (
    <>
      <div class="form-grid">
        <SelectField form={form} name="period" label="Period" hint={defaults ? `Group default: ${defaults.period}` : undefined}
          options={[...(defaults ? [{ value: '', label: 'group default' }] : []), ...PERIODS.map((p) => ({ value: p, label: p }))]} />
        <TextField form={form} name="cost_limit" label="Cost limit per period" inputMode="decimal" hint={hint('cost_limit')} />
        {INT_LIMITS.map(([k, label]) => <TextField key={k} form={form} name={k} label={label} inputMode="numeric" hint={hint(k)} />)}
        <TextField form={form} name="warn_at" label="Warn at (% of a limit)" hint="e.g. 80, 95" />
      </div>
      <CheckField form={form} name="auto_renew" label="Renew every period" />
    </>
  );
}

/** Give a user access: a quota in a group; ends with its key on screen. */
export function GrantForm({ user, onDone, skipLabel = 'Cancel' }) {
  const groups = useLookup('groups');
  const form = useForm({ group_id: '', period: '', cost_limit: '', token_limit: '', request_limit: '', rpm: '', tpm: '',
    max_concurrency: '', warn_at: '80, 95', auto_renew: true });
  const [created, setCreated] = useState(null);
  if (groups === null) return <p class="state loading">Loading groups…</p>;
  if (created) {
    return (
      <>
        <p class="notice" role="status">Quota #{created.id} created for <strong>{user.email}</strong>.</p>
        <KeyReveal apiKey={created.api_key} what={user.email} />
        <div class="actions"><button type="button" class="primary" onClick={onDone}>Done</button></div>
      </>
    );
  }
  if (groups.list.length === 0) {
    return (<><p>There is no model group yet: a quota gives access to one group’s models.{' '}
      <a href="#/groups">Create a group</a> first.</p>
      <div class="actions"><button type="button" onClick={onDone}>{skipLabel}</button></div></>);
  }
  const group = groups.byId.get(Number(form.values.group_id));
  async function submit(e) {
    e.preventDefault();
    const q = await form.submit((v) => {
      if (!v.group_id) throw Object.assign(new Error('Choose a group.'), { fields: { group_id: 'Choose a group.' } });
      const body = { user_id: user.id, group_id: Number(v.group_id), ...limitsBody(v) };
      if (!v.period) delete body.period;
      return post('/api/admin/quotas/', body);
    });
    if (q) setCreated(q);
  }
  return (
    <form onSubmit={submit} noValidate>
      <SelectField form={form} name="group_id" label="Model group" wide
        options={[{ value: '', label: 'Choose a group…' }, ...groups.list.map((g) => ({ value: g.id, label: g.name }))]} />
      <fieldset>
        <legend>Limits</legend>
        <p class="muted small">Leave a limit empty to use the group’s default.</p>
        <LimitFields form={form} defaults={group ? group.default_quota : {}} />
      </fieldset>
      <FormMessage form={form} />
      <div class="actions">
        <button type="button" onClick={onDone}>{skipLabel}</button>
        <button type="submit" class="primary" disabled={form.busy}>Create quota and key</button>
      </div>
    </form>
  );
}

export function Quotas({ route }) {
  const p = route.params;
  const page = Number(p.page) || 1;
  const users = useLookup('users');
  const groups = useLookup('groups');
  const [dialog, setDialog] = useState(null);
  const load = useLoad(() => get('/api/admin/quotas/', { user_id: p.user_id, group_id: p.group_id, page, page_size: PAGE }),
    [p.user_id, p.group_id, page]);
  const close = (changed) => { setDialog(null); if (changed) load.reload(); };

  return (
    <section>
      <PageHead title="Quotas" sub="Each quota is one API key with its limits, in one model group.">
        <button type="button" class="primary" onClick={() => setDialog({ kind: 'create' })}>New quota</button>
      </PageHead>
      <div class="filters">
        <label>User <select value={p.user_id || ''} onChange={(e) => setParams(route, { user_id: e.currentTarget.value, page: '' })}>
          <option value="">all users</option>
          {(users?.list || []).map((u) => <option key={u.id} value={String(u.id)}>{u.email}</option>)}</select></label>
        <label>Group <select value={p.group_id || ''} onChange={(e) => setParams(route, { group_id: e.currentTarget.value, page: '' })}>
          <option value="">all groups</option>
          {(groups?.list || []).map((g) => <option key={g.id} value={String(g.id)}>{g.name}</option>)}</select></label>
      </div>
      <Loaded load={load} what="quotas">
        {(data) => data.count === 0 ? (
          <Empty>{p.user_id || p.group_id ? <p>No quota matches these filters.</p>
            : <p>No quotas yet. A quota gives a user a key for one group’s models.{' '}
              <button type="button" class="link" onClick={() => setDialog({ kind: 'create' })}>Create one</button>.</p>}</Empty>
        ) : (
          <>
            <Table caption="Quotas" rows={data.results} columns={[
              { key: 'user', label: 'User', render: (q) => <><span>{name(users, q.user_id, 'email')}</span><br /><span class="muted mono">{q.key_prefix}…</span></> },
              { key: 'group', label: 'Group', render: (q) => name(groups, q.group_id) },
              { key: 'usage', label: 'Use this period', render: (q) => (
                <div class="usages">
                  <UsageBar label="Cost" used={q.usage.cost_used} limit={q.cost_limit} isMoney />
                  {q.token_limit !== null && <UsageBar label="Tokens" used={q.usage.tokens_used} limit={q.token_limit} />}
                  {q.request_limit !== null && <UsageBar label="Requests" used={q.usage.requests_used} limit={q.request_limit} />}
                </div>) },
              { key: 'period', label: 'Period', render: (q) => <>{q.period}{q.period !== 'none' && <><br /><span class="muted">ends <Time iso={q.usage.period_end} rel /></span></>}</> },
              { key: 'warn', label: 'Warnings', render: (q) => q.usage.warnings.length
                ? <a href={`#/warnings?quota_id=${q.id}`} class="access" aria-label={`Warnings of quota ${q.id}`}>{q.usage.warnings.map((w) => <Badge kind="warn" key={w}>{w}% reached</Badge>)}</a>
                : <span class="muted">{q.warn_at.length ? 'at ' + q.warn_at.map((w) => w + '%').join(', ') : 'none'}</span> },
              { key: 'status', label: 'Status', render: (q) => q.is_active ? <Badge kind="ok">active</Badge> : <Badge kind="off">revoked</Badge> },
              { key: 'actions', label: 'Actions', render: (q) => q.is_active && (
                <div class="row-actions">
                  <button type="button" onClick={() => setDialog({ kind: 'edit', quota: q })}>Limits</button>
                  <button type="button" onClick={() => setDialog({ kind: 'reset', quota: q })}>Reset key</button>
                  <button type="button" class="danger" onClick={() => setDialog({ kind: 'delete', quota: q })}>Revoke</button>
                </div>) },
            ]} />
            <Pager page={page} pageSize={PAGE} count={data.count} onPage={(n) => setParams(route, { page: n })} />
          </>
        )}
      </Loaded>
      {dialog?.kind === 'create' && <CreateQuota users={users} preset={p.user_id} onClose={close} />}
      {dialog?.kind === 'edit' && <EditQuota quota={dialog.quota} who={name(users, dialog.quota.user_id, 'email')} onClose={close} />}
      {dialog?.kind === 'reset' && <ResetKey quota={dialog.quota} who={name(users, dialog.quota.user_id, 'email')} onClose={close} />}
      {dialog?.kind === 'delete' && (
        <Confirm title="Revoke quota" action="Revoke" danger onConfirm={() => del(`/api/admin/quotas/${dialog.quota.id}/`)} onClose={close}>
          <p>Revoke quota #{dialog.quota.id} of <strong>{name(users, dialog.quota.user_id, 'email')}</strong>? Its key
            ({dialog.quota.key_prefix}…) stops working at once. Its records stay for audit.</p>
        </Confirm>)}
    </section>
  );
}

function CreateQuota({ users, preset, onClose }) {
  const [userId, setUserId] = useState(preset || '');
  const user = users && users.byId.get(Number(userId));
  return (
    <Dialog title="New quota" onClose={() => onClose(true)} wide>
      <div class="field wide">
        <label for="quota-user">User</label>
        <select id="quota-user" value={userId} onChange={(e) => setUserId(e.currentTarget.value)}>
          <option value="">Choose a user…</option>
          {(users?.list || []).filter((u) => u.is_active).map((u) => <option key={u.id} value={String(u.id)}>{u.email}</option>)}
        </select>
        {!user && <small class="hint">No such user yet? <a href="#/users">Create the user</a> first.</small>}
      </div>
      {user ? <GrantForm key={user.id} user={user} onDone={() => onClose(true)} />
        : <div class="actions"><button type="button" onClick={() => onClose(false)}>Cancel</button></div>}
    </Dialog>
  );
}

function EditQuota({ quota, who, onClose }) {
  const s = (v) => (v === null || v === undefined ? '' : String(v));
  const form = useForm({ period: quota.period, cost_limit: s(quota.cost_limit), token_limit: s(quota.token_limit),
    request_limit: s(quota.request_limit), rpm: s(quota.rpm), tpm: s(quota.tpm), max_concurrency: s(quota.max_concurrency),
    warn_at: quota.warn_at.join(', '), auto_renew: quota.auto_renew });
  async function submit(e) {
    e.preventDefault();
    if (await form.submit((v) => patch(`/api/admin/quotas/${quota.id}/`, limitsBody(v, null)))) onClose(true);
  }
  return (
    <Dialog title={`Limits of quota #${quota.id} (${who})`} onClose={() => onClose(false)} wide>
      <form onSubmit={submit} noValidate>
        <LimitFields form={form} />
        <FormMessage form={form} />
        <div class="actions">
          <button type="button" onClick={() => onClose(false)}>Cancel</button>
          <button type="submit" class="primary" disabled={form.busy}>Save limits</button>
        </div>
      </form>
    </Dialog>
  );
}

/** Reset a quota's key: ask, then show the new one once. path: the admin's
 *  endpoint by default; a user resetting their own passes theirs (own). */
export function ResetKey({ quota, who, onClose, own, path = `/api/admin/quotas/${quota.id}/reset_api_key/` }) {
  const [key, setKey] = useState(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  async function reset() {
    setBusy(true); setError(null);
    try { setKey((await post(path)).api_key); }
    catch (e) { setError(e.message); setBusy(false); }
  }
  if (key) {
    return (
      <Dialog title="New key" onClose={() => onClose(true)} wide>
        <KeyReveal apiKey={key} what={who} own={own} />
        <div class="actions"><button type="button" class="primary" onClick={() => onClose(true)}>Done</button></div>
      </Dialog>
    );
  }
  return (
    <Dialog title="Reset key" onClose={() => onClose(false)}>
      {own ? <p>Get a new key for your quota #{quota.id}? <strong>The current key ({quota.key_prefix}…) stops working at once</strong>:
        every program that uses it fails until you give it the new one. The new key is shown once, on the next screen.</p>
        : <p>Give quota #{quota.id} of <strong>{who}</strong> a new key? The old key ({quota.key_prefix}…) stops working at once.</p>}
      {error && <p class="form-error" role="alert">{error}</p>}
      <div class="actions">
        <button type="button" onClick={() => onClose(false)}>Cancel</button>
        <button type="button" class="danger" disabled={busy} onClick={reset}>Reset key</button>
      </div>
    </Dialog>
  );
}
