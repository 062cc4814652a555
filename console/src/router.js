// Hash routes (#/requests?user_id=2): the gateway serves one index.html, and
// a page's filters live in the address so reload and Back keep them.
import { useEffect, useState } from 'preact/hooks';
import { qs } from './api.js';

function parse() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const q = raw.indexOf('?');
  const path = q === -1 ? raw : raw.slice(0, q);
  const params = Object.fromEntries(new URLSearchParams(q === -1 ? '' : raw.slice(q + 1)));
  return { path, params };
}

export function useRoute() {
  const [route, setRoute] = useState(parse);
  useEffect(() => {
    const f = () => setRoute(parse());
    window.addEventListener('hashchange', f);
    return () => window.removeEventListener('hashchange', f);
  }, []);
  return route;
}

/** Go to a page with these parameters (empty ones left out). */
export function go(path, params) {
  location.hash = path + qs(params);
}

/** The same page with some parameters changed. */
export function setParams(route, changes) {
  go(route.path, { ...route.params, ...changes });
}
