// The one client of the gateway's /api (docs/API.md): JSON in and out, the
// error shape {"error":{message,type,code,param,fields}}, pages of
// {count,next,previous,results}. The session token lives in sessionStorage:
// it survives a reload of the tab and dies with the tab, and is never put
// in a URL.

const TOKEN_KEY = 'tokenaudit.session';
let token = sessionStorage.getItem(TOKEN_KEY);
let onSessionEnd = null;

export class ApiError extends Error {
  constructor(status, body, fallback) {
    const e = body && body.error;
    super(e && e.message ? e.message : fallback || `HTTP ${status}`);
    this.status = status;
    this.type = e ? e.type : null;
    this.code = e ? e.code : null;
    this.param = e ? e.param : null;
    // A conflict (409 duplicate) names its field in param only.
    this.fields = (e && e.fields) || (e && e.param && status < 500 ? { [e.param]: e.message } : {});
  }
}

export function hasToken() { return !!token; }

export function setToken(t) {
  token = t;
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** fn(message) runs when the gateway answers 401 to a signed-in request. */
export function onUnauthorized(fn) { onSessionEnd = fn; }

/** A query string from an object, leaving out empty values. */
export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {}))
    if (v !== undefined && v !== null && v !== '') u.set(k, String(v));
  const s = u.toString();
  return s ? '?' + s : '';
}

// While any call is in flight <html> carries data-busy (the browser tests
// wait for it to go before they look at a page).
let inflight = 0;
function busy(d) {
  inflight += d;
  if (inflight > 0) document.documentElement.setAttribute('data-busy', '');
  else document.documentElement.removeAttribute('data-busy');
}

export async function api(method, path, body) {
  busy(1);
  try {
    return await call(method, path, body);
  } finally {
    busy(-1);
  }
}

async function call(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = 'Bearer ' + token;
  let res;
  try {
    res = await fetch(path, {
      method, headers, cache: 'no-store', credentials: 'omit',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, null, 'The gateway cannot be reached (' + e.message + ')');
  }
  const text = res.status === 204 ? '' : await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const err = new ApiError(res.status, data, text ? text.slice(0, 200) : `HTTP ${res.status}`);
    if (res.status === 401 && token && !path.startsWith('/api/auth/login')) {
      setToken(null);
      if (onSessionEnd) onSessionEnd(err.message);
    }
    throw err;
  }
  return data;
}

export const get = (path, params) => api('GET', path + qs(params));
export const post = (path, body) => api('POST', path, body === undefined ? {} : body);
export const patch = (path, body) => api('PATCH', path, body);
export const del = (path) => api('DELETE', path);

/** Every item of a list (pages of 500), for pickers; stops at `max`. */
export async function all(path, params, max = 5000) {
  const out = [];
  for (let page = 1; out.length < max; page++) {
    const r = await get(path, { ...params, page, page_size: 500 });
    out.push(...r.results);
    if (!r.next) break;
  }
  return out;
}

/** GET path as a file and hand it to the browser as a download (name). The
 *  token goes in the Authorization header, never in a link: the answer is
 *  read here (the gateway streams it) and saved from a blob: URL. */
export async function download(path, params, name) {
  busy(1);
  try {
    const headers = {};
    if (token) headers.Authorization = 'Bearer ' + token;
    let res;
    try {
      res = await fetch(path + qs(params), { headers, cache: 'no-store', credentials: 'omit' });
    } catch (e) {
      throw new ApiError(0, null, 'The gateway cannot be reached (' + e.message + ')');
    }
    if (!res.ok) {
      const text = await res.text();
      let data = null;
      try { data = JSON.parse(text); } catch { data = null; }
      const err = new ApiError(res.status, data, `HTTP ${res.status}`);
      if (res.status === 401 && token) { setToken(null); if (onSessionEnd) onSessionEnd(err.message); }
      throw err;
    }
    const blob = await res.blob();
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    return blob.size;
  } finally {
    busy(-1);
  }
}
