"""Exact rewrites of the ONNX graphs tf2onnx makes from our TFLite models, so that onnxruntime runs them as fast
as the graphs PyTorch exports.

tf2onnx translates TFLite's NHWC graph op by op and cancels the layout Transposes it can. Five patterns survive
in our models that timm's ONNX graphs do not have, or that onnxruntime runs slower than timm's
(experiments/RESULTS.md, "Inference latency"):
- A zero Pad between the input and its NHWC -> NCHW Transpose into the stride-2 stem Conv: TFLite's CONV_2D
  pads only 'SAME'. onnxruntime fuses a Pad only into a Conv it feeds directly; in int8 the Pad runs in float32
  between a Dequantize and a Quantize of the whole input (MobileNetV2 int8, batch 32: 77 -> 69 ms).
- Squeeze-excite's global pool as Transpose (back to NHWC) -> ReduceSum -> Mul by 1/(H*W) -> Reshape to
  (N, C, 1, 1) -> Conv, and one more Reshape to the shape its input has before the second Conv: five ops where
  timm's graph has one ReduceMean (EfficientNet-B0: 65 of its 309 nodes).
- The NHWC input's Transpose to NCHW for the stem Conv (timm's graph takes NCHW): 1.4 ms of MobileNetV2's
  135 ms at batch 32. With 3 channels, (N, H, W, 3) is already the NCHW tensor (N, 1, H, 3W) of one channel,
  which the stem reads through a free Reshape, the kernel's channels interleaved along its width.
- Hard-sigmoid as Conv -> Clip(0, 6) -> Mul by 1/6 (squeeze-excite's gate in the MobileNetV3s): onnxruntime
  fuses the Clip into the Conv but runs the Mul on its own (1.6 ms of MobileNetV3-Large's 113 ms at batch 32),
  where timm's HardSigmoid fuses whole. The positive scale moves into the Conv and the Clip's bounds.
- Global pools as ReduceSum (the head's, and squeeze-excite's after the rewrites above): onnxruntime's blocked
  (NCHWc) layout has no ReduceSum, so the whole feature map is reordered out of it first (0.6 ms of the same
  batch); its GlobalAveragePool reads the blocked layout.
Every rewrite gives the same function: a Pad's zeros become the Conv's, a reduction reads the untransposed
tensor over the permuted axes, 1/(H*W) moves into the next Conv's kernel (and H*W back into it for an average
pool), a Reshape to its input's own shape is dropped, a kernel's taps are reordered as its input is, and a
positive scale after a Clip scales the Conv before it and the bounds: c * clip(z, a, b) = clip(c z, c a, c b).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where used: the export extras are optional
  import onnx

NCHW_SPATIAL = [2, 3]
NARROW_INPUT = 4  # channels (RGB, grayscale): fewer than onnxruntime's blocked layout holds, so it transposes


def simplified(model: onnx.ModelProto) -> onnx.ModelProto:
  """`model` (changed in place) with every rewrite of this module applied."""
  for rewrite in (input_pad_folded, reductions_untransposed, pool_scales_folded, pools_kept_4d,
                  shape_keeping_reshapes_dropped, few_channel_transposes_reshaped, spatial_sums_averaged,
                  clip_scales_folded):
    rewrite(model)
  return _unread_constants_dropped(model)


def _unread_constants_dropped(model: onnx.ModelProto) -> onnx.ModelProto:
  read = {name for node in model.graph.node for name in node.input}
  for tensor in [t for t in model.graph.initializer if t.name not in read]:
    model.graph.initializer.remove(tensor)
  return model


class _Graph:
  """Who reads and who writes each tensor of `model`'s graph, its constants and (where ONNX's shape inference
  knows them) its shapes; None for a dimension it does not know."""

  def __init__(self, model: onnx.ModelProto, shapes: bool = False):
    from onnx import numpy_helper, shape_inference
    self.graph = model.graph
    self.readers: dict[str, list] = {}
    for node in self.graph.node:
      for name in node.input:
        self.readers.setdefault(name, []).append(node)
    self.writer = {name: node for node in self.graph.node for name in node.output}
    self.constants = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
    self.shapes: dict[str, list] = {}
    if shapes:
      inferred = shape_inference.infer_shapes(model).graph
      for value in [*inferred.value_info, *inferred.input, *inferred.output]:
        self.shapes[value.name] = [d.dim_value if d.HasField('dim_value') else None
                                   for d in value.type.tensor_type.shape.dim]

  def only_reader(self, node, op_type: str):
    """The one node that reads `node`'s output, if it is an `op_type`; else None."""
    readers = self.readers.get(node.output[0], [])
    return readers[0] if len(readers) == 1 and readers[0].op_type == op_type else None

  def replace_constant(self, name: str, value: np.ndarray) -> None:
    from onnx import numpy_helper
    for tensor in self.graph.initializer:
      if tensor.name == name:
        tensor.CopyFrom(numpy_helper.from_array(value, name))

  def add_constant(self, name: str, value: np.ndarray) -> str:
    from onnx import numpy_helper
    self.graph.initializer.append(numpy_helper.from_array(value, name))
    return name

  def remove(self, node) -> None:
    """Removes `node`, and its constant inputs that nothing else reads."""
    self.graph.node.remove(node)
    read = {name for other in self.graph.node for name in other.input}
    for tensor in [t for t in self.graph.initializer if t.name in node.input and t.name not in read]:
      self.graph.initializer.remove(tensor)

  def bypass(self, node) -> None:
    """Removes `node`, whose output equals its first input: its readers read that input instead."""
    for reader in self.readers.get(node.output[0], []):
      reader.input[:] = [node.input[0] if name == node.output[0] else name for name in reader.input]
    self.remove(node)


def _attribute(node, name: str, default=None):
  from onnx import helper
  return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _set_attribute(node, name: str, value) -> None:
  from onnx import helper
  for old in [a for a in node.attribute if a.name == name]:
    node.attribute.remove(old)
  node.attribute.append(helper.make_attribute(name, value))


def input_pad_folded(model: onnx.ModelProto) -> onnx.ModelProto:
  """Each zero Pad that feeds a Transpose into a Conv (the stride-2 stem) folded into the Conv's `pads`."""
  g = _Graph(model)
  for pad in [node for node in g.graph.node if node.op_type == 'Pad']:
    transpose = g.only_reader(pad, 'Transpose')
    conv = transpose and g.only_reader(transpose, 'Conv')
    if conv is None or conv.input[0] != transpose.output[0] or pad.input[1] not in g.constants:
      continue
    value = g.constants.get(pad.input[2], 0) if len(pad.input) > 2 and pad.input[2] else 0
    perm = list(_attribute(transpose, 'perm'))
    pads = g.constants[pad.input[1]]
    before, after = pads[:len(perm)][perm], pads[len(perm):][perm]  # in the Conv's (NCHW) axis order
    if (_attribute(pad, 'mode', b'constant') != b'constant' or np.any(value != 0) or np.any(before[:2])
        or np.any(after[:2]) or _attribute(conv, 'auto_pad', b'NOTSET') != b'NOTSET'):
      continue
    old = _attribute(conv, 'pads', [0] * 2 * (len(perm) - 2))
    _set_attribute(conv, 'pads', [int(p) for p in np.asarray(old) + np.concatenate([before[2:], after[2:]])])
    g.bypass(pad)
  return model


def reductions_untransposed(model: onnx.ModelProto) -> onnx.ModelProto:
  """Each ReduceSum (keepdims 0) of a Transpose that nothing else reads takes the Transpose's input over the
  permuted axes instead, where the axes it keeps stay in the same order (NCHW -> NHWC, then a sum over H, W)."""
  g = _Graph(model)
  for reduce in [node for node in g.graph.node if node.op_type == 'ReduceSum']:
    transpose = g.writer.get(reduce.input[0])
    if (transpose is None or transpose.op_type != 'Transpose' or g.only_reader(transpose, 'ReduceSum') is None
        or _attribute(reduce, 'keepdims', 1) != 0 or len(reduce.input) < 2 or reduce.input[1] not in g.constants):
      continue
    perm = list(_attribute(transpose, 'perm'))
    axes = sorted(perm[axis] for axis in g.constants[reduce.input[1]])
    kept = [axis for axis in perm if axis not in axes]
    if kept != sorted(kept):
      continue
    reduce.input[1] = g.add_constant(f'{reduce.output[0]}/axes', np.array(axes, np.int64))
    g.bypass(transpose)
  return model


def pool_scales_folded(model: onnx.ModelProto) -> onnx.ModelProto:
  """Each Mul by a constant scalar, read only through a Reshape by an ungrouped Conv whose kernel nothing else
  reads, folded into that kernel: conv(s * x) = conv_{s * kernel}(x), the bias unchanged."""
  g = _Graph(model)
  for mul in [node for node in g.graph.node if node.op_type == 'Mul']:
    scalars = [name for name in mul.input if name in g.constants and g.constants[name].size == 1]
    reshape = g.only_reader(mul, 'Reshape')
    conv = reshape and g.only_reader(reshape, 'Conv')
    if (not scalars or conv is None or conv.input[0] != reshape.output[0] or _attribute(conv, 'group', 1) != 1
        or conv.input[1] not in g.constants or len(g.readers[conv.input[1]]) != 1):
      continue
    kernel = g.constants[conv.input[1]]
    g.replace_constant(conv.input[1], (kernel * g.constants[scalars[0]].reshape(())).astype(kernel.dtype))
    mul.input[:] = [name for name in mul.input if name != scalars[0]]  # the other factor, for bypass()
    g.bypass(mul)
  return model


def pools_kept_4d(model: onnx.ModelProto) -> onnx.ModelProto:
  """Each ReduceSum of an (N, C, H, W) tensor over H and W (keepdims 0) read only by a Reshape to (N, C, 1, 1)
  keeps its dimensions instead, which leaves the Reshape keeping the shape."""
  g = _Graph(model, shapes=True)
  for reduce in [node for node in g.graph.node if node.op_type == 'ReduceSum']:
    source, reshape = g.shapes.get(reduce.input[0]), g.only_reader(reduce, 'Reshape')
    axes = g.constants.get(reduce.input[1]) if len(reduce.input) > 1 else None
    if (reshape is None or _attribute(reduce, 'keepdims', 1) != 0 or not source or len(source) != 4
        or axes is None or list(axes) != NCHW_SPATIAL):
      continue
    if _reshapes_to(g, reshape, [source[0], source[1], 1, 1]):
      _set_attribute(reduce, 'keepdims', 1)
  return model


def shape_keeping_reshapes_dropped(model: onnx.ModelProto) -> onnx.ModelProto:
  """Each Reshape to the shape its input already has, dropped."""
  g = _Graph(model, shapes=True)
  outputs = {value.name for value in g.graph.output}
  for reshape in [node for node in g.graph.node if node.op_type == 'Reshape']:
    if reshape.output[0] not in outputs and _reshapes_to(g, reshape, g.shapes.get(reshape.input[0])):
      g.bypass(reshape)
  return model


def _reshapes_to(g: _Graph, reshape, shape: list | None) -> bool:
  """Whether `reshape`'s constant target is `shape` (the batch, if unknown, as -1 or 0), every other
  dimension known."""
  target = g.constants.get(reshape.input[1])
  if not shape or target is None or len(target) != len(shape) or None in shape[1:]:
    return False
  batch = target[0] in (-1, 0) or target[0] == shape[0]
  return batch and list(target[1:]) == list(shape[1:]) and _attribute(reshape, 'allowzero', 0) == 0


def few_channel_transposes_reshaped(model: onnx.ModelProto) -> onnx.ModelProto:
  """Each NHWC -> NCHW Transpose of a tensor of at most NARROW_INPUT channels (H, W, C known) read only by
  an ungrouped, undilated Conv whose kernel nothing else reads, replaced by a Reshape to (N, 1, H, W * C): the
  Conv reads each pixel's C values as C adjacent columns, with a (KH, KW * C) kernel and C times the width's
  stride and padding."""
  g = _Graph(model, shapes=True)
  for transpose in [node for node in g.graph.node if node.op_type == 'Transpose']:
    conv, shape = g.only_reader(transpose, 'Conv'), g.shapes.get(transpose.input[0])
    if (conv is None or conv.input[0] != transpose.output[0] or list(_attribute(transpose, 'perm')) != [0, 3, 1, 2]
        or not shape or None in shape[1:] or shape[3] > NARROW_INPUT or _attribute(conv, 'group', 1) != 1
        or any(d != 1 for d in _attribute(conv, 'dilations', [1, 1]))
        or _attribute(conv, 'auto_pad', b'NOTSET') != b'NOTSET' or conv.input[1] not in g.constants
        or len(g.readers[conv.input[1]]) != 1):
      continue
    _, height, width, channels = shape
    kernel = g.constants[conv.input[1]]
    out, _, kernel_h, kernel_w = kernel.shape
    g.replace_constant(conv.input[1], np.ascontiguousarray(  # [o, 0, kh, kw * C + c] = [o, c, kh, kw]
        kernel.transpose(0, 2, 3, 1).reshape(out, 1, kernel_h, kernel_w * channels)))
    stride_h, stride_w = _attribute(conv, 'strides', [1, 1])
    top, left, bottom, right = _attribute(conv, 'pads', [0, 0, 0, 0])
    _set_attribute(conv, 'kernel_shape', [kernel_h, kernel_w * channels])
    _set_attribute(conv, 'strides', [stride_h, stride_w * channels])
    _set_attribute(conv, 'pads', [top, left * channels, bottom, right * channels])
    transpose.op_type = 'Reshape'
    del transpose.attribute[:]
    transpose.input.append(g.add_constant(f'{transpose.output[0]}/shape',
                                          np.array([-1, 1, height, width * channels], np.int64)))
  return model


def spatial_sums_averaged(model: onnx.ModelProto) -> onnx.ModelProto:
  """Each ReduceSum over H and W of an (N, C, H, W) tensor (H, W known) read only by a constant-weight layer
  whose weights nothing else reads, made a GlobalAveragePool, with H * W moved into those weights: a Conv
  (keepdims 1; squeeze-excite) or a MatMul (keepdims 0, through a Flatten; the classifier)."""
  from onnx import helper
  g = _Graph(model, shapes=True)
  for reduce in [node for node in g.graph.node if node.op_type == 'ReduceSum']:
    shape = g.shapes.get(reduce.input[0])
    axes = g.constants.get(reduce.input[1]) if len(reduce.input) > 1 else None
    keepdims = _attribute(reduce, 'keepdims', 1)
    layer = g.only_reader(reduce, 'Conv' if keepdims else 'MatMul')
    if (layer is None or layer.input[0] != reduce.output[0] or axes is None or list(axes) != NCHW_SPATIAL
        or not shape or len(shape) != 4 or None in shape[2:] or layer.input[1] not in g.constants
        or len(g.readers[layer.input[1]]) != 1):
      continue
    weights = g.constants[layer.input[1]]
    g.replace_constant(layer.input[1], (weights * (shape[2] * shape[3])).astype(weights.dtype))
    if keepdims:
      nodes = [helper.make_node('GlobalAveragePool', [reduce.input[0]], [reduce.output[0]])]
    else:
      nodes = [helper.make_node('GlobalAveragePool', [reduce.input[0]], [f'{reduce.output[0]}/pooled']),
               helper.make_node('Flatten', [f'{reduce.output[0]}/pooled'], [reduce.output[0]], axis=1)]
    index = list(g.graph.node).index(reduce)
    for offset, node in enumerate(nodes):
      g.graph.node.insert(index + offset, node)
    g.remove(reduce)
  return model


def clip_scales_folded(model: onnx.ModelProto) -> onnx.ModelProto:
  """Each Mul by a positive constant scalar c of a Clip with constant bounds of a Conv with constant weights
  (each the only reader of the one before) folded into the Conv's kernel and bias and the Clip's bounds:
  c * clip(conv(x), a, b) = clip(conv_{c * kernel, c * bias}(x), c * a, c * b)."""
  g = _Graph(model)
  for mul in [node for node in g.graph.node if node.op_type == 'Mul']:
    scalars = [name for name in mul.input if name in g.constants and g.constants[name].size == 1]
    clip = g.writer.get(next(name for name in mul.input if name not in scalars)) if len(scalars) == 1 else None
    conv = g.writer.get(clip.input[0]) if clip is not None and clip.op_type == 'Clip' else None
    if (conv is None or conv.op_type != 'Conv' or g.only_reader(conv, 'Clip') is not clip
        or g.only_reader(clip, 'Mul') is not mul or len(clip.input) != 3
        or not all(name in g.constants for name in [*clip.input[1:], *conv.input[1:]])
        or not g.constants[scalars[0]].reshape(()) > 0):
      continue
    scale = g.constants[scalars[0]].reshape(())
    # Scaled copies: tf2onnx shares equal constants (biases, the Clips' bounds) between layers.
    for node, roles in ((conv, ('kernel', 'bias')), (clip, ('min', 'max'))):
      node.input[1:] = [g.add_constant(f'{node.output[0]}/{role}', (g.constants[name] * scale).astype(
          g.constants[name].dtype)) for role, name in zip(roles, node.input[1:])]
    mul.input[:] = [clip.output[0]]  # for bypass()
    g.bypass(mul)
  return model
