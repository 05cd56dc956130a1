//! Criterion benches of single layers, per kernel set: one 3×3 convolution per kernel set
//! (the digit model's costliest shapes), the attention UNet's 3×3 layers direct and by
//! Winograd (every tile), the 1×1, strided and transposed layers and the softmax, the
//! attention products, and one layer on one thread vs a team of two. The whole denoiser and
//! the main job are the root crate's `benches/denoiser.rs`. Group and bench IDs are the ones
//! these benches had there, so numbers stay comparable.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use edge_sample_kernels::{
    softmax, BlockDeconv, BlockShape, ConvShape, Isa, MatMul, MatMulShape, OutputBlock, PackedConv,
    StridedConv, Team, WinogradConv,
};

/// A 3×3 layer `ci → co` on `hw × hw` with padding 1: its shape, weights, input and output.
fn conv3x3_data(ci: usize, co: usize, hw: usize) -> (ConvShape, Vec<f32>, Vec<f32>, Vec<f32>) {
    let shape = ConvShape {
        ci,
        co,
        h: hw,
        w: hw,
        kh: 3,
        kw: 3,
        stride: [1, 1],
        pad: [1; 4],
    };
    let w = vec![0.01f32; co * ci * 9];
    let x = vec![0.5f32; ci * hw * hw];
    (shape, w, x, vec![0f32; co * hw * hw])
}

/// The digit model's costliest convolution shapes, one kernel set at a time.
fn conv_layer(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv3x3");
    let shapes = [(10, 10, 28), (30, 10, 28), (20, 20, 14), (80, 80, 4)];
    for (ci, co, hw) in shapes {
        let (shape, w, x, mut out) = conv3x3_data(ci, co, hw);
        for kernels in Isa::all_supported() {
            let p = PackedConv::new(shape, &w, &[], kernels);
            let id = format!("{ci}to{co}_{hw}x{hw}/{}", kernels.describe());
            g.bench_function(BenchmarkId::new("direct", id), |b| {
                b.iter(|| p.run(&x, &mut out, false))
            });
        }
    }
    g.finish();
}

/// The attention UNet's 3×3 layers, direct and by Winograd F(2×2, 3×3) and F(4×4, 3×3), per
/// kernel set.
fn winograd_layer(c: &mut Criterion) {
    let mut g = c.benchmark_group("winograd");
    for (ci, co, hw) in [
        (64, 64, 32),
        (96, 32, 32),
        (128, 64, 16),
        (64, 64, 8),
        (20, 20, 14),
    ] {
        let (shape, w, x, mut out) = conv3x3_data(ci, co, hw);
        for kernels in Isa::all_supported() {
            let id = format!("{ci}to{co}_{hw}x{hw}/{}", kernels.describe());
            let p = PackedConv::new(shape, &w, &[], kernels);
            g.bench_function(BenchmarkId::new("direct", &id), |b| {
                b.iter(|| p.run(&x, &mut out, false))
            });
            for block in [OutputBlock::F2x2, OutputBlock::F4x4] {
                let p = WinogradConv::new(shape, &w, &[], kernels, block);
                let name = format!("winograd_f{}", block.m());
                g.bench_function(BenchmarkId::new(name, &id), |b| {
                    b.iter(|| p.run_with_bias(&x, &mut out, false, None))
                });
            }
            // Every tile of the block `auto` picks, for choosing among them.
            let block = OutputBlock::for_shape(&shape);
            for &tile in kernels.tiles() {
                let p = WinogradConv::with_tile(shape, &w, &[], kernels, block, tile);
                let id = format!("{id}/f{}/tile{}x{}", block.m(), tile.0, tile.1);
                g.bench_function(BenchmarkId::new("winograd", id), |b| {
                    b.iter(|| p.run_with_bias(&x, &mut out, false, None))
                });
            }
        }
    }
    g.finish();
}

/// The layers our kernels take after a rearrangement (1×1, strided, transposed with kernel =
/// stride) and the attention softmax, at the digit and attention-UNet shapes.
fn lowered_layers(c: &mut Criterion) {
    let mut g = c.benchmark_group("lowered");
    for kernels in Isa::all_supported() {
        let k = kernels.describe();
        for (ci, co, hw) in [(96usize, 32usize, 32usize), (80, 40, 7)] {
            let shape = ConvShape {
                ci,
                co,
                h: hw,
                w: hw,
                kh: 1,
                kw: 1,
                stride: [1, 1],
                pad: [0; 4],
            };
            let p = PackedConv::new(shape, &vec![0.01; co * ci], &[], kernels);
            let x = vec![0.5f32; ci * hw * hw];
            let mut out = vec![0f32; co * hw * hw];
            g.bench_function(
                BenchmarkId::new("1x1", format!("{ci}to{co}_{hw}/{k}")),
                |b| b.iter(|| p.run(&x, &mut out, false)),
            );
        }
        for (ci, hw, kk, pad) in [(10usize, 28usize, 2usize, 0usize), (32, 32, 3, 1)] {
            let shape = ConvShape {
                ci,
                co: ci,
                h: hw,
                w: hw,
                kh: kk,
                kw: kk,
                stride: [2, 2],
                pad: [pad; 4],
            };
            let p = StridedConv::new(shape, &vec![0.01; ci * ci * kk * kk], &[], kernels);
            let x = vec![0.5f32; ci * hw * hw];
            let mut out = vec![0f32; ci * shape.out_h() * shape.out_w()];
            let id = format!("{ci}_{hw}_{kk}x{kk}/{k}");
            g.bench_function(BenchmarkId::new("stride2", id), |b| {
                b.iter(|| p.run_with_bias(&x, &mut out, false, None))
            });
        }
        let shape = BlockShape {
            ci: 20,
            co: 10,
            h: 14,
            w: 14,
            kh: 2,
            kw: 2,
        };
        let p = BlockDeconv::new(shape, &vec![0.01; 20 * 10 * 4], &[], kernels);
        let x = vec![0.5f32; 20 * 14 * 14];
        let mut out = vec![0f32; 10 * 28 * 28];
        g.bench_function(
            BenchmarkId::new("convtranspose2x2", format!("20to10_14/{k}")),
            |b| b.iter(|| p.run_with_bias(&x, &mut out, false, None)),
        );
        let mut rows: Vec<f32> = (0..512 * 256).map(|i| (i % 97) as f32 * 0.1).collect();
        g.bench_function(BenchmarkId::new("softmax", format!("512x256/{k}")), |b| {
            b.iter(|| softmax(&mut rows, 256, kernels))
        });
    }
    g.finish();
}

/// The attention products of a 16×16 diffusers block (2 heads of 32 interleaved in 64-wide
/// token rows) per kernel set, and one 3×3 layer and Q·Kᵀ on one thread vs a team of 2.
fn products_and_team(c: &mut Criterion) {
    let mut g = c.benchmark_group("products");
    let (tokens, heads, d) = (256usize, 2usize, 32usize);
    let row = heads * d;
    let (qk, av) = MatMulShape::attention(tokens, heads, d);
    let q = vec![0.01f32; tokens * row];
    let p = vec![0.01f32; heads * tokens * tokens];
    let mut s = vec![0f32; heads * tokens * tokens];
    let mut o = vec![0f32; tokens * row];
    for kernels in Isa::all_supported() {
        let k = kernels.describe().replace(' ', "_");
        let mm = MatMul::new(qk.clone(), kernels);
        g.bench_function(BenchmarkId::new("qk_256x32x256x2", &k), |b| {
            b.iter(|| mm.run(None, &q, &q, &mut s))
        });
        let mm = MatMul::new(av.clone(), kernels);
        g.bench_function(BenchmarkId::new("pv_256x256x32x2", &k), |b| {
            b.iter(|| mm.run(None, &p, &q, &mut o))
        });
    }
    let team = Team::new(2).unwrap();
    let kernels = Isa::best();
    let mm = MatMul::new(qk.clone(), kernels);
    let shape = ConvShape {
        ci: 64,
        co: 64,
        h: 32,
        w: 32,
        kh: 3,
        kw: 3,
        stride: [1, 1],
        pad: [1; 4],
    };
    let conv = PackedConv::new(shape, &vec![0.01f32; 64 * 64 * 9], &[], kernels);
    let x = vec![0.5f32; 64 * 32 * 32];
    let mut y = vec![0f32; 64 * 32 * 32];
    for (name, t) in [("1thread", None), ("team2", Some(&team))] {
        g.bench_function(BenchmarkId::new("qk_256x32x256x2", name), |b| {
            b.iter(|| mm.run(t, &q, &q, &mut s))
        });
        g.bench_function(BenchmarkId::new("conv3x3_64to64_32", name), |b| {
            b.iter(|| conv.run_on(t, &x, &mut y, false, None))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    conv_layer,
    winograd_layer,
    lowered_layers,
    products_and_team
);
criterion_main!(benches);
