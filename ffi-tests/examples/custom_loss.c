/*
 * GHM for a loss the library does not know: a smooth-L1 box regression head whose gradient
 * this program computes itself, reweighted by generic GHM (ghm_g_loss_grad: "bring your own
 * g"). The task: 4 box offsets regressed linearly from 8 features, with 15% of the training
 * targets badly annotated (offsets shifted by up to +-3). The same head is trained with plain
 * smooth L1 (mean over the batch) and with GHM, at the same learning rate; both held-out
 * errors are printed. Exits non-zero if either training fails to learn the boxes (held-out
 * mean absolute error above 0.05, from about 1 at the start) or a call fails.
 *
 *   make -C ffi-tests/examples custom LIBDIR=target/release    # STEPS (300), LR (0.2)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ghm.h"

enum { F = 8, K = 4, B = 1024, TEST = 2000 };

static uint64_t rng = 0x9E3779B97F4A7C15u;
static double unit(void) { /* uniform in [0, 1) */
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return (double)((rng * 0x2545F4914F6CDD1Du) >> 11) / 9007199254740992.0;
}
static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)unit(); }

static float truth[K][F]; /* the boxes' true linear map */

/* A sample: features, and its target offsets (a bad annotation for 15% of them). */
static void sample(float *f, float *y, int noisy) {
  int j, c;
  for (c = 0; c < F; c++) f[c] = uniform(-1.0f, 1.0f);
  for (j = 0; j < K; j++) {
    float v = 0.0f;
    for (c = 0; c < F; c++) v += truth[j][c] * f[c];
    y[j] = v + (noisy && unit() < 0.15 ? uniform(-3.0f, 3.0f) : uniform(-0.01f, 0.01f));
  }
}

/* Smooth L1 with beta (mmdet's box default 1/9): per coordinate d = pred - target,
 * l = d^2 / (2 beta) for |d| < beta, |d| - beta / 2 beyond; dl/dd = d / beta, or sign(d). */
#define BETA (1.0f / 9.0f)

/* Begin: the README's recipe (GHM for your own loss). */
/* One batch of a smooth-L1 box head through generic GHM. pred, target: n rows of 4 offsets.
 * grad (out): n rows of 4, the reweighted dL/dpred. Returns the loss. */
static float smooth_l1_ghm(const ghm_g_config *cfg, ghm_ema *ema, const float *pred,
                           const float *target, size_t n, float *grad, float *g, float *loss) {
  size_t i;
  int j;
  float total = 0.0f;
  for (i = 0; i < n; i++) {
    float gsum = 0.0f, l = 0.0f;
    for (j = 0; j < 4; j++) {
      float d = pred[4 * i + j] - target[4 * i + j], a = fabsf(d);
      float dl = a < BETA ? d / BETA : (d > 0.0f ? 1.0f : -1.0f); /* in [-1, 1] */
      l += a < BETA ? 0.5f * d * d / BETA : a - 0.5f * BETA;
      grad[4 * i + j] = dl;
      gsum += fabsf(dl);
    }
    g[i] = gsum / 4.0f; /* the sample's gradient norm: mean |dl/dd|, in [0, 1] = [0, g_max] */
    loss[i] = l;
  }
  /* Each sample's 4 gradients (a row of k = 4 adjacent floats, rows 4 apart, one block)
   * times its GHM factor, in place. */
  ghm_g_rows rows = {NULL, 4, 4, 1, 0, 0};
  rows.grad = grad;
  if (ghm_g_loss_grad(cfg, ema, g, loss, NULL, n, &rows, NULL, &total, NULL) != GHM_OK) {
    ghm_report r;
    ghm_last_error(&r);
    fprintf(stderr, "ghm_g_loss_grad: %s\n", r.message);
    exit(1);
  }
  return total;
}
/* End: the README's recipe. */

/* Plain smooth L1, mean over the batch: the same gradient without GHM. */
static float smooth_l1_plain(const float *pred, const float *target, size_t n, float *grad) {
  size_t i;
  int j;
  double total = 0.0;
  for (i = 0; i < n; i++)
    for (j = 0; j < K; j++) {
      float d = pred[K * i + j] - target[K * i + j], a = fabsf(d);
      total += a < BETA ? 0.5f * d * d / BETA : a - 0.5f * BETA;
      grad[K * i + j] = (a < BETA ? d / BETA : (d > 0.0f ? 1.0f : -1.0f)) / (float)n;
    }
  return (float)(total / (double)n);
}

/* Held-out mean absolute error of the boxes against the true map (clean targets). */
static double held_out(float w[K][F], const float *tf, const float *ty) {
  double err = 0.0;
  int i, j, c;
  for (i = 0; i < TEST; i++)
    for (j = 0; j < K; j++) {
      float v = 0.0f;
      for (c = 0; c < F; c++) v += w[j][c] * tf[F * i + c];
      err += fabs(v - ty[K * i + j]);
    }
  return err / (TEST * K);
}

/* Trains from zero; ghm: generic GHM or plain smooth L1. Returns the held-out error. */
static double train(int ghm, int steps, float lr, const float *tf, const float *ty) {
  static float f[B * F], y[B * K], pred[B * K], grad[B * K], g[B], loss[B];
  float w[K][F];
  ghm_g_config cfg = ghm_g_config_default();
  ghm_ema ema;
  int s, i, j, c;
  float l = 0.0f;
  cfg.bins = 10;
  cfg.momentum = 0.75f;
  cfg.ema_start = GHM_EMA_START_FIRST_COUNT;
  ghm_ema_init(&ema, cfg.bins);
  memset(w, 0, sizeof w);
  rng = 0x1234567u; /* the same batches for both */
  for (s = 0; s < steps; s++) {
    for (i = 0; i < B; i++) {
      sample(f + F * i, y + K * i, 1);
      for (j = 0; j < K; j++) {
        float v = 0.0f;
        for (c = 0; c < F; c++) v += w[j][c] * f[F * i + c];
        pred[K * i + j] = v;
      }
    }
    l = ghm ? smooth_l1_ghm(&cfg, &ema, pred, y, B, grad, g, loss)
            : smooth_l1_plain(pred, y, B, grad);
    for (j = 0; j < K; j++)
      for (c = 0; c < F; c++) {
        float dw = 0.0f;
        for (i = 0; i < B; i++) dw += grad[K * i + j] * f[F * i + c];
        w[j][c] -= lr * dw;
      }
  }
  printf("  %-16s final batch loss %.4f (%s)\n", ghm ? "generic GHM" : "plain smooth L1", l,
         ghm ? "GHM-weighted" : "mean smooth L1");
  return held_out(w, tf, ty);
}

int main(int argc, char **argv) {
  int steps = argc > 1 ? atoi(argv[1]) : 300;
  float lr = argc > 2 ? (float)atof(argv[2]) : 0.2f;
  static float tf[TEST * F], ty[TEST * K];
  float zero[K][F];
  double plain, ghm, start;
  int j, c, i;
  for (j = 0; j < K; j++)
    for (c = 0; c < F; c++) truth[j][c] = uniform(-1.0f, 1.0f);
  for (i = 0; i < TEST; i++) sample(tf + F * i, ty + K * i, 0);
  memset(zero, 0, sizeof zero);
  start = held_out(zero, tf, ty);
  printf("smooth-L1 box head, 4 offsets from %d features, 15%% bad annotations; %d steps of %d, "
         "lr %g\n", F, steps, B, lr);
  plain = train(0, steps, lr, tf, ty);
  ghm = train(1, steps, lr, tf, ty);
  printf("held-out mean |error|: untrained %.4f, plain smooth L1 %.4f, generic GHM %.4f\n",
         start, plain, ghm);
  if (!(plain < 0.05 && ghm < 0.05)) {
    fprintf(stderr, "FAIL: a head did not learn the boxes (held-out error >= 0.05)\n");
    return 1;
  }
  return 0;
}
