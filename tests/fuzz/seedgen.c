/*
 * seedgen.c - writes the seed corpus of fuzz_schema_decode: real encodings
 * (ta_rec_encode) of every record type, built generically from the
 * descriptors in a few shapes (small values, every field at its largest,
 * negative and invalid-UTF-8 values, far-future times), plus API records
 * from JSON and a few hand-made malformed values. Not part of the default
 * build:
 *   cmake --build build-fuzz --target fuzz_seedgen
 *   build-fuzz/tests/fuzz/fuzz_seedgen tests/fuzz/corpus/schema_decode
 */
#include <stdio.h>
#include <string.h>

#include "schema/audit_records.h"
#include "schema/schema.h"

static const ta_recdesc_t *const descs[] = {
    &ta_desc_user,  &ta_desc_provider, &ta_desc_route,   &ta_desc_model, &ta_desc_limits,
    &ta_desc_group, &ta_desc_quota,    &ta_desc_keyrec,  &ta_desc_balance, &ta_desc_hold,
    &ta_desc_revoked, &ta_desc_audit,  &ta_desc_daily,   &ta_desc_warning,
};

static const char *outdir;

static void put(const char *name, const uint8_t *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", outdir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(p, 1, n, f) != n) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

enum { SMALL, LARGE, NEGATIVE, FUTURE, NSHAPES };
static const char *const shape_names[] = {"small", "large", "negative", "future"};

/* gmtime's last second with a 32-bit tm_year, minus ten years */
#define FAR_FUTURE_S (67768036191676799LL - 315360000LL)

static void fill(const ta_recdesc_t *d, uint8_t *base, int shape)
{
    for (size_t i = 0; i < d->nfields; i++) {
        const ta_field_t *f = &d->fields[i];
        uint8_t *p = base + f->offset;
        int64_t v = shape == SMALL ? 7 : shape == NEGATIVE ? -5 : INT64_MAX;
        size_t k, cnt;
        switch (f->type) {
        case TA_FT_ID: { uint64_t u = shape == LARGE ? UINT64_MAX : 3; memcpy(p, &u, 8); break; }
        case TA_FT_TIME:
            v = shape == FUTURE ? FAR_FUTURE_S : shape == SMALL ? 1767225600 : v;
            memcpy(p, &v, 8);
            break;
        case TA_FT_I64: case TA_FT_NANO: case TA_FT_TIME_NS:
            if (shape == NEGATIVE)
                v = INT64_MIN;
            memcpy(p, &v, 8);
            break;
        case TA_FT_I32: { int32_t w = shape == SMALL ? 7 : shape == NEGATIVE ? INT32_MIN : INT32_MAX;
                          memcpy(p, &w, 4); break; }
        case TA_FT_BOOL: *(bool *)p = true; break;
        case TA_FT_ENUM:
            for (k = 0; f->names[k]; k++)
                ;
            *p = (uint8_t)(k - 1);
            break;
        case TA_FT_FLAGS: { uint32_t b = shape == SMALL ? 1 : UINT32_MAX >> 26; memcpy(p, &b, 4); break; }
        case TA_FT_STR:
            if (shape == SMALL) {
                snprintf((char *)p, f->size, "%s", "ab@c.de");
            } else if (shape == NEGATIVE) {
                snprintf((char *)p, f->size, "%s", "x\xff\xc3(\xed\xa0\x80y");
            } else {
                memset(p, 'a' + (int)(i % 26), f->size - 1);
                p[f->size - 1] = 0;
            }
            break;
        case TA_FT_BYTES: {
            uint16_t n = (uint16_t)(shape == SMALL ? 3 : f->size);
            memset(p, 0xb5, f->size);
            memcpy(base + f->len_offset, &n, 2);
            break;
        }
        case TA_FT_HEX: memset(p, 0xab, f->size); break;
        case TA_FT_ID_LIST: case TA_FT_I32_LIST: case TA_FT_SUB_LIST:
            cnt = shape == SMALL ? 2 : f->max_count;
            for (k = 0; k < cnt; k++) {
                if (f->type == TA_FT_ID_LIST) {
                    uint64_t u = k + 1;
                    memcpy(p + k * 8, &u, 8);
                } else if (f->type == TA_FT_I32_LIST) {
                    int32_t w = (int32_t)(k * 10 + 10);
                    memcpy(p + k * 4, &w, 4);
                } else {
                    fill(f->sub, p + k * f->size, shape);
                }
            }
            { uint16_t c16 = (uint16_t)cnt; memcpy(base + f->len_offset, &c16, 2); }
            break;
        case TA_FT_SUB: fill(f->sub, p, shape); break;
        }
    }
}

static const char *const api_json[][2] = {
    {"user", "{\"email\":\"Ann@Example.com\",\"name\":\"Ann\",\"role\":\"superadmin\"}"},
    {"user", "{\"email\":\"b@x.io\",\"is_active\":false}"},
    {"provider", "{\"name\":\"oa\",\"type\":\"openai\",\"base_url\":\"https://api.openai.com/v1\"}"},
    {"provider", "{\"name\":\"an\",\"type\":\"anthropic\",\"base_url\":\"http://h:1/\",\"timeout_s\":1}"},
    {"model", "{\"name\":\"gpt-4o\",\"routes\":[{\"provider_id\":1,\"upstream_name\":\"gpt-4o\"},"
              "{\"provider_id\":2,\"upstream_name\":\"x\",\"priority\":9}],\"input_price\":\"2.5\","
              "\"output_price\":10,\"capabilities\":[\"chat\",\"tools\"],\"context_window\":128000}"},
    {"model", "{\"name\":\"free\",\"input_price\":0}"},
    {"group", "{\"name\":\"g\",\"model_ids\":[1,5,9],\"default_quota\":{\"period\":\"day\","
              "\"cost_limit\":\"1.000000001\",\"warn_at\":[50,90]}}"},
    {"quota", "{\"user_id\":2,\"group_id\":1,\"period\":\"none\",\"token_limit\":1000,"
              "\"expires_at\":\"2030-01-01T00:00:00Z\",\"warn_at\":[80]}"},
    {"limits", "{\"period\":\"week\",\"rpm\":5,\"tpm\":null}"},
    {"route", "{\"provider_id\":4,\"upstream_name\":\"claude\"}"},
};

static _Alignas(16) uint8_t rec[16384];
static uint8_t enc[TA_REC_MAX_ENCODED];

int main(int argc, char **argv)
{
    char name[128];
    int n;
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    outdir = argv[1];
    for (size_t i = 0; i < sizeof(descs) / sizeof(descs[0]); i++) {
        const ta_recdesc_t *d = descs[i];
        for (int s = 0; s < NSHAPES; s++) {
            memset(rec, 0, d->size);
            fill(d, rec, s);
            if ((n = ta_rec_encode(d, rec, enc, sizeof(enc))) <= 0) {
                fprintf(stderr, "%s/%s: encode %d\n", d->name, shape_names[s], n);
                return 1;
            }
            snprintf(name, sizeof(name), "%s_%s", d->name, shape_names[s]);
            put(name, enc, (size_t)n);
        }
        /* a zero record: the header and the end marker */
        memset(rec, 0, d->size);
        n = ta_rec_encode(d, rec, enc, sizeof(enc));
        snprintf(name, sizeof(name), "%s_empty", d->name);
        put(name, enc, (size_t)n);
    }
    for (size_t i = 0; i < sizeof(api_json) / sizeof(api_json[0]); i++) {
        const ta_recdesc_t *d = NULL;
        ta_err_t err;
        for (size_t k = 0; k < sizeof(descs) / sizeof(descs[0]); k++)
            if (strcmp(descs[k]->name, api_json[i][0]) == 0)
                d = descs[k];
        json_t *j = json_loads(api_json[i][1], 0, NULL);
        ta_rec_defaults(d, rec);
        if (j == NULL || ta_rec_from_json(d, j, rec, TA_MERGE_CREATE, &err) != 0) {
            fprintf(stderr, "api %zu: %s\n", i, err.message);
            return 1;
        }
        json_decref(j);
        n = ta_rec_encode(d, rec, enc, sizeof(enc));
        snprintf(name, sizeof(name), "api_%s_%zu", d->name, i);
        put(name, enc, (size_t)n);
    }
    /* hand-made: older version, unknown tag, duplicate tag, cut short, trailing bytes */
    static const uint8_t older[] = {'T', TA_REC_REVOKED, 0, 0, 1, 8, 0, 1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 0};
    static const uint8_t unknown[] = {'T', TA_REC_USER, 1, 0, 200, 2, 0, 'h', 'i', 3, 1, 0, 'z', 0, 0, 0};
    static const uint8_t dup[] = {'T', TA_REC_USER, 1, 0, 3, 4, 0, 'a', 'b', 'c', 'd', 3, 1, 0, 'e', 0, 0, 0};
    static const uint8_t cut[] = {'T', TA_REC_MODEL, 1, 0, 2, 3, 0, 'g', 'p'};
    static const uint8_t trail[] = {'T', TA_REC_KEY, 1, 0, 0, 0, 0, 0};
    static const uint8_t newer[] = {'T', TA_REC_DAILY, 2, 0, 0, 0, 0};
    put("hand_older_version", older, sizeof(older));
    put("hand_unknown_tag", unknown, sizeof(unknown));
    put("hand_duplicate_tag", dup, sizeof(dup));
    put("hand_cut_short", cut, sizeof(cut));
    put("hand_trailing", trail, sizeof(trail));
    put("hand_newer_version", newer, sizeof(newer));
    return 0;
}
