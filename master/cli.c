/*
 * cli.c - `tokenaudit`, the operator's command line.
 *
 *   tokenaudit init --data-dir DIR --admin-email EMAIL [--admin-password PASS] [-c FILE]
 *   tokenaudit create-superadmin --data-dir DIR --email EMAIL [--password PASS] [-c FILE]
 *   tokenaudit ledger dump --data-dir DIR [--json] [-c FILE]
 *   tokenaudit backup --data-dir DIR --to DEST [-c FILE]
 *   ... (the table)
 *
 * Commands live in one table (commands[] below): a new one is a function
 * and one entry, whose usage line, description and options are also its
 * `--help` and its part of tokenaudit(1) (`tokenaudit --print-man`,
 * man/tokenaudit.1). Every command honours the same settings as the server
 * (-c FILE, then TOKENAUDIT_* variables; --data-dir wins over both), e.g.
 * pbkdf2_iterations and the map sizes. Exit codes: 0 ok, 1 failure,
 * 2 usage error.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "admin/admin.h"
#include "admin/crypto.h"
#include "ledger/audit.h"
#include "ledger/backup.h"
#include "ledger/dump.h"
#include "ledger/verify.h"
#include "ledger/store.h"
#include "master/config.h"
#include "master/man.h"
#include "master/master.h"

#ifndef TA_VERSION
#define TA_VERSION "0.1.0"
#endif

typedef struct cli_opts {
    const char *config;
    const char *data_dir;
    const char *email;
    const char *password;
    const char *to;
    bool json;
    bool compact;
} cli_opts_t;

typedef struct cli_cmd {
    const char *name; /* "init", "ledger" */
    const char *sub;  /* "dump" or NULL */
    int (*run)(const cli_opts_t *o, ta_config_t *cfg);
    /* commands that parse their own options get argv from the command word on */
    int (*run_raw)(int argc, char **argv);
    const char *args; /* usage line after the command */
    const char *help; /* what it does: --help, the command list and the man page */
    const ta_man_opt_t *opts; /* its own options, ending with {NULL, NULL} */
    bool settings;    /* honours -c FILE and TOKENAUDIT_* (the common parser) */
} cli_cmd_t;

/* ---- helpers ----------------------------------------------------------- */

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("tokenaudit: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nRun `tokenaudit --help` for usage.\n", stderr);
    return 2;
}

static void store_opts(const ta_config_t *cfg, ta_store_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->strict_durability = cfg->durability == TA_DURABILITY_STRICT;
    o->writemap = cfg->ledger_writemap;
    o->ledger_map_size = (size_t)cfg->ledger_map_size_mb << 20;
    o->audit_map_size = (size_t)cfg->audit_map_size_mb << 20;
}

static int open_store(const ta_config_t *cfg, bool create, bool readonly, ta_store_t **st)
{
    ta_store_opts_t so;
    store_opts(cfg, &so);
    so.create = create;
    so.readonly = readonly;
    int rc = ta_store_open(st, cfg->data_dir, &so);
    if (rc == TA_ENOTFOUND)
        fprintf(stderr, "tokenaudit: %s holds no ledger; run `tokenaudit init --data-dir %s "
                        "--admin-email EMAIL` first\n", cfg->data_dir, cfg->data_dir);
    else if (rc != 0)
        fprintf(stderr, "tokenaudit: cannot open the store in %s: %s\n", cfg->data_dir,
                ta_strerror(rc));
    return rc;
}

/* 20 characters from an alphabet without look-alikes, by rejection
 * sampling so every character is equally likely. */
static int generate_password(char out[21])
{
    static const char alphabet[] = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    const size_t n = sizeof(alphabet) - 1;
    size_t i = 0;
    while (i < 20) {
        uint8_t buf[32];
        int rc = ta_random(buf, sizeof(buf));
        if (rc != 0)
            return rc;
        for (size_t k = 0; k < sizeof(buf) && i < 20; k++)
            if (buf[k] < 256 - 256 % n)
                out[i++] = alphabet[buf[k] % n];
    }
    out[20] = '\0';
    return 0;
}

static int create_admin(ta_store_t *st, const ta_config_t *cfg, const char *email,
                        const char *password)
{
    char generated[21];
    if (password == NULL) {
        if (generate_password(generated) != 0) {
            fputs("tokenaudit: cannot generate a password\n", stderr);
            return 1;
        }
        password = generated;
    }
    ta_err_t err = {0};
    int rc = ta_admin_create_superadmin(st, email, password, (unsigned)cfg->pbkdf2_iterations, &err);
    if (rc == TA_EEXIST) {
        fprintf(stderr, "tokenaudit: a user with the email %s already exists\n", email);
        return 1;
    }
    if (rc != 0) {
        fprintf(stderr, "tokenaudit: cannot create the superadmin: %s\n",
                err.message[0] ? err.message : ta_strerror(rc));
        return 1;
    }
    printf("superadmin %s created\n", email);
    if (password == generated)
        printf("password (shown once, store it now): %s\n", generated);
    return 0;
}

/* ---- commands ---------------------------------------------------------- */

static bool dir_is_empty_or_missing(const char *path, bool *exists)
{
    DIR *d = opendir(path);
    *exists = d != NULL || errno != ENOENT;
    if (d == NULL)
        return errno == ENOENT;
    struct dirent *e;
    bool empty = true;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            empty = false;
    closedir(d);
    return empty;
}

static int cmd_init(const cli_opts_t *o, ta_config_t *cfg)
{
    ta_store_t *st = NULL;
    bool exists;
    int code = 1;
    if (o->email == NULL)
        return usage_error("init needs --admin-email");
    if (!dir_is_empty_or_missing(cfg->data_dir, &exists)) {
        fprintf(stderr,
                "tokenaudit: the data directory %s already exists and is not empty; refusing "
                "to initialise it again (use `tokenaudit create-superadmin` to add an admin)\n",
                cfg->data_dir);
        return 1;
    }
    if (!exists && mkdir(cfg->data_dir, 0700) == -1) {
        fprintf(stderr, "tokenaudit: cannot create %s: %s\n", cfg->data_dir, strerror(errno));
        return 1;
    }
    if (exists)
        chmod(cfg->data_dir, 0700);
    if (open_store(cfg, true, false, &st) != 0)
        goto Exit;
    int rc;
    if ((rc = ta_secret_file_create(cfg->jwt_secret_file, 32)) != 0) {
        fprintf(stderr, "tokenaudit: cannot create %s: %s\n", cfg->jwt_secret_file,
                ta_strerror(rc));
        goto Exit;
    }
    if ((rc = ta_secret_file_create(cfg->master_key_file, 32)) != 0) {
        fprintf(stderr, "tokenaudit: cannot create %s: %s\n", cfg->master_key_file,
                ta_strerror(rc));
        goto Exit;
    }
    if (create_admin(st, cfg, o->email, o->password) != 0)
        goto Exit;
    printf("data directory %s initialised; start the server with `tokenauditd -c FILE` "
           "(data_dir %s)\n", cfg->data_dir, cfg->data_dir);
    code = 0;
Exit:
    if (st != NULL)
        ta_store_close(st);
    return code;
}

static int cmd_create_superadmin(const cli_opts_t *o, ta_config_t *cfg)
{
    ta_store_t *st = NULL;
    if (o->email == NULL)
        return usage_error("create-superadmin needs --email");
    if (open_store(cfg, false, false, &st) != 0)
        return 1;
    int code = create_admin(st, cfg, o->email, o->password);
    ta_store_close(st);
    return code;
}

static int cmd_ledger_dump(const cli_opts_t *o, ta_config_t *cfg)
{
    ta_store_t *st = NULL;
    if (open_store(cfg, false, true, &st) != 0)
        return 1;
    int rc = ta_ledger_dump(st, stdout, o->json);
    ta_store_close(st);
    if (rc != 0) {
        fprintf(stderr, "tokenaudit: ledger dump: %s\n", ta_strerror(rc));
        return 1;
    }
    return 0;
}

static int cmd_backup(const cli_opts_t *o, ta_config_t *cfg)
{
    if (o->to == NULL)
        return usage_error("backup needs --to DEST");
    return ta_backup_cli(cfg->data_dir, o->to, cfg->jwt_secret_file, cfg->master_key_file);
}

#define OPT_DATA_DIR {"--data-dir DIR", "The data directory (the `data_dir` setting)."}

static const cli_cmd_t commands[] = {
    {"init", NULL, cmd_init, NULL, "--data-dir DIR --admin-email EMAIL [--admin-password PASS]",
     "Create the data directory (mode 0700), its secrets `jwt.secret` and `master.key` (mode "
     "0600) and the first superadmin. Refuses a directory that exists and is not empty. When no "
     "password is given one is generated and printed once on standard output.",
     (const ta_man_opt_t[]){
         {"--data-dir DIR", "The data directory to create (missing or empty)."},
         {"--admin-email EMAIL", "Email (login) of the first superadmin."},
         {"--admin-password PASS", "Its password; default: 20 random characters, printed once."},
         {NULL, NULL}},
     true},
    {"create-superadmin", NULL, cmd_create_superadmin, NULL,
     "--data-dir DIR --email EMAIL [--password PASS]",
     "Add a superadmin to an existing ledger (for a lost password, say).",
     (const ta_man_opt_t[]){OPT_DATA_DIR,
                            {"--email EMAIL", "Email (login) of the new superadmin."},
                            {"--password PASS", "Its password; default: generated, printed once."},
                            {NULL, NULL}},
     true},
    {"ledger", "dump", cmd_ledger_dump, NULL, "--data-dir DIR [--json]",
     "Print the ledger: users, providers (never their keys), models, groups, quotas with "
     "balances, holds, dead letters and the ticket each environment applied. Read-only; safe "
     "while the server runs.",
     (const ta_man_opt_t[]){OPT_DATA_DIR, {"--json", "One JSON document instead of text."},
                            {NULL, NULL}},
     true},
    {"ledger", "verify", NULL, ta_ledger_verify_cli,
     "--data-dir DIR [--max-hold-age SECONDS] [--lookback-days DAYS]",
     "Check that every quota's used cost equals the sum of its audit records to the nano-unit, "
     "that the statistics' aggregates (each quota's, everything's, each user's ranking cost) add "
     "up to the records, that both environments applied the same ring ticket, and that no hold "
     "is stale. Exit 0 "
     "when the books agree, 1 listing each difference, 2 on a usage or store error. Read-only; "
     "safe while the server runs.",
     (const ta_man_opt_t[]){
         {"--data-dir DIR", "The data directory (default: `TOKENAUDIT_DATA_DIR`)."},
         {"--max-hold-age SECONDS", "A hold older than this is stale (default 3900)."},
         {"--lookback-days DAYS",
          "Records received this long before a period's start are still summed (late "
          "settlement; default 35)."},
         {NULL, NULL}},
     false},
    {"backup", NULL, cmd_backup, NULL, "--data-dir DIR --to DEST [--compact]",
     "Copy the data directory to DEST while the server runs: both LMDB environments as of one "
     "applied ring ticket (`ledger verify` passes on the copy), `jwt.secret` and `master.key` "
     "(mode 0600), no ring. DEST must not exist; it appears only when the copy is complete. "
     "Holds of requests in flight are released when a gateway starts on the copy.",
     (const ta_man_opt_t[]){
         OPT_DATA_DIR,
         {"--to DEST", "Where the copy goes (a new directory; its parent must exist)."},
         {"--compact", "Accepted for scripts written for `mdb_copy -c`: every copy is written "
                       "fresh from a snapshot, so it is always compact."},
         {NULL, NULL}},
     true},
    {"audit", "tail", NULL, ta_audit_cli, "--data-dir DIR [--lines N] [--lookback SECONDS] "
                                          "[--format jsonl|csv]",
     "Print the last audit records and follow new ones until interrupted.",
     (const ta_man_opt_t[]){
         {"--data-dir DIR", "The data directory (default: `TOKENAUDIT_DATA_DIR`)."},
         {"--lines N", "Records printed before following (default 10)."},
         {"--lookback SECONDS", "How far back to look for them (default 600)."},
         {"--format jsonl|csv", "Output format (default jsonl)."},
         {NULL, NULL}},
     false},
    {"audit", "export", NULL, ta_audit_cli,
     "--data-dir DIR --format jsonl|csv [--since T] [--until T]",
     "Export audit records received in [since, until), oldest first.",
     (const ta_man_opt_t[]){
         {"--data-dir DIR", "The data directory (default: `TOKENAUDIT_DATA_DIR`)."},
         {"--format jsonl|csv", "Output format (default jsonl)."},
         {"--since T", "RFC 3339 time, a date (YYYY-MM-DD) or unix seconds; default: the first."},
         {"--until T", "The same; default: now."},
         {NULL, NULL}},
     false},
    {"audit", "warnings", NULL, ta_audit_cli,
     "--data-dir DIR [--state none|pending|delivered|failed]",
     "List the raised quota warnings with their webhook delivery state.",
     (const ta_man_opt_t[]){
         {"--data-dir DIR", "The data directory (default: `TOKENAUDIT_DATA_DIR`)."},
         {"--state STATE", "Only warnings in that state."},
         {NULL, NULL}},
     false},
    {"openapi", NULL, NULL, ta_openapi_cli, "[--json | --routes]",
     "Print the OpenAPI 3.0 document of the HTTP API (docs/openapi.yaml; workers serve it as "
     "JSON at GET /api/openapi.json), or the /api route table it is built from.",
     (const ta_man_opt_t[]){{"--json", "JSON instead of YAML."},
                            {"--routes", "The route table as JSON, one object per operation."},
                            {NULL, NULL}},
     false},
};

static const ta_man_opt_t common_opts[] = {
    {"-c, --config FILE", "Read settings from FILE (as `tokenauditd -c FILE`); `TOKENAUDIT_*` "
                          "variables override it and --data-dir overrides both."},
    {NULL, NULL},
};
static const ta_man_opt_t help_opt[] = {{"-h, --help", "Print the usage of the command."},
                                        {NULL, NULL}};

/* text wrapped at 100 columns, continuation lines indented by indent */
static void wrap(FILE *out, const char *s, int indent, int col)
{
    while (*s != '\0') {
        size_t n = strlen(s);
        if (col + (int)n <= 100) {
            fputs(s, out);
            break;
        }
        size_t cut = 0;
        for (size_t i = 0; i < n && col + (int)i <= 100; i++)
            if (s[i] == ' ')
                cut = i;
        if (cut == 0) /* one long word */
            cut = strcspn(s, " ");
        fprintf(out, "%.*s\n%*s", (int)cut, s, indent, "");
        s += cut + (s[cut] == ' ');
        col = indent;
    }
    fputc('\n', out);
}

static void cmd_name(const cli_cmd_t *c, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s%s%s", c->name, c->sub ? " " : "", c->sub ? c->sub : "");
}

static void print_opts(FILE *out, const ta_man_opt_t *o)
{
    for (; o->flag != NULL; o++) {
        fprintf(out, "  %-24s ", o->flag);
        wrap(out, o->help, 27, 27);
    }
}

static void cmd_usage(FILE *out, const cli_cmd_t *c)
{
    char name[64];
    cmd_name(c, name, sizeof(name));
    fprintf(out, "usage: tokenaudit %s %s%s\n\n", name, c->args, c->settings ? " [-c FILE]" : "");
    wrap(out, c->help, 0, 0);
    fputs("\noptions:\n", out);
    print_opts(out, c->opts);
    if (c->settings)
        print_opts(out, common_opts);
    print_opts(out, help_opt);
}

static void usage(FILE *out)
{
    char name[64];
    fputs("usage: tokenaudit COMMAND [OPTIONS]\n"
          "       tokenaudit COMMAND --help     (the options of one command)\n\ncommands:\n",
          out);
    for (size_t i = 0; i < TA_ARRAY_SIZE(commands); i++) {
        cmd_name(&commands[i], name, sizeof(name));
        fprintf(out, "  %s %s\n      ", name, commands[i].args);
        wrap(out, commands[i].help, 6, 6);
    }
    fputs("\ncommon options:\n", out);
    print_opts(out, common_opts);
    print_opts(out, help_opt);
    fputs("  --print-man              Print the tokenaudit(1) manual page (roff).\n", out);
}

/* tokenaudit(1): the same table as --help, as roff */
static void print_man(FILE *out)
{
    char name[64];
    fputs(".\\\" Generated by `tokenaudit --print-man` from the command table in master/cli.c.\n"
          ".\\\" Do not edit by hand.\n"
          ".TH TOKENAUDIT 1 \"\" \"tokenaudit " TA_VERSION "\" \"User Commands\"\n"
          ".SH NAME\n"
          "tokenaudit \\- the operator's command line of the tokenaudit gateway\n"
          ".SH SYNOPSIS\n"
          ".B tokenaudit\n"
          ".I COMMAND\n"
          "[\\fIOPTIONS\\fR]\n"
          ".br\n"
          ".B tokenaudit\n"
          ".I COMMAND\n"
          ".B \\-\\-help\n"
          ".SH DESCRIPTION\n",
          out);
    ta_man_text(out, "`tokenaudit` creates a data directory, adds administrators, reads and "
                     "checks the books, exports the audit log and backs the data directory up. "
                     "The read-only commands and `backup` are safe while tokenauditd(8) "
                     "runs.\n");
    fputs(".SH COMMANDS\n", out);
    for (size_t i = 0; i < TA_ARRAY_SIZE(commands); i++) {
        const cli_cmd_t *c = &commands[i];
        cmd_name(c, name, sizeof(name));
        fputs(".TP\n\\fBtokenaudit ", out);
        ta_man_text(out, name);
        fputs("\\fR ", out);
        ta_man_text(out, c->args);
        fputc('\n', out);
        ta_man_text(out, c->help);
        fputs("\n.RS\n", out);
        ta_man_opts(out, c->opts);
        if (c->settings)
            fputs(".TP\n\\fB\\-c, \\-\\-config FILE\\fR\nSee COMMON OPTIONS.\n", out);
        fputs(".RE\n", out);
    }
    fputs(".SH COMMON OPTIONS\n", out);
    ta_man_opts(out, common_opts);
    ta_man_opts(out, help_opt);
    fputs(".SH EXIT STATUS\n", out);
    ta_man_text(out, "0 on success; 1 when the command failed (`ledger verify`: the books "
                     "differ); 2 on a usage error (`ledger verify`: also a store error).\n");
    fputs(".SH ENVIRONMENT\n.TP\n.B TOKENAUDIT_\\fISETTING\\fR\n", out);
    ta_man_text(out, "Any setting of tokenauditd(8), e.g. `TOKENAUDIT_DATA_DIR`, "
                     "`TOKENAUDIT_PBKDF2_ITERATIONS`.\n");
    fputs(".SH SEE ALSO\n.BR tokenauditd (8)\n", out);
}

int ta_cli_main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("missing command");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--print-man") == 0) {
        print_man(stdout);
        return 0;
    }
    const cli_cmd_t *cmd = NULL;
    bool name_known = false;
    for (size_t i = 0; i < TA_ARRAY_SIZE(commands); i++) {
        if (strcmp(commands[i].name, argv[1]) != 0)
            continue;
        name_known = true;
        if (commands[i].sub == NULL || (argc > 2 && strcmp(commands[i].sub, argv[2]) == 0)) {
            cmd = &commands[i];
            break;
        }
    }
    bool want_help = false;
    for (int i = 2; i < argc; i++)
        want_help |= strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0;
    if (cmd == NULL && name_known && argc > 2 && want_help &&
        (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
        for (size_t i = 0; i < TA_ARRAY_SIZE(commands); i++) /* `tokenaudit ledger --help` */
            if (strcmp(commands[i].name, argv[1]) == 0) {
                cmd_usage(stdout, &commands[i]);
                fputc('\n', stdout);
            }
        return 0;
    }
    if (cmd != NULL && want_help) {
        cmd_usage(stdout, cmd);
        return 0;
    }
    if (cmd == NULL)
        return name_known ? usage_error("unknown or missing subcommand for '%s'", argv[1])
                          : usage_error("unknown command '%s'", argv[1]);
    int first = cmd->sub != NULL ? 3 : 2;
    if (cmd->run_raw != NULL) /* argv[0] is the last command word ("verify", "tail", "openapi") */
        return cmd->run_raw(argc - first + 1, argv + first - 1);

    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"data-dir", required_argument, NULL, 'd'},
        {"admin-email", required_argument, NULL, 'e'},
        {"email", required_argument, NULL, 'e'},
        {"admin-password", required_argument, NULL, 'p'},
        {"password", required_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},
        {"to", required_argument, NULL, 't'},
        {"compact", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    cli_opts_t o = {0};
    int c;
    optind = 1;
    int sub_argc = argc - first + 1;
    char **sub_argv = argv + first - 1; /* sub_argv[0] is the command word */
    opterr = 0;
    while ((c = getopt_long(sub_argc, sub_argv, ":c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': o.config = optarg; break;
        case 'd': o.data_dir = optarg; break;
        case 'e': o.email = optarg; break;
        case 'p': o.password = optarg; break;
        case 'j': o.json = true; break;
        case 't': o.to = optarg; break;
        case 'k': o.compact = true; break;
        case ':': return usage_error("option %s needs a value", sub_argv[optind - 1]);
        default: return usage_error("unknown option '%s'", sub_argv[optind - 1]);
        }
    }
    if (optind != sub_argc)
        return usage_error("unexpected argument '%s'", sub_argv[optind]);
    if (o.data_dir == NULL && o.config == NULL)
        return usage_error("--data-dir DIR (or -c FILE) is required");

    ta_config_t *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return 1;
    ta_err_t err = {0};
    ta_config_defaults(cfg);
    int rc = 0;
    if (o.config != NULL)
        rc = ta_config_parse_file(cfg, o.config, &err);
    if (rc == 0)
        rc = ta_config_apply_env(cfg, &err);
    if (rc == 0 && o.data_dir != NULL)
        rc = ta_config_set(cfg, "data_dir", o.data_dir, "--data-dir", &err);
    if (rc == 0)
        rc = ta_config_finish(cfg, &err);
    if (rc != 0) {
        fprintf(stderr, "tokenaudit: %s\n", err.message);
        free(cfg);
        return 1;
    }
    ta_log_init('C', cfg->log_level);
    int code = cmd->run(&o, cfg);
    free(cfg);
    return code;
}
