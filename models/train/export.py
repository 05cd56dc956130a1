"""Export a trained checkpoint to ONNX (opset 17) in five variants and check them.

  python export.py --ckpt runs/digits/ckpt.pt --name digits --out-dir ../digits

writes, next to each other:
  <name>.onnx            fp32 (EMA weights by default)
  <name>-fp16.onnx       onnxconverter-common float16, keep_io_types=True (f32 IO)
  <name>-fp16-half.onnx  PyTorch model.half() export (f16 IO for x and eps)
  <name>-int8-qdq.onnx   onnxruntime quantize_static, per-tensor, QuantFormat.QDQ
  <name>-int8-qop.onnx   onnxruntime quantize_static, per-tensor, QuantFormat.QOperator
and <name>-export.json (errors vs fp32, excluded nodes, sizes, parameter count).

Inputs: x float [N,C,H,W] (dynamic N), t int64 [N,1]; output: eps.
int8 is calibrated on noised training images x_t (t spread over 0..999).  The
nodes kept in float are chosen by measuring the eps error vs fp32 on held-out
noised images for a few candidate exclusion sets (see EXCLUDE_CANDIDATES).
"""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data  # noqa: E402

try:  # the export needs torch; the int8 helpers (quantize, Calib, ...) used by
    import torch  # quant_sensitivity.py do not
    import nets  # noqa: E402
    from diffusion import Schedule  # noqa: E402
except ImportError:
    torch = None

OPSET = 17
META = dict(beta_schedule="linear", num_train_timesteps="1000", beta_start="0.0001",
            beta_end="0.02", prediction_type="epsilon", pixel_min="-1", pixel_max="1")

# op types onnxruntime quantizes into standard-domain ONNX ops only (QLinearConv,
# QLinearMatMul, uint8 data movement).  QGemm/QLinearAdd/QLinearConcat/... are
# com.microsoft contrib ops that tract does not implement (shared/NOTES.md).
QOP_STANDARD_OPS = ["Conv", "MatMul", "Relu", "Clip", "MaxPool", "Reshape", "Squeeze",
                    "Unsqueeze", "Flatten", "Transpose", "Gather", "Pad", "Resize", "Split"]

# QDQ: only compute ops.  onnxruntime's default QDQ set also wraps data movement
# (Unsqueeze/Reshape/Concat...), LayerNorm, Gemm and Gather in Q/DQ pairs; quantizing the
# per-block time-embedding vectors (Gemm -> Unsqueeze) that way cost ~4x the eps error
# on the seed UNet, and tract dequantizes QDQ weights at load anyway.
QDQ_OPS = ["Conv", "MatMul", "Relu", "Clip"]

# name -> nodes kept in float on top of the op types never quantized (Gather, norms,
# Softmax, Gemm, Add, Concat, ConvTranspose, Pad stay float in both formats).
#   "@io":      the Conv producing eps and the Convs reading the raw image (in_channels <= 2)
#   "@fullres": every Conv whose output has the image's full H x W (includes @io)
#   "MatMul":   attention matmuls (FashionUNet)
EXCLUDE_CANDIDATES = {
    "none": [],
    "io": ["@io"],
    "fullres": ["@fullres"],
    "io+matmul": ["@io", "MatMul"],
    "fullres+matmul": ["@fullres", "MatMul"],
}


def fullres_convs(model: onnx.ModelProto):
    from onnx import shape_inference
    mi = shape_inference.infer_shapes(model)
    hw = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][2:]
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(mi.graph.value_info) + list(mi.graph.output)}
    return [n.name for n in model.graph.node
            if n.op_type == "Conv" and shapes.get(n.output[0], [])[2:] == hw]


def io_convs(model: onnx.ModelProto):
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        if n.op_type != "Conv":
            continue
        w = inits.get(n.input[1])
        if "eps" in n.output or (w is not None and w.dims[1] <= 2):
            out.append(n.name)
    return out


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--name", default=None, help="model name (metadata + file names); default: dataset")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calib", type=int, default=256, help="calibration samples")
    p.add_argument("--n-eval", type=int, default=256, help="held-out noised samples for error checks")
    p.add_argument("--variants", default="fp32,fp16,fp16-half,int8-qdq,int8-qop")
    p.add_argument("--qop-ops", choices=["standard", "all"], default="standard",
                   help="QOperator: quantize only ops with standard-domain ONNX forms (tract-loadable), or all")
    p.add_argument("--exclude", default="auto",
                   help="int8 exclusion set: auto (pick by eps error) or one of " + ",".join(EXCLUDE_CANDIDATES))
    return p.parse_args()


def load_model(ckpt_path, weights):
    st = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    m = nets.build(st["config"])
    m.load_state_dict(st[weights])
    m.eval()
    return m, st


def set_meta(model: onnx.ModelProto, name: str):
    del model.metadata_props[:]
    for k, v in dict(name=name, **META).items():
        e = model.metadata_props.add()
        e.key, e.value = k, v
    return model


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turn Constant nodes into initializers and pre-compute every node whose inputs
    are all constant (torch exports F.pad's pads as a ConstantOfShape/Concat/Slice/
    Transpose/Cast chain), so the graph holds only the real computation."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    graph_inputs = {i.name for i in g.input}
    keep = []
    for n in g.node:
        if n.op_type == "Constant":
            out = ReferenceEvaluator(onnx.helper.make_model(onnx.helper.make_graph(
                [n], "c", [], [onnx.helper.make_tensor_value_info(n.output[0], 0, None)]),
                opset_imports=model.opset_import)).run(None, {})[0]
            consts[n.output[0]] = np.asarray(out)
            g.initializer.append(numpy_helper.from_array(np.asarray(out), n.output[0]))
            continue
        ins = [i for i in n.input if i]
        if n.op_type not in ("Gather",) and ins and all(i in consts and i not in graph_inputs for i in ins):
            sub = onnx.helper.make_graph(
                [n], "f", [onnx.helper.make_tensor_value_info(i, 0, None) for i in ins],
                [onnx.helper.make_tensor_value_info(o, 0, None) for o in n.output])
            res = ReferenceEvaluator(onnx.helper.make_model(sub, opset_imports=model.opset_import)).run(
                None, {i: consts[i] for i in ins})
            for o, r in zip(n.output, res):
                consts[o] = np.asarray(r)
                g.initializer.append(numpy_helper.from_array(np.asarray(r), o))
            continue
        keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    live = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    return model


def save(model, path, name):
    set_meta(model, name)
    # eps has x's shape by contract; the exporter sometimes leaves symbolic H, W on it
    xd = model.graph.input[0].type.tensor_type.shape.dim
    od = model.graph.output[0].type.tensor_type.shape.dim
    for a_, b_ in zip(xd, od):
        b_.CopyFrom(a_)
    del model.graph.value_info[:]  # stale shape info pins N=1 in some readers
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def torch_export(m, path, half=False):
    C, H, W = m.config["img_shape"]
    x = torch.randn(2, C, H, W)
    t = torch.tensor([[10], [500]], dtype=torch.int64)
    if half:
        m = m.half()
        x = x.half()
    torch.onnx.export(m, (x, t), str(path), input_names=["x", "t"], output_names=["eps"],
                      dynamic_axes={"x": {0: "N"}, "t": {0: "N"}, "eps": {0: "N"}},
                      opset_version=OPSET, do_constant_folding=True, dynamo=False)
    if half:
        m.float()


def session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_sess(sess, x, t, bs=64):
    in_type = sess.get_inputs()[0].type
    outs = []
    for i in range(0, len(x), bs):
        xb = x[i:i + bs].astype(np.float16 if "float16" in in_type else np.float32)
        outs.append(sess.run(["eps"], {"x": xb, "t": t[i:i + bs]})[0].astype(np.float32))
    return np.concatenate(outs)


def noised(x0, n, seed, sched):
    """n noised images x_t from x0 with t stratified over 0..999, and their t and eps."""
    g = np.random.RandomState(seed)
    idx = g.choice(len(x0), n, replace=len(x0) < n)
    t = ((np.arange(n) + g.rand(n)) * sched.n_steps / n).astype(np.int64).clip(0, sched.n_steps - 1)
    g.shuffle(t)
    eps = g.randn(n, *x0.shape[1:]).astype(np.float32)
    xt = sched.q_sample(torch.from_numpy(x0[idx]), torch.from_numpy(t), torch.from_numpy(eps)).numpy()
    return xt.astype(np.float32), t.reshape(-1, 1), eps


class Calib:
    def __init__(self, xt, t, bs=16):
        self.batches = [{"x": xt[i:i + bs], "t": t[i:i + bs]} for i in range(0, len(xt), bs)]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return self.batches[self.i - 1]

    def rewind(self):
        self.i = 0


def qdq_float_bypass(model: onnx.ModelProto, quantized_ops) -> onnx.ModelProto:
    """onnxruntime's QDQ quantizer puts one Q->DQ pair on an activation and makes EVERY
    consumer read the dequantized copy, so float ops (residual Add, LayerNorm, Concat,
    Relu after an Add) also see 8-bit values.  Rewire those float consumers to the
    original float tensor, so (as in the QOperator model) only the inputs and outputs of
    the quantized ops are rounded; Q/DQ pairs left without consumers are dropped."""
    g = model.graph
    prod = {o: n for n in g.node for o in n.output}
    for n in g.node:
        if n.op_type in quantized_ops or n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for k, i in enumerate(n.input):
            dq = prod.get(i)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = prod.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                n.input[k] = q.input[0]
    while True:  # drop dead Q/DQ nodes
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    live = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    return model


def quantize(pre_path, out_path, fmt, calib, exclude_types, qop_ops, cache=None,
             per_channel=False, method="MinMax", extra=None, nodes=None):
    """quantize_static with the exclusion set `exclude_types` (or the node names `nodes`);
    `method`: MinMax, Percentile or Entropy (`extra`: their extra_options)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    model = onnx.load(str(pre_path))
    excl = [n.name for n in model.graph.node if n.op_type in exclude_types]
    if "@io" in exclude_types:
        excl += io_convs(model)
    if "@fullres" in exclude_types:
        excl = sorted(set(excl) | set(fullres_convs(model)) | set(io_convs(model)))
    if nodes is not None:
        excl = list(nodes)
    op_types = QDQ_OPS if fmt == "qdq" else (QOP_STANDARD_OPS if qop_ops == "standard" else None)
    calib.rewind()
    quantize_static(str(pre_path), str(out_path), calib,
                    quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                    op_types_to_quantize=op_types, per_channel=per_channel, reduce_range=False,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=excl, calibrate_method=getattr(CalibrationMethod, method),
                    calibration_cache_path=cache, extra_options=extra or {})
    if fmt == "qdq":
        onnx.save(qdq_float_bypass(onnx.load(str(out_path)), QDQ_OPS), str(out_path))
    return excl


def err(a, b):
    d = np.abs(a - b)
    return dict(max_abs=float(d.max()), mean_abs=float(d.mean()))


def main():
    import logging
    logging.getLogger().setLevel(logging.ERROR)  # quantizer warns about every int64 tensor
    a = parse()
    if torch is None:
        sys.exit("export.py needs torch (models/train/requirements.txt)")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m, st = load_model(a.ckpt, a.weights)
    name = a.name or st.get("dataset", "model")
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    variants = a.variants.split(",")
    sched = Schedule()
    report = dict(name=name, ckpt=str(a.ckpt), weights=a.weights, step=st.get("step"),
                  trained_minutes=round(st.get("elapsed_s", 0) / 60, 1),
                  eval_loss_ema=st.get("eval_loss_ema"), config=st["config"],
                  parameters=nets.count_params(m, trainable_only=False),
                  trainable_parameters=nets.count_params(m), variants={})

    xtr, _ = data.load(st.get("dataset", name), "train")
    xev, _ = data.load(st.get("dataset", name), "eval")
    xe, te, epse = noised(xev, a.n_eval, 7, sched)
    with torch.no_grad():
        ref_torch = torch.cat([m(torch.from_numpy(xe[i:i + 64]), torch.from_numpy(te[i:i + 64]))
                               for i in range(0, len(xe), 64)]).numpy()

    fp32 = out / f"{name}.onnx"
    torch_export(m, fp32)
    save(fold_constants(onnx.load(str(fp32))), fp32, name)
    ref = run_sess(session(fp32, a.threads), xe, te)
    e = err(ref, ref_torch)
    print(f"fp32 onnxruntime vs torch: max {e['max_abs']:.2e} mean {e['mean_abs']:.2e}")
    assert e["max_abs"] < 1e-4, "fp32 ONNX does not match torch within 1e-4"
    report["variants"]["fp32"] = dict(file=fp32.name, vs_torch=e)

    def record(key, path, extra=None):
        got = run_sess(session(path, a.threads), xe, te)
        r = dict(file=path.name, bytes=path.stat().st_size, vs_fp32=err(got, ref),
                 eps_mse_vs_true_noise=float(np.mean((got - epse) ** 2)))
        r.update(extra or {})
        report["variants"][key] = r
        print(f"{key:10s} {path.name:28s} {r['bytes'] / 1024:8.1f} KiB  vs fp32: max {r['vs_fp32']['max_abs']:.3e} "
              f"mean {r['vs_fp32']['mean_abs']:.3e}  eps-MSE {r['eps_mse_vs_true_noise']:.5f}", flush=True)
        return r

    record("fp32", fp32, report["variants"]["fp32"])

    if "fp16" in variants:
        from onnxconverter_common import float16
        p = out / f"{name}-fp16.onnx"
        mf = float16.convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True,
                                              op_block_list=float16.DEFAULT_OP_BLOCK_LIST + ["Cast"])
        save(mf, p, name)
        record("fp16", p)

    if "fp16-half" in variants:
        p = out / f"{name}-fp16-half.onnx"
        torch_export(m, p, half=True)
        save(fold_constants(onnx.load(str(p))), p, name)
        try:
            record("fp16-half", p)
        except Exception as ex:  # onnxruntime CPU lacks some f16 kernels
            report["variants"]["fp16-half"] = dict(file=p.name, bytes=p.stat().st_size,
                                                   ort_error=str(ex)[:300])
            print(f"fp16-half: onnxruntime could not run it: {str(ex)[:200]}")

    q_variants = [v for v in variants if v.startswith("int8")]
    if q_variants:
        from onnxruntime.quantization.shape_inference import quant_pre_process
        xc, tc, _ = noised(xtr, a.calib, 3, sched)
        calib = Calib(xc, tc)
        with tempfile.TemporaryDirectory() as td:
            pre = Path(td) / "pre.onnx"
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            present = {n.op_type for n in onnx.load(str(pre)).graph.node}
            for v in q_variants:
                fmt = v.split("-")[1]
                p = out / f"{name}-{v}.onnx"
                cands = EXCLUDE_CANDIDATES if a.exclude == "auto" else {a.exclude: EXCLUDE_CANDIDATES[a.exclude]}
                trials, seen = {}, set()
                for cname, types in cands.items():
                    key = tuple(sorted(set(types) & (present | {"@io", "@fullres"})))
                    if key in seen:
                        continue
                    seen.add(key)
                    tp = Path(td) / f"{v}-{cname}.onnx"
                    # ranges are calibrated once per format (first candidate quantizes the most
                    # tensors) and cached for the others
                    excl = quantize(pre, tp, fmt, calib, types, a.qop_ops, cache=str(Path(td) / f"calib-{fmt}.json"))
                    got = run_sess(session(tp, a.threads), xe, te)
                    trials[cname] = dict(path=tp, excluded=excl, types=sorted(key), **err(got, ref))
                    print(f"  {v} exclude={cname:24s} ({len(excl)} nodes) mean {trials[cname]['mean_abs']:.4e} "
                          f"max {trials[cname]['max_abs']:.4e}", flush=True)
                # fewest excluded nodes whose mean error is within 5 % of the best
                best = min(tr["mean_abs"] for tr in trials.values())
                pick = min((k for k, tr in trials.items() if tr["mean_abs"] <= best * 1.05),
                           key=lambda k: len(trials[k]["excluded"]))
                tr = trials[pick]
                mq = onnx.load(str(tr["path"]))
                save(mq, p, name)
                domains = sorted({n.domain or "ai.onnx" for n in mq.graph.node})
                ops = sorted({n.op_type for n in mq.graph.node})
                qops = QDQ_OPS if fmt == "qdq" else (QOP_STANDARD_OPS if a.qop_ops == "standard" else "all")
                record(v, p, dict(excluded_set=pick, quantized_op_types=qops,
                                  nodes_to_exclude=tr["excluded"], domains=domains, op_types=ops,
                                  trials={k: dict(mean_abs=x["mean_abs"], max_abs=x["max_abs"],
                                                  n_excluded=len(x["excluded"]))
                                          for k, x in trials.items()}))
                print(f"  -> {v}: exclusion set '{pick}' ({len(tr['excluded'])} nodes kept in float); "
                      f"domains {domains}")

    rp = out / f"{name}-export.json"
    rp.write_text(json.dumps(report, indent=1))
    print(f"wrote {rp}")


if __name__ == "__main__":
    main()
