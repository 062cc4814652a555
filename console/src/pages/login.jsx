import { api, setToken } from '../api.js';
import { useForm, TextField, FormMessage } from '../ui.jsx';

export function Login({ reason, onLogin }) {
  const form = useForm({ email: '', password: '' });
  async function submit(e) {
    e.preventDefault();
    const r = await form.submit((v) => api('POST', '/api/auth/login/', { email: v.email, password: v.password }));
    if (r) {
      setToken(r.access_token);
      onLogin(r.user);
    }
  }
  return (
    <main class="login">
      <form class="card login-card" onSubmit={submit} noValidate>
        <h1>tokenaudit</h1>
        <p class="sub">Sign in to the console</p>
        {reason && <p class="notice" role="status">{reason}</p>}
        <TextField form={form} name="email" label="Email" type="email" autoComplete="username" required autoFocus />
        <TextField form={form} name="password" label="Password" type="password" autoComplete="current-password" required />
        <FormMessage form={form} />
        <button class="primary block" type="submit" disabled={form.busy}>{form.busy ? 'Signing in…' : 'Sign in'}</button>
      </form>
    </main>
  );
}
