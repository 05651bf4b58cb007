//! `ghm_last_error`: every error code, through the C ABI, names the argument, field and
//! element it is about, and why; the refused call still wrote nothing.

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::ptr::{null, null_mut};

use ghm::ffi::*;
use ghm::{Blocks, Ema, Hist, View, Weights};

/// The report of this thread's last call.
#[derive(Debug)]
struct Report {
    status: i32,
    argument: String,
    field: String,
    index: i64,
    message: String,
}

fn last() -> Report {
    let mut r = MaybeUninit::<ghm_report>::uninit();
    // SAFETY: a writable report.
    let r = unsafe {
        assert_eq!(ghm_last_error(r.as_mut_ptr()), GHM_OK);
        r.assume_init()
    };
    let s = |p: *const std::ffi::c_char| {
        assert!(!p.is_null());
        // SAFETY: static NUL-terminated strings.
        unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned()
    };
    Report {
        status: r.status,
        argument: s(r.argument),
        field: s(r.field),
        index: r.index,
        message: s(r.message.as_ptr()),
    }
}

/// Asserts the status returned and recorded, the argument and field, the index and the
/// whole message.
fn expect(got: i32, status: i32, argument: &str, field: &str, index: i64, message: &str) {
    let r = last();
    assert_eq!(got, status, "{r:?}");
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(
        (r.argument.as_str(), r.field.as_str()),
        (argument, field),
        "{r:?}"
    );
    assert_eq!(r.index, index, "{r:?}");
    assert_eq!(r.message, message);
}

const N: usize = 40;

struct Batch {
    pred: Vec<f32>,
    target: Vec<f32>,
    weight: Vec<f32>,
    grad: Vec<f32>,
    loss: f32,
}

fn batch() -> Batch {
    Batch {
        pred: (0..N).map(|i| i as f32 * 0.37 - 7.0).collect(),
        target: (0..N).map(|i| (i % 3 == 0) as u32 as f32).collect(),
        weight: vec![1.0; N],
        grad: vec![7.0; N],
        loss: 7.0,
    }
}

/// `ghm_c_loss_grad` on `b` with `cfg` and `ema`; asserts nothing was written on failure.
fn call_c(cfg: &ghm_c_config, ema: *mut Ema, b: &mut Batch) -> i32 {
    // SAFETY: every buffer holds N floats.
    let s = unsafe {
        ghm_c_loss_grad(
            cfg,
            ema,
            b.pred.as_ptr(),
            b.target.as_ptr(),
            b.weight.as_ptr(),
            N,
            b.grad.as_mut_ptr(),
            &mut b.loss,
            null_mut(),
            null_mut(),
        )
    };
    if s != GHM_OK {
        assert!(
            b.grad.iter().all(|&g| g == 7.0) && b.loss == 7.0,
            "written on error"
        );
    }
    s
}

#[test]
fn success_reports_ok_with_empty_fields() {
    let cfg = ghm_c_config_default();
    let mut b = batch();
    b.pred[3] = f32::NAN;
    assert_eq!(call_c(&cfg, null_mut(), &mut b), GHM_ERR_INPUT);
    let mut b = batch();
    expect(call_c(&cfg, null_mut(), &mut b), GHM_OK, "", "", -1, "");
}

#[test]
fn null_names_the_pointer() {
    let cfg = ghm_c_config_default();
    let mut b = batch();
    // SAFETY: NULL pred with n > 0 is refused before any read.
    let s = unsafe {
        ghm_c_loss_grad(
            &cfg,
            null_mut(),
            null(),
            b.target.as_ptr(),
            null(),
            N,
            null_mut(),
            &mut b.loss,
            null_mut(),
            null_mut(),
        )
    };
    expect(
        s,
        GHM_ERR_NULL,
        "pred",
        "",
        -1,
        "pred is NULL but has elements",
    );
    // SAFETY: NULL cfg is refused.
    let s = unsafe {
        ghm_c_loss_grad(
            null(),
            null_mut(),
            b.pred.as_ptr(),
            b.target.as_ptr(),
            null(),
            N,
            null_mut(),
            null_mut(),
            null_mut(),
            null_mut(),
        )
    };
    expect(s, GHM_ERR_NULL, "cfg", "", -1, "cfg is NULL");
    let w = MaybeUninit::<Weights>::uninit();
    // SAFETY: NULL h is refused.
    let s = unsafe { ghm_c_finalize(&cfg, null_mut(), null(), w.as_ptr() as *mut _) };
    expect(s, GHM_ERR_NULL, "h", "", -1, "h is NULL");
    // SAFETY: NULL blocks is refused.
    let s = unsafe {
        ghm_c_loss_grad_blocks(
            &cfg,
            null_mut(),
            null(),
            b.pred.as_ptr(),
            b.target.as_ptr(),
            null(),
            null_mut(),
            &mut b.loss,
            null_mut(),
            null_mut(),
        )
    };
    expect(s, GHM_ERR_NULL, "blocks", "", -1, "blocks is NULL");
    // SAFETY: NULL report is refused.
    assert_eq!(unsafe { ghm_last_error(null_mut()) }, GHM_ERR_NULL);
}

#[test]
fn config_names_the_field_and_its_value() {
    let mut b = batch();
    type Case = (fn(&mut ghm_c_config), &'static str, &'static str);
    let cases: [Case; 6] = [
        (
            |c| c.momentum = 1.5,
            "momentum",
            "cfg.momentum = 1.5 is not in [0, 1)",
        ),
        (|c| c.bins = 0, "bins", "cfg.bins = 0 is not in 1..=128"),
        (
            |c| c.loss_weight = f32::INFINITY,
            "loss_weight",
            "cfg.loss_weight = inf is not finite",
        ),
        (
            |c| c.grad_scale = f32::NAN,
            "grad_scale",
            "cfg.grad_scale = NaN is not finite",
        ),
        (
            |c| c.reduction = 7,
            "reduction",
            "cfg.reduction = 7 is not one of its GHM_* values",
        ),
        (
            |c| c.skip_bad = 2,
            "skip_bad",
            "cfg.skip_bad = 2 is not 0 or 1",
        ),
    ];
    for (set, field, message) in cases {
        let mut cfg = ghm_c_config_default();
        set(&mut cfg);
        expect(
            call_c(&cfg, null_mut(), &mut b),
            GHM_ERR_CONFIG,
            "cfg",
            field,
            -1,
            message,
        );
    }
    // loss_weight * grad_scale overflowing a bin's gradient factor is found by finalize.
    let mut cfg = ghm_c_config_default();
    (cfg.loss_weight, cfg.grad_scale, cfg.reduction) = (3e38, 3e38, GHM_REDUCTION_SUM);
    let why = "cfg.loss_weight = 300000000000000000000000000000000000000 times grad_scale is so \
               large that a bin's gradient factor overflows f32";
    expect(
        call_c(&cfg, null_mut(), &mut b),
        GHM_ERR_CONFIG,
        "cfg",
        "loss_weight",
        -1,
        why,
    );

    let mut r = ghm_r_config_default();
    r.mu = -1.0;
    // SAFETY: N floats each.
    let s = unsafe {
        ghm_r_loss_grad(
            &r,
            null_mut(),
            b.pred.as_ptr(),
            b.target.as_ptr(),
            null(),
            N,
            null_mut(),
            &mut b.loss,
            null_mut(),
            null_mut(),
        )
    };
    expect(
        s,
        GHM_ERR_CONFIG,
        "cfg",
        "mu",
        -1,
        "cfg.mu = -1 is not finite and at least 1.0842022e-19 (below it, mu * mu underflows f32)",
    );
    let labels = [0i32; N];
    let cfg = ghm_c_config_default();
    // SAFETY: N anchors x 1 class.
    let s = unsafe {
        ghm_c_loss_grad_labels(
            &cfg,
            null_mut(),
            b.pred.as_ptr(),
            labels.as_ptr(),
            null(),
            N,
            1,
            5,
            null_mut(),
            &mut b.loss,
            null_mut(),
            null_mut(),
        )
    };
    expect(
        s,
        GHM_ERR_CONFIG,
        "layout",
        "",
        -1,
        "layout = 5 is not a GHM_LAYOUT_* value",
    );
    let mut e = MaybeUninit::<Ema>::uninit();
    // SAFETY: a writable EMA.
    let s = unsafe { ghm_ema_init(e.as_mut_ptr(), 129) };
    expect(
        s,
        GHM_ERR_CONFIG,
        "bins",
        "",
        -1,
        "bins = 129 is not in 1..=128",
    );
    // SAFETY: a NUL-terminated name.
    let s = unsafe { ghm_set_backend(c"vector9000".as_ptr()) };
    let why = "name is not a backend name (scalar, sse2, avx2, avx512, neon, portable)";
    expect(s, GHM_ERR_CONFIG, "name", "", -1, why);
}

#[test]
fn state_names_the_struct_field_and_bin() {
    let mut b = batch();
    let mut cfg = ghm_c_config_default();
    cfg.momentum = 0.75;
    let why = "ema is NULL while cfg.momentum > 0";
    expect(
        call_c(&cfg, null_mut(), &mut b),
        GHM_ERR_STATE,
        "ema",
        "",
        -1,
        why,
    );

    let mut ema = Ema::new(20).unwrap();
    let before = ema;
    let why = "ema.bins = 20 differs from cfg.bins (made for another bin count)";
    expect(
        call_c(&cfg, &mut ema, &mut b),
        GHM_ERR_STATE,
        "ema",
        "bins",
        -1,
        why,
    );
    let mut ema = Ema::new(10).unwrap();
    ema.acc_sum[3] = f32::NAN;
    let why = "ema.acc_sum[3] = NaN is not a finite count >= 0";
    expect(
        call_c(&cfg, &mut ema, &mut b),
        GHM_ERR_STATE,
        "ema",
        "acc_sum",
        3,
        why,
    );
    assert_eq!(before.bins, 20);

    // Phases: the histogram and the weights.
    let cfg = ghm_c_config_default();
    let mut h = Hist::new(5).unwrap();
    // SAFETY: N floats each, a valid histogram.
    let s =
        unsafe { ghm_c_accumulate(&cfg, b.pred.as_ptr(), b.target.as_ptr(), null(), N, &mut h) };
    let why = "h.bins = 5 differs from cfg.bins (made for another bin count)";
    expect(s, GHM_ERR_STATE, "h", "bins", -1, why);
    let mut h = Hist::new(10).unwrap();
    h.g_sums[6] = -1.0;
    let mut w = MaybeUninit::<Weights>::zeroed();
    // SAFETY: valid structs.
    let s = unsafe { ghm_c_finalize(&cfg, null_mut(), &h, w.as_mut_ptr()) };
    expect(
        s,
        GHM_ERR_STATE,
        "h",
        "g_sums",
        6,
        "h.g_sums[6] = -1 is not a finite sum >= 0",
    );
    let h = Hist::new(10).unwrap();
    // SAFETY: valid structs.
    assert_eq!(
        unsafe { ghm_c_finalize(&cfg, null_mut(), &h, w.as_mut_ptr()) },
        GHM_OK
    );
    // SAFETY: finalize wrote the weights.
    let mut w = unsafe { w.assume_init() };
    w.scale[2] = f32::INFINITY;
    // SAFETY: N floats each.
    let s = unsafe {
        ghm_c_apply(
            &cfg,
            &w,
            b.pred.as_ptr(),
            b.target.as_ptr(),
            null(),
            N,
            b.grad.as_mut_ptr(),
            null_mut(),
        )
    };
    expect(
        s,
        GHM_ERR_STATE,
        "w",
        "scale",
        2,
        "w.scale[2] = inf is not finite",
    );
    assert!(b.grad.iter().all(|&g| g == 7.0));

    let (mut into, from) = (Hist::new(10).unwrap(), Hist::new(12).unwrap());
    // SAFETY: valid histograms.
    let s = unsafe { ghm_hist_merge(&mut into, &from) };
    let why = "from.bins = 12 differs from into.bins (histograms of other bin counts)";
    expect(s, GHM_ERR_STATE, "from", "bins", -1, why);
}

#[test]
fn input_names_the_array_and_the_element() {
    let cfg = ghm_c_config_default();
    let mut b = batch();
    b.pred[5] = f32::NAN;
    b.pred[9] = f32::NAN;
    let why = "pred[5] = NaN is not finite (skip_bad is 0)";
    expect(
        call_c(&cfg, null_mut(), &mut b),
        GHM_ERR_INPUT,
        "pred",
        "",
        5,
        why,
    );
    let mut b = batch();
    b.target[7] = 2.0;
    let why = "target[7] = 2 is not in [0, 1] (skip_bad is 0)";
    expect(
        call_c(&cfg, null_mut(), &mut b),
        GHM_ERR_INPUT,
        "target",
        "",
        7,
        why,
    );
    let mut b = batch();
    b.weight[N - 1] = -0.5;
    let why = "label_weight[39] = -0.5 is NaN, infinite or negative (skip_bad is 0)";
    expect(
        call_c(&cfg, null_mut(), &mut b),
        GHM_ERR_INPUT,
        "label_weight",
        "",
        39,
        why,
    );
    let mut probs = ghm_c_config_default();
    probs.input = GHM_INPUT_PROBS;
    let mut b = batch();
    for p in &mut b.pred {
        *p = 0.5;
    }
    b.pred[11] = 1.5;
    let why = "pred[11] = 1.5 is not a probability in [0, 1] (skip_bad is 0)";
    expect(
        call_c(&probs, null_mut(), &mut b),
        GHM_ERR_INPUT,
        "pred",
        "",
        11,
        why,
    );

    // Misaligned buffers take the bounced path: the same report.
    let mut bytes = [0u8; 4 * N + 1];
    let b = batch();
    for (i, p) in b.pred.iter().enumerate() {
        let v = if i == 23 { f32::INFINITY } else { *p };
        bytes[1 + 4 * i..5 + 4 * i].copy_from_slice(&v.to_ne_bytes());
    }
    let mut grad = vec![7.0f32; N];
    // SAFETY: N floats from byte 1 (any alignment is accepted).
    let s = unsafe {
        ghm_c_loss_grad(
            &cfg,
            null_mut(),
            bytes.as_ptr().add(1) as *const f32,
            b.target.as_ptr(),
            null(),
            N,
            grad.as_mut_ptr(),
            null_mut(),
            null_mut(),
            null_mut(),
        )
    };
    let why = "pred[23] = inf is not finite (skip_bad is 0)";
    expect(s, GHM_ERR_INPUT, "pred", "", 23, why);
    assert!(grad.iter().all(|&g| g == 7.0));
}

#[test]
fn input_index_is_the_callers_own_through_views_and_labels() {
    let cfg = ghm_c_config_default();
    // 3 blocks of 8, 20 apart from 4: block 2's element 5 is pred[4 + 40 + 5].
    let blocks = Blocks::uniform(3, 8, View::new(4, 20));
    let mut pred = vec![0.25f32; 4 + 2 * 20 + 8];
    let target = vec![0.0f32; pred.len()];
    pred[49] = f32::NEG_INFINITY;
    let mut loss = 7.0;
    // SAFETY: every buffer holds the views' extent.
    let s = unsafe {
        ghm_c_loss_grad_blocks(
            &cfg,
            null_mut(),
            &blocks,
            pred.as_ptr(),
            target.as_ptr(),
            null(),
            null_mut(),
            &mut loss,
            null_mut(),
            null_mut(),
        )
    };
    expect(
        s,
        GHM_ERR_INPUT,
        "pred",
        "",
        49,
        "pred[49] = -inf is not finite (skip_bad is 0)",
    );
    assert_eq!(loss, 7.0);

    // Class-index labels, class-major: the weight of anchor 6, and a logit of class 2.
    let (na, nc) = (10, 3);
    let mut logits = vec![0.5f32; na * nc];
    let labels = vec![1i32; na];
    let mut aw = vec![1.0f32; na];
    aw[6] = f32::NAN;
    let mut h = Hist::new(10).unwrap();
    // SAFETY: na anchors x nc classes.
    let s = unsafe {
        ghm_c_accumulate_labels(
            &cfg,
            logits.as_ptr(),
            labels.as_ptr(),
            aw.as_ptr(),
            na,
            nc,
            GHM_LAYOUT_CLASS_MAJOR,
            0,
            na,
            &mut h,
        )
    };
    let why = "anchor_weight[6] = NaN is NaN, infinite or negative (skip_bad is 0)";
    expect(s, GHM_ERR_INPUT, "anchor_weight", "", 6, why);
    aw[6] = 1.0;
    logits[2 * na + 4] = f32::NAN;
    // SAFETY: as above; anchors 3..5 only.
    let s = unsafe {
        ghm_c_accumulate_labels(
            &cfg,
            logits.as_ptr(),
            labels.as_ptr(),
            aw.as_ptr(),
            na,
            nc,
            GHM_LAYOUT_CLASS_MAJOR,
            3,
            5,
            &mut h,
        )
    };
    expect(
        s,
        GHM_ERR_INPUT,
        "pred",
        "",
        24,
        "pred[24] = NaN is not finite (skip_bad is 0)",
    );
    assert_eq!(h.counts, Hist::new(10).unwrap().counts);
}

#[test]
fn alias_names_the_output_and_what_it_overlaps() {
    let cfg = ghm_c_config_default();
    let mut b = batch();
    let p = b.pred.as_mut_ptr();
    // SAFETY: grad is pred: refused before anything is written.
    let s = unsafe {
        ghm_c_loss_grad(
            &cfg,
            null_mut(),
            p,
            b.target.as_ptr(),
            null(),
            N,
            p,
            null_mut(),
            null_mut(),
            null_mut(),
        )
    };
    expect(s, GHM_ERR_ALIAS, "grad", "", -1, "grad overlaps pred");
    // SAFETY: loss is the last gradient element.
    let s = unsafe {
        ghm_c_loss_grad(
            &cfg,
            null_mut(),
            b.pred.as_ptr(),
            b.target.as_ptr(),
            null(),
            N,
            b.grad.as_mut_ptr(),
            b.grad.as_mut_ptr().add(N - 1),
            null_mut(),
            null_mut(),
        )
    };
    expect(s, GHM_ERR_ALIAS, "grad", "", -1, "grad overlaps loss");
    // A gradient view whose blocks overlap one another.
    let mut blocks = Blocks::uniform(4, 10, View::new(0, 10));
    blocks.grad = View::new(0, 6);
    // SAFETY: the views' extents are within the buffers.
    let s = unsafe {
        ghm_c_loss_grad_blocks(
            &cfg,
            null_mut(),
            &blocks,
            b.pred.as_ptr(),
            b.target.as_ptr(),
            null(),
            b.grad.as_mut_ptr(),
            null_mut(),
            null_mut(),
            null_mut(),
        )
    };
    let why =
        "blocks.grad.stride = 6 is less than a block's elements: the blocks overlap one another";
    expect(s, GHM_ERR_ALIAS, "blocks", "grad.stride", -1, why);
    assert!(b.grad.iter().all(|&g| g == 7.0));
}

#[test]
fn shape_names_the_size_or_view() {
    let cfg = ghm_c_config_default();
    let b = batch();
    let labels = [0i32; N];
    let mut h = Hist::new(10).unwrap();
    // SAFETY: refused before any read.
    let s = unsafe {
        ghm_c_accumulate_labels(
            &cfg,
            b.pred.as_ptr(),
            labels.as_ptr(),
            null(),
            N,
            1,
            0,
            0,
            N + 1,
            &mut h,
        )
    };
    expect(
        s,
        GHM_ERR_SHAPE,
        "anchor_end",
        "",
        -1,
        "anchor_end = 41 is more than num_anchors",
    );
    // SAFETY: refused before any read.
    let s = unsafe {
        ghm_c_accumulate_labels(
            &cfg,
            b.pred.as_ptr(),
            labels.as_ptr(),
            null(),
            N,
            1,
            0,
            9,
            8,
            &mut h,
        )
    };
    expect(
        s,
        GHM_ERR_SHAPE,
        "anchor_begin",
        "",
        -1,
        "anchor_begin = 9 is more than anchor_end",
    );
    let huge = 1usize << 63;
    // SAFETY: refused before any read.
    let s = unsafe {
        ghm_c_accumulate_labels(
            &cfg,
            b.pred.as_ptr(),
            labels.as_ptr(),
            null(),
            huge,
            3,
            0,
            0,
            0,
            &mut h,
        )
    };
    let why = format!("num_anchors = {huge} is too large: the element count overflows size_t");
    expect(s, GHM_ERR_SHAPE, "num_anchors", "", -1, &why);
    let huge = 1usize << 62;
    // SAFETY: refused before any read.
    let s = unsafe {
        ghm_c_accumulate(
            &cfg,
            b.pred.as_ptr(),
            b.target.as_ptr(),
            null(),
            huge,
            &mut h,
        )
    };
    let why = format!("pred = {huge} would reach past the address space");
    expect(s, GHM_ERR_SHAPE, "pred", "", -1, &why);
    let mut blocks = Blocks::uniform(2, 8, View::new(0, 8));
    blocks.target = View::new(usize::MAX - 4, 8);
    // SAFETY: refused before any read.
    let s = unsafe {
        ghm_c_accumulate_blocks(
            &cfg,
            &blocks,
            b.pred.as_ptr(),
            b.target.as_ptr(),
            null(),
            &mut h,
        )
    };
    let why = "blocks.target reaches past the address space (offset + (count - 1) * stride + len \
               overflows)";
    expect(s, GHM_ERR_SHAPE, "blocks", "target", -1, why);
    assert_eq!(h, Hist::new(10).unwrap());
}

#[test]
fn reports_are_per_thread() {
    let cfg = ghm_c_config_default();
    let mut b = batch();
    b.pred[1] = f32::NAN;
    assert_eq!(call_c(&cfg, null_mut(), &mut b), GHM_ERR_INPUT);
    std::thread::spawn(|| {
        let cfg = ghm_c_config_default();
        let mut b = batch();
        expect(call_c(&cfg, null_mut(), &mut b), GHM_OK, "", "", -1, "");
    })
    .join()
    .unwrap();
    let r = last();
    assert_eq!((r.status, r.index), (GHM_ERR_INPUT, 1));
}

/// The README's error-check recipe is the YOLO-style example's own (compiled and run in CI).
#[test]
fn readme_error_recipe_is_the_example_code() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let example =
        std::fs::read_to_string(format!("{root}/ffi-tests/examples/yolo_train.c")).unwrap();
    let section = readme.split("### When a call fails").nth(1).unwrap();
    let block = section.split("```c\n").nth(1).unwrap();
    let block = block.split("```").next().unwrap();
    assert!(block.contains("ghm_last_error(&r)"));
    assert!(
        example.contains(block),
        "the README's check differs from yolo_train.c"
    );
}

/// `fault_message` into a buffer of `size` bytes, as text.
fn fault_text(
    error: ghm::Error,
    (argument, field, other, why): (&'static CStr, &'static CStr, &'static CStr, &'static CStr),
    index: Option<usize>,
    value: Option<f64>,
    size: usize,
) -> String {
    let mut buf = vec![0u8; size];
    let n =
        ghm::__private::fault_message(error, argument, field, index, value, other, why, &mut buf);
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[test]
fn message_names_argument_field_index_value_and_other() {
    let parts = (c"pred", c"", c"", c"is not finite");
    let text = fault_text(ghm::Error::Input, parts, Some(17), Some(f64::NAN), 100);
    assert_eq!(text, "pred[17] = NaN is not finite");
    let parts = (c"blocks", c"grad.stride", c"pred", c"overlaps");
    let text = fault_text(ghm::Error::Alias, parts, None, None, 100);
    assert_eq!(text, "blocks.grad.stride overlaps pred");
    let text = fault_text(ghm::Error::Shape, (c"", c"", c"", c""), None, None, 200);
    assert_eq!(text, ghm::Error::Shape.message());
}

#[test]
fn message_truncates_at_a_char_boundary_and_keeps_room_for_the_nul() {
    let parts = (c"pred", c"", c"", c"\u{e9} \u{e9} \u{e9}");
    // 7 bytes of room: one more would cut the second 'é' in half.
    assert_eq!(
        fault_text(ghm::Error::Input, parts, None, None, 8),
        "pred \u{e9}"
    );
    assert_eq!(fault_text(ghm::Error::Input, parts, None, None, 1), "");
}
