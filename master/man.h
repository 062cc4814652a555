/*
 * man.h - manual pages written from the tables the programs already use:
 * tokenauditd(8) from tokenauditd's option table and the settings table
 * (master/config.c), tokenaudit(1) from the CLI's command table
 * (master/cli.c). The pages in man/ are their output
 * (`tokenauditd --print-man`, `tokenaudit --print-man`); integration.manpages
 * fails when they are stale.
 *
 * Callers: tokenauditd and tokenaudit, at the command line only.
 */
#ifndef TA_MAN_H
#define TA_MAN_H

#include <stdio.h>

/* One command-line option: "-c, --config FILE" and what it does. */
typedef struct ta_man_opt {
    const char *flag;
    const char *help;
} ta_man_opt_t;

/** tokenauditd's options, ending with {NULL, NULL}: its --help and its page. */
extern const ta_man_opt_t ta_tokenauditd_opts[];

/** Write s as roff running text: backslashes, hyphens and a leading dot or
 *  quote escaped; `code` (markdown backticks, as the help texts use them)
 *  in bold. */
void ta_man_text(FILE *out, const char *s);

/** Options as .TP paragraphs (flag in bold). */
void ta_man_opts(FILE *out, const ta_man_opt_t *opts);

/** The whole tokenauditd(8) page. */
void ta_man_tokenauditd(FILE *out);

#endif
