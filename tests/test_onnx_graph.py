"""lightcls.onnx_graph: each rewrite of tf2onnx's graphs on a hand-built graph of the pattern as tf2onnx writes it,
with onnxruntime's outputs before and after (equal to float32 rounding), and the patterns it must leave alone."""
import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import helper, numpy_helper

from lightcls import export, onnx_graph


def _model(nodes: list, shape: list, constants: dict, out_rank: int = 4) -> onnx.ModelProto:
  graph = helper.make_graph(
      nodes, 'g', [helper.make_tensor_value_info('images', onnx.TensorProto.FLOAT, shape)],
      [helper.make_tensor_value_info('out', onnx.TensorProto.FLOAT, [None] * out_rank)],
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
  assert ops == (['Pad'] if pad_value else []) + ['Reshape', 'Conv']


@pytest.mark.parametrize('batch', [2, None])
def test_squeeze_excite_pooling_becomes_one_reduction(batch):
  """Squeeze-excite as tf2onnx writes it from TFLite: Transpose back to NHWC -> ReduceSum over H, W -> Mul by
  1/(H*W) -> Reshape -> Conv -> Relu -> Reshape (to its own shape) -> Conv -> Sigmoid -> Mul with the input.
  What is left is one GlobalAveragePool (H * W in the first Conv's kernel) and the ops that compute."""
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
  assert ops == ['GlobalAveragePool', 'Conv', 'Relu', 'Conv', 'Sigmoid', 'Mul']


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


@pytest.mark.parametrize('channels, kernel, strides, pads', [
    (3, 3, [2, 2], [0, 0, 1, 1]),  # 'SAME' at stride 2, as TFLite pads: MobileNetV2's stem
    (3, 3, [2, 2], [1, 1, 1, 1]),  # symmetric
    (1, 5, [1, 2], [2, 1, 0, 2]),  # grayscale, uneven strides and pads
    (4, 2, [1, 1], [0, 0, 0, 0])])
def test_a_few_channel_input_transpose_becomes_a_reshape_into_one_channel(channels, kernel, strides, pads):
  """The stem reads the NHWC input (N, H, W, C) as the one-channel NCHW image (N, 1, H, W * C): no Transpose.
  Odd sizes, and a dynamic batch."""
  rng = np.random.default_rng(0)
  constants = {'kernel': rng.standard_normal((8, channels, kernel, kernel)).astype(np.float32),
               'bias': rng.standard_normal(8).astype(np.float32)}
  model = _model([helper.make_node('Transpose', ['images'], ['nchw'], perm=[0, 3, 1, 2]),
                  helper.make_node('Conv', ['nchw', 'kernel', 'bias'], ['out'], strides=strides, pads=pads)],
                 [None, 11, 13, channels], constants)
  ops = _rewritten_agrees(model, rng.standard_normal((3, 11, 13, channels)).astype(np.float32))
  assert ops == ['Reshape', 'Conv']


@pytest.mark.parametrize('case', ['eight channels', 'grouped', 'dilated', 'shared kernel'])
def test_input_transposes_that_a_reshape_cannot_replace_stay(case):
  """Eight channels (onnxruntime's blocked layout takes those), a grouped or dilated Conv (its taps do not
  interleave so), a kernel another Conv also reads (it cannot change)."""
  rng = np.random.default_rng(0)
  channels = 8 if case == 'eight channels' else 2
  group = 2 if case == 'grouped' else 1
  constants = {'kernel': rng.standard_normal((4, channels // group, 3, 3)).astype(np.float32)}
  nodes = [helper.make_node('Transpose', ['images'], ['nchw'], perm=[0, 3, 1, 2]),
           helper.make_node('Conv', ['nchw', 'kernel'], ['c'], group=group,
                            dilations=[2, 2] if case == 'dilated' else [1, 1])]
  if case == 'shared kernel':
    constants['k2'] = rng.standard_normal((channels, 4, 1, 1)).astype(np.float32)
    nodes += [helper.make_node('Conv', ['c', 'k2'], ['c2']), helper.make_node('Conv', ['c2', 'kernel'], ['out'])]
  else:
    nodes[-1].output[0] = 'out'
  model = _model(nodes, [2, 9, 10, channels], constants)
  ops = _rewritten_agrees(model, rng.standard_normal((2, 9, 10, channels)).astype(np.float32))
  assert ops[:2] == ['Transpose', 'Conv']


@pytest.mark.parametrize('batch', [2, None])
def test_the_head_sum_before_the_classifier_becomes_a_global_average_pool(batch):
  """The head as tf2onnx writes it (TFLite folded the mean's 1/(H*W) into the classifier): ReduceSum over
  H, W -> MatMul -> Softmax. It becomes GlobalAveragePool -> Flatten, H * W in the classifier's weights."""
  rng = np.random.default_rng(0)
  constants = {'axes': np.array([2, 3], np.int64), 'weights': rng.standard_normal((6, 4)).astype(np.float32) / 35}
  model = _model([helper.make_node('ReduceSum', ['images', 'axes'], ['sum'], keepdims=0),
                  helper.make_node('MatMul', ['sum', 'weights'], ['logits']),
                  helper.make_node('Softmax', ['logits'], ['out'])], [batch, 6, 5, 7], constants, out_rank=2)
  ops = _rewritten_agrees(model, rng.standard_normal((2, 6, 5, 7)).astype(np.float32))
  assert ops == ['GlobalAveragePool', 'Flatten', 'MatMul', 'Softmax']


def test_sums_over_unknown_sizes_or_into_shared_weights_stay():
  """A sum over spatial sizes unknown when exporting has no H * W to move; weights two layers read cannot
  take it."""
  rng = np.random.default_rng(0)
  constants = {'axes': np.array([2, 3], np.int64), 'weights': rng.standard_normal((6, 6)).astype(np.float32)}
  nodes = [helper.make_node('ReduceSum', ['images', 'axes'], ['sum'], keepdims=0),
           helper.make_node('MatMul', ['sum', 'weights'], ['hidden']),
           helper.make_node('MatMul', ['hidden', 'weights'], ['out'])]
  for shape in ([2, 6, None, None], [2, 6, 5, 7]):
    images = rng.standard_normal((2, 6, 5, 7)).astype(np.float32)
    ops = _rewritten_agrees(_model(nodes, shape, constants, out_rank=2), images)
    assert ops == ['ReduceSum', 'MatMul', 'MatMul']


@pytest.mark.parametrize('scale', [1 / 6, -0.5])
def test_a_positive_scale_after_a_clipped_convolution_moves_into_it(scale):
  """Squeeze-excite's hard-sigmoid gate as tf2onnx writes it: Conv -> Clip(0, 6) -> Mul by 1/6 -> Mul with the
  input. The 1/6 moves into the Conv and the Clip's bounds; a negative scale (it would swap them) stays."""
  rng = np.random.default_rng(0)
  constants = {'kernel': rng.standard_normal((6, 6, 1, 1)).astype(np.float32),
               'bias': np.full(6, 3, np.float32), 'low': np.float32(0), 'high': np.float32(6),
               'scale': np.float32(scale)}
  model = _model([helper.make_node('GlobalAveragePool', ['images'], ['pooled']),
                  helper.make_node('Conv', ['pooled', 'kernel', 'bias'], ['z']),
                  helper.make_node('Clip', ['z', 'low', 'high'], ['clipped']),
                  helper.make_node('Mul', ['scale', 'clipped'], ['gate']),
                  helper.make_node('Mul', ['images', 'gate'], ['out'])], [2, 6, 5, 7], constants)
  ops = _rewritten_agrees(model, rng.standard_normal((2, 6, 5, 7)).astype(np.float32))
  assert ops == ['GlobalAveragePool', 'Conv', 'Clip'] + (['Mul'] if scale < 0 else []) + ['Mul']
  assert {t.name for t in model.graph.initializer} == {name for node in model.graph.node for name in node.input
                                                        if name not in ('images', 'pooled', 'z', 'clipped', 'gate')}
