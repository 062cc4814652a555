// Small shared components. Everything is rendered as text through Preact
// (no innerHTML anywhere): names from the API may hold any Unicode,
// markup included, and must show as typed.
import { useEffect, useRef, useState, useCallback } from 'preact/hooks';
import { ApiError } from './api.js';
import { localTime, relTime, money } from './format.js';

/** Runs fn() now and whenever deps change; {data, error, loading, reload}. */
export function useLoad(fn, deps) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const seq = useRef(0);
  const run = useCallback(() => {
    const n = ++seq.current;
    setState((s) => ({ ...s, loading: true, error: null }));
    Promise.resolve()
      .then(fn)
      .then((data) => { if (n === seq.current) setState({ data, error: null, loading: false }); },
            (error) => { if (n === seq.current) setState({ data: null, error, loading: false }); });
  }, deps); // eslint-disable-line
  useEffect(run, [run]);
  return { ...state, reload: run };
}

export function Loading({ what }) {
  return <p class="state loading" role="status">Loading{what ? ' ' + what : ''}…</p>;
}

export function ErrorBox({ error, retry }) {
  if (!error) return null;
  const status = error instanceof ApiError && error.status ? ` (HTTP ${error.status})` : '';
  return (
    <div class="state error" role="alert">
      <p><strong>Could not load{status}:</strong> {error.message}</p>
      {retry && <button type="button" onClick={retry}>Try again</button>}
    </div>
  );
}

export function Empty({ children }) {
  return <div class="state empty">{children}</div>;
}

/** Shows loading / error / the children for a useLoad() result. */
export function Loaded({ load, what, children }) {
  if (load.error) return <ErrorBox error={load.error} retry={load.reload} />;
  if (load.data === null) return <Loading what={what} />;
  return children(load.data);
}

// ---- forms -----------------------------------------------------------------

/** Form state with the API's field errors: submit(fn) runs fn(values) and
 *  on an ApiError puts error.fields beside the fields that show them. */
export function useForm(initial) {
  const [values, setValues] = useState(initial);
  const [errors, setErrors] = useState({});
  const [message, setMessage] = useState(null);
  const [busy, setBusy] = useState(false);
  const known = useRef(new Set());
  const set = (name, v) => setValues((old) => ({ ...old, [name]: v }));
  async function submit(fn) {
    setBusy(true); setErrors({}); setMessage(null);
    try {
      return await fn(values);
    } catch (e) {
      const fields = (e && e.fields) || {};
      setErrors(fields);
      const shown = Object.keys(fields).some((k) => known.current.has(k));
      // Keep the API's words: a field error beside its field, anything else here.
      if (!shown) setMessage(e.message);
      else if (Object.keys(fields).some((k) => !known.current.has(k))) setMessage(e.message);
      return undefined;
    } finally {
      setBusy(false);
    }
  }
  return { values, set, setValues, errors, setErrors, message, setMessage, busy, submit, known: known.current };
}

let idSeq = 0;
function useId(prefix) {
  const r = useRef(null);
  if (r.current === null) r.current = `${prefix}-${++idSeq}`;
  return r.current;
}

function FieldShell({ form, name, label, hint, id, children, wide }) {
  form.known.add(name);
  const err = form.errors[name];
  return (
    <div class={'field' + (err ? ' has-error' : '') + (wide ? ' wide' : '')}>
      <label for={id}>{label}</label>
      {children}
      {hint && !err && <small class="hint" id={id + '-hint'}>{hint}</small>}
      {err && <small class="field-error" id={id + '-err'} role="alert">{err}</small>}
    </div>
  );
}

export function TextField({ form, name, label, hint, type = 'text', wide, ...rest }) {
  const id = useId('f-' + name.replace(/[^a-z0-9]/gi, '-'));
  const err = form.errors[name];
  return (
    <FieldShell form={form} name={name} label={label} hint={hint} id={id} wide={wide}>
      <input id={id} name={name} type={type} value={form.values[name] ?? ''}
        aria-invalid={err ? 'true' : undefined}
        aria-describedby={err ? id + '-err' : hint ? id + '-hint' : undefined}
        onInput={(e) => form.set(name, e.currentTarget.value)} {...rest} />
    </FieldShell>
  );
}

export function SelectField({ form, name, label, hint, options, wide, ...rest }) {
  const id = useId('f-' + name.replace(/[^a-z0-9]/gi, '-'));
  const err = form.errors[name];
  return (
    <FieldShell form={form} name={name} label={label} hint={hint} id={id} wide={wide}>
      <select id={id} name={name} value={form.values[name] ?? ''}
        aria-invalid={err ? 'true' : undefined}
        aria-describedby={err ? id + '-err' : hint ? id + '-hint' : undefined}
        onChange={(e) => form.set(name, e.currentTarget.value)} {...rest}>
        {options.map((o) => <option value={String(o.value)} key={String(o.value)}>{o.label}</option>)}
      </select>
    </FieldShell>
  );
}

export function CheckField({ form, name, label }) {
  const id = useId('f-' + name);
  form.known.add(name);
  const err = form.errors[name];
  return (
    <div class={'field check' + (err ? ' has-error' : '')}>
      <input id={id} type="checkbox" checked={!!form.values[name]}
        onChange={(e) => form.set(name, e.currentTarget.checked)} />
      <label for={id}>{label}</label>
      {err && <small class="field-error" role="alert">{err}</small>}
    </div>
  );
}

export function FormMessage({ form }) {
  if (!form.message) return null;
  return <p class="form-error" role="alert">{form.message}</p>;
}

// ---- dialogs ---------------------------------------------------------------

/** A modal <dialog>: Escape or the close button calls onClose. */
export function Dialog({ title, onClose, children, wide }) {
  const ref = useRef(null);
  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
    return () => { if (d && d.open) d.close(); };
  }, []);
  return (
    <dialog ref={ref} class={wide ? 'wide' : ''} aria-label={title}
      onCancel={(e) => { e.preventDefault(); onClose(); }}>
      <header class="dialog-head">
        <h2>{title}</h2>
        <button type="button" class="icon" aria-label="Close dialog" onClick={onClose}>×</button>
      </header>
      <div class="dialog-body">{children}</div>
    </dialog>
  );
}

/** Asks before something that cannot be undone; onConfirm may throw an ApiError. */
export function Confirm({ title, children, action, danger, onConfirm, onClose }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  async function go() {
    setBusy(true); setError(null);
    try { await onConfirm(); onClose(true); } catch (e) { setError(e.message); setBusy(false); }
  }
  return (
    <Dialog title={title} onClose={() => onClose(false)}>
      <div class="confirm-text">{children}</div>
      {error && <p class="form-error" role="alert">{error}</p>}
      <div class="actions">
        <button type="button" onClick={() => onClose(false)}>Cancel</button>
        <button type="button" class={danger ? 'danger' : 'primary'} disabled={busy} onClick={go}>{action}</button>
      </div>
    </Dialog>
  );
}

// ---- values ----------------------------------------------------------------

/** A time in the browser's zone (rel: "3 min ago"; short: no seconds), UTC on hover. */
export function Time({ iso, rel, short }) {
  if (!iso) return <span class="muted">—</span>;
  return (
    <time datetime={iso} title={'UTC ' + iso.replace('T', ' ').replace('Z', '')}>
      {rel ? relTime(iso) : localTime(iso, short)}
    </time>
  );
}

/** A money string exactly as the API gave it; null shows `none`. */
export function Money({ value, none = '—' }) {
  if (value === null || value === undefined) return <span class="muted">{none}</span>;
  return <span class="money">{money(value)}</span>;
}

export function Badge({ kind, children }) {
  return <span class={'badge ' + (kind || '')}>{children}</span>;
}

export function CopyButton({ text, label = 'Copy' }) {
  const [done, setDone] = useState('');
  async function copy() {
    try {
      await navigator.clipboard.writeText(text);
      setDone('Copied');
    } catch {
      setDone('Select the text and copy it');
    }
    setTimeout(() => setDone(''), 2500);
  }
  return (
    <span class="copy">
      <button type="button" onClick={copy}>{label}</button>
      <span class="copy-done" role="status">{done}</span>
    </span>
  );
}

/** The key of a quota, shown once. own: the reader is its owner. */
export function KeyReveal({ apiKey, what, own }) {
  return (
    <div class="key-reveal">
      {own ? <p class="warning" role="note"><strong>Shown once.</strong> Copy this key now and keep it somewhere safe.
        The gateway keeps only a hash: the key cannot be shown again. If it is lost, reset it again.</p>
        : <p class="warning" role="note"><strong>Shown once.</strong> Copy this key now and give it to its
        owner{what ? ` (${what})` : ''}. The gateway keeps only a hash: the key cannot be shown again.
        If it is lost, reset it to get a new one.</p>}
      <div class="key-line">
        <input class="key" readOnly value={apiKey} aria-label="API key"
          onFocus={(e) => e.currentTarget.select()} />
        <CopyButton text={apiKey} label="Copy key" />
      </div>
    </div>
  );
}

// ---- tables ----------------------------------------------------------------

/** columns: [{key, label, num, render(row)}]; onRow(row) makes rows open. */
export function Table({ columns, rows, rowKey = (r) => r.id, onRow, caption }) {
  return (
    <div class="table-wrap">
      <table>
        {caption && <caption class="sr-only">{caption}</caption>}
        <thead>
          <tr>{columns.map((c) => <th scope="col" key={c.key} class={c.num ? 'num' : ''}>{c.label}</th>)}</tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={rowKey(r)} class={onRow ? 'clickable' : ''}
              onClick={onRow ? (e) => { if (!e.target.closest('button,a,input,select')) onRow(r); } : undefined}>
              {columns.map((c) => (
                <td key={c.key} class={c.num ? 'num' : ''} data-label={c.label}>
                  <span class="cell">{c.render ? c.render(r) : r[c.key]}</span>
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** Pages by number. estimated: count is a lower bound (the gateway counts a
 *  bounded number of audit records past the page), so Next stays open. */
export function Pager({ page, pageSize, count, estimated, onPage }) {
  const pages = Math.max(1, Math.ceil(count / pageSize));
  const total = estimated ? `at least ${count.toLocaleString()}` : count.toLocaleString();
  if (count <= pageSize && page === 1 && !estimated) return <p class="pager muted">{total} in all</p>;
  return (
    <nav class="pager" aria-label="Pages">
      <button type="button" disabled={page <= 1} onClick={() => onPage(page - 1)}>← Previous</button>
      <span>Page {page}{estimated ? '' : ` of ${pages}`} · {total} in all</span>
      <button type="button" disabled={!estimated && page >= pages} onClick={() => onPage(page + 1)}>Next →</button>
    </nav>
  );
}

export function PageHead({ title, children, sub }) {
  return (
    <header class="page-head">
      <div>
        <h1>{title}</h1>
        {sub && <p class="sub">{sub}</p>}
      </div>
      <div class="page-actions">{children}</div>
    </header>
  );
}
