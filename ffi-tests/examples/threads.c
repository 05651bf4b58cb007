/*
 * threads.c: one GHM batch split across threads with the phased API, checked against the
 * one-call function, then timed.
 *
 * GHM's weights come from the gradient-norm density of the *whole* batch, so a batch split
 * across threads cannot simply run the one-call function per chunk. The phased API splits the
 * work instead:
 *
 *   each thread:  ghm_hist_init + ghm_c_accumulate   on its chunk, into its own ghm_hist
 *   main thread:  ghm_hist_merge of the T histograms, ghm_c_finalize once (EMA update)
 *   each thread:  ghm_c_apply                         on its chunk (its gradients)
 *
 * The library guarantees that, for any chunking and any order of accumulation and merging,
 * the gradients are bit-identical to the one-call ghm_c_loss_grad, the loss is within 1 ulp
 * (of f32) and the EMA state is identical. This program checks that on a detector-like batch
 * over several batches with an EMA carried along, for a few chunkings, and for GHM-R once;
 * then it times the one call against the T-thread phased path. Exit status 1 on a mismatch.
 *
 * Usage: threads [N [T]]   (N elements, default 16777216 = 16Mi; T threads, default 2)
 * Build and run: make -C ffi-tests/examples threads
 */
#define _POSIX_C_SOURCE 200112L

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ghm.h"

#define BINS 30
#define MOMENTUM 0.75f
#define BATCHES 3       /* batches per check, the EMA carried across them */
#define REPS 7          /* timing repetitions (best and median reported) */
#define MAX_CHUNKS 64
#define SEED 20181115u

/* ----------------------------------------------------------------------------------------- */
/* Deterministic data: a counter-based PRNG (the splitmix64 output function at position i), so
 * element i is the same whoever generates it. */

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t draw(uint64_t seed, uint64_t i) { return mix64(seed + (i + 1) * 0x9E3779B97F4A7C15ull); }

/* Uniform in [0, 1) from the top 32 bits. */
static double unif32(uint64_t h) { return (double)(h >> 32) * (1.0 / 4294967296.0); }

/* Roughly standard normal (Irwin-Hall of four 16-bit uniforms, unit variance, |z| < 3.5). */
static float gauss4(uint64_t h) {
    double s = (double)(h & 0xffff) + (double)(h >> 16 & 0xffff) + (double)(h >> 32 & 0xffff) +
               (double)(h >> 48);
    return (float)((s / 65536.0 - 2.0) * 1.7320508075688772);
}

typedef struct {
    size_t n;
    float *pred, *target, *lw;
} batch;

/* GHM-C, as a dense detector head sees it: 1% positives (logits spread around +1), 9% hard
 * negatives, 90% easy negatives (logits around -6), 0.04% confident outliers (wrong labels,
 * or an object the model is sure is background); 0.2% of the elements ignored (weight 0). */
static void make_c_batch(batch *b, uint64_t seed) {
    for (size_t i = 0; i < b->n; i++) {
        uint64_t h1 = draw(seed, 2 * (uint64_t)i), h2 = draw(seed, 2 * (uint64_t)i + 1);
        double u = unif32(h1);
        float z = gauss4(h2), x, t;
        if (u < 0.01) { t = 1.0f; x = 1.0f + 2.0f * z; }
        else if (u < 0.0102) { t = 0.0f; x = 6.0f + z; }   /* outlier: "background" at p ~ 1 */
        else if (u < 0.0104) { t = 1.0f; x = -6.0f + z; }  /* outlier: missed object */
        else if (u < 0.10) { t = 0.0f; x = -1.0f + 1.5f * z; }
        else { t = 0.0f; x = -6.0f + 1.5f * z; }
        b->pred[i] = x;
        b->target[i] = t;
        b->lw[i] = (h1 & 0xffffffffu) < 8589935u ? 0.0f : 1.0f; /* 0.2% */
    }
}

/* GHM-R: box-regression deltas; half the elements carry weight 1 (positive anchors), the
 * rest 0. Most residuals are small, 10% moderate, 0.5% gross outliers. */
static void make_r_batch(batch *b, uint64_t seed) {
    for (size_t i = 0; i < b->n; i++) {
        uint64_t h1 = draw(seed, 2 * (uint64_t)i), h2 = draw(seed, 2 * (uint64_t)i + 1);
        double u = unif32(h1);
        float z = gauss4(h2), t = 0.5f * gauss4(mix64(h2)), d;
        if (u < 0.005) d = (z < 0.0f ? -2.0f : 2.0f) + z;
        else if (u < 0.105) d = 0.3f * z;
        else d = 0.02f * z;
        b->target[i] = t;
        b->pred[i] = t + d;
        b->lw[i] = (h1 & 1u) ? 1.0f : 0.0f;
    }
}

/* ----------------------------------------------------------------------------------------- */
/* The phased path: one thread per chunk for each pass, the per-batch step on the main thread. */

typedef struct {
    int regression;           /* 0: GHM-C, 1: GHM-R */
    const ghm_c_config *ccfg;
    const ghm_r_config *rcfg;
    const batch *b;
    size_t begin, end;        /* this chunk */
    ghm_hist hist;            /* pass 1 output */
    const ghm_weights *w;     /* pass 2 input */
    float *grad;              /* the whole batch's gradient buffer */
    ghm_status st;
} chunk;

static void *accumulate_chunk(void *arg) {
    chunk *c = arg;
    const batch *b = c->b;
    size_t o = c->begin, n = c->end - c->begin;
    c->st = ghm_hist_init(&c->hist, BINS);
    if (c->st == GHM_OK) {
        c->st = c->regression
                    ? ghm_r_accumulate(c->rcfg, b->pred + o, b->target + o, b->lw + o, n, &c->hist)
                    : ghm_c_accumulate(c->ccfg, b->pred + o, b->target + o, b->lw + o, n, &c->hist);
    }
    return NULL;
}

static void *apply_chunk(void *arg) {
    chunk *c = arg;
    const batch *b = c->b;
    size_t o = c->begin, n = c->end - c->begin;
    /* This chunk went through accumulate with skip_bad = 0, which refuses any bad element: so
     * apply may run with skip_bad = 1 and skip its own validation pass over the inputs. The
     * results are identical (there is nothing to skip), and the inputs are read once less. */
    if (c->regression) {
        ghm_r_config rcfg = *c->rcfg;
        rcfg.skip_bad = 1;
        c->st = ghm_r_apply(&rcfg, c->w, b->pred + o, b->target + o, b->lw + o, n, c->grad + o,
                            NULL);
    } else {
        ghm_c_config ccfg = *c->ccfg;
        ccfg.skip_bad = 1;
        c->st = ghm_c_apply(&ccfg, c->w, b->pred + o, b->target + o, b->lw + o, n, c->grad + o,
                            NULL);
    }
    return NULL;
}

static void fail(const char *what, ghm_status s) {
    fprintf(stderr, "%s failed: %s (%d)\n", what, ghm_status_str(s), (int)s);
    exit(1);
}

/* Runs fn on every chunk, one thread each, and waits for all of them. */
static void run_threads(void *(*fn)(void *), chunk *c, int k, const char *what) {
    pthread_t tid[MAX_CHUNKS];
    for (int j = 0; j < k; j++) {
        int e = pthread_create(&tid[j], NULL, fn, &c[j]);
        if (e != 0) {
            fprintf(stderr, "pthread_create: %s\n", strerror(e));
            exit(1);
        }
    }
    for (int j = 0; j < k; j++) pthread_join(tid[j], NULL);
    for (int j = 0; j < k; j++)
        if (c[j].st != GHM_OK) fail(what, c[j].st);
}

/* One batch through the phased API: chunk j is [cut[j], cut[j+1]); the histograms are merged
 * in the order `order` (NULL: 0, 1, ...). Writes the gradient, returns the batch's loss. */
static float phased(int regression, const ghm_c_config *ccfg, const ghm_r_config *rcfg,
                    ghm_ema *ema, const batch *b, const size_t *cut, int k, const int *order,
                    float *grad) {
    chunk c[MAX_CHUNKS];
    ghm_hist total;
    ghm_weights w;
    ghm_status s;
    for (int j = 0; j < k; j++) {
        c[j].regression = regression;
        c[j].ccfg = ccfg;
        c[j].rcfg = rcfg;
        c[j].b = b;
        c[j].begin = cut[j];
        c[j].end = cut[j + 1];
        c[j].w = &w;
        c[j].grad = grad;
    }
    run_threads(accumulate_chunk, c, k, "accumulate");
    if ((s = ghm_hist_init(&total, BINS)) != GHM_OK) fail("ghm_hist_init", s);
    for (int j = 0; j < k; j++)
        if ((s = ghm_hist_merge(&total, &c[order ? order[j] : j].hist)) != GHM_OK)
            fail("ghm_hist_merge", s);
    s = regression ? ghm_r_finalize(rcfg, ema, &total, &w) : ghm_c_finalize(ccfg, ema, &total, &w);
    if (s != GHM_OK) fail("finalize", s);
    run_threads(apply_chunk, c, k, "apply");
    return (float)w.loss;
}

static float one_call(int regression, const ghm_c_config *ccfg, const ghm_r_config *rcfg,
                      ghm_ema *ema, const batch *b, float *grad) {
    float loss;
    ghm_status s = regression
                       ? ghm_r_loss_grad(rcfg, ema, b->pred, b->target, b->lw, b->n, grad, &loss,
                                         NULL, NULL)
                       : ghm_c_loss_grad(ccfg, ema, b->pred, b->target, b->lw, b->n, grad, &loss,
                                         NULL, NULL);
    if (s != GHM_OK) fail(regression ? "ghm_r_loss_grad" : "ghm_c_loss_grad", s);
    return loss;
}

/* ----------------------------------------------------------------------------------------- */
/* Checks. */

/* Distance in units in the last place between two finite floats. */
static uint32_t ulps(float a, float b) {
    uint32_t ua, ub;
    int64_t ia, ib, d;
    memcpy(&ua, &a, sizeof ua);
    memcpy(&ub, &b, sizeof ub);
    /* map the sign-magnitude bit patterns onto a monotone integer line */
    ia = (ua & 0x80000000u) ? -(int64_t)(ua & 0x7fffffffu) : (int64_t)ua;
    ib = (ub & 0x80000000u) ? -(int64_t)(ub & 0x7fffffffu) : (int64_t)ub;
    d = ia > ib ? ia - ib : ib - ia;
    return d > 0xffffffff ? 0xffffffffu : (uint32_t)d;
}

/* A split of the batch and the order its histograms are merged in. */
typedef struct {
    char name[64];
    int k;
    size_t cut[MAX_CHUNKS + 1];
    int order[MAX_CHUNKS];
    ghm_ema ema;              /* this split's own EMA, carried across batches */
    uint32_t max_ulps;
    size_t grad_diffs;        /* elements whose gradient bits differ, over all batches */
    int ema_diffs;            /* batches after which the EMA differs */
} split;

static size_t count_diffs(const float *a, const float *b, size_t n) {
    size_t d = 0;
    if (memcmp(a, b, n * sizeof *a) == 0) return 0;
    for (size_t i = 0; i < n; i++) d += memcmp(&a[i], &b[i], sizeof *a) != 0;
    return d;
}

static int report(const split *s, int batches) {
    int ok = s->grad_diffs == 0 && s->max_ulps <= 1 && s->ema_diffs == 0;
    printf("  %-47s grad %s, loss %u ulp, EMA %s  %s\n", s->name,
           s->grad_diffs ? "DIFFERS" : "bit-identical", (unsigned)s->max_ulps,
           s->ema_diffs ? "DIFFERS" : "identical", ok ? "ok" : "MISMATCH");
    if (s->grad_diffs)
        printf("    %zu gradient elements differ over %d batches\n", s->grad_diffs, batches);
    return ok;
}

static void compare(split *s, const float *grad, const float *ref_grad, size_t n, float loss,
                    float ref_loss, const ghm_ema *ref_ema) {
    uint32_t u = ulps(loss, ref_loss);
    s->grad_diffs += count_diffs(grad, ref_grad, n);
    if (u > s->max_ulps) s->max_ulps = u;
    s->ema_diffs += memcmp(&s->ema, ref_ema, sizeof *ref_ema) != 0;
}

/* ----------------------------------------------------------------------------------------- */
/* Timing. */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    double best, median; /* ns per element */
} timing;

static timing summarize(double *t, size_t n) {
    timing r;
    qsort(t, REPS, sizeof *t, by_value);
    r.best = 1e9 * t[0] / (double)n;
    r.median = 1e9 * t[REPS / 2] / (double)n;
    return r;
}

/* ----------------------------------------------------------------------------------------- */

static size_t parse_size(const char *s, const char *what) {
    char *end;
    unsigned long long v;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end || end == s || v == 0 || v > (unsigned long long)(SIZE_MAX / 8)) {
        fprintf(stderr, "bad %s: %s\n", what, s);
        exit(2);
    }
    return (size_t)v;
}

int main(int argc, char **argv) {
    size_t n = argc > 1 ? parse_size(argv[1], "N") : (size_t)16777216;
    int T = argc > 2 ? (int)parse_size(argv[2], "T") : 2;
    batch b;
    float *ref_grad, *grad;
    ghm_c_config ccfg = ghm_c_config_default();
    ghm_r_config rcfg = ghm_r_config_default();
    ghm_ema ref_ema;
    ghm_status st;
    static split sp[3];
    int ok = 1;
    size_t ignored = 0, positives = 0;
    double t_one[REPS], t_phased[REPS], t_phased1[REPS];

    if (argc > 3 || T > MAX_CHUNKS || n < MAX_CHUNKS) {
        fprintf(stderr, "usage: %s [N >= %d [T <= %d]]\n", argv[0], MAX_CHUNKS, MAX_CHUNKS);
        return 2;
    }
    b.n = n;
    b.pred = malloc(n * sizeof *b.pred);
    b.target = malloc(n * sizeof *b.target);
    b.lw = malloc(n * sizeof *b.lw);
    ref_grad = malloc(n * sizeof *ref_grad);
    grad = malloc(n * sizeof *grad);
    if (!b.pred || !b.target || !b.lw || !ref_grad || !grad) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    ccfg.bins = BINS;
    ccfg.momentum = MOMENTUM;
    rcfg.bins = BINS;
    rcfg.momentum = MOMENTUM;

    /* Split 0: T equal contiguous chunks, merged in order. */
    snprintf(sp[0].name, sizeof sp[0].name, "%d thread%s, equal chunks, merged in order", T,
             T == 1 ? "" : "s");
    sp[0].k = T;
    for (int j = 0; j <= T; j++) sp[0].cut[j] = (size_t)((uint64_t)j * n / (uint64_t)T);
    /* Split 1: 3 uneven chunks (14% / 48% / 38%, odd boundaries), merged 2, 0, 1. */
    snprintf(sp[1].name, sizeof sp[1].name, "3 threads, uneven chunks, merged 2,0,1");
    sp[1].k = 3;
    sp[1].cut[0] = 0;
    sp[1].cut[1] = n / 7;
    sp[1].cut[2] = n / 8 * 5 + 3;
    sp[1].cut[3] = n;
    sp[1].order[0] = 2;
    sp[1].order[1] = 0;
    sp[1].order[2] = 1;
    /* Split 2: 13 chunks of random sizes, merged in a random order. */
    snprintf(sp[2].name, sizeof sp[2].name, "13 threads, random chunks, random merge order");
    sp[2].k = 13;
    {
        uint64_t r[13], sum = 0, acc = 0;
        for (int j = 0; j < 13; j++) sum += r[j] = 1 + (draw(SEED, 1000u + (uint64_t)j) >> 40);
        sp[2].cut[0] = 0;
        for (int j = 0; j < 13; j++) {
            acc += r[j];
            sp[2].cut[j + 1] = (size_t)((double)acc / (double)sum * (double)n);
            sp[2].order[j] = j;
        }
        sp[2].cut[13] = n;
        for (int j = 12; j > 0; j--) { /* Fisher-Yates */
            int i = (int)(draw(SEED, 2000u + (uint64_t)j) % (uint64_t)(j + 1)), t = sp[2].order[i];
            sp[2].order[i] = sp[2].order[j];
            sp[2].order[j] = t;
        }
    }

    uint32_t v = ghm_version();
    printf("ghm %u.%u.%u (%s): GHM-C bins %d, momentum %.2f, MEAN; N = %zu, %d batches\n",
           (unsigned)(v >> 16), (unsigned)(v >> 8 & 0xff), (unsigned)(v & 0xff), ghm_backend(),
           BINS, (double)MOMENTUM, n, BATCHES);

    /* GHM-C: every split against the one call, over BATCHES batches, each with its own EMA. */
    if ((st = ghm_ema_init(&ref_ema, BINS)) != GHM_OK) fail("ghm_ema_init", st);
    for (int s = 0; s < 3; s++)
        if ((st = ghm_ema_init(&sp[s].ema, BINS)) != GHM_OK) fail("ghm_ema_init", st);
    printf("one call per batch (ghm_c_loss_grad), loss:");
    for (int it = 0; it < BATCHES; it++) {
        make_c_batch(&b, SEED + (uint64_t)it);
        if (it == 0)
            for (size_t i = 0; i < n; i++) {
                ignored += b.lw[i] == 0.0f;
                positives += b.target[i] == 1.0f;
            }
        float ref_loss = one_call(0, &ccfg, NULL, &ref_ema, &b, ref_grad);
        printf(" %.7g", (double)ref_loss);
        for (int s = 0; s < 3; s++) {
            float loss = phased(0, &ccfg, NULL, &sp[s].ema, &b, sp[s].cut, sp[s].k,
                                s ? sp[s].order : NULL, grad);
            compare(&sp[s], grad, ref_grad, n, loss, ref_loss, &ref_ema);
        }
    }
    printf("\n  (%.2f%% positives, %.2f%% ignored in batch 1)\n", 100.0 * (double)positives / (double)n,
           100.0 * (double)ignored / (double)n);
    for (int s = 0; s < 3; s++) ok &= report(&sp[s], BATCHES);

    /* GHM-R once: one batch, 3 uneven chunks merged 2, 0, 1, 0/1 label weights. */
    {
        split r = sp[1];
        float ref_loss, loss;
        snprintf(r.name, sizeof r.name, "GHM-R (mu %.2f): 3 uneven chunks, merged 2,0,1",
                 (double)rcfg.mu);
        r.max_ulps = 0;
        r.grad_diffs = 0;
        r.ema_diffs = 0;
        make_r_batch(&b, SEED + 100u);
        if ((st = ghm_ema_init(&ref_ema, BINS)) != GHM_OK) fail("ghm_ema_init", st);
        if ((st = ghm_ema_init(&r.ema, BINS)) != GHM_OK) fail("ghm_ema_init", st);
        ref_loss = one_call(1, NULL, &rcfg, &ref_ema, &b, ref_grad);
        loss = phased(1, NULL, &rcfg, &r.ema, &b, r.cut, r.k, r.order, grad);
        compare(&r, grad, ref_grad, n, loss, ref_loss, &ref_ema);
        ok &= report(&r, 1);
    }

    /* Timing: the one call against the phased path on T threads (and on 1 thread), same
     * batch, same starting EMA. */
    make_c_batch(&b, SEED);
    {
        size_t cut1[2];
        cut1[0] = 0;
        cut1[1] = n;
        for (int r = 0; r < REPS; r++) {
            ghm_ema e;
            double t0;
            if ((st = ghm_ema_init(&e, BINS)) != GHM_OK) fail("ghm_ema_init", st);
            t0 = now();
            one_call(0, &ccfg, NULL, &e, &b, ref_grad);
            t_one[r] = now() - t0;
            if ((st = ghm_ema_init(&e, BINS)) != GHM_OK) fail("ghm_ema_init", st);
            t0 = now();
            phased(0, &ccfg, NULL, &e, &b, sp[0].cut, T, NULL, grad);
            t_phased[r] = now() - t0;
            if ((st = ghm_ema_init(&e, BINS)) != GHM_OK) fail("ghm_ema_init", st);
            t0 = now();
            phased(0, &ccfg, NULL, &e, &b, cut1, 1, NULL, grad);
            t_phased1[r] = now() - t0;
        }
    }
    {
        timing one = summarize(t_one, n), ph = summarize(t_phased, n), ph1 = summarize(t_phased1, n);
        printf("time per element, best / median of %d, N = %zu:\n", REPS, n);
        printf("  one call (ghm_c_loss_grad, 1 thread)       %6.3f / %6.3f ns\n", one.best, one.median);
        printf("  phased, 1 thread                           %6.3f / %6.3f ns\n", ph1.best, ph1.median);
        printf("  phased, %2d thread%s                         %6.3f / %6.3f ns\n", T,
               T == 1 ? " " : "s", ph.best, ph.median);
        printf("speed-up of %d thread%s over the one call: %.2fx (best), %.2fx (median)\n", T,
               T == 1 ? "" : "s", one.best / ph.best, one.median / ph.median);
    }
    printf("%s\n", ok ? "OK: phased = one call for every split" : "FAILED: mismatch");

    free(b.pred);
    free(b.target);
    free(b.lw);
    free(ref_grad);
    free(grad);
    return ok ? 0 : 1;
}
