"""Small ONNX graphs built with onnx.helper for the structural cases of cutting a model."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR = 10  # onnx 1.23 stamps 14; ORT 1.31 reads up to 13


def make(nodes, inputs, outputs, inits=(), opset=17, name="g") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR
    onnx.checker.check_model(model)
    return model


def vi(name: str, shape, dtype=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def weight(name: str, shape, seed: int = 0) -> onnx.TensorProto:
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def skip_model() -> onnx.ModelProto:
    """x -> a -> b -> c, and y = c + a: `a` must cross every cut between a and the Add."""
    return make(
        [
            helper.make_node("MatMul", ["x", "W1"], ["a"], name="mm1"),
            helper.make_node("Relu", ["a"], ["b"], name="relu"),
            helper.make_node("MatMul", ["b", "W2"], ["c"], name="mm2"),
            helper.make_node("Add", ["c", "a"], ["y"], name="add"),
        ],
        [vi("x", ["batch", 8])],
        [vi("y", ["batch", 8])],
        [weight("W1", (8, 8), 1), weight("W2", (8, 8), 2)],
    )


def reused_input_model() -> onnx.ModelProto:
    """The graph input `mask` is read at the start and again at the end."""
    return make(
        [
            helper.make_node("Mul", ["x", "mask"], ["a"], name="m1"),
            helper.make_node("Tanh", ["a"], ["b"], name="t"),
            helper.make_node("Sigmoid", ["b"], ["c"], name="s"),
            helper.make_node("Mul", ["c", "mask"], ["y"], name="m2"),
        ],
        [vi("x", ["batch", 4]), vi("mask", ["batch", 4])],
        [vi("y", ["batch", 4])],
    )


def shared_init_model() -> onnx.ModelProto:
    """The same weight W is used by the first and the last node."""
    return make(
        [
            helper.make_node("MatMul", ["x", "W"], ["a"], name="mm1"),
            helper.make_node("Relu", ["a"], ["b"], name="r1"),
            helper.make_node("Tanh", ["b"], ["c"], name="t1"),
            helper.make_node("MatMul", ["c", "W"], ["y"], name="mm2"),
        ],
        [vi("x", ["batch", 16])],
        [vi("y", ["batch", 16])],
        [weight("W", (16, 16), 3)],
    )


def if_model() -> onnx.ModelProto:
    """An If whose branches read `h` and `W` from the outer scope, not as node inputs."""
    then_g = helper.make_graph(
        [helper.make_node("MatMul", ["h", "W"], ["then_out"])], "then", [],
        [vi("then_out", ["batch", 6])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["h"], ["else_out"])], "else", [], [vi("else_out", ["batch", 6])]
    )
    return make(
        [
            helper.make_node("Relu", ["x"], ["h"], name="relu"),
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
            helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
            helper.make_node("If", ["cond"], ["z"], then_branch=then_g, else_branch=else_g,
                             name="if"),
            helper.make_node("Sigmoid", ["z"], ["y"], name="sig"),
        ],
        [vi("x", ["batch", 6])],
        [vi("y", ["batch", 6])],
        [weight("W", (6, 6), 4), numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
    )
