// The shell: session (login, 401 back to login with the reason), the
// navigation for the caller's role, and the page for the current route.
// A normal user's shell has no admin routes at all.
import { useEffect, useState } from 'preact/hooks';
import { get, post, hasToken, setToken, onUnauthorized } from './api.js';
import { useRoute, go } from './router.js';
import { Loading } from './ui.jsx';
import { pageShown } from './lookups.js';
import { Login } from './pages/login.jsx';
import { Overview } from './pages/overview.jsx';
import { Users } from './pages/users.jsx';
import { Providers } from './pages/providers.jsx';
import { Models } from './pages/models.jsx';
import { Groups } from './pages/groups.jsx';
import { Quotas } from './pages/quotas.jsx';
import { Requests, MyRequests } from './pages/requests.jsx';
import { Warnings } from './pages/warnings.jsx';
import { Reference } from './pages/reference.jsx';
import { MyQuotas, MyUsage, HowTo, Password } from './pages/me.jsx';

const ADMIN_NAV = [
  ['Watch', [['/overview', 'Overview', Overview], ['/requests', 'Requests', Requests], ['/warnings', 'Warnings', Warnings]]],
  ['Set up', [['/providers', 'Providers', Providers], ['/models', 'Models', Models], ['/groups', 'Groups', Groups]]],
  ['People', [['/users', 'Users', Users], ['/quotas', 'Quotas', Quotas]]],
];
const USER_NAV = [
  ['My account', [['/me/quotas', 'My quotas', MyQuotas], ['/me/usage', 'My usage', MyUsage],
    ['/me/requests', 'My requests', MyRequests], ['/me/howto', 'How to call it', HowTo],
    ['/me/password', 'Password', Password]]],
  ['Reference', [['/reference', 'API reference', Reference]]],
];

export function App() {
  const [session, setSession] = useState({ user: null, checking: hasToken(), reason: null });

  useEffect(() => {
    onUnauthorized((msg) => setSession({ user: null, checking: false,
      reason: `You were signed out: ${msg}. Sign in again.` }));
    if (hasToken()) {
      get('/api/auth/me/').then(
        (user) => setSession({ user, checking: false, reason: null }),
        (e) => { setToken(null); setSession({ user: null, checking: false, reason: e.status === 401 ? 'Your session has ended. Sign in again.' : e.message }); });
    }
  }, []);

  if (session.checking) return <main class="center"><Loading what="your session" /></main>;
  if (!session.user) {
    return <Login reason={session.reason} onLogin={(user) => {
      setSession({ user, checking: false, reason: null });
      go(user.role === 'superadmin' ? '/overview' : '/me/quotas');
    }} />;
  }
  return <Shell user={session.user} onLogout={async () => {
    try { await post('/api/auth/logout/'); } catch { /* signed out here either way */ }
    setToken(null);
    setSession({ user: null, checking: false, reason: 'You signed out.' });
    go('/');
  }} />;
}

function Shell({ user, onLogout }) {
  const route = useRoute();
  const [menuOpen, setMenuOpen] = useState(false);
  const admin = user.role === 'superadmin';
  const nav = admin ? [...ADMIN_NAV, ...USER_NAV] : USER_NAV;
  const pages = nav.flatMap(([, items]) => items);
  const home = admin ? '/overview' : '/me/quotas';
  const found = pages.find(([p]) => p === route.path);
  useEffect(() => { setMenuOpen(false); }, [route.path]);
  useEffect(() => {
    if (route.path === '/' || route.path === '') go(home);
  }, [route.path]);
  useEffect(() => {
    document.title = (found ? found[1] + ' · ' : '') + 'tokenaudit console';
  }, [found]);
  const Page = found ? found[2] : null;
  pageShown(route.path);

  return (
    <div class="shell">
      <a class="skip" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById('main').focus(); }}>Skip to content</a>
      <header class="topbar">
        <button type="button" class="menu-toggle" aria-expanded={menuOpen ? 'true' : 'false'} aria-controls="nav"
          onClick={() => setMenuOpen(!menuOpen)}>Menu</button>
        <a class="brand" href={'#' + home}>tokenaudit</a>
        <div class="who">
          <span class="who-email" title={user.email}>{user.email}</span>
          <span class={'badge ' + (admin ? 'accent' : '')}>{admin ? 'superadmin' : 'user'}</span>
          <button type="button" onClick={onLogout}>Sign out</button>
        </div>
      </header>
      <nav id="nav" class={'sidenav' + (menuOpen ? ' open' : '')} aria-label="Console">
        {nav.map(([section, items]) => (
          <div class="nav-section" key={section}>
            <h2>{section}</h2>
            <ul>
              {items.map(([p, label]) => (
                <li key={p}><a href={'#' + p} aria-current={route.path === p ? 'page' : undefined}>{label}</a></li>
              ))}
            </ul>
          </div>
        ))}
      </nav>
      <main id="main" tabIndex={-1}>
        {Page ? <Page route={route} user={user} key={route.path} />
          : route.path === '/' || route.path === '' ? null
          : <div class="state empty"><h1>Not found</h1><p>There is no page “{route.path}” here.{' '}
              <a href={'#' + home}>Go to {admin ? 'the overview' : 'your quotas'}</a>.</p></div>}
      </main>
    </div>
  );
}
