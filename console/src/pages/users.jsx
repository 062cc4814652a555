// Users: search and filter, create (then give access in the same flow),
// edit name/role/active/password, reset all keys (shown once), deactivate.
import { useState } from 'preact/hooks';
import { get, post, patch, del, all } from '../api.js';
import { useLoad, Loaded, PageHead, Table, Pager, Time, Badge, Dialog, Confirm, KeyReveal,
  useForm, TextField, SelectField, CheckField, FormMessage, Empty } from '../ui.jsx';
import { setParams, go } from '../router.js';
import { invalidate, useLookup, name } from '../lookups.js';
import { GrantForm } from './quotas.jsx';

const PAGE = 50;
const ROLES = [{ value: 'user', label: 'user' }, { value: 'superadmin', label: 'superadmin' }];

export function Users({ route }) {
  const p = route.params;
  const page = Number(p.page) || 1;
  const [dialog, setDialog] = useState(null);
  const [search, setSearch] = useState(p.search || '');
  const load = useLoad(() => get('/api/admin/users/', { search: p.search, role: p.role, is_active: p.is_active, page, page_size: PAGE }),
    [p.search, p.role, p.is_active, page]);
  // After a write the list and the access column load again (a new user, a
  // quota given in the same flow, keys reset, a deactivation).
  const [rev, setRev] = useState(0);
  const quotaList = useLoad(() => all('/api/admin/quotas/'), [rev]);
  const quotas = quotaList.data ? { list: quotaList.data } : null;
  const groups = useLookup('groups', rev);
  const close = (changed) => {
    setDialog(null);
    if (changed) { invalidate('users'); invalidate('groups'); setRev((r) => r + 1); load.reload(); }
  };
  const access = (u) => {
    if (!quotas) return <span class="muted">…</span>;
    const mine = quotas.list.filter((q) => q.user_id === u.id);
    if (!mine.length) return <span class="muted">none</span>;
    return (
      <a href={`#/quotas?user_id=${u.id}`} class="access" aria-label={`Quotas of ${u.email}`}>
        {mine.map((q) => <Badge key={q.id} kind={q.is_active ? '' : 'off'}>{name(groups, q.group_id)}{q.is_active ? '' : ' (revoked)'}</Badge>)}
      </a>
    );
  };

  return (
    <section>
      <PageHead title="Users" sub="People who sign in here or hold quotas.">
        <button type="button" class="primary" onClick={() => setDialog({ kind: 'create' })}>New user</button>
      </PageHead>
      <form class="filters" role="search" onSubmit={(e) => { e.preventDefault(); setParams(route, { search, page: '' }); }}>
        <label>Search <input type="search" value={search} placeholder="email or name" onInput={(e) => setSearch(e.currentTarget.value)} /></label>
        <label>Role <select value={p.role || ''} onChange={(e) => setParams(route, { role: e.currentTarget.value, page: '' })}>
          <option value="">any</option><option value="user">user</option><option value="superadmin">superadmin</option></select></label>
        <label>Status <select value={p.is_active || ''} onChange={(e) => setParams(route, { is_active: e.currentTarget.value, page: '' })}>
          <option value="">any</option><option value="true">active</option><option value="false">deactivated</option></select></label>
        <button type="submit">Search</button>
      </form>
      <Loaded load={load} what="users">
        {(data) => data.count === 0 ? (
          <Empty>{p.search || p.role || p.is_active ? <p>No user matches these filters.</p>
            : <p>No users yet. <button type="button" class="link" onClick={() => setDialog({ kind: 'create' })}>Create the first one</button>.</p>}</Empty>
        ) : (
          <>
            <Table caption="Users" rows={data.results} columns={[
              { key: 'email', label: 'Email' },
              { key: 'name', label: 'Name', render: (u) => u.name || <span class="muted">—</span> },
              { key: 'role', label: 'Role', render: (u) => <Badge kind={u.role === 'superadmin' ? 'accent' : ''}>{u.role}</Badge> },
              { key: 'is_active', label: 'Status', render: (u) => u.is_active ? <Badge kind="ok">active</Badge> : <Badge kind="off">deactivated</Badge> },
              { key: 'access', label: 'Access', render: access },
              { key: 'created_at', label: 'Created', render: (u) => <Time iso={u.created_at} rel /> },
              { key: 'actions', label: 'Actions', render: (u) => (
                <div class="row-actions">
                  <button type="button" onClick={() => setDialog({ kind: 'edit', user: u })}>Edit</button>
                  <button type="button" onClick={() => go('/quotas', { user_id: u.id })}>Quotas</button>
                  <button type="button" onClick={() => setDialog({ kind: 'grant', user: u })}>Give access</button>
                  <button type="button" onClick={() => setDialog({ kind: 'reset', user: u })}>Reset keys</button>
                  {u.is_active && <button type="button" class="danger" onClick={() => setDialog({ kind: 'delete', user: u })}>Deactivate</button>}
                </div>) },
            ]} />
            <Pager page={page} pageSize={PAGE} count={data.count} onPage={(n) => setParams(route, { page: n })} />
          </>
        )}
      </Loaded>
      {dialog?.kind === 'create' && <CreateUser onClose={close} />}
      {dialog?.kind === 'edit' && <EditUser user={dialog.user} onClose={close} />}
      {dialog?.kind === 'grant' && (
        <Dialog title={`Give ${dialog.user.email} access`} onClose={() => close(true)} wide>
          <GrantForm user={dialog.user} onDone={() => close(true)} />
        </Dialog>)}
      {dialog?.kind === 'reset' && <ResetKeys user={dialog.user} onClose={close} />}
      {dialog?.kind === 'delete' && (
        <Confirm title="Deactivate user" action="Deactivate" danger
          onConfirm={() => del(`/api/admin/users/${dialog.user.id}/`)} onClose={close}>
          <p>Deactivate <strong>{dialog.user.email}</strong>? They can no longer sign in and every key of
            their quotas stops working at once. Their records stay for audit.</p>
        </Confirm>)}
    </section>
  );
}

function CreateUser({ onClose }) {
  const form = useForm({ email: '', name: '', password: '', role: 'user' });
  const [created, setCreated] = useState(null);
  async function submit(e) {
    e.preventDefault();
    const u = await form.submit((v) => post('/api/admin/users/', { email: v.email, name: v.name, password: v.password, role: v.role }));
    if (u) { invalidate('users'); setCreated(u); }
  }
  if (created) {
    return (
      <Dialog title="Give the new user access" onClose={() => onClose(true)} wide>
        <p class="notice" role="status">User <strong>{created.email}</strong> created.</p>
        <GrantForm user={created} onDone={() => onClose(true)} skipLabel="Not now" />
      </Dialog>
    );
  }
  return (
    <Dialog title="New user" onClose={() => onClose(false)}>
      <form onSubmit={submit} noValidate>
        <TextField form={form} name="email" label="Email" type="email" autoComplete="off" required />
        <TextField form={form} name="name" label="Name" hint="Optional" />
        <TextField form={form} name="password" label="Password" type="password" autoComplete="new-password"
          hint="They sign in with it and can change it later." />
        <SelectField form={form} name="role" label="Role" options={ROLES} />
        <FormMessage form={form} />
        <div class="actions">
          <button type="button" onClick={() => onClose(false)}>Cancel</button>
          <button type="submit" class="primary" disabled={form.busy}>Create user</button>
        </div>
      </form>
    </Dialog>
  );
}

function EditUser({ user, onClose }) {
  const form = useForm({ name: user.name, role: user.role, is_active: user.is_active, password: '' });
  async function submit(e) {
    e.preventDefault();
    const r = await form.submit((v) => {
      const body = { name: v.name, role: v.role, is_active: v.is_active };
      if (v.password) body.password = v.password;
      return patch(`/api/admin/users/${user.id}/`, body);
    });
    if (r) onClose(true);
  }
  return (
    <Dialog title={`Edit ${user.email}`} onClose={() => onClose(false)}>
      <form onSubmit={submit} noValidate>
        <TextField form={form} name="name" label="Name" />
        <SelectField form={form} name="role" label="Role" options={ROLES} />
        <CheckField form={form} name="is_active" label="Active (can sign in; keys work)" />
        <TextField form={form} name="password" label="New password" type="password" autoComplete="new-password"
          hint="Leave empty to keep the current one." />
        <FormMessage form={form} />
        <div class="actions">
          <button type="button" onClick={() => onClose(false)}>Cancel</button>
          <button type="submit" class="primary" disabled={form.busy}>Save</button>
        </div>
      </form>
    </Dialog>
  );
}

function ResetKeys({ user, onClose }) {
  const [keys, setKeys] = useState(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  async function reset() {
    setBusy(true); setError(null);
    try { setKeys((await post(`/api/admin/users/${user.id}/reset-all-keys/`)).quotas); }
    catch (e) { setError(e.message); setBusy(false); }
  }
  if (keys) {
    return (
      <Dialog title="New keys" onClose={() => onClose(true)} wide>
        {keys.length === 0 ? <p>{user.email} has no quotas, so no key was made.</p>
          : keys.map((k) => <div key={k.id}><h3>Quota #{k.id}</h3><KeyReveal apiKey={k.api_key} what={user.email} /></div>)}
        <div class="actions"><button type="button" class="primary" onClick={() => onClose(true)}>Done</button></div>
      </Dialog>
    );
  }
  return (
    <Dialog title="Reset all keys" onClose={() => onClose(false)}>
      <p>Give every quota of <strong>{user.email}</strong> a new key? The old keys stop working at once.
        The new keys are shown once, on the next screen.</p>
      {error && <p class="form-error" role="alert">{error}</p>}
      <div class="actions">
        <button type="button" onClick={() => onClose(false)}>Cancel</button>
        <button type="button" class="danger" disabled={busy} onClick={reset}>Reset all keys</button>
      </div>
    </Dialog>
  );
}
