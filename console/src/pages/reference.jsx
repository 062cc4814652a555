// API reference: the gateway's own OpenAPI document (GET /api/openapi.json,
// no credentials, generated from its route table), rendered here: the
// operations grouped by tag, each with who may call it, its parameters, its
// request body and its answers. Schemas open in place ($ref by $ref, only
// when asked, so cycles cost nothing). Nothing is fetched from elsewhere.
import { useState } from 'preact/hooks';
import { get } from '../api.js';
import { useLoad, Loaded, PageHead, Empty } from '../ui.jsx';

const METHODS = ['get', 'post', 'put', 'patch', 'delete'];
const AUTH = { jwt: 'a session token (JWT)', apiKey: 'an API key' };

function refName(ref) {
  return ref.slice(ref.lastIndexOf('/') + 1);
}

function resolve(doc, s) {
  while (s && s.$ref) s = refName(s.$ref) in doc.components.schemas ? doc.components.schemas[refName(s.$ref)] : null;
  return s || {};
}

/** "string (date-time)", "integer", "array of Model", "Model", ... */
function typeText(s) {
  if (!s) return '';
  if (s.$ref) return refName(s.$ref);
  if (s.allOf && s.allOf.length === 1) return typeText(s.allOf[0]);
  if (s.allOf) return s.allOf.map(typeText).filter(Boolean).join(' + ') || 'object';
  if (s.type === 'array') return 'array of ' + (typeText(s.items) || 'any');
  let t = s.type || (s.properties ? 'object' : 'any');
  if (s.format) t += ` (${s.format})`;
  return t;
}

/** The facts of a schema beside its type: nullable, enum, bounds, pattern
 *  (param: of a parameter, where read-only and write-only say nothing). */
function facts(s, param) {
  const out = [];
  if (s.nullable) out.push('or null');
  if (s.enum) out.push('one of ' + s.enum.join(', '));
  if (s.minimum !== undefined) out.push(`≥ ${s.minimum}`);
  if (s.maximum !== undefined) out.push(`≤ ${s.maximum}`);
  if (s.minLength !== undefined) out.push(`at least ${s.minLength} long`);
  if (s.maxLength !== undefined) out.push(`at most ${s.maxLength} long`);
  if (s.pattern) out.push(`matches ${s.pattern}`);
  if (s.default !== undefined) out.push(`default ${JSON.stringify(s.default)}`);
  if (s.readOnly && !param) out.push('read-only');
  if (s.writeOnly && !param) out.push('write-only');
  if (param && s.description) out.push(s.description);
  return out.join(' · ');
}

/** The properties of an object schema (allOf merged). */
function props(doc, s, seen = 0) {
  s = resolve(doc, s);
  let out = { ...(s.properties || {}) };
  let req = new Set(s.required || []);
  for (const part of s.allOf || []) {
    if (seen > 8) break;
    const p = props(doc, part, seen + 1);
    out = { ...out, ...p.out };
    p.req.forEach((r) => req.add(r));
  }
  return { out, req };
}

/** A schema as a list of its fields; nested objects and $refs open on demand. */
function Schema({ doc, schema }) {
  const s = resolve(doc, schema);
  const target = s.type === 'array' ? resolve(doc, s.items) : s;
  const { out, req } = props(doc, target);
  const names = Object.keys(out);
  if (!names.length) {
    const f = facts(s);
    return <p class="muted small">{typeText(schema)}{f ? ' · ' + f : ''}{s.description ? ' — ' + s.description : ''}</p>;
  }
  return (
    <>
      {s.description && <p class="muted small">{s.description}</p>}
      {s.type === 'array' && <p class="muted small">An array; each item:</p>}
      <ul class="fields">
        {names.map((n) => <Field key={n} doc={doc} name={n} schema={out[n]} required={req.has(n)} />)}
      </ul>
    </>
  );
}

function Field({ doc, name, schema, required }) {
  const [open, setOpen] = useState(false);
  const s = resolve(doc, schema);
  const inner = s.type === 'array' ? resolve(doc, s.items) : s;
  const nested = Object.keys(props(doc, inner).out).length > 0;
  const f = facts(s);
  const head = (
    <>
      <code>{name}</code> <span class="type">{typeText(schema)}</span>
      {required && <span class="req">required</span>}
      {f && <span class="muted small"> · {f}</span>}
      {s.description && <span class="muted small"> — {s.description}</span>}
    </>
  );
  if (!nested) return <li>{head}</li>;
  return (
    <li>
      <details onToggle={(e) => setOpen(e.currentTarget.open)}>
        <summary>{head}</summary>
        {open && <Schema doc={doc} schema={schema} />}
      </details>
    </li>
  );
}

function Operation({ doc, path, method, op, shared }) {
  const admin = path.startsWith('/api/admin/');
  const [open, setOpen] = useState(false);
  const params = [...(shared || []), ...(op.parameters || [])].map((p) => (p.$ref ? doc.components.parameters[refName(p.$ref)] : p));
  const security = op.security || doc.security || [];
  const who = security.length === 0 || security.every((s) => Object.keys(s).length === 0) ? 'no credentials'
    : admin ? 'a superadmin’s session token (JWT)'
    : security.map((s) => Object.keys(s).map((k) => AUTH[k] || k).join(' and ')).join(', or ');
  const body = op.requestBody && op.requestBody.content;
  return (
    <details class="op" onToggle={(e) => setOpen(e.currentTarget.open)}>
      <summary>
        <span class={'method ' + method}>{method.toUpperCase()}</span>
        <code class="path">{path}</code>
        <span class="op-summary">{op.summary}</span>
      </summary>
      {open && (
        <div class="op-body">
          <p class="small"><span class="muted">Operation</span> <code>{op.operationId}</code> · <span class="muted">needs</span> {who}</p>
          {params.length > 0 && (
            <>
              <h4>Parameters</h4>
              <ul class="fields">
                {params.map((p) => (
                  <li key={p.in + p.name}><code>{p.name}</code> <span class="type">{p.in} · {typeText(p.schema)}</span>
                    {p.required && <span class="req">required</span>}
                    {facts(p.schema || {}, true) && <span class="muted small"> · {facts(p.schema, true)}</span>}
                    {p.description && <span class="muted small"> — {p.description}</span>}</li>
                ))}
              </ul>
            </>
          )}
          {body && Object.entries(body).map(([type, m]) => (
            <div key={type}>
              <h4>Request body <span class="muted small">{type}{op.requestBody.description ? ' — ' + op.requestBody.description : ''}</span></h4>
              <Schema doc={doc} schema={m.schema} />
            </div>
          ))}
          <h4>Answers</h4>
          <ul class="answers">
            {Object.entries(op.responses || {}).map(([status, r]) => {
              const resp = r.$ref ? doc.components.responses[refName(r.$ref)] : r;
              const content = resp.content || {};
              return (
                <li key={status}>
                  <span class={'status s' + status[0]}>{status}</span> {resp.description}
                  {Object.entries(content).map(([type, m]) => (
                    <details key={type} class="answer-schema">
                      <summary><span class="muted small">{type}</span> <span class="type">{typeText(m.schema)}</span></summary>
                      <Schema doc={doc} schema={m.schema} />
                    </details>
                  ))}
                </li>
              );
            })}
          </ul>
        </div>
      )}
    </details>
  );
}

export function Reference() {
  const load = useLoad(() => get('/api/openapi.json'), []);
  const [filter, setFilter] = useState('');
  return (
    <section class="reference">
      <PageHead title="API reference" sub="Every endpoint of this gateway, from the OpenAPI document it serves at /api/openapi.json." />
      <Loaded load={load} what="the API document">
        {(doc) => {
          const q = filter.trim().toLowerCase();
          const groups = new Map();
          for (const [path, item] of Object.entries(doc.paths || {})) {
            for (const m of METHODS) {
              const op = item[m];
              if (!op) continue;
              const text = `${m} ${path} ${op.summary || ''} ${op.operationId || ''}`.toLowerCase();
              if (q && !text.includes(q)) continue;
              const tag = (op.tags && op.tags[0]) || 'other';
              if (!groups.has(tag)) groups.set(tag, []);
              groups.get(tag).push({ path, method: m, op, shared: item.parameters });
            }
          }
          return (
            <>
              <div class="card">
                <p><strong>{doc.info.title}</strong> {doc.info.version} · OpenAPI {doc.openapi}</p>
                <p class="muted small">{doc.info.description}</p>
                <div class="filters">
                  <label>Find <input type="search" value={filter} placeholder="path, method or words" onInput={(e) => setFilter(e.currentTarget.value)} /></label>
                  <a class="small" href="/api/openapi.json" download="openapi.json">Download the document</a>
                </div>
              </div>
              {groups.size === 0 && <Empty><p>No endpoint matches “{filter}”.</p></Empty>}
              {[...groups.entries()].map(([tag, ops]) => (
                <div class="card" key={tag}>
                  <h2>{tag}</h2>
                  {ops.map((o) => <Operation key={o.method + o.path} doc={doc} {...o} />)}
                </div>
              ))}
            </>
          );
        }}
      </Loaded>
    </section>
  );
}
