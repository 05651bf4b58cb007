/*
 * A tiny test harness shared by test_ffi.c (C99) and test_ffi.cpp (C++17):
 *  - CHECK(cond, fmt, ...): on failure prints "file:line: CHECK(cond) failed: message" and
 *    counts it; check_group() / check_group_end() print one summary line per group;
 *  - check_read_file(): a whole file into a NUL-terminated heap buffer;
 *  - a minimal JSON scanner for the mmdet reference files (tests/data/mmdet/README.md):
 *    machine-written, compact JSON; numbers through strtod.
 *
 * Everything is `static` so the header can be included by one translation unit per program.
 */
#ifndef GHM_FFI_TESTS_CHECK_H
#define GHM_FFI_TESTS_CHECK_H

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__)
#define CHECK_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define CHECK_UNUSED __attribute__((unused))
#else
#define CHECK_PRINTF(f, a)
#define CHECK_UNUSED
#endif

/* ------------------------------------------------------------------------------------------ */
/* Checks and groups */

/* Failures printed per group; later ones are only counted (a broken loop can fail 10^4 times). */
#define CHECK_PRINT_LIMIT 25

static long check_total_failures;  /* over the whole program */
static long check_group_checks;    /* in the current group */
static long check_group_failures;  /* in the current group */
static const char *check_group_name = "(no group)";

static CHECK_UNUSED CHECK_PRINTF(5, 6) int check_impl(int ok, const char *file, int line,
                                                      const char *expr, const char *fmt, ...) {
  va_list ap;
  check_group_checks++;
  if (ok) return 1;
  check_group_failures++;
  check_total_failures++;
  if (check_group_failures <= CHECK_PRINT_LIMIT) {
    printf("  %s:%d: [%s] CHECK(%s) failed: ", file, line, check_group_name, expr);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
  } else if (check_group_failures == CHECK_PRINT_LIMIT + 1) {
    printf("  [%s] more failures; not printing them\n", check_group_name);
  }
  fflush(stdout);
  return 0;
}

/* CHECK(cond, "format", args...): counts a check; prints file:line and the message if false.
 * Evaluates to 1 if the check passed. */
#define CHECK(cond, ...) check_impl((cond) ? 1 : 0, __FILE__, __LINE__, #cond, __VA_ARGS__)

static CHECK_UNUSED void check_group(const char *name) {
  check_group_name = name;
  check_group_checks = 0;
  check_group_failures = 0;
}

/* Prints the group's line: "PASS name: N checks[; note]" or "FAIL name: k of N checks failed". */
static void check_group_print(const char *note) {
  if (check_group_failures == 0 && check_group_checks > 0) {
    printf("PASS %-28s %7ld checks%s%s\n", check_group_name, check_group_checks,
           note[0] ? "; " : "", note);
  } else {
    if (check_group_checks == 0) check_total_failures++; /* a group that checked nothing */
    printf("FAIL %-28s %ld of %ld checks failed%s%s\n", check_group_name, check_group_failures,
           check_group_checks, note[0] ? "; " : "", note);
  }
  fflush(stdout);
}

static CHECK_UNUSED void check_group_done(void) { check_group_print(""); }

/* check_group_done() with a note (printf format) on the line. */
static CHECK_UNUSED CHECK_PRINTF(1, 2) void check_group_end(const char *note_fmt, ...) {
  char note[512];
  va_list ap;
  va_start(ap, note_fmt);
  vsnprintf(note, sizeof note, note_fmt, ap);
  va_end(ap);
  check_group_print(note);
}

/* 0 if every check passed, 1 otherwise (for main's return). */
static CHECK_UNUSED int check_exit_code(void) {
  printf("%s: %ld failed check(s)\n", check_total_failures ? "FAILED" : "OK",
         check_total_failures);
  return check_total_failures ? 1 : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Small numeric helpers */

/* Distance in units in the last place between two finite floats (0 if bitwise equal). */
static CHECK_UNUSED uint64_t check_ulps(float a, float b) {
  int32_t ia, ib;
  int64_t da, db;
  memcpy(&ia, &a, sizeof ia);
  memcpy(&ib, &b, sizeof ib);
  /* map the sign-magnitude order onto a monotone integer line */
  da = ia < 0 ? -(int64_t)(ia & 0x7fffffff) : (int64_t)ia;
  db = ib < 0 ? -(int64_t)(ib & 0x7fffffff) : (int64_t)ib;
  return (uint64_t)(da > db ? da - db : db - da);
}

/* Relative error of got against want (absolute if want is 0). */
static CHECK_UNUSED double check_rel(double got, double want) {
  if (got == want) return 0.0;
  if (want == 0.0) return fabs(got);
  return fabs(got - want) / fabs(want);
}

/* max_i |got_i - want_i| / max_i |want_i| (0 if equal; the absolute error if want is all 0). */
static CHECK_UNUSED double check_max_rel(const float *got, const float *want, size_t n) {
  double err = 0.0, scale = 0.0;
  size_t i;
  for (i = 0; i < n; i++) {
    double d = fabs((double)got[i] - (double)want[i]);
    if (d > err || d != d) err = d != d ? HUGE_VAL : d;
    if (fabs((double)want[i]) > scale) scale = fabs((double)want[i]);
  }
  if (err == 0.0) return 0.0;
  return scale > 0.0 ? err / scale : err;
}

/* ------------------------------------------------------------------------------------------ */
/* Files */

/* The whole file as a NUL-terminated heap string (free() it), or NULL; *len_out gets the size. */
static CHECK_UNUSED char *check_read_file(const char *path, size_t *len_out) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  size_t len = 0, cap = 0, got;
  if (!f) return NULL;
  for (;;) {
    if (cap - len < 4096) {
      size_t ncap = cap ? cap * 2 : 65536;
      char *nb = (char *)realloc(buf, ncap + 1);
      if (!nb) {
        free(buf);
        fclose(f);
        return NULL;
      }
      buf = nb;
      cap = ncap;
    }
    got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0) break;
  }
  if (ferror(f)) {
    free(buf);
    fclose(f);
    return NULL;
  }
  fclose(f);
  buf[len] = 0;
  if (len_out) *len_out = len;
  return buf;
}

/* ------------------------------------------------------------------------------------------ */
/* A minimal JSON scanner. Positions are `const char *` into the NUL-terminated text; every
 * function returns NULL on malformed input. No escapes beyond skipping them are decoded. */

static const char *json_ws(const char *p) {
  while (p && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  return p;
}

/* Just past the string starting at p (which must be '"'). */
static const char *json_skip_string(const char *p) {
  if (!p || *p != '"') return NULL;
  for (p++; *p && *p != '"'; p++) {
    if (*p == '\\') {
      if (!p[1]) return NULL;
      p++;
    }
  }
  return *p == '"' ? p + 1 : NULL;
}

/* Just past the value starting at p (after whitespace). */
static const char *json_skip(const char *p) {
  int depth = 0;
  p = json_ws(p);
  if (!p || !*p) return NULL;
  do {
    p = json_ws(p);
    if (!p) return NULL;
    switch (*p) {
      case '"':
        p = json_skip_string(p);
        break;
      case '{':
      case '[':
        depth++;
        p++;
        break;
      case '}':
      case ']':
        if (--depth < 0) return NULL;
        p++;
        break;
      case ',':
      case ':':
        if (depth == 0) return NULL;
        p++;
        break;
      case 0:
        return NULL;
      default: { /* number or literal */
        const char *q = p;
        while (*q && !strchr(" \t\r\n,:]}", *q)) q++;
        if (q == p) return NULL;
        p = q;
      }
    }
  } while (p && depth > 0);
  return p;
}

/* The value of `key` in the object starting at obj ('{'), or NULL if absent or malformed. */
static CHECK_UNUSED const char *json_get(const char *obj, const char *key) {
  const char *p = json_ws(obj);
  size_t klen = strlen(key);
  if (!p || *p != '{') return NULL;
  p = json_ws(p + 1);
  if (p && *p == '}') return NULL;
  while (p && *p == '"') {
    const char *kend = json_skip_string(p);
    const char *val;
    if (!kend) return NULL;
    val = json_ws(kend);
    if (!val || *val != ':') return NULL;
    val = json_ws(val + 1);
    if ((size_t)(kend - p) == klen + 2 && memcmp(p + 1, key, klen) == 0) return val;
    p = json_ws(json_skip(val));
    if (!p || *p != ',') return NULL;
    p = json_ws(p + 1);
  }
  return NULL;
}

static CHECK_UNUSED int json_is_null(const char *p) {
  p = json_ws(p);
  return p && strncmp(p, "null", 4) == 0;
}

/* A number (strtod); 0 on success. */
static CHECK_UNUSED int json_number(const char *p, double *out) {
  char *end;
  p = json_ws(p);
  if (!p || !*p) return -1;
  *out = strtod(p, &end);
  return end == p ? -1 : 0;
}

/* A string without escapes into buf; 0 on success. */
static CHECK_UNUSED int json_string(const char *p, char *buf, size_t size) {
  const char *end;
  size_t len;
  p = json_ws(p);
  end = json_skip_string(p);
  if (!end) return -1;
  len = (size_t)(end - p) - 2;
  if (len + 1 > size || memchr(p + 1, '\\', len)) return -1;
  memcpy(buf, p + 1, len);
  buf[len] = 0;
  return 0;
}

/* Number of elements of the array starting at p, or -1. */
static CHECK_UNUSED long json_array_len(const char *p) {
  long n = 0;
  p = json_ws(p);
  if (!p || *p != '[') return -1;
  p = json_ws(p + 1);
  if (p && *p == ']') return 0;
  for (;;) {
    p = json_ws(json_skip(p));
    if (!p) return -1;
    n++;
    if (*p == ']') return n;
    if (*p != ',') return -1;
    p++;
  }
}

/* Element i of the array starting at p, or NULL. */
static CHECK_UNUSED const char *json_array_at(const char *p, long i) {
  p = json_ws(p);
  if (!p || *p != '[') return NULL;
  p = json_ws(p + 1);
  if (!p || *p == ']') return NULL;
  while (i-- > 0) {
    p = json_ws(json_skip(p));
    if (!p || *p != ',') return NULL;
    p = json_ws(p + 1);
  }
  return p;
}

/* A numeric array as a malloc'd double array (free() it; at least one slot allocated);
 * *n_out gets the length. NULL if malformed. */
static CHECK_UNUSED double *json_doubles(const char *p, size_t *n_out) {
  long n = json_array_len(p), i;
  double *v;
  if (n < 0) return NULL;
  v = (double *)malloc(((size_t)n + 1) * sizeof *v);
  if (!v) return NULL;
  p = json_ws(p) + 1;
  for (i = 0; i < n; i++) {
    char *end;
    p = json_ws(p);
    v[i] = strtod(p, &end);
    if (end == p) {
      free(v);
      return NULL;
    }
    p = json_ws(end);
    if (*p == ',') p++;
  }
  *n_out = (size_t)n;
  return v;
}

/* ------------------------------------------------------------------------------------------ */
/* One reference case (tests/data/mmdet/README.md) */

typedef struct jiter {
  size_t n;            /* length of pred */
  float *pred;         /* n */
  float *target;       /* n, or NULL (labels case) */
  int32_t *labels;     /* shape[0], or NULL (dense case) */
  size_t n_labels;
  float *label_weight; /* n (dense) or shape[0] (labels) */
  size_t n_label_weight;
  double exp_loss;
  float *exp_grad;       /* n */
  float *exp_loss_elems; /* n, or NULL (reduction mean) */
  float *exp_acc_sum;    /* bins, or NULL (momentum 0) */
  size_t n_acc_sum;
} jiter;

typedef struct jcase {
  char kind[16]; /* "ghmc" or "ghmr" */
  char name[64];
  char reduction[16];
  unsigned bins;
  double momentum, loss_weight, mu; /* mu: ghmr only (else 0) */
  int has_shape;
  size_t shape[2];
  size_t n_iters;
  jiter *iters;
} jcase;

/* A float array of expected length `want` (0: any); 0 on success. */
static int jcase_floats(const char *p, float **out, size_t *n_out, size_t want) {
  size_t n = 0, i;
  double *d = json_doubles(p, &n);
  if (!d || (want && n != want)) {
    free(d);
    return -1;
  }
  *out = (float *)malloc((n + 1) * sizeof **out);
  if (!*out) {
    free(d);
    return -1;
  }
  for (i = 0; i < n; i++) (*out)[i] = (float)d[i]; /* the files hold f32 values exactly */
  free(d);
  if (n_out) *n_out = n;
  return 0;
}

static CHECK_UNUSED void jcase_free(jcase *c) {
  size_t i;
  if (!c->iters) return;
  for (i = 0; i < c->n_iters; i++) {
    jiter *it = &c->iters[i];
    free(it->pred);
    free(it->target);
    free(it->labels);
    free(it->label_weight);
    free(it->exp_grad);
    free(it->exp_loss_elems);
    free(it->exp_acc_sum);
  }
  free(c->iters);
  c->iters = NULL;
}

/* Loads `path` into *c; 0 on success, else -1 with a reason in err (and *c freed). */
static CHECK_UNUSED int jcase_load(const char *path, jcase *c, char *err, size_t err_size) {
  char *text = check_read_file(path, NULL);
  const char *v, *iters;
  double d;
  long n_iters, i;
  memset(c, 0, sizeof *c);
#define JFAIL(what)                             \
  do {                                          \
    snprintf(err, err_size, "%s: %s", path, what); \
    free(text);                                 \
    jcase_free(c);                              \
    return -1;                                  \
  } while (0)
  if (!text) JFAIL("cannot read");
  if (json_string(json_get(text, "kind"), c->kind, sizeof c->kind)) JFAIL("kind");
  if (json_string(json_get(text, "name"), c->name, sizeof c->name)) JFAIL("name");
  if (json_string(json_get(text, "reduction"), c->reduction, sizeof c->reduction))
    JFAIL("reduction");
  if (json_number(json_get(text, "bins"), &d) || d < 0 || d > 1e6) JFAIL("bins");
  c->bins = (unsigned)d;
  if (json_number(json_get(text, "momentum"), &c->momentum)) JFAIL("momentum");
  if (json_number(json_get(text, "loss_weight"), &c->loss_weight)) JFAIL("loss_weight");
  if ((v = json_get(text, "mu")) != NULL && json_number(v, &c->mu)) JFAIL("mu");
  if ((v = json_get(text, "shape")) != NULL && !json_is_null(v)) {
    double *s;
    size_t ns = 0;
    if (!(s = json_doubles(v, &ns)) || ns != 2) {
      free(s);
      JFAIL("shape");
    }
    c->has_shape = 1;
    c->shape[0] = (size_t)s[0];
    c->shape[1] = (size_t)s[1];
    free(s);
  }
  iters = json_get(text, "iters");
  n_iters = json_array_len(iters);
  if (n_iters < 1) JFAIL("iters");
  c->iters = (jiter *)calloc((size_t)n_iters, sizeof *c->iters);
  if (!c->iters) JFAIL("out of memory");
  c->n_iters = (size_t)n_iters;
  for (i = 0; i < n_iters; i++) {
    const char *it = json_array_at(iters, i), *exp;
    jiter *j = &c->iters[i];
    size_t nlw = 0;
    if (!it) JFAIL("iters[i]");
    if (jcase_floats(json_get(it, "pred"), &j->pred, &j->n, 0)) JFAIL("pred");
    if ((v = json_get(it, "target")) != NULL) {
      if (jcase_floats(v, &j->target, NULL, j->n)) JFAIL("target");
    } else if ((v = json_get(it, "labels")) != NULL) {
      double *l = json_doubles(v, &j->n_labels);
      size_t k;
      if (!l) JFAIL("labels");
      j->labels = (int32_t *)malloc((j->n_labels + 1) * sizeof *j->labels);
      if (!j->labels) {
        free(l);
        JFAIL("out of memory");
      }
      for (k = 0; k < j->n_labels; k++) j->labels[k] = (int32_t)l[k];
      free(l);
      if (!c->has_shape || j->n_labels != c->shape[0] || j->n != c->shape[0] * c->shape[1])
        JFAIL("labels do not match shape");
    } else {
      JFAIL("neither target nor labels");
    }
    if (jcase_floats(json_get(it, "label_weight"), &j->label_weight, &nlw, 0))
      JFAIL("label_weight");
    j->n_label_weight = nlw;
    if (nlw != (j->labels ? j->n_labels : j->n)) JFAIL("label_weight length");
    exp = json_get(it, "expected");
    if (!exp) JFAIL("expected");
    if (json_number(json_get(exp, "loss"), &j->exp_loss)) JFAIL("expected.loss");
    if (jcase_floats(json_get(exp, "grad"), &j->exp_grad, NULL, j->n)) JFAIL("expected.grad");
    if ((v = json_get(exp, "loss_elems")) != NULL &&
        jcase_floats(v, &j->exp_loss_elems, NULL, j->n))
      JFAIL("expected.loss_elems");
    if ((v = json_get(exp, "acc_sum")) != NULL &&
        jcase_floats(v, &j->exp_acc_sum, &j->n_acc_sum, c->bins))
      JFAIL("expected.acc_sum");
  }
#undef JFAIL
  free(text);
  return 0;
}

#endif /* GHM_FFI_TESTS_CHECK_H */
