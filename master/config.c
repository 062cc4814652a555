/*
 * config.c - the settings table and everything driven by it (config.h).
 *
 * Each setting is one row: name, type, storage offset in ta_config_t,
 * default (as text, parsed by the same code as the file, so the docs show
 * exactly what the parser accepts), bounds, choices, whether a SIGHUP reload
 * applies it, and its help text.
 */
#include "master/config.h"
#include "master/man.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum ctype { CT_STRING, CT_INT, CT_SIZE, CT_BOOL, CT_ENUM, CT_DURATION_MS } ctype_t;

typedef struct setting {
    const char *name;
    ctype_t type;
    size_t off;
    size_t cap; /* strings: buffer size */
    const char *def;
    int64_t min, max;
    const char *const *choices; /* enums: NULL-terminated; the index is stored */
    bool reload;
    const char *help;
} setting_t;

static const char *const durability_choices[] = {"relaxed", "strict", NULL};
static const char *const reserve_choices[] = {"estimate", "strict", NULL};
static const char *const log_choices[] = {"debug", "info", "warn", "error", NULL};
static const char *const disconnect_choices[] = {"drain", "abort", NULL};
static const char *const engine_choices[] = {"h2o", "curl", NULL}; /* = enum ta_up_engine */

/* Where an installed build keeps the console's files (docs/CONFIG.md). */
#define TA_CONSOLE_INSTALL_DIR "/usr/share/tokenaudit/console"

#define OFF(f) offsetof(ta_config_t, f)
#define STR(f) OFF(f), sizeof(((ta_config_t *)0)->f)
#define NUM(f) OFF(f), 0
#define KiB 1024LL
#define MiB (1024LL * 1024)
#define GiB (1024LL * 1024 * 1024)

static const setting_t settings[] = {
    {"listen", CT_STRING, STR(listen), "127.0.0.1:8080", 0, 0, NULL, true,
     "Comma-separated listen addresses: `host:port`, `[v6]:port`, `http://host:port`, or "
     "`https://host:port` (TLS with ALPN h2, needs `tls_cert_file` and `tls_key_file`)."},
    {"admin_listen", CT_STRING, STR(admin_listen), "", 0, 0, NULL, true,
     "Optional separate listen addresses for `/api`. When set, `/api` is served only there and "
     "`/v1` only on `listen`; `/healthz` and `/metrics` on both."},
    {"tls_cert_file", CT_STRING, STR(tls_cert_file), "", 0, 0, NULL, true,
     "PEM certificate chain for `https://` listeners."},
    {"tls_key_file", CT_STRING, STR(tls_key_file), "", 0, 0, NULL, true,
     "PEM private key for `https://` listeners."},
    {"workers", CT_INT, NUM(workers), "0", 0, 256, NULL, true,
     "Worker processes; 0 = one per online CPU."},
    {"data_dir", CT_STRING, STR(data_dir), "./data", 0, 0, NULL, false,
     "Data directory (LMDB environments, ring, secrets), created by `tokenaudit init`."},
    {"durability", CT_ENUM, NUM(durability), "relaxed", 0, 0, durability_choices, false,
     "`relaxed`: commits are synced every `sync_interval_ms`; `strict`: every commit is synced."},
    {"sync_interval_ms", CT_DURATION_MS, NUM(sync_interval_ms), "100", 1, 60000, NULL, false,
     "How often billing syncs both environments to disk (relaxed durability)."},
    {"ledger_writemap", CT_BOOL, NUM(ledger_writemap), "off", 0, 0, NULL, false,
     "Map the LMDB environments writable (faster; a stray pointer write can corrupt them)."},
    {"ledger_map_size_mb", CT_INT, NUM(ledger_map_size_mb), "1024", 16, 1048576, NULL, false,
     "Maximum size of the ledger environment, MiB."},
    {"audit_map_size_mb", CT_INT, NUM(audit_map_size_mb), "8192", 16, 16777216, NULL, false,
     "Maximum size of the audit environment, MiB."},
    {"reserve", CT_ENUM, NUM(reserve), "strict", 0, 0, reserve_choices, true,
     "Every request holds its worst-case cost (all its choices at the output limit the gateway "
     "sends upstream). `strict`: a request is trimmed to, or refused beyond, what the budget has "
     "left, so a quota's cost and token limits are never exceeded; `estimate`: a request runs "
     "untrimmed while any budget is left, so a limit is exceeded by at most one request's worst case."},
    {"quota_timezone", CT_STRING, STR(quota_timezone), "UTC", 0, 0, NULL, false,
     "Timezone of calendar periods (day, week, month), e.g. `UTC`, `Europe/Paris`."},
    {"max_body_size", CT_SIZE, NUM(max_body_size), "4MiB", 1 * KiB, 1 * GiB, NULL, true,
     "Largest request body accepted (bytes; suffixes k, M, G, KiB, MiB, GiB); larger gets 413."},
    {"jwt_ttl_s", CT_INT, NUM(jwt_ttl_s), "43200", 60, 31536000, NULL, true,
     "Lifetime of admin API tokens, seconds."},
    {"jwt_secret_file", CT_STRING, STR(jwt_secret_file), "", 0, 0, NULL, false,
     "File holding the 32-byte JWT secret; empty = `DATA_DIR/jwt.secret`."},
    {"master_key_file", CT_STRING, STR(master_key_file), "", 0, 0, NULL, false,
     "File holding the 32-byte key that seals provider API keys; empty = `DATA_DIR/master.key`."},
    {"log_level", CT_ENUM, NUM(log_level), "info", 0, 0, log_choices, true,
     "Least severe level logged."},
    {"shutdown_timeout_ms", CT_DURATION_MS, NUM(shutdown_timeout_ms), "30000", 0, 3600000, NULL,
     true,
     "On SIGTERM or reload, how long a worker may finish in-flight requests before it is "
     "killed."},
    {"on_disconnect", CT_ENUM, NUM(on_disconnect), "drain", 0, 0, disconnect_choices, true,
     "When a client leaves mid-stream: `drain` reads the upstream to its end to charge what the "
     "provider charges; `abort` cancels it and charges an estimate."},
    {"stream_drain_timeout_ms", CT_DURATION_MS, NUM(stream_drain_timeout_ms), "60000", 0, 3600000,
     NULL, true, "Bound on draining an upstream stream after the client left."},
    {"audit_retention_days", CT_INT, NUM(audit_retention_days), "0", 0, 36500, NULL, false,
     "Delete audit records older than this many days; 0 = keep forever."},
    {"warning_webhook_url", CT_STRING, STR(warning_webhook_url), "", 0, 0, NULL, false,
     "URL that receives a POST when a quota crosses a warning threshold; empty = none."},
    {"warning_webhook_timeout_ms", CT_DURATION_MS, NUM(warning_webhook_timeout_ms), "5000", 100, 600000,
     NULL, false, "Timeout of one warning webhook POST."},
    {"warning_webhook_attempts", CT_INT, NUM(warning_webhook_attempts), "3", 1, 100, NULL, false,
     "POST attempts per warning (with backoff) before it is marked failed."},
    {"ring_slots", CT_INT, NUM(ring_slots), "65536", 1024, 16777216, NULL, false,
     "Slots in the worker-to-billing event ring (a power of two)."},
    {"upstream_max_connections", CT_INT, NUM(upstream_max_connections), "0", 0, 65536, NULL, true,
     "Idle upstream keep-alive connections kept per worker; 0 = automatic (the `h2o` engine keeps "
     "up to 256, the `curl` engine 4 per request in flight, so the pool follows the load). A pool "
     "smaller than the concurrency closes and reopens connections on every request (about twice "
     "the CPU per request)."},
    {"upstream_engine", CT_ENUM, NUM(upstream_engine), "h2o", 0, 0, engine_choices, true,
     "HTTP client of `/v1` provider calls: `h2o` (the worker's own event loop, sockets and TLS; "
     "docs/ARCHITECTURE.md) or `curl` (libcurl driven by the same loop). Provider test and model "
     "sync always use curl."},
    {"upstream_ca_file", CT_STRING, STR(upstream_ca_file), "", 0, 0, NULL, true,
     "PEM file of certificate authorities trusted for `https://` providers in addition to the "
     "system's store (a private CA, or a provider's self-signed certificate); empty = the "
     "system's store only. A file that cannot be read stops a worker from starting."},
    {"health_failures", CT_INT, NUM(health_failures), "3", 1, 1000, NULL, true,
     "Failed calls in a row (connect errors, timeouts, broken answers, HTTP 5xx; not 4xx) after "
     "which a route (a provider and upstream model) is down: it cools down and requests skip it."},
    {"health_cooldown_s", CT_INT, NUM(health_cooldown_s), "30", 1, 86400, NULL, true,
     "Seconds a down route is skipped. Then one request is its trial (only one, across all "
     "workers), or a probe when `health_check_interval_s` is set; success brings it back, failure "
     "starts the cooldown again."},
    {"health_check_interval_s", CT_INT, NUM(health_check_interval_s), "0", 0, 86400, NULL, true,
     "0: a client request is the trial of a route whose cooldown is over. Above 0: a background "
     "probe of the provider (its models list, like `POST /api/admin/providers/{id}/test/`) every "
     "this many seconds decides instead, and no client request goes to a down route."},
    {"health_degraded_percent", CT_INT, NUM(health_degraded_percent), "10", 1, 100, NULL, true,
     "A route whose calls failed at least this much over the last 5 minutes (and at least "
     "`health_failures` of them) is degraded (still used); below half of it, healthy again."},
    {"health_webhook_url", CT_STRING, STR(health_webhook_url), "", 0, 0, NULL, true,
     "URL that receives a POST on every change of a route's health state (healthy, degraded, "
     "down); empty = none. Timeout and attempts as `warning_webhook_timeout_ms` and "
     "`warning_webhook_attempts`."},
    {"pbkdf2_iterations", CT_INT, NUM(pbkdf2_iterations), "210000", 1000, 10000000, NULL, true,
     "PBKDF2-HMAC-SHA256 iterations for new password hashes."},
    {"password_threads", CT_INT, NUM(password_threads), "2", 1, 64, NULL, true,
     "Threads per worker that run password hashes (login, password writes) off the event loop. "
     "Each hash holds one for `pbkdf2_iterations` worth of CPU; `/v1` keeps being served meanwhile."},
    {"password_queue", CT_INT, NUM(password_queue), "16", 1, 4096, NULL, true,
     "Password jobs a worker lets wait for a free `password_threads` thread; while that many "
     "wait, a new one is answered 503 `server_busy` with `Retry-After` at once."},
    {"login_max_failures", CT_INT, NUM(login_max_failures), "5", 1, 1000000, NULL, true,
     "Failed logins in a row for one account (from any address) before its logins must wait: "
     "429 `login_throttled` with `Retry-After`, answered before any password hash runs. A "
     "successful login clears the count."},
    {"login_address_max_failures", CT_INT, NUM(login_address_max_failures), "20", 1, 1000000, NULL,
     true,
     "Failed logins in a row from one client address (all accounts; IPv6 per /64) before logins "
     "from it must wait. Its own successful logins do not clear it."},
    {"login_backoff_ms", CT_DURATION_MS, NUM(login_backoff_ms), "1000", 1, 3600000, NULL, true,
     "The first wait once an account or an address reached its failures; each further failure "
     "doubles it."},
    {"login_backoff_max_ms", CT_DURATION_MS, NUM(login_backoff_max_ms), "60000", 1, 86400000, NULL,
     true,
     "The longest wait of an account, so nobody can lock a user out for longer per failure. "
     "Failures are forgotten after this long without one once the wait is over."},
    {"login_address_backoff_max_ms", CT_DURATION_MS, NUM(login_address_backoff_max_ms), "900000", 1,
     86400000, NULL, true,
     "The longest wait of a client address. Longer than `login_backoff_max_ms`, so one address "
     "keeps an account waiting a small part of the time at most."},
    {"console", CT_BOOL, NUM(console), "on", 0, 0, NULL, true,
     "Serve the web console under `/console/` (and redirect `/` there) on the listeners that "
     "serve `/api`; `off` for API-only hosts."},
    {"console_dir", CT_STRING, STR(console_dir), "", 0, 0, NULL, true,
     "Directory of the console's built files (`index.html`, `assets/`). Empty = `console/` "
     "beside the `tokenauditd` executable (a build tree) when it holds an `index.html`, else "
     "`" TA_CONSOLE_INSTALL_DIR "` (an install). A directory given here must hold an "
     "`index.html`."},
    {"test_clock_offset_s", CT_INT, NUM(test_clock_offset_s), "0", -10000000000LL, 10000000000LL,
     NULL, false,
     "TESTS ONLY: seconds added to the wall clock (period rollover tests). Never set in "
     "production."},
};

static const char *type_name(ctype_t t)
{
    switch (t) {
    case CT_STRING: return "string";
    case CT_INT: return "int";
    case CT_SIZE: return "size";
    case CT_BOOL: return "bool";
    case CT_ENUM: return "enum";
    case CT_DURATION_MS: return "duration (ms)";
    }
    return "?";
}

static const setting_t *find_setting(const char *name)
{
    for (size_t i = 0; i < TA_ARRAY_SIZE(settings); i++)
        if (strcmp(settings[i].name, name) == 0)
            return &settings[i];
    return NULL;
}

/* Decimal int64 with an optional suffix from units[]; "" unit = multiplier 1. */
typedef struct unit {
    const char *suffix;
    int64_t mult;
} unit_t;

static const unit_t size_units[] = {{"", 1},          {"b", 1},         {"k", KiB},
                                    {"kb", KiB},      {"kib", KiB},     {"m", MiB},
                                    {"mb", MiB},      {"mib", MiB},     {"g", GiB},
                                    {"gb", GiB},      {"gib", GiB},     {NULL, 0}};
static const unit_t duration_units[] = {{"", 1},          {"ms", 1},          {"s", 1000},
                                        {"m", 60000},     {"min", 60000},     {"h", 3600000},
                                        {NULL, 0}};
static const unit_t plain_units[] = {{"", 1}, {NULL, 0}};

static int parse_int(const char *v, const unit_t *units, int64_t *out)
{
    const char *p = v;
    bool neg = false;
    if (*p == '-' || *p == '+')
        neg = *p++ == '-';
    if (!isdigit((unsigned char)*p))
        return -1;
    uint64_t n = 0;
    for (; isdigit((unsigned char)*p); p++) {
        if (n > (UINT64_MAX - 9) / 10)
            return -1;
        n = n * 10 + (uint64_t)(*p - '0');
    }
    while (*p == ' ' || *p == '\t')
        p++;
    for (const unit_t *u = units; u->suffix != NULL; u++) {
        if (strcasecmp(p, u->suffix) != 0)
            continue;
        if (n > (uint64_t)INT64_MAX / (uint64_t)u->mult)
            return -1;
        int64_t r = (int64_t)(n * (uint64_t)u->mult);
        *out = neg ? -r : r;
        return 0;
    }
    return -1;
}

static void format_bound(const setting_t *s, int64_t v, char *buf, size_t cap)
{
    if (s->type == CT_SIZE && v >= MiB && v % MiB == 0)
        snprintf(buf, cap, "%lldMiB", (long long)(v / MiB));
    else if (s->type == CT_SIZE && v >= KiB && v % KiB == 0)
        snprintf(buf, cap, "%lldKiB", (long long)(v / KiB));
    else
        snprintf(buf, cap, "%lld", (long long)v);
}

static int set_one(ta_config_t *c, const setting_t *s, const char *value, const char *where,
                   ta_err_t *err)
{
    char *base = (char *)c + s->off;
    int64_t n;
    char lo[32], hi[32];

    switch (s->type) {
    case CT_STRING: {
        size_t len = strlen(value);
        if (len >= s->cap)
            return ta_err_set(err, s->name, "max_length", "%s: %s: longer than %zu bytes", where,
                              s->name, s->cap - 1);
        memcpy(base, value, len + 1);
        return 0;
    }
    case CT_BOOL: {
        static const char *const yes[] = {"on", "true", "yes", "1"}, *const no[] = {"off", "false",
                                                                                    "no", "0"};
        for (size_t i = 0; i < TA_ARRAY_SIZE(yes); i++) {
            if (strcasecmp(value, yes[i]) == 0) {
                *(bool *)base = true;
                return 0;
            }
            if (strcasecmp(value, no[i]) == 0) {
                *(bool *)base = false;
                return 0;
            }
        }
        return ta_err_set(err, s->name, "type", "%s: %s: expected on/off, got '%s'", where, s->name,
                          value);
    }
    case CT_ENUM:
        for (int i = 0; s->choices[i] != NULL; i++) {
            if (strcasecmp(value, s->choices[i]) == 0) {
                *(int *)base = i;
                return 0;
            }
        }
        {
            char list[128] = "";
            size_t used = 0;
            for (int i = 0; s->choices[i] != NULL && used < sizeof(list); i++)
                used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", i ? "|" : "",
                                         s->choices[i]);
            return ta_err_set(err, s->name, "enum", "%s: %s: must be one of %s, got '%s'", where,
                              s->name, list, value);
        }
    case CT_INT:
    case CT_SIZE:
    case CT_DURATION_MS: {
        const unit_t *units = s->type == CT_SIZE          ? size_units
                              : s->type == CT_DURATION_MS ? duration_units
                                                          : plain_units;
        if (parse_int(value, units, &n) != 0)
            return ta_err_set(err, s->name, "type", "%s: %s: expected %s, got '%s'", where,
                              s->name, s->type == CT_SIZE          ? "a size such as 4MiB"
                                       : s->type == CT_DURATION_MS ? "a duration such as 500ms or 5s"
                                                                   : "an integer",
                              value);
        format_bound(s, s->min, lo, sizeof(lo));
        format_bound(s, s->max, hi, sizeof(hi));
        if (n < s->min)
            return ta_err_set(err, s->name, "min", "%s: %s: %s is below the minimum %s", where,
                              s->name, value, lo);
        if (n > s->max)
            return ta_err_set(err, s->name, "max", "%s: %s: %s is above the maximum %s", where,
                              s->name, value, hi);
        *(int64_t *)base = n;
        return 0;
    }
    }
    return TA_EINVAL;
}

void ta_config_defaults(ta_config_t *c)
{
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < TA_ARRAY_SIZE(settings); i++) {
        int rc = set_one(c, &settings[i], settings[i].def, "default", NULL);
        TA_BUG_ON(rc != 0); /* a default outside its own bounds is a bug in the table */
    }
}

int ta_config_set(ta_config_t *c, const char *name, const char *value, const char *where,
                  ta_err_t *err)
{
    const setting_t *s = find_setting(name);
    if (s == NULL)
        return ta_err_set(err, name, "unknown", "%s: unknown setting '%s'", where, name);
    return set_one(c, s, value, where, err);
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

int ta_config_parse_file(ta_config_t *c, const char *path, ta_err_t *err)
{
    bool seen[TA_ARRAY_SIZE(settings)] = {false};
    unsigned seen_line[TA_ARRAY_SIZE(settings)] = {0};
    char line[4096], where[TA_CONF_STR + 32];
    unsigned lineno = 0;
    int ret = 0;

    FILE *f = fopen(path, "r");
    if (f == NULL)
        return ta_err_set(err, "", "file", "%s: cannot open: %s", path, strerror(errno));
    snprintf(c->path, sizeof(c->path), "%s", path);

    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        snprintf(where, sizeof(where), "%s:%u", path, lineno);
        size_t len = strlen(line);
        if (len == sizeof(line) - 1 && line[len - 1] != '\n' && !feof(f)) {
            ret = ta_err_set(err, "", "syntax", "%s: line longer than %zu bytes", where,
                             sizeof(line) - 2);
            goto Exit;
        }
        /* A '#' at the start or after blank space starts a comment; one
         * inside a word (a URL fragment) does not. */
        for (char *p = line; *p != '\0'; p++) {
            if (*p == '#' && (p == line || p[-1] == ' ' || p[-1] == '\t')) {
                *p = '\0';
                break;
            }
        }
        char *name = trim(line);
        if (*name == '\0')
            continue;
        char *value = name;
        while (*value != '\0' && *value != ' ' && *value != '\t')
            value++;
        if (*value != '\0')
            *value++ = '\0';
        value = trim(value);
        size_t vlen = strlen(value);
        if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"') {
            value[vlen - 1] = '\0';
            value++;
        }
        const setting_t *s = find_setting(name);
        if (s == NULL) {
            ret = ta_err_set(err, name, "unknown", "%s: unknown setting '%s'", where, name);
            goto Exit;
        }
        size_t idx = (size_t)(s - settings);
        if (seen[idx]) {
            ret = ta_err_set(err, name, "duplicate", "%s: %s: already set on line %u", where, name,
                             seen_line[idx]);
            goto Exit;
        }
        if (*value == '\0' && s->type != CT_STRING) {
            ret = ta_err_set(err, name, "type", "%s: %s: missing value", where, name);
            goto Exit;
        }
        seen[idx] = true;
        seen_line[idx] = lineno;
        if ((ret = set_one(c, s, value, where, err)) != 0)
            goto Exit;
    }
    if (ferror(f))
        ret = ta_err_set(err, "", "file", "%s: read error", path);

Exit:
    fclose(f);
    return ret;
}

static void env_name(const char *name, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "TOKENAUDIT_%s", name);
    for (size_t i = 0; i < n && i < cap; i++)
        buf[i] = (char)toupper((unsigned char)buf[i]);
}

int ta_config_apply_env(ta_config_t *c, ta_err_t *err)
{
    char var[96], where[128];
    for (size_t i = 0; i < TA_ARRAY_SIZE(settings); i++) {
        env_name(settings[i].name, var, sizeof(var));
        const char *v = getenv(var);
        if (v == NULL)
            continue;
        snprintf(where, sizeof(where), "environment %s", var);
        int rc = set_one(c, &settings[i], v, where, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int ta_listen_parse(const char *spec, const char *setting, ta_listen_addr_t *out, size_t cap,
                    size_t *n, ta_err_t *err)
{
    char buf[TA_CONF_STR];
    snprintf(buf, sizeof(buf), "%s", spec);
    *n = 0;
    for (char *tok = buf, *next; tok != NULL; tok = next) {
        next = strchr(tok, ',');
        if (next != NULL)
            *next++ = '\0';
        char *item = trim(tok);
        if (*item == '\0')
            continue;
        if (*n == cap)
            return ta_err_set(err, setting, "max", "%s: more than %zu addresses", setting, cap);
        ta_listen_addr_t *a = &out[*n];
        memset(a, 0, sizeof(*a));
        if (strncasecmp(item, "https://", 8) == 0) {
            a->tls = true;
            item += 8;
        } else if (strncasecmp(item, "http://", 7) == 0) {
            item += 7;
        }
        char *colon;
        const char *host = item;
        if (*item == '[') {
            char *close = strchr(item, ']');
            if (close == NULL || close[1] != ':')
                return ta_err_set(err, setting, "format", "%s: '%s': expected [v6addr]:port",
                                  setting, item);
            *close = '\0';
            host = item + 1;
            colon = close + 1;
        } else {
            colon = strrchr(item, ':');
            if (colon == NULL)
                return ta_err_set(err, setting, "format", "%s: '%s': expected host:port", setting,
                                  item);
            *colon = '\0';
        }
        int64_t port;
        if (parse_int(colon + 1, plain_units, &port) != 0 || port < 0 || port > 65535)
            return ta_err_set(err, setting, "format", "%s: '%s': bad port '%s'", setting, host,
                              colon + 1);
        if (strlen(host) >= sizeof(a->host))
            return ta_err_set(err, setting, "format", "%s: host name too long", setting);
        snprintf(a->host, sizeof(a->host), "%s", strcmp(host, "*") == 0 ? "" : host);
        snprintf(a->port, sizeof(a->port), "%d", (int)port);
        (*n)++;
    }
    return 0;
}

/* console_dir "" -> console/ beside the executable when it holds a build,
 * else the install location. A directory given explicitly must hold one. */
static int resolve_console_dir(ta_config_t *c, ta_err_t *err)
{
    char exe[PATH_MAX], probe[PATH_MAX + 32];
    if (c->console_dir[0] != '\0') {
        snprintf(probe, sizeof(probe), "%s/index.html", c->console_dir);
        if (access(probe, R_OK) != 0)
            return ta_err_set(err, "console_dir", "missing",
                              "console_dir: %s has no index.html (build the console, or set "
                              "console = off)", c->console_dir);
        return 0;
    }
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash != NULL) {
            *slash = '\0';
            snprintf(probe, sizeof(probe), "%s/console/index.html", exe);
            size_t len = strlen(exe);
            if (access(probe, R_OK) == 0 && len + sizeof("/console") <= sizeof(c->console_dir)) {
                memcpy(c->console_dir, exe, len);
                memcpy(c->console_dir + len, "/console", sizeof("/console"));
                return 0;
            }
        }
    }
    snprintf(c->console_dir, sizeof(c->console_dir), "%s", TA_CONSOLE_INSTALL_DIR);
    return 0;
}

int ta_config_finish(ta_config_t *c, ta_err_t *err)
{
    int rc;
    if (c->console && (rc = resolve_console_dir(c, err)) != 0)
        return rc;
    if (c->jwt_secret_file[0] == '\0')
        snprintf(c->jwt_secret_file, sizeof(c->jwt_secret_file), "%.480s/jwt.secret", c->data_dir);
    if (c->master_key_file[0] == '\0')
        snprintf(c->master_key_file, sizeof(c->master_key_file), "%.480s/master.key", c->data_dir);
    if (c->data_dir[0] == '\0')
        return ta_err_set(err, "data_dir", "required", "data_dir: must not be empty");
    if ((rc = ta_listen_parse(c->listen, "listen", c->listen_addrs, TA_MAX_LISTEN, &c->nlisten,
                              err)) != 0)
        return rc;
    if (c->nlisten == 0)
        return ta_err_set(err, "listen", "required", "listen: at least one address is needed");
    if ((rc = ta_listen_parse(c->admin_listen, "admin_listen", c->admin_addrs, TA_MAX_LISTEN,
                              &c->nadmin, err)) != 0)
        return rc;
    bool tls = false;
    for (size_t i = 0; i < c->nlisten; i++)
        tls |= c->listen_addrs[i].tls;
    for (size_t i = 0; i < c->nadmin; i++)
        tls |= c->admin_addrs[i].tls;
    if (tls && (c->tls_cert_file[0] == '\0' || c->tls_key_file[0] == '\0'))
        return ta_err_set(err, c->tls_cert_file[0] == '\0' ? "tls_cert_file" : "tls_key_file",
                          "required", "an https:// listener needs tls_cert_file and tls_key_file");
    if ((c->ring_slots & (c->ring_slots - 1)) != 0)
        return ta_err_set(err, "ring_slots", "format", "ring_slots: %lld is not a power of two",
                          (long long)c->ring_slots);
    return 0;
}

int ta_config_load(ta_config_t *c, const char *path, ta_err_t *err)
{
    int rc;
    ta_config_defaults(c);
    if (path != NULL && (rc = ta_config_parse_file(c, path, err)) != 0)
        return rc;
    if ((rc = ta_config_apply_env(c, err)) != 0)
        return rc;
    return ta_config_finish(c, err);
}

unsigned ta_config_workers(const ta_config_t *c)
{
    if (c->workers > 0)
        return (unsigned)c->workers;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    return n > 256 ? 256u : (unsigned)n;
}

int ta_config_keep_fixed(const ta_config_t *old, ta_config_t *next)
{
    int changed = 0;
    for (size_t i = 0; i < TA_ARRAY_SIZE(settings); i++) {
        const setting_t *s = &settings[i];
        if (s->reload)
            continue;
        size_t size = s->type == CT_STRING  ? s->cap
                      : s->type == CT_BOOL ? sizeof(bool)
                      : s->type == CT_ENUM ? sizeof(int)
                                           : sizeof(int64_t);
        const char *a = (const char *)old + s->off;
        char *b = (char *)next + s->off;
        bool differ = s->type == CT_STRING ? strcmp(a, b) != 0 : memcmp(a, b, size) != 0;
        if (!differ)
            continue;
        ta_log(TA_LOG_WARN, "reload: %s changed but needs a restart; keeping the running value",
               s->name);
        memcpy(b, a, size);
        changed++;
    }
    return changed;
}

static void print_escaped(FILE *out, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '|')
            fputs("\\|", out);
        else
            fputc(*s, out);
    }
}

/* A default shown in the docs: the two secret paths default to files in
 * data_dir (resolved by ta_config_finish), an empty string says so. */
static const char *default_text(const setting_t *s)
{
    if (s->def[0] != '\0')
        return NULL;
    return strcmp(s->name, "jwt_secret_file") == 0   ? "DATA_DIR/jwt.secret"
           : strcmp(s->name, "master_key_file") == 0 ? "DATA_DIR/master.key"
                                                     : "(empty)";
}

void ta_config_print_docs(FILE *out)
{
    char var[96], lo[32], hi[32];
    fputs("# tokenaudit configuration\n\n"
          "<!-- Generated by `tokenauditd --print-config-docs` from the settings table in\n"
          "     master/config.c. Do not edit by hand. -->\n\n"
          "`tokenauditd -c FILE` reads a flat file of `name value` lines; `#` starts a comment,\n"
          "blank lines are ignored, each setting may appear once, and a value may be wrapped in\n"
          "double quotes (`\"\"` for an empty string). Every setting can be overridden by the\n"
          "environment variable shown, which wins over the file. `tokenauditd --check-config -c "
          "FILE`\n"
          "validates a file (and the environment) and names `file:line` and the setting on "
          "error.\n\n"
          "Sizes accept `k`, `M`, `G` (or `KiB`, `MiB`, `GiB`; all binary). Durations are\n"
          "milliseconds, or take `ms`, `s`, `m`, `h`. Booleans: `on`/`off`, `true`/`false`, "
          "`yes`/`no`, `1`/`0`.\n\n"
          "SIGHUP re-reads the file: settings marked *reload: yes* take effect in a new "
          "generation of\n"
          "workers (the old one finishes its requests); the others need a restart and keep "
          "their running\n"
          "value (a warning is logged). An invalid file is logged and ignored.\n\n"
          "| setting | type | default | range / choices | environment | reload | description |\n"
          "|---|---|---|---|---|---|---|\n",
          out);
    for (size_t i = 0; i < TA_ARRAY_SIZE(settings); i++) {
        const setting_t *s = &settings[i];
        env_name(s->name, var, sizeof(var));
        fprintf(out, "| `%s` | %s | ", s->name, type_name(s->type));
        if (default_text(s) != NULL)
            fprintf(out, strcmp(default_text(s), "(empty)") == 0 ? "%s" : "`%s`", default_text(s));
        else
            fprintf(out, "`%s`", s->def);
        fputs(" | ", out);
        if (s->type == CT_ENUM) {
            for (int j = 0; s->choices[j] != NULL; j++)
                fprintf(out, "%s`%s`", j ? ", " : "", s->choices[j]);
        } else if (s->type == CT_INT || s->type == CT_SIZE || s->type == CT_DURATION_MS) {
            format_bound(s, s->min, lo, sizeof(lo));
            format_bound(s, s->max, hi, sizeof(hi));
            fprintf(out, "%s … %s", lo, hi);
        }
        fprintf(out, " | `%s` | %s | ", var, s->reload ? "yes" : "no");
        print_escaped(out, s->help);
        fputs(" |\n", out);
    }
}

void ta_config_print_man(FILE *out)
{
    char var[96], lo[32], hi[32], line[256];
    ta_man_text(out, "`tokenauditd -c FILE` reads a flat file of `name value` lines; `#` starts a "
                     "comment, each setting may appear once, and a value may be wrapped in double "
                     "quotes. The environment variable shown with each setting wins over the "
                     "file. Sizes accept k, M, G (binary); durations are milliseconds or take ms, "
                     "s, m, h; booleans are on/off, true/false, yes/no, 1/0. Settings marked "
                     "reload: yes take effect at SIGHUP; the others need a restart.\n");
    for (size_t i = 0; i < TA_ARRAY_SIZE(settings); i++) {
        const setting_t *s = &settings[i];
        env_name(s->name, var, sizeof(var));
        fprintf(out, ".TP\n\\fB%s\\fR \\fI%s\\fR\n", s->name, type_name(s->type));
        ta_man_text(out, s->help);
        fputs("\n.br\n", out);
        if (default_text(s) != NULL)
            snprintf(line, sizeof(line), "Default: %s.", default_text(s));
        else
            snprintf(line, sizeof(line), "Default: `%s`.", s->def);
        ta_man_text(out, line);
        if (s->type == CT_ENUM) {
            fputs(" Choices:", out);
            for (int j = 0; s->choices[j] != NULL; j++) {
                snprintf(line, sizeof(line), "%s `%s`", j ? "," : "", s->choices[j]);
                ta_man_text(out, line);
            }
            fputc('.', out);
        } else if (s->type == CT_INT || s->type == CT_SIZE || s->type == CT_DURATION_MS) {
            format_bound(s, s->min, lo, sizeof(lo));
            format_bound(s, s->max, hi, sizeof(hi));
            snprintf(line, sizeof(line), " Range: %s to %s.", lo, hi);
            ta_man_text(out, line);
        }
        snprintf(line, sizeof(line), " Environment: `%s`. Reload: %s.\n", var,
                 s->reload ? "yes" : "no");
        ta_man_text(out, line);
    }
}
