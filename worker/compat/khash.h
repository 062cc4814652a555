/*
 * worker/compat/khash.h - just enough for <h2o/http2_internal.h> to compile.
 *
 * Debian's libh2o-evloop-dev installs http2_internal.h (the HTTP/2 connection
 * and frame encoders worker/accept.c uses) but not the khash.h it includes.
 * The connection holds its stream table by pointer only, so the type is
 * declared here and never defined: we never look streams up. A lookup would
 * need the library's exact hash layout, so the lookup macros name a function
 * that does not exist, and any use fails at link time rather than at run time.
 */
#ifndef TA_COMPAT_KHASH_H
#define TA_COMPAT_KHASH_H

typedef unsigned int khint_t;
typedef khint_t khiter_t;

#define KHASH_MAP_INIT_INT64(name, khval_t) typedef struct kh_##name##_s kh_##name##_t;
#define khash_t(name) kh_##name##_t

khint_t ta_h2o_stream_table_is_opaque(const void *h);
void *ta_h2o_stream_table_is_opaque_val(const void *h);
#define kh_get(name, h, k) ((void)(k), ta_h2o_stream_table_is_opaque(h))
#define kh_end(h) ta_h2o_stream_table_is_opaque(h)
#define kh_val(h, x) ((void)(x), ta_h2o_stream_table_is_opaque_val(h))

#endif
