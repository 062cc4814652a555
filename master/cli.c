/*
 * cli.c - `tokenaudit`, the operator's command line.
 *
 *   tokenaudit init --data-dir DIR --admin-email EMAIL [--admin-password PASS] [-c FILE]
 *   tokenaudit create-superadmin --data-dir DIR --email EMAIL [--password PASS] [-c FILE]
 *   tokenaudit ledger dump --data-dir DIR [--json] [-c FILE]
 *
 * Commands live in one table (commands[] below): a new one is a function
 * and one line. Every command honours the same settings as the server
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
#include "master/master.h"

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
    const char *help;
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

static const cli_cmd_t commands[] = {
    {"init", NULL, cmd_init, NULL, "--data-dir DIR --admin-email EMAIL [--admin-password PASS]",
     "create the data directory, its secrets and the first superadmin (a password is "
     "generated and printed once when none is given)"},
    {"create-superadmin", NULL, cmd_create_superadmin, NULL,
     "--data-dir DIR --email EMAIL [--password PASS]", "add a superadmin to an existing ledger"},
    {"ledger", "dump", cmd_ledger_dump, NULL, "--data-dir DIR [--json]",
     "print the ledger (read-only; safe while the server runs)"},
    {"ledger", "verify", NULL, ta_ledger_verify_cli, "--data-dir DIR",
     "check that every quota's used cost equals the sum of its audit records and that no hold "
     "is stale; exit 1 listing each difference"},
    {"backup", NULL, cmd_backup, NULL, "--data-dir DIR --to DEST [--compact]",
     "copy the data directory to DEST while the server runs: both environments as of one "
     "applied ring ticket (`ledger verify` passes on the copy), the secret files (mode 0600), "
     "no ring; DEST must not exist. Copies are always compact; --compact is accepted"},
    {"audit", "tail", NULL, ta_audit_cli, "--data-dir DIR [-n N]", "follow new audit records"},
    {"audit", "export", NULL, ta_audit_cli,
     "--data-dir DIR --format jsonl|csv [--since T] [--until T]", "export audit records"},
    {"audit", "warnings", NULL, ta_audit_cli, "--data-dir DIR [--state pending|delivered|failed|none]",
     "list the raised quota warnings with their webhook delivery state"},
    {"openapi", NULL, NULL, ta_openapi_cli, "[--json]",
     "print the OpenAPI 3.0 document of the HTTP API (docs/openapi.yaml)"},
};

static void usage(FILE *out)
{
    fputs("usage: tokenaudit COMMAND [OPTIONS]\n\ncommands:\n", out);
    for (size_t i = 0; i < TA_ARRAY_SIZE(commands); i++) {
        fprintf(out, "  %s%s%s %s\n      %s\n", commands[i].name, commands[i].sub ? " " : "",
                commands[i].sub ? commands[i].sub : "", commands[i].args, commands[i].help);
    }
    fputs("\ncommon options:\n"
          "  -c, --config FILE   read settings from FILE (TOKENAUDIT_* variables override it;\n"
          "                      --data-dir overrides both)\n"
          "  -h, --help          this text\n",
          out);
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
        case 'h': usage(stdout); return 0;
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
