/*
 * worker/accept.h - taking a connection over from the listener: TLS handshake
 * and ALPN, HTTP/2 prior knowledge on cleartext, then h2o's HTTP/1 or HTTP/2
 * connection; every HTTP/2 connection gets the body-limit reader.
 *
 * Why we accept instead of h2o_accept(): h2o 2.2.5 buffers a request body in
 * full before any handler runs and resets an HTTP/2 stream whose body passes
 * its own limit (REFUSED_STREAM, which clients retry), before any hook of
 * ours. The body-limit reader sits between the socket and h2o's HTTP/2 frame
 * parser: a stream whose DATA passes max_body_size has its body ended there
 * (END_STREAM set on the frame that passes it), so the route answers 413 in
 * the API's error shape and the proxy records it; the rest of that body is
 * dropped before h2o sees it, with the connection's flow-control window given
 * back. docs/ARCHITECTURE.md "Bodies over the limit" has the whole story.
 */
#ifndef TA_ACCEPT_H
#define TA_ACCEPT_H

#include <h2o.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Takes sock over (closing it on any failure). max_body_size is the limit
 * of a request body the routes enforce; h2o's own limit
 * (globalconf.max_request_entity_size) must exceed it by more than one
 * HTTP/2 frame (16 KiB). */
void ta_accept(h2o_accept_ctx_t *actx, h2o_socket_t *sock, size_t max_body_size);

/* Connections still in their handshake or before their first bytes: a
 * graceful shutdown waits for them as for h2o's idle connections, at most
 * ms from ta_accept_shutdown() on (their request, if it comes, is served). */
bool ta_accept_pending(void);
void ta_accept_shutdown(h2o_loop_t *loop, uint64_t ms);

#endif
