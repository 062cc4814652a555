// Models: what clients name in "model", its routes to providers (tried by
// priority, lowest first; routes of equal priority share the traffic by
// weight) and its prices per 1M tokens.
import { cloneElement } from 'preact';
import { useState } from 'preact/hooks';
import { get, post, patch, del } from '../api.js';
import { useLoad, Loaded, PageHead, Table, Pager, Badge, Dialog, Confirm, Money,
  useForm, TextField, CheckField, FormMessage, Empty } from '../ui.jsx';
import { setParams } from '../router.js';
import { useLookup, name, invalidate } from '../lookups.js';
import { int } from '../format.js';

const PAGE = 50;
const CAPS = ['chat', 'streaming', 'embeddings', 'vision', 'tools'];
/* A cache price that is not set charges the input price (docs/API.md,
 * Models): say so rather than show a dash that reads as "free". */
function CachePrice({ m, value }) {
  if (value == null && m.input_price != null)
    return <span class="muted" title="Not set: cached tokens are charged at the input price">as input</span>;
  return <Money value={value} />;
}

const PRICES = [['input_price', 'Input'], ['output_price', 'Output'], ['cache_read_price', 'Cache read'], ['cache_write_price', 'Cache write']];

export function Models({ route }) {
  const p = route.params;
  const page = Number(p.page) || 1;
  const providers = useLookup('providers');
  const [search, setSearch] = useState(p.search || '');
  const [dialog, setDialog] = useState(null);
  const load = useLoad(() => get('/api/admin/models/', { search: p.search, provider_id: p.provider_id, page, page_size: PAGE }),
    [p.search, p.provider_id, page]);
  const close = (changed) => { setDialog(null); if (changed) { invalidate('models'); load.reload(); } };

  return (
    <section>
      <PageHead title="Models" sub="Names clients send as “model”, where they go, and what they cost per 1M tokens.">
        <button type="button" class="primary" onClick={() => setDialog({ kind: 'create' })}>New model</button>
      </PageHead>
      <form class="filters" role="search" onSubmit={(e) => { e.preventDefault(); setParams(route, { search, page: '' }); }}>
        <label>Search <input type="search" value={search} placeholder="model name" onInput={(e) => setSearch(e.currentTarget.value)} /></label>
        <label>Provider <select value={p.provider_id || ''} onChange={(e) => setParams(route, { provider_id: e.currentTarget.value, page: '' })}>
          <option value="">any</option>
          {(providers?.list || []).map((x) => <option key={x.id} value={String(x.id)}>{x.name}</option>)}</select></label>
        <button type="submit">Search</button>
      </form>
      <Loaded load={load} what="models">
        {(data) => data.count === 0 ? (
          <Empty>{p.search || p.provider_id ? <p>No model matches these filters.</p>
            : <p>No models yet. Create one, or <a href="#/providers">sync a provider’s models</a> and then set their prices.</p>}</Empty>
        ) : (
          <>
            <Table caption="Models" rows={data.results} columns={[
              { key: 'name', label: 'Name', render: (m) => <><span class="mono">{m.name}</span>{!m.has_prices && <> <Badge kind="warn">no prices</Badge></>}
                {!m.is_active && <> <Badge kind="off">off</Badge></>}</> },
              { key: 'routes', label: 'Routes', render: (m) => m.routes.length === 0 ? <span class="muted">none</span> : (
                <ol class="routes">{[...m.routes].sort((a, b) => a.priority - b.priority).map((r, i) => (
                  <li key={i}>{name(providers, r.provider_id)} → <span class="mono">{r.upstream_name}</span>{' '}
                    <span class="muted">(priority {r.priority}{m.routes.some((o) => o !== r && o.priority === r.priority) ? `, weight ${r.weight ?? 1}` : ''})</span>
                    {r.upstream_missing && <> <Badge kind="warn">no longer listed by the provider</Badge></>}</li>))}</ol>) },
              { key: 'in', label: 'Input / 1M', num: true, render: (m) => <Money value={m.input_price} /> },
              { key: 'out', label: 'Output / 1M', num: true, render: (m) => <Money value={m.output_price} /> },
              { key: 'cache', label: 'Cache read / write, 1M', num: true, render: (m) => <><CachePrice m={m} value={m.cache_read_price} /> / <CachePrice m={m} value={m.cache_write_price} /></> },
              { key: 'ctx', label: 'Context / max out', num: true, render: (m) => <>{m.context_window ? int(m.context_window) : '—'} / {m.max_output_tokens ? int(m.max_output_tokens) : '—'}</> },
              { key: 'caps', label: 'Capabilities', render: (m) => m.capabilities.map((c) => <Badge key={c}>{c}</Badge>) },
              { key: 'actions', label: 'Actions', render: (m) => (
                <div class="row-actions">
                  <button type="button" onClick={() => setDialog({ kind: 'edit', model: m })}>Edit</button>
                  <button type="button" class="danger" onClick={() => setDialog({ kind: 'delete', model: m })}>Delete</button>
                </div>) },
            ]} />
            <Pager page={page} pageSize={PAGE} count={data.count} onPage={(n) => setParams(route, { page: n })} />
          </>
        )}
      </Loaded>
      {dialog?.kind === 'create' && <ModelForm providers={providers} preset={p.provider_id} onClose={close} />}
      {dialog?.kind === 'edit' && <ModelForm providers={providers} model={dialog.model} onClose={close} />}
      {dialog?.kind === 'delete' && (
        <Confirm title="Delete model" action="Delete" danger onConfirm={() => del(`/api/admin/models/${dialog.model.id}/`)} onClose={close}>
          <p>Delete the model <strong>{dialog.model.name}</strong>? Clients asking for it get 404 from then on.</p>
        </Confirm>)}
    </section>
  );
}

/** One input of a route row, its label above and the API's error for it
 *  (routes[i].<field>) below. */
function RouteInput({ form, name, label, id, describedBy, hint, wide, children }) {
  form.known.add(name);
  const err = form.errors[name];
  const described = [err ? id + '-err' : null, describedBy].filter(Boolean).join(' ');
  return (
    <div class={'route-field' + (err ? ' has-error' : '') + (wide ? ' wide' : '')}>
      <label for={id}>{label}</label>
      {cloneElement(children, { id, 'aria-invalid': err ? 'true' : undefined, 'aria-describedby': described || undefined })}
      {hint && !err && <small class="hint">{hint}</small>}
      {err && <small class="field-error" id={id + '-err'} role="alert">{err}</small>}
    </div>
  );
}

function ModelForm({ providers, model, preset, onClose }) {
  const editing = !!model;
  const s = (v) => (v === null || v === undefined ? '' : String(v));
  const form = useForm(editing ? {
    name: model.name, input_price: s(model.input_price), output_price: s(model.output_price),
    cache_read_price: s(model.cache_read_price), cache_write_price: s(model.cache_write_price),
    context_window: model.context_window ? String(model.context_window) : '',
    max_output_tokens: model.max_output_tokens ? String(model.max_output_tokens) : '',
    is_active: model.is_active, capabilities: model.capabilities,
    routes: model.routes.map((r) => ({ provider_id: String(r.provider_id), upstream_name: r.upstream_name,
      priority: String(r.priority), weight: String(r.weight ?? 1), upstream_missing: !!r.upstream_missing, listed_name: r.upstream_name })),
  } : {
    name: '', input_price: '', output_price: '', cache_read_price: '', cache_write_price: '', context_window: '',
    max_output_tokens: '', is_active: true, capabilities: ['chat', 'streaming'],
    routes: [{ provider_id: preset || (providers?.list[0] ? String(providers.list[0].id) : ''), upstream_name: '', priority: '0', weight: '1' }],
  });
  form.known.add('routes');
  form.known.add('capabilities');
  const v = form.values;
  const setRoute = (i, k, val) => form.set('routes', v.routes.map((r, j) => (j === i ? { ...r, [k]: val } : r)));
  // The API names a route's field "routes[0].weight": shown beside that input;
  // an error of the list itself ("routes") below the list.
  const routeErrors = Object.entries(form.errors).filter(([k]) => k.startsWith('routes') &&
    !/^routes\[\d+\]\.(provider_id|upstream_name|priority|weight)$/.test(k));
  const num = (t) => (/^\d+$/.test(t.trim()) ? Number(t.trim()) : t.trim());

  async function submit(e) {
    e.preventDefault();
    const r = await form.submit((x) => {
      const body = { name: x.name, capabilities: x.capabilities, is_active: x.is_active,
        routes: x.routes.map((rt) => ({ provider_id: num(rt.provider_id), upstream_name: rt.upstream_name.trim() || x.name,
          priority: num(rt.priority || '0'), ...(rt.weight.trim() === '' ? {} : { weight: num(rt.weight) }) })) };
      for (const [k] of PRICES) if (x[k].trim() !== '' || editing) body[k] = x[k].trim() === '' ? '0' : x[k].trim();
      for (const k of ['context_window', 'max_output_tokens']) body[k] = x[k].trim() === '' ? 0 : num(x[k]);
      return editing ? patch(`/api/admin/models/${model.id}/`, body) : post('/api/admin/models/', body);
    });
    if (r) onClose(true);
  }
  return (
    <Dialog title={editing ? `Edit ${model.name}` : 'New model'} onClose={() => onClose(false)} wide>
      <form onSubmit={submit} noValidate>
        <TextField form={form} name="name" label="Name (what clients send as model)" wide required />
        <fieldset>
          <legend>Prices per 1M tokens</legend>
          <div class="form-grid four">
            {PRICES.map(([k, label]) => <TextField key={k} form={form} name={k} label={label} inputMode="decimal" placeholder="0" />)}
          </div>
          <p class="muted small">Decimal numbers with up to 9 decimals, e.g. 0.15. Empty is 0.</p>
        </fieldset>
        <fieldset>
          <legend>Routes (tried lowest priority first)</legend>
          <p class="muted small" id="weight-hint">Weight (1–1000): the share of traffic among routes of equal priority; weights 3 and 1 send 3 of every 4 requests to the first.</p>
          {v.routes.map((r, i) => (
            <div class="route-row" key={i}>
              <RouteInput form={form} name={`routes[${i}].provider_id`} label="Provider" id={`route-${i}-provider`} wide>
                <select value={r.provider_id} onChange={(e) => setRoute(i, 'provider_id', e.currentTarget.value)}>
                  <option value="">choose…</option>
                  {(providers?.list || []).map((x) => <option key={x.id} value={String(x.id)}>{x.name}</option>)}</select></RouteInput>
              <RouteInput form={form} name={`routes[${i}].upstream_name`} label="Upstream model" id={`route-${i}-upstream`} wide
                hint={r.upstream_missing && r.upstream_name === r.listed_name ? 'no longer listed by the provider' : undefined}>
                <input value={r.upstream_name} placeholder={v.name || 'same as name'} onInput={(e) => setRoute(i, 'upstream_name', e.currentTarget.value)} /></RouteInput>
              <RouteInput form={form} name={`routes[${i}].priority`} label="Priority" id={`route-${i}-priority`}>
                <input inputMode="numeric" value={r.priority} onInput={(e) => setRoute(i, 'priority', e.currentTarget.value)} /></RouteInput>
              <RouteInput form={form} name={`routes[${i}].weight`} label="Weight" id={`route-${i}-weight`} describedBy="weight-hint">
                <input inputMode="numeric" value={r.weight} placeholder="1" onInput={(e) => setRoute(i, 'weight', e.currentTarget.value)} /></RouteInput>
              <button type="button" aria-label={`Remove route ${i + 1}`} onClick={() => form.set('routes', v.routes.filter((_, j) => j !== i))}>Remove</button>
            </div>
          ))}
          <button type="button" onClick={() => form.set('routes', [...v.routes, { provider_id: '', upstream_name: '', priority: String(v.routes.length), weight: '1' }])}>Add a route</button>
          {routeErrors.map(([k, m]) => <p class="field-error" role="alert" key={k}>{m}</p>)}
        </fieldset>
        <fieldset>
          <legend>Capabilities</legend>
          <div class="checks">
            {CAPS.map((c) => (
              <label key={c} class="check-inline"><input type="checkbox" checked={v.capabilities.includes(c)}
                onChange={(e) => form.set('capabilities', e.currentTarget.checked ? [...v.capabilities, c] : v.capabilities.filter((x) => x !== c))} /> {c}</label>
            ))}
          </div>
          {form.errors.capabilities && <p class="field-error" role="alert">{form.errors.capabilities}</p>}
        </fieldset>
        <div class="form-grid">
          <TextField form={form} name="context_window" label="Context window (tokens)" inputMode="numeric" hint="Empty = unknown" />
          <TextField form={form} name="max_output_tokens" label="Max output tokens" inputMode="numeric"
            hint="Sent upstream when the client sets no limit; empty = 4096" />
        </div>
        <CheckField form={form} name="is_active" label="Active" />
        <FormMessage form={form} />
        <div class="actions">
          <button type="button" onClick={() => onClose(false)}>Cancel</button>
          <button type="submit" class="primary" disabled={form.busy}>{editing ? 'Save' : 'Create model'}</button>
        </div>
      </form>
    </Dialog>
  );
}
