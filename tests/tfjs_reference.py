"""Run a TensorFlow.js graph model as the original graph, in TensorFlow: the reference the
Keras port is checked against. TensorFlow executes the graph's own ops (folded BatchNorm,
_FusedMatMul), so nothing of the port is reused here."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from google.protobuf import json_format

from agegender.models import tfjs_graph


def run_graph(json_path, images: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    """The graph's `outputs` (tensor names such as "global_pooling/Mean:0") for float images."""
    nodes, tensors = tfjs_graph.read(json_path)
    graph_def = json_format.ParseDict({"node": list(nodes.values())}, tf.compat.v1.GraphDef())
    for node in graph_def.node:
        if node.op == "Const" and node.name in tensors:
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(tensors[node.name]))
        if node.op == "Placeholder":  # any batch and image size, like the port
            node.attr["shape"].shape.CopyFrom(tf.TensorShape([None, None, None, 3]).as_proto())

    def body(x):
        return tf.graph_util.import_graph_def(
            graph_def, input_map={"input_1:0": x}, return_elements=outputs
        )

    function = tf.compat.v1.wrap_function(body, [tf.TensorSpec([None, None, None, 3], tf.float32)])
    return [np.asarray(t) for t in function(tf.constant(images, tf.float32))]
