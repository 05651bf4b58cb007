//! The per-element formulas of docs/contract.md section 1, written once over [`Vector`].
//!
//! A model maps a prediction `x` and a target `t` to the gradient norm `g`, the raw gradient
//! `dl/dx` and the unweighted loss `l`. The vector kernels and the scalar path both call
//! [`Model::eval`] for `g` and `dl/dx` (the scalar path with the one-lane `f32` vector), so the
//! bin of an element never depends on the backend. The scalar path takes the loss from
//! [`Model::loss_scalar`], a direct `libm` transcription of the formula.

use crate::config::Loss;
use crate::simd::Vector;
use crate::vmath;

/// What one element (or one vector of elements) contributes.
#[derive(Clone, Copy)]
pub(crate) struct Elem<V> {
    /// Gradient norm, in `[0, 1]` for acceptable inputs.
    pub g: V,
    /// `dl/dx`, in `[-1, 1]`.
    pub grad: V,
    /// Unweighted loss `l >= 0`; only computed when asked for.
    pub loss: V,
}

/// One of the three per-element formulas.
pub(crate) trait Model: Copy {
    /// Lanes whose prediction and target are acceptable (finite, and in `[0, 1]` where the
    /// formula needs it).
    fn ok<V: Vector>(&self, x: V, t: V) -> V::M;
    /// Screening keys of a prediction and a target: two lanes of bits that, read as `u32`,
    /// are at most [`Model::KEY_LIMITS`] for an acceptable pair whenever they can be (a
    /// larger key may still be acceptable: the target `-0.0`). The input check screens a
    /// whole batch by the unsigned maxima of the keys and runs the exact [`Model::ok`] only
    /// if a key is above its limit (see `kernel::check`).
    fn keys<V: Vector>(&self, x: V, t: V) -> (V::I, V::I);
    /// The limits of [`Model::keys`]: every pair whose keys are within them is acceptable.
    const KEY_LIMITS: (u32, u32);
    /// Whether the first key depends on the prediction alone, never on the target. The
    /// screen of a batch of class-index labels, whose targets are 0 and 1, then reads the
    /// predictions without making their targets (see `kernel::check`).
    const PRED_KEY_ALONE: bool = false;
    /// Whether [`Model::pre`] does work worth running as a separate stage.
    const HAS_PRE: bool;
    /// Whether the one call with `skip_bad` stores `dl/dx` in pass 1 and only rescales it in
    /// pass 2 (see `api::stored_two_pass`). That moves the loss into pass 1 as per-bin sums:
    /// cheap for elements in the most common bin (vector lanes), dearer for the others (buffered
    /// and added one at a time).
    /// GHM-C's elements crowd into bin 0 (easy negatives), so it pays: at 1Mi elements,
    /// 1.40 ns per element with `skip_bad` against 1.73 for the recomputing passes
    /// (`bench_report`). GHM-R's spread over the bins, and it did not (2.3-2.4 vs 2.2-2.3 ns,
    /// scratch timings at 64Ki, before GHM-R's counting got faster).
    const STORED_PASS: bool = true;
    /// Whether `tot` is the sum of the valid elements' label weights (GHM-R) rather than
    /// their count (GHM-C).
    const TOT_IS_WEIGHT_SUM: bool = false;
    /// The part of the evaluation that depends on `x` alone (GHM-C logits: `exp(-|x|)` and
    /// the sigmoid), as two vectors.
    #[inline(always)]
    fn pre<V: Vector>(&self, x: V) -> (V, V) {
        (x, x)
    }
    /// `g`, `dl/dx` and, if `LOSS`, `l` (otherwise `loss` is unspecified), given
    /// `pre = self.pre(x)`.
    fn eval_pre<V: Vector, const LOSS: bool>(&self, x: V, t: V, pre: (V, V)) -> Elem<V>;
    /// `g`, `dl/dx` and, if `LOSS`, `l`.
    #[inline(always)]
    fn eval<V: Vector, const LOSS: bool>(&self, x: V, t: V) -> Elem<V> {
        self.eval_pre::<V, LOSS>(x, t, self.pre(x))
    }
    /// `l` for one element, straight from the formula with `libm`.
    fn loss_scalar(&self, x: f32, t: f32) -> f32;
    /// The per-element loss to write for lanes `x`, `t` whose [`Model::eval`] loss is `l`:
    /// `l`, unless the vector formula is not close enough to [`Model::loss_scalar`] for the
    /// weighting (GHM-R's subnormal losses).
    #[inline(always)]
    fn elem_loss<V: Vector>(&self, x: V, t: V, l: V) -> V {
        let _ = (x, t);
        l
    }
}

/// The bits of `f32::MAX`: a non-negative f32 (sign bit clear) is finite iff its bits, as
/// `u32`, are at most these.
const FINITE_BITS: u32 = 0x7f7f_ffff;
/// The bits of 1.0: an f32 is in `[+0, 1]` iff its bits, as `u32`, are at most these.
const ONE_BITS: u32 = 0x3f80_0000;

/// GHM-C on logits: BCE with logits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CLogits;

impl Model for CLogits {
    #[inline(always)]
    fn ok<V: Vector>(&self, x: V, t: V) -> V::M {
        V::m_and(x.is_finite(), t.in_range(0.0, 1.0))
    }
    /// `|x|` is finite iff its bits are at most those of `f32::MAX`; `t` is in `[+0, 1]` iff
    /// its bits are at most those of 1.0.
    #[inline(always)]
    fn keys<V: Vector>(&self, x: V, t: V) -> (V::I, V::I) {
        (x.abs().to_bits(), t.to_bits())
    }
    const KEY_LIMITS: (u32, u32) = (FINITE_BITS, ONE_BITS);
    const PRED_KEY_ALONE: bool = true;

    /// `e = exp(-|x|)` never overflows; `sigmoid(x) = 1/(1+e)` for `x >= 0` and `e/(1+e)`
    /// otherwise, so tiny probabilities keep their relative precision. The sigmoid is within
    /// 3 ulp (2.61 measured over every 16th f32 in `[-87, 87]`) and bit-identical on every
    /// backend, like `exp`. The loss is `max(x, 0) - x t` plus `log1p(e)`. With fused
    /// multiply-add ([`Vector::FUSED`]) the first part is one fused operation, rounded once
    /// (the correctly rounded `x (1 - t)` or `-x t`: two operations instead of four);
    /// without, it is `x (1 - t)` for `x > 0` and `-x t` otherwise, the two cases without the
    /// cancellation an unfused `max(x, 0) - x t` would suffer for `t` near 1.
    const HAS_PRE: bool = true;
    #[inline(always)]
    fn pre<V: Vector>(&self, x: V) -> (V, V) {
        let e = vmath::exp_neg(x);
        let r = V::splat(1.0).div(V::splat(1.0).add(e));
        (e, r.mul_in(x.lt(V::splat(0.0)), e))
    }
    #[inline(always)]
    fn eval_pre<V: Vector, const LOSS: bool>(&self, x: V, t: V, (e, s): (V, V)) -> Elem<V> {
        let grad = s.sub(t);
        let loss = if LOSS {
            let lin = if V::FUSED {
                // Rounded once: the correctly rounded `x (1 - t)` or `-x t`.
                x.mul_neg_add(t, x.max(V::splat(0.0)))
            } else {
                let one_minus_t = V::splat(1.0).sub(t);
                let minus_t = V::splat(0.0).sub(t);
                x.mul(V::select(x.gt(V::splat(0.0)), one_minus_t, minus_t))
            };
            lin.add(vmath::ln_1p(e))
        } else {
            grad
        };
        Elem {
            g: grad.abs(),
            grad,
            loss,
        }
    }

    fn loss_scalar(&self, x: f32, t: f32) -> f32 {
        let lin = if x > 0.0 { x * (1.0 - t) } else { -x * t };
        lin + libm::log1pf(libm::expf(-libm::fabsf(x)))
    }
}

/// GHM-C on probabilities `p`: binary cross-entropy with `p` clamped inside the logarithms
/// (`ln(1 - p)` evaluated as `log1p(-p)`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CProbs;

/// Clamp of `p` inside the logarithms: `[1e-7, 1 - 1e-7]` (docs/contract.md section 1).
const P_MIN: f32 = 1e-7;
const P_MAX: f32 = 1.0 - 1e-7;

impl Model for CProbs {
    #[inline(always)]
    fn ok<V: Vector>(&self, p: V, t: V) -> V::M {
        V::m_and(p.in_range(0.0, 1.0), t.in_range(0.0, 1.0))
    }
    #[inline(always)]
    fn keys<V: Vector>(&self, p: V, t: V) -> (V::I, V::I) {
        (p.to_bits(), t.to_bits())
    }
    const KEY_LIMITS: (u32, u32) = (ONE_BITS, ONE_BITS);
    const PRED_KEY_ALONE: bool = true;

    const HAS_PRE: bool = false;
    #[inline(always)]
    fn eval_pre<V: Vector, const LOSS: bool>(&self, p: V, t: V, _: (V, V)) -> Elem<V> {
        let grad = p.sub(t);
        let loss = if LOSS {
            let pc = p.max(V::splat(P_MIN)).min(V::splat(P_MAX));
            let one = V::splat(1.0);
            // ln(1 - pc) as log1p(-pc): 1 - pc alone would lose the relative precision of
            // the small losses of confident negatives.
            let ln_q = vmath::ln_1m(pc, one.div(one.sub(pc)));
            let ll = t.mul(vmath::ln(pc));
            let ll = one.sub(t).mul_add(ln_q, ll);
            V::splat(0.0).sub(ll)
        } else {
            grad
        };
        Elem {
            g: grad.abs(),
            grad,
            loss,
        }
    }

    fn loss_scalar(&self, p: f32, t: f32) -> f32 {
        let pc = p.clamp(P_MIN, P_MAX);
        -(t * libm::logf(pc) + (1.0 - t) * libm::log1pf(-pc))
    }
}

/// GHM-R: Authentic Smooth L1, `l = sqrt(d^2 + mu^2) - mu` with `d = x - t`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct R {
    mu: f32,
    /// `mu * mu`, rounded once from f64 (as mmdet's Python `mu * mu` reaches f32).
    mu2: f32,
    /// `mu^2` scaled by `2^-140` (`mu` by `2^-70`), for the lanes evaluated scaled.
    mu2_s: f32,
    /// Below this `|d|` the loss is subnormal (or 0); at and above it, normal.
    tiny: f32,
}

/// Beyond `|d| = 2^50` (or `mu = 2^50`) `d^2` would be near overflow: such lanes are evaluated
/// with everything scaled by `2^-70`; `g` and `dl/dx` are scale-free, and the loss of such a
/// lane is the scalar path's (f64, rounded once).
const BIG: f32 = 1_125_899_906_842_624.0; // 2^50
const SCALE_DOWN: f32 = 8.470_329_5e-22; // 2^-70

impl R {
    pub(crate) fn new(mu: f32) -> R {
        let mu_s = mu * SCALE_DOWN;
        R {
            mu,
            mu2: (mu as f64 * mu as f64) as f32,
            mu2_s: (mu_s as f64 * mu_s as f64) as f32,
            tiny: tiny_d(mu),
        }
    }

    /// `l`, with the lanes of `m` replaced by the scalar path's loss of their `x` and `t`.
    #[inline(always)]
    fn scalar_lanes<V: Vector>(&self, x: V, t: V, l: V, m: V::M) -> V {
        let (xs, ts) = (x.to_array(), t.to_array());
        let flag = V::select(m, V::splat(1.0), V::splat(0.0)).to_array();
        let mut ls = l.to_array();
        for i in 0..V::LANES {
            if flag[i] != 0.0 {
                ls[i] = self.loss_scalar(xs[i], ts[i]);
            }
        }
        V::from_array(&ls)
    }
}

/// The least `|d|` at which GHM-R's loss `d^2 / (sqrt(d^2 + mu^2) + mu)` is at least
/// `f32::MIN_POSITIVE` (`m`), rounded up: the loss is at least `d^2 / (|d| + 2 mu)`, which is
/// `m` at `|d| = (m + sqrt(m^2 + 8 mu m)) / 2`; 1% above it.
fn tiny_d(mu: f32) -> f32 {
    let (m, mu) = (f32::MIN_POSITIVE as f64, mu as f64);
    ((m + crate::vmath::sqrt(m * m + 8.0 * mu * m)) / 2.0 * 1.01) as f32
}

impl Model for R {
    #[inline(always)]
    fn ok<V: Vector>(&self, x: V, t: V) -> V::M {
        V::m_and(x.is_finite(), t.is_finite())
    }
    /// One key, `|x - t|`: it is finite only if `x` and `t` are (an infinite or NaN operand
    /// makes the difference infinite or NaN), and the kernels compute it anyway. (A
    /// difference that overflows flags good elements too: the exact check then decides.) One
    /// maximum per vector instead of two, and no `|x|`, `|t|`.
    #[inline(always)]
    fn keys<V: Vector>(&self, x: V, t: V) -> (V::I, V::I) {
        (x.sub(t).abs().to_bits(), V::i_splat(0))
    }
    const KEY_LIMITS: (u32, u32) = (FINITE_BITS, 0);

    /// `g = |d| / sqrt(d^2 + mu^2)` and `dl/dx = d / sqrt(d^2 + mu^2)` exactly as mmdet
    /// computes them in f32 (for `|d| <= 2^50`), and the loss in the cancellation-free form
    /// `d^2 / (sqrt(d^2 + mu^2) + mu)` (dividing through [`Vector::recip`], within 1 ulp). Gradients are finite for every finite input; the loss
    /// is `+inf` only where its true value exceeds `f32::MAX`.
    const HAS_PRE: bool = false;
    const STORED_PASS: bool = false;
    const TOT_IS_WEIGHT_SUM: bool = true;
    #[inline(always)]
    fn eval_pre<V: Vector, const LOSS: bool>(&self, x: V, t: V, _: (V, V)) -> Elem<V> {
        let d0 = x.sub(t);
        let big = if self.mu > BIG {
            V::splat(0.0).le(V::splat(0.0)) // all lanes
        } else {
            // Also catches d0 = inf (x - t overflowed).
            d0.abs().gt(V::splat(BIG))
        };
        if !V::m_any(big) {
            // The usual vector: no lane needs the scaling (the same values as the selects
            // below would give, without them).
            let d2 = d0.mul(d0);
            let root = d2.add(V::splat(self.mu2)).sqrt();
            let grad = d0.div(root);
            let loss = if LOSS {
                // The loss needs no correctly rounded division ([`Vector::recip`]). `d * (d *
                // r)`, not `d^2 * r`: `d^2` is subnormal below `|d| = 2^-63`, where it kept
                // few bits, and `d * r` is normal wherever the loss is.
                d0.mul(d0.mul(root.add(V::splat(self.mu)).recip()))
            } else {
                grad
            };
            return Elem {
                g: grad.abs(),
                grad,
                loss,
            };
        }
        let sc = V::select(big, V::splat(SCALE_DOWN), V::splat(1.0));
        let d = V::select(big, x.mul(sc).sub(t.mul(sc)), d0);
        let mu2 = V::select(big, V::splat(self.mu2_s), V::splat(self.mu2));
        let d2 = d.mul(d);
        let root = d2.add(mu2).sqrt();
        let grad = d.div(root);
        let loss = if LOSS {
            // The scaled lanes take the scalar path's f64 formula, lane by lane: the f32
            // formula's few ulp of error would turn a loss that rounds to f32::MAX into +inf
            // (and that into an infinite reduced loss) where the scalar path is finite. Only
            // for |d| > 2^50 or mu > 2^50, which no training reaches: a cold path.
            let l = d.mul(d.mul(root.add(V::splat(self.mu)).recip()));
            self.scalar_lanes(x, t, l, big)
        } else {
            grad
        };
        Elem {
            // |d / root| is |d| / root exactly (division rounds the magnitude only).
            g: grad.abs(),
            grad,
            loss,
        }
    }

    /// Lanes whose loss is subnormal (`0 < |d| < tiny`) take the scalar path's: the f32
    /// formula's few ulp of error put such a loss on another point of the subnormal grid
    /// than the f64 formula rounded once, which a large `loss_weight * w_k` would scale back
    /// up into many ulp. A cold path: `|d|` below about `2e-20` for `mu = 0.02`.
    #[inline(always)]
    fn elem_loss<V: Vector>(&self, x: V, t: V, l: V) -> V {
        let a = x.sub(t).abs();
        let low = V::m_andnot(a.lt(V::splat(self.tiny)), a.le(V::splat(0.0)));
        if !V::m_any(low) {
            return l;
        }
        self.scalar_lanes(x, t, l, low)
    }

    fn loss_scalar(&self, x: f32, t: f32) -> f32 {
        // The same formula in f64, rounded once: accurate, and finite whenever it fits f32.
        let d = x as f64 - t as f64;
        let mu = self.mu as f64;
        let root = crate::vmath::sqrt(d * d + mu * mu);
        (d * d / (root + mu)) as f32
    }
}

/// Generic GHM ("bring your own g", see [`crate::GhmG`]): the prediction is the caller's
/// gradient norm `g` of a sample, the target its unweighted loss `l` (or `g` again when there
/// is none: the loss sums are then unused). The bin is that of `min(g / g_max, 1)`; `dl/dx`
/// is 1, so pass 2's gradient is the sample's factor `scale[bin]`, by which the caller's own
/// gradient is then multiplied.
#[derive(Clone, Copy, Debug)]
pub(crate) struct G {
    /// `g_max`, positive and finite.
    g_max: f32,
}

impl G {
    pub(crate) fn new(g_max: f32) -> G {
        G { g_max }
    }
}

impl Model for G {
    /// `g` and `l` finite and `>= 0` (`-0.0` included).
    #[inline(always)]
    fn ok<V: Vector>(&self, g: V, l: V) -> V::M {
        V::m_and(g.in_range(0.0, f32::MAX), l.in_range(0.0, f32::MAX))
    }
    /// A non-negative finite f32 has bits at most those of `f32::MAX` (`-0.0` does not: the
    /// exact check then decides).
    #[inline(always)]
    fn keys<V: Vector>(&self, g: V, l: V) -> (V::I, V::I) {
        (g.to_bits(), l.to_bits())
    }
    const KEY_LIMITS: (u32, u32) = (FINITE_BITS, FINITE_BITS);
    const HAS_PRE: bool = false;
    const STORED_PASS: bool = false;
    /// `g / g_max` (correctly rounded; `g` itself when `g_max` is 1, so that a model's own
    /// `g` lands in the bin its model gives it), capped at 1: the last bin holds every
    /// `g >= g_max`.
    #[inline(always)]
    fn eval_pre<V: Vector, const LOSS: bool>(&self, g: V, l: V, _: (V, V)) -> Elem<V> {
        let g = if self.g_max == 1.0 {
            g
        } else {
            g.div(V::splat(self.g_max))
        };
        Elem {
            g: g.min(V::splat(1.0)),
            grad: V::splat(1.0),
            loss: l,
        }
    }

    fn loss_scalar(&self, _: f32, l: f32) -> f32 {
        l
    }
}

/// The model of a configuration, as a value the kernels can be instantiated with.
#[derive(Clone, Copy, Debug)]
pub(crate) enum AnyModel {
    CLogits(CLogits),
    CProbs(CProbs),
    R(R),
}

impl AnyModel {
    pub(crate) fn of(loss: Loss) -> AnyModel {
        match loss {
            Loss::CLogits => AnyModel::CLogits(CLogits),
            Loss::CProbs => AnyModel::CProbs(CProbs),
            Loss::R { mu } => AnyModel::R(R::new(mu)),
        }
    }
}
