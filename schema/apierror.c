/*
 * apierror.c - the error body and the error kinds' names (apierror.h).
 */
#include "schema/apierror.h"

#include <stdlib.h>
#include <string.h>

#include "schema/schema.h"

/* index = TA_ET_* (ledger/event.h) */
const char *const ta_errtype_names[] = {
    "",
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "rate_limit_error",
    "insufficient_quota",
    "upstream_error",
    "timeout_error",
    "overloaded_error",
    "aborted",
    "server_error",
    NULL,
};

const char ta_error_body_oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                                 "\"code\":\"internal_error\",\"param\":null}}";

json_t *ta_error_json(const char *type, const char *code, const char *param, const char *message)
{
    if (message == NULL)
        message = "";
    return json_pack("{s:{s:o,s:s,s:o,s:o}}", "error", "message", ta_json_string_lossy(message, strlen(message)),
                     "type", type, "code", code != NULL ? json_string(code) : json_null(), "param",
                     param != NULL && param[0] != '\0' ? ta_json_string_lossy(param, strlen(param)) : json_null());
}

char *ta_error_body(const char *type, const char *code, const char *param, const char *message, size_t *len)
{
    json_t *j = ta_error_json(type, code, param, message);
    char *s = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (s != NULL && len != NULL)
        *len = strlen(s);
    return s;
}
