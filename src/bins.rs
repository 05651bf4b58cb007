//! The bin of a gradient norm: exact with respect to mmdet's f32 edges.

use crate::config::MAX_BINS;
use crate::simd::Vector;

/// The bin edges of one configuration and the tables the vector rule looks up.
#[derive(Clone, Debug)]
pub(crate) struct Bins {
    /// Number of bins `M`.
    pub m: usize,
    /// `e[k] = (float)k / (float)M` for `k < M`, `e[M]` = the last edge.
    pub edges: [f32; MAX_BINS + 1],
    /// `upper[j] = e[j + 1]`: the upper edge of bin `j`, padded to a 256-entry table.
    upper: [f32; 256],
    /// `M` as f32 and as i32, and `M - 1`, stored so that [`Bins::vector`] broadcasts them
    /// from memory instead of converting `m` and moving it into a vector register for every
    /// vector: GHM-C's one call 1.9% faster at 64Ki elements (median of 10 alternating
    /// in-process runs; within this machine's noise, where a binary timed against itself
    /// once gave 0.972).
    m_f32: f32,
    m_i32: i32,
    top: i32,
    /// The last edge `e[M]`, likewise.
    last: f32,
}

/// Subtracted from `g * M` before truncation, so that the truncated value is the bin or the
/// bin below it, never the bin above (see [`Bins::vector`]).
const BIAS: f32 = 1.0 / 256.0;

/// `2^23`, and its bits: an integer `0 <= k < 2^23` added to them gives the bits of the
/// float `2^23 + k`.
const TWO_POW_23: f32 = 8_388_608.0;
const TWO_POW_23_BITS: i32 = 0x4b00_0000;
const _: () = assert!(TWO_POW_23.to_bits() == TWO_POW_23_BITS as u32);

impl Bins {
    /// The edges of `m` bins (`1..=MAX_BINS`) with the given last edge.
    pub(crate) fn new(m: usize, last_edge: f32) -> Bins {
        let mut edges = [0.0; MAX_BINS + 1];
        for (k, e) in edges.iter_mut().enumerate().take(m) {
            *e = k as f32 / m as f32;
        }
        edges[m] = last_edge;
        let mut upper = [f32::INFINITY; 256];
        upper[..m].copy_from_slice(&edges[1..=m]);
        Bins {
            m,
            edges,
            upper,
            m_f32: m as f32,
            m_i32: m as i32,
            top: m as i32 - 1,
            last: last_edge,
        }
    }

    /// The bin `k` with `e[k] <= g < e[k + 1]`, or `None` when `g` is in no bin (NaN, or at
    /// or beyond the last edge). The scalar path's rule, read straight off the definition
    /// (starting from the estimate `floor(g * M)` and stepping to the exact bin).
    pub(crate) fn scalar(&self, g: f32) -> Option<usize> {
        let e = &self.edges[..=self.m];
        if !(g >= 0.0 && g < e[self.m]) {
            return None;
        }
        let mut k = ((g * self.m as f32) as usize).min(self.m - 1);
        while g < e[k] {
            k -= 1;
        }
        while g >= e[k + 1] {
            k += 1;
        }
        Some(k)
    }

    /// The bins of a vector of gradient norms: lanes not in `valid` get the trash bin `M`. A
    /// valid lane's `g` is never NaN (only a bad element has a NaN gradient norm, and bad
    /// elements are never valid).
    ///
    /// `k0 = trunc(g * M - 1/256)` is the bin or the bin below it: with `M <= 128` and
    /// `g <= 1 + 2^-23`, `g * M` and the subtraction are each within `2^-17` of exact (or, fused
    /// where the backend has FMA, the two together: one rounding instead of two), and every
    /// edge `e[k]` is within `M * 2^-25 <= 2^-18` of `k / M` after scaling by `M`, so the
    /// `1/256` bias can neither lift `k0` above the bin nor drop it two below. One comparison
    /// with the exact upper edge `e[k0 + 1]` then settles it. That edge is looked up in a
    /// table, or, above [`Vector::EDGE_LUT_MAX`] bins, computed as [`Bins::new`] computes it:
    /// `(k0 + 1) / M`, one correctly rounded division (the last edge is selected).
    ///
    /// Where it divides, a vector skips the division when no lane needs its edge. By the same
    /// bounds, `k_up = trunc(g * M + 1/256)` is never below the bin (it is the bin or the one
    /// above it for `g` below 1), as `k0` is never above it; so where `k0 == k_up`, that is
    /// the bin. Where `g * M + 1/256` reaches `M` (`g` near 1 or past it), `k_up >= M > k0`:
    /// the vector divides, and compares with the last edge (`1 + 1e-6` or `1000`). NaN lanes,
    /// whose truncations are `i32::MIN`, divide too. Otherwise only a lane within about
    /// `1/256` of an edge, after scaling by `M`, makes its vector divide: one branch per
    /// vector, none per lane. On an AMD EPYC (family 25, AVX2) with 30 bins, GHM-C's one call
    /// took 0.90 of its time at 64Ki elements and 0.96 at 16Mi (lowest third of 8 and 5
    /// alternating runs). In that benchmark's data about 1.7% of the vectors take the
    /// division (counted in a simulation of the data, not in the kernel).
    ///
    /// The `exact_bin_rule` test checks the rule against [`Bins::scalar`] and the definition
    /// for every f32 within 64 ulp of every edge, for every `M` and both ways, and on a grid
    /// across `[0, 1]` with near-edge lanes scattered in, so that vectors take each way.
    #[inline(always)]
    pub(crate) fn vector<V: Vector>(&self, g: V, valid: V::M) -> V::I {
        V::i_select(valid, self.vector_any(g), V::i_splat(self.m_i32))
    }

    /// Whether [`Bins::vector_any`] on `V` computes the upper edge by a division (above
    /// [`Vector::EDGE_LUT_MAX`] bins), which a vector skips unless a lane is near an edge or
    /// NaN; otherwise it looks the edge up.
    #[inline(always)]
    pub(crate) fn divides<V: Vector>(&self) -> bool {
        self.m > V::EDGE_LUT_MAX
    }

    /// [`Bins::vector`] without the trash bin: the bins of the lanes whose `g` is in `[0, 1]`
    /// (anything in `0..=M` in the others, which the caller masks). The kernels that compare
    /// the bins under a mask anyway save the select.
    #[inline(always)]
    pub(crate) fn vector_any<V: Vector>(&self, g: V) -> V::I {
        let m_vec = V::splat(self.m_f32);
        let q = g.mul_add(m_vec, V::splat(-BIAS));
        let top = V::i_splat(self.top);
        // Unsigned min: negative or garbage (NaN lanes) indices become M - 1.
        let k0 = V::i_min_u(q.trunc_i(), top);
        let hi = if self.divides::<V>() {
            // Most vectors need no edge: where `trunc(g * M + 1/256)` equals `k0` in every lane,
            // the bin is `k0` (see above; NaN lanes differ, i32::MIN against M - 1).
            let k_up = g.mul_add(m_vec, V::splat(BIAS)).trunc_i();
            if V::m_count(V::i_eq(k0, k_up)) == V::LANES as u32 {
                return k0;
            }
            // k0 + 1 as f32, exactly (0 <= k0 < M): the float 2^23 + k0, minus 2^23 - 1.
            let k0_plus_2_23 = V::from_bits(V::i_add(k0, V::i_splat(TWO_POW_23_BITS)));
            let k1 = k0_plus_2_23.sub(V::splat(TWO_POW_23 - 1.0));
            let hi = k1.div(m_vec);
            V::select(V::i_eq(k0, top), V::splat(self.last), hi)
        } else {
            V::lut(&self.upper, k0, self.m)
        };
        V::i_inc(k0, g.ge(hi))
    }
}
