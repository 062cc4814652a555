/*
 * console.c - the web console's files under /console/ (see console.h).
 *
 * h2o's file handler does the serving (ranges, ETag, 304, index.html for
 * a directory, the .gz sibling for clients that accept gzip); this file
 * adds the headers every console answer carries, answers a missing file
 * with the gateway's JSON 404, and redirects "/" to the console.
 */
#include "worker/console.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "worker/server.h"

#define ASSETS_PREFIX TA_CONSOLE_PATH "/assets/"

static const char csp[] = "default-src 'self'; script-src 'self'; style-src 'self'; "
                          "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                          "base-uri 'none'; form-action 'self'";

bool ta_console_present(const char *dir)
{
    char path[PATH_MAX];
    if (dir == NULL || dir[0] == '\0' ||
        snprintf(path, sizeof(path), "%s/index.html", dir) >= (int)sizeof(path))
        return false;
    return access(path, R_OK) == 0;
}

static void add_security_headers(h2o_req_t *req)
{
    h2o_headers_t *h = &req->res.headers;
    h2o_set_header_by_str(&req->pool, h, H2O_STRLIT("content-security-policy"), 0, csp,
                          sizeof(csp) - 1, 1);
    h2o_set_header_by_str(&req->pool, h, H2O_STRLIT("x-content-type-options"), 0,
                          H2O_STRLIT("nosniff"), 1);
    h2o_set_header_by_str(&req->pool, h, H2O_STRLIT("referrer-policy"), 0,
                          H2O_STRLIT("no-referrer"), 1);
    h2o_set_header_by_str(&req->pool, h, H2O_STRLIT("x-frame-options"), 0, H2O_STRLIT("DENY"), 1);
}

static void on_setup_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    add_security_headers(req);
    /* Only a file that exists may be cached for a year: a 404 for an asset
     * name must not stick in a browser once the asset is deployed. */
    int s = req->res.status;
    bool immutable = (s == 200 || s == 206 || s == 304) &&
                     req->path_normalized.len > sizeof(ASSETS_PREFIX) - 1 &&
                     memcmp(req->path_normalized.base, ASSETS_PREFIX, sizeof(ASSETS_PREFIX) - 1) == 0;
    if (immutable)
        h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL,
                       H2O_STRLIT("public, max-age=31536000, immutable"), 1);
    else
        h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL,
                       H2O_STRLIT("no-cache"), 1);
    h2o_setup_next_ostream(req, slot);
}

/* After the file handler, which passes on (returns -1) when no file matched. */
static int on_missing(h2o_handler_t *self, h2o_req_t *req)
{
    ta_worker_send_error(req, 404, "not_found_error", "not_found", "no such file in the console");
    return 0;
}

void ta_console_register(h2o_pathconf_t *pc, const char *dir)
{
    static const char *index_files[] = {"index.html", NULL};
    h2o_file_register(pc, dir, index_files, NULL, H2O_FILE_FLAG_SEND_COMPRESSED);
    h2o_handler_t *missing = h2o_create_handler(pc, sizeof(*missing));
    missing->on_req = on_missing;
    h2o_filter_t *f = h2o_create_filter(pc, sizeof(*f));
    f->on_setup_ostream = on_setup_ostream;
}

static int on_root(h2o_handler_t *self, h2o_req_t *req)
{
    if (!h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT("/")) ||
        !(h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) ||
          h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))))
        return -1;
    add_security_headers(req);
    h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, H2O_STRLIT("no-cache"), 1);
    h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_LOCATION,
                   H2O_STRLIT(TA_CONSOLE_PATH "/"), 1);
    static const char body[] = "The console is at " TA_CONSOLE_PATH "/\n";
    req->res.status = 302;
    req->res.reason = "Found";
    req->res.content_length = sizeof(body) - 1;
    h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE,
                   H2O_STRLIT("text/plain; charset=utf-8"), 1);
    h2o_send_inline(req, body, sizeof(body) - 1);
    return 0;
}

void ta_console_register_root(h2o_pathconf_t *pc)
{
    h2o_handler_t *h = h2o_create_handler(pc, sizeof(*h));
    h->on_req = on_root;
}
