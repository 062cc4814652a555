// Names for ids (users, providers, models, groups), loaded once per page
// view and dropped after a write, so tables can show "alice@example.com"
// where the API gives user_id 2.
import { useEffect, useState } from 'preact/hooks';
import { all } from './api.js';

const paths = {
  users: '/api/admin/users/',
  quotas: '/api/admin/quotas/',
  providers: '/api/admin/providers/',
  models: '/api/admin/models/',
  groups: '/api/admin/groups/',
};
const cache = {};

export function invalidate(kind) {
  delete cache[kind];
}

let shownPath = null;
/** Called by the shell as it renders the page of path: a page shown anew
 *  loads the names again (another admin, or the CLI, may have added some). */
export function pageShown(path) {
  if (path === shownPath) return;
  shownPath = path;
  for (const k of Object.keys(cache)) delete cache[k];
}

function load(kind) {
  if (!cache[kind]) {
    cache[kind] = all(paths[kind]).then(
      (list) => ({ list, byId: new Map(list.map((x) => [x.id, x])) }),
      (e) => { delete cache[kind]; throw e; });
  }
  return cache[kind];
}

/** {list, byId} of a kind, or null while loading (or when kind is null).
 *  A new rev loads it again (after invalidate(kind): a page that wrote). */
export function useLookup(kind, rev = 0) {
  const [v, setV] = useState(null);
  const [err, setErr] = useState(null);
  useEffect(() => {
    if (!kind) return undefined;
    let live = true;
    load(kind).then((x) => live && setV(x), (e) => live && setErr(e));
    return () => { live = false; };
  }, [kind, rev]);
  if (err) return { list: [], byId: new Map(), error: err };
  return v;
}

export function name(lookup, id, field = 'name') {
  if (id === null || id === undefined) return '—';
  const x = lookup && lookup.byId.get(id);
  return x ? x[field] || `#${id}` : `#${id}`;
}
