// Model groups: a set of models and the default limits of quotas made in it.
import { useState } from 'preact/hooks';
import { get, post, patch, del } from '../api.js';
import { useLoad, Loaded, PageHead, Table, Pager, Dialog, Confirm, Money,
  useForm, TextField, SelectField, FormMessage, Empty } from '../ui.jsx';
import { setParams, go } from '../router.js';
import { useLookup, invalidate } from '../lookups.js';
import { int } from '../format.js';

const PAGE = 50;
const LIMITS = [['cost_limit', 'Cost limit per period', true], ['token_limit', 'Tokens per period'], ['request_limit', 'Requests per period'],
  ['rpm', 'Requests per minute'], ['tpm', 'Tokens per minute'], ['max_concurrency', 'Requests at once']];

function DefaultQuota({ q }) {
  const parts = [];
  if (q.cost_limit !== null) parts.push(<span key="c"><Money value={q.cost_limit} /> cost</span>);
  for (const [k, label] of LIMITS.slice(1)) if (q[k] !== null && q[k] !== undefined) parts.push(<span key={k}>{int(q[k])} {label.toLowerCase()}</span>);
  return (
    <span>per {q.period === 'none' ? 'lifetime' : q.period}: {parts.length ? parts.map((p, i) => <>{i ? ', ' : ''}{p}</>) : <span class="muted">no limits</span>}</span>
  );
}

export function Groups({ route }) {
  const page = Number(route.params.page) || 1;
  const models = useLookup('models');
  const [dialog, setDialog] = useState(null);
  const load = useLoad(() => get('/api/admin/groups/', { page, page_size: PAGE }), [page]);
  const close = (changed) => { setDialog(null); if (changed) { invalidate('groups'); load.reload(); } };

  return (
    <section>
      <PageHead title="Groups" sub="Which models a quota may use, and the limits new quotas start with.">
        <button type="button" class="primary" onClick={() => setDialog({ kind: 'create' })}>New group</button>
      </PageHead>
      <Loaded load={load} what="groups">
        {(data) => data.count === 0 ? (
          <Empty><p>No groups yet. A group lists the models its quotas may use.</p>
            <button type="button" class="primary" onClick={() => setDialog({ kind: 'create' })}>Create a group</button></Empty>
        ) : (
          <>
            <Table caption="Groups" rows={data.results} columns={[
              { key: 'name', label: 'Name' },
              { key: 'description', label: 'Description', render: (g) => g.description || <span class="muted">—</span> },
              { key: 'models', label: 'Models', render: (g) => g.model_ids.length === 0 ? <span class="muted">none</span>
                : <span class="mono">{g.model_ids.map((id) => models?.byId.get(id)?.name || `#${id}`).join(', ')}</span> },
              { key: 'default', label: 'Default limits', render: (g) => <DefaultQuota q={g.default_quota} /> },
              { key: 'actions', label: 'Actions', render: (g) => (
                <div class="row-actions">
                  <button type="button" onClick={() => setDialog({ kind: 'edit', group: g })}>Edit</button>
                  <button type="button" onClick={() => go('/quotas', { group_id: g.id })}>Quotas</button>
                  <button type="button" class="danger" onClick={() => setDialog({ kind: 'delete', group: g })}>Delete</button>
                </div>) },
            ]} />
            <Pager page={page} pageSize={PAGE} count={data.count} onPage={(n) => setParams(route, { page: n })} />
          </>
        )}
      </Loaded>
      {dialog?.kind === 'create' && <GroupForm models={models} onClose={close} />}
      {dialog?.kind === 'edit' && <GroupForm models={models} group={dialog.group} onClose={close} />}
      {dialog?.kind === 'delete' && (
        <Confirm title="Delete group" action="Delete" danger onConfirm={() => del(`/api/admin/groups/${dialog.group.id}/`)} onClose={close}>
          <p>Delete the group <strong>{dialog.group.name}</strong>? A group that quotas still use cannot be deleted.</p>
        </Confirm>)}
    </section>
  );
}

function GroupForm({ models, group, onClose }) {
  const editing = !!group;
  const d = group ? group.default_quota : { period: 'month' };
  const s = (v) => (v === null || v === undefined ? '' : String(v));
  const init = { name: group ? group.name : '', description: group ? group.description : '', period: d.period || 'month',
    model_ids: group ? group.model_ids : [] };
  for (const [k] of LIMITS) init['default_quota.' + k] = s(d[k]);
  const form = useForm(init);
  form.known.add('model_ids');
  const [filter, setFilter] = useState('');
  const v = form.values;
  const shown = (models?.list || []).filter((m) => m.name.toLowerCase().includes(filter.toLowerCase()));

  async function submit(e) {
    e.preventDefault();
    const r = await form.submit((x) => {
      const dq = { period: x.period };
      for (const [k, , isMoney] of LIMITS) {
        const t = x['default_quota.' + k].trim();
        dq[k] = t === '' ? null : isMoney ? t : /^\d+$/.test(t) ? Number(t) : t;
      }
      const body = { name: x.name, description: x.description, model_ids: x.model_ids, default_quota: dq };
      return editing ? patch(`/api/admin/groups/${group.id}/`, body) : post('/api/admin/groups/', body);
    });
    if (r) onClose(true);
  }
  return (
    <Dialog title={editing ? `Edit ${group.name}` : 'New group'} onClose={() => onClose(false)} wide>
      <form onSubmit={submit} noValidate>
        <div class="form-grid">
          <TextField form={form} name="name" label="Name" required />
          <TextField form={form} name="description" label="Description" hint="Optional" />
        </div>
        <fieldset>
          <legend>Models ({v.model_ids.length} chosen)</legend>
          {models === null ? <p class="muted">Loading models…</p> : models.list.length === 0 ? (
            <p>No models yet. <a href="#/models">Create models</a> first.</p>
          ) : (
            <>
              <input type="search" class="picker-filter" placeholder="Filter models" aria-label="Filter models" value={filter}
                onInput={(e) => setFilter(e.currentTarget.value)} />
              <div class="picker">
                {shown.map((m) => (
                  <label key={m.id} class="check-inline"><input type="checkbox" checked={v.model_ids.includes(m.id)}
                    onChange={(e) => form.set('model_ids', e.currentTarget.checked ? [...v.model_ids, m.id] : v.model_ids.filter((x) => x !== m.id))} />
                    <span class="mono">{m.name}</span></label>
                ))}
              </div>
            </>
          )}
          {form.errors.model_ids && <p class="field-error" role="alert">{form.errors.model_ids}</p>}
        </fieldset>
        <fieldset>
          <legend>Default limits of new quotas</legend>
          <div class="form-grid">
            <SelectField form={form} name="period" label="Period" options={['month', 'week', 'day', 'none'].map((p) => ({ value: p, label: p }))} />
            {LIMITS.map(([k, label, isMoney]) => <TextField key={k} form={form} name={'default_quota.' + k} label={label}
              inputMode={isMoney ? 'decimal' : 'numeric'} hint="Empty = no limit" />)}
          </div>
        </fieldset>
        <FormMessage form={form} />
        <div class="actions">
          <button type="button" onClick={() => onClose(false)}>Cancel</button>
          <button type="submit" class="primary" disabled={form.busy}>{editing ? 'Save' : 'Create group'}</button>
        </div>
      </form>
    </Dialog>
  );
}
