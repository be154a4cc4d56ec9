//! Dense-layer multiply kernels of the fast encoder, and the choice among them on the CPU at hand.
//!
//! The four dense layers are ~95% of the encoder's work, so their multiply decides its speed. Each
//! kernel packs a weight matrix once, at load, into panels of output columns laid out for its
//! registers, and computes `y = x·W + b` one register tile (rows × panel columns) at a time:
//! - `f32-avx512-12x32`, `f32-avx512-8x48`: f32 fused multiply-adds on 512-bit registers (two tile
//!   shapes: which is faster depends on the CPU's load ports and how it runs 512-bit instructions);
//! - `f32-avx2-6x16`, `f32-avx2-4x16`: f32 on 256-bit registers, for CPUs without AVX-512 and for
//!   those (e.g. AMD Zen 4) that run a 512-bit instruction as two halves, where it may be as fast
//!   (6 rows use 15 of the 16 registers; where the compiler spills one, 4 rows may be faster);
//! - `bf16-avx512-10x32`, `bf16-avx512-7x48`: bfloat16 pairs through AVX512-BF16's `vdpbf16ps`,
//!   sums in f32 (two shapes that fit the 32 registers; the same sums in the same order);
//! - `bf16-amx`: bfloat16 through AMX's tile multiply `tdpbf16ps` (32 × 32 outputs per tile group),
//!   where the CPU has AMX and Linux grants the process its tile state;
//! - `bf16-avx2-6x16`: the same bfloat16 arithmetic on any CPU with AVX2: weights packed as bf16
//!   pairs, inputs rounded to bf16, each pair widened to f32 in registers (exact) and summed by f32
//!   fused multiply-adds. About f32's speed, not faster, but a bf16 store made on a CPU with
//!   AVX512-BF16 stays queryable, with the same vectors to within rounding, where it has none;
//! - `bf16-fma512-12x32`: that arithmetic on 512-bit registers, AVX-512F alone: on a CPU whose
//!   `vdpbf16ps` runs at half the FMA rate (and AMX is not offered) it runs bf16 at f32's speed.
//!
//! An int8 mode (VNNI `vpdpbusd` and AMX `tdpbusd`, per-row scales) was built and measured: on a CPU
//! with AMX it came within 1.03–1.08× of bf16 (the multiply is no longer what limits the forward)
//! and moved sentence vectors to cosine 0.993, below its 0.995 bar, so it was dropped.
//!
//! Which kernel runs is chosen at load by timing the candidates on a layer of the model's shape
//! ([`choose`]; the 256-bit code only when clearly faster than the 512-bit code, so that processes
//! on one CPU give the same vectors), never by a build flag; `LIKEWISE_KERNELS` (or `--kernels`) narrows the choice:
//! `avx2` forces the 256-bit code everywhere (also the rest of the forward), `avx512` the 512-bit
//! code, `candle` candle's own matrix multiply (the reference path), `auto` (default) times them.
//!
//! Invariants: a kernel is only constructed after its instructions were detected on this CPU
//! ([`Kernel::available`]), which is what makes the `unsafe` calls below sound. A row's result
//! depends on that row alone (no cross-row sums), so batching never changes a vector.

#![cfg(target_arch = "x86_64")]

use super::bert::{
    gelu_erf, gelu_tanh, Activation, ERF_A, ERF_P, EXP_LOWEST, EXP_POLY, LN2_HIGH, LN2_LOW,
};
use super::helper::Lease;
use std::arch::x86_64::*;
use std::sync::OnceLock;

/// What the user asked for: `LIKEWISE_KERNELS` or `--kernels`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelRequest {
    /// Time the candidates and take the fastest (the default).
    Auto,
    /// Only 512-bit AVX-512 code.
    Avx512,
    /// Only 256-bit AVX2 code, as on a CPU without AVX-512.
    Avx2,
    /// candle's matrix multiply (f32 only).
    Candle,
}

impl KernelRequest {
    pub const NAMES: &'static str = "auto, avx512, avx2 or candle";

    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Some(Self::Auto),
            "avx512" => Some(Self::Avx512),
            "avx2" => Some(Self::Avx2),
            "candle" => Some(Self::Candle),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Avx512 => "avx512",
            Self::Avx2 => "avx2",
            Self::Candle => "candle",
        }
    }
}

static REQUEST: OnceLock<KernelRequest> = OnceLock::new();

/// Sets the request for this process (the CLI's `--kernels`); the first call wins.
pub fn set_request(request: KernelRequest) {
    let _ = REQUEST.set(request);
}

/// The request in force: [`set_request`]'s, else `LIKEWISE_KERNELS`, else auto. An unknown
/// `LIKEWISE_KERNELS` value is an error naming it.
pub fn request() -> Result<KernelRequest, String> {
    if let Some(r) = REQUEST.get() {
        return Ok(*r);
    }
    match std::env::var("LIKEWISE_KERNELS") {
        Ok(v) => KernelRequest::from_name(&v).ok_or_else(|| {
            format!(
                "LIKEWISE_KERNELS={v:?} is not a kernel choice: use {}",
                KernelRequest::NAMES
            )
        }),
        Err(_) => Ok(KernelRequest::Auto),
    }
}

/// Which instruction set the rest of the forward (attention, norms, GELU) is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
}

impl Isa {
    pub fn available(self) -> bool {
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        match self {
            Isa::Avx2 => avx2,
            Isa::Avx512 => {
                avx2 && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
        }
    }
}

/// One dense-multiply kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    F32Avx512x12x32,
    F32Avx512x8x48,
    F32Avx2x6x16,
    F32Avx2x4x16,
    Bf16Avx512x10x32,
    Bf16Avx512x7x48,
    Bf16Amx,
    Bf16Avx2x6x16,
    Bf16Fma512x12x32,
}

impl Kernel {
    /// Every kernel this build has.
    pub const ALL: [Kernel; 9] = [
        Kernel::F32Avx512x12x32,
        Kernel::F32Avx512x8x48,
        Kernel::F32Avx2x6x16,
        Kernel::F32Avx2x4x16,
        Kernel::Bf16Avx512x10x32,
        Kernel::Bf16Avx512x7x48,
        Kernel::Bf16Amx,
        Kernel::Bf16Avx2x6x16,
        Kernel::Bf16Fma512x12x32,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kernel::F32Avx512x12x32 => "f32-avx512-12x32",
            Kernel::F32Avx512x8x48 => "f32-avx512-8x48",
            Kernel::F32Avx2x6x16 => "f32-avx2-6x16",
            Kernel::F32Avx2x4x16 => "f32-avx2-4x16",
            Kernel::Bf16Avx512x10x32 => "bf16-avx512-10x32",
            Kernel::Bf16Avx512x7x48 => "bf16-avx512-7x48",
            Kernel::Bf16Amx => "bf16-amx",
            Kernel::Bf16Avx2x6x16 => "bf16-avx2-6x16",
            Kernel::Bf16Fma512x12x32 => "bf16-fma512-12x32",
        }
    }

    /// The instruction set the forward around this kernel is compiled for.
    pub fn isa(self) -> Isa {
        match self {
            Kernel::F32Avx2x6x16 | Kernel::F32Avx2x4x16 | Kernel::Bf16Avx2x6x16 => Isa::Avx2,
            _ => Isa::Avx512,
        }
    }

    /// True when this CPU has every instruction the kernel uses.
    pub fn available(self) -> bool {
        self.isa().available()
            && match self {
                Kernel::Bf16Avx512x10x32 | Kernel::Bf16Avx512x7x48 => {
                    std::arch::is_x86_feature_detected!("avx512bf16")
                }
                Kernel::Bf16Amx => amx_ready(AMX_BF16),
                _ => true,
            }
    }

    /// The arithmetic the kernel does (which precision it serves).
    pub fn family(self) -> Family {
        match self {
            Kernel::Bf16Avx512x10x32
            | Kernel::Bf16Avx512x7x48
            | Kernel::Bf16Amx
            | Kernel::Bf16Avx2x6x16
            | Kernel::Bf16Fma512x12x32 => Family::Bf16,
            _ => Family::F32,
        }
    }

    fn is_amx(self) -> bool {
        matches!(self, Kernel::Bf16Amx)
    }

    /// True for the kernels that take their inputs as bf16 pairs (`vdpbf16ps`, `tdpbf16ps`).
    pub(crate) fn takes_bf16_pairs(self) -> bool {
        matches!(
            self,
            Kernel::Bf16Avx512x10x32 | Kernel::Bf16Avx512x7x48 | Kernel::Bf16Amx
        )
    }

    /// Rows of one register tile.
    fn tile_rows(self) -> usize {
        match self {
            Kernel::Bf16Amx => 32,
            Kernel::F32Avx512x12x32 | Kernel::Bf16Fma512x12x32 => 12,
            Kernel::Bf16Avx512x10x32 => 10,
            Kernel::F32Avx512x8x48 => 8,
            Kernel::Bf16Avx512x7x48 => 7,
            Kernel::F32Avx2x6x16 | Kernel::Bf16Avx2x6x16 => 6,
            Kernel::F32Avx2x4x16 => 4,
        }
    }

    /// Output columns of one packed panel.
    fn panel(self) -> usize {
        match self {
            Kernel::F32Avx512x12x32
            | Kernel::Bf16Avx512x10x32
            | Kernel::Bf16Amx
            | Kernel::Bf16Fma512x12x32 => 32,
            Kernel::F32Avx512x8x48 | Kernel::Bf16Avx512x7x48 => 48,
            Kernel::F32Avx2x6x16 | Kernel::F32Avx2x4x16 | Kernel::Bf16Avx2x6x16 => 16,
        }
    }

    /// Inputs packed together along the reduction: bf16 pairs.
    fn group(self) -> usize {
        match self.family() {
            Family::Bf16 => 2,
            Family::F32 => 1,
        }
    }

    /// Reduction steps of a layer with `inputs` inputs: AMX tiles take 16 steps (64 bytes) a row.
    fn steps(self, inputs: usize) -> usize {
        let steps = inputs.div_ceil(self.group());
        if self.is_amx() {
            steps.next_multiple_of(16)
        } else {
            steps
        }
    }
}

/// What a kernel computes in: each precision has its own candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    F32,
    Bf16,
}

/// CPUID leaf 7 EDX bits of the AMX parts.
const AMX_BF16: u32 = 1 << 22;
const AMX_TILE: u32 = 1 << 24;

/// True when this CPU has AMX with `part`, and Linux lets this process use the tile data (asked
/// once per process with `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: Linux turns AMX's
/// 8 KiB of state on only for processes that ask).
fn amx_ready(part: u32) -> bool {
    static PERMITTED: OnceLock<bool> = OnceLock::new();
    // CPUID leaf 7 exists on every x86-64 CPU with AVX2 (checked by the caller's `isa`).
    let edx = __cpuid_count(7, 0).edx;
    if edx & AMX_TILE == 0 || edx & part == 0 {
        return false;
    }
    *PERMITTED.get_or_init(|| {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: a plain system call with two integer arguments; it only changes which CPU state
        // the kernel saves for this process.
        unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) == 0
        }
    })
}

/// The kernels of `family` this CPU can run under `request` (`avx512`: the 512-bit vector
/// kernels, no AMX; `avx2`: the 256-bit ones).
pub fn candidates(family: Family, request: KernelRequest) -> Vec<Kernel> {
    Kernel::ALL
        .into_iter()
        .filter(|k| k.family() == family && k.available())
        .filter(|k| match request {
            KernelRequest::Avx512 => k.isa() == Isa::Avx512 && !k.is_amx(),
            KernelRequest::Avx2 => k.isa() == Isa::Avx2,
            KernelRequest::Auto | KernelRequest::Candle => true,
        })
        .collect()
}

/// The fastest kernel of `family` here for layers of `inputs` → `outputs`, among those `request`
/// allows; `None` when none can run (no AVX2, AVX-512 forced on a CPU without it, bf16 without
/// AVX512-BF16 or AMX). Timed once per process, family and shape: a few milliseconds.
pub fn choose(
    family: Family,
    request: KernelRequest,
    inputs: usize,
    outputs: usize,
) -> Option<Kernel> {
    type Memo = Vec<(Family, KernelRequest, usize, usize, Option<Kernel>)>;
    static CHOSEN: OnceLock<std::sync::Mutex<Memo>> = OnceLock::new();
    let memo = CHOSEN.get_or_init(Default::default);
    if let Some(m) = memo
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|m| m.0 == family && m.1 == request && m.2 == inputs && m.3 == outputs)
    {
        return m.4;
    }
    let candidates = candidates(family, request);
    let chosen = match candidates.len() {
        0 => None,
        1 => Some(candidates[0]),
        _ => Some(fastest(&candidates, inputs, outputs)),
    };
    memo.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((family, request, inputs, outputs, chosen));
    chosen
}

/// Times each candidate on 48 rows through a layer of this shape, alternating them over a few
/// rounds (the best time of each counts, so a noisy neighbour on the machine biases no one).
fn fastest(candidates: &[Kernel], inputs: usize, outputs: usize) -> Kernel {
    let rows = 48;
    let value = |i: usize| ((i.wrapping_mul(2_654_435_761) >> 7) % 1000) as f32 / 1000.0 - 0.5;
    let weights: Vec<f32> = (0..inputs * outputs).map(value).collect();
    let bias = vec![0.0; outputs];
    let x: Vec<f32> = (0..rows * inputs).map(|i| value(i + 17)).collect();
    let layers: Vec<Dense> = candidates
        .iter()
        .map(|&k| Dense::pack(k, &weights, &bias, inputs, outputs))
        .collect();
    let mut out = vec![0f32; rows * outputs];
    let mut stage = Stage::default();
    let mut best = vec![f64::INFINITY; layers.len()];
    for _round in 0..4 {
        for (layer, best) in layers.iter().zip(&mut best) {
            let start = std::time::Instant::now();
            layer.multiply(&x, rows, &mut out, Finish::Nothing, &mut stage, None);
            *best = best.min(start.elapsed().as_secs_f64());
        }
    }
    let fastest_of = |isa: Option<Isa>| {
        (0..layers.len())
            .filter(|&i| isa.is_none_or(|isa| candidates[i].isa() == isa))
            .min_by(|&a, &b| best[a].total_cmp(&best[b]))
    };
    let at = fastest_of(None).expect("at least two candidates");
    // The instruction set decides a vector's last bits (the two copies of the forward compute
    // attention and GELU in their own register widths), so the 256-bit code is taken over the
    // 512-bit one only when it is clearly faster. Where the two are close (AMD Zen 4), timing
    // noise would otherwise let two processes on one CPU give different last bits, and a store
    // made by one process would not match, bit for bit, the queries of another.
    match fastest_of(Some(Isa::Avx512)) {
        Some(wide) if best[wide] <= best[at] * WIDER_UNLESS_FASTER => candidates[wide],
        _ => candidates[at],
    }
}

/// How much faster (in time) a 256-bit kernel must be than the fastest 512-bit one to be chosen.
const WIDER_UNLESS_FASTER: f64 = 1.15;

/// Every kernel this CPU can run, for `bench kernels`.
pub fn all_available() -> Vec<Kernel> {
    Kernel::ALL.into_iter().filter(|k| k.available()).collect()
}

/// Multiply-add rate of `kernel` on `rows` rows through an `inputs` → `outputs` layer, one thread:
/// GFLOP/s, best of `rounds` (a measurement for `bench kernels`, the same code as the forward's).
pub fn gflops(kernel: Kernel, rows: usize, inputs: usize, outputs: usize, rounds: usize) -> f64 {
    let value = |i: usize| ((i.wrapping_mul(2_654_435_761) >> 7) % 1000) as f32 / 1000.0 - 0.5;
    let weights: Vec<f32> = (0..inputs * outputs).map(value).collect();
    let layer = Dense::pack(kernel, &weights, &vec![0.0; outputs], inputs, outputs);
    let x: Vec<f32> = (0..rows * inputs).map(|i| value(i + 17)).collect();
    let mut out = vec![0f32; rows * outputs];
    let mut stage = Stage::default();
    let mut best = f64::INFINITY;
    for _ in 0..rounds.max(1) {
        let start = std::time::Instant::now();
        layer.multiply(&x, rows, &mut out, Finish::Nothing, &mut stage, None);
        best = best.min(start.elapsed().as_secs_f64());
    }
    2.0 * (rows * inputs * outputs) as f64 / best / 1e9
}

/// The CPU's own rate, one thread, for the instruction that does `kernel`'s multiply-adds:
/// GFLOP/s of twelve independent running sums and nothing else (no loads, no stores), the
/// ceiling a kernel's figure is judged against. `None` for AMX (its tile instructions run
/// only inside a tile configuration).
pub fn instruction_peak_gflops(kernel: Kernel) -> Option<f64> {
    if !kernel.available() || kernel.is_amx() {
        return None;
    }
    // Enough turns for a few milliseconds on any CPU of this kind; best of three.
    const TURNS: usize = 200_000;
    let mut best = f64::INFINITY;
    let mut flops_per_turn = 0.0;
    for _ in 0..3 {
        let start = std::time::Instant::now();
        // SAFETY: `available` checked every instruction of the kernel, hence of its peak loop.
        flops_per_turn = unsafe {
            match (kernel.takes_bf16_pairs(), kernel.isa()) {
                (true, _) => peak_dpbf16_512(TURNS),
                (false, Isa::Avx512) => peak_fma_512(TURNS),
                (false, Isa::Avx2) => peak_fma_256(TURNS),
            }
        };
        best = best.min(start.elapsed().as_secs_f64());
    }
    Some(flops_per_turn * TURNS as f64 / best / 1e9)
}

/// Independent running sums in [`instruction_peak_gflops`]: more than any of these
/// instructions' latency times its rate, so none waits on its previous result.
const PEAK_CHAINS: usize = 12;

/// One loop of [`instruction_peak_gflops`]: `turns` × [`PEAK_CHAINS`] of one multiply-add
/// instruction, each on its own running sum; the function returns the FLOP of one turn.
macro_rules! peak_loop {
    ($(#[$doc:meta])* $name:ident, $features:literal, $zero:expr, ($x:expr, $y:expr),
     |$sum:ident, $a:ident, $b:ident| $step:expr, $flops_each:expr) => {
        $(#[$doc])*
        #[target_feature(enable = $features)]
        unsafe fn $name(turns: usize) -> f64 {
            let (x, y) = std::hint::black_box(($x, $y));
            let mut sums = [$zero; PEAK_CHAINS];
            for _ in 0..turns {
                for slot in sums.iter_mut() {
                    let ($sum, $a, $b) = (*slot, x, y);
                    *slot = $step;
                }
            }
            std::hint::black_box(sums);
            (PEAK_CHAINS * $flops_each) as f64
        }
    };
}

peak_loop!(
    /// `vdpbf16ps` (16 lanes × 2 pairs × 2 FLOP).
    ///
    /// # Safety
    /// AVX-512F and AVX512-BF16 present.
    peak_dpbf16_512,
    "avx512f,avx512bf16",
    _mm512_setzero_ps(),
    (
        std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(0x3F80_3F80)),
        std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(0x3F00_3F00))
    ),
    |sum, a, b| _mm512_dpbf16_ps(sum, a, b),
    16 * 2 * 2
);

peak_loop!(
    /// The 512-bit FMA (16 lanes × 2 FLOP).
    ///
    /// # Safety
    /// AVX-512F present.
    peak_fma_512,
    "avx512f",
    _mm512_setzero_ps(),
    (_mm512_set1_ps(1.0), _mm512_set1_ps(0.5)),
    |sum, a, b| _mm512_fmadd_ps(a, b, sum),
    16 * 2
);

peak_loop!(
    /// The 256-bit FMA (8 lanes × 2 FLOP).
    ///
    /// # Safety
    /// AVX2 and FMA present.
    peak_fma_256,
    "avx2,fma",
    _mm256_setzero_ps(),
    (_mm256_set1_ps(1.0), _mm256_set1_ps(0.5)),
    |sum, a, b| _mm256_fmadd_ps(a, b, sum),
    8 * 2
);

/// What happens to a dense layer's output right after it is computed, while it is in L1.
#[derive(Clone, Copy)]
pub(crate) enum Finish {
    Nothing,
    Activate(Activation),
}

impl Finish {
    #[inline(always)]
    fn apply(self, values: &mut [f32]) {
        match self {
            Finish::Nothing => {}
            Finish::Activate(Activation::GeluErf) => {
                values.iter_mut().for_each(|v| *v = gelu_erf(*v))
            }
            Finish::Activate(Activation::GeluTanh) => {
                values.iter_mut().for_each(|v| *v = gelu_tanh(*v))
            }
            Finish::Activate(Activation::Relu) => values.iter_mut().for_each(|v| *v = v.max(0.0)),
        }
    }
}

/// Buffers a thread reuses from one multiply to the next: the inputs in the kernel's format.
#[derive(Default)]
pub(crate) struct Stage {
    f32_tail: Vec<f32>,
    words: Vec<u32>,
    /// Inputs rounded to bf16, kept as f32 (the AVX2 bf16 kernel), rows of `2 × steps`.
    rounded: Vec<f32>,
}

/// A dense layer `y = x·W + b` with `W` packed for one kernel.
pub(crate) struct Dense {
    kernel: Kernel,
    inputs: usize,
    outputs: usize,
    /// Reduction steps: inputs divided by the kernel's group, rounded up.
    steps: usize,
    f32_panels: Vec<f32>,
    /// bf16 pairs, one `u32` per lane and step.
    word_panels: Vec<u32>,
    /// Padded to whole panels with zeros.
    bias: Vec<f32>,
}

/// Rounds to the nearest bf16, ties to even (NaN is not expected in activations or weights).
#[inline(always)]
pub(crate) fn bf16_bits(x: f32) -> u32 {
    let b = x.to_bits();
    (b + 0x7FFF + ((b >> 16) & 1)) >> 16
}

/// A multiply's output, a raw pointer handed to the threads that fill disjoint column ranges
/// of it: f32 rows of `outputs`, or bf16 pairs, rows of `outputs / 2` words.
#[derive(Clone, Copy)]
enum Output {
    F32(*mut f32),
    Pairs(*mut u32),
}
// SAFETY: the threads given one write disjoint panels (column ranges) of the output; a panel's
// columns start at an even column, so no two write the same word of pairs.
unsafe impl Send for Output {}
unsafe impl Sync for Output {}

impl Dense {
    /// Packs `weight_t`, `(inputs, outputs)` row-major, for `kernel`.
    ///
    /// # Panics
    /// If the kernel cannot run on this CPU (callers take kernels from [`choose`] or check
    /// [`Kernel::available`]) or the slices do not have the stated sizes.
    pub fn pack(
        kernel: Kernel,
        weight_t: &[f32],
        bias: &[f32],
        inputs: usize,
        outputs: usize,
    ) -> Self {
        assert_eq!(weight_t.len(), inputs * outputs);
        Self::pack_with(kernel, bias, inputs, outputs, |k, col| {
            weight_t[k * outputs + col]
        })
    }

    /// Packs a weight as checkpoints store it, `(outputs, inputs)` row-major, given as blocks of
    /// whole rows stacked in order (Q, K and V's weights for their fused multiply): no transposed
    /// copy is made on the way.
    ///
    /// # Panics
    /// As [`Dense::pack`]; also if the blocks do not hold `outputs` rows of `inputs` values.
    pub fn pack_rows(
        kernel: Kernel,
        blocks: &[impl AsRef<[f32]>],
        bias: &[f32],
        inputs: usize,
        outputs: usize,
    ) -> Self {
        let rows: Vec<&[f32]> = blocks
            .iter()
            .flat_map(|block| {
                let block = block.as_ref();
                assert!(
                    block.len().is_multiple_of(inputs),
                    "a block of partial rows"
                );
                block.chunks_exact(inputs)
            })
            .collect();
        assert_eq!(rows.len(), outputs);
        Self::pack_with(kernel, bias, inputs, outputs, |k, col| rows[col][k])
    }

    /// Packs the weight whose value from input `k` to output `col` is `weight(k, col)`.
    fn pack_with(
        kernel: Kernel,
        bias: &[f32],
        inputs: usize,
        outputs: usize,
        weight: impl Fn(usize, usize) -> f32,
    ) -> Self {
        assert!(
            kernel.available(),
            "{} cannot run on this CPU",
            kernel.name()
        );
        assert_eq!(bias.len(), outputs);
        let width = kernel.panel();
        let steps = kernel.steps(inputs);
        let panel_count = outputs.div_ceil(width);
        let w = |k: usize, col: usize| {
            if k < inputs && col < outputs {
                weight(k, col)
            } else {
                0.0
            }
        };
        let mut dense = Self {
            kernel,
            inputs,
            outputs,
            steps,
            f32_panels: Vec::new(),
            word_panels: Vec::new(),
            bias: {
                let mut b = bias.to_vec();
                b.resize(panel_count * width, 0.0);
                b
            },
        };
        // Where a step's word for one lane of a panel goes. AMX: the panel's steps in blocks of
        // 16, each block two 16-column tiles of 16 rows × 64 bytes, one after the other.
        let amx = kernel.is_amx();
        let at = |panel: usize, step: usize, lane: usize| {
            if amx {
                ((((panel * steps / 16 + step / 16) * 2 + lane / 16) * 16 + step % 16) * 16)
                    + lane % 16
            } else {
                (panel * steps + step) * width + lane
            }
        };
        match kernel {
            Kernel::F32Avx512x12x32
            | Kernel::F32Avx512x8x48
            | Kernel::F32Avx2x6x16
            | Kernel::F32Avx2x4x16 => {
                dense.f32_panels = vec![0.0; panel_count * steps * width];
                for panel in 0..panel_count {
                    for step in 0..steps {
                        for lane in 0..width {
                            dense.f32_panels[at(panel, step, lane)] = w(step, panel * width + lane);
                        }
                    }
                }
            }
            Kernel::Bf16Avx512x10x32
            | Kernel::Bf16Avx512x7x48
            | Kernel::Bf16Amx
            | Kernel::Bf16Avx2x6x16
            | Kernel::Bf16Fma512x12x32 => {
                dense.word_panels = vec![0; panel_count * steps * width];
                for panel in 0..panel_count {
                    for step in 0..steps {
                        for lane in 0..width {
                            let col = panel * width + lane;
                            let lo = bf16_bits(w(2 * step, col));
                            let hi = bf16_bits(w(2 * step + 1, col));
                            dense.word_panels[at(panel, step, lane)] = lo | (hi << 16);
                        }
                    }
                }
            }
        }
        dense
    }

    /// `out (rows, outputs) = input (rows, inputs) · W + b`, then `finish` on every value. With a
    /// `helper`, the helper thread takes half the panels (for a lone short sequence, which would
    /// otherwise keep one core busy); a value never depends on how the work was split.
    pub fn multiply(
        &self,
        input: &[f32],
        rows: usize,
        out: &mut [f32],
        finish: Finish,
        stage: &mut Stage,
        helper: Option<&Lease>,
    ) {
        assert!(out.len() >= rows * self.outputs);
        self.multiply_into(
            input,
            rows,
            Output::F32(out.as_mut_ptr()),
            finish,
            stage,
            helper,
        )
    }

    /// Whether [`Self::multiply_to_pairs`] can round this layer's outputs to bf16 pairs as its
    /// tiles store them, with `finish`: the `vdpbf16ps` tiles (the others store f32), an even
    /// number of outputs, and no finish other than the GELU those tiles apply in registers.
    pub fn stores_pairs(&self, finish: Finish) -> bool {
        self.kernel.takes_bf16_pairs()
            && !self.kernel.is_amx()
            && self.outputs.is_multiple_of(2)
            && matches!(
                finish,
                Finish::Nothing | Finish::Activate(Activation::GeluErf)
            )
    }

    /// Whether [`Self::multiply_pairs`] takes the output of `producer`'s
    /// [`Self::multiply_to_pairs`] as its input.
    pub fn takes_pairs_of(&self, producer: &Dense) -> bool {
        self.kernel.takes_bf16_pairs() && 2 * self.steps == producer.outputs
    }

    /// [`Self::multiply`] whose output, rounded to bf16 as [`Self::multiply_pairs`] of the next
    /// layer takes it, goes to `words` (`rows` rows of `outputs / 2` words) instead of f32 rows:
    /// the same bits the next layer would otherwise make from the f32 rows, without writing them
    /// and reading them back. Only where [`Self::stores_pairs`] holds.
    pub fn multiply_to_pairs(
        &self,
        input: &[f32],
        rows: usize,
        words: &mut Vec<u32>,
        finish: Finish,
        stage: &mut Stage,
        helper: Option<&Lease>,
    ) {
        assert!(
            self.stores_pairs(finish),
            "{} stores f32",
            self.kernel.name()
        );
        let out = grown(words, rows * self.outputs / 2);
        self.multiply_into(
            input,
            rows,
            Output::Pairs(out.as_mut_ptr()),
            finish,
            stage,
            helper,
        )
    }

    /// [`Self::multiply`] of inputs already in bf16 pairs, from [`Self::multiply_to_pairs`] of
    /// the layer before (`rows` rows of `steps` words; the rows up to a whole tile are zeroed
    /// here).
    pub fn multiply_pairs(
        &self,
        words: &mut Vec<u32>,
        rows: usize,
        out: &mut [f32],
        finish: Finish,
        helper: Option<&Lease>,
    ) {
        assert!(
            self.kernel.takes_bf16_pairs(),
            "{} takes f32",
            self.kernel.name()
        );
        assert!(out.len() >= rows * self.outputs);
        if rows == 0 {
            return;
        }
        let padded = rows.next_multiple_of(self.kernel.tile_rows());
        grown(words, padded * self.steps)[rows * self.steps..].fill(0);
        let job = Job {
            rows,
            out: Output::F32(out.as_mut_ptr()),
            f32_input: &[],
            tail_at: padded,
            words,
            rounded: &[],
            f32_tail: &[],
            finish,
        };
        self.run_job(&job, helper);
    }

    /// [`Self::multiply`] into `out`, f32 rows or bf16 pairs.
    fn multiply_into(
        &self,
        input: &[f32],
        rows: usize,
        out: Output,
        finish: Finish,
        stage: &mut Stage,
        helper: Option<&Lease>,
    ) {
        assert!(input.len() >= rows * self.inputs);
        if rows == 0 {
            return;
        }
        let tile = self.kernel.tile_rows();
        let padded = rows.next_multiple_of(tile);
        // Inputs in the kernel's format: f32 rows as they are (only the last, partial tile is
        // copied, zero-padded), bf16 pairs converted here, padding rows zero.
        let (f32_input, tail_at): (&[f32], usize) = match self.kernel {
            k if k.takes_bf16_pairs() => {
                // SAFETY: this kernel's instructions, AVX-512 among them, were detected at packing.
                unsafe {
                    stage_bf16(
                        input,
                        rows,
                        self.inputs,
                        self.steps,
                        padded,
                        &mut stage.words,
                    )
                };
                (&[], padded)
            }
            Kernel::Bf16Avx2x6x16 | Kernel::Bf16Fma512x12x32 => {
                // SAFETY: AVX2 was detected at packing (AVX-512 implies it here).
                unsafe {
                    stage_rounded_avx2(
                        input,
                        rows,
                        self.inputs,
                        2 * self.steps,
                        padded,
                        &mut stage.rounded,
                    )
                };
                (&[], padded)
            }
            _ => {
                let full = rows - rows % tile;
                stage.f32_tail.clear();
                stage.f32_tail.resize(tile * self.inputs, 0.0);
                stage.f32_tail[..(rows - full) * self.inputs]
                    .copy_from_slice(&input[full * self.inputs..rows * self.inputs]);
                (input, full)
            }
        };
        let job = Job {
            rows,
            out,
            f32_input,
            tail_at,
            words: &stage.words,
            rounded: &stage.rounded,
            f32_tail: &stage.f32_tail,
            finish,
        };
        self.run_job(&job, helper);
    }

    /// Every panel of `job`, half of them on `helper` if given.
    fn run_job(&self, job: &Job, helper: Option<&Lease>) {
        let panel_count = self.outputs.div_ceil(self.kernel.panel());
        match helper {
            Some(lease) if panel_count > 1 => {
                let half = panel_count.div_ceil(2);
                lease.share(&|| self.run_panels(job, half..panel_count), || {
                    self.run_panels(job, 0..half)
                });
            }
            _ => self.run_panels(job, 0..panel_count),
        }
    }

    /// [`Self::panels`] in the copy compiled for the kernel's instruction set, so that the finish
    /// (GELU's `exp`, its `floor`) vectorises with it instead of calling scalar library code.
    fn run_panels(&self, job: &Job, panels: std::ops::Range<usize>) {
        // SAFETY: the kernel, and so its instruction set, was detected on this CPU when packed.
        match self.kernel.isa() {
            Isa::Avx512 => unsafe { self.panels_avx512(job, panels) },
            Isa::Avx2 => unsafe { self.panels_avx2(job, panels) },
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    unsafe fn panels_avx512(&self, job: &Job, panels: std::ops::Range<usize>) {
        if self.kernel.is_amx() {
            // The tile registers are this thread's: configured for this job, released after it.
            amx_configure();
            self.panels(job, panels);
            amx_release();
        } else {
            self.panels(job, panels)
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn panels_avx2(&self, job: &Job, panels: std::ops::Range<usize>) {
        self.panels(job, panels)
    }

    /// Every tile of the output columns of `panels`, in cache blocks of rows.
    #[inline(always)]
    fn panels(&self, job: &Job, panels: std::ops::Range<usize>) {
        let tile = self.kernel.tile_rows();
        let width = self.kernel.panel();
        let rows = job.rows;
        // Rows per cache block: the block's inputs stay in L2 while every panel passes over them.
        // The rows are shared evenly among the blocks: a short last block would stream every
        // panel from L3 again for a few rows.
        let most_rows = (256 * 1024 / (4 * self.inputs.max(1)))
            .next_multiple_of(tile)
            .clamp(tile, 16 * tile);
        let block_rows = rows
            .div_ceil(rows.div_ceil(most_rows))
            .next_multiple_of(tile);
        // Every panel is `steps × width` words of 4 bytes, whatever the kernel.
        let panel_lines = self.steps * width * 4 / 64;
        // Where the GELU goes on the sums in registers as they are stored:
        // - the 256-bit kernels: a separate pass over the stored rows cost as much again (a
        //   division and an `exp` per value, re-read);
        // - the `vdpbf16ps` tiles: as a pass, its loads waited on the tile's stores (the output
        //   rows are not in cache); in registers bf16 ran 5% faster (AMD EPYC family 25 model
        //   17, 2026-12-03). bf16 rounds the GELU's output to 8 bits of mantissa right after (the
        //   next layer's input): a GELU without `exp` or a Newton step for the reciprocal is as
        //   good there.
        // The other 512-bit kernels keep the pass, on each tile's rows while they are in L1: the
        // exact GELU in the f32 tiles' registers was 5–15% slower on an Intel Xeon (family 6,
        // model 207, 2026-12-02) and no faster on that EPYC. AMX stores its sums through memory.
        let gelu_erf = matches!(job.finish, Finish::Activate(Activation::GeluErf));
        let gelu_rounded = gelu_erf && self.kernel.family() == Family::Bf16;
        let gelu_in_store = match self.kernel.isa() {
            _ if !gelu_erf || self.kernel.is_amx() => StoreGelu::None,
            Isa::Avx2 => StoreGelu::Exact,
            Isa::Avx512 if self.kernel.takes_bf16_pairs() => StoreGelu::BeforeBf16,
            Isa::Avx512 => StoreGelu::None,
        };
        let weights: *const u8 = if self.word_panels.is_empty() {
            self.f32_panels.as_ptr().cast()
        } else {
            self.word_panels.as_ptr().cast()
        };
        for block in (0..rows).step_by(block_rows) {
            let block_end = (block + block_rows).min(rows);
            let block_tiles = (block_end - block).div_ceil(tile);
            for panel in panels.clone() {
                let cols = width.min(self.outputs - panel * width);
                // The panel after this one (the first again when another block follows), its
                // lines shared out among this panel's tiles.
                let next = if panel + 1 < panels.end {
                    Some(panel + 1)
                } else {
                    (block_end < rows).then_some(panels.start)
                };
                let share = panel_lines.div_ceil(block_tiles);
                // Lines per reduction step, divided once per panel rather than in every tile.
                let share_per_step = share.div_ceil(self.steps.max(1));
                for row in (block..block_end).step_by(tile) {
                    let tile_rows = tile.min(block_end - row);
                    let nth = (row - block) / tile;
                    let ahead = match next {
                        Some(next) if nth * share < panel_lines => (
                            // SAFETY: inside the packed panels (`next` < panel count, the
                            // share's first line < the panel's lines); only prefetched.
                            unsafe { weights.add((next * panel_lines + nth * share) * 64) },
                            share.min(panel_lines - nth * share),
                            share_per_step,
                        ),
                        _ => (std::ptr::null(), 0, 0),
                    };
                    // SAFETY: `out` holds `rows` rows of `outputs` (asserted in `multiply`; pairs:
                    // half as many words, sized in `multiply_to_pairs`) and this tile writes rows
                    // `row..row + tile_rows`, columns of `panel` only.
                    let (out_at, out_stride) = match job.out {
                        Output::F32(out) => (
                            unsafe { out.add(row * self.outputs + panel * width) },
                            self.outputs,
                        ),
                        Output::Pairs(out) => (
                            unsafe { out.add((row * self.outputs + panel * width) / 2) }
                                .cast::<f32>(),
                            self.outputs / 2,
                        ),
                    };
                    let pairs = matches!(job.out, Output::Pairs(_));
                    let a = match self.kernel {
                        k if k.takes_bf16_pairs() => {
                            TileInput::Words(&job.words[row * self.steps..], self.steps)
                        }
                        Kernel::Bf16Avx2x6x16 | Kernel::Bf16Fma512x12x32 => {
                            TileInput::F32(&job.rounded[row * 2 * self.steps..], 2 * self.steps)
                        }
                        _ if row >= job.tail_at => TileInput::F32(job.f32_tail, self.inputs),
                        _ => TileInput::F32(&job.f32_input[row * self.inputs..], self.inputs),
                    };
                    // SAFETY: the kernel was detected on this CPU when packed; the tile reads
                    // `tile_rows` rows of `a` (full tiles from the input, the last from the
                    // padded copy), one panel of weights, and writes `tile_rows` rows from `out_at`.
                    unsafe {
                        self.tile(
                            a,
                            panel,
                            (out_at, out_stride, pairs),
                            (tile_rows, cols),
                            ahead,
                            gelu_in_store,
                        )
                    };
                    // Pairs come only from tiles that apply the finish as they store
                    // (`stores_pairs`).
                    if gelu_in_store != StoreGelu::None || pairs {
                        continue;
                    }
                    for r in 0..tile_rows {
                        // SAFETY: as above, one row segment of this tile.
                        let segment = unsafe {
                            std::slice::from_raw_parts_mut(out_at.add(r * self.outputs), cols)
                        };
                        if gelu_rounded {
                            // SAFETY: the 512-bit copy runs only where AVX-512F was detected
                            // (AMX implies it).
                            unsafe { gelu_erf_rows_512_for_bf16(segment) };
                        } else if gelu_erf {
                            // SAFETY: as above.
                            unsafe { gelu_erf_rows_512(segment) };
                        } else {
                            job.finish.apply(segment);
                        }
                    }
                }
            }
        }
    }

    /// One register tile.
    ///
    /// # Safety
    /// The kernel's instructions are present; `a` holds `rows` rows (a whole tile for the kernels
    /// without exact-row variants); `out` is writable for `rows` rows of `self.outputs` from it.
    /// `shape` is (rows, columns) of the tile; `ahead` the lines to prefetch, their count and how
    /// many per reduction step.
    #[inline(always)]
    unsafe fn tile(
        &self,
        a: TileInput,
        panel: usize,
        (out, out_stride, pairs): (*mut f32, usize, bool),
        (rows, cols): (usize, usize),
        ahead: (*const u8, usize, usize),
        gelu_in_store: StoreGelu,
    ) {
        let width = self.kernel.panel();
        let bias = self.bias[panel * width..].as_ptr();
        let tile = TileArgs {
            steps: self.steps,
            bias,
            out,
            out_stride,
            pairs,
            rows,
            cols,
            ahead: ahead.0,
            ahead_lines: ahead.1,
            ahead_per_step: ahead.2,
            gelu_in_store,
        };
        match (self.kernel, a) {
            // A last, partial tile runs a kernel of exactly its rows: a lone query's 33 rows
            // would otherwise multiply 40 (8-row tiles) or 36.
            (Kernel::F32Avx512x12x32, TileInput::F32(a, stride)) => {
                assert!(a.len() >= (rows - 1) * stride + self.steps);
                let b = self.f32_panels[panel * self.steps * width..].as_ptr();
                by_rows!(rows, 12, f32_tile_512, [2], (a.as_ptr(), stride, b, &tile))
            }
            (Kernel::F32Avx512x8x48, TileInput::F32(a, stride)) => {
                assert!(a.len() >= (rows - 1) * stride + self.steps);
                let b = self.f32_panels[panel * self.steps * width..].as_ptr();
                by_rows!(rows, 8, f32_tile_512, [3], (a.as_ptr(), stride, b, &tile))
            }
            (Kernel::F32Avx2x6x16, TileInput::F32(a, stride)) => {
                assert!(a.len() >= (rows - 1) * stride + self.steps);
                let b = self.f32_panels[panel * self.steps * width..].as_ptr();
                by_rows!(rows, 6, f32_tile_256, [2], (a.as_ptr(), stride, b, &tile))
            }
            (Kernel::F32Avx2x4x16, TileInput::F32(a, stride)) => {
                assert!(a.len() >= (rows - 1) * stride + self.steps);
                let b = self.f32_panels[panel * self.steps * width..].as_ptr();
                by_rows!(rows, 4, f32_tile_256, [2], (a.as_ptr(), stride, b, &tile))
            }
            (Kernel::Bf16Avx512x10x32, TileInput::Words(a, stride)) => {
                assert!(a.len() >= rows * stride);
                let b = self.word_panels[panel * self.steps * width..].as_ptr();
                by_rows!(rows, 10, bf16_tile, [2], (a.as_ptr(), stride, b, &tile))
            }
            (Kernel::Bf16Avx512x7x48, TileInput::Words(a, stride)) => {
                assert!(a.len() >= rows * stride);
                let b = self.word_panels[panel * self.steps * width..].as_ptr();
                by_rows!(rows, 7, bf16_tile, [3], (a.as_ptr(), stride, b, &tile))
            }
            (Kernel::Bf16Avx2x6x16, TileInput::F32(a, stride)) => {
                assert!(a.len() >= 6 * stride);
                let b = self.word_panels[panel * self.steps * width..].as_ptr();
                bf16_tile_256(a.as_ptr(), stride, b, &tile)
            }
            (Kernel::Bf16Fma512x12x32, TileInput::F32(a, stride)) => {
                assert!(a.len() >= rows * stride);
                let b = self.word_panels[panel * self.steps * width..].as_ptr();
                by_rows!(
                    rows,
                    12,
                    bf16_fma_tile_512,
                    [],
                    (a.as_ptr(), stride, b, &tile)
                )
            }
            (Kernel::Bf16Amx, TileInput::Words(a, stride)) => {
                assert!(a.len() >= 32 * stride);
                let b = self.word_panels[panel * self.steps * width..].as_ptr();
                amx_tile(a.as_ptr(), stride, b, &tile)
            }
            _ => unreachable!("tile input does not match the kernel"),
        }
    }
}

/// Calls `$tile::<R, …>` with R = `$rows` (1 ..= `$max`), so a tile of fewer rows than the
/// kernel's shape computes only those.
macro_rules! by_rows {
    ($rows:expr, $max:literal, $tile:ident, [$($g:tt),*], ($($arg:expr),*)) => {{
        debug_assert!((1..=$max).contains(&$rows));
        match $rows {
            1 => $tile::<1 $(, $g)*>($($arg),*),
            2 => $tile::<2 $(, $g)*>($($arg),*),
            3 => $tile::<3 $(, $g)*>($($arg),*),
            4 => $tile::<4 $(, $g)*>($($arg),*),
            5 if $max >= 5 => $tile::<5 $(, $g)*>($($arg),*),
            6 if $max >= 6 => $tile::<6 $(, $g)*>($($arg),*),
            7 if $max >= 7 => $tile::<7 $(, $g)*>($($arg),*),
            8 if $max >= 8 => $tile::<8 $(, $g)*>($($arg),*),
            9 if $max >= 9 => $tile::<9 $(, $g)*>($($arg),*),
            10 if $max >= 10 => $tile::<10 $(, $g)*>($($arg),*),
            11 if $max >= 11 => $tile::<11 $(, $g)*>($($arg),*),
            12 if $max >= 12 => $tile::<12 $(, $g)*>($($arg),*),
            _ => unreachable!("a tile holds 1 to {} rows", $max),
        }
    }};
}
use by_rows;

/// One multiply's inputs and output, shared by the threads that split its panels.
struct Job<'a> {
    rows: usize,
    out: Output,
    f32_input: &'a [f32],
    /// First row whose tile comes from the padded copy `f32_tail`.
    tail_at: usize,
    /// The inputs as bf16 pairs (the `vdpbf16ps` and AMX kernels), padded to whole tiles.
    words: &'a [u32],
    /// The inputs rounded to bf16, kept as f32 (the AVX2 bf16 kernel).
    rounded: &'a [f32],
    f32_tail: &'a [f32],
    finish: Finish,
}

#[derive(Clone, Copy)]
enum TileInput<'a> {
    /// f32 rows and their stride.
    F32(&'a [f32], usize),
    /// Packed bf16 pairs and the row stride in words.
    Words(&'a [u32], usize),
}

struct TileArgs {
    steps: usize,
    bias: *const f32,
    /// The tile's first output; with `pairs`, a `*mut u32` of bf16 pairs (the `vdpbf16ps` tiles
    /// only) and `out_stride` in words.
    out: *mut f32,
    out_stride: usize,
    pairs: bool,
    rows: usize,
    cols: usize,
    /// Cache lines of the weights a later tile needs, to fetch into L2 while this one computes.
    ahead: *const u8,
    ahead_lines: usize,
    ahead_per_step: usize,
    /// The GELU applied to the sums in registers as they are stored, if any.
    gelu_in_store: StoreGelu,
}

/// Which GELU a tile applies to its sums as it stores them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StoreGelu {
    None,
    /// [`gelu_erf`]'s arithmetic on vectors ([`gelu_erf_256`]; the 256-bit tiles).
    Exact,
    /// [`gelu_erf_512_before_bf16`], for outputs rounded to bf16 next (the `vdpbf16ps` tiles).
    BeforeBf16,
}

/// Asks for this step's share of the lines of [`TileArgs::ahead`]: a panel's weights come from
/// memory (a layer's are larger than L2), and a short input (a lone query) has too few rows to
/// hide that wait behind its arithmetic unless the next panel is already on its way.
#[inline(always)]
unsafe fn prefetch_ahead(t: &TileArgs, p: usize) {
    for j in 0..t.ahead_per_step {
        let line = p * t.ahead_per_step + j;
        if line < t.ahead_lines {
            _mm_prefetch::<_MM_HINT_T1>(t.ahead.add(line * 64) as *const i8);
        }
    }
}

/// Lanes of `cols` that fall in the `v`-th 16-lane register.
#[inline(always)]
fn mask16(cols: usize, v: usize) -> u16 {
    let lanes = cols.saturating_sub(16 * v).min(16);
    ((1u32 << lanes) - 1) as u16
}

/// f32 tile on 512-bit registers: `R` rows × `V` registers of 16 columns.
///
/// Built like [`f32_tile_256`], but two reduction steps per loop turn: one prefetch decision
/// per turn, row pointers in registers, each row's input broadcast just before its
/// multiply-adds. Written as one step per loop with all the rows' broadcasts first, the
/// compiler held 8 broadcasts, 3 weights and 24 sums (35 of 32 registers) and spilled three
/// sums every step: the 8 × 48 tile ran at ~136 GFLOP/s of the core's ~165 (Intel Xeon, family
/// 6 model 207, 2026-12-02); two steps per turn run it at 164–168. Four steps per turn spill again (the
/// compiler loads the later steps' weights early) and fall to 81–103.
///
/// # Safety
/// AVX-512F present; `a` readable for `R` rows of `a_stride` (≥ steps), `b` for steps × 16V.
// Never inlined, for the reason given at `f32_tile_256`.
#[inline(never)]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn f32_tile_512<const R: usize, const V: usize>(
    a: *const f32,
    a_stride: usize,
    b: *const f32,
    t: &TileArgs,
) {
    const UNROLL: usize = 2;
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    let turns = t.steps / UNROLL;
    // Lines of the next panel to fetch per turn, spread over the turns.
    let per_turn = t.ahead_lines.div_ceil(turns.max(1));
    let mut rows = [a; R];
    for (r, row) in rows.iter_mut().enumerate() {
        *row = a.add(r * a_stride);
    }
    let mut w_at = b;
    for turn in 0..turns {
        let first_line = turn * per_turn;
        for line in first_line..(first_line + per_turn).min(t.ahead_lines) {
            _mm_prefetch::<_MM_HINT_T1>(t.ahead.add(line * 64) as *const i8);
        }
        for u in 0..UNROLL {
            f32_step_512(&mut acc, &rows, u, w_at.add(u * 16 * V));
        }
        for row in rows.iter_mut() {
            *row = row.add(UNROLL);
        }
        w_at = w_at.add(UNROLL * 16 * V);
    }
    for u in 0..t.steps - turns * UNROLL {
        f32_step_512(&mut acc, &rows, u, w_at.add(u * 16 * V));
    }
    store_tile_512(&acc, t)
}

/// One reduction step of [`f32_tile_512`]: input `u` of each row times the step's weights at `w`.
#[inline(always)]
unsafe fn f32_step_512<const R: usize, const V: usize>(
    acc: &mut [[__m512; V]; R],
    rows: &[*const f32; R],
    u: usize,
    w: *const f32,
) {
    let mut weights = [_mm512_setzero_ps(); V];
    for (v, weight) in weights.iter_mut().enumerate() {
        *weight = _mm512_loadu_ps(w.add(v * 16));
    }
    for (acc_row, row) in acc.iter_mut().zip(rows) {
        let x = _mm512_set1_ps(*row.add(u));
        for (acc, weight) in acc_row.iter_mut().zip(&weights) {
            *acc = _mm512_fmadd_ps(x, *weight, *acc);
        }
    }
}

/// Writes a tile's sums plus the bias: its first `t.rows` rows, `t.cols` columns.
///
/// # Safety
/// AVX-512F present; `t.out` writable for `t.rows` rows of `t.out_stride` and `t.bias` readable
/// for 16V values.
// Always inlined (so without a target feature of its own; its callers have AVX-512F): called
// out of line, the tile's sums went through a zeroed stack array, a `memset` per tile.
#[inline(always)]
unsafe fn store_tile_512<const R: usize, const V: usize>(acc: &[[__m512; V]; R], t: &TileArgs) {
    // Every row and register by a constant index, unrolled here rather than left to the
    // compiler: a loop over the rows (whose body, with the GELU, is too long to unroll in full)
    // indexes the sums at run time, so they lived in a stack array zeroed by a `memset` at every
    // tile's start — 3% of bf16's samples, stalled behind the previous tile's stores (AMD EPYC
    // family 25 model 17, 2026-12-03). `get` with an index past R folds away.
    macro_rules! each {
        ($($index:literal)*) => {
            $(if let Some(acc_row) = acc.get($index) {
                if $index < t.rows {
                    store_row_512(acc_row, t.out.add($index * t.out_stride), t);
                }
            })*
        };
    }
    const {
        assert!(
            R <= 16 && V <= 4,
            "store_tile_512 writes up to 16 rows of 4 registers"
        )
    };
    each!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
}

/// One row of [`store_tile_512`].
///
/// # Safety
/// As [`store_tile_512`], `out` being the row's first output.
#[inline(always)]
unsafe fn store_row_512<const V: usize>(acc_row: &[__m512; V], out: *mut f32, t: &TileArgs) {
    debug_assert!(
        t.gelu_in_store != StoreGelu::Exact,
        "the 512-bit exact GELU is a pass"
    );
    macro_rules! each {
        ($($v:literal)*) => {
            $(if let Some(&sums) = acc_row.get($v) {
                let mut value = _mm512_add_ps(sums, _mm512_loadu_ps(t.bias.add(16 * $v)));
                if t.gelu_in_store == StoreGelu::BeforeBf16 {
                    value = gelu_erf_512_before_bf16(value);
                }
                if t.pairs {
                    let cols = t.cols.saturating_sub(16 * $v);
                    store_pairs_512(out.cast::<u32>().add(8 * $v), value, cols);
                } else {
                    _mm512_mask_storeu_ps(out.add(16 * $v), mask16(t.cols, $v), value);
                }
            })*
        };
    }
    each!(0 1 2 3);
}

/// Sixteen columns rounded to bf16 as [`bf16_bits`] rounds them, written as eight words of
/// pairs (the first `cols` columns, an even count when under 16).
///
/// # Safety
/// AVX-512F present; `out` writable for the words of `cols.min(16)` columns.
#[inline(always)]
unsafe fn store_pairs_512(out: *mut u32, value: __m512, cols: usize) {
    let bits = _mm512_castps_si512(value);
    let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
    let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(
        _mm512_add_epi32(bits, _mm512_set1_epi32(0x7FFF)),
        odd,
    ));
    // Each lane's low half, in order: column 2i in the low half of word i, 2i + 1 in the high.
    let words = _mm512_cvtepi32_epi16(rounded);
    if cols >= 16 {
        _mm256_storeu_si256(out.cast(), words);
    } else {
        let mut spill = [0u32; 8];
        _mm256_storeu_si256(spill.as_mut_ptr().cast(), words);
        std::ptr::copy_nonoverlapping(spill.as_ptr(), out, cols / 2);
    }
}

/// f32 tile on 256-bit registers: `R` rows × `V` registers of 8 columns. AVX2 and FMA only.
///
/// The reduction runs four steps per loop turn, with one prefetch decision per turn: with a
/// branch and a prefetch every step, the loop's bookkeeping outnumbered its multiply-adds and
/// the tile ran at under half of the CPU's FMA rate (38 of ~90 GFLOP/s on an AMD EPYC
/// of family 25 model 1, Zen 3, 2026-12-02).
///
/// # Safety
/// AVX2 and FMA present; `a` readable for `R` rows of `a_stride` (≥ steps), `b` for steps × 8V.
// Never inlined: inside the panel loop the compiler keeps other values in registers and
// spills accumulators (16 ymm registers hold the tile's 12 sums, 2 weights and 1 input only).
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
unsafe fn f32_tile_256<const R: usize, const V: usize>(
    a: *const f32,
    a_stride: usize,
    b: *const f32,
    t: &TileArgs,
) {
    const UNROLL: usize = 4;
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    let turns = t.steps / UNROLL;
    // Lines of the next panel to fetch per turn, spread over the turns.
    let per_turn = t.ahead_lines.div_ceil(turns.max(1));
    let mut rows = [a; R];
    for (r, row) in rows.iter_mut().enumerate() {
        *row = a.add(r * a_stride);
    }
    let mut w_at = b;
    for turn in 0..turns {
        let first_line = turn * per_turn;
        for line in first_line..(first_line + per_turn).min(t.ahead_lines) {
            _mm_prefetch::<_MM_HINT_T1>(t.ahead.add(line * 64) as *const i8);
        }
        for u in 0..UNROLL {
            f32_step_256(&mut acc, &rows, u, w_at.add(u * 8 * V));
        }
        for row in rows.iter_mut() {
            *row = row.add(UNROLL);
        }
        w_at = w_at.add(UNROLL * 8 * V);
    }
    for u in 0..t.steps - turns * UNROLL {
        f32_step_256(&mut acc, &rows, u, w_at.add(u * 8 * V));
    }
    store_tile_256(&acc, t)
}

/// One reduction step of [`f32_tile_256`]: input `u` of each row times the step's weights at `w`.
#[inline(always)]
unsafe fn f32_step_256<const R: usize, const V: usize>(
    acc: &mut [[__m256; V]; R],
    rows: &[*const f32; R],
    u: usize,
    w: *const f32,
) {
    let mut weights = [_mm256_setzero_ps(); V];
    for (v, weight) in weights.iter_mut().enumerate() {
        *weight = _mm256_loadu_ps(w.add(v * 8));
    }
    for (acc_row, row) in acc.iter_mut().zip(rows) {
        let x = _mm256_broadcast_ss(&*row.add(u));
        for (acc, weight) in acc_row.iter_mut().zip(&weights) {
            *acc = _mm256_fmadd_ps(x, *weight, *acc);
        }
    }
}

/// bf16 tile on 256-bit registers: 6 rows × 16 columns. Each step is a pair of inputs: the
/// weights' pair of bf16 in one 32-bit word is widened to two f32 vectors (low half shifted up,
/// high half masked: both exact), the inputs are already bf16 values held as f32, and the products
/// (exact in f32, as in `vdpbf16ps`) are summed by fused multiply-adds.
///
/// # Safety
/// AVX2 and FMA present; `a` readable for 6 rows of `a_stride` (≥ 2 × steps), `b` for steps × 16.
// Never inlined: inside the panel loop the compiler keeps other values in registers and
// spills accumulators (16 ymm registers hold the tile's 12 sums, 2 weights and 1 input only).
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
unsafe fn bf16_tile_256(a: *const f32, a_stride: usize, b: *const u32, t: &TileArgs) {
    const R: usize = 6;
    let high = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    // One 8-column half at a time: its two widened weight vectors, the 12 sums and one input
    // fit the 16 registers (both halves at once would not).
    for p in 0..t.steps {
        prefetch_ahead(t, p);
        for v in 0..2 {
            let words = _mm256_loadu_si256(b.add(p * 16 + 8 * v) as *const __m256i);
            let even = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(words));
            let odd = _mm256_castsi256_ps(_mm256_and_si256(words, high));
            for (r, acc_row) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*a.add(r * a_stride + 2 * p));
                acc_row[v] = _mm256_fmadd_ps(x, even, acc_row[v]);
                let x = _mm256_broadcast_ss(&*a.add(r * a_stride + 2 * p + 1));
                acc_row[v] = _mm256_fmadd_ps(x, odd, acc_row[v]);
            }
        }
    }
    store_tile_256(&acc, t)
}

/// bf16 tile on 512-bit registers without bf16 instructions: `R` rows × 32 columns, the
/// arithmetic of [`bf16_tile_256`] (weights' bf16 pairs widened exactly to f32, inputs already
/// rounded to bf16, f32 fused multiply-adds) on AVX-512F alone. Where `vdpbf16ps` runs at half
/// the FMA rate (an Intel Xeon of family 6 model 207, 2026-12-02: 78–80 GFLOP/s against
/// 153–169), this runs bf16 at f32's speed and keeps half of f32's weight traffic; the load-time
/// timing picks it there.
///
/// # Safety
/// AVX-512F present; `a` readable for `R` rows of `a_stride` (≥ 2 × steps), `b` for steps × 32.
// Never inlined, for the reason given at `f32_tile_256`.
#[inline(never)]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn bf16_fma_tile_512<const R: usize>(
    a: *const f32,
    a_stride: usize,
    b: *const u32,
    t: &TileArgs,
) {
    let high = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let mut rows = [a; R];
    for (r, row) in rows.iter_mut().enumerate() {
        *row = a.add(r * a_stride);
    }
    for p in 0..t.steps {
        prefetch_ahead(t, p);
        let mut even = [_mm512_setzero_ps(); 2];
        let mut odd = [_mm512_setzero_ps(); 2];
        for v in 0..2 {
            let words = _mm512_loadu_si512(b.add(p * 32 + 16 * v) as *const _);
            even[v] = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(words));
            odd[v] = _mm512_castsi512_ps(_mm512_and_si512(words, high));
        }
        for (acc_row, row) in acc.iter_mut().zip(&rows) {
            let x = _mm512_set1_ps(*row.add(2 * p));
            for v in 0..2 {
                acc_row[v] = _mm512_fmadd_ps(x, even[v], acc_row[v]);
            }
            let x = _mm512_set1_ps(*row.add(2 * p + 1));
            for v in 0..2 {
                acc_row[v] = _mm512_fmadd_ps(x, odd[v], acc_row[v]);
            }
        }
    }
    store_tile_512(&acc, t)
}

/// Writes a 256-bit tile's sums plus the bias: its first `t.rows` rows, `t.cols` columns.
///
/// # Safety
/// AVX2 present; `t.out` writable for `t.rows` rows of `t.out_stride` and `t.bias` readable for
/// 8V values.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn store_tile_256<const R: usize, const V: usize>(acc: &[[__m256; V]; R], t: &TileArgs) {
    debug_assert!(!t.pairs, "the 256-bit tiles store f32");
    for (r, acc_row) in acc.iter().enumerate().take(t.rows) {
        let o = t.out.add(r * t.out_stride);
        for (v, acc) in acc_row.iter().enumerate() {
            let mut value = _mm256_add_ps(*acc, _mm256_loadu_ps(t.bias.add(8 * v)));
            // The 256-bit kernels are f32 or widened bf16: the exact GELU for both.
            if t.gelu_in_store != StoreGelu::None {
                value = gelu_erf_256(value);
            }
            let lanes = t.cols.saturating_sub(8 * v).min(8);
            if lanes == 8 {
                _mm256_storeu_ps(o.add(8 * v), value);
            } else if lanes > 0 {
                let mut spill = [0f32; 8];
                _mm256_storeu_ps(spill.as_mut_ptr(), value);
                std::ptr::copy_nonoverlapping(spill.as_ptr(), o.add(8 * v), lanes);
            }
        }
    }
}

/// [`gelu_erf`] of eight values on 256-bit registers: the same Abramowitz & Stegun `erf` and
/// Cephes `exp`, with `1 / (1 + p·|z|)` from the reciprocal estimate and one Newton step (within
/// 2 ulp; the division was the slowest instruction of the finish).
///
/// # Safety
/// AVX2 and FMA present.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn gelu_erf_256(x: __m256) -> __m256 {
    let sign = _mm256_set1_ps(-0.0);
    let one = _mm256_set1_ps(1.0);
    let z = _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    let a = _mm256_andnot_ps(sign, z);
    let d = _mm256_fmadd_ps(_mm256_set1_ps(ERF_P), a, one);
    let estimate = _mm256_rcp_ps(d);
    // t = e · (2 − d·e): Newton's step for 1/d.
    let t = _mm256_mul_ps(estimate, _mm256_fnmadd_ps(d, estimate, _mm256_set1_ps(2.0)));
    let mut poly = _mm256_set1_ps(ERF_A[4]);
    for &c in ERF_A[..4].iter().rev() {
        poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(c));
    }
    poly = _mm256_mul_ps(poly, t);
    let e = exp_nonpositive_256(_mm256_mul_ps(_mm256_xor_ps(a, sign), a));
    let erf_abs = _mm256_fnmadd_ps(poly, e, one);
    let erf = _mm256_or_ps(erf_abs, _mm256_and_ps(z, sign));
    _mm256_mul_ps(
        _mm256_mul_ps(_mm256_set1_ps(0.5), x),
        _mm256_add_ps(one, erf),
    )
}

/// [`gelu_erf`] over a row segment on 512-bit registers: the arithmetic of [`gelu_erf_256`] (the
/// reciprocal from `vrcp14ps` and one Newton step), sixteen values at a time, the tail masked.
///
/// # Safety
/// AVX-512F present.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn gelu_erf_rows_512(values: &mut [f32]) {
    map_512(values, |x| gelu_erf_512(x))
}

/// `v = f(v)` over a row segment, sixteen values at a time, the tail under a mask.
///
/// # Safety
/// AVX-512F present.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn map_512(values: &mut [f32], f: impl Fn(__m512) -> __m512) {
    let mut chunks = values.chunks_exact_mut(16);
    for chunk in &mut chunks {
        _mm512_storeu_ps(chunk.as_mut_ptr(), f(_mm512_loadu_ps(chunk.as_ptr())));
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let mask: __mmask16 = (1u32 << tail.len()).wrapping_sub(1) as __mmask16;
        let x = _mm512_maskz_loadu_ps(mask, tail.as_ptr());
        _mm512_mask_storeu_ps(tail.as_mut_ptr(), mask, f(x));
    }
}

/// The exact GELU over a row segment for an output about to be rounded to bf16: `erf` from
/// Abramowitz & Stegun 7.1.28, `1 − 1/(1 + a₁x + … + a₆x⁶)¹⁶` (within 3·10⁻⁷), with the
/// reciprocal estimate `vrcp14ps` alone (relative error 2⁻¹⁴) — 20 operations per sixteen values
/// where [`gelu_erf_rows_512`] takes 35, within 2·10⁻⁵ of the exact GELU relative to `max(1, |x|)`,
/// a hundredth of bf16's rounding.
///
/// # Safety
/// AVX-512F present.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn gelu_erf_rows_512_for_bf16(values: &mut [f32]) {
    map_512(values, |x| gelu_erf_512_before_bf16(x))
}

/// The GELU of [`gelu_erf_rows_512_for_bf16`] on sixteen values.
///
/// # Safety
/// AVX-512F present.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn gelu_erf_512_before_bf16(x: __m512) -> __m512 {
    const A: [f32; 6] = [
        0.070_523_08,
        0.042_282_01,
        0.009_270_527,
        0.000_152_014_3,
        0.000_276_567_2,
        0.000_043_063_8,
    ];
    let one = _mm512_set1_ps(1.0);
    let z = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    // erf(4) is 1 within 2·10⁻⁸; the clamp keeps p¹⁶ finite (at most ~6·10⁷).
    let a = _mm512_min_ps(_mm512_abs_ps(z), _mm512_set1_ps(4.0));
    let mut p = _mm512_set1_ps(A[5]);
    for &c in A[..5].iter().rev() {
        p = _mm512_fmadd_ps(p, a, _mm512_set1_ps(c));
    }
    p = _mm512_fmadd_ps(p, a, one);
    let p2 = _mm512_mul_ps(p, p);
    let p4 = _mm512_mul_ps(p2, p2);
    let p8 = _mm512_mul_ps(p4, p4);
    let erf_abs = _mm512_sub_ps(one, _mm512_rcp14_ps(_mm512_mul_ps(p8, p8)));
    let sign = _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(i32::MIN));
    let erf = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(erf_abs), sign));
    _mm512_mul_ps(
        _mm512_mul_ps(_mm512_set1_ps(0.5), x),
        _mm512_add_ps(one, erf),
    )
}

/// [`gelu_erf_256`] on sixteen values.
///
/// # Safety
/// AVX-512F present.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn gelu_erf_512(x: __m512) -> __m512 {
    let one = _mm512_set1_ps(1.0);
    let z = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    let a = _mm512_abs_ps(z);
    let d = _mm512_fmadd_ps(_mm512_set1_ps(ERF_P), a, one);
    let estimate = _mm512_rcp14_ps(d);
    // t = e · (2 − d·e): Newton's step for 1/d.
    let t = _mm512_mul_ps(estimate, _mm512_fnmadd_ps(d, estimate, _mm512_set1_ps(2.0)));
    let mut poly = _mm512_set1_ps(ERF_A[4]);
    for &c in ERF_A[..4].iter().rev() {
        poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(c));
    }
    poly = _mm512_mul_ps(poly, t);
    let e = exp_nonpositive_512(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), a), a));
    let erf_abs = _mm512_fnmadd_ps(poly, e, one);
    // erf takes z's sign: erf_abs ≥ 0, so its sign bit is clear and can be set from z's.
    let sign = _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(i32::MIN));
    let erf = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(erf_abs), sign));
    _mm512_mul_ps(
        _mm512_mul_ps(_mm512_set1_ps(0.5), x),
        _mm512_add_ps(one, erf),
    )
}

/// [`exp_nonpositive_256`] on sixteen values, the same steps and constants.
///
/// # Safety
/// AVX-512F present.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn exp_nonpositive_512(x: __m512) -> __m512 {
    let x = _mm512_max_ps(x, _mm512_set1_ps(EXP_LOWEST));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(_mm512_fmadd_ps(
        x,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
        _mm512_set1_ps(0.5),
    ));
    let r = _mm512_fnmadd_ps(
        n,
        _mm512_set1_ps(LN2_LOW),
        _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HIGH), x),
    );
    let r2 = _mm512_mul_ps(r, r);
    let mut p = _mm512_set1_ps(EXP_POLY[0]);
    for &c in &EXP_POLY[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    p = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0));
    // n is a whole number in [-126, 0]: its conversion is exact.
    let k = _mm512_cvtps_epi32(n);
    let scale = _mm512_slli_epi32::<23>(_mm512_add_epi32(k, _mm512_set1_epi32(127)));
    _mm512_mul_ps(p, _mm512_castsi512_ps(scale))
}

/// `v = e^((v − max)·scale)` over a row of attention scores (max its largest, scale > 0), eight at
/// a time with [`exp_nonpositive_256`], the rest one by one.
///
/// # Safety
/// AVX2 and FMA present.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn exp_shifted_256(row: &mut [f32], max: f32, scale: f32) {
    let (max_v, scale_v) = (_mm256_set1_ps(max), _mm256_set1_ps(scale));
    let mut chunks = row.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let x = _mm256_mul_ps(
            _mm256_sub_ps(_mm256_loadu_ps(chunk.as_ptr()), max_v),
            scale_v,
        );
        _mm256_storeu_ps(chunk.as_mut_ptr(), exp_nonpositive_256(x));
    }
    for v in chunks.into_remainder() {
        *v = super::bert::exp_nonpositive((*v - max) * scale);
    }
}

/// [`exp_shifted_256`] on 512-bit registers, sixteen at a time and the rest under a mask, with
/// the row's largest value found here: `v = e^((v − max)·scale)`; returns the sum of the new
/// values. Written out because the plain loop compiles the polynomial to separate multiplies
/// and adds (Rust does not fuse them) and reduces its lanes one by one.
///
/// # Safety
/// AVX-512F present.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn exp_shifted_512(row: &mut [f32], scale: f32) -> f32 {
    let tail = row.len() % 16;
    let tail_mask: __mmask16 = ((1u32 << tail) - 1) as __mmask16;
    let whole = row.len() - tail;
    let at = row.as_mut_ptr();
    let mut max = _mm512_set1_ps(f32::MIN);
    for c in (0..whole).step_by(16) {
        max = _mm512_max_ps(max, _mm512_loadu_ps(at.add(c)));
    }
    max = _mm512_mask_max_ps(
        max,
        tail_mask,
        max,
        _mm512_maskz_loadu_ps(tail_mask, at.add(whole)),
    );
    let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
    let scale = _mm512_set1_ps(scale);
    let shifted = |x: __m512| exp_nonpositive_512(_mm512_mul_ps(_mm512_sub_ps(x, max), scale));
    let mut sum = _mm512_setzero_ps();
    for c in (0..whole).step_by(16) {
        let e = shifted(_mm512_loadu_ps(at.add(c)));
        _mm512_storeu_ps(at.add(c), e);
        sum = _mm512_add_ps(sum, e);
    }
    if tail > 0 {
        let e = shifted(_mm512_maskz_loadu_ps(tail_mask, at.add(whole)));
        _mm512_mask_storeu_ps(at.add(whole), tail_mask, e);
        sum = _mm512_mask_add_ps(sum, tail_mask, sum, e);
    }
    _mm512_reduce_add_ps(sum)
}

/// [`exp_nonpositive`](super::bert) on 256-bit registers, the same steps and constants.
///
/// # Safety
/// AVX2 and FMA present.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn exp_nonpositive_256(x: __m256) -> __m256 {
    let x = _mm256_max_ps(x, _mm256_set1_ps(EXP_LOWEST));
    let n = _mm256_floor_ps(_mm256_fmadd_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
        _mm256_set1_ps(0.5),
    ));
    let r = _mm256_fnmadd_ps(
        n,
        _mm256_set1_ps(LN2_LOW),
        _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HIGH), x),
    );
    let r2 = _mm256_mul_ps(r, r);
    let mut p = _mm256_set1_ps(EXP_POLY[0]);
    for &c in &EXP_POLY[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    p = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
    // n is a whole number in [-126, 0]: its conversion is exact.
    let k = _mm256_cvtps_epi32(n);
    let scale = _mm256_slli_epi32::<23>(_mm256_add_epi32(k, _mm256_set1_epi32(127)));
    _mm256_mul_ps(p, _mm256_castsi256_ps(scale))
}

/// Writes `rows` rows of `cols` f32 rounded to bf16 (kept as f32), `(padded rows, stride ≥ cols)`,
/// zeroing the padding, compiled for AVX2.
///
/// # Safety
/// AVX2 present.
#[target_feature(enable = "avx2,fma")]
unsafe fn stage_rounded_avx2(
    values: &[f32],
    rows: usize,
    cols: usize,
    stride: usize,
    padded: usize,
    out: &mut Vec<f32>,
) {
    out.clear();
    out.resize(padded * stride, 0.0);
    for (src, dst) in values[..rows * cols]
        .chunks_exact(cols)
        .zip(out.chunks_exact_mut(stride))
    {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits(bf16_bits(s) << 16);
        }
    }
}

/// The tile configuration every AMX kernel uses: palette 1, all eight tiles 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const TILE_CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64; // bytes per row (u16, little-endian)
        c[48 + t] = 16; // rows
        t += 1;
    }
    TileConfig(c)
};

/// Loads [`TILE_CONFIG`] into this thread's tile registers.
///
/// # Safety
/// AMX present and permitted ([`amx_ready`]).
unsafe fn amx_configure() {
    std::arch::asm!("ldtilecfg [{}]", in(reg) TILE_CONFIG.0.as_ptr(), options(nostack, readonly));
}

/// Returns the tile registers to their initial state (no AMX state left for the kernel to save).
///
/// # Safety
/// AMX present and permitted.
unsafe fn amx_release() {
    std::arch::asm!("tilerelease", options(nostack, nomem));
}

/// An AMX tile: 32 rows × 32 columns as four 16 × 16 accumulator tiles (`tdpbf16ps`), over all
/// steps (bf16 pairs), 16 at a time.
/// Inputs: rows of `a_stride` words; weights: per 16 steps, two tiles of 16 rows × 16 words.
///
/// # Safety
/// AMX configured on this thread ([`amx_configure`]); `a` readable for 32 rows of `a_stride`
/// words (a multiple of 16), `b` for `steps` × 32 words; `t.out` writable for `t.rows` rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn amx_tile(a: *const u32, a_stride: usize, b: *const u32, t: &TileArgs) {
    use std::arch::asm;
    debug_assert!(!t.pairs, "AMX stores f32");
    let a_bytes = a_stride * 4;
    asm!(
        "tilezero tmm4",
        "tilezero tmm5",
        "tilezero tmm6",
        "tilezero tmm7",
        options(nostack, nomem)
    );
    for block in 0..t.steps / 16 {
        let a0 = a.add(block * 16);
        let a1 = a0.add(16 * a_stride);
        let b0 = b.add(block * 512);
        let b1 = b0.add(256);
        asm!(
            "tileloadd tmm0, [{a0} + {sa}*1]",
            "tileloadd tmm1, [{a1} + {sa}*1]",
            "tileloadd tmm2, [{b0} + {sb}*1]",
            "tileloadd tmm3, [{b1} + {sb}*1]",
            "tdpbf16ps tmm4, tmm0, tmm2",
            "tdpbf16ps tmm5, tmm0, tmm3",
            "tdpbf16ps tmm6, tmm1, tmm2",
            "tdpbf16ps tmm7, tmm1, tmm3",
            a0 = in(reg) a0, a1 = in(reg) a1, b0 = in(reg) b0, b1 = in(reg) b1,
            sa = in(reg) a_bytes, sb = in(reg) 64usize,
            options(nostack, readonly)
        );
    }
    // The four accumulators into a 32 × 32 block, every element written by the four stores
    // below: left unzeroed (zeroing its 4 KB cost a `memset` per tile).
    let mut sums = std::mem::MaybeUninit::<Aligned32x32>::uninit();
    let c = sums.as_mut_ptr().cast::<f32>();
    asm!(
        "tilestored [{c00} + {s}*1], tmm4",
        "tilestored [{c01} + {s}*1], tmm5",
        "tilestored [{c10} + {s}*1], tmm6",
        "tilestored [{c11} + {s}*1], tmm7",
        c00 = in(reg) c, c01 = in(reg) c.add(16), c10 = in(reg) c.add(16 * 32),
        c11 = in(reg) c.add(16 * 32 + 16), s = in(reg) 128usize,
        options(nostack)
    );
    for r in 0..t.rows.min(32) {
        let o = t.out.add(r * t.out_stride);
        let row = c.add(r * 32);
        for v in 0..2 {
            let sums = _mm512_loadu_ps(row.add(16 * v));
            let value = _mm512_add_ps(sums, _mm512_loadu_ps(t.bias.add(16 * v)));
            _mm512_mask_storeu_ps(o.add(16 * v), mask16(t.cols, v), value);
        }
    }
}

#[repr(C, align(64))]
struct Aligned32x32([f32; 32 * 32]);

/// bf16 tile: `R` rows × `V` registers of 16 columns, one `vdpbf16ps` per 16 outputs × 2 inputs.
///
/// The compiler loads every row's broadcast input before the step's multiply-adds, so a tile
/// needs R·V sums + V weights + R inputs registers: 10 × 2 and 7 × 3 fit in 32. The 12 × 2 tile
/// this replaced (38) spilled six sums to the stack and back every step and ran 12–15% slower in
/// the forward (AMD EPYC, family 25 model 17, 2026-12-03). Every output lane sums its pairs in
/// the same order whatever the shape, so the choice between the two moves no bit.
///
/// # Safety
/// AVX-512F and AVX512-BF16 present; `a` readable for `R` rows of `a_stride` pairs, `b` for
/// steps × 16V.
#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
unsafe fn bf16_tile<const R: usize, const V: usize>(
    a: *const u32,
    a_stride: usize,
    b: *const u32,
    t: &TileArgs,
) {
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    for p in 0..t.steps {
        prefetch_ahead(t, p);
        let zero: __m512bh = std::mem::transmute(_mm512_setzero_si512());
        let mut weights = [zero; V];
        for (v, weight) in weights.iter_mut().enumerate() {
            *weight = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                b.add((p * V + v) * 16) as *const _,
            ));
        }
        for (r, acc_row) in acc.iter_mut().enumerate() {
            let x: __m512bh =
                std::mem::transmute(_mm512_set1_epi32(*a.add(r * a_stride + p) as i32));
            for (acc, weight) in acc_row.iter_mut().zip(&weights) {
                *acc = _mm512_dpbf16_ps(*acc, x, *weight);
            }
        }
    }
    store_tile_512(&acc, t)
}

/// The first `size` elements of a buffer that only grows, left as they were. Resizing a reused
/// buffer to each use zeroed its growth every time (`memset` was 0.8% of bf16's samples): its
/// users write every element they read instead.
pub(crate) fn grown<T: Copy + Default>(buffer: &mut Vec<T>, size: usize) -> &mut [T] {
    if buffer.len() < size {
        buffer.resize(size, T::default());
    }
    &mut buffer[..size]
}

/// [`to_bf16_pairs`] compiled for AVX-512.
///
/// # Safety
/// AVX-512F, BW and VL present.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn stage_bf16(
    values: &[f32],
    rows: usize,
    cols: usize,
    stride: usize,
    padded: usize,
    out: &mut Vec<u32>,
) {
    to_bf16_pairs(values, rows, cols, stride, padded, out)
}

/// Writes `rows` rows of `cols` f32 as bf16 pairs, `(padded rows, stride ≥ cols/2 words)`,
/// zeroing the padding rows and columns and the odd column's partner.
#[inline(always)]
fn to_bf16_pairs(
    values: &[f32],
    rows: usize,
    cols: usize,
    stride: usize,
    padded: usize,
    out: &mut Vec<u32>,
) {
    let pairs = cols.div_ceil(2);
    // One buffer serves layers of 384 and 1536 inputs; every word used is written below.
    let out = grown(out, padded * stride);
    for (src, dst) in values[..rows * cols]
        .chunks_exact(cols)
        .zip(out.chunks_exact_mut(stride))
    {
        let (even, odd) = (src.chunks_exact(2), src.chunks_exact(2).remainder());
        for (d, s) in dst.iter_mut().zip(even) {
            *d = bf16_bits(s[0]) | (bf16_bits(s[1]) << 16);
        }
        if let Some(&last) = odd.first() {
            dst[pairs - 1] = bf16_bits(last);
        }
        dst[pairs..].fill(0);
    }
    out[rows * stride..].fill(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bf16 kernels' GELU stays within 2·10⁻⁵ · max(1, |x|) of the exact one (f64 `erf`
    /// from the scalar GELU's constants would be no better a reference: the scalar one is exact to
    /// f32 rounding) over −12..12 and at the extremes.
    #[test]
    fn the_gelu_before_bf16_rounding_stays_close_to_the_exact_one() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512F here: this GELU does not run on this CPU");
            return;
        }
        let mut xs: Vec<f32> = (-120_000..=120_000).map(|i| i as f32 / 10_000.0).collect();
        xs.extend([
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            40.0,
            -40.0,
            1e30,
            -1e30,
            f32::MAX,
            f32::MIN,
        ]);
        let mut got = xs.clone();
        // SAFETY: AVX-512F was detected above.
        unsafe { gelu_erf_rows_512_for_bf16(&mut got) };
        let mut worst = (0f32, 0f32);
        for (&x, &g) in xs.iter().zip(&got) {
            let want = super::super::bert::gelu_erf(x);
            let err = (g - want).abs() / x.abs().max(1.0);
            assert!(g.is_finite(), "GELU({x}) = {g}");
            if err > worst.0 {
                worst = (err, x);
            }
        }
        eprintln!("worst relative error {:.2e} at {}", worst.0, worst.1);
        assert!(worst.0 <= 2e-5, "GELU error {:.2e} at {}", worst.0, worst.1);
    }

    /// The 512-bit softmax step finds each row's largest value whatever its length (the tail
    /// under a mask) and matches the scalar `exp` to f32 rounding, its sum too.
    #[test]
    fn the_512_bit_shifted_exp_matches_the_scalar_one_at_every_length() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512F here: this softmax does not run on this CPU");
            return;
        }
        for len in [1usize, 5, 15, 16, 17, 33, 80, 512] {
            // The largest value lands in the tail for some lengths, in a whole chunk for others.
            let row: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let max = row.iter().copied().fold(f32::MIN, f32::max);
            let want: Vec<f32> = row
                .iter()
                .map(|&v| super::super::bert::exp_nonpositive((v - max) * 0.125))
                .collect();
            let mut got = row.clone();
            // SAFETY: AVX-512F was detected above.
            let sum = unsafe { exp_shifted_512(&mut got, 0.125) };
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 4.0 * f32::EPSILON * w,
                    "len {len} at {i}: {g} vs {w}"
                );
            }
            let want_sum: f32 = want.iter().sum();
            assert!(
                (sum - want_sum).abs() <= 1e-5 * want_sum,
                "len {len}: {sum} vs {want_sum}"
            );
            assert!(got.contains(&1.0), "len {len}: the largest gives e^0");
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3F80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even (1.0).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3F80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3F82);
        assert_eq!(bf16_bits(-2.5), 0xC020);
    }

    /// Odd sizes, not multiples of any tile or panel, exercise every edge; values are small
    /// integers over 16, exact in bf16, and every partial sum is exact in f32.
    fn case() -> (usize, usize, usize, Vec<f32>, Vec<f32>, Vec<f32>) {
        let (rows, inputs, outputs) = (29, 37, 53);
        let value = |i: usize| ((i * 7919 % 113) as f32 - 56.0) / 16.0;
        let x: Vec<f32> = (0..rows * inputs).map(|i| value(i * 3 + 1)).collect();
        let w: Vec<f32> = (0..inputs * outputs).map(value).collect();
        let bias: Vec<f32> = (0..outputs).map(|i| i as f32).collect();
        (rows, inputs, outputs, x, w, bias)
    }

    fn plain(x: &[f32], w: &[f32], bias: &[f32], rows: usize, inputs: usize) -> Vec<f32> {
        let outputs = bias.len();
        let mut out = vec![0f32; rows * outputs];
        for r in 0..rows {
            for c in 0..outputs {
                out[r * outputs + c] = (0..inputs)
                    .map(|k| x[r * inputs + k] * w[k * outputs + c])
                    .sum::<f32>()
                    + bias[c];
            }
        }
        out
    }

    /// `bench kernels` prints a ceiling for every kernel this CPU runs but AMX, and none for a
    /// kernel it cannot run.
    #[test]
    fn every_kernel_but_amx_has_an_instruction_peak_where_it_runs() {
        for kernel in Kernel::ALL {
            let peak = instruction_peak_gflops(kernel);
            if kernel.available() && !kernel.is_amx() {
                let g = peak.unwrap_or_else(|| panic!("{}: no peak", kernel.name()));
                assert!(g.is_finite() && g > 0.0, "{}: {g}", kernel.name());
            } else {
                assert!(peak.is_none(), "{}: {peak:?}", kernel.name());
            }
        }
    }

    /// Every kernel this CPU runs, alone and with the panels shared among threads, gives the plain
    /// product and writes nothing past the output. The AVX2 kernels run on every x86-64 CPU this
    /// is built for; the AVX-512, AVX512-BF16 and AMX ones are tested on the CPUs that have them
    /// (no CPU can execute instructions it lacks), and the test says which ones it could not run.
    #[test]
    fn every_kernel_matches_a_plain_multiply() {
        let (rows, inputs, outputs, x, w, bias) = case();
        let want = plain(&x, &w, &bias, rows, inputs);
        assert!(
            Kernel::F32Avx2x6x16.available() && Kernel::Bf16Avx2x6x16.available(),
            "AVX2 and FMA are the least this is built for"
        );
        for kernel in Kernel::ALL {
            if !kernel.available() {
                eprintln!("{}: this CPU lacks its instructions", kernel.name());
                continue;
            }
            let layer = Dense::pack(kernel, &w, &bias, inputs, outputs);
            let lease = helper_lease();
            for helper in [None, lease.as_ref()] {
                let mut out = vec![f32::NAN; rows * outputs + 5];
                let mut stage = Stage::default();
                layer.multiply(&x, rows, &mut out, Finish::Nothing, &mut stage, helper);
                for (i, (&got, &want)) in out.iter().zip(&want).enumerate() {
                    assert!(
                        got == want,
                        "{} row {} col {}: {got} vs {want}",
                        kernel.name(),
                        i / outputs,
                        i % outputs
                    );
                }
                assert!(
                    out[rows * outputs..].iter().all(|v| v.is_nan()),
                    "{} wrote past the output",
                    kernel.name()
                );
            }
        }
    }

    /// A weight packed from the checkpoint's layout, `(outputs, inputs)` in blocks of rows, is
    /// the same weight packed from its transpose, word for word, for every kernel this CPU runs.
    #[test]
    fn packing_from_stored_rows_equals_packing_the_transpose() {
        let (_, inputs, outputs, _, w, bias) = case();
        let rows: Vec<f32> = (0..outputs)
            .flat_map(|col| (0..inputs).map(move |k| (k, col)))
            .map(|(k, col)| w[k * outputs + col])
            .collect();
        // Uneven blocks, as Q, K and V would be if they differed: 20 rows, then 33.
        let (first, second) = rows.split_at(20 * inputs);
        for kernel in Kernel::ALL.into_iter().filter(|k| k.available()) {
            let want = Dense::pack(kernel, &w, &bias, inputs, outputs);
            let got = Dense::pack_rows(kernel, &[first, second], &bias, inputs, outputs);
            assert!(
                got.f32_panels == want.f32_panels
                    && got.word_panels == want.word_panels
                    && got.bias == want.bias
                    && got.steps == want.steps,
                "{}",
                kernel.name()
            );
            assert!(!want.f32_panels.is_empty() || !want.word_panels.is_empty());
        }
    }

    /// The GELU the 256-bit kernels apply in registers, and the one the 512-bit kernels apply to
    /// their stored rows, stay within a few ulp (of x) of the scalar one, over the whole range a
    /// dense layer produces.
    #[test]
    fn the_vector_gelu_matches_the_scalar_one() {
        assert!(
            Isa::Avx2.available(),
            "AVX2 and FMA are the least this is built for"
        );
        let inputs: Vec<f32> = (-40_000..=40_000)
            .map(|i| i as f32 / 2_000.0)
            .chain([-100.0, -87.5, 0.0, -0.0, 1e-30, -1e-30, 50.0])
            .collect();
        for chunk in inputs.chunks(8) {
            let mut lanes = [0f32; 8];
            lanes[..chunk.len()].copy_from_slice(chunk);
            let mut got = [0f32; 8];
            // SAFETY: AVX2 and FMA were detected just above.
            unsafe {
                _mm256_storeu_ps(
                    got.as_mut_ptr(),
                    gelu_erf_256(_mm256_loadu_ps(lanes.as_ptr())),
                )
            };
            for (&x, &got) in lanes.iter().zip(&got) {
                let want = gelu_erf(x);
                // Relative to x: below zero, 1 + erf cancels, and an ulp of erf is all either
                // formula can promise there.
                assert!(
                    (got - want).abs() <= 4.0 * f32::EPSILON * x.abs().max(1e-30),
                    "gelu({x}): {got} vs {want}"
                );
            }
        }
        // The 512-bit finish, on a length that leaves a masked tail.
        if Isa::Avx512.available() {
            let mut got = inputs.clone();
            assert_ne!(got.len() % 16, 0);
            // SAFETY: AVX-512F was detected just above.
            unsafe { gelu_erf_rows_512(&mut got) };
            for (&x, &got) in inputs.iter().zip(&got) {
                let want = gelu_erf(x);
                assert!(
                    (got - want).abs() <= 4.0 * f32::EPSILON * x.abs().max(1e-30),
                    "gelu({x}) on 512-bit registers: {got} vs {want}"
                );
            }
        }
    }

    /// The helper thread, once other tests have let it go (none where rayon runs one thread:
    /// there is no helper to test).
    fn helper_lease() -> Option<super::super::helper::Lease> {
        if rayon::current_num_threads() < 2 {
            return None;
        }
        let lease = (0..5000)
            .find_map(|_| {
                super::super::helper::lease().or_else(|| {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    None
                })
            })
            .expect("the helper thread, held too long by other tests");
        Some(lease)
    }

    /// With the GELU finish (applied in registers by some kernels, after the store by others),
    /// every kernel gives the plain product's GELU.
    #[test]
    fn every_kernel_applies_the_gelu_finish() {
        let (rows, inputs, outputs, x, w, bias) = case();
        let before: Vec<f32> = plain(&x, &w, &bias, rows, inputs)
            .into_iter()
            .map(|v| v / 64.0)
            .collect();
        let want: Vec<f32> = before.iter().map(|&v| gelu_erf(v)).collect();
        let w: Vec<f32> = w.iter().map(|v| v / 64.0).collect();
        let bias: Vec<f32> = bias.iter().map(|v| v / 64.0).collect();
        for kernel in Kernel::ALL.into_iter().filter(|k| k.available()) {
            let layer = Dense::pack(kernel, &w, &bias, inputs, outputs);
            let mut out = vec![f32::NAN; rows * outputs];
            let finish = Finish::Activate(Activation::GeluErf);
            let lease = helper_lease();
            layer.multiply(
                &x,
                rows,
                &mut out,
                finish,
                &mut Stage::default(),
                lease.as_ref(),
            );
            // The bf16 kernels on 512-bit registers take the GELU made for an output rounded
            // to bf16 next (`gelu_erf_rows_512_for_bf16`), held to its own bound.
            let for_bf16 = kernel.family() == Family::Bf16 && kernel.isa() == Isa::Avx512;
            for (i, ((&got, &want), &x)) in out.iter().zip(&want).zip(&before).enumerate() {
                let bound = if for_bf16 {
                    2e-5 * x.abs().max(1.0)
                } else {
                    1e-6 + 1e-5 * want.abs()
                };
                assert!(
                    (got - want).abs() <= bound,
                    "{} row {} col {}: {got} vs {want}",
                    kernel.name(),
                    i / outputs,
                    i % outputs
                );
            }
        }
    }

    /// A layer that stores its outputs as bf16 pairs feeds the next exactly the words the next
    /// would have made from f32 rows: the same bits out, with or without the GELU, on partial
    /// tiles and panels, over a reused buffer holding an earlier, longer input's words.
    #[test]
    fn pairs_stored_by_the_tiles_are_the_pairs_staged_from_f32() {
        let (rows, inputs, inner, outputs) = (29, 37, 54, 29);
        let value = |i: usize| ((i * 7919 % 113) as f32 - 56.0) / 64.0;
        let x: Vec<f32> = (0..rows * inputs).map(|i| value(i * 3 + 1)).collect();
        let w1: Vec<f32> = (0..inputs * inner).map(value).collect();
        let b1: Vec<f32> = (0..inner).map(|i| value(i + 5)).collect();
        let w2: Vec<f32> = (0..inner * outputs).map(|i| value(i * 5)).collect();
        let b2: Vec<f32> = (0..outputs).map(|i| i as f32).collect();
        let mut tried = 0;
        for kernel in Kernel::ALL.into_iter().filter(|k| k.available()) {
            let first = Dense::pack(kernel, &w1, &b1, inputs, inner);
            let second = Dense::pack(kernel, &w2, &b2, inner, outputs);
            for finish in [Finish::Nothing, Finish::Activate(Activation::GeluErf)] {
                if !first.stores_pairs(finish) {
                    continue;
                }
                assert!(second.takes_pairs_of(&first), "{}", kernel.name());
                let lease = helper_lease();
                let mut stage = Stage::default();
                let mut staged = vec![f32::NAN; rows * inner];
                first.multiply(&x, rows, &mut staged, finish, &mut stage, lease.as_ref());
                let mut want = vec![f32::NAN; rows * outputs];
                second.multiply(&staged, rows, &mut want, Finish::Nothing, &mut stage, None);
                let mut words = vec![0xDEAD_BEEF; 3 * rows * inner];
                first.multiply_to_pairs(&x, rows, &mut words, finish, &mut stage, None);
                let mut got = vec![f32::NAN; rows * outputs];
                second.multiply_pairs(&mut words, rows, &mut got, Finish::Nothing, lease.as_ref());
                for (i, (got, want)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{} row {} col {}",
                        kernel.name(),
                        i / outputs,
                        i % outputs
                    );
                }
                tried += 1;
            }
        }
        // Every CPU with AVX512-BF16 has a `vdpbf16ps` tile, which stores pairs.
        assert_eq!(tried > 0, Kernel::Bf16Avx512x7x48.available());
    }

    #[test]
    fn a_forced_instruction_set_narrows_the_choice() {
        let narrow = choose(Family::F32, KernelRequest::Avx2, 64, 96).expect("AVX2 everywhere");
        assert_eq!((narrow.isa(), narrow.family()), (Isa::Avx2, Family::F32));
        assert_eq!(
            choose(Family::Bf16, KernelRequest::Avx2, 64, 96),
            Some(Kernel::Bf16Avx2x6x16)
        );
        let wide = choose(Family::F32, KernelRequest::Avx512, 64, 96);
        let bf16 = choose(Family::Bf16, KernelRequest::Avx512, 64, 96);
        if Isa::Avx512.available() {
            assert_eq!(wide.map(Kernel::isa), Some(Isa::Avx512));
            // One of the 512-bit bf16 kernels, whichever is faster here; avx512 leaves AMX out.
            let bf16 = bf16.expect("bf16 runs on AVX-512F alone");
            assert_eq!((bf16.isa(), bf16.family()), (Isa::Avx512, Family::Bf16));
            assert!(!bf16.is_amx(), "avx512 leaves AMX out");
        } else {
            // Forcing AVX-512 where there is none finds no kernel (the caller's clear error).
            assert_eq!((wide, bf16), (None, None));
        }
        assert!(choose(Family::F32, KernelRequest::Auto, 64, 96).is_some());
        assert!(choose(Family::Bf16, KernelRequest::Auto, 64, 96).is_some());
        assert_eq!(
            KernelRequest::from_name(" AVX2 "),
            Some(KernelRequest::Avx2)
        );
        assert_eq!(KernelRequest::from_name("sse"), None);
    }
}
