/*
 * replay_main.c - the main() a fuzz target is linked with when it is built
 * without libFuzzer (gcc, the default build): runs LLVMFuzzerTestOneInput once
 * on every file named on the command line or found (one level deep, in name
 * order) in a directory named there. ctest runs each target over its corpus
 * (tests/fuzz/corpus/<target>/), plain and under ASan/UBSan, the way h2o's
 * fuzz/ replays its corpora.
 *
 *   fuzz_sse tests/fuzz/corpus/sse          every seed
 *   fuzz_sse crash-1234                      one reproducer
 *
 * A target signals a broken invariant by abort(); a crash ends the run with
 * the file's name already printed. Exits 1 when nothing was run (an empty or
 * misspelled corpus directory must not pass silently).
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

#define REPLAY_MAX_INPUT (16u << 20) /* corpus files are small; a bigger one is a mistake */

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t n = 0;
    int ret = -1;
    struct stat sb;

    if (f == NULL) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (fstat(fileno(f), &sb) == -1 || sb.st_size < 0 || (uint64_t)sb.st_size > REPLAY_MAX_INPUT) {
        fprintf(stderr, "replay: %s: cannot size or too big\n", path);
        goto Exit;
    }
    /* exactly the file's bytes in a buffer of exactly that size, so ASan sees
     * a read one past the end (malloc(0) still gives a unique pointer) */
    buf = malloc((size_t)sb.st_size ? (size_t)sb.st_size : 1);
    if (buf == NULL)
        goto Exit;
    n = fread(buf, 1, (size_t)sb.st_size, f);
    if (ferror(f)) {
        fprintf(stderr, "replay: %s: read error\n", path);
        goto Exit;
    }
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, n);
    LLVMFuzzerTestOneInput(buf, n);
    ret = 0;
Exit:
    free(buf);
    fclose(f);
    return ret;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every regular file in dir (not recursive, dot-files skipped). */
static int run_dir(const char *dir, unsigned *count)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL, path[4096];
    size_t n = 0, cap = 0;
    int ret = 0;

    if (d == NULL) {
        fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            char **q = realloc(names, ncap * sizeof(*q));
            if (q == NULL) {
                ret = -1;
                goto Exit;
            }
            names = q;
            cap = ncap;
        }
        if ((names[n] = strdup(e->d_name)) == NULL) {
            ret = -1;
            goto Exit;
        }
        n++;
    }
    qsort(names, n, sizeof(*names), name_cmp);
    for (size_t i = 0; i < n && ret == 0; i++) {
        struct stat sb;
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, names[i]) >= sizeof(path)) {
            ret = -1;
            break;
        }
        if (stat(path, &sb) == -1 || !S_ISREG(sb.st_mode))
            continue;
        ret = run_file(path);
        (*count)++;
    }
Exit:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return ret;
}

int main(int argc, char **argv)
{
    unsigned count = 0;
    struct stat sb;

    if (LLVMFuzzerInitialize != NULL)
        LLVMFuzzerInitialize(&argc, &argv);
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR|FILE...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        int rc;
        if (stat(argv[i], &sb) == -1) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        if (S_ISDIR(sb.st_mode)) {
            rc = run_dir(argv[i], &count);
        } else {
            rc = run_file(argv[i]);
            count++;
        }
        if (rc != 0)
            return 1;
    }
    if (count == 0) {
        fprintf(stderr, "replay: no inputs found\n");
        return 1;
    }
    fprintf(stderr, "replay: %u inputs, no failure\n", count);
    return 0;
}
