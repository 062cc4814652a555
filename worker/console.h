/*
 * console.h - the web console's files, served by the worker: the static
 * build of console/ (index.html, hashed assets under assets/, each with a
 * .gz sibling) under /console/ on the host that serves /api, and GET /
 * redirecting there. The C side knows nothing about the pages: it serves
 * these files with these headers.
 *
 * Every answer under /console/ (and the redirect) carries
 *   Content-Security-Policy: default-src 'self'; script-src 'self';
 *     style-src 'self'; img-src 'self' data:; connect-src 'self';
 *     frame-ancestors 'none'; base-uri 'none'; form-action 'self'
 *   X-Content-Type-Options: nosniff, Referrer-Policy: no-referrer,
 *   X-Frame-Options: DENY
 * and Cache-Control: "public, max-age=31536000, immutable" on a file found
 * under /console/assets/ (their names change with their content), else
 * "no-cache" (index.html is revalidated on every load). A client that
 * accepts gzip gets the .gz sibling (h2o's H2O_FILE_FLAG_SEND_COMPRESSED,
 * with Vary: Accept-Encoding). A missing file is a JSON 404.
 *
 * Worker processes, inside ta_worker_create() only (route setup); master
 * for ta_console_present().
 */
#ifndef TA_CONSOLE_H
#define TA_CONSOLE_H

#include <h2o.h>
#include <stdbool.h>

/** The path the console is served under (the pathconf to register). */
#define TA_CONSOLE_PATH "/console"

/** Whether dir holds a console build (an index.html that can be read). */
bool ta_console_present(const char *dir);

/** Put the console's handlers on pc, a pathconf registered for
 *  TA_CONSOLE_PATH (after the worker's own entry handler and filter): the
 *  file handler over dir (copied), the headers filter, the JSON 404. */
void ta_console_register(h2o_pathconf_t *pc, const char *dir);

/** Append to pc, the host's "/" pathconf, a handler that answers GET and
 *  HEAD of exactly "/" with 302 to /console/ and passes anything else on to
 *  the next handler of pc. */
void ta_console_register_root(h2o_pathconf_t *pc);

#endif
