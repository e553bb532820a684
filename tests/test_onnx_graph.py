"""lightcls.onnx_graph: each rewrite of tf2onnx's graphs on a hand-built graph of the pattern as tf2onnx writes it,
with onnxruntime's outputs before and after (equal to float32 rounding), and the patterns it must leave alone."""
import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import helper, numpy_helper

from lightcls import export, onnx_graph


def _model(nodes: list, shape: list, constants: dict) -> onnx.ModelProto:
  graph = helper.make_graph(
      nodes, 'g', [helper.make_tensor_value_info('images', onnx.TensorProto.FLOAT, shape)],
      [helper.make_tensor_value_info('out', onnx.TensorProto.FLOAT, [None] * 4)],
      [numpy_helper.from_array(np.asarray(value), name) for name, value in constants.items()])
  return helper.make_model(graph, opset_imports=[helper.make_opsetid('', export.ONNX_OPSET)])


def _outputs(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
  session = onnxruntime.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])
  return session.run(None, {'images': images})[0]


def _rewritten_agrees(model: onnx.ModelProto, images: np.ndarray) -> list[str]:
  """The op types of `model` simplified, after checking that it computes what it did."""
  want = _outputs(model, images)
  simplified = onnx_graph.simplified(model)
  onnx.checker.check_model(simplified)
  np.testing.assert_allclose(_outputs(simplified, images), want, rtol=1e-5, atol=1e-6)
  return [node.op_type for node in simplified.graph.node]


@pytest.mark.parametrize('conv_pads, pad_value', [(None, 0.0), ([0, 1, 1, 0], 0.0), (None, 0.5)])
def test_an_input_pad_before_the_layout_transpose_is_folded_into_the_convolution(conv_pads, pad_value):
  """A stride-2 stem with symmetric padding: Pad (NHWC) -> Transpose -> Conv. A zero pad becomes the Conv's
  own padding, added to any it had; a non-zero one stays."""
  rng = np.random.default_rng(0)
  constants = {'pads': np.array([0, 1, 2, 0, 0, 2, 1, 0], np.int64), 'value': np.float32(pad_value),
               'kernel': rng.standard_normal((4, 3, 3, 3)).astype(np.float32)}
  conv = {'strides': [2, 2]} | ({'pads': conv_pads} if conv_pads else {})
  model = _model([helper.make_node('Pad', ['images', 'pads', 'value'], ['padded']),
                  helper.make_node('Transpose', ['padded'], ['nchw'], perm=[0, 3, 1, 2]),
                  helper.make_node('Conv', ['nchw', 'kernel'], ['out'], **conv)], [2, 9, 10, 3], constants)
  ops = _rewritten_agrees(model, rng.standard_normal((2, 9, 10, 3)).astype(np.float32))
  assert ops == (['Pad'] if pad_value else []) + ['Transpose', 'Conv']


@pytest.mark.parametrize('batch', [2, None])
def test_squeeze_excite_pooling_becomes_one_reduction(batch):
  """Squeeze-excite as tf2onnx writes it from TFLite: Transpose back to NHWC -> ReduceSum over H, W -> Mul by
  1/(H*W) -> Reshape -> Conv -> Relu -> Reshape (to its own shape) -> Conv -> Sigmoid -> Mul with the input.
  What is left is the one ReduceSum (keeping its dimensions) and the ops that compute."""
  rng = np.random.default_rng(0)
  target = -1 if batch is None else batch
  constants = {'axes': np.array([1, 2], np.int64), 'scale': np.float32(1 / 35),
               'pooled_shape': np.array([target, 6, 1, 1], np.int64),
               'reduced_shape': np.array([target, 3, 1, 1], np.int64),
               'w1': rng.standard_normal((3, 6, 1, 1)).astype(np.float32), 'b1': np.ones(3, np.float32),
               'w2': rng.standard_normal((6, 3, 1, 1)).astype(np.float32), 'b2': np.zeros(6, np.float32)}
  model = _model([
      helper.make_node('Transpose', ['images'], ['nhwc'], perm=[0, 2, 3, 1]),
      helper.make_node('ReduceSum', ['nhwc', 'axes'], ['sum'], keepdims=0),
      helper.make_node('Mul', ['sum', 'scale'], ['mean']),
      helper.make_node('Reshape', ['mean', 'pooled_shape'], ['pooled']),
      helper.make_node('Conv', ['pooled', 'w1', 'b1'], ['reduced']),
      helper.make_node('Relu', ['reduced'], ['relu']),
      helper.make_node('Reshape', ['relu', 'reduced_shape'], ['relu_4d']),
      helper.make_node('Conv', ['relu_4d', 'w2', 'b2'], ['expanded']),
      helper.make_node('Sigmoid', ['expanded'], ['gate']),
      helper.make_node('Mul', ['images', 'gate'], ['out'])], [batch, 6, 5, 7], constants)
  ops = _rewritten_agrees(model, rng.standard_normal((2, 6, 5, 7)).astype(np.float32))
  assert ops == ['ReduceSum', 'Conv', 'Relu', 'Conv', 'Sigmoid', 'Mul']


def test_a_transposed_reduction_whose_kept_axes_would_reorder_and_a_shared_kernel_stay():
  """Untransposing a sum that keeps (C, W) of an NHWC -> NCWH transpose would change its output's axis order;
  a kernel that another Conv reads cannot take the scale."""
  rng = np.random.default_rng(0)
  constants = {'axes': np.array([2], np.int64), 'scale': np.float32(0.5), 'shape': np.array([2, 3, 4, 1], np.int64),
               'kernel': rng.standard_normal((3, 3, 1, 1)).astype(np.float32)}
  model = _model([
      helper.make_node('Transpose', ['images'], ['t'], perm=[0, 3, 2, 1]),
      helper.make_node('ReduceSum', ['t', 'axes'], ['sum'], keepdims=0),
      helper.make_node('Mul', ['sum', 'scale'], ['scaled']),
      helper.make_node('Reshape', ['scaled', 'shape'], ['r']),
      helper.make_node('Conv', ['r', 'kernel'], ['c1']),
      helper.make_node('Conv', ['c1', 'kernel'], ['out'])], [2, 4, 5, 3], constants)
  ops = _rewritten_agrees(model, rng.standard_normal((2, 4, 5, 3)).astype(np.float32))
  assert ops == ['Transpose', 'ReduceSum', 'Mul', 'Reshape', 'Conv', 'Conv']
