/*
 * tokens.h - a cheap prompt-token estimate and a safe upper bound, taken
 * before the request goes upstream (for the hold and the TPM limit), without
 * a tokenizer.
 *
 * Counted: the text of what the model reads -- message contents (strings or
 * text parts), names, tool calls and tool/function definitions (every string
 * and key inside them), `prompt` (completions) and `input` (embeddings).
 *   estimate = ceil(text_bytes / 3) + 4 per message + 3
 *              (BPE tokenizers average ~4 bytes of English per token; 3 leans
 *              high for code and non-Latin text, so holds rarely fall short)
 *   upper    = text_bytes + 4 per message + 3 + 1600 per image part
 *              (a byte-level BPE token covers at least one byte of text; an
 *              image costs at most ~1445 tokens at OpenAI's high detail)
 * Token-id inputs (arrays of integers) count exactly, one per element.
 *
 * Callable from any process; pure.
 */
#ifndef TA_TOKENS_H
#define TA_TOKENS_H

#include <jansson.h>
#include <stdint.h>

typedef struct ta_tokens {
    int64_t estimate;
    int64_t upper;
    int64_t messages;   /* chat messages counted */
    int64_t text_bytes; /* bytes of text counted */
    int64_t images;     /* image parts counted */
} ta_tokens_t;

#define TA_TOKENS_PER_MESSAGE 4
#define TA_TOKENS_REPLY_PRIMING 3
#define TA_TOKENS_IMAGE_MAX 1600

/** Estimate the prompt tokens of a parsed request body (chat, completions or
 *  embeddings; unknown members are ignored). Never fails; a body with nothing
 *  countable gives estimate = upper = 3. */
void ta_tokens_prompt(const json_t *body, ta_tokens_t *out);

/** The same rule for bare text bytes: ceil(bytes/3), and bytes. */
static inline int64_t ta_tokens_estimate_bytes(int64_t bytes) { return (bytes + 2) / 3; }

#endif
