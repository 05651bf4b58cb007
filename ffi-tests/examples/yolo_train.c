/* A tiny YOLO-style detection layer trained in C, with GHM-C on objectness and classes as
 * the README's Darknet recipe does it: in place in Darknet's output layout, one call per
 * layer and use, gradients added straight into the layer's delta, at the plain run's
 * learning rate.
 *
 * The layer's output is Darknet's [batch][anchor][4 + 1 + C][h * w] (boxes, objectness,
 * classes), logistic applied to objectness and classes in the forward pass. The "network"
 * is one linear map per anchor and channel from a per-cell feature vector. Scenes: 1-3
 * objects per image on an 8x8 grid, two anchor shapes, 4 classes, distractor cells that
 * look half like an object, and 5% of the training objects left unlabelled (confident
 * outliers). Darknet's ignore rule is imitated: the other anchor of an object's cell gets
 * no objectness loss. (The box channels are left untrained: GHM-R on them is the same call
 * with a ghm_r_config.)
 *
 * Three runs from the same initialisation, on the same batches, at the same learning rate,
 * for each of several seeds (initialisation and training batches):
 *   plain   Darknet's deltas: delta = t - p (objectness everywhere but ignored anchors,
 *           classes on positive anchors only);
 *   GHM     ghm_c_loss_grad_blocks (objectness) and ghm_c_loss_grad_labels_blocks (classes,
 *           class-major, positives only), GHM_NORMALIZE_GRAD_MASS, GHM_EMA_START_FIRST_COUNT,
 *           one EMA per use;
 *   GHM raw the same without the normalisation (mmdet's weights), to show why it is needed.
 * Each is tested on 300 clean held-out images: AP of objectness, and mAP of obj * class.
 *
 * With a log file, the GHM-C run of seed 0 writes two lines per step to it (objectness and
 * classes, ghm_log_stats: the training log that `ghm-plot` draws).
 *
 * Exit status: 0 when GHM's mAP, averaged over the seeds, is at least the plain run's and
 * no GHM-C run diverged; 1 otherwise.
 *   usage: yolo_train [steps (300)] [learning rate (0.2)] [seeds (4)] [unlabelled (0.05)]
 *                     [log file (none)]
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ghm.h>

#define GRID 8
#define HW (GRID * GRID)
#define NA 2            /* anchors per cell */
#define NC 4            /* classes */
#define CH (4 + 1 + NC) /* channels per anchor: x y w h, objectness, classes */
#define NF 12           /* features per cell */
#define BATCH 8
#define OUT_PER_IMAGE (NA * CH * HW)
#define TEST_IMAGES 300

/* ---- random numbers ---------------------------------------------------------------- */
static uint64_t rng_state;
static double unit(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}
static double normal(void) {
    double u = unit(), v = unit();
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

/* ---- scenes ------------------------------------------------------------------------ */
static float class_proto[NC][NF], anchor_proto[NA][NF];
static double unlabelled = 0.05; /* share of the training objects left unlabelled */

typedef struct {
    float feat[HW][NF];
    int32_t label[NA][HW];   /* class of the object assigned to (anchor, cell), or -1 */
    float obj_t[NA][HW];     /* objectness target */
    float obj_w[NA][HW];     /* 0: ignored (the other anchor of an object's cell) */
    float cls_w[NA][HW];     /* 1 on positive anchors: YOLO's class loss */
    int32_t truth[NA][HW];   /* the real class (also of unlabelled objects), or -1 */
} scene;

static void make_scene(scene *s, int noisy) {
    memset(s, 0, sizeof *s);
    for (int a = 0; a < NA; a++)
        for (int c = 0; c < HW; c++) {
            s->label[a][c] = -1;
            s->truth[a][c] = -1;
            s->obj_w[a][c] = 1.0f;
        }
    for (int c = 0; c < HW; c++)
        for (int f = 0; f < NF; f++) s->feat[c][f] = (float)(0.8 * normal());
    /* distractors: background cells that look half like some class */
    for (int k = 0; k < 4; k++) {
        int cell = (int)(unit() * HW), cls = (int)(unit() * NC);
        for (int f = 0; f < NF; f++) s->feat[cell][f] += 0.6f * class_proto[cls][f];
    }
    int objects = 1 + (int)(unit() * 3);
    for (int k = 0; k < objects; k++) {
        int cell = (int)(unit() * HW), cls = (int)(unit() * NC), a = unit() < 0.5 ? 0 : 1;
        if (s->truth[0][cell] >= 0 || s->truth[1][cell] >= 0) continue; /* one per cell */
        for (int f = 0; f < NF; f++)
            s->feat[cell][f] += 1.2f * class_proto[cls][f] + 1.0f * anchor_proto[a][f];
        s->truth[a][cell] = cls;
        s->obj_w[1 - a][cell] = 0.0f; /* Darknet: its box overlaps the truth, ignored */
        if (noisy && unit() < unlabelled) continue; /* target 0: a confident outlier */
        s->label[a][cell] = cls;
        s->obj_t[a][cell] = 1.0f;
        s->cls_w[a][cell] = 1.0f;
    }
}

/* ---- the layer --------------------------------------------------------------------- */
typedef struct {
    float w[NA][CH][NF + 1];
} model;

static float logistic(float x) { return 1.0f / (1.0f + expf(-x)); }

/* out: [BATCH][NA][CH][HW], logistic on objectness and classes (as Darknet's forward). */
static void forward(const model *m, const scene *s, int n, float *out) {
    for (int b = 0; b < n; b++)
        for (int a = 0; a < NA; a++)
            for (int j = 0; j < CH; j++)
                for (int c = 0; c < HW; c++) {
                    const float *w = m->w[a][j];
                    float z = w[NF];
                    for (int f = 0; f < NF; f++) z += w[f] * s[b].feat[c][f];
                    out[((size_t)(b * NA + a) * CH + j) * HW + c] = j >= 4 ? logistic(z) : z;
                }
}

/* Darknet's update: w += lr / batch * sum(delta * input). */
static void backward(model *m, const scene *s, int n, const float *delta, float lr) {
    for (int b = 0; b < n; b++)
        for (int a = 0; a < NA; a++)
            for (int j = 4; j < CH; j++)
                for (int c = 0; c < HW; c++) {
                    float d = delta[((size_t)(b * NA + a) * CH + j) * HW + c] * lr / n;
                    if (d == 0.0f) continue;
                    float *w = m->w[a][j];
                    for (int f = 0; f < NF; f++) w[f] += d * s[b].feat[c][f];
                    w[NF] += d;
                }
}

/* The targets of a batch in their own buffers, [BATCH][NA][HW] (one view each). */
typedef struct {
    float obj_t[BATCH * NA * HW], obj_w[BATCH * NA * HW], cls_w[BATCH * NA * HW];
    int32_t label[BATCH * NA * HW];
} targets;

static void gather_targets(const scene *s, targets *t) {
    for (int b = 0; b < BATCH; b++)
        for (int a = 0; a < NA; a++)
            for (int c = 0; c < HW; c++) {
                size_t i = (size_t)(b * NA + a) * HW + c;
                t->obj_t[i] = s[b].obj_t[a][c];
                t->obj_w[i] = s[b].obj_w[a][c];
                t->cls_w[i] = s[b].cls_w[a][c];
                t->label[i] = s[b].label[a][c];
            }
}

/* Darknet's deltas for objectness and classes (delta = t - p). */
static void plain_delta(const float *out, const targets *t, float *delta) {
    for (int ba = 0; ba < BATCH * NA; ba++)
        for (int c = 0; c < HW; c++) {
            size_t i = (size_t)ba * HW + c;
            size_t obj = ((size_t)ba * CH + 4) * HW + c;
            delta[obj] = t->obj_w[i] * (t->obj_t[i] - out[obj]);
            if (t->cls_w[i] > 0.0f)
                for (int k = 0; k < NC; k++) {
                    size_t ci = ((size_t)ba * CH + 5 + k) * HW + c;
                    delta[ci] = (float)(t->label[i] == k) - out[ci];
                }
        }
}

typedef struct {
    ghm_c_config obj, cls;
    ghm_ema obj_ema, cls_ema; /* one EMA per layer and per use */
    ghm_blocks obj_blocks, cls_blocks;
    FILE *log; /* NULL: no training log */
    int step;
} ghm_layer;

/* A refused call: its status, and which argument, element and why. */
static void ghm_check(ghm_status s, const char *what) {
    if (s != GHM_OK) {
        ghm_report r;
        ghm_last_error(&r); /* r.argument "pred", r.index 1037, ... */
        fprintf(stderr, "%s: %s: %s\n", what, ghm_status_str(s), r.message);
        exit(1);
    }
}

static void ghm_layer_init(ghm_layer *g, uint32_t normalize) {
    ghm_c_config cfg = ghm_c_config_default();
    cfg.bins = 30;
    cfg.momentum = 0.75f;
    cfg.input = GHM_INPUT_PROBS;           /* the forward pass applied the logistic */
    cfg.grad_scale = -1.0f;                /* delta is the negative gradient */
    cfg.accumulate = 1;                    /* added into delta, like Darknet's losses */
    cfg.reduction = GHM_REDUCTION_SUM;     /* Darknet's scale: t - p per element */
    cfg.normalize = normalize;             /* gradient mass of plain BCE: same lr */
    cfg.ema_start = GHM_EMA_START_FIRST_COUNT;
    g->obj = g->cls = cfg;
    ghm_check(ghm_ema_init(&g->obj_ema, cfg.bins), "ema");
    ghm_check(ghm_ema_init(&g->cls_ema, cfg.bins), "ema");
    /* Objectness: BATCH * NA blocks of HW floats at channel 4 of each (image, anchor). */
    ghm_blocks o;
    memset(&o, 0, sizeof o);
    o.count = BATCH * NA;
    o.len = HW;
    o.pred.offset = 4 * HW;
    o.pred.stride = CH * HW;
    o.grad = o.pred;             /* delta has the output's layout */
    o.target.stride = HW;        /* targets and weights: [BATCH][NA][HW] */
    o.weight.stride = HW;
    g->obj_blocks = o;
    /* Classes: the same blocks of HW anchors, each C class planes from channel 5. */
    ghm_blocks c = o;
    c.pred.offset = 5 * HW;
    c.grad = c.pred;
    g->cls_blocks = c;
}

/* One line of the training log: what the call did, as JSON. */
static void ghm_log(ghm_layer *g, const ghm_stats *st, float loss, const char *tag) {
    char line[GHM_LOG_LINE_MAX];
    if (!g->log) return;
    ghm_check(ghm_log_stats(st, loss, (uint64_t)g->step, tag, 1.0f, line, sizeof line, NULL),
              "log");
    fprintf(g->log, "%s\n", line);
}

static void ghm_delta(ghm_layer *g, const float *out, const targets *t, float *delta) {
    float loss;
    ghm_stats st;
    ghm_check(ghm_c_loss_grad_blocks(&g->obj, &g->obj_ema, &g->obj_blocks, out, t->obj_t,
                                     t->obj_w, delta, &loss, NULL, &st),
              "objectness");
    ghm_log(g, &st, loss, "yolo obj");
    ghm_check(ghm_c_loss_grad_labels_blocks(&g->cls, &g->cls_ema, &g->cls_blocks, out, t->label,
                                            t->cls_w, NC, GHM_LAYOUT_CLASS_MAJOR, delta, &loss,
                                            NULL, &st),
              "classes");
    ghm_log(g, &st, loss, "yolo cls");
}

/* ---- evaluation -------------------------------------------------------------------- */
typedef struct {
    float score;
    int hit;
} ranked;

static int by_score(const void *a, const void *b) {
    float x = ((const ranked *)a)->score, y = ((const ranked *)b)->score;
    return (x < y) - (x > y);
}

/* Average precision of `n` scored candidates (all positives are among them). */
static double average_precision(ranked *r, size_t n) {
    qsort(r, n, sizeof *r, by_score);
    size_t positives = 0, hits = 0;
    for (size_t i = 0; i < n; i++) positives += (size_t)r[i].hit;
    if (positives == 0) return 0.0;
    double ap = 0.0;
    for (size_t i = 0; i < n; i++)
        if (r[i].hit) ap += (double)++hits / (double)(i + 1);
    return ap / (double)positives;
}

static scene test_set[TEST_IMAGES];
static ranked cand[TEST_IMAGES * NA * HW];

/* AP of objectness, and mAP over classes of obj * class probability. */
static void evaluate(const model *m, double *obj_ap, double *map) {
    static float out[OUT_PER_IMAGE];
    double sum = 0.0;
    for (int k = -1; k < NC; k++) {
        size_t n = 0;
        for (int i = 0; i < TEST_IMAGES; i++) {
            forward(m, &test_set[i], 1, out);
            for (int a = 0; a < NA; a++)
                for (int c = 0; c < HW; c++) {
                    float p = out[(a * CH + 4) * HW + c];
                    int truth = test_set[i].truth[a][c];
                    if (k >= 0) p *= out[(a * CH + 5 + k) * HW + c];
                    cand[n].score = p;
                    cand[n].hit = k < 0 ? truth >= 0 : truth == k;
                    n++;
                }
        }
        double ap = average_precision(cand, n);
        if (k < 0)
            *obj_ap = ap;
        else
            sum += ap;
    }
    *map = sum / NC;
}

/* ---- training ---------------------------------------------------------------------- */
typedef struct {
    const char *name;
    model m;
    ghm_layer ghm;
    int use_ghm;
    double mass; /* mean over steps of sum |delta| (objectness + classes) */
    int finite;
} run;

static scene batch[BATCH];
static targets tgt;
static float out[BATCH * OUT_PER_IMAGE], delta[BATCH * OUT_PER_IMAGE];

static double delta_mass(void) {
    double s = 0.0;
    for (size_t i = 0; i < sizeof delta / sizeof *delta; i++) s += fabs(delta[i]);
    return s;
}

static void train(run *runs, int steps, float lr, int verbose) {
    for (int step = 1; step <= steps; step++) {
        for (int b = 0; b < BATCH; b++) make_scene(&batch[b], 1);
        gather_targets(batch, &tgt);
        for (int r = 0; r < 3; r++) {
            run *R = &runs[r];
            if (!R->finite) continue;
            forward(&R->m, batch, BATCH, out);
            memset(delta, 0, sizeof delta);
            R->ghm.step = step;
            if (R->use_ghm)
                ghm_delta(&R->ghm, out, &tgt, delta);
            else
                plain_delta(out, &tgt, delta);
            double mass = delta_mass();
            R->mass += mass / steps;
            if (!isfinite(mass)) R->finite = 0;
            backward(&R->m, batch, BATCH, delta, lr);
        }
        if (verbose && (step % (steps / 6 > 0 ? steps / 6 : 1) == 0 || step == 1)) {
            printf("%6d", step);
            for (int r = 0; r < 3; r++) {
                double ap, map;
                evaluate(&runs[r].m, &ap, &map);
                printf("   %-9s %6.4f %6.4f", "", ap, map);
            }
            printf("\n");
        }
    }
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 300;
    float lr = argc > 2 ? (float)atof(argv[2]) : 0.2f;
    int seeds = argc > 3 ? atoi(argv[3]) : 4;
    if (argc > 4) unlabelled = atof(argv[4]);
    FILE *log = NULL;
    if (argc > 5 && !(log = fopen(argv[5], "w"))) {
        perror(argv[5]);
        return 2;
    }
    rng_state = 0x9e3779b97f4a7c15ULL;
    for (int k = 0; k < NC; k++)
        for (int f = 0; f < NF; f++) class_proto[k][f] = (float)normal();
    for (int a = 0; a < NA; a++)
        for (int f = 0; f < NF; f++) anchor_proto[a][f] = (float)normal();
    for (int i = 0; i < TEST_IMAGES; i++) make_scene(&test_set[i], 0);

    printf("ghm %u.%u.%u (%s): YOLO-style layer, %dx%d grid, %d anchors, %d classes\n",
           ghm_version() >> 16, (ghm_version() >> 8) & 0xff, ghm_version() & 0xff,
           ghm_backend(), GRID, GRID, NA, NC);
    printf("output [batch][anchor][4+1+C][h*w]; GHM-C in place: objectness blocks of %d at "
           "offset %d, stride %d; classes %d planes of %d at offset %d\n",
           HW, 4 * HW, CH * HW, NC, HW, 5 * HW);
    printf("train: %.0f%% of the objects unlabelled; SGD: batch %d, lr %g (the same for every "
           "run), %d steps;\n%d seeds (initialisation and batches); test: %d clean images\n\n",
           100.0 * unlabelled, BATCH, (double)lr, steps, seeds, TEST_IMAGES);

    static run runs[3];
    const char *names[3] = {"plain BCE", "GHM-C", "GHM-C raw"};
    double ap_sum[3] = {0}, map_sum[3] = {0}, mass_sum[3] = {0};
    int all_finite[3] = {1, 1, 1};
    for (int seed = 0; seed < seeds; seed++) {
        rng_state = 0x2545f4914f6cdd1dULL + 0x9e3779b97f4a7c15ULL * (uint64_t)seed;
        model init;
        for (int a = 0; a < NA; a++)
            for (int j = 0; j < CH; j++)
                for (int f = 0; f <= NF; f++) init.w[a][j][f] = (float)(0.01 * normal());
        for (int a = 0; a < NA; a++) init.w[a][4][NF] = -2.0f; /* prior: p ~ 0.12 */
        for (int r = 0; r < 3; r++) {
            memset(&runs[r], 0, sizeof runs[r]);
            runs[r].name = names[r];
            runs[r].m = init;
            runs[r].finite = 1;
            runs[r].use_ghm = r > 0;
        }
        ghm_layer_init(&runs[1].ghm, GHM_NORMALIZE_GRAD_MASS);
        ghm_layer_init(&runs[2].ghm, GHM_NORMALIZE_NONE);
        runs[1].ghm.log = seed == 0 ? log : NULL;
        if (seed == 0) {
            printf("seed 0, held-out obj AP and mAP during training:\n%6s", "step");
            for (int r = 0; r < 3; r++) printf("   %-9s obj AP  mAP ", runs[r].name);
            printf("\n");
        }
        train(runs, steps, lr, seed == 0);
        if (seed == 0) printf("\nheld-out mAP at the end, per seed:\n");
        printf("  seed %d", seed);
        for (int r = 0; r < 3; r++) {
            double ap, map;
            evaluate(&runs[r].m, &ap, &map);
            ap_sum[r] += ap / seeds;
            map_sum[r] += map / seeds;
            mass_sum[r] += runs[r].mass / seeds;
            all_finite[r] &= runs[r].finite;
            printf("   %s %.4f", runs[r].name, map);
        }
        printf("\n");
    }

    printf("\nmean over %d seeds          obj AP   mAP     sum|delta| per step\n", seeds);
    for (int r = 0; r < 3; r++)
        printf("  %-24s %6.4f   %6.4f  %10.2f%s\n", names[r], ap_sum[r], map_sum[r],
               mass_sum[r], all_finite[r] ? "" : "  (diverged)");
    printf("gradient mass relative to plain BCE: GHM-C %.2fx, GHM-C raw %.2fx\n",
           mass_sum[1] / mass_sum[0], mass_sum[2] / mass_sum[0]);
    if (log && fclose(log) != 0) {
        perror(argv[5]);
        return 2;
    }
    int ok = all_finite[1] && map_sum[1] >= map_sum[0];
    printf("%s: GHM-C mAP %.4f %s plain BCE %.4f at the same learning rate\n",
           ok ? "OK" : "FAILED", map_sum[1], map_sum[1] >= map_sum[0] ? ">=" : "<", map_sum[0]);
    return ok ? 0 : 1;
}
