/*
 * fuzz_schema_decode.c - ta_rec_decode on arbitrary bytes, with every record
 * descriptor of schema/schema.h and schema/audit_records.h (a stored value
 * carries its rectype, so the input is a raw stored value and at most one
 * descriptor gets past the header).
 *
 * For what decodes, the promises of schema.h are checked:
 *   - ta_rec_to_json and ta_rec_validate work on it (validate may refuse);
 *   - it encodes again (a decoded record is always encodable);
 *   - the re-encoding decodes, and encodes to the same bytes (canonical form
 *     is a fixed point) with the same JSON.
 * For what does not decode: the record is all zero bytes (schema.h: "on
 * error rec is zeroed").
 */
#include <string.h>

#include "fuzz.h"
#include "schema/audit_records.h"
#include "schema/schema.h"

static const ta_recdesc_t *const descs[] = {
    &ta_desc_user,  &ta_desc_provider, &ta_desc_route,   &ta_desc_model, &ta_desc_limits,
    &ta_desc_group, &ta_desc_quota,    &ta_desc_keyrec,  &ta_desc_balance, &ta_desc_hold,
    &ta_desc_revoked, &ta_desc_audit,  &ta_desc_daily,   &ta_desc_warning,
};

/* Big enough for any record struct (ta_group_t is the largest, ~3 KiB). */
static _Alignas(16) uint8_t rec1[16384], rec2[16384];
static uint8_t enc1[TA_REC_MAX_ENCODED], enc2[TA_REC_MAX_ENCODED];

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

static void check_one(const ta_recdesc_t *d, const uint8_t *data, size_t size)
{
    ta_err_t err;
    FUZZ_CHECK(d->size <= sizeof(rec1));
    memset(rec1, 0xA5, d->size); /* decode must zero it first */
    int rc = ta_rec_decode(d, data, size, rec1);
    if (rc != 0) {
        FUZZ_CHECK(rc == TA_ECORRUPT || rc == TA_ESCHEMA);
        FUZZ_CHECK(all_zero(rec1, d->size));
        return;
    }

    json_t *j1 = ta_rec_to_json(d, rec1, TA_JSON_API);
    FUZZ_CHECK(j1 != NULL);
    char *s = json_dumps(j1, JSON_COMPACT);
    FUZZ_CHECK(s != NULL); /* strings were repaired to valid UTF-8 */
    free(s);
    memset(&err, 0, sizeof(err));
    rc = ta_rec_validate(d, rec1, &err);
    FUZZ_CHECK(rc == 0 || (rc == TA_EINVAL && err.rule[0] != '\0'));

    int n1 = ta_rec_encode(d, rec1, enc1, sizeof(enc1));
    /* The canonical form drops duplicates, unknown tags and zero fields, but
     * always writes a SUB (an empty one is 10 bytes), so it may be a little
     * longer than the input. */
    if (size <= TA_REC_MAX_ENCODED - 1024)
        FUZZ_CHECK(n1 > 0);
    if (n1 <= 0) {
        json_decref(j1);
        return;
    }
    memset(rec2, 0x5A, d->size);
    FUZZ_CHECK(ta_rec_decode(d, enc1, (size_t)n1, rec2) == 0);
    int n2 = ta_rec_encode(d, rec2, enc2, sizeof(enc2));
    FUZZ_CHECK(n2 == n1);
    FUZZ_CHECK(memcmp(enc1, enc2, (size_t)n1) == 0);
    json_t *j2 = ta_rec_to_json(d, rec2, TA_JSON_API);
    FUZZ_CHECK(j2 != NULL);
    FUZZ_CHECK(json_equal(j1, j2));
    json_decref(j1);
    json_decref(j2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < sizeof(descs) / sizeof(descs[0]); i++)
        check_one(descs[i], data, size);
    return 0;
}
