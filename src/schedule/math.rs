//! Noise-schedule formulas in f64, shared by the build script (which bakes the seed's tables
//! into static memory) and the library (which computes other schedules once at load).
//!
//! Only `libm` is used for transcendental functions, so the tables are bit-identical on every
//! platform: a prerequisite for "the same seed gives the same image on x86 and ARM".

/// β_t for t = 0..T-1, spaced linearly from `beta_start` to `beta_end` (DDPM, Ho et al. 2020;
/// the seed: `torch.linspace(1e-4, 0.02, 1000)`).
pub fn linear_betas(t_max: usize, beta_start: f64, beta_end: f64) -> Vec<f64> {
    if t_max == 1 {
        return vec![beta_start];
    }
    let step = (beta_end - beta_start) / (t_max - 1) as f64;
    (0..t_max).map(|i| beta_start + step * i as f64).collect()
}

/// Stable Diffusion's "scaled_linear": β spaced linearly in √β (diffusers `scaled_linear`).
pub fn scaled_linear_betas(t_max: usize, beta_start: f64, beta_end: f64) -> Vec<f64> {
    linear_betas(t_max, libm::sqrt(beta_start), libm::sqrt(beta_end))
        .into_iter()
        .map(|b| b * b)
        .collect()
}

/// Cosine schedule (Nichol & Dhariwal 2021, eq. 17; diffusers `squaredcos_cap_v2`):
/// β_t = min(1 − f((t+1)/T)/f(t/T), 0.999), f(u) = cos²((u + 0.008)/1.008 · π/2).
pub fn cosine_betas(t_max: usize) -> Vec<f64> {
    let f = |u: f64| {
        let c = libm::cos((u + 0.008) / 1.008 * core::f64::consts::FRAC_PI_2);
        c * c
    };
    (0..t_max)
        .map(|i| {
            let t1 = i as f64 / t_max as f64;
            let t2 = (i + 1) as f64 / t_max as f64;
            (1.0 - f(t2) / f(t1)).min(0.999)
        })
        .collect()
}

/// Every per-timestep quantity the samplers read, derived from β alone.
pub struct Derived {
    pub alphas: Vec<f64>,
    pub alpha_bars: Vec<f64>,
    pub sqrt_alpha_bars: Vec<f64>,
    pub sqrt_one_minus_alpha_bars: Vec<f64>,
    /// The seed's coef1 = √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t): weight of x_t in the posterior mean.
    pub coef1: Vec<f64>,
    /// The seed's coef2 = √ᾱ_{t−1} β_t / (1 − ᾱ_t): weight of x̂0 in the posterior mean.
    pub coef2: Vec<f64>,
    /// β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t, with ᾱ_{−1} = 1 (so β̃_0 = 0).
    pub posterior_variance: Vec<f64>,
}

pub fn derive(betas: &[f64]) -> Derived {
    let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
    let mut alpha_bars = Vec::with_capacity(betas.len());
    let mut acc = 1.0;
    for a in &alphas {
        acc *= a;
        alpha_bars.push(acc);
    }
    let prev = |t: usize| if t == 0 { 1.0 } else { alpha_bars[t - 1] };
    let n = betas.len();
    Derived {
        sqrt_alpha_bars: alpha_bars.iter().map(|&a| libm::sqrt(a)).collect(),
        sqrt_one_minus_alpha_bars: alpha_bars.iter().map(|&a| libm::sqrt(1.0 - a)).collect(),
        coef1: (0..n)
            .map(|t| libm::sqrt(alphas[t]) * (1.0 - prev(t)) / (1.0 - alpha_bars[t]))
            .collect(),
        coef2: (0..n)
            .map(|t| libm::sqrt(prev(t)) * betas[t] / (1.0 - alpha_bars[t]))
            .collect(),
        posterior_variance: (0..n)
            .map(|t| (1.0 - prev(t)) / (1.0 - alpha_bars[t]) * betas[t])
            .collect(),
        alphas,
        alpha_bars,
    }
}
