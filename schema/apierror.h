/*
 * apierror.h - the one error body of the HTTP APIs (docs/API.md), for /v1
 * (worker/proxy.c), /api (admin/) and the server's own answers
 * (worker/server.c):
 *
 *   {"error":{"message":"...","type":"...","code":"..."|null,"param":"..."|null}}
 *
 * The type names a kind of error; the kinds a /v1 request can end with
 * (TA_ET_* of ledger/event.h) have one name each, the same in the answer and
 * in the request's audit record (ta_errtype_names, which the audit record's
 * descriptor uses).
 *
 * Any process, any thread.
 */
#ifndef TA_APIERROR_H
#define TA_APIERROR_H

#include <jansson.h>
#include <stddef.h>

/** Index TA_ET_* -> name; "" for TA_ET_NONE; NULL-terminated. */
extern const char *const ta_errtype_names[];

/** The error object; message and param may quote client bytes (made valid
 *  UTF-8, never refused). code and param: NULL (param also "") = null.
 *  NULL only on ENOMEM. */
json_t *ta_error_json(const char *type, const char *code, const char *param, const char *message);

/** The same, serialized: malloc'd (free()), length in *len. NULL on ENOMEM:
 *  answer ta_error_body_oom (500) then. */
char *ta_error_body(const char *type, const char *code, const char *param, const char *message, size_t *len);

/** A body for when nothing can be allocated. */
extern const char ta_error_body_oom[];

#endif
