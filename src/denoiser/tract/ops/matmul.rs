//! Matrix products (attention, linear layers) on our register tiles.
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::einsum::EinSum;

use edge_sample_kernels::{team, Isa, MatMul, MatMulShape};

/// A float matrix product (tract's `EinSum` of two f32 inputs with one m, one k and one n
/// axis and any batch axes, at fixed shapes) on our register tiles: [`MatMul`].
#[derive(Debug, Clone, PartialEq)]
pub struct FusedMatMul {
    mm: MatMul,
    out_shape: TVec<usize>,
}

impl Eq for FusedMatMul {}

impl FusedMatMul {
    /// The product `node` computes, when it is one we take.
    pub fn for_einsum(
        model: &TypedModel,
        node: &TypedNode,
        kernels: Isa,
    ) -> TractResult<Option<Self>> {
        let Some(op) = node.op_as::<EinSum>() else {
            return Ok(None);
        };
        if op.q_params.is_some() || op.operating_dt != DatumType::F32 || node.inputs.len() != 2 {
            return Ok(None);
        }
        let facts = [
            model.outlet_fact(node.inputs[0])?,
            model.outlet_fact(node.inputs[1])?,
        ];
        if facts.iter().any(|f| f.datum_type != DatumType::F32)
            || node.outputs[0].fact.datum_type != DatumType::F32
        {
            return Ok(None);
        }
        let (Some(sa), Some(sb), Some(sc)) = (
            facts[0].shape.as_concrete(),
            facts[1].shape.as_concrete(),
            node.outputs[0].fact.shape.as_concrete(),
        ) else {
            return Ok(None);
        };
        let strides = |shape: &[usize]| -> TVec<usize> {
            let mut st: TVec<usize> = tvec![1; shape.len()];
            for i in (0..shape.len().saturating_sub(1)).rev() {
                st[i] = st[i + 1] * shape[i + 1];
            }
            st
        };
        let (ta, tb, tc) = (strides(sa), strides(sb), strides(sc));
        // Axes by the operands they appear in: m (A and C), n (B and C), k (A and B), batch
        // (all three; broadcast where an input has length 1).
        let (mut ms, mut ns, mut ks) = (Vec::new(), Vec::new(), Vec::new());
        let mut batch = Vec::new();
        for axis in op.axes.iter_all_axes() {
            let one = |v: &TVec<usize>| (v.len() <= 1).then(|| v.first().copied());
            let (Some(ia), Some(ib), Some(ic)) = (
                one(&axis.inputs[0]),
                one(&axis.inputs[1]),
                one(&axis.outputs[0]),
            ) else {
                return Ok(None);
            };
            let len = |pos: Option<usize>, shape: &[usize]| pos.map_or(1, |p| shape[p]);
            let (la, lb, lc) = (len(ia, sa), len(ib, sb), len(ic, sc));
            let st = |pos: Option<usize>, l: usize, t: &TVec<usize>| match pos {
                Some(p) if l > 1 => t[p],
                _ => 0,
            };
            let (xa, xb, xc) = (st(ia, la, &ta), st(ib, lb, &tb), st(ic, lc, &tc));
            match (ia.is_some(), ib.is_some(), ic.is_some()) {
                (true, false, true) if la == lc => ms.push((la, [xa, xc])),
                (false, true, true) if lb == lc => ns.push((lb, [xb, xc])),
                (true, true, false) if la == lb => ks.push((la, [xa, xb])),
                (true, true, true) if (la == lc || la == 1) && (lb == lc || lb == 1) => {
                    batch.push((lc, [xa, xb, xc]))
                }
                // Size-1 axes of one operand only: nothing to iterate.
                _ if la == 1 && lb == 1 && lc == 1 => {}
                _ => return Ok(None),
            }
        }
        // The longest m and n axes are the product's; other ones are batch axes that one
        // input does not have (stride 0 there).
        let take = |axes: &mut Vec<(usize, [usize; 2])>| {
            let i = (0..axes.len()).max_by_key(|&i| (axes[i].0, std::cmp::Reverse(i)))?;
            Some(axes.remove(i))
        };
        let (m, [am, cm]) = take(&mut ms).unwrap_or((1, [0, 0]));
        let (n, [bn, cn]) = take(&mut ns).unwrap_or((1, [0, 0]));
        batch.extend(ms.iter().map(|&(l, [a, c])| (l, [a, 0, c])));
        batch.extend(ns.iter().map(|&(l, [b, c])| (l, [0, b, c])));
        // Several summed axes are one when they are nested alike in A and B (heads × head
        // dimension read as one run), else the product is left to tract.
        if ks.is_empty() {
            return Ok(None);
        }
        ks.sort_by_key(|k| std::cmp::Reverse(k.1[0]));
        let mut summed = (1usize, [0usize; 2]);
        for &(len, [xa, xb]) in ks.iter().rev().filter(|k| k.0 > 1) {
            if summed.0 == 1 {
                summed = (len, [xa, xb]);
            } else if xa == summed.0 * summed.1[0] && xb == summed.0 * summed.1[1] {
                summed.0 *= len;
            } else {
                return Ok(None);
            }
        }
        let (k, [ak, bk]) = summed;
        // Matrix-vector products (a batch-1 time embedding) fill a quarter of a 4-row tile;
        // tract's own matrix-vector kernels take them.
        if m == 1 || n == 1 {
            return Ok(None);
        }
        // Batch axes in C's order, so that consecutive entries write neighbouring outputs.
        batch.sort_by_key(|b| std::cmp::Reverse(b.1[2]));
        let shape = MatMulShape {
            m,
            k,
            n,
            batch,
            a: [am, ak],
            b: [bk, bn],
            c: [cm, cn],
        };
        let mut mm = MatMul::new(shape, kernels);
        // A constant operand read as positions (a linear layer's weights) is packed once.
        if let Some(k) = &facts[mm.positions_input()].konst {
            mm = mm.with_constant_positions(k.try_as_plain_ram()?.as_slice::<f32>()?);
        }
        Ok(Some(FusedMatMul {
            mm,
            out_shape: sc.into(),
        }))
    }
}

impl Op for FusedMatMul {
    fn name(&self) -> StaticName {
        "FusedMatMul".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} ({})",
            self.mm.describe(),
            self.mm.kernels.describe()
        )])
    }
    op_as_typed_op!();
}

impl EvalOp for FusedMatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (a, b) = args_2!(inputs);
        // Safety: every element of C is one (batch, m, n) output, written by `run`.
        let mut c = unsafe { Tensor::uninitialized::<f32>(&self.out_shape)? };
        let (a, b) = (a.try_as_plain_ram()?, b.try_as_plain_ram()?);
        let team = team::current();
        self.mm.run(
            team.as_deref(),
            a.as_slice::<f32>()?,
            b.as_slice::<f32>()?,
            c.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
        );
        Ok(tvec![c.into_tvalue()])
    }
}

impl TypedOp for FusedMatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 2, "FusedMatMul takes two inputs");
        Ok(tvec![f32::fact(&*self.out_shape)])
    }
    as_op!();
}
