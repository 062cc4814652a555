/*
 * config.h - every setting of tokenauditd and the tokenaudit CLI, described
 * once in a table (master/config.c) that drives the file parser, the
 * environment overrides, --check-config, the reload rules and
 * --print-config-docs (docs/CONFIG.md).
 *
 * File syntax: one `name value` per line, `#` starts a comment (anywhere
 * outside a value's first character), blank lines ignored, each setting at
 * most once per file. The value is the rest of the line, trimmed.
 * Environment: TOKENAUDIT_<NAME> (name upper-cased) overrides the file.
 *
 * Callers: master and CLI (plain data; children receive a copy through fork).
 */
#ifndef TA_CONFIG_H
#define TA_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "schema/ta.h"

#define TA_CONF_STR 512
#define TA_MAX_LISTEN 16

enum { TA_DURABILITY_RELAXED = 0, TA_DURABILITY_STRICT = 1 };
/* reserve uses enum ta_reserve of ledger/quota.h: 0 estimate, 1 strict. */
enum { TA_ON_DISCONNECT_DRAIN = 0, TA_ON_DISCONNECT_ABORT = 1 };

/* One parsed listen address: "host:port", "[v6]:port", "https://host:port"
 * (TLS, needs tls_cert_file and tls_key_file) or "http://host:port". */
typedef struct ta_listen_addr {
    char host[256]; /* "" = any address */
    char port[8];
    bool tls;
} ta_listen_addr_t;

typedef struct ta_config {
    char listen[TA_CONF_STR];
    char admin_listen[TA_CONF_STR];
    char tls_cert_file[TA_CONF_STR];
    char tls_key_file[TA_CONF_STR];
    int64_t workers;            /* 0 in the file = one per core; see ta_config_workers() */
    char data_dir[TA_CONF_STR];
    int durability;             /* TA_DURABILITY_* */
    int64_t sync_interval_ms;
    bool ledger_writemap;
    int64_t ledger_map_size_mb;
    int64_t audit_map_size_mb;
    int reserve;                /* enum ta_reserve (ledger/quota.h) */
    char quota_timezone[64];
    int64_t max_body_size;      /* bytes */
    int64_t jwt_ttl_s;
    char jwt_secret_file[TA_CONF_STR]; /* resolved: "" -> DATA_DIR/jwt.secret */
    char master_key_file[TA_CONF_STR]; /* resolved: "" -> DATA_DIR/master.key */
    int log_level;              /* TA_LOG_* */
    int64_t shutdown_timeout_ms;
    int on_disconnect;          /* TA_ON_DISCONNECT_* */
    int64_t stream_drain_timeout_ms;
    int64_t audit_retention_days;
    char warning_webhook_url[TA_CONF_STR];
    int64_t warning_webhook_timeout_ms;
    int64_t warning_webhook_attempts;
    int64_t ring_slots;
    int64_t upstream_max_connections;
    int upstream_engine;        /* enum ta_up_engine (worker/upstream.h) */
    char upstream_ca_file[TA_CONF_STR];
    int64_t health_failures;    /* provider route health (ledger/health.h) */
    int64_t health_cooldown_s;
    int64_t health_check_interval_s;
    int64_t health_degraded_percent;
    char health_webhook_url[TA_CONF_STR];
    int64_t pbkdf2_iterations;
    int64_t password_threads;   /* per worker, /api offloaded password jobs */
    int64_t password_queue;     /* per worker, jobs waiting beyond those running */
    int64_t login_max_failures;          /* login throttle (admin/throttle.h) */
    int64_t login_address_max_failures;
    int64_t login_backoff_ms;
    int64_t login_backoff_max_ms;
    int64_t login_address_backoff_max_ms;
    int64_t test_clock_offset_s;
    bool console;               /* serve the web console (worker/console.h) */
    char console_dir[TA_CONF_STR]; /* resolved: "" -> beside the executable, or /usr/share */

    /* derived by ta_config_finish() */
    ta_listen_addr_t listen_addrs[TA_MAX_LISTEN];
    size_t nlisten;
    ta_listen_addr_t admin_addrs[TA_MAX_LISTEN];
    size_t nadmin;
    char path[TA_CONF_STR];     /* the file it came from, "" = none */
} ta_config_t;

/** Fill every setting with its default (the table's, parsed). */
void ta_config_defaults(ta_config_t *c);

/** Set one setting from text. where ("file:line" or "environment
 *  TOKENAUDIT_X") prefixes the message. Errors (TA_EINVAL, err filled with
 *  field = name): unknown setting (rule "unknown"), bad type ("type"), not
 *  one of the choices ("enum"), below min ("min"), above max ("max"). */
int ta_config_set(ta_config_t *c, const char *name, const char *value, const char *where,
                  ta_err_t *err);

/** Parse a file onto c (call ta_config_defaults first). Adds "duplicate"
 *  and "syntax" to the errors above; messages start with "FILE:LINE: ". */
int ta_config_parse_file(ta_config_t *c, const char *path, ta_err_t *err);

/** Apply TOKENAUDIT_<NAME> variables from the environment. */
int ta_config_apply_env(ta_config_t *c, ta_err_t *err);

/** Resolve derived values (secret paths, listen lists) and cross-check
 *  (TLS listener without cert/key, ring_slots not a power of two). */
int ta_config_finish(ta_config_t *c, ta_err_t *err);

/** defaults + file (path may be NULL) + environment + finish. */
int ta_config_load(ta_config_t *c, const char *path, ta_err_t *err);

/** Effective worker count (0 -> number of online CPUs, at most 256). */
unsigned ta_config_workers(const ta_config_t *c);

/** After a SIGHUP: copy into next the settings that cannot change without
 *  a restart, logging each one that differed. Returns how many differed. */
int ta_config_keep_fixed(const ta_config_t *old, ta_config_t *next);

/** Markdown reference of every setting (docs/CONFIG.md). */
void ta_config_print_docs(FILE *out);

/** The SETTINGS section of tokenauditd(8) (roff, master/man.h): the same
 *  rows as the markdown, one .TP paragraph each. */
void ta_config_print_man(FILE *out);

/** Parse a comma-separated listen list into out[cap]. */
int ta_listen_parse(const char *spec, const char *setting, ta_listen_addr_t *out, size_t cap,
                    size_t *n, ta_err_t *err);

#endif
