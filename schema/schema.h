/*
 * schema.h - every stored record, defined once.
 *
 * Each record type is a plain C struct plus one descriptor table
 * (ta_field_t[]) naming each field, its type, its bounds and flags. That one
 * table drives:
 *   - the binary encoding stored in LMDB (ta_rec_encode / ta_rec_decode),
 *   - the JSON encoding for the API and the dump tool (ta_rec_to_json),
 *   - JSON input with type checks (ta_rec_from_json),
 *   - validation whose errors name the field and the rule (ta_rec_validate).
 * A new field is added in one place: the struct and its row in the table.
 *
 * Binary layout of a stored value (little-endian):
 *
 *   +--------+---------+---------+------------------------------------+
 *   | magic  | rectype | version | fields: tag u8, len u16, bytes ... |
 *   | 'T' u8 |   u8    |  u16    |  (tag = field's stable `tag` value)|
 *   +--------+---------+---------+------------------------------------+
 *
 * The field list ends with tag 0, len 0 (an end marker, 3 bytes) and nothing
 * after it, so a value cut short at a field boundary is still detected as
 * TA_ECORRUPT. Fixed-size fields are stored little-endian at their natural
 * width (ID/I64/TIME/TIME_NS/NANO 8, I32/FLAGS 4, BOOL/ENUM 1); STR without
 * its NUL; lists as their elements back to back; SUB as a nested encoding
 * (header, fields, end marker); SUB_LIST as elements each "u16 len, nested
 * encoding". Zero-valued fields (0, false, "", empty list) are not written.
 * A field's tag never changes once released; removed fields leave their tag
 * unused. Unknown tags from an older build of the same version are skipped;
 * a record version newer than this build's is refused with TA_ESCHEMA.
 * Fields absent from the bytes keep their zero value (their default when
 * flagged TA_FF_ABSENT_DEFAULT: see there).
 *
 * Callable from every process. No LMDB, no h2o.
 */
#ifndef TA_SCHEMA_H
#define TA_SCHEMA_H

#include <jansson.h>
#include "ta.h"

/* The schema version of a data directory, stored in meta "schema_version" of
 * the ledger environment. A data directory written by a newer version is refused. */
#define TA_SCHEMA_VERSION 1

typedef enum ta_ftype {
    TA_FT_ID = 1,   /* uint64_t; JSON number; 0 = none (JSON null) */
    TA_FT_I64,      /* int64_t; JSON integer; bounds min..max */
    TA_FT_I32,      /* int32_t; JSON integer; bounds min..max */
    TA_FT_BOOL,     /* bool */
    TA_FT_NANO,     /* ta_nano_t; JSON decimal string; input string or number; bounds min..max (nano) */
    TA_FT_TIME,     /* int64_t unix seconds; JSON RFC 3339 string; 0 = null */
    TA_FT_TIME_NS,  /* int64_t unix ns; JSON RFC 3339 string (ms precision); 0 = null */
    TA_FT_STR,      /* char[size]; max length size-1; valid UTF-8 without NUL */
    TA_FT_ENUM,     /* uint8_t index into `names` (NULL-terminated); JSON string */
    TA_FT_FLAGS,    /* uint32_t bitmask, bit i = names[i]; JSON array of strings */
    TA_FT_BYTES,    /* uint8_t[size] + uint16_t length at `len_offset`; never JSON (SECRET implied) */
    TA_FT_ID_LIST,  /* uint64_t[max_count] + uint16_t count at `len_offset`; JSON array of numbers */
    TA_FT_I32_LIST, /* int32_t[max_count] + uint16_t count at `len_offset`; JSON array of integers */
    TA_FT_SUB_LIST, /* struct[max_count] (element desc `sub`) + uint16_t count at `len_offset` */
    TA_FT_SUB,      /* one embedded struct (desc `sub`); JSON object; PATCH merges its keys */
    TA_FT_HEX,      /* uint8_t[size], fixed length, no length field; JSON lowercase hex string
                     * (request ids in the dump) */
} ta_ftype_t;

enum {
    TA_FF_REQUIRED = 1u << 0,  /* must be present on create (and PUT) */
    TA_FF_READONLY = 1u << 1,  /* output only: ignored on input (id, created_at) */
    TA_FF_SECRET = 1u << 2,    /* never in JSON output nor in the dump (hashes, sealed keys) */
    TA_FF_INTERNAL = 1u << 3,  /* not accepted as API input; shown in dump and API output */
    TA_FF_NULLABLE = 1u << 4,  /* JSON null <-> 0 (limits: null = no limit) */
    TA_FF_EMAIL = 1u << 5,     /* string must look like an e-mail address */
    TA_FF_URL = 1u << 6,       /* string must be an http:// or https:// URL */
    TA_FF_NONEMPTY = 1u << 7,  /* string must not be empty */
    TA_FF_LOWER = 1u << 8,     /* string is lower-cased on input */
    TA_FF_NOTNULL_OUT = 1u << 9, /* ID/TIME zero printed as 0/"" rather than null (rare) */
    /* Presence marking (model.has_prices): ta_rec_from_json sets the BOOL field
     * flagged TA_FF_PRESENCE to true when the input carries any key of a field
     * flagged TA_FF_MARKS_PRESENCE in the same descriptor with a non-null value
     * (even "0": a price of zero is an explicit price). null clears such a
     * field; when the input sets every one of them to null the flag goes back
     * to false. ta_rec_to_json prints them as null while the flag is false, so
     * a record read and written back keeps its meaning. */
    TA_FF_PRESENCE = 1u << 10,
    TA_FF_MARKS_PRESENCE = 1u << 11,
    /* Presence per field (model.prices_set): a FLAGS field flagged
     * TA_FF_PRESENCE_BITS whose `names` are names of TA_FF_MARKS_PRESENCE
     * fields of the same descriptor. ta_rec_from_json sets a field's bit when
     * the input gives it a non-null value ("0" included) and clears it on
     * null; ta_rec_to_json prints an unset field as null. A record whose
     * TA_FF_PRESENCE flag is true but whose bits are all 0 was written before
     * the bits existed: every marked field counts as set (its old meaning). */
    TA_FF_PRESENCE_BITS = 1u << 13,
    TA_FF_ASCENDING = 1u << 12, /* I32_LIST/ID_LIST elements strictly ascending (rule "order") */
    /* Every STR refuses control characters (C0 and DEL, rule "control"): its
     * value may reach an HTTP header, a /metrics label, a log line or a CSV
     * file, where a CR or LF starts a new line. Free text flagged TA_FF_TEXT
     * may also hold tab, LF and CR; the other controls stay refused. */
    TA_FF_TEXT = 1u << 13,
    /* A scalar whose bounds exclude 0 and that has a default (route.weight):
     * absent from stored bytes (a record written before the field existed)
     * it decodes as its default. Zero values are never stored, and 0 is
     * never valid for such a field, so absent cannot mean anything else. */
    TA_FF_ABSENT_DEFAULT = 1u << 14,
};

struct ta_recdesc;

typedef struct ta_field {
    const char *name;   /* JSON and dump name */
    uint8_t tag;        /* stable binary tag, 1..255 */
    ta_ftype_t type;
    uint32_t flags;     /* TA_FF_* */
    size_t offset;      /* offsetof(struct, field) */
    size_t size;        /* STR/BYTES: array size; lists: element size */
    size_t len_offset;  /* BYTES and lists: offsetof the uint16_t length/count */
    uint16_t max_count; /* lists */
    int64_t min, max;   /* integer/nano bounds (inclusive); min=max=0: unbounded */
    const char *const *names;       /* ENUM / FLAGS names */
    const struct ta_recdesc *sub;   /* SUB_LIST element / SUB struct */
    int64_t def;        /* scalar default set by ta_rec_defaults (BOOL 1 = true, ENUM index) */
} ta_field_t;

typedef struct ta_recdesc {
    const char *name;    /* "user", "provider", ... (dump section names use name + "s") */
    uint8_t rectype;     /* TA_REC_* */
    uint16_t version;    /* bump when the meaning of an existing tag changes */
    size_t size;         /* sizeof(struct) */
    const ta_field_t *fields;
    size_t nfields;
} ta_recdesc_t;

enum {
    TA_REC_USER = 1,
    TA_REC_PROVIDER,
    TA_REC_MODEL,
    TA_REC_ROUTE,     /* element of model.routes */
    TA_REC_GROUP,
    TA_REC_QUOTA,
    TA_REC_KEY,
    TA_REC_BALANCE,
    TA_REC_HOLD,
    TA_REC_REVOKED,
    TA_REC_AUDIT,     /* audit request record (issue: ring/billing) */
    TA_REC_DAILY,     /* audit daily aggregate */
    TA_REC_WARNING,   /* audit warning raised */
    TA_REC_LIMITS,    /* ta_limits_t nested in a group (default_quota) */
};

/* ---- records ---------------------------------------------------------- */

enum { TA_ROLE_USER = 0, TA_ROLE_SUPERADMIN = 1 };
typedef struct ta_user {
    uint64_t id;
    char email[256];       /* stored lower-cased; unique (users_by_email) */
    char name[128];
    uint8_t role;          /* TA_ROLE_* ("user", "superadmin") */
    bool is_active;
    uint8_t pwhash[128];   /* SECRET: ta_password_hash() output */
    uint16_t pwhash_len;
    int64_t created_at, updated_at;
    /* INTERNAL: the session generation. Every JWT carries the value it was
     * issued under ("gen") and authenticates only while it is still equal:
     * a password change, a deactivation or a role change adds one, which
     * ends every earlier session of the user. 0 in records written before
     * the field existed (absent tag). */
    int64_t token_gen;
} ta_user_t;

enum { TA_PROVIDER_OPENAI = 0, TA_PROVIDER_ANTHROPIC = 1 };
typedef struct ta_provider {
    uint64_t id;
    char name[128];
    uint8_t type;          /* "openai", "anthropic" */
    char base_url[512];
    uint8_t key_sealed[600]; /* SECRET: ta_seal() of the provider API key */
    uint16_t key_sealed_len;
    char api_key_last4[8]; /* INTERNAL: shown as api_key_last4 */
    bool api_key_set;      /* INTERNAL */
    int32_t timeout_s;     /* total upstream timeout, 1..3600, default 600 */
    int32_t connect_timeout_ms; /* 1..60000, default 5000 */
    bool is_active;
    int64_t created_at, updated_at;
} ta_provider_t;

typedef struct ta_route {
    uint64_t provider_id;
    char upstream_name[128];
    int32_t priority;      /* lowest first */
    int32_t weight;        /* 1..1000 (default 1): share of the load among routes of equal priority */
    bool upstream_missing; /* INTERNAL: the provider's model list no longer has upstream_name (sync-models) */
} ta_route_t;

enum { TA_CAP_CHAT = 1u << 0, TA_CAP_EMBEDDINGS = 1u << 1, TA_CAP_VISION = 1u << 2,
       TA_CAP_TOOLS = 1u << 3, TA_CAP_STREAMING = 1u << 4, TA_CAP_COMPLETIONS = 1u << 5 };
#define TA_MODEL_MAX_ROUTES 8
typedef struct ta_model {
    uint64_t id;
    char name[128];        /* public name clients send as "model"; unique (models_by_name) */
    ta_route_t routes[TA_MODEL_MAX_ROUTES];
    uint16_t nroutes;
    ta_nano_t input_price, output_price, cache_read_price, cache_write_price; /* per 1M tokens; 0 = not priced */
    bool has_prices;       /* INTERNAL: true once any price was set explicitly (fail-closed pricing) */
    uint32_t capabilities; /* TA_CAP_* */
    uint32_t prices_set;   /* INTERNAL: TA_PRICE_* of the prices set explicitly (see ta_model_prices_set) */
    int64_t context_window, max_output_tokens;
    bool is_active;
    int64_t created_at, updated_at;
} ta_model_t;

/* Bits of ta_model_t.prices_set, in the order of the price fields. */
enum { TA_PRICE_INPUT = 1u << 0, TA_PRICE_OUTPUT = 1u << 1, TA_PRICE_CACHE_READ = 1u << 2,
       TA_PRICE_CACHE_WRITE = 1u << 3, TA_PRICE_ALL = 0xfu };

/** Which prices of m were set explicitly (TA_PRICE_*): none while has_prices
 *  is false; all of them for a record written before prices_set existed (its
 *  zero cache prices meant "free" then and keep that meaning). An unset cache
 *  price is charged at the input price (ledger/quota.c, ta_cost); an explicit
 *  0 is free. */
static inline uint32_t ta_model_prices_set(const ta_model_t *m)
{
    return !m->has_prices ? 0 : m->prices_set != 0 ? m->prices_set : TA_PRICE_ALL;
}

/* Limits shared by quotas and a group's default_quota. 0 = no limit. */
enum { TA_PERIOD_DAY = 0, TA_PERIOD_WEEK, TA_PERIOD_MONTH, TA_PERIOD_NONE };
#define TA_MAX_WARN 4
typedef struct ta_limits {
    uint8_t period;        /* "day", "week", "month", "none" */
    ta_nano_t cost_limit;
    int64_t token_limit, request_limit;
    int64_t rpm, tpm, max_concurrency;
    bool auto_renew;
    int32_t warn_at[TA_MAX_WARN]; /* percent, 1..100, ascending */
    uint16_t nwarn;
} ta_limits_t;

#define TA_GROUP_MAX_MODELS 256
typedef struct ta_group {
    uint64_t id;
    char name[128];
    char description[512];
    uint64_t model_ids[TA_GROUP_MAX_MODELS];
    uint16_t nmodels;
    ta_limits_t default_quota;  /* JSON: "default_quota": {period, cost_limit, ...} */
    int64_t created_at, updated_at;
} ta_group_t;

typedef struct ta_quota {
    uint64_t id;
    uint64_t user_id, group_id;
    ta_limits_t limits;    /* JSON: flattened into the quota object (period, cost_limit, ...):
                            * the quota descriptor lists the limits' fields with
                            * offsetof(ta_quota_t, limits.x), so no TA_FT_SUB here */
    int64_t expires_at;    /* unix s; 0 = never */
    bool is_active;
    char key_prefix[16];   /* INTERNAL: "sk-" + first 8 chars of the key, for humans and logs */
    uint8_t key_hash[32];  /* SECRET: SHA-256 of the current key (to delete the keys row on reset) */
    uint16_t key_hash_len;
    int64_t created_at, updated_at;
} ta_quota_t;

/* keys db: key = SHA-256(api key) (32 bytes), value = ta_keyrec_t */
typedef struct ta_keyrec {
    uint64_t quota_id;
    uint64_t user_id;
    int64_t created_at;
} ta_keyrec_t;

/* balances db: key = quota id. Written by workers (holds) and billing (settlement). */
typedef struct ta_balance {
    uint64_t quota_id;
    int64_t period_start;  /* unix s; start of the current period (0 for period none) */
    ta_nano_t cost_used, cost_held;
    int64_t tokens_used, tokens_held;
    int64_t requests_used;
    int64_t in_flight;
    int64_t rpm_tat_ns, tpm_tat_ns;  /* GCRA theoretical arrival times */
    int32_t warn_level;    /* highest warn_at index raised this period, -1 none (stored +1) */
    int64_t settled_ticket; /* unused by workers; for the dump */
} ta_balance_t;

/* holds db: key = request id (16 bytes), value = ta_hold_t */
typedef struct ta_hold {
    uint8_t request_id[16];
    uint64_t quota_id;
    int32_t worker_pid;
    ta_nano_t cost;
    int64_t tokens;
    int64_t created_at_ns;
    int64_t period_start;  /* the balance period the hold was taken in */
} ta_hold_t;

/* revoked_jwt db: key = jti string, value = ta_revoked_t */
typedef struct ta_revoked {
    int64_t expires_at;    /* unix s; after this the row may be pruned */
} ta_revoked_t;

extern const ta_recdesc_t ta_desc_user, ta_desc_provider, ta_desc_route, ta_desc_model,
    ta_desc_limits, ta_desc_group, ta_desc_quota, ta_desc_keyrec, ta_desc_balance, ta_desc_hold, ta_desc_revoked;

/* ---- operations --------------------------------------------------------- */

/** Size bound of any encoded record. */
#define TA_REC_MAX_ENCODED 65536

/** Encode rec into buf (cap bytes). Returns the length (>0) or TA_ETOOBIG. */
int ta_rec_encode(const ta_recdesc_t *d, const void *rec, uint8_t *buf, size_t cap);

/** Decode bytes into rec (zeroed first). TA_ESCHEMA for a newer version or a
 *  different rectype, TA_ECORRUPT for truncated or malformed bytes (wrong
 *  widths, over-long strings/lists, NUL in a string, bool not 0/1, enum index
 *  without a name, missing end marker). Safe on any input; on error rec is
 *  zeroed. Strings with invalid UTF-8 are kept (to_json repairs them with
 *  U+FFFD, validate reports "utf8"). */
int ta_rec_decode(const ta_recdesc_t *d, const uint8_t *buf, size_t len, void *rec);

enum { TA_JSON_API = 0,    /* API output: no SECRET fields */
       TA_JSON_DUMP = 1 }; /* dump output: same (secrets never leave); kept separate for future fields */
/** New JSON object with every non-SECRET field (BYTES never). Caller owns the
 *  reference; NULL only when out of memory. Zero ID/TIME/TIME_NS -> null,
 *  zero NULLABLE -> null, NANO as a decimal string. */
json_t *ta_rec_to_json(const ta_recdesc_t *d, const void *rec, int mode);

enum { TA_MERGE_CREATE = 0, /* REQUIRED fields must be present */
       TA_MERGE_PUT = 1,    /* same as create (full replacement of writable fields) */
       TA_MERGE_PATCH = 2 };/* only present fields change */
/** Apply the writable fields of JSON object `in` onto rec (which holds defaults
 *  or the stored record). READONLY and INTERNAL/SECRET fields and unknown keys
 *  are ignored. Wrong JSON type -> rule "type"; missing REQUIRED -> "required";
 *  then runs ta_rec_validate. Returns 0 or TA_EINVAL with err filled.
 *  Details: on failure rec is left unchanged (-ENOMEM if no scratch copy).
 *  Money (NANO) accepts a decimal string, a JSON integer (whole units), or a
 *  JSON real when its shortest round-trip decimal has <= 15 significant digits
 *  and <= 9 decimals (2.5, 0.1, 1e-9); other reals -> rule "type" ("must be a
 *  decimal string or an integer"). null is accepted for NULLABLE fields and IDs
 *  (-> 0). SUB objects merge key by key under PATCH; lists (also SUB_LIST) are
 *  replaced whole, each SUB_LIST element built from its defaults. LOWER
 *  lower-cases ASCII. Presence marking: see TA_FF_PRESENCE. */
int ta_rec_from_json(const ta_recdesc_t *d, const json_t *in, void *rec, int merge, ta_err_t *err);

/** Check every bound of rec: lengths, min/max, enum range, e-mail/URL format,
 *  list counts, UTF-8, control characters (see TA_FF_TEXT), ascending
 *  warn_at. A URL must be http:// or https:// with a host and no credentials
 *  (user:password@, rule "credentials"). Returns 0 or TA_EINVAL with err. */
int ta_rec_validate(const ta_recdesc_t *d, const void *rec, ta_err_t *err);

/** The rules of every stored string, for a value checked outside a
 *  descriptor (a write-only secret such as a provider's api_key): valid UTF-8
 *  (rule "utf8"), no control character: C0 (NUL included) or DEL (rule
 *  "control"; flags TA_FF_TEXT allow tab, LF and CR). Returns 0 or TA_EINVAL
 *  with err naming `field`. Any process. */
int ta_str_check(const char *field, const char *s, size_t n, uint32_t flags, ta_err_t *err);

/** Look up a field by name (NULL if none). */
const ta_field_t *ta_rec_field(const ta_recdesc_t *d, const char *name);

/** Fill defaults for a new record (is_active = true, provider timeouts, ...). */
void ta_rec_defaults(const ta_recdesc_t *d, void *rec);

/** A JSON string of s[0..n) with each byte that is not part of a valid UTF-8
 *  sequence replaced by U+FFFD (jansson refuses invalid UTF-8), for text that
 *  echoes client input or was cut at a byte bound. NULL only on ENOMEM. */
json_t *ta_json_string_lossy(const char *s, size_t n);

/** Is s[0..len) valid UTF-8 (no overlongs, no surrogates)? */
bool ta_utf8_valid(const char *s, size_t len);

#endif
