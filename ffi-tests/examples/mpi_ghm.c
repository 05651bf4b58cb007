/*
 * mpi_ghm.c: one GHM-C batch sharded across MPI ranks, with a global density.
 *
 * Every rank builds the same batch (same seed) and owns the contiguous shard
 * [r*N/P, (r+1)*N/P). Per batch:
 *
 *   every rank:  ghm_c_accumulate on its shard into a ghm_hist
 *                MPI_Allreduce(MPI_SUM) of the histogram's counts, loss_sums, tot, skipped,
 *                g_sums
 *                ghm_c_finalize with its own EMA (all ranks update theirs identically)
 *                ghm_c_apply on its shard: its gradients
 *
 * Over 3 batches (the EMA carried along), rank 0 gathers every shard's gradients, losses and
 * EMA and compares them with one ghm_c_loss_grad over the whole batch: gradients
 * bit-identical, losses within 1 ulp of f32, every rank's EMA identical. Then the same with
 * class-index labels (ghm_c_accumulate_labels / ghm_c_apply_labels on anchor ranges of
 * class-major logits). Exit status 1 on a mismatch (on every rank), 2 on an error.
 *
 * Usage: mpirun -np 4 mpi_ghm [N]    (N logits, default 1048583 = 1Mi + 7: uneven shards)
 * Build and run: make -C ffi-tests/examples mpi
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ghm.h"

#define BINS 30
#define MOMENTUM 0.75f
#define ITERS 3         /* batches, the EMA carried across them */
#define CLASSES 10      /* for the class-index labels */
#define SEED 20181115u

static int rank, nranks;

/* ----------------------------------------------------------------------------------------- */
/* Deterministic data: a counter-based PRNG (the splitmix64 output function at position i),
 * the same on every rank. */

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t draw(uint64_t seed, uint64_t i) { return mix64(seed + (i + 1) * 0x9E3779B97F4A7C15ull); }

static double unif32(uint64_t h) { return (double)(h >> 32) * (1.0 / 4294967296.0); }

/* Roughly standard normal (Irwin-Hall of four 16-bit uniforms). */
static float gauss4(uint64_t h) {
    double s = (double)(h & 0xffff) + (double)(h >> 16 & 0xffff) + (double)(h >> 32 & 0xffff) +
               (double)(h >> 48);
    return (float)((s / 65536.0 - 2.0) * 1.7320508075688772);
}

/* A detector-like logit for an element whose target is t (see threads.c): easy negatives
 * around -6, 10% hard ones, positives around +1, and a few confident outliers. */
static float logit(uint64_t h1, uint64_t h2, int positive) {
    double u = unif32(h1);
    float z = gauss4(h2);
    if (positive) return u < 0.02 ? -6.0f + z : 1.0f + 2.0f * z;
    if (u < 0.0002) return 6.0f + z;
    return u < 0.10 ? -1.0f + 1.5f * z : -6.0f + 1.5f * z;
}

/* Dense targets: 1% positives, 0.2% of the elements ignored (label weight 0). */
static void make_dense(uint64_t seed, size_t n, float *pred, float *target, float *lw) {
    for (size_t i = 0; i < n; i++) {
        uint64_t h0 = draw(seed, 3 * (uint64_t)i), h1 = draw(seed, 3 * (uint64_t)i + 1);
        int pos = unif32(h0) < 0.01;
        pred[i] = logit(h1, draw(seed, 3 * (uint64_t)i + 2), pos);
        target[i] = pos ? 1.0f : 0.0f;
        lw[i] = (h0 & 0xffffffffu) < 8589935u ? 0.0f : 1.0f;
    }
}

/* Class-index labels for `anchors` anchors: 2% objects of a random class, the rest background
 * (label CLASSES, or -1 for some); 0.5% of the anchors ignored. Logits class-major [C][A]. */
static void make_labels(uint64_t seed, size_t anchors, float *pred, int32_t *labels, float *aw) {
    for (size_t a = 0; a < anchors; a++) {
        uint64_t h = draw(seed ^ 0xABCDu, a);
        double u = unif32(h);
        labels[a] = u < 0.02 ? (int32_t)(h % CLASSES) : (h & 0x100) ? CLASSES : -1;
        aw[a] = (h >> 9 & 0xff) == 0 ? 0.0f : 1.0f; /* 1 in 256 */
    }
    for (size_t c = 0; c < CLASSES; c++)
        for (size_t a = 0; a < anchors; a++) {
            uint64_t i = (uint64_t)(c * anchors + a);
            pred[c * anchors + a] =
                logit(draw(seed, 2 * i), draw(seed, 2 * i + 1), labels[a] == (int32_t)c);
        }
}

/* ----------------------------------------------------------------------------------------- */

static void check(ghm_status s, const char *what) {
    if (s != GHM_OK) {
        fprintf(stderr, "rank %d: %s failed: %s (%d)\n", rank, what, ghm_status_str(s), (int)s);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
}

static size_t shard_begin(size_t n, int r) { return (size_t)((uint64_t)n * (uint64_t)r / (uint64_t)nranks); }

/* The smallest and the largest of counts[0..nranks), divided by `per`. */
static void range(const int *counts, int per, int *lo, int *hi) {
    *lo = *hi = counts[0] / per;
    for (int r = 1; r < nranks; r++) {
        if (counts[r] / per < *lo) *lo = counts[r] / per;
        if (counts[r] / per > *hi) *hi = counts[r] / per;
    }
}

/* The histogram is plain data: the sum over ranks of each field is the whole batch's. */
static void allreduce_hist(ghm_hist *h) {
    MPI_Allreduce(MPI_IN_PLACE, h->counts, GHM_MAX_BINS, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, h->loss_sums, GHM_MAX_BINS, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &h->tot, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &h->skipped, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, h->g_sums, GHM_MAX_BINS, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

static uint32_t ulps(float a, float b) {
    uint32_t ua, ub;
    int64_t ia, ib, d;
    memcpy(&ua, &a, sizeof ua);
    memcpy(&ub, &b, sizeof ub);
    ia = (ua & 0x80000000u) ? -(int64_t)(ua & 0x7fffffffu) : (int64_t)ua;
    ib = (ub & 0x80000000u) ? -(int64_t)(ub & 0x7fffffffu) : (int64_t)ub;
    d = ia > ib ? ia - ib : ib - ia;
    return d > 0xffffffff ? 0xffffffffu : (uint32_t)d;
}

/* Rank 0: compares the gathered results of one batch with the one call; prints a line. */
static int verdict(const char *what, int it, const float *grad, const float *ref_grad, size_t n,
                   const double *losses, float ref_loss, const float *emas, const ghm_ema *ref_ema) {
    size_t diffs = 0;
    uint32_t max_ulps = 0;
    int ema_same = 0;
    if (memcmp(grad, ref_grad, n * sizeof *grad) != 0)
        for (size_t i = 0; i < n; i++) diffs += memcmp(&grad[i], &ref_grad[i], sizeof *grad) != 0;
    for (int r = 0; r < nranks; r++) {
        uint32_t u = ulps((float)losses[r], ref_loss);
        if (u > max_ulps) max_ulps = u;
        ema_same += memcmp(emas + (size_t)r * BINS, ref_ema->acc_sum, BINS * sizeof(float)) == 0;
    }
    int ok = diffs == 0 && max_ulps <= 1 && ema_same == nranks;
    printf("  %s %d: loss %.7g (ranks: %u ulp), grad %s, EMA identical on %d/%d ranks: %s\n",
           what, it + 1, (double)ref_loss, (unsigned)max_ulps,
           diffs ? "DIFFERS" : "bit-identical", ema_same, nranks, ok ? "ok" : "MISMATCH");
    if (diffs) printf("    %zu of %zu gradient elements differ\n", diffs, n);
    return ok;
}

int main(int argc, char **argv) {
    size_t n = 1048583, anchors;
    ghm_c_config cfg = ghm_c_config_default();
    ghm_ema ema, ref_ema;
    ghm_hist h;
    ghm_weights w;
    float *pred, *target, *lw, *grad, *ref_grad = NULL, *pack, *recv = NULL, *emas = NULL;
    int32_t *labels;
    int *counts, *displs, ok = 1;
    double *losses = NULL;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    if (argc > 1) {
        char *end;
        unsigned long v = strtoul(argv[1], &end, 10);
        if (*end || v < (unsigned long)(CLASSES * nranks) || v > 100000000ul) {
            if (rank == 0) fprintf(stderr, "usage: %s [N in %d..100000000]\n", argv[0], CLASSES * nranks);
            MPI_Finalize();
            return 2;
        }
        n = (size_t)v;
    }
    anchors = n / CLASSES;
    cfg.bins = BINS;
    cfg.momentum = MOMENTUM;

    pred = malloc(n * sizeof *pred);
    target = malloc(n * sizeof *target);
    lw = malloc(n * sizeof *lw);
    grad = malloc(n * sizeof *grad);
    pack = malloc(n * sizeof *pack);
    labels = malloc(anchors * sizeof *labels);
    counts = malloc((size_t)nranks * sizeof *counts);
    displs = malloc((size_t)nranks * sizeof *displs);
    if (rank == 0) {
        ref_grad = malloc(n * sizeof *ref_grad);
        recv = malloc(n * sizeof *recv);
        emas = malloc((size_t)nranks * BINS * sizeof *emas);
        losses = malloc((size_t)nranks * sizeof *losses);
    }
    if (!pred || !target || !lw || !grad || !pack || !labels || !counts || !displs ||
        (rank == 0 && (!ref_grad || !recv || !emas || !losses))) {
        fprintf(stderr, "rank %d: out of memory\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }

    if (rank == 0) {
        uint32_t v = ghm_version();
        printf("ghm %u.%u.%u (%s): GHM-C bins %d, momentum %.2f, MEAN; %d ranks, %d batches\n",
               (unsigned)(v >> 16), (unsigned)(v >> 8 & 0xff), (unsigned)(v & 0xff),
               ghm_backend(), BINS, (double)MOMENTUM, nranks, ITERS);
    }

    /* Dense targets: shard r is elements [r*n/P, (r+1)*n/P). */
    for (int r = 0; r < nranks; r++) {
        displs[r] = (int)shard_begin(n, r);
        counts[r] = (int)(shard_begin(n, r + 1) - shard_begin(n, r));
    }
    if (rank == 0) {
        int lo, hi;
        range(counts, 1, &lo, &hi);
        printf("dense targets: N = %zu, shards of %d..%d elements\n", n, lo, hi);
    }
    check(ghm_ema_init(&ema, BINS), "ghm_ema_init");
    check(ghm_ema_init(&ref_ema, BINS), "ghm_ema_init");
    for (int it = 0; it < ITERS; it++) {
        size_t b = (size_t)displs[rank], m = (size_t)counts[rank];
        make_dense(SEED + (uint64_t)it, n, pred, target, lw);
        check(ghm_hist_init(&h, BINS), "ghm_hist_init");
        check(ghm_c_accumulate(&cfg, pred + b, target + b, lw + b, m, &h), "ghm_c_accumulate");
        allreduce_hist(&h);
        check(ghm_c_finalize(&cfg, &ema, &h, &w), "ghm_c_finalize");
        check(ghm_c_apply(&cfg, &w, pred + b, target + b, lw + b, m, grad + b, NULL),
              "ghm_c_apply");

        MPI_Gatherv(rank == 0 ? MPI_IN_PLACE : (void *)(grad + b), (int)m, MPI_FLOAT, grad,
                    counts, displs, MPI_FLOAT, 0, MPI_COMM_WORLD);
        MPI_Gather(&w.loss, 1, MPI_DOUBLE, losses, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
        MPI_Gather(ema.acc_sum, BINS, MPI_FLOAT, emas, BINS, MPI_FLOAT, 0, MPI_COMM_WORLD);
        if (rank == 0) {
            float ref_loss;
            check(ghm_c_loss_grad(&cfg, &ref_ema, pred, target, lw, n, ref_grad, &ref_loss, NULL,
                                  NULL),
                  "ghm_c_loss_grad");
            ok &= verdict("batch", it, grad, ref_grad, n, losses, ref_loss, emas, &ref_ema);
        }
    }

    /* Class-index labels, class-major [C][A]: shard r is anchors [r*A/P, (r+1)*A/P) of every
     * class plane. ghm_c_apply_labels writes the shard's entries of the full-size buffer;
     * they are packed plane by plane for the gather and unpacked on rank 0. */
    {
        size_t nl = anchors * CLASSES;
        for (int r = 0; r < nranks; r++) {
            displs[r] = (int)(shard_begin(anchors, r) * CLASSES);
            counts[r] = (int)((shard_begin(anchors, r + 1) - shard_begin(anchors, r)) * CLASSES);
        }
        if (rank == 0) {
            int lo, hi;
            range(counts, CLASSES, &lo, &hi);
            printf("class-index labels: %zu anchors x %d classes, class-major, shards of %d..%d "
                   "anchors\n",
                   anchors, CLASSES, lo, hi);
        }
        check(ghm_ema_init(&ema, BINS), "ghm_ema_init");
        check(ghm_ema_init(&ref_ema, BINS), "ghm_ema_init");
        for (int it = 0; it < ITERS; it++) {
            size_t a0 = shard_begin(anchors, rank), a1 = shard_begin(anchors, rank + 1);
            make_labels(SEED + 7u + (uint64_t)it, anchors, pred, labels, lw);
            check(ghm_hist_init(&h, BINS), "ghm_hist_init");
            check(ghm_c_accumulate_labels(&cfg, pred, labels, lw, anchors, CLASSES,
                                          GHM_LAYOUT_CLASS_MAJOR, a0, a1, &h),
                  "ghm_c_accumulate_labels");
            allreduce_hist(&h);
            check(ghm_c_finalize(&cfg, &ema, &h, &w), "ghm_c_finalize");
            check(ghm_c_apply_labels(&cfg, &w, pred, labels, lw, anchors, CLASSES,
                                     GHM_LAYOUT_CLASS_MAJOR, a0, a1, grad, NULL),
                  "ghm_c_apply_labels");

            for (size_t c = 0; c < CLASSES; c++)
                memcpy(pack + c * (a1 - a0), grad + c * anchors + a0, (a1 - a0) * sizeof *grad);
            MPI_Gatherv(pack, (int)((a1 - a0) * CLASSES), MPI_FLOAT, recv, counts, displs,
                        MPI_FLOAT, 0, MPI_COMM_WORLD);
            MPI_Gather(&w.loss, 1, MPI_DOUBLE, losses, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
            MPI_Gather(ema.acc_sum, BINS, MPI_FLOAT, emas, BINS, MPI_FLOAT, 0, MPI_COMM_WORLD);
            if (rank == 0) {
                float ref_loss;
                for (int r = 0; r < nranks; r++) {
                    size_t b0 = shard_begin(anchors, r), len = shard_begin(anchors, r + 1) - b0;
                    for (size_t c = 0; c < CLASSES; c++)
                        memcpy(grad + c * anchors + b0, recv + (size_t)displs[r] + c * len,
                               len * sizeof *grad);
                }
                check(ghm_c_loss_grad_labels(&cfg, &ref_ema, pred, labels, lw, anchors, CLASSES,
                                             GHM_LAYOUT_CLASS_MAJOR, ref_grad, &ref_loss, NULL,
                                             NULL),
                      "ghm_c_loss_grad_labels");
                ok &= verdict("batch", it, grad, ref_grad, nl, losses, ref_loss, emas, &ref_ema);
            }
        }
    }

    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("%s\n", ok ? "OK: sharded = one call, on every rank" : "FAILED: mismatch");

    free(pred);
    free(target);
    free(lw);
    free(grad);
    free(pack);
    free(labels);
    free(counts);
    free(displs);
    free(ref_grad);
    free(recv);
    free(emas);
    free(losses);
    MPI_Finalize();
    return ok ? 0 : 1;
}
