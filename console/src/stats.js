// Statistics (docs/API.md): {"totals":{...},"series":[{key..., counters}]}.
// A gateway that counts in a requested time zone also groups by hour,
// provider and group (tz=<IANA zone>, group_by=hour|day|model|user|provider|group);
// an older one refuses group_by=hour (400) and counts UTC days whatever tz says.
// The console asks once which kind it talks to: with zones, days and hours
// follow the browser's zone; without, days are UTC days and what the gateway
// cannot give is left out of the page.
import { get, ApiError } from './api.js';
import { ianaZone, isoUtc } from './format.js';

const probes = {};

/** {zoned, zone}: whether path (a statistics endpoint) counts in the browser's
 *  zone. zoned false also when the browser has no IANA zone to give. */
export function statsMode(path) {
  const zone = ianaZone();
  if (!zone) return Promise.resolve({ zoned: false, zone: 'UTC' });
  if (!probes[path]) {
    probes[path] = get(path, { group_by: 'hour', tz: zone, since: isoUtc(new Date(Date.now() - 3600000)) }).then(
      () => ({ zoned: true, zone }),
      (e) => {
        if (e instanceof ApiError && e.status === 400) return { zoned: false, zone: 'UTC' };
        delete probes[path];
        throw e;
      });
  }
  return probes[path];
}

/** GET a statistics answer in mode (statsMode's answer): tz added when zoned. */
export function stats(path, mode, params) {
  return get(path, mode.zoned ? { ...params, tz: mode.zone } : params);
}

/** The bucket of a series entry: its key, else the field named by group_by. */
export function bucket(e, groupBy) {
  if (e.key !== undefined && e.key !== null) return e.key;
  const field = { day: 'day', hour: 'hour', model: 'model_id', user: 'user_id', provider: 'provider_id', group: 'group_id' }[groupBy];
  return field ? e[field] ?? null : null;
}

/** A statistics answer, or null when the gateway does not have it (400 for a
 *  group_by it does not know, 404 for an endpoint it does not have). */
export async function optional(promise) {
  try {
    return await promise;
  } catch (e) {
    if (e instanceof ApiError && (e.status === 400 || e.status === 404)) return null;
    throw e;
  }
}
