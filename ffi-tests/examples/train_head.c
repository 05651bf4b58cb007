/*
 * train_head.c: a Darknet-style logistic classification head, trained with plain SGD twice
 * from the same initialisation: once with plain binary cross-entropy, once with GHM-C.
 *
 * Data (synthetic, deterministic): 16-dim features, 4 classes, anchors as a detector sees
 * them. 96% of anchors are background, x ~ N(0, I); 1% per class are objects of class c,
 * x ~ N(mu_c, I) with |mu_c| = 4. Training labels are noisy: 10% of the objects are marked
 * background (missed annotations) and 0.5% of the background anchors are marked as a random
 * class (spurious annotations). The test set is clean.
 *
 * The head is what Darknet does: the forward pass applies the logistic and keeps
 * probabilities; the layer zeroes its `delta` (the negative gradient w.r.t. the logits) each
 * batch, the loss adds into it, and the update is w += lr/batch * sum(delta * x).
 *
 * Build and run: make example
 * (or, once installed: cc -std=c99 train_head.c $(pkg-config --cflags --libs ghm) -lm)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ghm.h"

#define DIM 16          /* feature dimension */
#define NCLS 4          /* classes; label NCLS means background */
#define N_TRAIN 4000    /* training anchors */
#define N_TEST 20000    /* clean test anchors */
#define BATCH 200       /* anchors per SGD step */
#define EPOCHS 15
#define LR 1.0f         /* Darknet convention: each step uses lr / BATCH */
#define STEPS (EPOCHS * (N_TRAIN / BATCH))
#define BURN_IN (N_TRAIN / BATCH) /* Darknet's burn_in: lr ramps up as (step/BURN_IN)^4 ... */
#define STEP1 (STEPS * 8 / 10)    /* ... then policy=steps: lr x 0.1 after 80% of the steps, */
#define STEP2 (STEPS * 9 / 10)    /*     x 0.01 after 90%, as yolov3.cfg does */
#define OBJ_RATE 0.01   /* objects per class among anchors */
#define MU_NORM 4.0     /* distance of a class's feature mean from the background's */
#define MISSED_RATE 0.10   /* objects labelled background */
#define SPURIOUS_RATE 0.005 /* background anchors labelled as an object */
#ifndef SEED
#define SEED 42         /* the data and the initialisation */
#endif

/* ----------------------------------------------------------------------------------------- */
/* A small deterministic PRNG (splitmix64) with uniform and Gaussian draws. */

typedef struct {
    uint64_t s;
} rng;

static uint64_t rng_u64(rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double rng_unif(rng *r) { return (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

/* Standard normal (Box-Muller). */
static double rng_gauss(rng *r) {
    const double two_pi = 6.283185307179586;
    double u1 = 1.0 - rng_unif(r); /* (0, 1] */
    double u2 = rng_unif(r);
    return sqrt(-2.0 * log(u1)) * cos(two_pi * u2);
}

/* ----------------------------------------------------------------------------------------- */
/* Data. */

typedef struct {
    int n;
    float (*x)[DIM];
    int32_t *label; /* what the annotation says: 0..NCLS-1, or NCLS for background */
    int32_t *truth; /* what the anchor is */
    float (*bayes)[NCLS]; /* the true posterior P(class c | x) of the generating model */
} dataset;

static double mu[NCLS][DIM];

static void make_class_means(rng *r) {
    for (int c = 0; c < NCLS; c++) {
        double norm = 0.0;
        for (int d = 0; d < DIM; d++) {
            mu[c][d] = rng_gauss(r);
            norm += mu[c][d] * mu[c][d];
        }
        norm = sqrt(norm);
        for (int d = 0; d < DIM; d++) mu[c][d] *= MU_NORM / norm;
    }
}

static int alloc_dataset(dataset *ds, int n) {
    ds->n = n;
    ds->x = malloc(sizeof *ds->x * (size_t)n);
    ds->label = malloc(sizeof *ds->label * (size_t)n);
    ds->truth = malloc(sizeof *ds->truth * (size_t)n);
    ds->bayes = malloc(sizeof *ds->bayes * (size_t)n);
    return ds->x && ds->label && ds->truth && ds->bayes;
}

/* Draws ds->n anchors; if noisy, flips training labels as described at the top. */
static void make_dataset(dataset *ds, rng *r, int noisy) {
    const double log_prior_ratio = log(OBJ_RATE / (1.0 - NCLS * OBJ_RATE));
    for (int a = 0; a < ds->n; a++) {
        double u = rng_unif(r);
        int truth = (int)(u / OBJ_RATE);
        if (truth > NCLS) truth = NCLS;
        for (int d = 0; d < DIM; d++) {
            double v = rng_gauss(r);
            if (truth < NCLS) v += mu[truth][d];
            ds->x[a][d] = (float)v;
        }
        int label = truth;
        if (noisy) {
            double f = rng_unif(r);
            if (truth < NCLS && f < MISSED_RATE) label = NCLS;
            if (truth == NCLS && f < SPURIOUS_RATE) label = (int)(rng_unif(r) * NCLS);
        }
        ds->truth[a] = truth;
        ds->label[a] = label;
        /* Bayes: log [P(c) N(x; mu_c, I) / (P(bg) N(x; 0, I))]
         *        = mu_c.x - |mu_c|^2 / 2 + log(P(c) / P(bg)) */
        double e[NCLS], den = 1.0;
        for (int c = 0; c < NCLS; c++) {
            double z = log_prior_ratio - 0.5 * MU_NORM * MU_NORM;
            for (int d = 0; d < DIM; d++) z += mu[c][d] * ds->x[a][d];
            e[c] = exp(z);
            den += e[c];
        }
        for (int c = 0; c < NCLS; c++) ds->bayes[a][c] = (float)(e[c] / den);
    }
}

/* ----------------------------------------------------------------------------------------- */
/* The head: NCLS logistic units on DIM features. */

typedef struct {
    float w[NCLS][DIM];
    float b[NCLS];
} head;

static float logistic(float z) { return 1.0f / (1.0f + expf(-z)); }

/* Forward pass over anchors idx[0..n), probabilities class-major: p[c * n + i]. */
static void forward(const head *h, const dataset *ds, const int *idx, int n, float *p) {
    for (int i = 0; i < n; i++) {
        const float *x = ds->x[idx[i]];
        for (int c = 0; c < NCLS; c++) {
            float z = h->b[c];
            for (int d = 0; d < DIM; d++) z += h->w[c][d] * x[d];
            p[c * n + i] = logistic(z);
        }
    }
}

static double bce(float p, float t) {
    double q = p < 1e-7f ? 1e-7 : p > 1.0f - 1e-7f ? 1.0 - 1e-7 : (double)p;
    return -(t * log(q) + (1.0 - t) * log(1.0 - q));
}

/* ----------------------------------------------------------------------------------------- */
/* Metrics on the clean test set. */

static const float *sort_scores;

static int by_score_desc(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    if (sort_scores[i] != sort_scores[j]) return sort_scores[i] > sort_scores[j] ? -1 : 1;
    return (i > j) - (i < j);
}

/* Mean over classes of the (non-interpolated) average precision; scores class-major. */
static double mean_ap(const dataset *ds, const float *scores, int *order) {
    double sum = 0.0;
    for (int c = 0; c < NCLS; c++) {
        const float *s = scores + (size_t)c * (size_t)ds->n;
        for (int i = 0; i < ds->n; i++) order[i] = i;
        sort_scores = s;
        qsort(order, (size_t)ds->n, sizeof *order, by_score_desc);
        int tp = 0, npos = 0;
        double ap = 0.0;
        for (int k = 0; k < ds->n; k++) {
            if (ds->truth[order[k]] == c) {
                tp++;
                ap += (double)tp / (k + 1);
            }
        }
        for (int i = 0; i < ds->n; i++) npos += ds->truth[i] == c;
        sum += npos ? ap / npos : 0.0;
    }
    return sum / NCLS;
}

typedef struct {
    double map, recall, fp_easy, p_easy;
} test_metrics;

/* An easy negative: (anchor, class) with the anchor not of that class and a true posterior
 * of that class below 1%. */
static test_metrics evaluate(const dataset *ds, const float *scores, int *order) {
    test_metrics m;
    long pos = 0, hit = 0, easy = 0, fp = 0;
    double psum = 0.0;
    m.map = mean_ap(ds, scores, order);
    for (int c = 0; c < NCLS; c++) {
        for (int i = 0; i < ds->n; i++) {
            float p = scores[(size_t)c * (size_t)ds->n + (size_t)i];
            if (ds->truth[i] == c) {
                pos++;
                hit += p > 0.5f;
            } else if (ds->bayes[i][c] < 0.01f) {
                easy++;
                fp += p > 0.5f;
                psum += p;
            }
        }
    }
    m.recall = (double)hit / (double)pos;
    m.fp_easy = (double)fp / (double)easy;
    m.p_easy = psum / (double)easy;
    return m;
}

/* ----------------------------------------------------------------------------------------- */
/* Training. */

/* Darknet's get_current_rate() for burn_in + policy=steps. */
static float current_rate(int step) {
    if (step < BURN_IN) return LR * powf((float)step / BURN_IN, 4.0f);
    return step < STEP1 ? LR : step < STEP2 ? LR * 0.1f : LR * 0.01f;
}

enum { LOSS_BCE, LOSS_GHMC };

typedef struct {
    head h;
    ghm_c_config cfg;
    ghm_ema ema;
    double epoch_loss[EPOCHS]; /* the trained loss, per element */
    double epoch_bce[EPOCHS];  /* plain BCE on the (noisy) training labels, per element */
    double epoch_map[EPOCHS];  /* test mAP after the epoch */
    double share[4];           /* last epoch's |delta|: positives, easy neg, other neg, flipped */
    double mean_delta;         /* last epoch's mean |delta| per element */
    test_metrics test;
    double p_spurious, p_missed; /* mean probability of the flipped label, after training */
} run;

static void check(ghm_status s, const char *what) {
    if (s != GHM_OK) {
        fprintf(stderr, "%s failed: %s (%d)\n", what, ghm_status_str(s), (int)s);
        exit(1);
    }
}

static void train(run *r, int loss, const head *init, const dataset *tr, const dataset *te,
                  float *test_scores, int *order) {
    static float p[NCLS * BATCH], delta[NCLS * BATCH];
    static int32_t lab[BATCH];
    static int perm[N_TRAIN], all[N_TEST];
    const float t_of[2] = {0.0f, 1.0f};

    r->h = *init;
    /* GHM-C as mmdet's GHMC(bins=30, momentum=0.75), on probabilities, writing Darknet's
     * delta. SUM reduction: the harmonizing weights average about 1 (exactly 1 without the
     * EMA), so the delta has the scale of Darknet's plain `t - p` and one learning rate
     * serves both losses. */
    r->cfg = ghm_c_config_default();
    r->cfg.bins = 30;
    r->cfg.momentum = 0.75f;
    r->cfg.reduction = GHM_REDUCTION_SUM;
    r->cfg.input = GHM_INPUT_PROBS;
    r->cfg.grad_scale = -1.0f; /* delta = -dL/dz */
    r->cfg.accumulate = 1;     /* add into the layer's delta */
    check(ghm_ema_init(&r->ema, r->cfg.bins), "ghm_ema_init"); /* carried across epochs */

    for (int i = 0; i < N_TEST; i++) all[i] = i;
    for (int i = 0; i < N_TRAIN; i++) perm[i] = i;
    memset(r->share, 0, sizeof r->share);
    int step = 0;
    for (int e = 0; e < EPOCHS; e++) {
        rng shuf = {1000u + (uint64_t)e}; /* the same order for both runs */
        for (int i = N_TRAIN - 1; i > 0; i--) {
            int j = (int)(rng_unif(&shuf) * (i + 1)), t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        double loss_sum = 0.0, bce_sum = 0.0;
        for (int b0 = 0; b0 < N_TRAIN; b0 += BATCH) {
            const int *idx = perm + b0;
            forward(&r->h, tr, idx, BATCH, p);
            for (int i = 0; i < BATCH; i++) lab[i] = tr->label[idx[i]];

            memset(delta, 0, sizeof delta); /* the layer zeroes its delta ... */
            for (int c = 0; c < NCLS; c++)   /* (plain BCE of either model, for the table) */
                for (int i = 0; i < BATCH; i++) bce_sum += bce(p[c * BATCH + i], t_of[lab[i] == c]);
            if (loss == LOSS_BCE) { /* ... and the loss adds into it */
                for (int c = 0; c < NCLS; c++)
                    for (int i = 0; i < BATCH; i++)
                        delta[c * BATCH + i] += t_of[lab[i] == c] - p[c * BATCH + i];
            } else {
                float l;
                check(ghm_c_loss_grad_labels(&r->cfg, &r->ema, p, lab, NULL, BATCH, NCLS,
                                             GHM_LAYOUT_CLASS_MAJOR, delta, &l, NULL, NULL),
                      "ghm_c_loss_grad_labels");
                loss_sum += l;
            }

            if (e == EPOCHS - 1) { /* where the gradient goes, in the last epoch */
                for (int c = 0; c < NCLS; c++) {
                    for (int i = 0; i < BATCH; i++) {
                        int a = idx[i], k;
                        if ((tr->label[a] == c) != (tr->truth[a] == c)) k = 3;
                        else if (tr->truth[a] == c) k = 0;
                        else k = tr->bayes[a][c] < 0.01f ? 1 : 2;
                        r->share[k] += fabsf(delta[c * BATCH + i]);
                    }
                }
            }

            /* Update: w += lr/batch * sum(delta * x), b += lr/batch * sum(delta). */
            float lr = current_rate(++step);
            for (int c = 0; c < NCLS; c++) {
                float gw[DIM] = {0}, gb = 0.0f;
                for (int i = 0; i < BATCH; i++) {
                    float dl = delta[c * BATCH + i];
                    const float *x = tr->x[idx[i]];
                    gb += dl;
                    for (int d = 0; d < DIM; d++) gw[d] += dl * x[d];
                }
                r->h.b[c] += lr / BATCH * gb;
                for (int d = 0; d < DIM; d++) r->h.w[c][d] += lr / BATCH * gw[d];
            }
        }
        r->epoch_bce[e] = bce_sum / ((double)N_TRAIN * NCLS);
        r->epoch_loss[e] = loss == LOSS_BCE ? r->epoch_bce[e] : loss_sum / ((double)N_TRAIN * NCLS);
        forward(&r->h, te, all, N_TEST, test_scores);
        r->epoch_map[e] = mean_ap(te, test_scores, order);
    }
    double tot = r->share[0] + r->share[1] + r->share[2] + r->share[3];
    r->mean_delta = tot / ((double)N_TRAIN * NCLS);
    for (int k = 0; k < 4; k++) r->share[k] = 100.0 * r->share[k] / tot;

    forward(&r->h, te, all, N_TEST, test_scores);
    r->test = evaluate(te, test_scores, order);

    /* How confidently the model fits the flipped training labels. */
    double ps = 0.0, pm = 0.0;
    long ns = 0, nm = 0;
    for (int a = 0; a < N_TRAIN; a++) {
        if (tr->label[a] == tr->truth[a]) continue;
        forward(&r->h, tr, &a, 1, p);
        if (tr->label[a] < NCLS) { /* spurious: probability of the (wrong) class */
            ps += p[tr->label[a]];
            ns++;
        } else { /* missed: probability of "not its class" */
            pm += 1.0 - p[tr->truth[a]];
            nm++;
        }
    }
    r->p_spurious = ps / (double)ns;
    r->p_missed = pm / (double)nm;
}

int main(void) {
    static dataset tr, te;
    static run bce_run, ghm_run;
    static float test_scores[NCLS * N_TEST];
    static int order[N_TEST];
    rng r = {SEED};
    head init;

    if (!alloc_dataset(&tr, N_TRAIN) || !alloc_dataset(&te, N_TEST)) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    make_class_means(&r);
    make_dataset(&tr, &r, 1);
    make_dataset(&te, &r, 0);
    /* Darknet's connected-layer initialisation: uniform in +-sqrt(2 / inputs), bias 0. */
    for (int c = 0; c < NCLS; c++) {
        init.b[c] = 0.0f;
        for (int d = 0; d < DIM; d++)
            init.w[c][d] = (float)(sqrt(2.0 / DIM) * (2.0 * rng_unif(&r) - 1.0));
    }

    int npos = 0, nspur = 0, nmiss = 0;
    for (int a = 0; a < N_TRAIN; a++) {
        npos += tr.truth[a] < NCLS;
        nspur += tr.truth[a] == NCLS && tr.label[a] < NCLS;
        nmiss += tr.truth[a] < NCLS && tr.label[a] == NCLS;
    }
    uint32_t v = ghm_version();
    printf("ghm %u.%u.%u (%s): logistic head, %d features -> %d classes, same init for both\n",
           (unsigned)(v >> 16), (unsigned)(v >> 8 & 0xff), (unsigned)(v & 0xff), ghm_backend(),
           DIM, NCLS);
    printf("train: %d anchors, %d objects (1:%.0f per class), flipped labels: %d missed, %d "
           "spurious\n",
           N_TRAIN, npos, (N_TRAIN - (double)npos / NCLS) / ((double)npos / NCLS), nmiss, nspur);
    printf("SGD: batch %d, lr %g with burn_in and steps, %d epochs; test: %d clean anchors\n",
           BATCH, (double)LR, EPOCHS, N_TEST);
    printf("GHM-C: bins 30, momentum 0.75, probabilities in, delta += -gradient (SUM)\n");

    train(&bce_run, LOSS_BCE, &init, &tr, &te, test_scores, order);
    train(&ghm_run, LOSS_GHMC, &init, &tr, &te, test_scores, order);

    printf("\n       trained on BCE      trained on GHM-C\n");
    printf("epoch  BCE     test mAP    GHM-C   BCE     test mAP   (losses per element, train)\n");
    for (int e = 0; e < EPOCHS; e++)
        printf("%5d  %.4f  %.4f      %.4f  %.4f  %.4f\n", e + 1, bce_run.epoch_loss[e],
               bce_run.epoch_map[e], ghm_run.epoch_loss[e], ghm_run.epoch_bce[e],
               ghm_run.epoch_map[e]);

    /* The generating model's posterior: the best any scorer can do. */
    for (int c = 0; c < NCLS; c++)
        for (int i = 0; i < N_TEST; i++)
            test_scores[(size_t)c * N_TEST + (size_t)i] = te.bayes[i][c];
    test_metrics bayes = evaluate(&te, test_scores, order);

    printf("\nclean test set                      BCE      GHM-C    true posterior\n");
    printf("  mAP                               %.4f   %.4f   %.4f\n", bce_run.test.map,
           ghm_run.test.map, bayes.map);
    printf("  objects found at p > 0.5          %.4f   %.4f   %.4f\n", bce_run.test.recall,
           ghm_run.test.recall, bayes.recall);
    printf("  easy negatives at p > 0.5         %.4f%%  %.4f%%  %.4f%%\n",
           100.0 * bce_run.test.fp_easy, 100.0 * ghm_run.test.fp_easy, 100.0 * bayes.fp_easy);
    printf("  mean p of easy negatives          %.4f   %.4f   %.4f\n", bce_run.test.p_easy,
           ghm_run.test.p_easy, bayes.p_easy);
    printf("flipped training labels: mean p of the wrong label\n");
    printf("  spurious objects (%2d)             %.4f   %.4f\n", nspur, bce_run.p_spurious,
           ghm_run.p_spurious);
    printf("  missed objects (%2d)               %.4f   %.4f\n", nmiss, bce_run.p_missed,
           ghm_run.p_missed);
    printf("last epoch: mean |delta|, and its share over objects / easy negatives / other\n"
           "negatives / flipped labels\n");
    printf("  BCE    %.4f   %4.1f%% / %4.1f%% / %4.1f%% / %4.1f%%\n", bce_run.mean_delta,
           bce_run.share[0], bce_run.share[1], bce_run.share[2], bce_run.share[3]);
    printf("  GHM-C  %.4f   %4.1f%% / %4.1f%% / %4.1f%% / %4.1f%%\n", ghm_run.mean_delta,
           ghm_run.share[0], ghm_run.share[1], ghm_run.share[2], ghm_run.share[3]);

    free(tr.x);
    free(tr.label);
    free(tr.truth);
    free(tr.bayes);
    free(te.x);
    free(te.label);
    free(te.truth);
    free(te.bayes);
    return 0;
}
