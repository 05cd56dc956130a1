//! Where a denoiser step spends its time: tract's per-node evaluation, timed node by node, as
//! `tract --profile` does (`bench --profile`).
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::OpState;
use tract_onnx::tract_core::plan::{eval, EvalContext};

use super::run::TractDenoiser;
use crate::error::{one_line, Error, Result};
use edge_sample_kernels::with_team;

/// Time spent in one node of the optimized plan over a profile.
#[derive(Clone, Debug)]
pub struct NodeTime {
    pub name: String,
    /// The optimized operator (tract's own name, e.g. "Conv", "OptMatMul", "Add").
    pub op: String,
    /// What the operator says of itself (shapes, kernel choices), on one line.
    pub info: String,
    pub time: Duration,
}

impl TractDenoiser {
    /// Runs the plan `runs` times on `x` at timestep `t`, timing every node: the mean time per
    /// run of each node, slowest first.
    pub fn profile(&mut self, x: &[f32], t: usize, runs: usize) -> Result<Vec<NodeTime>> {
        let engine = |e: anyhow::Error| Error::runtime(format!("tract: {}", one_line(&e)));
        let mut times: BTreeMap<usize, NodeTime> = BTreeMap::new();
        let team = self.team.clone();
        for _ in 0..runs {
            let inputs = self.inputs(x, t).map_err(engine)?;
            let state = &mut self.state;
            let run = || {
                state.run_plan_with_eval(
                    inputs,
                    |ctx: &EvalContext,
                     st: Option<&mut (dyn OpState + 'static)>,
                     node: &TypedNode,
                     input: TVec<TValue>|
                     -> TractResult<TVec<TValue>> {
                        let t0 = Instant::now();
                        let out = eval(ctx, st, node, input);
                        let e = times.entry(node.id).or_insert_with(|| NodeTime {
                            name: node.name.clone(),
                            op: node.op().name().to_string(),
                            info: node.op().info().unwrap_or_default().join("; "),
                            time: Duration::ZERO,
                        });
                        e.time += t0.elapsed();
                        out
                    },
                )
            };
            match &team {
                Some(team) => with_team(team, run),
                None => run(),
            }
            .map_err(engine)?;
        }
        let mut v: Vec<NodeTime> = times.into_values().collect();
        for n in &mut v {
            n.time /= runs.max(1) as u32;
        }
        v.sort_by_key(|n| std::cmp::Reverse(n.time));
        Ok(v)
    }
}
