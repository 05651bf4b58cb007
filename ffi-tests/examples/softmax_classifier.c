/*
 * A softmax classifier trained with softmax cross-entropy GHM (ghm_softmax_loss_grad: the
 * library computes the loss and its gradient) against plain softmax cross-entropy (mean over
 * the batch), at the same learning rate. The task: 10 classes of Gaussian clusters in 16
 * dimensions, long-tailed (class k drawn with probability proportional to 0.6^k: the first
 * class is 40% of the samples, the last 0.4%), a linear classifier trained by SGD. Both
 * held-out accuracies are printed, overall and balanced (the mean of the per-class recalls,
 * on a balanced test set). Exits non-zero if a call fails or either run fails to learn
 * (balanced accuracy under 0.5; chance is 0.1).
 *
 *   make -C ffi-tests/examples softmax LIBDIR=target/release    # STEPS (300), LR (0.2)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ghm.h"

enum { D = 16, C = 10, B = 512, TEST_PER_CLASS = 400 };

static uint64_t rng = 0x9E3779B97F4A7C15u;
static double unit(void) { /* uniform in [0, 1) */
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return (double)((rng * 0x2545F4914F6CDD1Du) >> 11) / 9007199254740992.0;
}
static float normal(void) { /* Box-Muller */
  double u = unit() + 1e-12, v = unit();
  return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static float centre[C][D]; /* the classes' means */

/* A sample of class k: its features. */
static void sample_of(int k, float *x) {
  int d;
  for (d = 0; d < D; d++) x[d] = centre[k][d] + 1.2f * normal();
}

/* A class from the long-tailed prior (weights 0.6^k). */
static int draw_class(void) {
  double total = 0.0, r, w = 1.0;
  int k;
  for (k = 0; k < C; k++, w *= 0.6) total += w;
  r = unit() * total;
  for (k = 0, w = 1.0; k < C - 1; k++, w *= 0.6) {
    if (r < w) return k;
    r -= w;
  }
  return C - 1;
}

/* Begin: the README's recipe (softmax cross-entropy GHM). */
/* One batch of a C-way softmax head through GHM: logits [n][C] (row-major, as a matmul
 * writes them), one class index per sample (< 0 or >= C: ignored). Writes dL/dlogits into
 * grad ([n][C]) and returns the loss. The EMA carries the bins' counts across batches. */
static float softmax_ghm(const ghm_softmax_config *cfg, ghm_ema *ema, const float *logits,
                         const int32_t *labels, size_t n, float *grad) {
  float loss = 0.0f;
  ghm_status s = ghm_softmax_loss_grad(cfg, ema, logits, labels, NULL, n, C,
                                       GHM_LAYOUT_ANCHOR_MAJOR, grad, &loss, NULL, NULL);
  if (s != GHM_OK) {
    ghm_report r;
    ghm_last_error(&r);
    fprintf(stderr, "ghm_softmax_loss_grad: %s\n", r.message);
    exit(1);
  }
  return loss;
}
/* End: the README's recipe. */

/* Plain softmax cross-entropy, mean over the batch: its loss, and dL/dlogits into grad. */
static float softmax_plain(const float *logits, const int32_t *labels, size_t n, float *grad) {
  size_t i;
  int k;
  double total = 0.0;
  for (i = 0; i < n; i++) {
    const float *x = logits + C * i;
    float m = x[0], s = 0.0f;
    for (k = 1; k < C; k++) m = x[k] > m ? x[k] : m;
    for (k = 0; k < C; k++) s += expf(x[k] - m);
    total += logf(s) - (x[labels[i]] - m);
    for (k = 0; k < C; k++)
      grad[C * i + k] = (expf(x[k] - m) / s - (k == labels[i] ? 1.0f : 0.0f)) / (float)n;
  }
  return (float)(total / (double)n);
}

/* logits = W x + b for n samples. */
static void forward(float w[C][D], const float *b, const float *x, size_t n, float *logits) {
  size_t i;
  int k, d;
  for (i = 0; i < n; i++)
    for (k = 0; k < C; k++) {
      float v = b[k];
      for (d = 0; d < D; d++) v += w[k][d] * x[D * i + d];
      logits[C * i + k] = v;
    }
}

/* Held-out accuracy, overall (test set drawn from the prior) and balanced (mean recall). */
static void evaluate(float w[C][D], const float *b, double *overall, double *balanced) {
  static float x[C * TEST_PER_CLASS * D], logits[C * TEST_PER_CLASS * C];
  int k, i, j, hit[C] = {0};
  double recall = 0.0;
  uint64_t saved = rng;
  rng = 0xC0FFEEu;
  for (k = 0; k < C; k++)
    for (i = 0; i < TEST_PER_CLASS; i++) sample_of(k, x + D * (k * TEST_PER_CLASS + i));
  forward(w, b, x, C * TEST_PER_CLASS, logits);
  for (k = 0; k < C; k++)
    for (i = 0; i < TEST_PER_CLASS; i++) {
      const float *l = logits + C * (k * TEST_PER_CLASS + i);
      int best = 0;
      for (j = 1; j < C; j++) best = l[j] > l[best] ? j : best;
      hit[k] += best == k;
    }
  /* Overall accuracy under the training prior: each class's recall weighted by 0.6^k. */
  {
    double wsum = 0.0, acc = 0.0, p = 1.0;
    for (k = 0; k < C; k++, p *= 0.6) {
      acc += p * hit[k] / (double)TEST_PER_CLASS;
      wsum += p;
      recall += hit[k] / (double)TEST_PER_CLASS;
    }
    *overall = acc / wsum;
  }
  *balanced = recall / C;
  rng = saved;
}

/* Trains from zero; ghm: softmax GHM or plain cross-entropy. */
static void train(int ghm, int steps, float lr, double *overall, double *balanced) {
  static float x[B * D], logits[B * C], grad[B * C];
  static int32_t labels[B];
  float w[C][D], b[C], l = 0.0f;
  ghm_softmax_config cfg = ghm_softmax_config_default();
  ghm_ema ema;
  int s, i, k, d;
  cfg.momentum = 0.75f;
  cfg.ema_start = GHM_EMA_START_FIRST_COUNT;
  ghm_ema_init(&ema, cfg.bins);
  memset(w, 0, sizeof w);
  memset(b, 0, sizeof b);
  rng = 0x1234567u; /* the same batches for both */
  for (s = 0; s < steps; s++) {
    for (i = 0; i < B; i++) {
      labels[i] = draw_class();
      sample_of(labels[i], x + D * i);
    }
    forward(w, b, x, B, logits);
    l = ghm ? softmax_ghm(&cfg, &ema, logits, labels, B, grad)
            : softmax_plain(logits, labels, B, grad);
    for (k = 0; k < C; k++) {
      float db = 0.0f;
      for (i = 0; i < B; i++) db += grad[C * i + k];
      b[k] -= lr * db;
      for (d = 0; d < D; d++) {
        float dw = 0.0f;
        for (i = 0; i < B; i++) dw += grad[C * i + k] * x[D * i + d];
        w[k][d] -= lr * dw;
      }
    }
  }
  evaluate(w, b, overall, balanced);
  printf("  %-22s final batch loss %.4f; held-out accuracy %.4f, balanced %.4f\n",
         ghm ? "softmax GHM" : "plain cross-entropy", l, *overall, *balanced);
}

int main(int argc, char **argv) {
  int steps = argc > 1 ? atoi(argv[1]) : 300;
  float lr = argc > 2 ? (float)atof(argv[2]) : 0.2f;
  double po, pb, go, gb;
  int k, d;
  for (k = 0; k < C; k++)
    for (d = 0; d < D; d++) centre[k][d] = normal();
  printf("softmax classifier, %d classes in %d dimensions, long-tailed (0.6^k); %d steps of "
         "%d, lr %g\n", C, D, steps, B, lr);
  train(0, steps, lr, &po, &pb);
  train(1, steps, lr, &go, &gb);
  printf("held-out balanced accuracy: plain %.4f, GHM %.4f (chance %.2f)\n", pb, gb, 1.0 / C);
  if (!(pb >= 0.5 && gb >= 0.5)) {
    fprintf(stderr, "FAIL: a classifier did not learn (balanced accuracy < 0.5)\n");
    return 1;
  }
  return 0;
}
