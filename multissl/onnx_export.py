"""ONNX export of an exported encoder: one graph, dynamic batch size, that a serving stack runs without Python or
multissl. Where the domain has a fixed-shape raw form (`eval_raw`: images and clips as stored, waveforms, stored
observations) the graph takes it and holds the domain's `preprocess` (normalisation, log-mel, resizing); elsewhere
(text, tables) the graph takes the model input and `preprocess` runs beside it, from the state written next to the
graph. What the graph takes (names, dtypes, shapes) is recorded in the export when the run ends."""
import contextlib
import io
import json
import os
import uuid
from pathlib import Path

import numpy as np
import torch
from torch import nn

from multissl.contracts import Domain, VariableLength, has, optional
from multissl.data import collate_of
from multissl.errors import UserError, disk_error, reason, require

FORMAT = "multissl-onnx/1"
OUTPUT = "representation"  # "embedding" collides with the names of the encoders' own embedding tables
TOLERANCE = 1e-4  # onnxruntime against the exported encoder's embed, on the tracing inputs


def graph_inputs(domain, sample) -> dict:
    """One stored training sample -> what the ONNX graph takes (names, dtypes, shapes; no data): `eval_raw`'s form
    with the preprocessing inside the graph where the domain has one, else the model input (and its padding mask);
    None where they are not tensors."""
    raw = optional(domain, Domain, "eval_raw")
    if raw is not None:
        tensors = {"x": raw(sample)}
    else:
        x, pad = collate_of(domain)([domain.eval_input(sample)])
        tensors = {"x": x[0]} if pad is None else {"x": x[0], "pad": pad[0]}
    if not all(torch.is_tensor(t) for t in tensors.values()):
        return None  # a plugin's raw form that is no tensor: no graph to trace
    varying = has(domain, VariableLength)  # the first axis of a sample is its length

    def shape(t):
        return ["batch", *("length" if varying and i == 0 else int(s) for i, s in enumerate(t.shape))]
    return {"preprocess": raw is not None,
            "inputs": [{"name": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": shape(t)}
                       for name, t in tensors.items()]}


class Graph(nn.Module):
    """What the ONNX graph computes: (the domain's preprocess), the encoder, its pooled representation [b d]."""

    def __init__(self, exported, preprocess: bool):
        super().__init__()
        self.encoder, self.domain, self.preprocess = exported.encoder, exported.domain, preprocess

    def forward(self, x, pad=None):
        if self.preprocess:
            x = self.domain.preprocess(x)
            x, pad = x if isinstance(x, tuple) else (x, pad)
        return (self.encoder(x) if pad is None else self.encoder(x, pad=pad))[1]


def examples(inputs: list[dict], batch: int = 2, length: int = 3, seed: int = 0) -> tuple:
    """Inputs of the recorded shapes to trace with (two samples: a size of 1 would be fixed into the graph)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for spec in inputs:
        shape = [batch if s == "batch" else length if s == "length" else s for s in spec["shape"]]
        dtype = getattr(torch, spec["dtype"])
        if dtype.is_floating_point:
            out.append(torch.rand(shape, generator=g).to(dtype) * 2 - 1)
        elif dtype == torch.uint8:
            out.append(torch.randint(0, 256, shape, generator=g, dtype=dtype))
        else:  # ids and masks: zeros are a valid id and "not padding"
            out.append(torch.zeros(shape, dtype=dtype))
    return tuple(out)


def exact_stft(model):
    """onnxruntime's float32 STFT is far less exact than torch's FFT (log-mel bins of quiet frames differ by 1e-2):
    every STFT node of the graph computes in float64 between two casts."""
    from onnx import TensorProto, helper
    nodes = []
    for node in model.graph.node:
        if node.op_type != "STFT" or len(node.input) < 3:
            nodes.append(node)
            continue
        signal, window, out = node.input[0], node.input[2], node.output[0]
        nodes += [helper.make_node("Cast", [signal], [f"{signal}_f64"], to=TensorProto.DOUBLE)]
        if window:
            nodes += [helper.make_node("Cast", [window], [f"{window}_f64"], to=TensorProto.DOUBLE)]
            node.input[2] = f"{window}_f64"
        node.input[0], node.output[0] = f"{signal}_f64", f"{out}_f64"
        nodes += [node, helper.make_node("Cast", [f"{out}_f64"], [out], to=TensorProto.FLOAT)]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def export_onnx(source, file, opset: int = 20) -> Path:
    """An exported encoder (a run folder, its encoder/ folder, or `load_encoder`'s result) -> `file` (.onnx) and
    `file` with .json: the graph's inputs and output, and the domain's config and state (what runs beside the graph:
    text's tokenizer, a table's column encoding). Checked with onnxruntime on the tracing inputs before it is kept;
    written to a temporary name and renamed, so a failure leaves nothing."""
    from multissl.export import load_encoder
    for module in ("onnx", "onnxscript", "onnxruntime"):
        require(module, "ONNX export")
    exported = load_encoder(source) if isinstance(source, (str, Path)) else source
    meta = getattr(exported, "meta", None) or {}
    spec = meta.get("inputs")
    if spec is None:
        raise UserError(f"{source} records no graph inputs (exported before ONNX export existed); train it again "
                        f"with this version (python -m multissl.train ... trainer.resume=<run> exports on finishing)")
    file = Path(file)
    if file.suffix != ".onnx":
        raise UserError(f"the ONNX file must end in .onnx, got {file}; e.g. --onnx encoder.onnx")
    graph, names = Graph(exported, spec["preprocess"]).eval(), [i["name"] for i in spec["inputs"]]
    args = examples(spec["inputs"])
    with torch.no_grad():
        want = graph(*args).numpy()  # also builds what a domain makes on first use (torchaudio's transform)
    dims = [{i: torch.export.Dim.DYNAMIC for i, s in enumerate(inp["shape"]) if isinstance(s, str)}
            for inp in spec["inputs"]]
    tmp = file.with_name(f".{file.name}.{uuid.uuid4().hex[:8]}.tmp")
    side_tmp = tmp.with_suffix(".json")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
            program = torch.onnx.export(graph, args, input_names=names, output_names=[OUTPUT], opset_version=opset,
                                        dynamo=True, dynamic_shapes=tuple(dims), verbose=False)
        import onnx
        onnx.save(exact_stft(program.model_proto), str(tmp))
        got = run_onnx(tmp, dict(zip(names, args)))
        if got.shape != want.shape or not np.allclose(got, want, atol=TOLERANCE, rtol=0):
            raise UserError(f"onnxruntime does not reproduce the encoder (largest difference "
                            f"{np.abs(got - want).max():.2e}, allowed {TOLERANCE}); please report it")
        side = {"format": FORMAT, "inputs": spec["inputs"], "preprocess_in_graph": spec["preprocess"],
                "output": {"name": OUTPUT, "dtype": "float32", "shape": ["batch", exported.dim]},
                "domain": meta.get("domain"), "encoder": meta.get("encoder"), "preprocess": meta.get("preprocess")}
        side_tmp.write_text(json.dumps(side, indent=2))
        os.replace(side_tmp, file.with_suffix(".json"))
        os.replace(tmp, file)
    except UserError:
        raise
    except Exception as e:
        why = "no space left" if disk_error(e) else reason(e)
        raise UserError(f"cannot export the encoder to ONNX ({type(exported.encoder).__name__}): {why}; the "
                        f"safetensors export stays usable with multissl.load_encoder") from None
    finally:
        tmp.unlink(missing_ok=True)
        side_tmp.unlink(missing_ok=True)
    return file


def run_onnx(file, feeds: dict) -> np.ndarray:
    """onnxruntime on CPU: {input name: tensor or array} -> the representation [b d]."""
    ort = require("onnxruntime", "running an ONNX export")
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT], {k: np.asarray(v) for k, v in feeds.items()})[0]
