/*
 * The C ABI of ghm (include/ghm.h, docs/contract.md sections 2 and 3) exercised from C99.
 *
 *   test_ffi_c DATA_DIR      (DATA_DIR = tests/data/mmdet)
 *
 * Prints one line per group of checks (PASS/FAIL, with counts) and exits non-zero if any
 * check failed. Built and run by ffi-tests/Makefile (plain, ASan+UBSan, valgrind).
 *
 * Misaligned buffers are made by placing bytes at an odd offset of a char block with memcpy
 * and handing the library a pointer to them; this program never dereferences such a pointer
 * itself. Blocks handed to the library are allocated at their exact size, so that valgrind
 * sees any read or write past the end.
 */
#include "ghm.h"
#include "check.h"

#include <float.h>
#include <limits.h>

/* ------------------------------------------------------------------------------------------ */
/* The struct layouts of docs/contract.md section 3 (C99 has no _Static_assert: negative array sizes). */

#define STATIC_ASSERT(name, cond) typedef char static_assert_##name[(cond) ? 1 : -1]
STATIC_ASSERT(max_bins, GHM_MAX_BINS == 128);
STATIC_ASSERT(c_config_size, sizeof(ghm_c_config) == 40);
STATIC_ASSERT(r_config_size, sizeof(ghm_r_config) == 40);
STATIC_ASSERT(c_config_input, offsetof(ghm_c_config, input) == 28);
STATIC_ASSERT(c_config_normalize, offsetof(ghm_c_config, normalize) == 32);
STATIC_ASSERT(c_config_ema_start, offsetof(ghm_c_config, ema_start) == 36);
STATIC_ASSERT(r_config_skip_bad, offsetof(ghm_r_config, skip_bad) == 28);
STATIC_ASSERT(r_config_normalize, offsetof(ghm_r_config, normalize) == 32);
STATIC_ASSERT(report_index, offsetof(ghm_report, index) == 8);
STATIC_ASSERT(report_argument, offsetof(ghm_report, argument) == 24);
STATIC_ASSERT(report_message, offsetof(ghm_report, message) == 24 + 4 * sizeof(void *));
STATIC_ASSERT(blocks_size, sizeof(ghm_blocks) == 12 * sizeof(size_t));
STATIC_ASSERT(blocks_loss_elems, offsetof(ghm_blocks, loss_elems) == 10 * sizeof(size_t));
STATIC_ASSERT(ema_size, sizeof(ghm_ema) == 4 + 4 * 128);
STATIC_ASSERT(hist_counts, offsetof(ghm_hist, counts) == 8);
STATIC_ASSERT(hist_loss_sums, offsetof(ghm_hist, loss_sums) == 8 + 8 * 128);
STATIC_ASSERT(hist_tot, offsetof(ghm_hist, tot) == 8 + 16 * 128);
STATIC_ASSERT(hist_skipped, offsetof(ghm_hist, skipped) == 16 + 16 * 128);
STATIC_ASSERT(hist_g_sums, offsetof(ghm_hist, g_sums) == 24 + 16 * 128);
STATIC_ASSERT(hist_size, sizeof(ghm_hist) == 24 + 24 * 128);
STATIC_ASSERT(stats_counts, offsetof(ghm_stats, counts) == 16);
STATIC_ASSERT(stats_weights, offsetof(ghm_stats, weights) == 16 + 8 * 128);
STATIC_ASSERT(stats_skipped, offsetof(ghm_stats, skipped) == 16 + 12 * 128);
STATIC_ASSERT(weights_weight, offsetof(ghm_weights, weight) == 24);
STATIC_ASSERT(weights_scale, offsetof(ghm_weights, scale) == 24 + 4 * 128);
STATIC_ASSERT(status_codes, GHM_OK == 0 && GHM_ERR_NULL == -1 && GHM_ERR_CONFIG == -2 &&
                                GHM_ERR_STATE == -3 && GHM_ERR_INPUT == -4 &&
                                GHM_ERR_ALIAS == -5 && GHM_ERR_SHAPE == -6);

/* ------------------------------------------------------------------------------------------ */
/* Utilities */

static uint64_t rng = UINT64_C(0x243F6A8885A308D3);

static uint32_t rnd(void) { /* xorshift64* */
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return (uint32_t)((rng * UINT64_C(0x2545F4914F6CDD1D)) >> 32);
}
static size_t rndn(size_t n) { return n ? (size_t)rnd() % n : 0; } /* 0..n-1 */
static float rndf(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() >> 8) / 16777216.0f; }

static void *xmalloc(size_t bytes) {
  void *p = malloc(bytes ? bytes : 1);
  if (!p) {
    fprintf(stderr, "out of memory (%zu bytes)\n", bytes);
    exit(2);
  }
  return p;
}

static float *fvec(size_t n) { return (float *)xmalloc(n * sizeof(float)); }

/* A block of exactly off + bytes bytes holding a copy of src (or 0x5A bytes) at offset off.
 * Returns the placed address; free(*block) when done. */
static void *placed(const void *src, size_t bytes, size_t off, void **block) {
  unsigned char *b = (unsigned char *)xmalloc(off + bytes);
  memset(b, 0x5A, off + bytes);
  if (src && bytes) memcpy(b + off, src, bytes);
  *block = b;
  return b + off;
}

static int same_bytes(const void *a, const void *b, size_t n) { return memcmp(a, b, n) == 0; }

/* First index where two float arrays differ bitwise, or -1. */
static long first_diff(const float *a, const float *b, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (memcmp(&a[i], &b[i], sizeof(float)) != 0) return (long)i;
  return -1;
}

static const char *sname(ghm_status s) {
  switch (s) {
    case GHM_OK: return "GHM_OK";
    case GHM_ERR_NULL: return "GHM_ERR_NULL";
    case GHM_ERR_CONFIG: return "GHM_ERR_CONFIG";
    case GHM_ERR_STATE: return "GHM_ERR_STATE";
    case GHM_ERR_INPUT: return "GHM_ERR_INPUT";
    case GHM_ERR_ALIAS: return "GHM_ERR_ALIAS";
    case GHM_ERR_SHAPE: return "GHM_ERR_SHAPE";
    default: return "(unknown status)";
  }
}

static float f_nan(void) { return (float)strtod("nan", NULL); }
static float f_inf(void) { return (float)HUGE_VAL; }

/* The differences that matter between two ghm_stats (NULL if equal). */
static const char *stats_diff(const ghm_stats *a, const ghm_stats *b) {
  unsigned k, m;
  if (a->bins != b->bins) return "bins";
  if (a->nonempty_bins != b->nonempty_bins) return "nonempty_bins";
  if (memcmp(&a->tot, &b->tot, sizeof a->tot)) return "tot";
  if (a->skipped != b->skipped) return "skipped";
  m = a->bins <= GHM_MAX_BINS ? a->bins : GHM_MAX_BINS;
  for (k = 0; k < m; k++) {
    if (a->counts[k] != b->counts[k]) return "counts";
    if (memcmp(&a->weights[k], &b->weights[k], sizeof(float))) return "weights";
  }
  return NULL;
}

/* Synthetic GHM-C inputs: logits (with saturated ones), hard and soft targets, label weights
 * with zeros (ignored) and twos. */
static void gen_c(float *pred, float *target, float *lw, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) {
    uint32_t r = rnd() % 100;
    pred[i] = r < 5 ? (rnd() & 1 ? 1.0f : -1.0f) * rndf(20.0f, 100.0f)
              : r < 10 ? 0.0f : rndf(-6.0f, 6.0f);
    r = rnd() % 10;
    if (target) target[i] = r < 6 ? 0.0f : r < 9 ? 1.0f : rndf(0.0f, 1.0f);
    r = rnd() % 20;
    if (lw) lw[i] = r == 0 ? 0.0f : r == 1 ? 2.0f : 1.0f;
  }
}

/* Synthetic GHM-R inputs: differences from tiny to large, targets not limited to [0, 1]. */
static void gen_r(float *pred, float *target, float *lw, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) {
    uint32_t r = rnd() % 10;
    float d = r < 6 ? rndf(-0.05f, 0.05f) : r < 9 ? rndf(-1.0f, 1.0f) : rndf(-50.0f, 50.0f);
    target[i] = rndf(-2.0f, 3.0f);
    pred[i] = target[i] + d;
    r = rnd() % 20;
    if (lw) lw[i] = r == 0 ? 0.0f : r == 1 ? 2.0f : r == 2 ? 0.5f : 1.0f;
  }
}

/* Class-index labels: classes 0..nc-1, background nc and -1. */
static void gen_labels(int32_t *labels, size_t na, size_t nc) {
  size_t a;
  for (a = 0; a < na; a++) {
    uint32_t r = rnd() % 10;
    labels[a] = r < 6 ? (int32_t)nc : r == 6 ? -1 : (int32_t)rndn(nc);
  }
}

/* [n][c] -> [c][n] */
static void transpose(const float *in, float *out, size_t n, size_t c) {
  size_t i, j;
  for (i = 0; i < n; i++)
    for (j = 0; j < c; j++) out[j * n + i] = in[i * c + j];
}

/* ------------------------------------------------------------------------------------------ */
/* One call of any of the three one-call functions */

enum kind { K_C = 0, K_R = 1, K_L = 2 };

typedef struct call {
  enum kind kind;
  ghm_c_config c; /* K_C, K_L */
  ghm_r_config r; /* K_R */
  const float *pred;
  const float *target;   /* K_C, K_R */
  const int32_t *labels; /* K_L */
  const float *lw;
  size_t n;      /* elements (K_L: na * nc) */
  size_t na, nc; /* K_L */
  uint32_t layout;
  const ghm_c_config *cp; /* if set, passed instead of &c (e.g. at a misaligned address) */
  const ghm_r_config *rp; /* if set, passed instead of &r */
} call;

static call call_init(enum kind kind) {
  call k;
  memset(&k, 0, sizeof k);
  k.kind = kind;
  k.c = ghm_c_config_default();
  k.r = ghm_r_config_default();
  return k;
}

static void call_set(call *k, unsigned bins, float momentum) {
  k->c.bins = k->r.bins = bins;
  k->c.momentum = k->r.momentum = momentum;
}

static ghm_status call_run(const call *k, ghm_ema *ema, float *grad, float *loss, float *le,
                           ghm_stats *st) {
  const ghm_c_config *c = k->cp ? k->cp : &k->c;
  const ghm_r_config *r = k->rp ? k->rp : &k->r;
  switch (k->kind) {
    case K_C:
      return ghm_c_loss_grad(c, ema, k->pred, k->target, k->lw, k->n, grad, loss, le, st);
    case K_R:
      return ghm_r_loss_grad(r, ema, k->pred, k->target, k->lw, k->n, grad, loss, le, st);
    default:
      return ghm_c_loss_grad_labels(c, ema, k->pred, k->labels, k->lw, k->na, k->nc, k->layout,
                                    grad, loss, le, st);
  }
}

static float call_momentum(const call *k) { return k->kind == K_R ? k->r.momentum : k->c.momentum; }

static const char *kind_name(const call *k) {
  if (k->kind == K_C) return "ghm_c_loss_grad";
  if (k->kind == K_R) return "ghm_r_loss_grad";
  return k->layout == GHM_LAYOUT_CLASS_MAJOR ? "ghm_c_loss_grad_labels[CLASS_MAJOR]"
                                             : "ghm_c_loss_grad_labels[ANCHOR_MAJOR]";
}

/* Inputs for a call: owned arrays (aligned), sized for the kind. */
typedef struct inputs {
  float *pred, *target, *lw;
  int32_t *labels;
  size_t n, na, nc;
} inputs;

static inputs inputs_gen(enum kind kind, size_t n_or_na, size_t nc) {
  inputs in;
  memset(&in, 0, sizeof in);
  if (kind == K_L) {
    in.na = n_or_na;
    in.nc = nc;
    in.n = n_or_na * nc;
    in.pred = fvec(in.n);
    in.labels = (int32_t *)xmalloc(in.na * sizeof(int32_t));
    in.lw = fvec(in.na);
    gen_c(in.pred, NULL, NULL, in.n);
    gen_labels(in.labels, in.na, nc);
    {
      size_t a;
      for (a = 0; a < in.na; a++) in.lw[a] = rnd() % 8 == 0 ? 0.0f : 1.0f;
    }
  } else {
    in.n = n_or_na;
    in.pred = fvec(in.n);
    in.target = fvec(in.n);
    in.lw = fvec(in.n);
    if (kind == K_C)
      gen_c(in.pred, in.target, in.lw, in.n);
    else
      gen_r(in.pred, in.target, in.lw, in.n);
  }
  return in;
}

static void inputs_free(inputs *in) {
  free(in->pred);
  free(in->target);
  free(in->lw);
  free(in->labels);
  memset(in, 0, sizeof *in);
}

static void call_bind(call *k, const inputs *in) {
  k->pred = in->pred;
  k->target = in->target;
  k->labels = in->labels;
  k->lw = in->lw;
  k->n = in->n;
  k->na = in->na;
  k->nc = in->nc;
}

/* ========================================================================================== */
/* Group: ghm_status_str, ghm_version, ghm_backend, defaults */

static void test_misc(void) {
  static const ghm_status codes[] = {GHM_OK,        GHM_ERR_NULL,  GHM_ERR_CONFIG, GHM_ERR_STATE,
                                     GHM_ERR_INPUT, GHM_ERR_ALIAS, GHM_ERR_SHAPE};
  static const ghm_status unknown[] = {1, 2, -7, -100, INT32_MIN, INT32_MAX};
  const size_t nc = sizeof codes / sizeof codes[0];
  size_t i, j;
  const char *b;
  ghm_c_config c;
  ghm_r_config r;
  check_group("misc");
  for (i = 0; i < nc; i++) {
    const char *s = ghm_status_str(codes[i]);
    CHECK(s != NULL && s[0] != 0, "ghm_status_str(%d) is NULL or empty", (int)codes[i]);
    if (!s) continue;
    for (j = 0; j < i; j++) {
      const char *t = ghm_status_str(codes[j]);
      CHECK(t == NULL || strcmp(s, t) != 0, "ghm_status_str(%d) == ghm_status_str(%d): \"%s\"",
            (int)codes[i], (int)codes[j], s);
    }
  }
  for (i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    const char *s = ghm_status_str(unknown[i]);
    CHECK(s != NULL && s[0] != 0, "ghm_status_str(%d) (unknown code) is NULL or empty",
          (int)unknown[i]);
  }
  /* The library linked is the one this header describes (Cargo.toml's version: checked by
   * tests/ffi_c.rs against the header's macros). */
  CHECK(ghm_version() == GHM_VERSION, "ghm_version() = 0x%06x, GHM_VERSION 0x%06x",
        (unsigned)ghm_version(), (unsigned)GHM_VERSION);
  CHECK(GHM_VERSION == ((GHM_VERSION_MAJOR << 16) | (GHM_VERSION_MINOR << 8) | GHM_VERSION_PATCH),
        "GHM_VERSION is its parts");
  CHECK(strncmp(GHM_SONAME, "libghm.so.", 10) == 0, "GHM_SONAME %s", GHM_SONAME);
  b = ghm_backend();
  CHECK(b != NULL && b[0] != 0, "ghm_backend() is NULL or empty");
  /* ghm_set_backend: force the scalar path, refuse unknown names, then back to automatic. */
  CHECK(ghm_set_backend("scalar") == GHM_OK, "ghm_set_backend(\"scalar\") failed");
  CHECK(strcmp(ghm_backend(), "scalar") == 0, "after ghm_set_backend(\"scalar\"): %s",
        ghm_backend());
  CHECK(ghm_set_backend("no-such-backend") == GHM_ERR_CONFIG, "unknown backend name accepted");
  CHECK(strcmp(ghm_backend(), "scalar") == 0, "a refused name changed the backend");
  CHECK(ghm_set_backend(NULL) == GHM_OK, "ghm_set_backend(NULL) failed");
  CHECK(strcmp(ghm_backend(), b) == 0, "ghm_set_backend(NULL) did not restore %s: %s", b,
        ghm_backend());
  c = ghm_c_config_default();
  CHECK(c.bins == 10 && c.momentum == 0.0f && c.loss_weight == 1.0f &&
            c.reduction == GHM_REDUCTION_MEAN && c.grad_scale == 1.0f && c.accumulate == 0 &&
            c.skip_bad == 0 && c.input == GHM_INPUT_LOGITS,
        "ghm_c_config_default() is not the documented default");
  r = ghm_r_config_default();
  CHECK(r.bins == 10 && r.momentum == 0.0f && r.mu == 0.02f && r.loss_weight == 1.0f &&
            r.reduction == GHM_REDUCTION_MEAN && r.grad_scale == 1.0f && r.accumulate == 0 &&
            r.skip_bad == 0,
        "ghm_r_config_default() is not the documented default");
  check_group_end("backend \"%s\", version 0x%06x", b ? b : "(null)", (unsigned)ghm_version());
}

/* ========================================================================================== */
/* Group: mmdet parity */

static const char *const CASES[] = {
    "ghmc_all_ignored",     "ghmc_bins1",         "ghmc_bins64",       "ghmc_dense_momentum",
    "ghmc_dense_n1",        "ghmc_dense_n1000",   "ghmc_dense_n33",    "ghmc_dense_n4099",
    "ghmc_dense_n7",        "ghmc_exact_edges",   "ghmc_labels_momentum", "ghmc_saturated",
    "ghmc_soft_targets_none", "ghmr_extremes",    "ghmr_momentum",     "ghmr_mu_none",
    "ghmr_n100",            "ghmr_n3001",         "ghmr_n5"};

typedef struct worst {
  double loss, grad, elems, acc;
} worst;

static uint32_t reduction_of(const char *r) {
  if (strcmp(r, "sum") == 0) return GHM_REDUCTION_SUM;
  if (strcmp(r, "none") == 0) return GHM_REDUCTION_NONE;
  return GHM_REDUCTION_MEAN;
}

/* Every iteration of one case, in `layout` (labels cases), with all buffers at byte offset
 * `off` (0: aligned). */
static void parity_run(const jcase *c, uint32_t layout, size_t off, worst *w) {
  ghm_ema ema;
  size_t it;
  int is_c = strcmp(c->kind, "ghmc") == 0;
  call k = call_init(K_C);
  if (!CHECK(ghm_ema_init(&ema, c->bins) == GHM_OK, "%s: ghm_ema_init(%u)", c->name, c->bins))
    return;
  CHECK(is_c || strcmp(c->kind, "ghmr") == 0, "%s: kind \"%s\"", c->name, c->kind);
  for (it = 0; it < c->n_iters; it++) {
    const jiter *j = &c->iters[it];
    size_t n = j->n, na = c->shape[0], ncl = c->shape[1];
    int labels = j->labels != NULL, cm = labels && layout == GHM_LAYOUT_CLASS_MAJOR;
    float *pred = fvec(n), *wgrad = fvec(n), *wle = fvec(n), *grad = fvec(n), *le = fvec(n);
    void *bp, *bt, *bw, *bg, *be;
    float loss = -1.0f;
    ghm_status st;
    double e;
    size_t q;
    if (cm) {
      transpose(j->pred, pred, na, ncl);
      transpose(j->exp_grad, wgrad, na, ncl);
      if (j->exp_loss_elems) transpose(j->exp_loss_elems, wle, na, ncl);
    } else {
      memcpy(pred, j->pred, n * sizeof(float));
      memcpy(wgrad, j->exp_grad, n * sizeof(float));
      if (j->exp_loss_elems) memcpy(wle, j->exp_loss_elems, n * sizeof(float));
    }
    k.kind = is_c ? (labels ? K_L : K_C) : K_R;
    k.c = ghm_c_config_default();
    k.r = ghm_r_config_default();
    call_set(&k, c->bins, (float)c->momentum);
    k.c.loss_weight = k.r.loss_weight = (float)c->loss_weight;
    k.c.reduction = k.r.reduction = reduction_of(c->reduction);
    if (!is_c) k.r.mu = (float)c->mu;
    k.pred = (const float *)placed(pred, n * sizeof(float), off, &bp);
    if (labels) {
      k.labels = (const int32_t *)placed(j->labels, j->n_labels * sizeof(int32_t), off, &bt);
      k.na = na;
      k.nc = ncl;
      k.layout = layout;
    } else {
      k.target = (const float *)placed(j->target, n * sizeof(float), off, &bt);
    }
    k.lw = (const float *)placed(j->label_weight, j->n_label_weight * sizeof(float), off, &bw);
    k.n = n;
    {
      float *pg = (float *)placed(NULL, n * sizeof(float), off, &bg);
      float *pe = j->exp_loss_elems ? (float *)placed(NULL, n * sizeof(float), off, &be) : NULL;
      if (!pe) be = NULL;
      st = call_run(&k, c->momentum > 0 ? &ema : NULL, pg, &loss, pe, NULL);
      memcpy(grad, (unsigned char *)bg + off, n * sizeof(float));
      if (pe) memcpy(le, (unsigned char *)be + off, n * sizeof(float));
    }
    CHECK(st == GHM_OK, "%s iter %zu (%s, offset %zu): %s", c->name, it, kind_name(&k), off,
          sname(st));
    if (st == GHM_OK) {
      e = j->exp_loss == 0.0 ? fabs((double)loss) : check_rel(loss, j->exp_loss);
      if (e > w->loss) w->loss = e;
      CHECK(e <= 1e-5, "%s iter %zu (%s, offset %zu): loss %.9g, want %.9g (rel %.2e)", c->name,
            it, kind_name(&k), off, (double)loss, j->exp_loss, e);
      e = check_max_rel(grad, wgrad, n);
      if (e > w->grad) w->grad = e;
      CHECK(e <= 1e-5, "%s iter %zu (%s, offset %zu): grad max err / max|grad| = %.2e", c->name,
            it, kind_name(&k), off, e);
      if (j->exp_loss_elems) {
        e = check_max_rel(le, wle, n);
        if (e > w->elems) w->elems = e;
        CHECK(e <= 1e-5, "%s iter %zu (%s, offset %zu): loss_elems max err / max = %.2e",
              c->name, it, kind_name(&k), off, e);
      }
      if (j->exp_acc_sum) {
        CHECK(ema.bins == c->bins, "%s: ema.bins %u", c->name, (unsigned)ema.bins);
        for (q = 0; q < j->n_acc_sum && q < GHM_MAX_BINS; q++) {
          e = check_rel(ema.acc_sum[q], j->exp_acc_sum[q]);
          if (e > w->acc) w->acc = e;
          CHECK(e <= 1e-6, "%s iter %zu (%s, offset %zu): acc_sum[%zu] %.9g, want %.9g",
                c->name, it, kind_name(&k), off, q, (double)ema.acc_sum[q],
                (double)j->exp_acc_sum[q]);
        }
      }
    }
    free(bp);
    free(bt);
    free(bw);
    free(bg);
    free(be);
    free(pred);
    free(wgrad);
    free(wle);
    free(grad);
    free(le);
  }
}

static void test_parity(const char *dir) {
  worst w = {0, 0, 0, 0};
  size_t i, runs = 0, loaded = 0;
  check_group("mmdet parity");
  for (i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
    char path[4096], err[4200];
    jcase c;
    uint32_t layout;
    size_t off;
    snprintf(path, sizeof path, "%s/%s.json", dir, CASES[i]);
    if (!CHECK(jcase_load(path, &c, err, sizeof err) == 0, "cannot load: %s", err)) continue;
    loaded++;
    CHECK(strcmp(c.name, CASES[i]) == 0, "%s: name \"%s\"", path, c.name);
    for (layout = 0; layout <= (c.iters[0].labels ? 1u : 0u); layout++) {
      for (off = 0; off <= 1; off++) { /* aligned, and every buffer misaligned */
        parity_run(&c, layout, off, &w);
        runs++;
      }
    }
    jcase_free(&c);
  }
  CHECK(loaded == 19, "%zu of 19 reference cases loaded", loaded);
  check_group_end("%zu cases, %zu runs; worst: loss rel %.2e, grad %.2e, loss_elems %.2e, "
                  "acc_sum rel %.2e",
                  loaded, runs, w.loss, w.grad, w.elems, w.acc);
}

/* ========================================================================================== */
/* Error groups: every status code, and nothing written. Everything a call could touch lives
 * in one arena; the whole arena (inputs, outputs, state structs) is compared bytewise before
 * and after each failing call. */

#define NE 600 /* dense elements (more than the library's 256-element bounce chunk) */
#define NA 150 /* anchors for labels calls */
#define NCL 4  /* classes: NA * NCL == NE */
#define PAD 16

typedef struct arena {
  ghm_c_config cc;
  ghm_r_config rc;
  float pred[NE + PAD], target[NE + PAD], lw[NE + PAD];
  int32_t labels[NA + PAD];
  float grad[NE + PAD], le[NE + PAD];
  float loss;
  ghm_stats stats;
  ghm_ema ema, ema5;      /* valid, for 10 and 5 bins */
  ghm_hist hist, hist5;   /* valid, for 10 and 5 bins */
  ghm_weights w, w5;      /* valid, for 10 and 5 bins */
  ghm_weights wout;       /* sentinel: the output of the finalize calls */
  double big[2 * NE + 4 * PAD]; /* 8-aligned scratch to place buffers and structs over each other */
} arena;

static arena A, S; /* the arena and its snapshot */
static size_t MIS; /* byte offset of the data arrays (0 aligned, 1 misaligned) */

#define NO_DIFF ((size_t)-1)

static void arena_snap(void) { memcpy(&S, &A, sizeof A); }

static size_t arena_diff(void) {
  const unsigned char *a = (const unsigned char *)&A, *s = (const unsigned char *)&S;
  size_t i;
  for (i = 0; i < sizeof A; i++)
    if (a[i] != s[i]) return i;
  return NO_DIFF;
}

static const char *arena_where(size_t off) {
  static char buf[96];
  static const struct {
    const char *name;
    size_t start, size;
  } f[] = {
      {"cfg (ghm_c_config)", offsetof(arena, cc), sizeof(ghm_c_config)},
      {"cfg (ghm_r_config)", offsetof(arena, rc), sizeof(ghm_r_config)},
      {"pred", offsetof(arena, pred), sizeof A.pred},
      {"target", offsetof(arena, target), sizeof A.target},
      {"label_weight", offsetof(arena, lw), sizeof A.lw},
      {"labels", offsetof(arena, labels), sizeof A.labels},
      {"grad", offsetof(arena, grad), sizeof A.grad},
      {"loss_elems", offsetof(arena, le), sizeof A.le},
      {"loss", offsetof(arena, loss), sizeof A.loss},
      {"stats", offsetof(arena, stats), sizeof A.stats},
      {"ema", offsetof(arena, ema), sizeof A.ema},
      {"ema (5 bins)", offsetof(arena, ema5), sizeof A.ema5},
      {"hist", offsetof(arena, hist), sizeof A.hist},
      {"hist (5 bins)", offsetof(arena, hist5), sizeof A.hist5},
      {"weights", offsetof(arena, w), sizeof A.w},
      {"weights (5 bins)", offsetof(arena, w5), sizeof A.w5},
      {"weights (finalize output)", offsetof(arena, wout), sizeof A.wout},
      {"scratch", offsetof(arena, big), sizeof A.big},
  };
  size_t i;
  if (off == NO_DIFF) return "nothing";
  for (i = 0; i < sizeof f / sizeof f[0]; i++)
    if (off >= f[i].start && off < f[i].start + f[i].size) {
      snprintf(buf, sizeof buf, "%s (byte %zu)", f[i].name, off - f[i].start);
      return buf;
    }
  snprintf(buf, sizeof buf, "arena byte %zu", off);
  return buf;
}

/* The arena's data arrays at the current offset. */
#define AF(arr) ((float *)(void *)((unsigned char *)(arr) + MIS))
#define AI(arr) ((int32_t *)(void *)((unsigned char *)(arr) + MIS))

/* Sets element i of a data array of the arena (at the current offset). */
static void aset(float *arr, size_t i, float v) {
  memcpy((unsigned char *)arr + MIS + i * sizeof v, &v, sizeof v);
}

static const char *mis_note(void) { return MIS ? " [misaligned]" : ""; }

/* Valid inputs (GHM-C logits and targets, or GHM-R), valid EMA / hist / weights, sentinel
 * outputs; data arrays moved to the current offset. */
static void arena_reset(enum kind kind) {
  ghm_c_config cm;
  ghm_r_config rm;
  ghm_status st = GHM_OK;
  size_t a;
  memset(&A, 0xA5, sizeof A);
  A.cc = ghm_c_config_default();
  A.rc = ghm_r_config_default();
  if (kind == K_R)
    gen_r(A.pred, A.target, A.lw, NE);
  else
    gen_c(A.pred, A.target, A.lw, NE);
  gen_labels(A.labels, NA, NCL);
  for (a = 0; a < NA; a++) A.lw[a] = kind == K_L ? (a % 7 == 0 ? 0.0f : 1.0f) : A.lw[a];
  /* EMAs with non-zero history; histograms and weights of this data */
  cm = A.cc;
  cm.momentum = 0.5f;
  rm = A.rc;
  rm.momentum = 0.5f;
  st |= ghm_ema_init(&A.ema, 10);
  st |= ghm_ema_init(&A.ema5, 5);
  if (kind == K_R) {
    st |= ghm_r_loss_grad(&rm, &A.ema, A.pred, A.target, NULL, NE, NULL, NULL, NULL, NULL);
    rm.bins = 5;
    st |= ghm_r_loss_grad(&rm, &A.ema5, A.pred, A.target, NULL, NE, NULL, NULL, NULL, NULL);
  } else {
    st |= ghm_c_loss_grad(&cm, &A.ema, A.pred, A.target, NULL, NE, NULL, NULL, NULL, NULL);
    cm.bins = 5;
    st |= ghm_c_loss_grad(&cm, &A.ema5, A.pred, A.target, NULL, NE, NULL, NULL, NULL, NULL);
  }
  st |= ghm_hist_init(&A.hist, 10);
  st |= ghm_hist_init(&A.hist5, 5);
  if (kind == K_R) {
    st |= ghm_r_accumulate(&A.rc, A.pred, A.target, A.lw, NE, &A.hist);
    st |= ghm_r_finalize(&A.rc, NULL, &A.hist, &A.w);
    rm.momentum = 0.0f;
    rm.bins = 5;
    st |= ghm_r_accumulate(&rm, A.pred, A.target, A.lw, NE, &A.hist5);
    st |= ghm_r_finalize(&rm, NULL, &A.hist5, &A.w5);
  } else {
    if (kind == K_L)
      st |= ghm_c_accumulate_labels(&A.cc, A.pred, A.labels, A.lw, NA, NCL, 0, 0, NA, &A.hist);
    else
      st |= ghm_c_accumulate(&A.cc, A.pred, A.target, A.lw, NE, &A.hist);
    st |= ghm_c_finalize(&A.cc, NULL, &A.hist, &A.w);
    cm.momentum = 0.0f;
    cm.bins = 5;
    st |= ghm_c_accumulate(&cm, A.pred, A.target, A.lw, NE, &A.hist5);
    st |= ghm_c_finalize(&cm, NULL, &A.hist5, &A.w5);
  }
  CHECK(st == GHM_OK, "arena setup failed");
  if (MIS) {
    memmove((unsigned char *)A.pred + MIS, A.pred, NE * sizeof(float));
    memmove((unsigned char *)A.target + MIS, A.target, NE * sizeof(float));
    memmove((unsigned char *)A.lw + MIS, A.lw, NE * sizeof(float));
    memmove((unsigned char *)A.labels + MIS, A.labels, NA * sizeof(int32_t));
  }
}

/* The calls, on the arena (n elements; labels calls: NA anchors x NCL classes). */
static ghm_status a_c(size_t n) {
  return ghm_c_loss_grad(&A.cc, &A.ema, AF(A.pred), AF(A.target), AF(A.lw), n, AF(A.grad),
                         &A.loss, AF(A.le), &A.stats);
}
static ghm_status a_r(size_t n) {
  return ghm_r_loss_grad(&A.rc, &A.ema, AF(A.pred), AF(A.target), AF(A.lw), n, AF(A.grad),
                         &A.loss, AF(A.le), &A.stats);
}
static ghm_status a_l(size_t na, size_t nc, uint32_t layout) {
  return ghm_c_loss_grad_labels(&A.cc, &A.ema, AF(A.pred), AI(A.labels), AF(A.lw), na, nc,
                                layout, AF(A.grad), &A.loss, AF(A.le), &A.stats);
}
static ghm_status a_cacc(size_t n) {
  return ghm_c_accumulate(&A.cc, AF(A.pred), AF(A.target), AF(A.lw), n, &A.hist);
}
static ghm_status a_racc(size_t n) {
  return ghm_r_accumulate(&A.rc, AF(A.pred), AF(A.target), AF(A.lw), n, &A.hist);
}
static ghm_status a_lacc(size_t na, size_t nc, uint32_t layout, size_t b, size_t e) {
  return ghm_c_accumulate_labels(&A.cc, AF(A.pred), AI(A.labels), AF(A.lw), na, nc, layout, b,
                                 e, &A.hist);
}
static ghm_status a_cfin(void) { return ghm_c_finalize(&A.cc, &A.ema, &A.hist, &A.wout); }
static ghm_status a_rfin(void) { return ghm_r_finalize(&A.rc, &A.ema, &A.hist, &A.wout); }
static ghm_status a_capp(size_t n) {
  return ghm_c_apply(&A.cc, &A.w, AF(A.pred), AF(A.target), AF(A.lw), n, AF(A.grad), AF(A.le));
}
static ghm_status a_rapp(size_t n) {
  return ghm_r_apply(&A.rc, &A.w, AF(A.pred), AF(A.target), AF(A.lw), n, AF(A.grad), AF(A.le));
}
static ghm_status a_lapp(size_t na, size_t nc, uint32_t layout, size_t b, size_t e) {
  return ghm_c_apply_labels(&A.cc, &A.w, AF(A.pred), AI(A.labels), AF(A.lw), na, nc, layout, b,
                            e, AF(A.grad), AF(A.le));
}

/* Expects status `want` from `call` and the arena unchanged. */
#define EXPECT_ERR(want, call_expr, ...)                                                     \
  do {                                                                                       \
    char d_[256];                                                                            \
    ghm_status st_;                                                                          \
    size_t off_;                                                                             \
    snprintf(d_, sizeof d_, __VA_ARGS__);                                                    \
    arena_snap();                                                                            \
    st_ = (call_expr);                                                                       \
    CHECK(st_ == (want), "%s%s: got %s, want %s", d_, mis_note(), sname(st_), sname(want));  \
    off_ = arena_diff();                                                                     \
    CHECK(off_ == NO_DIFF, "%s%s: returned %s but wrote %s", d_, mis_note(), sname(st_),     \
          arena_where(off_));                                                                \
  } while (0)

/* Expects GHM_OK from `call` (what it writes is not checked). */
#define EXPECT_OK(call_expr, ...)                                                            \
  do {                                                                                       \
    char d_[256];                                                                            \
    ghm_status st_;                                                                          \
    snprintf(d_, sizeof d_, __VA_ARGS__);                                                    \
    st_ = (call_expr);                                                                       \
    CHECK(st_ == GHM_OK, "%s%s: got %s, want GHM_OK", d_, mis_note(), sname(st_));           \
  } while (0)

/* Expects GHM_OK, loss 0 written, and nothing else. */
#define EXPECT_EMPTY(call_expr, loss_written, ...)                                           \
  do {                                                                                       \
    char d_[256];                                                                            \
    ghm_status st_;                                                                          \
    size_t off_;                                                                             \
    snprintf(d_, sizeof d_, __VA_ARGS__);                                                    \
    arena_snap();                                                                            \
    st_ = (call_expr);                                                                       \
    CHECK(st_ == GHM_OK, "%s%s: got %s, want GHM_OK", d_, mis_note(), sname(st_));           \
    if (loss_written) {                                                                      \
      CHECK(A.loss == 0.0f, "%s%s: loss %.9g, want 0", d_, mis_note(), (double)A.loss);      \
      S.loss = A.loss;                                                                       \
    }                                                                                        \
    off_ = arena_diff();                                                                     \
    CHECK(off_ == NO_DIFF, "%s%s: n == 0 but wrote %s", d_, mis_note(), arena_where(off_));  \
  } while (0)

/* ------------------------------------------------------------------------------------------ */

static void test_err_null(void) {
  check_group("GHM_ERR_NULL");
  for (MIS = 0; MIS <= 1; MIS++) {
    arena_reset(K_C);
    EXPECT_ERR(GHM_ERR_NULL, ghm_c_loss_grad(NULL, &A.ema, AF(A.pred), AF(A.target), AF(A.lw),
                                             NE, AF(A.grad), &A.loss, AF(A.le), &A.stats),
               "ghm_c_loss_grad(cfg NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_c_loss_grad(&A.cc, &A.ema, NULL, AF(A.target), AF(A.lw), NE,
                                             AF(A.grad), &A.loss, AF(A.le), &A.stats),
               "ghm_c_loss_grad(pred NULL, n %d)", NE);
    EXPECT_ERR(GHM_ERR_NULL, ghm_c_loss_grad(&A.cc, &A.ema, AF(A.pred), NULL, AF(A.lw), 1,
                                             AF(A.grad), &A.loss, AF(A.le), &A.stats),
               "ghm_c_loss_grad(target NULL, n 1)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_c_loss_grad_labels(NULL, &A.ema, AF(A.pred), AI(A.labels),
                                                    AF(A.lw), NA, NCL, 0, AF(A.grad), &A.loss,
                                                    AF(A.le), &A.stats),
               "ghm_c_loss_grad_labels(cfg NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_c_loss_grad_labels(&A.cc, &A.ema, NULL, AI(A.labels), AF(A.lw),
                                                    NA, NCL, 0, AF(A.grad), &A.loss, AF(A.le),
                                                    &A.stats),
               "ghm_c_loss_grad_labels(pred NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_c_loss_grad_labels(&A.cc, &A.ema, AF(A.pred), NULL, AF(A.lw),
                                                    NA, NCL, 1, AF(A.grad), &A.loss, AF(A.le),
                                                    &A.stats),
               "ghm_c_loss_grad_labels(labels NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_c_accumulate(NULL, AF(A.pred), AF(A.target), AF(A.lw), NE,
                                              &A.hist),
               "ghm_c_accumulate(cfg NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_c_accumulate(&A.cc, NULL, AF(A.target), AF(A.lw), NE, &A.hist),
               "ghm_c_accumulate(pred NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_c_accumulate(&A.cc, AF(A.pred), NULL, AF(A.lw), NE, &A.hist),
               "ghm_c_accumulate(target NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_c_accumulate(&A.cc, AF(A.pred), AF(A.target), AF(A.lw), NE,
                                              NULL),
               "ghm_c_accumulate(hist NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_c_accumulate_labels(&A.cc, AF(A.pred), AI(A.labels), AF(A.lw),
                                                     NA, NCL, 0, 0, NA, NULL),
               "ghm_c_accumulate_labels(hist NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_c_accumulate_labels(&A.cc, AF(A.pred), NULL, AF(A.lw), NA, NCL,
                                                     0, 0, NA, &A.hist),
               "ghm_c_accumulate_labels(labels NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_c_finalize(NULL, &A.ema, &A.hist, &A.wout),
               "ghm_c_finalize(cfg NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_c_finalize(&A.cc, &A.ema, NULL, &A.wout),
               "ghm_c_finalize(hist NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_c_finalize(&A.cc, &A.ema, &A.hist, NULL),
               "ghm_c_finalize(weights NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_c_apply(NULL, &A.w, AF(A.pred), AF(A.target), AF(A.lw), NE,
                                         AF(A.grad), AF(A.le)),
               "ghm_c_apply(cfg NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_c_apply(&A.cc, NULL, AF(A.pred), AF(A.target), AF(A.lw), NE,
                                         AF(A.grad), AF(A.le)),
               "ghm_c_apply(weights NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_c_apply(&A.cc, &A.w, NULL, AF(A.target), AF(A.lw), NE,
                                         AF(A.grad), AF(A.le)),
               "ghm_c_apply(pred NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_c_apply_labels(&A.cc, NULL, AF(A.pred), AI(A.labels), AF(A.lw),
                                                NA, NCL, 0, 0, NA, AF(A.grad), AF(A.le)),
               "ghm_c_apply_labels(weights NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_hist_init(NULL, 10), "ghm_hist_init(NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_ema_init(NULL, 10), "ghm_ema_init(NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_hist_merge(NULL, &A.hist), "ghm_hist_merge(into NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_hist_merge(&A.hist, NULL), "ghm_hist_merge(from NULL)");

    arena_reset(K_R);
    EXPECT_ERR(GHM_ERR_NULL, ghm_r_loss_grad(NULL, &A.ema, AF(A.pred), AF(A.target), AF(A.lw),
                                             NE, AF(A.grad), &A.loss, AF(A.le), &A.stats),
               "ghm_r_loss_grad(cfg NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_r_loss_grad(&A.rc, &A.ema, NULL, AF(A.target), AF(A.lw), NE,
                                             AF(A.grad), &A.loss, AF(A.le), &A.stats),
               "ghm_r_loss_grad(pred NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_r_loss_grad(&A.rc, &A.ema, AF(A.pred), NULL, AF(A.lw), NE,
                                             AF(A.grad), &A.loss, AF(A.le), &A.stats),
               "ghm_r_loss_grad(target NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_r_accumulate(&A.rc, AF(A.pred), AF(A.target), AF(A.lw), NE,
                                              NULL),
               "ghm_r_accumulate(hist NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_r_accumulate(NULL, AF(A.pred), AF(A.target), AF(A.lw), NE,
                                              &A.hist),
               "ghm_r_accumulate(cfg NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_r_finalize(&A.rc, &A.ema, NULL, &A.wout),
               "ghm_r_finalize(hist NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_r_finalize(&A.rc, &A.ema, &A.hist, NULL),
               "ghm_r_finalize(weights NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_r_apply(&A.rc, NULL, AF(A.pred), AF(A.target), AF(A.lw), NE,
                                         AF(A.grad), AF(A.le)),
               "ghm_r_apply(weights NULL)");
    EXPECT_ERR(GHM_ERR_NULL, ghm_r_apply(&A.rc, &A.w, AF(A.pred), NULL, AF(A.lw), NE,
                                         AF(A.grad), AF(A.le)),
               "ghm_r_apply(target NULL)");
  }
  MIS = 0;
  check_group_done();
}

/* ------------------------------------------------------------------------------------------ */

typedef struct cfg_mut {
  const char *what;
  int field; /* 0 bins, 1 momentum, 2 loss_weight, 3 grad_scale, 4 reduction, 5 input,
                6 accumulate, 7 skip_bad, 8 mu */
  double v;
} cfg_mut;

static void apply_mut(const cfg_mut *m) {
  switch (m->field) {
    case 0: A.cc.bins = A.rc.bins = (uint32_t)m->v; break;
    case 1: A.cc.momentum = A.rc.momentum = (float)m->v; break;
    case 2: A.cc.loss_weight = A.rc.loss_weight = (float)m->v; break;
    case 3: A.cc.grad_scale = A.rc.grad_scale = (float)m->v; break;
    case 4: A.cc.reduction = A.rc.reduction = (uint32_t)m->v; break;
    case 5: A.cc.input = (uint32_t)m->v; break;
    case 6: A.cc.accumulate = A.rc.accumulate = (uint32_t)m->v; break;
    case 7: A.cc.skip_bad = A.rc.skip_bad = (uint32_t)m->v; break;
    default: A.rc.mu = (float)m->v; break;
  }
}

static void test_err_config(void) {
  const double nan = f_nan(), inf = f_inf();
  const cfg_mut muts[] = {
      {"bins 0", 0, 0},
      {"bins 129", 0, 129},
      {"bins 4294967295", 0, 4294967295.0},
      {"momentum -0.1", 1, -0.1},
      {"momentum 1.0", 1, 1.0},
      {"momentum NaN", 1, nan},
      {"momentum inf", 1, inf},
      {"loss_weight inf", 2, inf},
      {"loss_weight -inf", 2, -inf},
      {"loss_weight NaN", 2, nan},
      {"grad_scale NaN", 3, nan},
      {"grad_scale inf", 3, inf},
      {"reduction 3", 4, 3},
      {"input 2", 5, 2},
      {"accumulate 2", 6, 2},
      {"skip_bad 7", 7, 7},
      {"mu 0", 8, 0},
      {"mu -1", 8, -1},
      {"mu inf", 8, inf},
      {"mu NaN", 8, nan},
      {"mu subnormal (mu * mu underflows)", 8, 2.9387358770557188e-39},
      {"mu just below 2^-63 (mu * mu underflows)", 8, 1.0842020e-19},
  };
  size_t i;
  check_group("GHM_ERR_CONFIG");
  for (MIS = 0; MIS <= 1; MIS++) {
    for (i = 0; i < sizeof muts / sizeof muts[0]; i++) {
      const cfg_mut *m = &muts[i];
      if (m->field != 8) { /* GHM-C */
        arena_reset(K_C);
        apply_mut(m);
        EXPECT_ERR(GHM_ERR_CONFIG, a_c(NE), "ghm_c_loss_grad(%s)", m->what);
        EXPECT_ERR(GHM_ERR_CONFIG, a_c(0), "ghm_c_loss_grad(%s, n 0)", m->what);
        EXPECT_ERR(GHM_ERR_CONFIG, a_cacc(NE), "ghm_c_accumulate(%s)", m->what);
        EXPECT_ERR(GHM_ERR_CONFIG, a_cfin(), "ghm_c_finalize(%s)", m->what);
        EXPECT_ERR(GHM_ERR_CONFIG, a_capp(NE), "ghm_c_apply(%s)", m->what);
        arena_reset(K_L);
        apply_mut(m);
        EXPECT_ERR(GHM_ERR_CONFIG, a_l(NA, NCL, 0), "ghm_c_loss_grad_labels(%s)", m->what);
        EXPECT_ERR(GHM_ERR_CONFIG, a_lacc(NA, NCL, 1, 0, NA), "ghm_c_accumulate_labels(%s)",
                   m->what);
        EXPECT_ERR(GHM_ERR_CONFIG, a_lapp(NA, NCL, 1, 0, NA), "ghm_c_apply_labels(%s)",
                   m->what);
      }
      if (m->field != 5) { /* GHM-R */
        arena_reset(K_R);
        apply_mut(m);
        EXPECT_ERR(GHM_ERR_CONFIG, a_r(NE), "ghm_r_loss_grad(%s)", m->what);
        EXPECT_ERR(GHM_ERR_CONFIG, a_r(0), "ghm_r_loss_grad(%s, n 0)", m->what);
        EXPECT_ERR(GHM_ERR_CONFIG, a_racc(NE), "ghm_r_accumulate(%s)", m->what);
        EXPECT_ERR(GHM_ERR_CONFIG, a_rfin(), "ghm_r_finalize(%s)", m->what);
        EXPECT_ERR(GHM_ERR_CONFIG, a_rapp(NE), "ghm_r_apply(%s)", m->what);
      }
    }
    /* layout is an argument, not a config field */
    arena_reset(K_L);
    EXPECT_ERR(GHM_ERR_CONFIG, a_l(NA, NCL, 5), "ghm_c_loss_grad_labels(layout 5)");
    EXPECT_ERR(GHM_ERR_CONFIG, a_l(NA, NCL, 2), "ghm_c_loss_grad_labels(layout 2)");
    EXPECT_ERR(GHM_ERR_CONFIG, a_lacc(NA, NCL, 5, 0, NA), "ghm_c_accumulate_labels(layout 5)");
    EXPECT_ERR(GHM_ERR_CONFIG, a_lapp(NA, NCL, 5, 0, NA), "ghm_c_apply_labels(layout 5)");
    /* bins of the state constructors */
    EXPECT_ERR(GHM_ERR_CONFIG, ghm_ema_init(&A.ema, 0), "ghm_ema_init(bins 0)");
    EXPECT_ERR(GHM_ERR_CONFIG, ghm_ema_init(&A.ema, 129), "ghm_ema_init(bins 129)");
    EXPECT_ERR(GHM_ERR_CONFIG, ghm_hist_init(&A.hist, 0), "ghm_hist_init(bins 0)");
    EXPECT_ERR(GHM_ERR_CONFIG, ghm_hist_init(&A.hist, 129), "ghm_hist_init(bins 129)");
    /* the edges of the valid ranges are valid */
    arena_reset(K_C);
    A.cc.bins = 128;
    A.cc.momentum = 0.0f;
    EXPECT_OK(a_c(NE), "ghm_c_loss_grad(bins 128)");
    A.cc.bins = 1;
    EXPECT_OK(a_c(NE), "ghm_c_loss_grad(bins 1)");
    A.cc.bins = 10;
    A.cc.momentum = nextafterf(1.0f, 0.0f);
    EXPECT_OK(a_c(NE), "ghm_c_loss_grad(momentum 1 - ulp)");
    A.cc.momentum = 0.0f;
    A.cc.loss_weight = FLT_MAX; /* MEAN: the gradient factors stay finite */
    EXPECT_OK(a_c(NE), "ghm_c_loss_grad(loss_weight FLT_MAX)");
    A.cc.loss_weight = 1.0f;
    A.cc.grad_scale = -FLT_MAX;
    EXPECT_OK(a_c(NE), "ghm_c_loss_grad(grad_scale -FLT_MAX)");
    arena_reset(K_R);
    A.rc.mu = 0x1p-63f; /* the smallest: mu * mu = FLT_MIN */
    EXPECT_OK(a_r(NE), "ghm_r_loss_grad(mu 2^-63)");
  }
  MIS = 0;
  check_group_done();
}

/* ------------------------------------------------------------------------------------------ */

static void test_err_state(void) {
  check_group("GHM_ERR_STATE");
  for (MIS = 0; MIS <= 1; MIS++) {
    arena_reset(K_C);
    A.cc.momentum = 0.5f;
    EXPECT_ERR(GHM_ERR_STATE, ghm_c_loss_grad(&A.cc, NULL, AF(A.pred), AF(A.target), AF(A.lw),
                                              NE, AF(A.grad), &A.loss, AF(A.le), &A.stats),
               "ghm_c_loss_grad(momentum 0.5, ema NULL)");
    EXPECT_ERR(GHM_ERR_STATE, ghm_c_loss_grad(&A.cc, NULL, AF(A.pred), AF(A.target), AF(A.lw),
                                              0, AF(A.grad), &A.loss, AF(A.le), &A.stats),
               "ghm_c_loss_grad(momentum 0.5, ema NULL, n 0)");
    EXPECT_ERR(GHM_ERR_STATE, ghm_c_loss_grad(&A.cc, &A.ema5, AF(A.pred), AF(A.target),
                                              AF(A.lw), NE, AF(A.grad), &A.loss, AF(A.le),
                                              &A.stats),
               "ghm_c_loss_grad(bins 10, ema of 5 bins)");
    EXPECT_ERR(GHM_ERR_STATE, ghm_c_finalize(&A.cc, NULL, &A.hist, &A.wout),
               "ghm_c_finalize(momentum 0.5, ema NULL)");
    EXPECT_ERR(GHM_ERR_STATE, ghm_c_finalize(&A.cc, &A.ema5, &A.hist, &A.wout),
               "ghm_c_finalize(bins 10, ema of 5 bins)");
    memset(&A.ema, 0xA5, sizeof A.ema); /* never initialised */
    EXPECT_ERR(GHM_ERR_STATE, a_c(NE), "ghm_c_loss_grad(momentum 0.5, uninitialised ema)");
    A.cc.momentum = 0.0f;
    arena_reset(K_C);
    EXPECT_ERR(GHM_ERR_STATE, ghm_c_accumulate(&A.cc, AF(A.pred), AF(A.target), AF(A.lw), NE,
                                               &A.hist5),
               "ghm_c_accumulate(bins 10, hist of 5 bins)");
    EXPECT_ERR(GHM_ERR_STATE, ghm_c_finalize(&A.cc, NULL, &A.hist5, &A.wout),
               "ghm_c_finalize(bins 10, hist of 5 bins)");
    EXPECT_ERR(GHM_ERR_STATE, ghm_c_apply(&A.cc, &A.w5, AF(A.pred), AF(A.target), AF(A.lw), NE,
                                          AF(A.grad), AF(A.le)),
               "ghm_c_apply(bins 10, weights of 5 bins)");
    EXPECT_ERR(GHM_ERR_STATE, ghm_c_apply(&A.cc, &A.w5, AF(A.pred), AF(A.target), AF(A.lw), 0,
                                          AF(A.grad), AF(A.le)),
               "ghm_c_apply(bins 10, weights of 5 bins, n 0)");
    EXPECT_ERR(GHM_ERR_STATE, ghm_hist_merge(&A.hist, &A.hist5), "ghm_hist_merge(10 += 5 bins)");
    EXPECT_ERR(GHM_ERR_STATE, ghm_hist_merge(&A.hist5, &A.hist), "ghm_hist_merge(5 += 10 bins)");

    arena_reset(K_L);
    A.cc.momentum = 0.5f;
    EXPECT_ERR(GHM_ERR_STATE, ghm_c_loss_grad_labels(&A.cc, NULL, AF(A.pred), AI(A.labels),
                                                     AF(A.lw), NA, NCL, 1, AF(A.grad), &A.loss,
                                                     AF(A.le), &A.stats),
               "ghm_c_loss_grad_labels(momentum 0.5, ema NULL)");
    EXPECT_ERR(GHM_ERR_STATE, ghm_c_loss_grad_labels(&A.cc, &A.ema5, AF(A.pred), AI(A.labels),
                                                     AF(A.lw), NA, NCL, 0, AF(A.grad), &A.loss,
                                                     AF(A.le), &A.stats),
               "ghm_c_loss_grad_labels(bins 10, ema of 5 bins)");
    A.cc.momentum = 0.0f;
    EXPECT_ERR(GHM_ERR_STATE, ghm_c_accumulate_labels(&A.cc, AF(A.pred), AI(A.labels), AF(A.lw),
                                                      NA, NCL, 1, 0, NA, &A.hist5),
               "ghm_c_accumulate_labels(bins 10, hist of 5 bins)");
    EXPECT_ERR(GHM_ERR_STATE, ghm_c_apply_labels(&A.cc, &A.w5, AF(A.pred), AI(A.labels),
                                                 AF(A.lw), NA, NCL, 1, 0, NA, AF(A.grad),
                                                 AF(A.le)),
               "ghm_c_apply_labels(bins 10, weights of 5 bins)");

    arena_reset(K_R);
    A.rc.momentum = 0.5f;
    EXPECT_ERR(GHM_ERR_STATE, ghm_r_loss_grad(&A.rc, NULL, AF(A.pred), AF(A.target), AF(A.lw),
                                              NE, AF(A.grad), &A.loss, AF(A.le), &A.stats),
               "ghm_r_loss_grad(momentum 0.5, ema NULL)");
    EXPECT_ERR(GHM_ERR_STATE, ghm_r_loss_grad(&A.rc, &A.ema5, AF(A.pred), AF(A.target),
                                              AF(A.lw), NE, AF(A.grad), &A.loss, AF(A.le),
                                              &A.stats),
               "ghm_r_loss_grad(bins 10, ema of 5 bins)");
    EXPECT_ERR(GHM_ERR_STATE, ghm_r_finalize(&A.rc, NULL, &A.hist, &A.wout),
               "ghm_r_finalize(momentum 0.5, ema NULL)");
    A.rc.momentum = 0.0f;
    EXPECT_ERR(GHM_ERR_STATE, ghm_r_accumulate(&A.rc, AF(A.pred), AF(A.target), AF(A.lw), NE,
                                               &A.hist5),
               "ghm_r_accumulate(bins 10, hist of 5 bins)");
    EXPECT_ERR(GHM_ERR_STATE, ghm_r_finalize(&A.rc, NULL, &A.hist5, &A.wout),
               "ghm_r_finalize(bins 10, hist of 5 bins)");
    EXPECT_ERR(GHM_ERR_STATE, ghm_r_apply(&A.rc, &A.w5, AF(A.pred), AF(A.target), AF(A.lw), NE,
                                          AF(A.grad), AF(A.le)),
               "ghm_r_apply(bins 10, weights of 5 bins)");
  }
  MIS = 0;
  check_group_done();
}

/* ------------------------------------------------------------------------------------------ */

typedef struct bad {
  const char *what;
  int arr; /* 0 pred, 1 target, 2 label weight */
  float v;
} bad;

static float *bad_arr(int arr) { return arr == 0 ? A.pred : arr == 1 ? A.target : A.lw; }
static const char *bad_name(int arr) { return arr == 0 ? "pred" : arr == 1 ? "target" : "label_weight"; }

/* The last call's report names `arg` and `index` (-1: none), with `status`. */
static void expect_report(ghm_status status, const char *arg, long index, const char *what) {
  ghm_report r;
  memset(&r, 0x5a, sizeof r);
  CHECK(ghm_last_error(&r) == GHM_OK, "%s: ghm_last_error failed", what);
  CHECK(r.status == status && strcmp(r.argument, arg) == 0 && r.index == (int64_t)index,
        "%s: report %s %s[%lld] (\"%s\"), want %s %s[%ld]", what, sname(r.status), r.argument,
        (long long)r.index, r.message, sname(status), arg, index);
  CHECK(memchr(r.message, 0, sizeof r.message) != NULL, "%s: message not NUL-terminated", what);
}

static void test_err_input(void) {
  const float nan = f_nan(), inf = f_inf();
  const bad c_bad[] = {
      {"pred NaN", 0, nan},      {"pred +inf", 0, inf},     {"pred -inf", 0, -inf},
      {"target -0.5", 1, -0.5f}, {"target 1.5", 1, 1.5f},   {"target NaN", 1, nan},
      {"target inf", 1, inf},    {"label_weight -1", 2, -1.0f}, {"label_weight NaN", 2, nan},
      {"label_weight inf", 2, inf}, {"label_weight -FLT_MIN", 2, -FLT_MIN},
  };
  const bad r_bad[] = {
      {"pred NaN", 0, nan},      {"pred -inf", 0, -inf},        {"target inf", 1, inf},
      {"target NaN", 1, nan},    {"label_weight -1", 2, -1.0f}, {"label_weight NaN", 2, nan},
      {"label_weight inf", 2, inf},
  };
  const size_t where[] = {0, NE / 2 + 1, NE - 1};
  size_t i, j;
  check_group("GHM_ERR_INPUT");
  for (MIS = 0; MIS <= 1; MIS++) {
    for (i = 0; i < sizeof c_bad / sizeof c_bad[0]; i++) {
      for (j = 0; j < 3; j++) {
        const bad *b = &c_bad[i];
        arena_reset(K_C);
        aset(bad_arr(b->arr), where[j], b->v);
        EXPECT_ERR(GHM_ERR_INPUT, a_c(NE), "ghm_c_loss_grad(%s at %zu)", b->what, where[j]);
        expect_report(GHM_ERR_INPUT, bad_name(b->arr), (long)where[j], b->what);
        A.cc.momentum = 0.5f;
        EXPECT_ERR(GHM_ERR_INPUT, a_c(NE), "ghm_c_loss_grad(%s at %zu, momentum 0.5)", b->what,
                   where[j]);
        A.cc.momentum = 0.0f;
        A.cc.accumulate = 1;
        A.cc.grad_scale = -1.0f;
        EXPECT_ERR(GHM_ERR_INPUT, a_c(NE), "ghm_c_loss_grad(%s at %zu, accumulate)", b->what,
                   where[j]);
        A.cc.accumulate = 0;
        A.cc.grad_scale = 1.0f;
        EXPECT_ERR(GHM_ERR_INPUT, a_cacc(NE), "ghm_c_accumulate(%s at %zu)", b->what, where[j]);
        expect_report(GHM_ERR_INPUT, bad_name(b->arr), (long)where[j], b->what);
        EXPECT_ERR(GHM_ERR_INPUT, a_capp(NE), "ghm_c_apply(%s at %zu)", b->what, where[j]);
        expect_report(GHM_ERR_INPUT, bad_name(b->arr), (long)where[j], b->what);
      }
    }
    /* probability input: p outside [0, 1] is bad, 0 and 1 are fine */
    arena_reset(K_C);
    A.cc.input = GHM_INPUT_PROBS;
    for (i = 0; i < NE; i++) aset(A.pred, i, rndf(0.0f, 1.0f));
    aset(A.pred, 3, 0.0f);
    aset(A.pred, 4, 1.0f);
    EXPECT_OK(a_c(NE), "ghm_c_loss_grad(probabilities in [0, 1])");
    arena_reset(K_C);
    A.cc.input = GHM_INPUT_PROBS;
    for (i = 0; i < NE; i++) aset(A.pred, i, rndf(0.0f, 1.0f));
    aset(A.pred, NE - 2, 1.5f);
    EXPECT_ERR(GHM_ERR_INPUT, a_c(NE), "ghm_c_loss_grad(probability 1.5)");
    EXPECT_ERR(GHM_ERR_INPUT, a_cacc(NE), "ghm_c_accumulate(probability 1.5)");
    aset(A.pred, NE - 2, -0.25f);
    EXPECT_ERR(GHM_ERR_INPUT, a_c(NE), "ghm_c_loss_grad(probability -0.25)");
    EXPECT_ERR(GHM_ERR_INPUT, a_capp(NE), "ghm_c_apply(probability -0.25)");

    for (i = 0; i < sizeof r_bad / sizeof r_bad[0]; i++) {
      for (j = 0; j < 3; j++) {
        const bad *b = &r_bad[i];
        arena_reset(K_R);
        aset(bad_arr(b->arr), where[j], b->v);
        EXPECT_ERR(GHM_ERR_INPUT, a_r(NE), "ghm_r_loss_grad(%s at %zu)", b->what, where[j]);
        expect_report(GHM_ERR_INPUT, bad_name(b->arr), (long)where[j], b->what);
        A.rc.momentum = 0.5f;
        EXPECT_ERR(GHM_ERR_INPUT, a_r(NE), "ghm_r_loss_grad(%s at %zu, momentum 0.5)", b->what,
                   where[j]);
        A.rc.momentum = 0.0f;
        EXPECT_ERR(GHM_ERR_INPUT, a_racc(NE), "ghm_r_accumulate(%s at %zu)", b->what, where[j]);
        expect_report(GHM_ERR_INPUT, bad_name(b->arr), (long)where[j], b->what);
        EXPECT_ERR(GHM_ERR_INPUT, a_rapp(NE), "ghm_r_apply(%s at %zu)", b->what, where[j]);
        expect_report(GHM_ERR_INPUT, bad_name(b->arr), (long)where[j], b->what);
      }
    }
    /* GHM-R: finite targets outside [0, 1] are fine */
    arena_reset(K_R);
    aset(A.target, 7, 5.0f);
    aset(A.target, NE - 1, -3.0f);
    EXPECT_OK(a_r(NE), "ghm_r_loss_grad(targets 5 and -3)");
    EXPECT_OK(a_racc(NE), "ghm_r_accumulate(targets 5 and -3)");

    /* labels: a bad logit or anchor weight; labels outside 0..C-1 are background, not bad */
    for (j = 0; j < 3; j++) {
      uint32_t layout = (uint32_t)(j & 1);
      arena_reset(K_L);
      aset(A.pred, where[j], nan);
      EXPECT_ERR(GHM_ERR_INPUT, a_l(NA, NCL, layout), "ghm_c_loss_grad_labels(pred NaN at %zu)",
                 where[j]);
      EXPECT_ERR(GHM_ERR_INPUT, a_lacc(NA, NCL, layout, 0, NA),
                 "ghm_c_accumulate_labels(pred NaN at %zu)", where[j]);
      EXPECT_ERR(GHM_ERR_INPUT, a_lapp(NA, NCL, layout, 0, NA),
                 "ghm_c_apply_labels(pred NaN at %zu)", where[j]);
      arena_reset(K_L);
      aset(A.lw, where[j] / NCL, j == 1 ? nan : -1.0f);
      EXPECT_ERR(GHM_ERR_INPUT, a_l(NA, NCL, layout),
                 "ghm_c_loss_grad_labels(anchor_weight %s at %zu)", j == 1 ? "NaN" : "-1",
                 where[j] / NCL);
      EXPECT_ERR(GHM_ERR_INPUT, a_lacc(NA, NCL, layout, 0, NA),
                 "ghm_c_accumulate_labels(anchor_weight bad at %zu)", where[j] / NCL);
      EXPECT_ERR(GHM_ERR_INPUT, a_lapp(NA, NCL, layout, 0, NA),
                 "ghm_c_apply_labels(anchor_weight bad at %zu)", where[j] / NCL);
    }
    arena_reset(K_L);
    {
      int32_t l[3] = {-5, NCL + 3, INT32_MIN};
      memcpy((unsigned char *)A.labels + MIS, l, sizeof l);
    }
    EXPECT_OK(a_l(NA, NCL, 0), "ghm_c_loss_grad_labels(labels -5, C+3, INT32_MIN)");
  }
  MIS = 0;
  check_group_done();
}

/* ------------------------------------------------------------------------------------------ */

static void test_err_alias(void) {
  float *big = (float *)(void *)A.big; /* 8-aligned scratch, 2*NE + 4*PAD... doubles */
  const size_t n = 64;
  check_group("GHM_ERR_ALIAS");
  for (MIS = 0; MIS <= 1; MIS++) {
    arena_reset(K_C);
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_loss_grad(&A.cc, NULL, AF(A.pred), AF(A.target), AF(A.lw), n,
                                              AF(A.pred), &A.loss, AF(A.le), &A.stats),
               "ghm_c_loss_grad(grad == pred)");
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_loss_grad(&A.cc, NULL, AF(A.pred), AF(A.target), AF(A.lw), n,
                                              AF(A.target) + n / 2, &A.loss, AF(A.le),
                                              &A.stats),
               "ghm_c_loss_grad(grad overlapping target partially)");
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_loss_grad(&A.cc, NULL, AF(A.pred), AF(A.target), AF(A.lw), n,
                                              AF(A.lw) - n / 2, &A.loss, AF(A.le), &A.stats),
               "ghm_c_loss_grad(grad overlapping label_weight partially)");
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_loss_grad(&A.cc, NULL, AF(A.pred), AF(A.target), AF(A.lw), n,
                                              AF(A.grad), &A.loss, AF(A.grad) + 3, &A.stats),
               "ghm_c_loss_grad(loss_elems overlapping grad)");
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_loss_grad(&A.cc, NULL, AF(A.pred), AF(A.target), AF(A.lw), n,
                                              AF(A.grad), &A.loss, AF(A.target), &A.stats),
               "ghm_c_loss_grad(loss_elems == target)");
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_loss_grad(&A.cc, NULL, AF(A.pred), AF(A.target), AF(A.lw), n,
                                              AF(A.grad), AF(A.grad) + 5, AF(A.le), &A.stats),
               "ghm_c_loss_grad(loss inside grad)");
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_loss_grad(&A.cc, NULL, AF(A.pred), AF(A.target), AF(A.lw), n,
                                              AF(A.grad), AF(A.pred) + n - 1, AF(A.le), &A.stats),
               "ghm_c_loss_grad(loss on the last pred)");
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_loss_grad(&A.cc, NULL, AF(A.pred), AF(A.target), AF(A.lw), n,
                                              (float *)(void *)&A.cc, &A.loss, AF(A.le),
                                              &A.stats),
               "ghm_c_loss_grad(grad over the config struct)");
    /* a stats struct over the prediction buffer (both in the 8-aligned scratch) */
    memcpy((unsigned char *)big + MIS, (unsigned char *)A.pred + MIS, n * sizeof(float));
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_loss_grad(&A.cc, NULL, AF(big), AF(A.target), AF(A.lw), n,
                                              AF(A.grad), &A.loss, AF(A.le),
                                              (ghm_stats *)(void *)(A.big + 4)),
               "ghm_c_loss_grad(stats overlapping pred)");
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_loss_grad(&A.cc, NULL, AF(A.pred), AF(A.target), AF(A.lw), n,
                                              AF(A.grad), &A.loss, AF(A.le),
                                              (ghm_stats *)(void *)(A.le + 2)),
               "ghm_c_loss_grad(stats overlapping loss_elems)");
    /* an initialised EMA inside the gradient buffer */
    A.cc.momentum = 0.5f;
    {
      ghm_ema *e = (ghm_ema *)(void *)(A.grad + 8);
      CHECK(ghm_ema_init(e, 10) == GHM_OK, "ghm_ema_init inside grad");
      EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_loss_grad(&A.cc, e, AF(A.pred), AF(A.target), AF(A.lw), n,
                                                AF(A.grad), &A.loss, AF(A.le), &A.stats),
                 "ghm_c_loss_grad(ema overlapping grad)");
      CHECK(ghm_ema_init((ghm_ema *)(void *)A.le, 10) == GHM_OK, "ghm_ema_init at loss_elems");
      EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_loss_grad(&A.cc, (ghm_ema *)(void *)A.le, AF(A.pred),
                                                AF(A.target), AF(A.lw), n, AF(A.grad), &A.loss,
                                                AF(A.le), &A.stats),
                 "ghm_c_loss_grad(ema == loss_elems)");
    }
    A.cc.momentum = 0.0f;
    /* adjacent, not overlapping: fine */
    {
      float *p = AF(big), *g = p + n;
      memcpy((unsigned char *)big + MIS, (unsigned char *)A.pred + MIS, n * sizeof(float));
      EXPECT_OK(ghm_c_loss_grad(&A.cc, NULL, p, AF(A.target), AF(A.lw), n, g, &A.loss, AF(A.le),
                                &A.stats),
                "ghm_c_loss_grad(grad right after pred)");
      EXPECT_OK(ghm_c_loss_grad(&A.cc, NULL, g, AF(A.target), AF(A.lw), n, p, &A.loss, AF(A.le),
                                &A.stats),
                "ghm_c_loss_grad(grad right before pred)");
    }
    arena_reset(K_C);
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_hist_merge(&A.hist, &A.hist), "ghm_hist_merge(h, h)");
    EXPECT_ERR(GHM_ERR_ALIAS,
               ghm_hist_merge(&A.hist, (const ghm_hist *)(const void *)((const char *)&A.hist + 8)),
               "ghm_hist_merge(h, h + 8 bytes)");
    memcpy((unsigned char *)big + MIS, (unsigned char *)A.pred + MIS, n * sizeof(float));
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_accumulate(&A.cc, AF(big), AF(A.target), AF(A.lw), n,
                                               (ghm_hist *)(void *)(A.big + 2)),
               "ghm_c_accumulate(hist overlapping pred)");
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_finalize(&A.cc, NULL, &A.hist,
                                             (ghm_weights *)(void *)((char *)&A.hist + 16)),
               "ghm_c_finalize(weights overlapping hist)");
    A.cc.momentum = 0.5f;
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_finalize(&A.cc, (ghm_ema *)(void *)&A.w, &A.hist, &A.w),
               "ghm_c_finalize(ema == weights)");
    A.cc.momentum = 0.0f;
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_apply(&A.cc, &A.w, AF(A.pred), AF(A.target), AF(A.lw), n,
                                          AF(A.pred), AF(A.le)),
               "ghm_c_apply(grad == pred)");
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_apply(&A.cc, &A.w, AF(A.pred), AF(A.target), AF(A.lw), n,
                                          AF(A.grad), AF(A.grad) + n - 1),
               "ghm_c_apply(loss_elems overlapping grad by one element)");
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_apply(&A.cc, &A.w, AF(A.pred), AF(A.target), AF(A.lw), n,
                                          (float *)(void *)&A.w, AF(A.le)),
               "ghm_c_apply(grad over the weights struct)");

    arena_reset(K_R);
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_r_loss_grad(&A.rc, NULL, AF(A.pred), AF(A.target), AF(A.lw), n,
                                              AF(A.target), &A.loss, AF(A.le), &A.stats),
               "ghm_r_loss_grad(grad == target)");
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_r_loss_grad(&A.rc, NULL, AF(A.pred), AF(A.target), AF(A.lw), n,
                                              AF(A.grad), AF(A.le) + 1, AF(A.le), &A.stats),
               "ghm_r_loss_grad(loss inside loss_elems)");
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_r_apply(&A.rc, &A.w, AF(A.pred), AF(A.target), AF(A.lw), n,
                                          AF(A.grad), AF(A.pred) + 1),
               "ghm_r_apply(loss_elems overlapping pred)");
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_r_accumulate(&A.rc, AF(A.pred), AF(A.target), AF(A.lw), NE,
                                               (ghm_hist *)(void *)(A.lw + NE - 2)),
               "ghm_r_accumulate(hist overlapping label_weight)");

    arena_reset(K_L);
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_loss_grad_labels(&A.cc, NULL, AF(A.pred), AI(A.labels),
                                                     AF(A.lw), 4, 4, 0, (float *)(void *)A.labels,
                                                     &A.loss, AF(A.le), &A.stats),
               "ghm_c_loss_grad_labels(grad over labels)");
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_loss_grad_labels(&A.cc, NULL, AF(A.pred), AI(A.labels),
                                                     AF(A.lw), NA, NCL, 1, AF(A.grad), &A.loss,
                                                     AF(A.lw) + NA - 1, &A.stats),
               "ghm_c_loss_grad_labels(loss_elems over the last anchor weight)");
    EXPECT_ERR(GHM_ERR_ALIAS, ghm_c_apply_labels(&A.cc, &A.w, AF(A.pred), AI(A.labels), AF(A.lw),
                                                 NA, NCL, 0, 10, 20, AF(A.pred) + NE - 1,
                                                 AF(A.le)),
               "ghm_c_apply_labels(grad overlapping pred, partial anchor range)");
  }
  MIS = 0;
  check_group_done();
}

/* ------------------------------------------------------------------------------------------ */

static void test_err_shape(void) {
  const size_t huge[] = {SIZE_MAX / sizeof(float) + 1, SIZE_MAX / 2, SIZE_MAX,
                         (size_t)PTRDIFF_MAX / sizeof(float) + 1};
  size_t i;
  check_group("GHM_ERR_SHAPE");
  for (MIS = 0; MIS <= 1; MIS++) {
    for (i = 0; i < sizeof huge / sizeof huge[0]; i++) {
      size_t n = huge[i];
      arena_reset(K_C);
      EXPECT_ERR(GHM_ERR_SHAPE, a_c(n), "ghm_c_loss_grad(n %zu)", n);
      EXPECT_ERR(GHM_ERR_SHAPE, a_cacc(n), "ghm_c_accumulate(n %zu)", n);
      EXPECT_ERR(GHM_ERR_SHAPE, a_capp(n), "ghm_c_apply(n %zu)", n);
      EXPECT_ERR(GHM_ERR_SHAPE,
                 ghm_c_loss_grad(&A.cc, NULL, AF(A.pred), AF(A.target), NULL, n, NULL, &A.loss,
                                 NULL, NULL),
                 "ghm_c_loss_grad(n %zu, no optional buffers)", n);
      arena_reset(K_R);
      EXPECT_ERR(GHM_ERR_SHAPE, a_r(n), "ghm_r_loss_grad(n %zu)", n);
      EXPECT_ERR(GHM_ERR_SHAPE, a_racc(n), "ghm_r_accumulate(n %zu)", n);
      EXPECT_ERR(GHM_ERR_SHAPE, a_rapp(n), "ghm_r_apply(n %zu)", n);
    }
    arena_reset(K_L);
    EXPECT_ERR(GHM_ERR_SHAPE, a_l(SIZE_MAX / 2, 3, 0), "labels(num_anchors SIZE_MAX/2, classes 3)");
    EXPECT_ERR(GHM_ERR_SHAPE, a_l(3, SIZE_MAX / 2, 1), "labels(num_anchors 3, classes SIZE_MAX/2)");
    EXPECT_ERR(GHM_ERR_SHAPE,
               a_l((size_t)1 << (sizeof(size_t) * 4), (size_t)1 << (sizeof(size_t) * 4), 0),
               "labels(num_anchors * num_classes == 2^%zu)", sizeof(size_t) * 8);
    EXPECT_ERR(GHM_ERR_SHAPE, a_l(SIZE_MAX / 8, 4, 0),
               "labels(num_anchors SIZE_MAX/8, classes 4: the byte size overflows)");
    EXPECT_ERR(GHM_ERR_SHAPE, a_lacc(SIZE_MAX / 2, 3, 0, 0, 1),
               "ghm_c_accumulate_labels(num_anchors * num_classes overflows)");
    EXPECT_ERR(GHM_ERR_SHAPE, a_lapp(SIZE_MAX / 2, 3, 1, 0, 1),
               "ghm_c_apply_labels(num_anchors * num_classes overflows)");
    EXPECT_ERR(GHM_ERR_SHAPE, a_lacc(NA, NCL, 0, 0, NA + 1),
               "ghm_c_accumulate_labels(anchor_end > num_anchors)");
    EXPECT_ERR(GHM_ERR_SHAPE, a_lacc(NA, NCL, 1, 10, 9),
               "ghm_c_accumulate_labels(anchor_begin > anchor_end)");
    EXPECT_ERR(GHM_ERR_SHAPE, a_lacc(NA, NCL, 1, NA + 1, NA + 1),
               "ghm_c_accumulate_labels(empty range past the end)");
    EXPECT_ERR(GHM_ERR_SHAPE, a_lacc(NA, NCL, 0, SIZE_MAX, 0),
               "ghm_c_accumulate_labels(anchor_begin SIZE_MAX)");
    EXPECT_ERR(GHM_ERR_SHAPE, a_lapp(NA, NCL, 0, 0, NA + 1),
               "ghm_c_apply_labels(anchor_end > num_anchors)");
    EXPECT_ERR(GHM_ERR_SHAPE, a_lapp(NA, NCL, 1, 5, 4),
               "ghm_c_apply_labels(anchor_begin > anchor_end)");
    /* a full and an empty range at the ends are fine */
    EXPECT_OK(a_lacc(NA, NCL, 0, NA, NA), "ghm_c_accumulate_labels(empty range at the end)");
    EXPECT_OK(a_lapp(NA, NCL, 1, 0, NA), "ghm_c_apply_labels(full range)");
  }
  MIS = 0;
  check_group_done();
}

/* ------------------------------------------------------------------------------------------ */

static void test_n_zero(void) {
  check_group("n == 0");
  for (MIS = 0; MIS <= 1; MIS++) {
    int m;
    for (m = 0; m <= 1; m++) { /* momentum 0, then 0.5 with a valid EMA */
      arena_reset(K_C);
      A.cc.momentum = A.rc.momentum = m ? 0.5f : 0.0f;
      EXPECT_EMPTY(a_c(0), 1, "ghm_c_loss_grad(n 0, momentum %d)", m);
      EXPECT_EMPTY(ghm_c_loss_grad(&A.cc, &A.ema, NULL, NULL, NULL, 0, NULL, &A.loss, NULL,
                                   &A.stats),
                   1, "ghm_c_loss_grad(n 0, data NULL, momentum %d)", m);
      EXPECT_EMPTY(ghm_c_loss_grad(&A.cc, &A.ema, AF(A.pred), AF(A.target), AF(A.lw), 0,
                                   AF(A.pred), &A.loss, AF(A.pred), &A.stats),
                   1, "ghm_c_loss_grad(n 0, grad == loss_elems == pred)");
      EXPECT_EMPTY(a_l(0, NCL, 0), 1, "ghm_c_loss_grad_labels(0 anchors, momentum %d)", m);
      EXPECT_EMPTY(a_l(NA, 0, 1), 1, "ghm_c_loss_grad_labels(0 classes, momentum %d)", m);
      EXPECT_EMPTY(ghm_c_loss_grad_labels(&A.cc, &A.ema, NULL, NULL, NULL, 0, 0, 0, NULL,
                                          &A.loss, NULL, &A.stats),
                   1, "ghm_c_loss_grad_labels(0 x 0, data NULL, momentum %d)", m);
      EXPECT_EMPTY(ghm_c_loss_grad_labels(&A.cc, &A.ema, NULL, NULL, NULL, 0, NCL, 1, NULL,
                                          &A.loss, NULL, &A.stats),
                   1, "ghm_c_loss_grad_labels(0 x C, data NULL, momentum %d)", m);
      EXPECT_EMPTY(a_cacc(0), 0, "ghm_c_accumulate(n 0)");
      EXPECT_EMPTY(ghm_c_accumulate(&A.cc, NULL, NULL, NULL, 0, &A.hist), 0,
                   "ghm_c_accumulate(n 0, data NULL)");
      EXPECT_EMPTY(a_capp(0), 0, "ghm_c_apply(n 0)");
      EXPECT_EMPTY(ghm_c_apply(&A.cc, &A.w, NULL, NULL, NULL, 0, NULL, NULL), 0,
                   "ghm_c_apply(n 0, data NULL)");
      EXPECT_EMPTY(a_lacc(NA, NCL, 0, 7, 7), 0, "ghm_c_accumulate_labels(empty range)");
      EXPECT_EMPTY(a_lapp(NA, NCL, 1, 7, 7), 0, "ghm_c_apply_labels(empty range)");
      arena_reset(K_R);
      A.cc.momentum = A.rc.momentum = m ? 0.5f : 0.0f;
      EXPECT_EMPTY(a_r(0), 1, "ghm_r_loss_grad(n 0, momentum %d)", m);
      EXPECT_EMPTY(ghm_r_loss_grad(&A.rc, &A.ema, NULL, NULL, NULL, 0, NULL, &A.loss, NULL,
                                   &A.stats),
                   1, "ghm_r_loss_grad(n 0, data NULL, momentum %d)", m);
      EXPECT_EMPTY(a_racc(0), 0, "ghm_r_accumulate(n 0)");
      EXPECT_EMPTY(ghm_r_apply(&A.rc, &A.w, NULL, NULL, NULL, 0, NULL, NULL), 0,
                   "ghm_r_apply(n 0, data NULL)");
    }
  }
  MIS = 0;
  check_group_done();
}

/* ------------------------------------------------------------------------------------------ */
/* skip_bad = 1: the bad elements are excluded like ignored ones (label weight 0), counted in
 * stats.skipped / hist.skipped, and get gradient 0 and loss element 0. */

static void skip_bad_case(enum kind kind, uint32_t layout, size_t off) {
  const float nan = f_nan(), inf = f_inf();
  const size_t na = 300, ncl = 3;
  inputs in = inputs_gen(kind, kind == K_L ? na : 1000, ncl);
  inputs ref = inputs_gen(kind, kind == K_L ? na : 1000, ncl);
  size_t n = in.n, i, nbad = 0, nlw = kind == K_L ? in.na : n;
  unsigned char *isbad = (unsigned char *)calloc(n, 1);
  float *g0 = fvec(n), *e0 = fvec(n), *g1, *e1, l0 = -1, l1 = -1;
  void *bp, *bt, *bw, *bg, *be;
  ghm_stats s0, s1;
  call k = call_init(kind);
  ghm_status st;
  const char *name;
  /* the same finite data in both; then bad values in `in`, weight 0 in `ref` */
  memcpy(ref.pred, in.pred, n * sizeof(float));
  memcpy(ref.lw, in.lw, nlw * sizeof(float));
  if (kind == K_L)
    memcpy(ref.labels, in.labels, in.na * sizeof(int32_t));
  else
    memcpy(ref.target, in.target, n * sizeof(float));
  if (kind == K_L) {
    /* elements with NaN / inf logits, and whole anchors with bad weights */
    size_t a;
    for (i = 5; i < n; i += 97) {
      size_t anchor = layout == GHM_LAYOUT_CLASS_MAJOR ? i % in.na : i / ncl;
      in.pred[i] = (i & 1) ? nan : inf;
      ref.lw[anchor] = 0.0f; /* the reference ignores the whole anchor ... */
    }
    for (a = 11; a < in.na; a += 41) {
      in.lw[a] = (a & 1) ? nan : -2.0f;
      ref.lw[a] = 0.0f;
    }
    /* ... so its other classes are excluded in `in` too: give them weight 0 there. */
    for (a = 0; a < in.na; a++)
      if (ref.lw[a] == 0.0f && in.lw[a] == in.lw[a] && in.lw[a] >= 0.0f) in.lw[a] = 0.0f;
    for (i = 0; i < n; i++) {
      size_t anchor = layout == GHM_LAYOUT_CLASS_MAJOR ? i % in.na : i / ncl;
      float lwv = in.lw[anchor];
      if (in.pred[i] != in.pred[i] || in.pred[i] == inf || lwv != lwv || lwv < 0) {
        isbad[i] = 1;
        nbad++;
      }
    }
  } else {
    for (i = 3; i < n; i += 37) {
      int which = (int)((i / 37) % 7);
      if (kind == K_C) {
        if (which == 0) in.pred[i] = nan;
        if (which == 1) in.pred[i] = -inf;
        if (which == 2) in.target[i] = 1.5f;
        if (which == 3) in.target[i] = -0.5f;
        if (which == 4) in.target[i] = nan;
        if (which == 5) in.lw[i] = nan;
        if (which == 6) in.lw[i] = -1.0f;
      } else {
        if (which == 0 || which == 2) in.pred[i] = nan;
        if (which == 1 || which == 3) in.target[i] = -inf;
        if (which == 4) in.target[i] = nan;
        if (which == 5) in.lw[i] = inf;
        if (which == 6) in.lw[i] = -1.0f;
      }
      ref.lw[i] = 0.0f;
      isbad[i] = 1;
      nbad++;
    }
  }
  k.layout = layout;
  call_bind(&k, &ref);
  memset(g0, 0xA5, n * sizeof(float));
  memset(e0, 0xA5, n * sizeof(float));
  st = call_run(&k, NULL, g0, &l0, e0, &s0);
  name = kind_name(&k);
  CHECK(st == GHM_OK, "%s reference: %s", name, sname(st));
  k.c.skip_bad = k.r.skip_bad = 1;
  call_bind(&k, &in);
  k.pred = (const float *)placed(in.pred, n * sizeof(float), off, &bp);
  if (kind == K_L)
    k.labels = (const int32_t *)placed(in.labels, in.na * sizeof(int32_t), off, &bt);
  else
    k.target = (const float *)placed(in.target, n * sizeof(float), off, &bt);
  k.lw = (const float *)placed(in.lw, nlw * sizeof(float), off, &bw);
  g1 = (float *)placed(NULL, n * sizeof(float), off, &bg);
  e1 = (float *)placed(NULL, n * sizeof(float), off, &be);
  st = call_run(&k, NULL, g1, &l1, e1, &s1);
  CHECK(st == GHM_OK, "%s(skip_bad 1, offset %zu): %s", name, off, sname(st));
  if (st == GHM_OK) {
    size_t wrong_g = 0, wrong_e = 0, first = 0;
    float gv, ev;
    for (i = 0; i < n; i++) {
      memcpy(&gv, (unsigned char *)bg + off + i * sizeof gv, sizeof gv);
      memcpy(&ev, (unsigned char *)be + off + i * sizeof ev, sizeof ev);
      if (isbad[i] ? gv != 0.0f : memcmp(&gv, &g0[i], sizeof gv) != 0) {
        if (!wrong_g++) first = i;
      }
      if (isbad[i] ? ev != 0.0f : memcmp(&ev, &e0[i], sizeof ev) != 0) wrong_e++;
    }
    CHECK(wrong_g == 0, "%s(skip_bad, offset %zu): %zu gradients differ from the masked "
          "reference (first at %zu%s)", name, off, wrong_g, first, isbad[first] ? ", bad" : "");
    CHECK(wrong_e == 0, "%s(skip_bad, offset %zu): %zu loss elements differ", name, off, wrong_e);
    CHECK(s1.skipped == nbad, "%s(skip_bad, offset %zu): stats.skipped %llu, want %zu", name,
          off, (unsigned long long)s1.skipped, nbad);
    s1.skipped = s0.skipped;
    CHECK(stats_diff(&s1, &s0) == NULL, "%s(skip_bad, offset %zu): stats.%s differs from the "
          "masked reference", name, off, stats_diff(&s1, &s0));
    CHECK(check_ulps(l1, l0) <= 1, "%s(skip_bad, offset %zu): loss %.9g, masked reference %.9g",
          name, off, (double)l1, (double)l0);
  }
  /* the phased API counts them in hist.skipped */
  if (kind != K_L) {
    ghm_hist h;
    ghm_hist_init(&h, 10);
    st = kind == K_C ? ghm_c_accumulate(&k.c, k.pred, k.target, k.lw, n, &h)
                     : ghm_r_accumulate(&k.r, k.pred, k.target, k.lw, n, &h);
    CHECK(st == GHM_OK && h.skipped == nbad, "%s accumulate(skip_bad, offset %zu): %s, "
          "hist.skipped %llu, want %zu", name, off, sname(st), (unsigned long long)h.skipped, nbad);
  } else {
    ghm_hist h;
    ghm_hist_init(&h, 10);
    st = ghm_c_accumulate_labels(&k.c, k.pred, k.labels, k.lw, k.na, k.nc, layout, 0, k.na, &h);
    CHECK(st == GHM_OK && h.skipped == nbad, "%s accumulate(skip_bad, offset %zu): %s, "
          "hist.skipped %llu, want %zu", name, off, sname(st), (unsigned long long)h.skipped, nbad);
  }
  free(bp);
  free(bt);
  free(bw);
  free(bg);
  free(be);
  free(g0);
  free(e0);
  free(isbad);
  inputs_free(&in);
  inputs_free(&ref);
}

static void test_skip_bad(void) {
  size_t off;
  check_group("skip_bad");
  for (off = 0; off <= 1; off++) {
    skip_bad_case(K_C, 0, off);
    skip_bad_case(K_R, 0, off);
    skip_bad_case(K_L, GHM_LAYOUT_ANCHOR_MAJOR, off);
    skip_bad_case(K_L, GHM_LAYOUT_CLASS_MAJOR, off);
  }
  check_group_done();
}

/* ========================================================================================== */
/* Group: optional outputs NULL, and label_weight NULL == all ones */

typedef struct outs {
  float *grad, *le, loss;
  ghm_stats st;
  ghm_ema ema;
  ghm_status status;
} outs;

/* Runs k at byte offset off for all of (grad, loss, le, stats) not masked out by `skip`
 * (bit 0 grad, 1 loss, 2 loss_elems, 3 stats), starting from EMA `ema0`. */
static void run_outs(const call *k0, size_t off, int skip, const ghm_ema *ema0, outs *o) {
  call k = *k0;
  size_t n = k.n, nlw = k.kind == K_L ? k.na : n;
  void *bp, *bt = NULL, *bw = NULL, *bg, *be;
  float *g, *e;
  k.pred = (const float *)placed(k0->pred, n * sizeof(float), off, &bp);
  if (k.kind == K_L)
    k.labels = (const int32_t *)placed(k0->labels, k.na * sizeof(int32_t), off, &bt);
  else
    k.target = (const float *)placed(k0->target, n * sizeof(float), off, &bt);
  if (k0->lw) k.lw = (const float *)placed(k0->lw, nlw * sizeof(float), off, &bw);
  g = (float *)placed(NULL, n * sizeof(float), off, &bg);
  e = (float *)placed(NULL, n * sizeof(float), off, &be);
  o->grad = fvec(n);
  o->le = fvec(n);
  memset(o->grad, 0x5A, n * sizeof(float));
  memset(o->le, 0x5A, n * sizeof(float));
  memset(&o->st, 0x5A, sizeof o->st);
  o->loss = -1.0f;
  o->ema = *ema0;
  o->status = call_run(&k, call_momentum(&k) > 0 ? &o->ema : NULL, (skip & 1) ? NULL : g,
                       (skip & 2) ? NULL : &o->loss, (skip & 4) ? NULL : e,
                       (skip & 8) ? NULL : &o->st);
  memcpy(o->grad, (unsigned char *)bg + off, n * sizeof(float));
  memcpy(o->le, (unsigned char *)be + off, n * sizeof(float));
  free(bp);
  free(bt);
  free(bw);
  free(bg);
  free(be);
}

static void outs_free(outs *o) {
  free(o->grad);
  free(o->le);
}

static void test_optional_outputs(void) {
  const enum kind kinds[] = {K_C, K_R, K_L, K_L};
  size_t ki, off;
  int mom, skip;
  check_group("optional outputs NULL");
  for (ki = 0; ki < 4; ki++) {
    for (mom = 0; mom <= 1; mom++) {
      for (off = 0; off <= 1; off++) {
        inputs in = inputs_gen(kinds[ki], kinds[ki] == K_L ? 333 : 1111, 3);
        call k = call_init(kinds[ki]);
        ghm_ema ema0;
        outs all;
        const char *name;
        call_bind(&k, &in);
        k.layout = ki == 3 ? GHM_LAYOUT_CLASS_MAJOR : GHM_LAYOUT_ANCHOR_MAJOR;
        call_set(&k, 12, mom ? 0.75f : 0.0f);
        k.c.reduction = GHM_REDUCTION_SUM;
        name = kind_name(&k);
        ghm_ema_init(&ema0, 12);
        if (mom) { /* some history */
          ghm_status st = call_run(&k, &ema0, NULL, NULL, NULL, NULL);
          CHECK(st == GHM_OK, "%s: EMA warm-up: %s", name, sname(st));
        }
        run_outs(&k, off, 0, &ema0, &all);
        CHECK(all.status == GHM_OK, "%s(all outputs, offset %zu): %s", name, off,
              sname(all.status));
        for (skip = 1; skip <= 8; skip <<= 1) {
          outs o;
          run_outs(&k, off, skip, &ema0, &o);
          CHECK(o.status == GHM_OK, "%s(output %d NULL, offset %zu): %s", name, skip, off,
                sname(o.status));
          if (!(skip & 1)) CHECK(first_diff(o.grad, all.grad, k.n) < 0,
                                 "%s(output %d NULL, momentum %d, offset %zu): grad differs at %ld",
                                 name, skip, mom, off, first_diff(o.grad, all.grad, k.n));
          if (!(skip & 2)) CHECK(same_bytes(&o.loss, &all.loss, sizeof o.loss),
                                 "%s(output %d NULL, momentum %d, offset %zu): loss %.9g vs %.9g",
                                 name, skip, mom, off, (double)o.loss, (double)all.loss);
          if (!(skip & 4)) CHECK(first_diff(o.le, all.le, k.n) < 0,
                                 "%s(output %d NULL, momentum %d, offset %zu): loss_elems differ",
                                 name, skip, mom, off);
          if (!(skip & 8)) CHECK(stats_diff(&o.st, &all.st) == NULL,
                                 "%s(output %d NULL, momentum %d, offset %zu): stats.%s differs",
                                 name, skip, mom, off, stats_diff(&o.st, &all.st));
          CHECK(same_bytes(&o.ema, &all.ema, sizeof o.ema),
                "%s(output %d NULL, momentum %d, offset %zu): EMA differs", name, skip, mom, off);
          outs_free(&o);
        }
        /* label_weight NULL == all ones */
        {
          size_t nlw = k.kind == K_L ? k.na : k.n, i;
          float *ones = fvec(nlw);
          outs a, b;
          for (i = 0; i < nlw; i++) ones[i] = 1.0f;
          k.lw = NULL;
          run_outs(&k, off, 0, &ema0, &a);
          k.lw = ones;
          run_outs(&k, off, 0, &ema0, &b);
          CHECK(a.status == GHM_OK && b.status == GHM_OK, "%s(label_weight NULL / ones): %s / %s",
                name, sname(a.status), sname(b.status));
          CHECK(first_diff(a.grad, b.grad, k.n) < 0 && first_diff(a.le, b.le, k.n) < 0 &&
                    same_bytes(&a.loss, &b.loss, sizeof a.loss) &&
                    stats_diff(&a.st, &b.st) == NULL && same_bytes(&a.ema, &b.ema, sizeof a.ema),
                "%s(momentum %d, offset %zu): label_weight NULL differs from all ones "
                "(loss %.9g vs %.9g)", name, mom, off, (double)a.loss, (double)b.loss);
          outs_free(&a);
          outs_free(&b);
          free(ones);
        }
        outs_free(&all);
        inputs_free(&in);
      }
    }
  }
  check_group_done();
}

/* ========================================================================================== */
/* Group: unaligned buffers and tails. Every n in 0..=70 and byte offsets 1, 2, 3 for every
 * buffer together and each alone (and for the EMA and stats structs): the same results as
 * with aligned buffers (gradients, loss elements, stats and EMA bitwise; loss within 1 ulp). */

enum { P_ALL, P_PRED, P_TARGET, P_LW, P_GRAD, P_LE, P_EMA, P_STATS, P_CFG, P_COUNT };
static const char *const P_NAME[] = {"all buffers", "pred", "target/labels", "label_weight",
                                     "grad", "loss_elems", "ema", "stats", "cfg"};

typedef struct res {
  float *grad, *le, loss;
  ghm_stats st;
  ghm_ema ema;
  ghm_status status;
} res;

/* One call with the buffers of `what` at byte offset `off` (0: all aligned). `grad0` is the
 * initial gradient (read when accumulating). */
static void run_placed(const call *k0, const ghm_ema *ema0, const float *grad0, int what,
                       size_t off, res *r) {
  call k = *k0;
  size_t n = k.n, nlw = k.kind == K_L ? k.na : n;
  size_t o_pred = (what == P_ALL || what == P_PRED) ? off : 0;
  size_t o_tgt = (what == P_ALL || what == P_TARGET) ? off : 0;
  size_t o_lw = (what == P_ALL || what == P_LW) ? off : 0;
  size_t o_g = (what == P_ALL || what == P_GRAD) ? off : 0;
  size_t o_le = (what == P_ALL || what == P_LE) ? off : 0;
  size_t o_ema = (what == P_ALL || what == P_EMA) ? off : 0;
  size_t o_st = (what == P_ALL || what == P_STATS) ? off : 0;
  size_t o_cfg = (what == P_ALL || what == P_CFG) ? off : 0;
  void *bp, *bt, *bw, *bg, *be, *bema, *bst, *bcc, *brc;
  float *g, *e;
  ghm_ema *ema;
  ghm_stats *st, sentinel;
  float loss = -1.0f;
  memset(&sentinel, 0x5A, sizeof sentinel);
  k.pred = (const float *)placed(k0->pred, n * sizeof(float), o_pred, &bp);
  if (k.kind == K_L)
    k.labels = (const int32_t *)placed(k0->labels, k.na * sizeof(int32_t), o_tgt, &bt);
  else
    k.target = (const float *)placed(k0->target, n * sizeof(float), o_tgt, &bt);
  k.lw = (const float *)placed(k0->lw, nlw * sizeof(float), o_lw, &bw);
  g = (float *)placed(grad0, n * sizeof(float), o_g, &bg);
  e = (float *)placed(NULL, n * sizeof(float), o_le, &be);
  ema = (ghm_ema *)placed(ema0, sizeof *ema0, o_ema, &bema);
  st = (ghm_stats *)placed(&sentinel, sizeof sentinel, o_st, &bst);
  k.cp = (const ghm_c_config *)placed(&k0->c, sizeof k0->c, o_cfg, &bcc);
  k.rp = (const ghm_r_config *)placed(&k0->r, sizeof k0->r, o_cfg, &brc);
  r->status = call_run(&k, call_momentum(&k) > 0 ? ema : NULL, g, &loss, e, st);
  r->grad = fvec(n);
  r->le = fvec(n);
  /* read back through the blocks: never through a misaligned typed pointer */
  memcpy(r->grad, (unsigned char *)bg + o_g, n * sizeof(float));
  memcpy(r->le, (unsigned char *)be + o_le, n * sizeof(float));
  memcpy(&r->ema, (unsigned char *)bema + o_ema, sizeof r->ema);
  memcpy(&r->st, (unsigned char *)bst + o_st, sizeof r->st);
  r->loss = loss;
  free(bp);
  free(bt);
  free(bw);
  free(bg);
  free(be);
  free(bema);
  free(bst);
  free(bcc);
  free(brc);
}

static void res_free(res *r) {
  free(r->grad);
  free(r->le);
}

static void test_unaligned(void) {
  /* kinds: 0 C, 1 C momentum + accumulate (Darknet delta), 2 R, 3 R momentum, 4 labels AM,
   * 5 labels CM, 6 C probabilities */
  const int nk = 7;
  int ki, what;
  size_t n, off, calls = 0;
  check_group("unaligned buffers, tails");
  for (ki = 0; ki < nk; ki++) {
    for (n = 0; n <= 70; n++) {
      enum kind kind = ki <= 1 || ki == 6 ? K_C : ki <= 3 ? K_R : K_L;
      size_t ncl = 1 + n % 4;
      inputs in = inputs_gen(kind, n, ncl);
      call k = call_init(kind);
      ghm_ema ema0;
      float *grad0 = fvec(in.n);
      res ref;
      size_t i;
      call_bind(&k, &in);
      k.layout = ki == 5 ? GHM_LAYOUT_CLASS_MAJOR : GHM_LAYOUT_ANCHOR_MAJOR;
      call_set(&k, 1 + (unsigned)n % 20, (ki == 1 || ki == 3) ? 0.75f : 0.0f);
      if (ki == 1) {
        k.c.accumulate = 1;
        k.c.grad_scale = -1.0f;
      }
      if (ki == 6) {
        k.c.input = GHM_INPUT_PROBS;
        for (i = 0; i < in.n; i++) in.pred[i] = rnd() % 9 == 0 ? (float)(rnd() & 1) : rndf(0, 1);
      }
      for (i = 0; i < in.n; i++) grad0[i] = rndf(-1.0f, 1.0f);
      ghm_ema_init(&ema0, k.c.bins);
      for (i = 0; i < k.c.bins; i++) ema0.acc_sum[i] = (float)(rnd() % 50);
      run_placed(&k, &ema0, grad0, P_ALL, 0, &ref);
      CHECK(ref.status == GHM_OK, "%s n %zu aligned: %s", kind_name(&k), n, sname(ref.status));
      for (off = 1; off <= 3; off++) {
        for (what = 0; what < P_COUNT; what++) {
          res r;
          long d;
          run_placed(&k, &ema0, grad0, what, off, &r);
          calls++;
          CHECK(r.status == ref.status, "%s n %zu, %s at offset %zu: %s, aligned %s",
                kind_name(&k), n, P_NAME[what], off, sname(r.status), sname(ref.status));
          d = first_diff(r.grad, ref.grad, in.n);
          CHECK(d < 0, "%s n %zu, %s at offset %zu: grad[%ld] %.9g, aligned %.9g", kind_name(&k),
                n, P_NAME[what], off, d, d < 0 ? 0.0 : (double)r.grad[d],
                d < 0 ? 0.0 : (double)ref.grad[d]);
          d = first_diff(r.le, ref.le, in.n);
          CHECK(d < 0, "%s n %zu, %s at offset %zu: loss_elems[%ld] %.9g, aligned %.9g",
                kind_name(&k), n, P_NAME[what], off, d, d < 0 ? 0.0 : (double)r.le[d],
                d < 0 ? 0.0 : (double)ref.le[d]);
          CHECK(check_ulps(r.loss, ref.loss) <= 1, "%s n %zu, %s at offset %zu: loss %.9g, "
                "aligned %.9g", kind_name(&k), n, P_NAME[what], off, (double)r.loss,
                (double)ref.loss);
          if (n == 0 || (kind == K_L && in.n == 0))
            CHECK(same_bytes(&r.st, &ref.st, sizeof r.st), "%s n 0, %s at offset %zu: stats "
                  "written", kind_name(&k), P_NAME[what], off);
          else
            CHECK(stats_diff(&r.st, &ref.st) == NULL, "%s n %zu, %s at offset %zu: stats.%s "
                  "differs", kind_name(&k), n, P_NAME[what], off, stats_diff(&r.st, &ref.st));
          CHECK(same_bytes(&r.ema, &ref.ema, sizeof r.ema), "%s n %zu, %s at offset %zu: EMA "
                "differs", kind_name(&k), n, P_NAME[what], off);
          res_free(&r);
        }
      }
      res_free(&ref);
      free(grad0);
      inputs_free(&in);
    }
  }
  check_group_end("%zu misaligned calls", calls);
}

/* ========================================================================================== */
/* Group: huge but finite loss_weight / grad_scale, whose product with the harmonizing weight
 * overflows f32: the library refuses it with GHM_ERR_CONFIG (and writes nothing), the same
 * whatever the buffers' alignment, and finalize refuses it like the one call. */

static void test_huge_scales(void) {
  static const struct {
    enum kind kind;
    float lw, gs;
    uint32_t red;
    int must_overflow; /* 0: the product may or may not overflow for this batch */
    const char *what;
  } cs[] = {
      {K_C, FLT_MAX, 1.0f, GHM_REDUCTION_SUM, 1, "loss_weight FLT_MAX, SUM"},
      {K_C, 1.0f, FLT_MAX, GHM_REDUCTION_SUM, 1, "grad_scale FLT_MAX, SUM"},
      {K_C, 1e20f, -1e20f, GHM_REDUCTION_MEAN, 0, "loss_weight 1e20, grad_scale -1e20, MEAN"},
      {K_R, 1e30f, 1e30f, GHM_REDUCTION_MEAN, 1, "loss_weight 1e30, grad_scale 1e30, MEAN"},
  };
  size_t i;
  check_group("huge finite scales");
  for (i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    inputs in = inputs_gen(cs[i].kind, 300, 1);
    call k = call_init(cs[i].kind);
    ghm_ema ema0;
    res al, mis;
    long d;
    ghm_hist h;
    ghm_weights w;
    ghm_status s_acc, s_fin, s_app;
    float *g = fvec(in.n);
    const char *name;
    call_bind(&k, &in);
    k.c.loss_weight = k.r.loss_weight = cs[i].lw;
    k.c.grad_scale = k.r.grad_scale = cs[i].gs;
    k.c.reduction = k.r.reduction = cs[i].red;
    name = kind_name(&k);
    ghm_ema_init(&ema0, 10);
    run_placed(&k, &ema0, NULL, P_ALL, 0, &al);
    run_placed(&k, &ema0, NULL, P_ALL, 1, &mis);
    CHECK(al.status == mis.status, "%s(%s): aligned buffers give %s, misaligned ones %s", name,
          cs[i].what, sname(al.status), sname(mis.status));
    if (al.status == GHM_OK && mis.status == GHM_OK) {
      d = first_diff(mis.grad, al.grad, in.n);
      CHECK(d < 0, "%s(%s): misaligned grad[%ld] differs", name, cs[i].what, d);
    }
    CHECK(al.status == GHM_ERR_CONFIG || (cs[i].must_overflow == 0 && al.status == GHM_OK),
          "%s(%s): gives %s; an overflowing gradient factor must give GHM_ERR_CONFIG", name,
          cs[i].what, sname(al.status));
    ghm_hist_init(&h, 10);
    s_app = GHM_OK;
    if (k.kind == K_C) {
      s_acc = ghm_c_accumulate(&k.c, k.pred, k.target, k.lw, k.n, &h);
      s_fin = ghm_c_finalize(&k.c, NULL, &h, &w);
      if (s_fin == GHM_OK) s_app = ghm_c_apply(&k.c, &w, k.pred, k.target, k.lw, k.n, g, NULL);
    } else {
      s_acc = ghm_r_accumulate(&k.r, k.pred, k.target, k.lw, k.n, &h);
      s_fin = ghm_r_finalize(&k.r, NULL, &h, &w);
      if (s_fin == GHM_OK) s_app = ghm_r_apply(&k.r, &w, k.pred, k.target, k.lw, k.n, g, NULL);
    }
    CHECK(s_acc == GHM_OK && s_fin == al.status && s_app == GHM_OK,
          "%s(%s): one call %s, but phased accumulate %s, finalize %s, apply %s", name,
          cs[i].what, sname(al.status), sname(s_acc), sname(s_fin), sname(s_app));
    res_free(&al);
    res_free(&mis);
    free(g);
    inputs_free(&in);
  }
  check_group_done();
}

/* ========================================================================================== */
/* Group: Darknet's delta: grad_scale -1 with accumulate 1 adds exactly -grad. */

static void test_darknet(void) {
  int ki;
  size_t off;
  check_group("darknet delta");
  for (ki = 0; ki < 5; ki++) {
    for (off = 0; off <= 1; off++) {
      enum kind kind = ki == 0 || ki == 4 ? K_C : ki == 1 ? K_R : K_L;
      inputs in = inputs_gen(kind, kind == K_L ? 345 : 1000, 3);
      call k = call_init(kind);
      ghm_ema ema0;
      float *delta = fvec(in.n), *want = fvec(in.n);
      res g, d;
      size_t i, wrong = 0, first = 0;
      call_bind(&k, &in);
      k.layout = ki == 3 ? GHM_LAYOUT_CLASS_MAJOR : GHM_LAYOUT_ANCHOR_MAJOR;
      call_set(&k, 10, 0.0f);
      if (ki == 4) {
        k.c.loss_weight = 0.37f;
        k.c.reduction = GHM_REDUCTION_NONE;
      }
      ghm_ema_init(&ema0, 10);
      for (i = 0; i < in.n; i++) delta[i] = rndf(-2.0f, 2.0f);
      run_placed(&k, &ema0, NULL, P_ALL, off, &g); /* grad_scale 1, accumulate 0 */
      k.c.grad_scale = k.r.grad_scale = -1.0f;
      k.c.accumulate = k.r.accumulate = 1;
      run_placed(&k, &ema0, delta, P_ALL, off, &d);
      CHECK(g.status == GHM_OK && d.status == GHM_OK, "%s: %s / %s", kind_name(&k),
            sname(g.status), sname(d.status));
      for (i = 0; i < in.n; i++) {
        want[i] = delta[i] - g.grad[i];
        if (!(d.grad[i] == want[i])) {
          if (!wrong++) first = i;
        }
      }
      CHECK(wrong == 0, "%s (offset %zu): %zu of %zu deltas != delta - grad (first at %zu: %.9g, "
            "want %.9g - %.9g)", kind_name(&k), off, wrong, in.n, first,
            (double)d.grad[first], (double)delta[first], (double)g.grad[first]);
      CHECK(same_bytes(&d.loss, &g.loss, sizeof d.loss), "%s (offset %zu): loss %.9g vs %.9g",
            kind_name(&k), off, (double)d.loss, (double)g.loss);
      CHECK(first_diff(d.le, g.le, in.n) < 0, "%s (offset %zu): loss_elems depend on grad_scale",
            kind_name(&k), off);
      res_free(&g);
      res_free(&d);
      free(delta);
      free(want);
      inputs_free(&in);
    }
  }
  check_group_done();
}

/* ========================================================================================== */
/* Group: the phased API over chunks == the one call */

static void shuffle(size_t *v, size_t n) {
  size_t i;
  for (i = n; i > 1; i--) {
    size_t j = rndn(i), t = v[i - 1];
    v[i - 1] = v[j];
    v[j] = t;
  }
}

#define MAXCH 12

/* kind: 0 C, 1 R, 2 labels AM, 3 labels CM, 4 C probabilities + skip_bad; off: byte offset
 * of every buffer and of the config, merged histogram, EMA and weights structs. Three batches
 * in a row with an EMA (momentum 0.75). */
static void phased_case(int kind, size_t off) {
  const unsigned bins = 20;
  enum kind kk = kind == 1 ? K_R : (kind == 2 || kind == 3) ? K_L : K_C;
  ghm_ema ema1, ema2;
  int batch;
  call k = call_init(kk);
  ghm_ema_init(&ema1, bins);
  ghm_ema_init(&ema2, bins);
  for (batch = 0; batch < 3; batch++) {
    size_t units = kk == K_L ? 600 + rndn(400) : 2000 + rndn(3000), ncl = 5;
    inputs in = inputs_gen(kk, units, ncl);
    size_t n = in.n, nlw = kk == K_L ? in.na : n, i;
    size_t cuts[MAXCH + 1], order[MAXCH], nch = 2 + rndn(MAXCH - 1);
    ghm_hist hists[MAXCH], *total;
    ghm_weights w, *pwts;
    ghm_ema *pema;
    const ghm_c_config *cc;
    const ghm_r_config *rc;
    res one;
    void *bp, *bt, *bw, *bg, *be, *bh, *bwt, *bem, *bcc, *brc;
    const float *pp, *pt = NULL, *pw;
    const int32_t *pl = NULL;
    float *pg, *pe, *g2 = fvec(n), *e2 = fvec(n);
    ghm_status st;
    long d;
    call_bind(&k, &in);
    k.layout = kind == 3 ? GHM_LAYOUT_CLASS_MAJOR : GHM_LAYOUT_ANCHOR_MAJOR;
    call_set(&k, bins, 0.75f);
    if (kind == 4) {
      k.c.input = GHM_INPUT_PROBS;
      k.c.skip_bad = 1;
      k.c.reduction = GHM_REDUCTION_SUM;
      for (i = 0; i < n; i++) in.pred[i] = i % 101 == 7 ? f_nan() : rndf(0.0f, 1.0f);
    }
    /* one call (its own EMA) */
    run_placed(&k, &ema1, NULL, P_ALL, off, &one);
    CHECK(one.status == GHM_OK, "%s one call: %s", kind_name(&k), sname(one.status));
    ema1 = one.ema;
    /* chunks of random sizes (some empty), over anchors for labels */
    cuts[0] = 0;
    cuts[nch] = units;
    for (i = 1; i < nch; i++) cuts[i] = rndn(units + 1);
    for (i = 1; i < nch; i++) { /* insertion sort of the inner cuts */
      size_t j = i, v = cuts[i];
      while (j > 1 && cuts[j - 1] > v) {
        cuts[j] = cuts[j - 1];
        j--;
      }
      cuts[j] = v;
    }
    pp = (const float *)placed(in.pred, n * sizeof(float), off, &bp);
    if (kk == K_L)
      pl = (const int32_t *)placed(in.labels, in.na * sizeof(int32_t), off, &bt);
    else
      pt = (const float *)placed(in.target, n * sizeof(float), off, &bt);
    pw = (const float *)placed(in.lw, nlw * sizeof(float), off, &bw);
    pg = (float *)placed(NULL, n * sizeof(float), off, &bg);
    pe = (float *)placed(NULL, n * sizeof(float), off, &be);
    /* the structs at the same offset as the data (configs, histogram, EMA, weights) */
    cc = (const ghm_c_config *)placed(&k.c, sizeof k.c, off, &bcc);
    rc = (const ghm_r_config *)placed(&k.r, sizeof k.r, off, &brc);
    total = (ghm_hist *)placed(NULL, sizeof(ghm_hist), off, &bh);
    pema = (ghm_ema *)placed(&ema2, sizeof ema2, off, &bem);
    pwts = (ghm_weights *)placed(NULL, sizeof(ghm_weights), off, &bwt);
    /* accumulate each chunk, in a shuffled order, into its own histogram */
    for (i = 0; i < nch; i++) order[i] = i;
    shuffle(order, nch);
    st = GHM_OK;
    for (i = 0; i < nch; i++) {
      size_t c = order[i], b = cuts[c], e = cuts[c + 1];
      st |= ghm_hist_init(&hists[c], bins);
      if (kk == K_C)
        st |= ghm_c_accumulate(cc, pp + b, pt + b, pw + b, e - b, &hists[c]);
      else if (kk == K_R)
        st |= ghm_r_accumulate(rc, pp + b, pt + b, pw + b, e - b, &hists[c]);
      else
        st |= ghm_c_accumulate_labels(cc, pp, pl, pw, in.na, ncl, k.layout, b, e, &hists[c]);
    }
    CHECK(st == GHM_OK, "%s: accumulate failed", kind_name(&k));
    /* merge in another order, finalize once */
    shuffle(order, nch);
    st = ghm_hist_init(total, bins);
    for (i = 0; i < nch; i++) st |= ghm_hist_merge(total, &hists[order[i]]);
    CHECK(st == GHM_OK, "%s: merge failed", kind_name(&k));
    st = kk == K_R ? ghm_r_finalize(rc, pema, total, pwts) : ghm_c_finalize(cc, pema, total, pwts);
    CHECK(st == GHM_OK, "%s: finalize: %s", kind_name(&k), sname(st));
    memcpy(&w, (unsigned char *)bwt + off, sizeof w);
    memcpy(&ema2, (unsigned char *)bem + off, sizeof ema2);
    /* apply each chunk, shuffled */
    shuffle(order, nch);
    st = GHM_OK;
    for (i = 0; i < nch; i++) {
      size_t c = order[i], b = cuts[c], e = cuts[c + 1];
      if (kk == K_C)
        st |= ghm_c_apply(cc, pwts, pp + b, pt + b, pw + b, e - b, pg + b, pe + b);
      else if (kk == K_R)
        st |= ghm_r_apply(rc, pwts, pp + b, pt + b, pw + b, e - b, pg + b, pe + b);
      else
        st |= ghm_c_apply_labels(cc, pwts, pp, pl, pw, in.na, ncl, k.layout, b, e, pg, pe);
    }
    CHECK(st == GHM_OK, "%s: apply failed", kind_name(&k));
    memcpy(g2, (unsigned char *)bg + off, n * sizeof(float));
    memcpy(e2, (unsigned char *)be + off, n * sizeof(float));
    d = first_diff(g2, one.grad, n);
    CHECK(d < 0, "%s batch %d (%zu chunks, offset %zu): grad[%ld] %.9g, one call %.9g",
          kind_name(&k), batch, nch, off, d, d < 0 ? 0.0 : (double)g2[d],
          d < 0 ? 0.0 : (double)one.grad[d]);
    d = first_diff(e2, one.le, n);
    CHECK(d < 0, "%s batch %d (%zu chunks, offset %zu): loss_elems[%ld] differ", kind_name(&k),
          batch, nch, off, d);
    CHECK(check_ulps((float)w.loss, one.loss) <= 1, "%s batch %d (%zu chunks, offset %zu): "
          "weights.loss %.9g, one call %.9g", kind_name(&k), batch, nch, off, w.loss,
          (double)one.loss);
    CHECK(same_bytes(&ema1, &ema2, sizeof ema1), "%s batch %d: EMA differs", kind_name(&k),
          batch);
    CHECK(w.bins == bins && w.nonempty_bins == one.st.nonempty_bins && w.tot == one.st.tot,
          "%s batch %d: weights bins %u nonempty %u tot %g, stats %u %g", kind_name(&k), batch,
          (unsigned)w.bins, (unsigned)w.nonempty_bins, w.tot, (unsigned)one.st.nonempty_bins,
          one.st.tot);
    {
      ghm_hist t;
      memcpy(&t, (unsigned char *)bh + off, sizeof t);
      CHECK(memcmp(t.counts, one.st.counts, bins * sizeof t.counts[0]) == 0 &&
                memcmp(w.weight, one.st.weights, bins * sizeof w.weight[0]) == 0 &&
                t.skipped == one.st.skipped,
            "%s batch %d: merged counts / weights / skipped differ from the one call's stats",
            kind_name(&k), batch);
    }
    free(bh);
    free(bwt);
    free(bem);
    free(bcc);
    free(brc);
    free(bp);
    free(bt);
    free(bw);
    free(bg);
    free(be);
    free(g2);
    free(e2);
    res_free(&one);
    inputs_free(&in);
  }
}

static void test_phased(void) {
  int kind;
  size_t off;
  check_group("phased == one call");
  for (kind = 0; kind < 5; kind++)
    for (off = 0; off <= 1; off++) phased_case(kind, off);
  check_group_end("5 kinds x aligned/misaligned x 3 batches");
}

/* ========================================================================================== */


/* ------------------------------------------------------------------------------------------ */
/* Blocked views: Darknet's [batch][anchor][4 + 1 + C][h * w] layout, in place */

#define BV_B 2
#define BV_NA 3
#define BV_HW 13
#define BV_C 5
#define BV_CH (4 + 1 + BV_C)
#define BV_N (BV_B * BV_NA * BV_CH * BV_HW)
#define BV_BLOCKS (BV_B * BV_NA)

/* Blocks of BV_HW at channel `ch` of each (image, anchor); targets packed [blocks][HW]. */
static ghm_blocks bv_blocks(size_t ch) {
  ghm_blocks b;
  memset(&b, 0, sizeof b);
  b.count = BV_BLOCKS;
  b.len = BV_HW;
  b.pred.offset = ch * BV_HW;
  b.pred.stride = BV_CH * BV_HW;
  b.grad = b.pred;
  b.loss_elems = b.pred;
  b.target.stride = BV_HW;
  b.weight.stride = BV_HW;
  return b;
}

/* Packs the blocks of `buf` seen through `v` (len `len` each) into `out`. */
static void bv_pack(const float *buf, ghm_view v, size_t len, float *out) {
  size_t b;
  for (b = 0; b < BV_BLOCKS; b++) memcpy(out + b * len, buf + v.offset + b * v.stride, len * 4);
}

/* Whether every element of `buf` outside the blocks of `v` (len `len`) is `fill`. */
static int bv_untouched(const float *buf, ghm_view v, size_t len, float fill) {
  size_t i;
  for (i = 0; i < BV_N; i++) {
    size_t rel = i >= v.offset ? i - v.offset : (size_t)-1;
    int inside = rel != (size_t)-1 && rel / v.stride < BV_BLOCKS && rel % v.stride < len;
    if (!inside && memcmp(&buf[i], &fill, 4) != 0) return 0;
  }
  return 1;
}

static void test_blocks(void) {
  static float out[BV_N], delta[BV_N], before[BV_N], le[BV_N];
  static float obj_t[BV_BLOCKS * BV_HW], obj_w[BV_BLOCKS * BV_HW], cls_w[BV_BLOCKS * BV_HW];
  static int32_t labels[BV_BLOCKS * BV_HW];
  static float px[BV_BLOCKS * BV_HW * BV_C], pt[BV_BLOCKS * BV_HW * BV_C],
      pw[BV_BLOCKS * BV_HW * BV_C], pg[BV_BLOCKS * BV_HW * BV_C], got[BV_BLOCKS * BV_HW * BV_C],
      pl[BV_BLOCKS * BV_HW * BV_C], gotl[BV_BLOCKS * BV_HW * BV_C];
  const float fill = 7.0f;
  size_t i, b, a, k;
  float loss_v, loss_c;
  ghm_stats sv, sc;
  ghm_ema ev, ec;
  ghm_c_config cfg = ghm_c_config_default();
  ghm_blocks ob = bv_blocks(4), cb = bv_blocks(5), bad;
  ghm_status s;
  cfg.bins = 30;
  cfg.momentum = 0.75f;
  cfg.input = GHM_INPUT_PROBS;
  cfg.grad_scale = -1.0f;
  cfg.reduction = GHM_REDUCTION_SUM;
  cfg.normalize = GHM_NORMALIZE_GRAD_MASS;
  cfg.ema_start = GHM_EMA_START_FIRST_COUNT;
  check_group("blocked views (Darknet layout)");
  cb.len = BV_HW; /* anchors per block; the block's predictions are BV_C planes */
  for (i = 0; i < BV_N; i++) out[i] = rndf(0.0f, 1.0f);
  for (i = 0; i < BV_BLOCKS * BV_HW; i++) {
    obj_t[i] = rndn(6) == 0 ? 1.0f : 0.0f;
    obj_w[i] = rndn(10) == 0 ? 0.0f : 1.0f;
    labels[i] = obj_t[i] > 0.0f ? (int32_t)rndn(BV_C) : -1;
    cls_w[i] = obj_t[i];
  }

  /* Objectness in place against the packed contiguous call. */
  for (i = 0; i < BV_N; i++) delta[i] = le[i] = fill;
  CHECK(ghm_ema_init(&ev, 30) == GHM_OK && ghm_ema_init(&ec, 30) == GHM_OK, "ema");
  s = ghm_c_loss_grad_blocks(&cfg, &ev, &ob, out, obj_t, obj_w, delta, &loss_v, le, &sv);
  CHECK(s == GHM_OK, "objectness blocks: %s", sname(s));
  bv_pack(out, ob.pred, BV_HW, px);
  s = ghm_c_loss_grad(&cfg, &ec, px, obj_t, obj_w, BV_BLOCKS * BV_HW, pg, &loss_c, pl, &sc);
  CHECK(s == GHM_OK, "objectness packed: %s", sname(s));
  bv_pack(delta, ob.grad, BV_HW, got);
  bv_pack(le, ob.loss_elems, BV_HW, gotl);
  CHECK(first_diff(got, pg, BV_BLOCKS * BV_HW) < 0, "objectness grad through views != packed");
  CHECK(first_diff(gotl, pl, BV_BLOCKS * BV_HW) < 0, "objectness loss_elems != packed");
  CHECK(stats_diff(&sv, &sc) == NULL, "objectness stats: %s", stats_diff(&sv, &sc));
  CHECK(same_bytes(&ev, &ec, sizeof ev), "objectness EMA");
  CHECK(fabsf(loss_v - loss_c) <= 1e-6f * fabsf(loss_c), "loss %g vs %g", loss_v, loss_c);
  CHECK(bv_untouched(delta, ob.grad, BV_HW, fill), "delta written outside the objectness view");

  /* Classes into the same delta (interleaved views of one buffer), class-major blocks,
   * against dense one-hot targets of the packed blocks. */
  s = ghm_c_loss_grad_labels_blocks(&cfg, &ev, &cb, out, labels, cls_w, BV_C,
                                    GHM_LAYOUT_CLASS_MAJOR, delta, &loss_v, NULL, &sv);
  CHECK(s == GHM_OK, "class blocks: %s", sname(s));
  for (b = 0; b < BV_BLOCKS; b++)
    for (k = 0; k < BV_C; k++)
      for (a = 0; a < BV_HW; a++) {
        size_t j = (b * BV_C + k) * BV_HW + a;
        px[j] = out[cb.pred.offset + b * cb.pred.stride + k * BV_HW + a];
        pt[j] = labels[b * BV_HW + a] == (int32_t)k ? 1.0f : 0.0f;
        pw[j] = cls_w[b * BV_HW + a];
      }
  CHECK(ghm_ema_init(&ec, 30) == GHM_OK && ghm_ema_init(&ev, 30) == GHM_OK, "ema");
  s = ghm_c_loss_grad_labels_blocks(&cfg, &ev, &cb, out, labels, cls_w, BV_C,
                                    GHM_LAYOUT_CLASS_MAJOR, delta, &loss_v, NULL, &sv);
  CHECK(s == GHM_OK, "class blocks: %s", sname(s));
  s = ghm_c_loss_grad(&cfg, &ec, px, pt, pw, BV_BLOCKS * BV_HW * BV_C, pg, &loss_c, NULL, &sc);
  CHECK(s == GHM_OK, "classes packed: %s", sname(s));
  bv_pack(delta, cb.grad, BV_HW * BV_C, got);
  CHECK(first_diff(got, pg, BV_BLOCKS * BV_HW * BV_C) < 0, "class grad through views != dense");
  CHECK(stats_diff(&sv, &sc) == NULL, "class stats: %s", stats_diff(&sv, &sc));

  /* The same call with every buffer one byte off alignment: bit-identical. */
  {
    void *blk[4];
    float *uo = (float *)placed(out, sizeof out, 1, &blk[0]);
    float *ud = (float *)placed(delta, sizeof delta, 3, &blk[1]);
    int32_t *ul = (int32_t *)placed(labels, sizeof labels, 2, &blk[2]);
    float *uw = (float *)placed(cls_w, sizeof cls_w, 1, &blk[3]);
    float ref[BV_N], mis[BV_N];
    ghm_stats su;
    CHECK(ghm_ema_init(&ev, 30) == GHM_OK, "ema");
    s = ghm_c_loss_grad_labels_blocks(&cfg, &ev, &cb, out, labels, cls_w, BV_C,
                                      GHM_LAYOUT_CLASS_MAJOR, delta, &loss_c, NULL, &sc);
    memcpy(ref, delta, sizeof ref);
    CHECK(ghm_ema_init(&ev, 30) == GHM_OK, "ema");
    s = ghm_c_loss_grad_labels_blocks(&cfg, &ev, &cb, uo, ul, uw, BV_C, GHM_LAYOUT_CLASS_MAJOR,
                                      ud, &loss_v, NULL, &su);
    CHECK(s == GHM_OK, "misaligned class blocks: %s", sname(s));
    memcpy(mis, ud, sizeof mis);
    CHECK(first_diff(ref, mis, BV_N) < 0, "misaligned views differ from aligned");
    CHECK(stats_diff(&su, &sc) == NULL, "misaligned stats");
    for (i = 0; i < 4; i++) free(blk[i]);
  }

  /* Phased: two ranges of blocks accumulated, merged, applied = the one call. */
  {
    ghm_hist h1, h2;
    ghm_weights w;
    ghm_blocks lo = ob, hi = ob;
    float one[BV_N];
    lo.count = 2;
    hi.count = BV_BLOCKS - 2;
    hi.pred.offset += 2 * hi.pred.stride;
    hi.grad.offset += 2 * hi.grad.stride;
    hi.loss_elems.offset += 2 * hi.loss_elems.stride;
    hi.target.offset += 2 * hi.target.stride;
    hi.weight.offset += 2 * hi.weight.stride;
    for (i = 0; i < BV_N; i++) delta[i] = one[i] = fill;
    CHECK(ghm_ema_init(&ev, 30) == GHM_OK && ghm_ema_init(&ec, 30) == GHM_OK, "ema");
    s = ghm_c_loss_grad_blocks(&cfg, &ev, &ob, out, obj_t, obj_w, one, &loss_c, NULL, NULL);
    CHECK(s == GHM_OK, "one call");
    CHECK(ghm_hist_init(&h1, 30) == GHM_OK && ghm_hist_init(&h2, 30) == GHM_OK, "hist");
    CHECK(ghm_c_accumulate_blocks(&cfg, &hi, out, obj_t, obj_w, &h2) == GHM_OK, "acc hi");
    CHECK(ghm_c_accumulate_blocks(&cfg, &lo, out, obj_t, obj_w, &h1) == GHM_OK, "acc lo");
    CHECK(ghm_hist_merge(&h1, &h2) == GHM_OK, "merge");
    CHECK(ghm_c_finalize(&cfg, &ec, &h1, &w) == GHM_OK, "finalize");
    CHECK(ghm_c_apply_blocks(&cfg, &w, &lo, out, obj_t, obj_w, delta, NULL) == GHM_OK, "lo");
    CHECK(ghm_c_apply_blocks(&cfg, &w, &hi, out, obj_t, obj_w, delta, NULL) == GHM_OK, "hi");
    CHECK(first_diff(one, delta, BV_N) < 0, "phased blocks != one call");
    CHECK(same_bytes(&ev, &ec, sizeof ev), "phased EMA");
    CHECK(check_ulps((float)w.loss, loss_c) <= 1, "phased loss %.9g vs %.9g", w.loss, loss_c);
  }

  /* Views of one buffer: disjoint interleaved views are legal, one shared element is not. */
  memcpy(before, out, sizeof out);
  bad = ob;
  bad.grad.offset = 0; /* channel x of each block: interleaved with objectness, disjoint */
  cfg.momentum = 0.0f;
  s = ghm_c_loss_grad_blocks(&cfg, NULL, &bad, out, obj_t, obj_w, out, NULL, NULL, NULL);
  CHECK(s == GHM_OK, "disjoint interleaved views: %s", sname(s));
  memcpy(out, before, sizeof out);
  bad.grad.offset = 3 * BV_HW + 1; /* shares the last element of each block with pred */
  s = ghm_c_loss_grad_blocks(&cfg, NULL, &bad, out, obj_t, obj_w, out, NULL, NULL, NULL);
  CHECK(s == GHM_ERR_ALIAS, "one shared element: %s", sname(s));
  bad.grad.offset = 3 * BV_HW; /* ends right before pred's block: disjoint */
  s = ghm_c_loss_grad_blocks(&cfg, NULL, &bad, out, obj_t, obj_w, out, NULL, NULL, NULL);
  CHECK(s == GHM_OK, "adjacent views: %s", sname(s));
  memcpy(out, before, sizeof out);
  bad = ob;
  bad.grad.stride = BV_HW - 1; /* the output's own blocks overlap */
  s = ghm_c_loss_grad_blocks(&cfg, NULL, &bad, out, obj_t, obj_w, delta, NULL, NULL, NULL);
  CHECK(s == GHM_ERR_ALIAS, "self-overlapping output view: %s", sname(s));
  bad = ob;
  bad.pred.stride = SIZE_MAX / 2; /* extent overflows */
  s = ghm_c_loss_grad_blocks(&cfg, NULL, &bad, out, obj_t, obj_w, delta, NULL, NULL, NULL);
  CHECK(s == GHM_ERR_SHAPE, "overflowing view: %s", sname(s));
  s = ghm_c_loss_grad_blocks(&cfg, NULL, NULL, out, obj_t, obj_w, delta, NULL, NULL, NULL);
  CHECK(s == GHM_ERR_NULL, "NULL blocks: %s", sname(s));
  CHECK(same_bytes(before, out, sizeof out), "an error wrote into the buffer");

  /* GHM-R through views against packed. */
  {
    ghm_r_config r = ghm_r_config_default();
    float rg[BV_BLOCKS * BV_HW];
    for (i = 0; i < BV_N; i++) delta[i] = fill;
    for (i = 0; i < BV_BLOCKS * BV_HW; i++) pt[i] = rndf(-1.0f, 1.0f);
    s = ghm_r_loss_grad_blocks(&r, NULL, &ob, out, pt, obj_w, delta, &loss_v, NULL, NULL);
    CHECK(s == GHM_OK, "GHM-R blocks: %s", sname(s));
    bv_pack(out, ob.pred, BV_HW, px);
    s = ghm_r_loss_grad(&r, NULL, px, pt, obj_w, BV_BLOCKS * BV_HW, rg, &loss_c, NULL, NULL);
    bv_pack(delta, ob.grad, BV_HW, got);
    CHECK(first_diff(got, rg, BV_BLOCKS * BV_HW) < 0, "GHM-R through views != packed");
    CHECK(bv_untouched(delta, ob.grad, BV_HW, fill), "GHM-R wrote outside its view");
  }
  check_group_done();
}

/* ghm_last_error: one report per code, its strings and message, and success clearing it. */
static void test_report(void) {
  float pred[8] = {0.5f, -1, 2, 3, -4, 5, 6, 7}, target[8] = {0}, grad[8], loss;
  ghm_c_config cfg = ghm_c_config_default();
  ghm_hist h;
  ghm_report r;
  check_group("ghm_last_error");
  CHECK(ghm_last_error(NULL) == GHM_ERR_NULL, "ghm_last_error(NULL)");
  CHECK(ghm_c_loss_grad(&cfg, NULL, NULL, target, NULL, 8, grad, &loss, NULL, NULL) == GHM_ERR_NULL,
        "NULL pred");
  expect_report(GHM_ERR_NULL, "pred", -1, "NULL pred");
  cfg.momentum = 2.0f;
  CHECK(ghm_c_loss_grad(&cfg, NULL, pred, target, NULL, 8, grad, &loss, NULL, NULL) ==
            GHM_ERR_CONFIG, "momentum 2");
  expect_report(GHM_ERR_CONFIG, "cfg", -1, "momentum 2");
  ghm_last_error(&r);
  CHECK(strcmp(r.field, "momentum") == 0 && r.has_value && r.value == 2.0 &&
            strcmp(r.message, "cfg.momentum = 2 is not in [0, 1)") == 0,
        "momentum 2: field %s value %g message \"%s\"", r.field, r.value, r.message);
  cfg = ghm_c_config_default();
  CHECK(ghm_hist_init(&h, 12) == GHM_OK, "hist_init");
  CHECK(ghm_c_accumulate(&cfg, pred, target, NULL, 8, &h) == GHM_ERR_STATE, "12-bin h");
  expect_report(GHM_ERR_STATE, "h", -1, "12-bin h");
  ghm_last_error(&r);
  CHECK(strcmp(r.field, "bins") == 0 && r.value == 12.0, "12-bin h: field %s", r.field);
  pred[6] = (float)HUGE_VAL;
  CHECK(ghm_c_loss_grad(&cfg, NULL, pred, target, NULL, 8, grad, &loss, NULL, NULL) ==
            GHM_ERR_INPUT, "pred[6] inf");
  expect_report(GHM_ERR_INPUT, "pred", 6, "pred[6] inf");
  ghm_last_error(&r);
  CHECK(strcmp(r.message, "pred[6] = inf is not finite (skip_bad is 0)") == 0 &&
            strcmp(r.why, "is not finite (skip_bad is 0)") == 0,
        "pred[6] inf: message \"%s\"", r.message);
  pred[6] = 6.0f;
  CHECK(ghm_c_loss_grad(&cfg, NULL, pred, target, NULL, 8, pred, &loss, NULL, NULL) ==
            GHM_ERR_ALIAS, "grad = pred");
  expect_report(GHM_ERR_ALIAS, "grad", -1, "grad = pred");
  ghm_last_error(&r);
  CHECK(strcmp(r.other, "pred") == 0, "grad = pred: other %s", r.other);
  CHECK(ghm_c_accumulate_labels(&cfg, pred, (const int32_t *)target, NULL, 8, 1, 0, 3, 2, &h) ==
            GHM_ERR_SHAPE, "anchors 3..2");
  expect_report(GHM_ERR_SHAPE, "anchor_begin", -1, "anchors 3..2");
  CHECK(ghm_c_loss_grad(&cfg, NULL, pred, target, NULL, 8, grad, &loss, NULL, NULL) == GHM_OK,
        "good call");
  expect_report(GHM_OK, "", -1, "good call");
  ghm_last_error(&r);
  CHECK(r.message[0] == 0 && r.field[0] == 0 && r.why[0] == 0 && !r.has_value, "good call: empty");
}

/* ------------------------------------------------------------------------------------------ */
/* Generic GHM (ghm_g_*): "bring your own g" */

/* One generic call on placed copies (offset `off` bytes: 0 aligned, 1 misaligned); rows of K
 * floats, S apart. Returns the status; rows/factor/loss/stats/ema hold the results. */
enum { GN = 2999, GK = 3, GS = 5 };
static ghm_status g_call(const ghm_g_config *cfg, ghm_ema *ema, const float *g, const float *l,
                         const float *v, size_t off, float *rows, float *factor, float *loss,
                         ghm_stats *stats) {
  void *b[5];
  const size_t rn = (GN - 1) * GS + GK;
  float *pg = (float *)placed(g, GN * sizeof(float), off, &b[0]);
  float *pl = l ? (float *)placed(l, GN * sizeof(float), off, &b[1]) : NULL;
  float *pv = v ? (float *)placed(v, GN * sizeof(float), off, &b[2]) : NULL;
  float *pr = (float *)placed(rows, rn * sizeof(float), off, &b[3]);
  float *pf = (float *)placed(factor, GN * sizeof(float), off, &b[4]);
  ghm_g_rows rw;
  ghm_status s;
  rw.grad = pr;
  rw.k = GK;
  rw.row_stride = GS;
  rw.elem_stride = 1;
  rw.block_len = 0;
  rw.block_stride = 0;
  s = ghm_g_loss_grad(cfg, ema, pg, pl, pv, GN, &rw, pf, loss, stats);
  memcpy(rows, pr, rn * sizeof(float));
  memcpy(factor, pf, GN * sizeof(float));
  free(b[0]);
  if (l) free(b[1]);
  if (v) free(b[2]);
  free(b[3]);
  free(b[4]);
  return s;
}

static ghm_g_rows g_rows(float *grad, size_t k, size_t row_stride, size_t elem_stride,
                         size_t block_len, size_t block_stride) {
  ghm_g_rows r;
  r.grad = grad;
  r.k = k;
  r.row_stride = row_stride;
  r.elem_stride = elem_stride;
  r.block_len = block_len;
  r.block_stride = block_stride;
  return r;
}

static void test_generic(void) {
  const size_t rn = (GN - 1) * GS + GK;
  float *x = fvec(GN), *t = fvec(GN), *lw = fvec(GN), *d = fvec(GN), *l = fvec(GN);
  float *g = fvec(GN), *gc = fvec(GN), *r1 = fvec(GN);
  float *rows0 = fvec(rn), *rows = fvec(rn), *rows2 = fvec(rn), *f = fvec(GN), *f2 = fvec(GN);
  ghm_c_config one = ghm_c_config_default(), c = ghm_c_config_default();
  ghm_g_config gg = ghm_g_config_default(), bad;
  ghm_stats sc, sg, sg2;
  ghm_ema ec, eg, eg2;
  ghm_hist h, h2;
  ghm_weights w;
  ghm_g_rows rw;
  float loss_c = 0, loss_g = 0, loss_g2 = 0;
  size_t i, rep, off;
  ghm_status st;

  check_group("generic: GHM-C via its own g");
  gen_c(x, t, lw, GN);
  /* dl/dx and l as the GHM-C kernel computes them: one bin, SUM (every weight 1). */
  one.bins = 1;
  one.reduction = GHM_REDUCTION_SUM;
  CHECK(ghm_c_loss_grad(&one, NULL, x, t, lw, GN, d, NULL, l, NULL) == GHM_OK, "raw");
  for (i = 0; i < GN; i++) g[i] = fabsf(d[i]);
  c.bins = gg.bins = 30;
  c.momentum = gg.momentum = 0.75f;
  c.loss_weight = gg.loss_weight = 0.7f;
  c.grad_scale = gg.grad_scale = -1.5f;
  ghm_ema_init(&ec, 30);
  ghm_ema_init(&eg, 30);
  for (rep = 0; rep < 2; rep++) {
    CHECK(ghm_c_loss_grad(&c, &ec, x, t, lw, GN, gc, &loss_c, NULL, &sc) == GHM_OK, "ghm-c");
    memcpy(r1, d, GN * sizeof(float));
    rw = g_rows(r1, 1, 1, 1, 0, 0);
    st = ghm_g_loss_grad(&gg, &eg, g, l, lw, GN, &rw, NULL, &loss_g, &sg);
    CHECK(st == GHM_OK, "generic: %s", sname(st));
    CHECK(first_diff(r1, gc, GN) < 0, "batch %zu: gradient %ld differs", rep,
          first_diff(r1, gc, GN));
    CHECK(stats_diff(&sg, &sc) == NULL, "batch %zu: stats %s differ", rep, stats_diff(&sg, &sc));
    CHECK(same_bytes(&eg, &ec, sizeof eg), "batch %zu: EMA differs", rep);
    CHECK(fabsf(loss_g - loss_c) <= 2e-7f * fabsf(loss_c), "batch %zu: loss %.9g vs %.9g", rep,
          loss_g, loss_c);
  }

  check_group_end("%d batches, bit for bit", 2);
  check_group("generic: unaligned, phased");
  for (i = 0; i < rn; i++) rows0[i] = rndf(-2.0f, 2.0f);
  for (off = 0; off < 2; off++) {
    memcpy(rows, rows0, rn * sizeof(float));
    memset(f, 0, GN * sizeof(float));
    ghm_ema_init(&eg, 30);
    st = g_call(&gg, &eg, g, l, lw, off, rows, f, &loss_g, &sg);
    CHECK(st == GHM_OK, "offset %zu: %s", off, sname(st));
    if (off == 0) {
      memcpy(rows2, rows, rn * sizeof(float));
      memcpy(f2, f, GN * sizeof(float));
      loss_g2 = loss_g;
      sg2 = sg;
      eg2 = eg;
      /* Gaps between rows untouched; each row times its factor (+0 for factor 0). */
      for (i = 0; i < rn; i++) {
        size_t s = i / GS, j = i % GS;
        float want = j >= GK ? rows0[i] : f[s] == 0.0f ? 0.0f : rows0[i] * f[s];
        if (memcmp(&rows[i], &want, sizeof want)) {
          CHECK(0, "row float %zu: %g, want %g", i, rows[i], want);
          break;
        }
      }
      for (i = 0; i < GN; i++)
        if ((f[i] == 0.0f) != (lw[i] == 0.0f)) {
          CHECK(0, "factor %zu is %g with valid %g", i, f[i], lw[i]);
          break;
        }
    } else {
      CHECK(first_diff(rows, rows2, rn) < 0, "misaligned rows differ at %ld",
            first_diff(rows, rows2, rn));
      CHECK(first_diff(f, f2, GN) < 0, "misaligned factors differ");
      CHECK(fabsf(loss_g - loss_g2) <= 2e-7f * fabsf(loss_g2), "misaligned loss");
      CHECK(stats_diff(&sg, &sg2) == NULL, "misaligned stats");
      CHECK(same_bytes(&eg, &eg2, sizeof eg), "misaligned EMA");
    }
  }
  /* Planar rows ([GK][GN]: row_stride 1, elem_stride GN + 7): the same products. */
  {
    const size_t es = GN + 7, pn = (GK - 1) * es + GN;
    float *planar = fvec(pn);
    size_t j;
    for (i = 0; i < GN; i++)
      for (j = 0; j < GK; j++) planar[j * es + i] = rows0[i * GS + j];
    ghm_ema_init(&eg, 30);
    rw = g_rows(planar, GK, 1, es, 0, 0);
    st = ghm_g_loss_grad(&gg, &eg, g, l, lw, GN, &rw, NULL, NULL, NULL);
    CHECK(st == GHM_OK, "planar: %s", sname(st));
    for (i = 0; i < GN; i++)
      for (j = 0; j < GK; j++)
        if (memcmp(&planar[j * es + i], &rows2[i * GS + j], sizeof(float))) {
          CHECK(0, "planar sample %zu float %zu differs", i, j);
          i = GN;
          break;
        }
    free(planar);
  }
  /* Darknet's delta buffer [2][3][4 + 1 + 2][7]: blocks of 7 planar rows of 4, 49 apart. */
  {
    enum { HW = 7, CH = 7, NS = 2 * 3 * HW };
    float delta[NS * CH], before[NS * CH], fd[NS];
    size_t x;
    for (x = 0; x < NS * CH; x++) delta[x] = before[x] = rndf(-1.0f, 1.0f);
    rw = g_rows(delta, 4, 1, HW, HW, CH * HW);
    bad = gg;
    bad.momentum = 0.0f; /* no EMA */
    st = ghm_g_loss_grad(&bad, NULL, g, l, NULL, NS, &rw, fd, NULL, NULL);
    CHECK(st == GHM_OK, "darknet blocks: %s", sname(st));
    for (x = 0; x < NS * CH; x++) {
      size_t block = x / (CH * HW), c = x / HW % CH, sample = block * HW + x % HW;
      float want = c >= 4 ? before[x] : fd[sample] == 0.0f ? 0.0f : before[x] * fd[sample];
      if (memcmp(&delta[x], &want, sizeof want)) {
        CHECK(0, "darknet blocks: float %zu (channel %zu) %g, want %g", x, c, delta[x], want);
        break;
      }
    }
  }
  /* Phased: two chunks (one misaligned), merged, finalized, applied. */
  {
    void *blk;
    const size_t cut = 1234;
    float *pg = (float *)placed(g + cut, (GN - cut) * sizeof(float), 2, &blk);
    ghm_ema_init(&eg, 30);
    CHECK(ghm_hist_init(&h, 30) == GHM_OK && ghm_hist_init(&h2, 30) == GHM_OK, "hist init");
    CHECK(ghm_g_accumulate(&gg, pg, l + cut, lw + cut, GN - cut, &h2) == GHM_OK, "acc 2");
    CHECK(ghm_g_accumulate(&gg, g, l, lw, cut, &h) == GHM_OK, "acc 1");
    CHECK(ghm_hist_merge(&h, &h2) == GHM_OK, "merge");
    CHECK(ghm_g_finalize(&gg, &eg, &h, &w) == GHM_OK, "finalize");
    memcpy(rows, rows0, rn * sizeof(float));
    rw = g_rows(rows, GK, GS, 1, 0, 0);
    CHECK(ghm_g_apply(&gg, &w, g, l, lw, cut, &rw, f) == GHM_OK, "apply 1");
    rw.grad = rows + cut * GS;
    CHECK(ghm_g_apply(&gg, &w, pg, NULL, lw + cut, GN - cut, &rw, f + cut) == GHM_OK,
          "apply 2");
    CHECK(first_diff(rows, rows2, rn) < 0, "phased rows differ at %ld",
          first_diff(rows, rows2, rn));
    CHECK(first_diff(f, f2, GN) < 0, "phased factors differ");
    CHECK(same_bytes(&eg, &eg2, sizeof eg), "phased EMA");
    CHECK(fabsf((float)w.loss - loss_g2) <= 2e-7f * fabsf(loss_g2), "phased loss");
    free(blk);
  }

  check_group_end("%s", "rows of 3 floats, 5 apart");
  check_group("generic: errors, skip_bad");
  {
    struct {
      const char *what;
      ghm_status want;
      const char *arg;
      long index;
    } cases[] = {
        {"cfg NULL", GHM_ERR_NULL, "cfg", -1},
        {"g NULL", GHM_ERR_NULL, "g", -1},
        {"g_max 0", GHM_ERR_CONFIG, "cfg", -1},
        {"skip_bad 2", GHM_ERR_CONFIG, "cfg", -1},
        {"ema NULL, momentum > 0", GHM_ERR_STATE, "ema", -1},
        {"g NaN", GHM_ERR_INPUT, "g", 17},
        {"sample_loss -1", GHM_ERR_INPUT, "sample_loss", 5},
        {"valid inf", GHM_ERR_INPUT, "valid", 9},
        {"k 0", GHM_ERR_SHAPE, "rows", -1},
        {"row_stride < k", GHM_ERR_SHAPE, "rows", -1},
        {"grad over g", GHM_ERR_ALIAS, "rows", -1},
        {"factor over valid", GHM_ERR_ALIAS, "factor", -1},
    };
    size_t ci, nc = sizeof cases / sizeof cases[0];
    float *gb = fvec(GN), *lb = fvec(GN), *vb = fvec(GN), *both = fvec(2 * rn);
    for (ci = 0; ci < nc; ci++) {
      ghm_ema e0;
      float lossv = 123.0f;
      const ghm_g_config *cp = &bad;
      const float *gp = gb, *vp = vb;
      float *rp = rows, *fp = f;
      size_t k = GK, stride = GS;
      memcpy(gb, g, GN * sizeof(float));
      memcpy(lb, l, GN * sizeof(float));
      memcpy(vb, lw, GN * sizeof(float));
      memcpy(rows, rows0, rn * sizeof(float));
      memset(f, 0x5a, GN * sizeof(float));
      memcpy(f2, f, GN * sizeof(float));
      bad = gg;
      ghm_ema_init(&eg, 30);
      eg.acc_sum[3] = 5.0f;
      e0 = eg;
      switch (ci) {
        case 0: cp = NULL; break;
        case 1: gp = NULL; break;
        case 2: bad.g_max = 0.0f; break;
        case 3: bad.skip_bad = 2; break;
        case 4: break; /* ema NULL below */
        case 5: gb[17] = f_nan(); break;
        case 6: lb[5] = -1.0f; break;
        case 7: vb[9] = f_inf(); break;
        case 8: k = 0; break;
        case 9: stride = GK - 1; break;
        case 10: rp = (float *)gb; k = 1; stride = 1; break;
        case 11: fp = vb; break;
      }
      rw = g_rows(rp, k, stride, 1, 0, 0);
      st = ghm_g_loss_grad(cp, ci == 4 ? NULL : &eg, gp, lb, vp, GN, &rw, fp, &lossv, &sg);
      CHECK(st == cases[ci].want, "%s: %s, want %s", cases[ci].what, sname(st),
            sname(cases[ci].want));
      expect_report(cases[ci].want, cases[ci].arg, cases[ci].index, cases[ci].what);
      CHECK(lossv == 123.0f, "%s: loss written", cases[ci].what);
      CHECK(same_bytes(&eg, &e0, sizeof eg), "%s: EMA written", cases[ci].what);
      if (ci != 10) CHECK(same_bytes(rows, rows0, rn * sizeof(float)), "%s: rows written",
                          cases[ci].what);
      if (ci != 11) CHECK(same_bytes(f, f2, GN * sizeof(float)), "%s: factors written",
                          cases[ci].what);
      CHECK(same_bytes(gb, g, GN * sizeof(float)) || ci == 5, "%s: g written", cases[ci].what);
    }
    free(gb);
    free(lb);
    free(vb);
    free(both);
  }
  /* skip_bad: the bad samples get factor 0 and a zero row, and are counted. */
  {
    float *gb = fvec(GN);
    memcpy(gb, g, GN * sizeof(float));
    gb[0] = f_nan();
    gb[GN - 1] = -1.0f;
    bad = gg;
    bad.skip_bad = 1;
    bad.momentum = 0.0f;
    memcpy(rows, rows0, rn * sizeof(float));
    rw = g_rows(rows, GK, GS, 1, 0, 0);
    st = ghm_g_loss_grad(&bad, NULL, gb, l, NULL, GN, &rw, f, NULL, &sg);
    CHECK(st == GHM_OK && sg.skipped == 2, "skip_bad: %s, skipped %llu", sname(st),
          (unsigned long long)sg.skipped);
    CHECK(f[0] == 0.0f && f[GN - 1] == 0.0f && f[1] != 0.0f, "skip_bad: factors");
    CHECK(rows[0] == 0.0f && rows[(GN - 1) * GS + GK - 1] == 0.0f, "skip_bad: rows");
    free(gb);
  }
  check_group_end("%s", "12 error paths, skip_bad");
  free(x);
  free(t);
  free(lw);
  free(d);
  free(l);
  free(g);
  free(gc);
  free(r1);
  free(rows0);
  free(rows);
  free(rows2);
  free(f);
  free(f2);
}

/* ------------------------------------------------------------------------------------------ */
/* Softmax cross-entropy GHM */

#define SN 150

/* Random logits (row-major [SN][c]), labels (every 9th ignored), weights (every 11th 0). */
static void gen_softmax(float *x, int32_t *y, float *w, size_t c) {
  size_t a, k;
  for (a = 0; a < SN; a++) {
    float scale = (a % 4 == 0) ? 8.0f : 2.0f;
    for (k = 0; k < c; k++) x[a * c + k] = rndf(-scale, scale);
    y[a] = a % 9 == 4 ? -1 : (int32_t)rndn(c);
    if (a % 9 == 4 && a % 2) y[a] = (int32_t)c;
    w[a] = a % 11 == 3 ? 0.0f : 1.0f;
  }
  x[7 * c] = 1e4f; /* a saturated logit */
}

/* The double model of one call (bins 10, no EMA, MEAN): the loss, and the gradient. Samples
 * whose g lies within 1e-4 of a bin edge are not excluded here: the caller checks the counts. */
static double softmax_model(const float *x, const int32_t *y, const float *w, size_t c,
                            float lw, float gs, double *grad) {
  size_t a, k, m = 10;
  double counts[10] = {0}, wk[10] = {0}, tot = 0, nonempty = 0, loss = 0;
  int bin[SN];
  double ce[SN];
  for (a = 0; a < SN; a++) {
    double mx = -HUGE_VAL, s = 0, py;
    bin[a] = -1;
    for (k = 0; k < c; k++) grad[a * c + k] = 0.0;
    if (y[a] < 0 || (size_t)y[a] >= c || w[a] <= 0.0f) continue;
    for (k = 0; k < c; k++) mx = fmax(mx, x[a * c + k]);
    for (k = 0; k < c; k++) s += exp(x[a * c + k] - mx);
    py = exp(x[a * c + y[a]] - mx) / s;
    bin[a] = (int)fmin(floor((1.0 - py) * m), m - 1);
    ce[a] = log(s) - (x[a * c + y[a]] - mx);
    counts[bin[a]] += 1;
    tot += 1;
  }
  for (k = 0; k < m; k++) nonempty += counts[k] > 0;
  for (k = 0; k < m; k++) wk[k] = counts[k] > 0 ? tot / counts[k] / nonempty : 0;
  for (a = 0; a < SN; a++) {
    double mx = -HUGE_VAL, s = 0, f;
    if (bin[a] < 0) continue;
    loss += wk[bin[a]] * ce[a];
    for (k = 0; k < c; k++) mx = fmax(mx, x[a * c + k]);
    for (k = 0; k < c; k++) s += exp(x[a * c + k] - mx);
    f = gs * lw * wk[bin[a]] / tot;
    for (k = 0; k < c; k++)
      grad[a * c + k] = f * (exp(x[a * c + k] - mx) / s - ((int32_t)k == y[a] ? 1.0 : 0.0));
  }
  return lw * loss / tot;
}

static void test_softmax(void) {
  static const size_t CS[] = {1, 2, 5, 37, 80};
  size_t ci, a, k, i;
  check_group("softmax: against a double model, both layouts");
  for (ci = 0; ci < sizeof CS / sizeof CS[0]; ci++) {
    size_t c = CS[ci], nx = SN * c;
    float *x = fvec(nx), *xt = fvec(nx), *g = fvec(nx), *gt = fvec(nx), *w = fvec(SN);
    float *sl = fvec(SN), *slt = fvec(SN);
    int32_t *y = (int32_t *)xmalloc(SN * sizeof(int32_t));
    double *want = (double *)xmalloc(nx * sizeof(double)), wl, worst = 0;
    ghm_softmax_config cfg = ghm_softmax_config_default();
    float loss = 0, losst = 0;
    ghm_stats st;
    ghm_status s;
    cfg.loss_weight = 0.5f;
    cfg.grad_scale = -1.0f;
    gen_softmax(x, y, w, c);
    transpose(x, xt, SN, c);
    wl = softmax_model(x, y, w, c, 0.5f, -1.0f, want);
    s = ghm_softmax_loss_grad(&cfg, NULL, x, y, w, SN, c, GHM_LAYOUT_ANCHOR_MAJOR, g, &loss, sl,
                              &st);
    CHECK(s == GHM_OK, "C=%zu: %s", c, sname(s));
    s = ghm_softmax_loss_grad(&cfg, NULL, xt, y, w, SN, c, GHM_LAYOUT_CLASS_MAJOR, gt, &losst,
                              slt, NULL);
    CHECK(s == GHM_OK, "C=%zu class-major: %s", c, sname(s));
    CHECK(fabs(loss - wl) <= 1e-6 * fabs(wl), "C=%zu: loss %.9g, model %.9g", c, loss, wl);
    CHECK(memcmp(&loss, &losst, sizeof loss) == 0, "C=%zu: layouts' losses differ", c);
    CHECK(first_diff(sl, slt, SN) < 0, "C=%zu: layouts' sample losses differ", c);
    for (a = 0; a < SN; a++)
      for (k = 0; k < c; k++) {
        double d = fabs(g[a * c + k] - want[a * c + k]);
        worst = d > worst ? d : worst;
        if (memcmp(&g[a * c + k], &gt[k * SN + a], sizeof(float))) {
          CHECK(0, "C=%zu: layouts differ at sample %zu class %zu", c, a, k);
          a = SN;
          break;
        }
      }
    {
      double gmax = 0;
      for (i = 0; i < nx; i++) gmax = fabs(want[i]) > gmax ? fabs(want[i]) : gmax;
      CHECK(worst <= 1e-6 * gmax, "C=%zu: gradient off the model by %.3g (max %.3g)", c, worst,
            gmax);
    }
    for (a = 0; a < SN; a++)
      if (y[a] < 0 || (size_t)y[a] >= c || w[a] == 0.0f)
        for (k = 0; k < c; k++)
          if (g[a * c + k] != 0.0f) {
            CHECK(0, "C=%zu: ignored sample %zu has a gradient", c, a);
            a = SN;
            break;
          }
    free(x), free(xt), free(g), free(gt), free(w), free(sl), free(slt), free(y), free(want);
  }
  check_group_end("C = 1, 2, 5, 37, 80");

  check_group("softmax: misaligned and phased, bit for bit");
  {
    size_t c = 37, nx = SN * c, off, lay;
    float *x = fvec(nx), *xt = fvec(nx), *w = fvec(SN), *g0 = fvec(nx), *g1 = fvec(nx);
    float *sl0 = fvec(SN), *sl1 = fvec(SN);
    int32_t *y = (int32_t *)xmalloc(SN * sizeof(int32_t));
    ghm_softmax_config cfg = ghm_softmax_config_default();
    ghm_ema e0, e1;
    ghm_hist h;
    ghm_weights wt;
    float l0 = 0, l1 = 0;
    ghm_status s;
    cfg.momentum = 0.5f;
    gen_softmax(x, y, w, c);
    transpose(x, xt, SN, c);
    for (lay = 0; lay < 2; lay++) {
      const float *xs = lay ? xt : x;
      uint32_t layout = lay ? GHM_LAYOUT_CLASS_MAJOR : GHM_LAYOUT_ANCHOR_MAJOR;
      ghm_ema_init(&e0, 10);
      s = ghm_softmax_loss_grad(&cfg, &e0, xs, y, w, SN, c, layout, g0, &l0, sl0, NULL);
      CHECK(s == GHM_OK, "aligned: %s", sname(s));
      for (off = 1; off < 4; off += 2) {
        void *bx, *by, *bw, *bg, *bl;
        const float *mx = (const float *)placed(xs, nx * sizeof(float), off, &bx);
        const int32_t *my = (const int32_t *)placed(y, SN * sizeof(int32_t), off, &by);
        const float *mw = (const float *)placed(w, SN * sizeof(float), off, &bw);
        float *mg = (float *)placed(NULL, nx * sizeof(float), off, &bg);
        float *ml = (float *)placed(NULL, SN * sizeof(float), off, &bl);
        ghm_ema_init(&e1, 10);
        s = ghm_softmax_loss_grad(&cfg, &e1, mx, my, mw, SN, c, layout, mg, &l1, ml, NULL);
        CHECK(s == GHM_OK, "misaligned by %zu: %s", off, sname(s));
        memcpy(g1, mg, nx * sizeof(float));
        memcpy(sl1, ml, SN * sizeof(float));
        CHECK(first_diff(g0, g1, nx) < 0, "layout %zu misaligned: gradient differs at %ld", lay,
              first_diff(g0, g1, nx));
        CHECK(first_diff(sl0, sl1, SN) < 0, "misaligned: sample losses differ");
        CHECK(fabsf(l0 - l1) <= 2.4e-7f * fabsf(l0), "misaligned: loss %.9g vs %.9g", l1, l0);
        CHECK(same_bytes(&e0, &e1, sizeof e0), "misaligned: EMA differs");
        free(bx), free(by), free(bw), free(bg), free(bl);
      }
      /* Phased, three chunks, applied in reverse order. */
      ghm_ema_init(&e1, 10);
      ghm_hist_init(&h, 10);
      CHECK(ghm_softmax_accumulate(&cfg, xs, y, w, SN, c, layout, 0, 1, &h) == GHM_OK, "acc 1");
      CHECK(ghm_softmax_accumulate(&cfg, xs, y, w, SN, c, layout, 1, 77, &h) == GHM_OK, "acc 2");
      CHECK(ghm_softmax_accumulate(&cfg, xs, y, w, SN, c, layout, 77, SN, &h) == GHM_OK, "acc 3");
      CHECK(ghm_softmax_finalize(&cfg, &e1, &h, &wt) == GHM_OK, "finalize");
      CHECK(same_bytes(&e0, &e1, sizeof e0), "phased: EMA differs");
      for (i = 0; i < nx; i++) g1[i] = f_nan();
      CHECK(ghm_softmax_apply(&cfg, &wt, xs, y, w, SN, c, layout, 77, SN, g1, sl1) == GHM_OK, "apply 2");
      CHECK(ghm_softmax_apply(&cfg, &wt, xs, y, w, SN, c, layout, 0, 77, g1, sl1) == GHM_OK, "apply 1");
      CHECK(first_diff(g0, g1, nx) < 0, "phased: gradient differs at %ld", first_diff(g0, g1, nx));
      CHECK(first_diff(sl0, sl1, SN) < 0, "phased: sample losses differ");
      CHECK(fabs(wt.loss - l0) <= 2.4e-7 * fabs(l0), "phased: loss %.9g vs %.9g", wt.loss, l0);
    }
    free(x), free(xt), free(w), free(g0), free(g1), free(sl0), free(sl1), free(y);
  }
  check_group_end("two layouts, offsets 1 and 3, three chunks");

  check_group("softmax: blocks (NCHW in place), aligned and misaligned, phased");
  {
    /* 3 images of a segmentation head's output [3][C + 2][HW] (two other channels after the
     * C class planes), labels [3][HW + 1], losses [3][HW + 3]: class-major blocks of HW. */
    enum { NB = 3, C = 5, HW = 37, CH = C + 2, NS = NB * HW };
    static float x[NB * CH * HW], g[NB * CH * HW], w[NB * (HW + 1)], sl[NB * (HW + 3)];
    static float rows[NS * C], gr[NS * C], slr[NS], g2[NB * CH * HW], sl2[NB * (HW + 3)];
    static int32_t y[NB * (HW + 1)], yr[NS];
    static float wr[NS];
    ghm_softmax_config cfg = ghm_softmax_config_default();
    ghm_blocks bk;
    ghm_ema e0, e1;
    ghm_hist h;
    ghm_weights wt;
    float lr = 0, lb = 0;
    size_t b, p, k, off;
    ghm_status s;
    cfg.momentum = 0.5f;
    memset(&bk, 0, sizeof bk);
    bk.count = NB;
    bk.len = HW;
    bk.pred.stride = bk.grad.stride = CH * HW;
    bk.target.stride = bk.weight.stride = HW + 1;
    bk.loss_elems.offset = 2;
    bk.loss_elems.stride = HW + 3;
    for (b = 0; b < NB; b++)
      for (p = 0; p < HW; p++) {
        size_t n = b * HW + p;
        y[b * (HW + 1) + p] = yr[n] = p % 13 == 5 ? -1 : (int32_t)rndn(C);
        w[b * (HW + 1) + p] = wr[n] = p % 11 == 2 ? 0.0f : 1.0f;
        for (k = 0; k < C; k++) x[b * CH * HW + k * HW + p] = rows[n * C + k] = rndf(-6, 6);
      }
    for (b = 0; b < NB * CH * HW; b++) g[b] = 77.0f;
    for (b = 0; b < NB * (HW + 3); b++) sl[b] = 77.0f;
    ghm_ema_init(&e0, 10);
    ghm_ema_init(&e1, 10);
    s = ghm_softmax_loss_grad(&cfg, &e0, rows, yr, wr, NS, C, GHM_LAYOUT_ANCHOR_MAJOR, gr, &lr,
                              slr, NULL);
    CHECK(s == GHM_OK, "contiguous: %s", sname(s));
    s = ghm_softmax_loss_grad_blocks(&cfg, &e1, &bk, x, y, w, C, GHM_LAYOUT_CLASS_MAJOR, g, &lb,
                                     sl, NULL);
    CHECK(s == GHM_OK, "blocks: %s", sname(s));
    CHECK(memcmp(&lr, &lb, sizeof lr) == 0, "blocks: loss %.9g vs %.9g", lb, lr);
    CHECK(same_bytes(&e0, &e1, sizeof e0), "blocks: EMA differs");
    for (b = 0; b < NB; b++)
      for (p = 0; p < HW; p++) {
        size_t n = b * HW + p;
        CHECK(memcmp(&sl[2 + b * (HW + 3) + p], &slr[n], 4) == 0, "sample loss %zu", n);
        for (k = 0; k < CH; k++) {
          float got = g[b * CH * HW + k * HW + p];
          if (k < C ? memcmp(&got, &gr[n * C + k], 4) != 0 : got != 77.0f) {
            CHECK(0, "blocks: image %zu pixel %zu channel %zu: %g", b, p, k, got);
            b = NB, p = HW;
            break;
          }
        }
      }
    /* Misaligned copies of every buffer: the same bytes. */
    for (off = 1; off < 3; off++) {
      void *bx, *by, *bw, *bg, *bl;
      const float *mx = (const float *)placed(x, sizeof x, off, &bx);
      const int32_t *my = (const int32_t *)placed(y, sizeof y, off, &by);
      const float *mw = (const float *)placed(w, sizeof w, off, &bw);
      float *mg = (float *)placed(g2, sizeof g2, off, &bg);
      float *ml = (float *)placed(sl2, sizeof sl2, off, &bl);
      {
        const float v = 77.0f;
        for (b = 0; b < NB * CH * HW; b++) memcpy((unsigned char *)mg + b * sizeof v, &v, 4);
        for (b = 0; b < NB * (HW + 3); b++) memcpy((unsigned char *)ml + b * sizeof v, &v, 4);
      }
      ghm_ema_init(&e1, 10);
      s = ghm_softmax_loss_grad_blocks(&cfg, &e1, &bk, mx, my, mw, C, GHM_LAYOUT_CLASS_MAJOR, mg,
                                       &lb, ml, NULL);
      CHECK(s == GHM_OK, "misaligned blocks: %s", sname(s));
      memcpy(g2, mg, sizeof g2);
      memcpy(sl2, ml, sizeof sl2);
      CHECK(same_bytes(g2, g, sizeof g), "misaligned blocks: gradient differs");
      CHECK(same_bytes(sl2, sl, sizeof sl), "misaligned blocks: sample losses differ");
      CHECK(fabsf(lb - lr) <= 2.4e-7f * fabsf(lr), "misaligned blocks: loss %.9g", lb);
      CHECK(same_bytes(&e0, &e1, sizeof e0), "misaligned blocks: EMA differs");
      free(bx), free(by), free(bw), free(bg), free(bl);
    }
    /* Phased: block 0, then blocks 1..2 (offsets moved), applied in reverse. */
    {
      ghm_blocks first = bk, rest = bk;
      first.count = 1;
      rest.count = 2;
      rest.pred.offset += bk.pred.stride;
      rest.grad.offset += bk.grad.stride;
      rest.target.offset += bk.target.stride;
      rest.weight.offset += bk.weight.stride;
      rest.loss_elems.offset += bk.loss_elems.stride;
      ghm_ema_init(&e1, 10);
      ghm_hist_init(&h, 10);
      CHECK(ghm_softmax_accumulate_blocks(&cfg, &first, x, y, w, C, GHM_LAYOUT_CLASS_MAJOR, &h) ==
                GHM_OK, "accumulate block 0");
      CHECK(ghm_softmax_accumulate_blocks(&cfg, &rest, x, y, w, C, GHM_LAYOUT_CLASS_MAJOR, &h) ==
                GHM_OK, "accumulate blocks 1..2");
      CHECK(ghm_softmax_finalize(&cfg, &e1, &h, &wt) == GHM_OK, "finalize");
      for (b = 0; b < NB * CH * HW; b++) g2[b] = 77.0f;
      for (b = 0; b < NB * (HW + 3); b++) sl2[b] = 77.0f;
      CHECK(ghm_softmax_apply_blocks(&cfg, &wt, &rest, x, y, w, C, GHM_LAYOUT_CLASS_MAJOR, g2,
                                     sl2) == GHM_OK, "apply blocks 1..2");
      CHECK(ghm_softmax_apply_blocks(&cfg, &wt, &first, x, y, w, C, GHM_LAYOUT_CLASS_MAJOR, g2,
                                     sl2) == GHM_OK, "apply block 0");
      CHECK(same_bytes(g2, g, sizeof g), "phased blocks: gradient differs");
      CHECK(same_bytes(sl2, sl, sizeof sl), "phased blocks: sample losses differ");
      CHECK(same_bytes(&e0, &e1, sizeof e0), "phased blocks: EMA differs");
    }
    /* A gradient view whose blocks overlap: GHM_ERR_ALIAS, nothing written. */
    {
      ghm_blocks bad = bk;
      ghm_report r;
      bad.grad.stride = C * HW - 1;
      memcpy(g2, g, sizeof g);
      s = ghm_softmax_loss_grad_blocks(&cfg, &e1, &bad, x, y, w, C, GHM_LAYOUT_CLASS_MAJOR, g2,
                                       NULL, NULL, NULL);
      CHECK(s == GHM_ERR_ALIAS, "overlapping gradient blocks: %s", sname(s));
      ghm_last_error(&r);
      CHECK(r.argument && strcmp(r.argument, "blocks") == 0, "report names %s",
            r.argument ? r.argument : "(null)");
      CHECK(same_bytes(g2, g, sizeof g), "overlapping blocks: something was written");
      s = ghm_softmax_loss_grad_blocks(&cfg, &e1, NULL, x, y, w, C, GHM_LAYOUT_CLASS_MAJOR, g2,
                                       NULL, NULL, NULL);
      CHECK(s == GHM_ERR_NULL, "NULL blocks: %s", sname(s));
      /* A bad logit in block 2: reported at its index in the caller's buffer. */
      x[2 * CH * HW + 3 * HW + 7] = f_inf();
      s = ghm_softmax_loss_grad_blocks(&cfg, &e1, &bk, x, y, w, C, GHM_LAYOUT_CLASS_MAJOR, g2,
                                       NULL, NULL, NULL);
      CHECK(s == GHM_ERR_INPUT, "inf logit in a block: %s", sname(s));
      ghm_last_error(&r);
      CHECK(r.argument && strcmp(r.argument, "logits") == 0 &&
                r.index == (int64_t)(2 * CH * HW + 3 * HW + 7),
            "report names %s[%lld]", r.argument ? r.argument : "(null)", (long long)r.index);
      CHECK(same_bytes(g2, g, sizeof g), "inf logit: something was written");
      x[2 * CH * HW + 3 * HW + 7] = 0.0f;
    }
  }
  check_group_end("NCHW blocks in place, misaligned, phased by blocks, overlap refused");

  check_group("softmax: errors write nothing and are explained");
  {
    enum { C = 6 };
    float x[SN * C], w[SN], g[SN * C], before[SN * C], loss = 42.0f;
    int32_t y[SN];
    ghm_softmax_config cfg = ghm_softmax_config_default();
    ghm_report r;
    ghm_status s;
    gen_softmax(x, y, w, C);
    for (i = 0; i < SN * C; i++) g[i] = before[i] = 9.0f;
    x[40 * C + 3] = f_nan();
    s = ghm_softmax_loss_grad(&cfg, NULL, x, y, w, SN, C, GHM_LAYOUT_ANCHOR_MAJOR, g, &loss, NULL,
                              NULL);
    CHECK(s == GHM_ERR_INPUT, "NaN logit: %s", sname(s));
    CHECK(same_bytes(g, before, sizeof g) && loss == 42.0f, "NaN logit: something was written");
    ghm_last_error(&r);
    CHECK(r.argument && strcmp(r.argument, "logits") == 0 && r.index == 40 * C + 3,
          "NaN logit: report names %s[%lld]", r.argument ? r.argument : "(null)",
          (long long)r.index);
    cfg.skip_bad = 1;
    s = ghm_softmax_loss_grad(&cfg, NULL, x, y, w, SN, C, GHM_LAYOUT_ANCHOR_MAJOR, g, &loss, NULL,
                              NULL);
    CHECK(s == GHM_OK, "skip_bad: %s", sname(s));
    for (k = 0; k < C; k++) CHECK(g[40 * C + k] == 0.0f, "skipped sample's gradient %g", g[40 * C + k]);
    cfg.skip_bad = 0;
    x[40 * C + 3] = 0.0f;
    w[12] = -1.0f;
    s = ghm_softmax_accumulate(&cfg, x, y, w, SN, C, GHM_LAYOUT_CLASS_MAJOR, 0, SN, NULL);
    CHECK(s == GHM_ERR_NULL, "NULL h: %s", sname(s));
    {
      ghm_hist h;
      ghm_hist_init(&h, 10);
      s = ghm_softmax_accumulate(&cfg, x, y, w, SN, C, GHM_LAYOUT_ANCHOR_MAJOR, 0, SN, &h);
      CHECK(s == GHM_ERR_INPUT, "bad weight: %s", sname(s));
      ghm_last_error(&r);
      CHECK(r.argument && strcmp(r.argument, "sample_weight") == 0 && r.index == 12,
            "bad weight: report names %s[%lld]", r.argument ? r.argument : "(null)",
            (long long)r.index);
      s = ghm_softmax_accumulate(&cfg, x, y, w, SN, C, GHM_LAYOUT_ANCHOR_MAJOR, 5, 4, &h);
      CHECK(s == GHM_ERR_SHAPE, "begin > end: %s", sname(s));
    }
    w[12] = 1.0f;
    s = ghm_softmax_loss_grad(&cfg, NULL, x, y, w, SN, 0, GHM_LAYOUT_ANCHOR_MAJOR, g, NULL, NULL,
                              NULL);
    CHECK(s == GHM_ERR_SHAPE, "0 classes: %s", sname(s));
    s = ghm_softmax_loss_grad(&cfg, NULL, x, y, w, SN, C, 7, g, NULL, NULL, NULL);
    CHECK(s == GHM_ERR_CONFIG, "layout 7: %s", sname(s));
    /* Hostile sizes: refused before any element is read (the buffers are far too short). */
    {
      const size_t ns[] = {SIZE_MAX / 2, SIZE_MAX / 8, SIZE_MAX, 3};
      const size_t cs[] = {3, 4, 1, SIZE_MAX};
      static float snap[SN * C];
      ghm_hist hh;
      size_t q;
      memcpy(snap, g, sizeof g);
      ghm_hist_init(&hh, 10);
      for (q = 0; q < sizeof ns / sizeof ns[0]; q++) {
        s = ghm_softmax_loss_grad(&cfg, NULL, x, y, NULL, ns[q], cs[q], GHM_LAYOUT_CLASS_MAJOR,
                                  g, NULL, NULL, NULL);
        CHECK(s == GHM_ERR_SHAPE, "num_samples %zu, num_classes %zu: %s", ns[q], cs[q], sname(s));
        s = ghm_softmax_accumulate(&cfg, x, y, NULL, ns[q], cs[q], GHM_LAYOUT_ANCHOR_MAJOR, 0, 1,
                                   &hh);
        CHECK(s == GHM_ERR_SHAPE, "accumulate: num_samples %zu, num_classes %zu: %s", ns[q],
              cs[q], sname(s));
      }
      s = ghm_softmax_accumulate(&cfg, x, y, NULL, SN, C, GHM_LAYOUT_ANCHOR_MAJOR, 0, SIZE_MAX,
                                 &hh);
      CHECK(s == GHM_ERR_SHAPE, "sample_end SIZE_MAX: %s", sname(s));
      CHECK(same_bytes(g, snap, sizeof g), "hostile sizes: something was written");
    }
    s = ghm_softmax_loss_grad(&cfg, NULL, x, NULL, w, SN, C, GHM_LAYOUT_ANCHOR_MAJOR, g, NULL,
                              NULL, NULL);
    CHECK(s == GHM_ERR_NULL, "NULL labels: %s", sname(s));
    s = ghm_softmax_loss_grad(&cfg, NULL, x, y, w, SN, C, GHM_LAYOUT_ANCHOR_MAJOR, x, NULL, NULL,
                              NULL);
    CHECK(s == GHM_ERR_ALIAS, "grad over the logits: %s", sname(s));
    cfg.momentum = 0.9f;
    s = ghm_softmax_loss_grad(&cfg, NULL, x, y, w, SN, C, GHM_LAYOUT_ANCHOR_MAJOR, g, NULL, NULL,
                              NULL);
    CHECK(s == GHM_ERR_STATE, "momentum without EMA: %s", sname(s));
    cfg.momentum = 0.0f;
    /* Misaligned with more classes than the stack copies hold. */
    {
      enum { BIG = 4097 };
      float *bx = fvec(BIG + 1), *bg = fvec(BIG + 1);
      int32_t by = 1;
      for (i = 0; i <= BIG; i++) bx[i] = bg[i] = 0.0f;
      s = ghm_softmax_loss_grad(&cfg, NULL, (const float *)(void *)((char *)bx + 1), &by, NULL, 1,
                                BIG, GHM_LAYOUT_ANCHOR_MAJOR, (float *)(void *)((char *)bg + 1),
                                NULL, NULL, NULL);
      CHECK(s == GHM_ERR_SHAPE, "misaligned, 4097 classes: %s", sname(s));
      ghm_last_error(&r);
      CHECK(r.argument && strcmp(r.argument, "num_classes") == 0, "report names %s",
            r.argument ? r.argument : "(null)");
      s = ghm_softmax_loss_grad(&cfg, NULL, bx, &by, NULL, 1, BIG, GHM_LAYOUT_ANCHOR_MAJOR, bg,
                                NULL, NULL, NULL);
      CHECK(s == GHM_OK, "aligned, 4097 classes: %s", sname(s));
      free(bx), free(bg);
    }
  }
  check_group_end("input, state, shape, config, null, alias");
}

/* ------------------------------------------------------------------------------------------ */
/* The training log line (ghm_log_stats, ghm_log_weights) */

/* The numbers of the JSON array `"key":[...]` in `line` (at most `cap`); returns how many. */
static size_t json_array(const char *line, const char *key, double *out, size_t cap) {
  char pat[64];
  const char *p;
  size_t n = 0;
  snprintf(pat, sizeof pat, "\"%s\":[", key);
  p = strstr(line, pat);
  if (!p) return 0;
  p += strlen(pat);
  while (*p && *p != ']' && n < cap) {
    char *end;
    out[n++] = strtod(p, &end);
    if (end == p) return 0;
    p = *end == ',' ? end + 1 : end;
  }
  return n;
}

static void test_log(void) {
  enum { LN = 3001 };
  float *x = fvec(LN), *t = fvec(LN), loss = 0;
  ghm_c_config cfg = ghm_c_config_default();
  ghm_stats st, st2;
  ghm_hist h, h7;
  ghm_weights w;
  ghm_report r;
  static char buf[GHM_LOG_LINE_MAX], small[GHM_LOG_LINE_MAX];
  static double v[GHM_MAX_BINS + 1];
  char longtag[GHM_LOG_TAG_MAX + 2];
  size_t len = 0, i, n;
  int ok;
  check_group("log line");
  for (i = 0; i < LN; i++) {
    x[i] = (float)((int)(i * 7919 % 2000) - 1000) / 150.0f;
    t[i] = (i % 9 == 0) ? 1.0f : 0.0f;
  }
  cfg.bins = 12;
  EXPECT_OK(ghm_c_loss_grad(&cfg, NULL, x, t, NULL, LN, NULL, &loss, NULL, &st), "GHM-C call");
  EXPECT_OK(ghm_log_stats(&st, loss, 17, "yolo obj", 1.0f, buf, sizeof buf, &len),
            "ghm_log_stats");
  CHECK(len == strlen(buf) && len < GHM_LOG_LINE_MAX, "len %zu strlen %zu", len, strlen(buf));
  CHECK(strncmp(buf, "{\"v\":1,\"iter\":17,\"tag\":\"yolo obj\",\"bins\":12,\"g_max\":1.0,"
                     "\"edges\":[0.0,", 62) == 0 && buf[len - 1] == '}',
        "line starts %.80s", buf);
  n = json_array(buf, "counts", v, GHM_MAX_BINS);
  ok = n == 12;
  for (i = 0; ok && i < 12; i++) ok = v[i] == (double)st.counts[i];
  CHECK(ok, "counts: %zu of them, or one differs from stats.counts", n);
  n = json_array(buf, "weights", v, GHM_MAX_BINS);
  ok = n == 12;
  for (i = 0; ok && i < 12; i++) ok = (float)v[i] == st.weights[i];
  CHECK(ok, "weights: %zu of them, or one differs from stats.weights", n);
  n = json_array(buf, "edges", v, GHM_MAX_BINS + 1);
  CHECK(n == 13 && v[0] == 0.0 && (float)v[3] == 3.0f / 12.0f && v[12] == 1.0, "edges (%zu)", n);
  CHECK(strstr(buf, "\"skipped\":0,\"loss\":") != NULL, "skipped and loss: %s", buf + len - 40);

  /* Too small by one byte (the NUL): nothing written, the bytes needed in the report. */
  memset(small, 0x5a, sizeof small);
  CHECK(ghm_log_stats(&st, loss, 17, "yolo obj", 1.0f, small, len, &len) == GHM_ERR_SHAPE,
        "buf_len = len");
  expect_report(GHM_ERR_SHAPE, "buf_len", -1, "buf_len = len");
  ghm_last_error(&r);
  CHECK(r.has_value && r.value == (double)(len + 1), "needed %g, want %zu", r.value, len + 1);
  for (ok = 1, i = 0; i < sizeof small; i++) ok &= small[i] == 0x5a;
  CHECK(ok, "buf_len = len: buf written");
  EXPECT_OK(ghm_log_stats(&st, loss, 17, "yolo obj", 1.0f, small, len + 1, NULL),
            "buf_len = len + 1, len NULL");
  CHECK(strcmp(small, buf) == 0, "the same line in a buffer of exactly its size");

  /* Every refusal: nothing written. */
  memset(longtag, 'a', sizeof longtag - 1);
  longtag[sizeof longtag - 1] = 0;
  memset(small, 0x5a, sizeof small);
  st2 = st;
  CHECK(ghm_log_stats(NULL, loss, 1, "", 1.0f, small, sizeof small, &len) == GHM_ERR_NULL,
        "stats NULL");
  expect_report(GHM_ERR_NULL, "stats", -1, "stats NULL");
  CHECK(ghm_log_stats(&st, loss, 1, "", 1.0f, NULL, 100, &len) == GHM_ERR_NULL, "buf NULL");
  expect_report(GHM_ERR_NULL, "buf", -1, "buf NULL");
  CHECK(ghm_log_stats(&st, loss, 1, longtag, 1.0f, small, sizeof small, &len) ==
            GHM_ERR_CONFIG, "tag of 65 bytes");
  expect_report(GHM_ERR_CONFIG, "tag", -1, "tag of 65 bytes");
  CHECK(ghm_log_stats(&st, loss, 1, "\xff\xfe", 1.0f, small, sizeof small, &len) ==
            GHM_ERR_CONFIG, "tag not UTF-8");
  CHECK(ghm_log_stats(&st, loss, 1, "", 0.0f, small, sizeof small, &len) == GHM_ERR_CONFIG,
        "g_max 0");
  expect_report(GHM_ERR_CONFIG, "g_max", -1, "g_max 0");
  CHECK(ghm_log_stats(&st, loss, 1, "", f_nan(), small, sizeof small, &len) == GHM_ERR_CONFIG,
        "g_max NaN");
  st2.bins = 129;
  CHECK(ghm_log_stats(&st2, loss, 1, "", 1.0f, small, sizeof small, &len) == GHM_ERR_STATE,
        "stats.bins 129");
  expect_report(GHM_ERR_STATE, "stats", -1, "stats.bins 129");
  st2 = st;
  st2.nonempty_bins = 13;
  CHECK(ghm_log_stats(&st2, loss, 1, "", 1.0f, small, sizeof small, &len) == GHM_ERR_STATE,
        "stats.nonempty_bins 13");
  CHECK(ghm_log_stats(&st, loss, 1, "", 1.0f, small, sizeof small, (size_t *)(small + 8)) ==
            GHM_ERR_ALIAS, "len inside buf");
  expect_report(GHM_ERR_ALIAS, "buf", -1, "len inside buf");
  for (ok = 1, i = 0; i < sizeof small; i++) ok &= small[i] == 0x5a;
  CHECK(ok, "refused calls: buf written");
  st2 = st;
  CHECK(ghm_log_stats(&st2, loss, 1, "", 1.0f, (char *)&st2 + 16, 64, &len) == GHM_ERR_ALIAS,
        "buf inside stats");
  expect_report(GHM_ERR_ALIAS, "buf", -1, "buf inside stats");
  CHECK(memcmp(&st2, &st, sizeof st) == 0, "buf inside stats: stats written");

  /* The phased API's line: the merged histogram and the weights. */
  CHECK(ghm_hist_init(&h, 12) == GHM_OK && ghm_hist_init(&h7, 7) == GHM_OK, "hist_init");
  EXPECT_OK(ghm_c_accumulate(&cfg, x, t, NULL, 1000, &h), "accumulate 1");
  EXPECT_OK(ghm_c_accumulate(&cfg, x + 1000, t + 1000, NULL, LN - 1000, &h), "accumulate 2");
  EXPECT_OK(ghm_c_finalize(&cfg, NULL, &h, &w), "finalize");
  EXPECT_OK(ghm_log_weights(&h, &w, 18, NULL, 1.0f, small, sizeof small, &len),
            "ghm_log_weights");
  CHECK(strncmp(small, "{\"v\":1,\"iter\":18,\"tag\":\"\",\"bins\":12,", 36) == 0, "%.60s",
        small);
  n = json_array(small, "counts", v, GHM_MAX_BINS);
  ok = n == 12;
  for (i = 0; ok && i < 12; i++) ok = v[i] == (double)st.counts[i];
  CHECK(ok, "phased counts differ from the one call's");
  n = json_array(small, "weights", v, GHM_MAX_BINS);
  ok = n == 12;
  for (i = 0; ok && i < 12; i++) ok = (float)v[i] == w.weight[i] && w.weight[i] == st.weights[i];
  CHECK(ok, "phased weights differ");
  memset(small, 0x5a, sizeof small);
  CHECK(ghm_log_weights(&h7, &w, 18, NULL, 1.0f, small, sizeof small, &len) == GHM_ERR_STATE,
        "7-bin hist, 12-bin weights");
  expect_report(GHM_ERR_STATE, "hist", -1, "7-bin hist, 12-bin weights");
  CHECK(ghm_log_weights(&h, NULL, 18, NULL, 1.0f, small, sizeof small, &len) == GHM_ERR_NULL,
        "w NULL");
  CHECK(small[0] == 0x5a, "phased refusals: buf written");
  free(x);
  free(t);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DATA_DIR (tests/data/mmdet)\n", argv[0]);
    return 2;
  }
  printf("test_ffi (C99) against ghm 0x%06x, backend %s\n", (unsigned)ghm_version(),
         ghm_backend() ? ghm_backend() : "(null)");
  test_misc();
  test_parity(argv[1]);
  test_err_null();
  test_err_config();
  test_err_state();
  test_err_input();
  test_err_alias();
  test_err_shape();
  test_report();
  test_n_zero();
  test_skip_bad();
  test_optional_outputs();
  test_blocks();
  test_unaligned();
  test_darknet();
  test_phased();
  test_huge_scales();
  test_generic();
  test_softmax();
  test_log();
  return check_exit_code();
}
