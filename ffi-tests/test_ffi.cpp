// The C ABI of ghm (include/ghm.h) used from C++17: the header's layouts and signatures at
// compile time, and a smaller set of behavioural checks than test_ffi.c (mmdet parity with the
// EMA, labels in both layouts, the phased API across threads, errors that write nothing).
//
//   test_ffi_cpp DATA_DIR      (DATA_DIR = tests/data/mmdet)

#include "ghm.h"
#include "check.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

// ---------------------------------------------------------------------------------------------
// Layouts: the structs are the contract's (docs/contract.md section 3), plain data, C-compatible.

static_assert(GHM_MAX_BINS == 128, "GHM_MAX_BINS");
static_assert(sizeof(ghm_report) == 24 + 4 * sizeof(void *) + GHM_REPORT_MESSAGE_SIZE, "ghm_report");
static_assert(std::is_same<ghm_status, int32_t>::value, "ghm_status is int32_t");
static_assert(GHM_OK == 0 && GHM_ERR_NULL == -1 && GHM_ERR_CONFIG == -2 && GHM_ERR_STATE == -3 &&
                  GHM_ERR_INPUT == -4 && GHM_ERR_ALIAS == -5 && GHM_ERR_SHAPE == -6,
              "status codes");
static_assert(GHM_REDUCTION_MEAN == 0 && GHM_REDUCTION_SUM == 1 && GHM_REDUCTION_NONE == 2,
              "reductions");
static_assert(GHM_INPUT_LOGITS == 0 && GHM_INPUT_PROBS == 1, "inputs");
static_assert(GHM_LAYOUT_ANCHOR_MAJOR == 0 && GHM_LAYOUT_CLASS_MAJOR == 1, "layouts");

template <class T>
constexpr bool plain_data() {
  return std::is_trivially_copyable<T>::value && std::is_standard_layout<T>::value;
}
static_assert(plain_data<ghm_c_config>() && plain_data<ghm_r_config>() && plain_data<ghm_ema>() &&
                  plain_data<ghm_hist>() && plain_data<ghm_stats>() && plain_data<ghm_weights>(),
              "plain data");

static_assert(sizeof(ghm_c_config) == 10 * 4, "ghm_c_config size");
static_assert(offsetof(ghm_c_config, bins) == 0 && offsetof(ghm_c_config, momentum) == 4 &&
                  offsetof(ghm_c_config, loss_weight) == 8 &&
                  offsetof(ghm_c_config, reduction) == 12 &&
                  offsetof(ghm_c_config, grad_scale) == 16 &&
                  offsetof(ghm_c_config, accumulate) == 20 &&
                  offsetof(ghm_c_config, skip_bad) == 24 && offsetof(ghm_c_config, input) == 28 &&
                  offsetof(ghm_c_config, normalize) == 32 &&
                  offsetof(ghm_c_config, ema_start) == 36,
              "ghm_c_config fields");
static_assert(sizeof(ghm_r_config) == 10 * 4, "ghm_r_config size");
static_assert(offsetof(ghm_r_config, bins) == 0 && offsetof(ghm_r_config, momentum) == 4 &&
                  offsetof(ghm_r_config, mu) == 8 && offsetof(ghm_r_config, loss_weight) == 12 &&
                  offsetof(ghm_r_config, reduction) == 16 &&
                  offsetof(ghm_r_config, grad_scale) == 20 &&
                  offsetof(ghm_r_config, accumulate) == 24 &&
                  offsetof(ghm_r_config, skip_bad) == 28 &&
                  offsetof(ghm_r_config, normalize) == 32 &&
                  offsetof(ghm_r_config, ema_start) == 36,
              "ghm_r_config fields");
static_assert(std::is_same<decltype(ghm_c_config::bins), uint32_t>::value &&
                  std::is_same<decltype(ghm_c_config::reduction), uint32_t>::value &&
                  std::is_same<decltype(ghm_c_config::accumulate), uint32_t>::value &&
                  std::is_same<decltype(ghm_c_config::skip_bad), uint32_t>::value &&
                  std::is_same<decltype(ghm_c_config::input), uint32_t>::value &&
                  std::is_same<decltype(ghm_c_config::momentum), float>::value,
              "enum-like fields are uint32_t");

static_assert(sizeof(ghm_ema) == 4 + 4 * 128, "ghm_ema size");
static_assert(alignof(ghm_ema) == 4 && offsetof(ghm_ema, acc_sum) == 4, "ghm_ema fields");

static_assert(sizeof(ghm_hist) == 8 + 8 * 128 + 8 * 128 + 8 + 8 + 8 * 128, "ghm_hist size");
static_assert(alignof(ghm_hist) == 8, "ghm_hist alignment");
static_assert(offsetof(ghm_hist, bins) == 0 && offsetof(ghm_hist, reserved) == 4 &&
                  offsetof(ghm_hist, counts) == 8 && offsetof(ghm_hist, loss_sums) == 8 + 8 * 128 &&
                  offsetof(ghm_hist, tot) == 8 + 16 * 128 &&
                  offsetof(ghm_hist, skipped) == 16 + 16 * 128,
              "ghm_hist fields");
static_assert(std::is_same<decltype(ghm_hist::counts), uint64_t[GHM_MAX_BINS]>::value &&
                  std::is_same<decltype(ghm_hist::loss_sums), double[GHM_MAX_BINS]>::value,
              "ghm_hist arrays");

static_assert(offsetof(ghm_stats, bins) == 0 && offsetof(ghm_stats, nonempty_bins) == 4 &&
                  offsetof(ghm_stats, tot) == 8 && offsetof(ghm_stats, counts) == 16 &&
                  offsetof(ghm_stats, weights) == 16 + 8 * 128 &&
                  offsetof(ghm_stats, skipped) == 16 + 12 * 128 &&
                  sizeof(ghm_stats) == 24 + 12 * 128,
              "ghm_stats fields");

static_assert(offsetof(ghm_weights, bins) == 0 && offsetof(ghm_weights, nonempty_bins) == 4 &&
                  offsetof(ghm_weights, tot) == 8 && offsetof(ghm_weights, loss) == 16 &&
                  offsetof(ghm_weights, weight) == 24 &&
                  offsetof(ghm_weights, scale) == 24 + 4 * 128 &&
                  sizeof(ghm_weights) == 24 + 8 * 128,
              "ghm_weights fields");

// The signatures of docs/contract.md section 3, exactly.
static_assert(std::is_same<decltype(&ghm_status_str), const char *(*)(ghm_status)>::value, "");
static_assert(std::is_same<decltype(&ghm_version), uint32_t (*)()>::value, "");
static_assert(std::is_same<decltype(&ghm_backend), const char *(*)()>::value, "");
static_assert(std::is_same<decltype(&ghm_c_config_default), ghm_c_config (*)()>::value, "");
static_assert(std::is_same<decltype(&ghm_r_config_default), ghm_r_config (*)()>::value, "");
static_assert(std::is_same<decltype(&ghm_ema_init), ghm_status (*)(ghm_ema *, uint32_t)>::value,
              "");
static_assert(std::is_same<decltype(&ghm_c_loss_grad),
                           ghm_status (*)(const ghm_c_config *, ghm_ema *, const float *,
                                          const float *, const float *, size_t, float *, float *,
                                          float *, ghm_stats *)>::value,
              "ghm_c_loss_grad");
static_assert(std::is_same<decltype(&ghm_c_loss_grad_labels),
                           ghm_status (*)(const ghm_c_config *, ghm_ema *, const float *,
                                          const int32_t *, const float *, size_t, size_t,
                                          uint32_t, float *, float *, float *,
                                          ghm_stats *)>::value,
              "ghm_c_loss_grad_labels");
static_assert(std::is_same<decltype(&ghm_r_loss_grad),
                           ghm_status (*)(const ghm_r_config *, ghm_ema *, const float *,
                                          const float *, const float *, size_t, float *, float *,
                                          float *, ghm_stats *)>::value,
              "ghm_r_loss_grad");
static_assert(std::is_same<decltype(&ghm_hist_init), ghm_status (*)(ghm_hist *, uint32_t)>::value,
              "");
static_assert(std::is_same<decltype(&ghm_hist_merge),
                           ghm_status (*)(ghm_hist *, const ghm_hist *)>::value,
              "");
static_assert(std::is_same<decltype(&ghm_c_accumulate),
                           ghm_status (*)(const ghm_c_config *, const float *, const float *,
                                          const float *, size_t, ghm_hist *)>::value,
              "ghm_c_accumulate");
static_assert(std::is_same<decltype(&ghm_c_finalize),
                           ghm_status (*)(const ghm_c_config *, ghm_ema *, const ghm_hist *,
                                          ghm_weights *)>::value,
              "ghm_c_finalize");
static_assert(std::is_same<decltype(&ghm_c_apply),
                           ghm_status (*)(const ghm_c_config *, const ghm_weights *,
                                          const float *, const float *, const float *, size_t,
                                          float *, float *)>::value,
              "ghm_c_apply");
static_assert(std::is_same<decltype(&ghm_r_accumulate),
                           ghm_status (*)(const ghm_r_config *, const float *, const float *,
                                          const float *, size_t, ghm_hist *)>::value,
              "ghm_r_accumulate");
static_assert(std::is_same<decltype(&ghm_r_finalize),
                           ghm_status (*)(const ghm_r_config *, ghm_ema *, const ghm_hist *,
                                          ghm_weights *)>::value,
              "ghm_r_finalize");
static_assert(std::is_same<decltype(&ghm_r_apply),
                           ghm_status (*)(const ghm_r_config *, const ghm_weights *,
                                          const float *, const float *, const float *, size_t,
                                          float *, float *)>::value,
              "ghm_r_apply");

namespace {

// ---------------------------------------------------------------------------------------------
// RAII and small helpers

// A loaded reference case, freed on scope exit.
struct Case {
  jcase c{};
  std::string error;
  bool ok = false;
  explicit Case(const std::string &path) {
    char err[4200] = {0};
    ok = jcase_load(path.c_str(), &c, err, sizeof err) == 0;
    if (!ok) error = err;
  }
  ~Case() { jcase_free(&c); }
  Case(const Case &) = delete;
  Case &operator=(const Case &) = delete;
};

std::vector<float> vec(const float *p, size_t n) { return std::vector<float>(p, p + n); }

std::vector<float> transpose(const std::vector<float> &a, size_t n, size_t c) {
  std::vector<float> t(a.size());
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < c; j++) t[j * n + i] = a[i * c + j];
  return t;
}

template <class T>
bool same_bytes(const T &a, const T &b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

bool same_floats(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

std::string sname(ghm_status s) { return std::to_string(s) + " (" + ghm_status_str(s) + ")"; }

ghm_ema make_ema(uint32_t bins) {
  ghm_ema e;
  std::memset(&e, 0xA5, sizeof e);
  CHECK(ghm_ema_init(&e, bins) == GHM_OK, "ghm_ema_init(%u)", bins);
  return e;
}

ghm_hist make_hist(uint32_t bins) {
  ghm_hist h;
  std::memset(&h, 0xA5, sizeof h);
  CHECK(ghm_hist_init(&h, bins) == GHM_OK, "ghm_hist_init(%u)", bins);
  return h;
}

std::mt19937 rng(12345);

float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng); }

// ---------------------------------------------------------------------------------------------
// Parity: a case, all iterations, EMA carried over; labels in the given layout.

void parity(const std::string &dir, const char *name, uint32_t layout) {
  Case cs(dir + "/" + name + ".json");
  if (!CHECK(cs.ok, "cannot load %s: %s", name, cs.error.c_str())) return;
  const jcase &c = cs.c;
  const bool is_c = std::string(c.kind) == "ghmc";
  const uint32_t red = std::string(c.reduction) == "none" ? GHM_REDUCTION_NONE : GHM_REDUCTION_MEAN;
  ghm_ema ema = make_ema(c.bins);
  for (size_t it = 0; it < c.n_iters; it++) {
    const jiter &j = c.iters[it];
    const bool cm = j.labels && layout == GHM_LAYOUT_CLASS_MAJOR;
    std::vector<float> pred = vec(j.pred, j.n), want = vec(j.exp_grad, j.n);
    std::vector<float> want_le;
    if (j.exp_loss_elems) want_le = vec(j.exp_loss_elems, j.n);
    if (cm) {
      pred = transpose(pred, c.shape[0], c.shape[1]);
      want = transpose(want, c.shape[0], c.shape[1]);
      if (!want_le.empty()) want_le = transpose(want_le, c.shape[0], c.shape[1]);
    }
    std::vector<float> grad(j.n), le(j.n);
    float loss = -1.0f;
    ghm_ema *e = c.momentum > 0 ? &ema : nullptr;
    float *lep = want_le.empty() ? nullptr : le.data();
    ghm_status st;
    if (is_c) {
      ghm_c_config cfg = ghm_c_config_default();
      cfg.bins = c.bins;
      cfg.momentum = static_cast<float>(c.momentum);
      cfg.loss_weight = static_cast<float>(c.loss_weight);
      cfg.reduction = red;
      st = j.labels ? ghm_c_loss_grad_labels(&cfg, e, pred.data(), j.labels, j.label_weight,
                                             c.shape[0], c.shape[1], layout, grad.data(), &loss,
                                             lep, nullptr)
                    : ghm_c_loss_grad(&cfg, e, pred.data(), j.target, j.label_weight, j.n,
                                      grad.data(), &loss, lep, nullptr);
    } else {
      ghm_r_config cfg = ghm_r_config_default();
      cfg.bins = c.bins;
      cfg.momentum = static_cast<float>(c.momentum);
      cfg.loss_weight = static_cast<float>(c.loss_weight);
      cfg.mu = static_cast<float>(c.mu);
      cfg.reduction = red;
      st = ghm_r_loss_grad(&cfg, e, pred.data(), j.target, j.label_weight, j.n, grad.data(),
                           &loss, lep, nullptr);
    }
    if (!CHECK(st == GHM_OK, "%s iter %zu: %s", name, it, sname(st).c_str())) continue;
    const double lr = j.exp_loss == 0 ? std::fabs(loss) : check_rel(loss, j.exp_loss);
    CHECK(lr <= 1e-5, "%s iter %zu layout %u: loss %.9g, want %.9g", name, it, layout,
          static_cast<double>(loss), j.exp_loss);
    CHECK(check_max_rel(grad.data(), want.data(), j.n) <= 1e-5, "%s iter %zu layout %u: grad",
          name, it, layout);
    if (lep)
      CHECK(check_max_rel(le.data(), want_le.data(), j.n) <= 1e-5, "%s iter %zu: loss_elems",
            name, it);
    for (size_t k = 0; j.exp_acc_sum && k < j.n_acc_sum; k++)
      CHECK(check_rel(ema.acc_sum[k], j.exp_acc_sum[k]) <= 1e-6, "%s iter %zu: acc_sum[%zu]",
            name, it, k);
  }
}

void test_parity(const std::string &dir) {
  check_group("C++: mmdet parity");
  parity(dir, "ghmc_dense_momentum", GHM_LAYOUT_ANCHOR_MAJOR);
  parity(dir, "ghmr_mu_none", GHM_LAYOUT_ANCHOR_MAJOR);
  parity(dir, "ghmr_momentum", GHM_LAYOUT_ANCHOR_MAJOR);
  parity(dir, "ghmc_labels_momentum", GHM_LAYOUT_ANCHOR_MAJOR);
  parity(dir, "ghmc_labels_momentum", GHM_LAYOUT_CLASS_MAJOR);
  check_group_done();
}

// ---------------------------------------------------------------------------------------------
// The phased API with chunks on threads == the one call.

struct Batch {
  size_t na, nc;
  std::vector<float> pred, target, lw;  // dense: n; labels: lw per anchor
  std::vector<int32_t> labels;
};

Batch make_batch(size_t na, size_t nc) {
  Batch b{na, nc, {}, {}, {}, {}};
  const size_t n = na * nc;
  b.pred.resize(n);
  b.target.resize(n);
  b.lw.resize(n);
  b.labels.resize(na);
  for (size_t i = 0; i < n; i++) {
    b.pred[i] = uniform(-7.0f, 5.0f);
    b.target[i] = rng() % 3 == 0 ? 1.0f : 0.0f;
    b.lw[i] = rng() % 10 == 0 ? 0.0f : 1.0f;
  }
  for (size_t a = 0; a < na; a++)
    b.labels[a] = static_cast<int32_t>(rng() % (nc + 2)) - 1;  // -1 and nc: background
  return b;
}

// mode 0: dense; 1: labels anchor-major; 2: labels class-major.
void phased_threads(int mode) {
  const uint32_t bins = 16;
  ghm_c_config cfg = ghm_c_config_default();
  cfg.bins = bins;
  cfg.momentum = 0.75f;
  ghm_ema ema_one = make_ema(bins), ema_ph = make_ema(bins);
  const uint32_t layout = mode == 2 ? GHM_LAYOUT_CLASS_MAJOR : GHM_LAYOUT_ANCHOR_MAJOR;
  for (int batch = 0; batch < 2; batch++) {
    Batch b = make_batch(500 + rng() % 300, 7);
    const size_t n = b.pred.size(), units = mode ? b.na : n;
    std::vector<float> g1(n), g2(n, std::numeric_limits<float>::quiet_NaN());
    float loss1 = -1.0f;
    ghm_status st =
        mode ? ghm_c_loss_grad_labels(&cfg, &ema_one, b.pred.data(), b.labels.data(), b.lw.data(),
                                      b.na, b.nc, layout, g1.data(), &loss1, nullptr, nullptr)
             : ghm_c_loss_grad(&cfg, &ema_one, b.pred.data(), b.target.data(), b.lw.data(), n,
                               g1.data(), &loss1, nullptr, nullptr);
    CHECK(st == GHM_OK, "one call: %s", sname(st).c_str());

    const size_t nthreads = 4;
    std::vector<size_t> cut{0};
    for (size_t t = 1; t < nthreads; t++) cut.push_back(rng() % (units + 1));
    cut.push_back(units);
    std::sort(cut.begin() + 1, cut.end() - 1);
    std::vector<ghm_hist> hists(nthreads);
    std::vector<ghm_status> status(nthreads, GHM_OK);
    auto each = [&](auto fn) {
      std::vector<std::thread> threads;
      for (size_t t = 0; t < nthreads; t++) threads.emplace_back(fn, t, cut[t], cut[t + 1]);
      for (auto &th : threads) th.join();
    };
    each([&](size_t t, size_t lo, size_t hi) {
      ghm_hist_init(&hists[t], bins);
      status[t] = mode ? ghm_c_accumulate_labels(&cfg, b.pred.data(), b.labels.data(),
                                                 b.lw.data(), b.na, b.nc, layout, lo, hi,
                                                 &hists[t])
                       : ghm_c_accumulate(&cfg, b.pred.data() + lo, b.target.data() + lo,
                                          b.lw.data() + lo, hi - lo, &hists[t]);
    });
    ghm_hist total = make_hist(bins);
    for (size_t t = nthreads; t-- > 0;) st = std::min(st, ghm_hist_merge(&total, &hists[t]));
    ghm_weights w;
    ghm_status fin = ghm_c_finalize(&cfg, &ema_ph, &total, &w);
    CHECK(fin == GHM_OK, "finalize: %s", sname(fin).c_str());
    each([&](size_t t, size_t lo, size_t hi) {
      status[t] = std::min(
          status[t], mode ? ghm_c_apply_labels(&cfg, &w, b.pred.data(), b.labels.data(),
                                               b.lw.data(), b.na, b.nc, layout, lo, hi, g2.data(),
                                               nullptr)
                          : ghm_c_apply(&cfg, &w, b.pred.data() + lo, b.target.data() + lo,
                                        b.lw.data() + lo, hi - lo, g2.data() + lo, nullptr));
    });
    for (size_t t = 0; t < nthreads; t++)
      CHECK(status[t] == GHM_OK, "mode %d thread %zu: %s", mode, t, sname(status[t]).c_str());
    CHECK(same_floats(g1, g2), "mode %d batch %d: phased gradients differ from the one call", mode,
          batch);
    CHECK(check_ulps(static_cast<float>(w.loss), loss1) <= 1, "mode %d batch %d: loss %.9g vs %.9g",
          mode, batch, w.loss, static_cast<double>(loss1));
    CHECK(same_bytes(ema_one, ema_ph), "mode %d batch %d: EMA differs", mode, batch);
  }
}

void test_phased() {
  check_group("C++: phased on 4 threads");
  for (int mode = 0; mode < 3; mode++) phased_threads(mode);
  check_group_done();
}

// ---------------------------------------------------------------------------------------------
// Errors write nothing.

struct Outputs {
  std::vector<float> grad, le;
  float loss;
  ghm_stats stats;
  ghm_ema ema;
  explicit Outputs(size_t n) : grad(n), le(n), loss(0), stats(), ema() {
    std::memset(grad.data(), 0xA5, n * sizeof(float));
    std::memset(le.data(), 0xA5, n * sizeof(float));
    std::memset(&loss, 0xA5, sizeof loss);
    std::memset(&stats, 0xA5, sizeof stats);
    ema = make_ema(10);
  }
  bool operator==(const Outputs &o) const {
    return same_floats(grad, o.grad) && same_floats(le, o.le) && same_bytes(loss, o.loss) &&
           same_bytes(stats, o.stats) && same_bytes(ema, o.ema);
  }
};

void test_errors() {
  check_group("C++: errors write nothing");
  Batch b = make_batch(64, 3);
  const size_t n = b.pred.size();
  ghm_c_config cfg = ghm_c_config_default();
  cfg.momentum = 0.5f;
  ghm_ema warm = make_ema(10);  // an EMA with history, so that a write would show
  CHECK(ghm_c_loss_grad(&cfg, &warm, b.pred.data(), b.target.data(), b.lw.data(), n, nullptr,
                        nullptr, nullptr, nullptr) == GHM_OK,
        "warm-up");
  auto expect = [&](ghm_status want, const char *what, auto &&call) {
    Outputs o(n);
    o.ema = warm;
    const Outputs before = o;
    const std::vector<float> pred = b.pred;
    ghm_status got = call(o);
    CHECK(got == want, "%s: got %s, want %s", what, sname(got).c_str(), sname(want).c_str());
    CHECK(o == before && pred == b.pred, "%s: returned %d but wrote something", what, got);
  };
  expect(GHM_ERR_INPUT, "NaN logit", [&](Outputs &o) {
    const float keep = b.pred[n - 1];
    b.pred[n - 1] = std::numeric_limits<float>::quiet_NaN();
    ghm_status s = ghm_c_loss_grad(&cfg, &o.ema, b.pred.data(), b.target.data(), b.lw.data(), n,
                                   o.grad.data(), &o.loss, o.le.data(), &o.stats);
    b.pred[n - 1] = keep;
    return s;
  });
  expect(GHM_ERR_INPUT, "target 1.5", [&](Outputs &o) {
    const float keep = b.target[7];
    b.target[7] = 1.5f;
    ghm_status s = ghm_c_loss_grad(&cfg, &o.ema, b.pred.data(), b.target.data(), b.lw.data(), n,
                                   o.grad.data(), &o.loss, o.le.data(), &o.stats);
    b.target[7] = keep;
    return s;
  });
  expect(GHM_ERR_ALIAS, "grad == pred", [&](Outputs &o) {
    return ghm_c_loss_grad(&cfg, &o.ema, b.pred.data(), b.target.data(), b.lw.data(), n,
                           b.pred.data(), &o.loss, o.le.data(), &o.stats);
  });
  expect(GHM_ERR_CONFIG, "bins 0", [&](Outputs &o) {
    ghm_c_config bad = cfg;
    bad.bins = 0;
    return ghm_c_loss_grad(&bad, &o.ema, b.pred.data(), b.target.data(), b.lw.data(), n,
                           o.grad.data(), &o.loss, o.le.data(), &o.stats);
  });
  expect(GHM_ERR_STATE, "EMA of other bins", [&](Outputs &o) {
    ghm_c_config bad = cfg;
    bad.bins = 11;
    return ghm_c_loss_grad(&bad, &o.ema, b.pred.data(), b.target.data(), b.lw.data(), n,
                           o.grad.data(), &o.loss, o.le.data(), &o.stats);
  });
  expect(GHM_ERR_SHAPE, "labels: anchors x classes overflows", [&](Outputs &o) {
    return ghm_c_loss_grad_labels(&cfg, &o.ema, b.pred.data(), b.labels.data(), b.lw.data(),
                                  SIZE_MAX / 2 + 1, 2, GHM_LAYOUT_ANCHOR_MAJOR, o.grad.data(),
                                  &o.loss, o.le.data(), &o.stats);
  });
  expect(GHM_ERR_NULL, "cfg NULL", [&](Outputs &o) {
    return ghm_c_loss_grad(nullptr, &o.ema, b.pred.data(), b.target.data(), b.lw.data(), n,
                           o.grad.data(), &o.loss, o.le.data(), &o.stats);
  });
  // ghm_status_str from C++: a distinct sentence per code.
  std::vector<std::string> msgs;
  for (ghm_status s = GHM_ERR_SHAPE; s <= GHM_OK; s++) msgs.emplace_back(ghm_status_str(s));
  std::sort(msgs.begin(), msgs.end());
  CHECK(std::unique(msgs.begin(), msgs.end()) == msgs.end(), "ghm_status_str strings repeat");
  CHECK(ghm_status_str(12345) != nullptr, "ghm_status_str(unknown) is NULL");
  check_group_done();
}

}  // namespace

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DATA_DIR (tests/data/mmdet)\n", argv[0]);
    return 2;
  }
  std::printf("test_ffi (C++17) against ghm 0x%06x, backend %s\n",
              static_cast<unsigned>(ghm_version()), ghm_backend());
  test_parity(argv[1]);
  test_phased();
  test_errors();
  return check_exit_code();
}
