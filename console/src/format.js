// Formatting helpers. Money stays a decimal string from the API end to end:
// arithmetic on it (sums, ratios) goes through BigInt nano-units, never
// through floating point.

const NANO = 1000000000n;

/** "12.5" -> 12500000000n (nano-units); null/"" -> null; malformed -> null. */
export function toNano(s) {
  if (s === null || s === undefined || s === '') return null;
  const m = /^(-?)(\d*)(?:\.(\d{0,9}))?$/.exec(String(s));
  if (!m || (m[2] === '' && !m[3])) return null;
  const v = BigInt(m[2] || '0') * NANO + BigInt((m[3] || '').padEnd(9, '0'));
  return m[1] ? -v : v;
}

/** 12500000000n -> "12.5" (the API's own shape: no trailing zeros). */
export function fromNano(n) {
  const neg = n < 0n;
  if (neg) n = -n;
  const whole = n / NANO;
  let frac = (n % NANO).toString().padStart(9, '0').replace(/0+$/, '');
  return (neg ? '-' : '') + whole.toString() + (frac ? '.' + frac : '');
}

/** Sum of money strings, as a money string. */
export function sumMoney(list) {
  let t = 0n;
  for (const s of list) t += toNano(s) || 0n;
  return fromNano(t);
}

/** A money string for display: thousands separated in the whole part only. */
export function money(s) {
  if (s === null || s === undefined) return '';
  const str = String(s);
  const m = /^(-?)(\d+)(\.\d+)?$/.exec(str);
  if (!m) return str;
  return m[1] + m[2].replace(/\B(?=(\d{3})+(?!\d))/g, ',') + (m[3] || '');
}

/** used/limit in per-mille (0..1000+), both money strings or integers; null when no limit. */
export function perMille(used, limit, isMoney) {
  if (limit === null || limit === undefined) return null;
  const u = isMoney ? toNano(used) || 0n : BigInt(used || 0);
  const l = isMoney ? toNano(limit) : BigInt(limit);
  if (l === null) return null;
  if (l === 0n) return u > 0n ? 1000 : 0;
  return Number((u * 1000n) / l);
}

/** Per-mille as a percentage string with one decimal, from integers only. */
export function pctText(pm) {
  return `${Math.floor(pm / 10)}.${pm % 10}%`;
}

export function int(n) {
  if (n === null || n === undefined) return '';
  return Number(n).toLocaleString();
}

/** Error rate of a statistics total, "0.0%" when there were no requests. */
export function errorRate(errors, requests) {
  if (!requests) return '0.0%';
  return pctText(Math.round((errors * 1000) / requests));
}

const fmtFull = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric',
  hour: '2-digit', minute: '2-digit', second: '2-digit',
});

const fmtShort = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});

/** RFC 3339 UTC -> local date and time in the browser's zone (short: no seconds). */
export function localTime(iso, short) {
  if (!iso) return '';
  const d = new Date(iso);
  return isNaN(d) ? iso : (short ? fmtShort : fmtFull).format(d);
}

/** "3 min ago", "in 2 days" relative to now. */
export function relTime(iso, now = Date.now()) {
  const d = new Date(iso);
  if (isNaN(d)) return '';
  const s = Math.round((d.getTime() - now) / 1000);
  const a = Math.abs(s);
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
  if (a < 60) return rtf.format(s, 'second');
  if (a < 3600) return rtf.format(Math.round(s / 60), 'minute');
  if (a < 86400) return rtf.format(Math.round(s / 3600), 'hour');
  return rtf.format(Math.round(s / 86400), 'day');
}

/** "Europe/Paris" (or the offset when the zone has no name). */
export function zoneName() {
  try { return Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time'; }
  catch { return 'local time'; }
}

/** A Date -> RFC 3339 UTC without fractions ("2026-11-26T13:09:17Z"), as the API takes it. */
export function isoUtc(d) {
  return d.toISOString().slice(0, 19) + 'Z';
}

/** "2026-11-26" of a Date's UTC day. */
export function utcDay(d) {
  return d.toISOString().slice(0, 10);
}

/** <input type=datetime-local> value (local time) -> RFC 3339 UTC, or '' */
export function localInputToIso(v) {
  if (!v) return '';
  const d = new Date(v);
  return isNaN(d) ? '' : isoUtc(d);
}

/** RFC 3339 UTC -> <input type=datetime-local> value in local time. */
export function isoToLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (isNaN(d)) return '';
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** The browser's IANA zone ("Europe/Paris"), or null when it has none to give. */
export function ianaZone() {
  try { return Intl.DateTimeFormat().resolvedOptions().timeZone || null; }
  catch { return null; }
}

const p2 = (n) => String(n).padStart(2, '0');

/** "2026-11-26" of a Date in the browser's zone (local) or in UTC. */
export function dayKey(d, local) {
  return local ? `${d.getFullYear()}-${p2(d.getMonth() + 1)}-${p2(d.getDate())}` : utcDay(d);
}

/** The last n days, oldest first: {keys: ["2026-11-20", ...], since: RFC 3339 of the
 *  first day's midnight} in the browser's zone (local) or in UTC. */
export function lastDays(n, local) {
  const now = new Date();
  const keys = [];
  let first = null;
  for (let i = n - 1; i >= 0; i--) {
    const d = local ? new Date(now.getFullYear(), now.getMonth(), now.getDate() - i)
      : new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() - i));
    if (!first) first = d;
    keys.push(dayKey(d, local));
  }
  return { keys, since: isoUtc(first) };
}

/** The start of the day after key ("2026-11-26"), RFC 3339, local or UTC. */
export function dayEnd(key, local) {
  const [y, m, d] = key.split('-').map(Number);
  return isoUtc(local ? new Date(y, m - 1, d + 1) : new Date(Date.UTC(y, m - 1, d + 1)));
}

/** The start of day key, RFC 3339, local or UTC. */
export function dayStart(key, local) {
  const [y, m, d] = key.split('-').map(Number);
  return isoUtc(local ? new Date(y, m - 1, d) : new Date(Date.UTC(y, m - 1, d)));
}

/** The last n whole hours up to now, oldest first, as Dates of their start. */
export function lastHours(n) {
  const h = new Date();
  h.setMinutes(0, 0, 0);
  const out = [];
  for (let i = n - 1; i >= 0; i--) out.push(new Date(h.getTime() - i * 3600000));
  return out;
}

/** "5 s", "3 min", "2 h 5 min", "4 d 3 h" from seconds. */
export function duration(s) {
  if (s === null || s === undefined) return '—';
  s = Math.max(0, Math.floor(s));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}
