"""Export a trained run for phones and CPUs: TFLite (LiteRT), ONNX, or a TensorFlow SavedModel.

  python -m lightcls.export --workdir=runs/x --format=tflite [--quantize=int8] [--raw_input] [--batch=0]

The exported model is the run's best checkpoint (or `--step`), in evaluation mode, with each convolution's
BatchNorm folded into its kernel, ending in a softmax: its output is class probabilities in the order of
labels.txt. Its input is normalised float32 pixels (N, H, W, C), or with `--raw_input` uint8 RGB pixels
of `--input_size` that it resizes (as evaluation does) and normalises itself, so an app can feed camera
frames. Paths:
  tflite: jax2tf -> TFLiteConverter (float16 weights, or int8 calibrated on training images); run by LiteRT
  onnx: the float32 TFLite model through tf2onnx; float16, or int8 (QDQ, calibrated on training images) by
        onnxruntime's tools
  savedmodel: jax2tf -> tf.saved_model (float32)
Every export checks itself before it is kept: its outputs on real validation images against the JAX
model's (max |difference| of the probabilities, top-1 agreement, top-1 accuracy of both). Above the
tolerance the export fails and nothing is written. Each export is one folder, `<workdir>/export/<name>/`,
holding the model, labels.txt and model_card.json (architecture, input, normalisation, params, MACs,
validation top-1, the check's results). Defaults come from the run's `config.export` section.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging

import lightcls
from lightcls import checkpoint, cli, config_utils, models, onnx_graph, steps
from lightcls.data import pipeline, sources
from lightcls.models import convert, convolutions, layers, mutual

FORMATS = ('tflite', 'onnx', 'savedmodel')
QUANTIZATIONS = ('float32', 'float16', 'int8')
DEFAULT_TOLERANCE = {'float32': 1e-3, 'float16': 2e-2}
MODEL_FILES = {'tflite': 'model.tflite', 'onnx': 'model.onnx', 'savedmodel': 'saved_model'}
ONNX_OPSET = 17
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert('L') that grayscale runs were trained through


def check(export: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for an export section that cannot work; cheap (nothing loaded)."""
  for name in export.formats:
    config_utils.choice('export.formats', name, FORMATS)
  config_utils.choice('export.quantize', export.quantize, QUANTIZATIONS)
  if export.batch < 0:
    raise config_utils.ConfigError(f'config.export.batch must be >= 1, or 0 for any batch; got {export.batch}.')
  if export.quantize != 'float32' and 'savedmodel' in export.formats:
    raise config_utils.ConfigError(f'config.export.quantize={export.quantize!r}: a SavedModel is float32 only; '
                                   'quantize the tflite or onnx export instead.')
  if export.input_size is not None and (len(export.input_size) != 2 or min(export.input_size) < 1):
    raise config_utils.ConfigError(f'config.export.input_size must be (height, width); got {export.input_size}.')
  if export.input_size is not None and not export.raw_input:
    raise config_utils.ConfigError('config.export.input_size is the size of raw camera pixels; it needs '
                                   'config.export.raw_input=True.')
  config_utils.positive('export.verify_images', export.verify_images)
  if export.quantize == 'int8':
    config_utils.positive('export.calibration_images', export.calibration_images)
    if export.batch > export.calibration_images:
      raise config_utils.ConfigError(f'config.export.calibration_images={export.calibration_images} is less than '
                                     f'one batch of the int8 model (config.export.batch={export.batch}); raise it.')


@dataclasses.dataclass(frozen=True)
class Run:
  """A trained run's model for inference: BatchNorm folded, XLA's convolutions (what exporters know)."""
  workdir: str
  config: ml_collections.ConfigDict
  class_names: tuple[str, ...]
  image_shape: tuple[int, int, int]
  model: nn.Module
  variables: dict[str, Any]
  params: int
  step: int
  top1: float | None
  weights: str  # 'model' or 'ema'

  def apply(self, images: jax.Array) -> jax.Array:
    """Class probabilities of normalised float32 images."""
    scale = steps.logit_scales(self.config, len(self.class_names))[0]
    return jax.nn.softmax(scale * self.model.apply(self.variables, images).astype(jnp.float32))


def run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with (config.json), with today's defaults for sections it predates."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{workdir} holds no config.json: is it the --workdir of a lightcls training run?')
  from configs import default
  with open(path) as f:
    saved = json.load(f)
  config = default.get_config()
  for section, values in saved.items():
    if isinstance(values, dict) and section in config:
      config[section].update({k: tuple(v) if isinstance(v, list) else v for k, v in values.items()
                              if k in config[section]})
    elif section in config:
      config[section] = values
  return config


def _class_names(workdir: str) -> tuple[str, ...]:
  with open(os.path.join(workdir, 'data_report.json')) as f:
    return tuple(json.load(f)['class_names'])


def _image_shape(model: nn.Module, variables: dict[str, Any], size: int) -> tuple[int, int, int]:
  """(size, size, channels): the channel count (1 or 3) whose parameter shapes are the checkpoint's."""
  want = jax.tree.map(np.shape, variables['params'])
  for channels in (3, 1):
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, channels)))
    if jax.tree.map(np.shape, shapes['params']) == want:
      return size, size, channels
  raise ValueError(f'the checkpoint does not fit {model.__class__.__name__} at {size}x{size} px with 1 or 3 '
                   'channels: was config.json edited after training?')


def read_run(workdir: str, step: int | None = None, ema: bool = False, conv_impl: str = 'xla') -> Run:
  """The run in `workdir` at checkpoint `step` (None: the best), as a model for inference. Of a
  mutual-learning run, its model (member 0); with `ema`, the moving average of the weights. `conv_impl`
  'xla' (XLA's convolutions, which exporters convert), or 'auto' to run it fast in JAX."""
  config = run_config(workdir)
  state, meta, step = checkpoint.read(workdir, step)
  if ema and not state.get('ema'):
    raise ValueError(f'{workdir} keeps no moving average of the weights (config.optimizer.ema_decay was 0); '
                     'export the weights themselves (drop --ema).')
  source = state['ema'] if ema else state
  variables = {'params': source['params'], 'batch_stats': source['batch_stats']}
  if mutual.is_pair(variables['params']):
    variables = mutual.member_variables(variables, 0)
  class_names = _class_names(workdir)
  model = models.create_model(config.model, len(class_names))
  image_shape = _image_shape(model, variables, config.data.image_size)
  inference = model.clone(layer=dataclasses.replace(model.layer, conv_impl=conv_impl, dtype='float32',
                                                    fold_batch_norm=True))
  top1 = meta.get('last_eval', {}).get('eval_ema/top1' if ema else 'eval/top1')
  return Run(workdir, config, class_names, image_shape, inference,
             layers.folded_batch_norm(variables, config.model.bn_eps),
             sum(np.size(x) for x in jax.tree.leaves(variables['params'])), step, top1, 'ema' if ema else 'model')


def resize_matrix(source: int, target: int) -> np.ndarray:
  """(target, source) weights of PIL's bilinear resize along one axis: a triangle filter whose support
  widens with the reduction (antialiasing), normalised per output pixel. Applied to both axes it is
  the evaluation pipeline's resize (pipeline.resized) up to PIL's 8-bit rounding."""
  scale = source / target
  support = max(scale, 1.0)
  centers = (np.arange(target) + 0.5) * scale
  positions = np.arange(source) + 0.5
  weights = np.maximum(0.0, 1.0 - np.abs(positions[None, :] - centers[:, None]) / support)
  return (weights / weights.sum(1, keepdims=True)).astype(np.float32)


def _times_last_axis(x: jax.Array, matrix: np.ndarray) -> jax.Array:
  """x @ matrix for a rank-4 x, as a 1x1 convolution: a matmul becomes a reshape and a FULLY_CONNECTED in
  TFLite, whose reshape tf2onnx gets wrong when the batch is dynamic; a convolution needs no reshape."""
  return convolutions.pointwise_conv(x, jnp.asarray(matrix)[None, None], 'xla')


def _center_square(x: jax.Array) -> jax.Array:
  height, width = x.shape[1:3]
  side = min(height, width)
  top, left = (height - side) // 2, (width - side) // 2
  return x[:, top:top + side, left:left + side]


def raw_preprocessing(run: Run, input_size: tuple[int, int]) -> Callable[[jax.Array], jax.Array]:
  """uint8 RGB (N, height, width, 3) -> the model's normalised input, as evaluation prepares it: grayscale
  (if the model is), the evaluation's resize (stretch, or the central square for center_crop)."""
  size, _, channels = run.image_shape
  mean, std = np.asarray(run.config.data.mean, np.float32), np.asarray(run.config.data.std, np.float32)
  crop = run.config.data.eval_resize == 'center_crop' and input_size[0] != input_size[1]
  side = min(input_size) if crop else None
  rows = resize_matrix(side or input_size[0], size)
  columns = resize_matrix(side or input_size[1], size)

  def preprocess(pixels: jax.Array) -> jax.Array:
    x = pixels.astype(jnp.float32)
    if channels == 1:
      x = _times_last_axis(x, np.asarray(LUMA, np.float32)[:, None])
    if crop:
      x = _center_square(x)
    if x.shape[1:3] != (size, size):
      x = jnp.moveaxis(_times_last_axis(jnp.moveaxis(x, 1, -1), rows.T), -1, 1)
      x = jnp.moveaxis(_times_last_axis(jnp.moveaxis(x, 2, -1), columns.T), -1, 2)
    return (x / 255.0 - mean) / std
  return preprocess


def raw_pixels_function(run: Run, input_size: tuple[int, int]) -> Callable[[jax.Array], jax.Array]:
  """uint8 RGB (N, height, width, 3) -> probabilities: `raw_preprocessing`, then the model."""
  preprocess = raw_preprocessing(run, input_size)
  return lambda pixels: run.apply(preprocess(pixels))


@dataclasses.dataclass(frozen=True)
class Options:
  """One export: `config.export` values with the format chosen."""
  format: str
  quantize: str = 'float32'
  batch: int = 1
  raw_input: bool = False
  input_size: tuple[int, int] | None = None
  verify_images: int = 64
  calibration_images: int = 200
  tolerance: float | None = None
  max_top1_drop: float = 0.05

  @classmethod
  def of(cls, export: ml_collections.ConfigDict, format: str) -> Options:
    return cls(format, export.quantize, export.batch, export.raw_input,
               tuple(export.input_size) if export.input_size else None, export.verify_images,
               export.calibration_images, export.tolerance, export.max_top1_drop)

  @property
  def name(self) -> str:
    """The export's folder name, e.g. tflite-int8-raw, onnx-float32-dynamic."""
    parts = [self.format, self.quantize] + (['raw'] if self.raw_input else [])
    return '-'.join(parts + ([] if self.batch == 1 else ['dynamic' if self.batch == 0 else f'batch{self.batch}']))


def model_function(run: Run, options: Options) -> tuple[Callable[[jax.Array], jax.Array], jax.ShapeDtypeStruct]:
  """The function exported and its input (batch None: any)."""
  batch = options.batch or None
  if options.raw_input:
    size = options.input_size or run.image_shape[:2]
    return raw_pixels_function(run, size), jax.ShapeDtypeStruct((batch, *size, 3), jnp.uint8)
  return run.apply, jax.ShapeDtypeStruct((batch, *run.image_shape), jnp.float32)


def sample_images(run: Run, train: bool, count: int) -> tuple[np.ndarray, np.ndarray]:
  """`count` evaluation-preprocessed uint8 images of the run's eval (or train) split, spread evenly over
  it, and their labels."""
  config = run.config.data
  if config.source == 'arrays':
    raise config_utils.ConfigError(
        "the run's data came from the caller (data.source='arrays'), so the export cannot read images to check "
        'itself on; call lightcls.export.export(..., dataset=lightcls.data.sources.from_arrays(...)).')
  return _sampled(sources.load(config), run, train, count)


def _sampled(dataset, run: Run, train: bool, count: int) -> tuple[np.ndarray, np.ndarray]:
  dataset = pipeline.with_validation(dataset, run.config.data.val_fraction, run.config.data.val_seed)
  split = dataset.train if train else dataset.eval
  indices = np.unique(np.linspace(0, len(split) - 1, min(count, len(split))).round().astype(int))
  what = 'calibration images' if train else 'verification images'
  pixels, _ = pipeline.prepared_split(pipeline.subset(split, indices),
                                      pipeline.preprocess_options(run.config.data, False), run.class_names, what)
  return np.asarray(pixels.images), np.asarray(pixels.labels)


def model_inputs(run: Run, options: Options, images: np.ndarray) -> np.ndarray:
  """Evaluation-preprocessed uint8 images as the exported model takes them: normalised floats, or RGB
  pixels at the raw input size (resized back from the model size with PIL when the sizes differ)."""
  if not options.raw_input:
    mean, std = np.asarray(run.config.data.mean, np.float32), np.asarray(run.config.data.std, np.float32)
    return ((images.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
  height, width = options.input_size or run.image_shape[:2]
  rgb = np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images
  if (height, width) == rgb.shape[1:3]:
    return rgb
  from PIL import Image
  return np.stack([np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
                   for image in rgb])


def _tf_function(fn: Callable, spec: jax.ShapeDtypeStruct):
  import tensorflow as tf
  from jax.experimental import jax2tf
  dynamic = spec.shape[0] is None
  polymorphic = [f'(b, {", ".join(map(str, spec.shape[1:]))})'] if dynamic else None
  converted = jax2tf.convert(fn, polymorphic_shapes=polymorphic, with_gradient=False)
  return tf.function(converted, autograph=False,
                     input_signature=[tf.TensorSpec(spec.shape, tf.as_dtype(spec.dtype), name='images')])


def write_tflite(fn: Callable, spec: jax.ShapeDtypeStruct, path: str, quantize: str,
                 calibration: np.ndarray | None) -> None:
  """`fn` (a plain function, not a jitted one, whose cached trace would keep the float form of hard-swish)
  as a TFLite model at `path`; int8 calibrated on `calibration`, float16 with float16 weights."""
  import tensorflow as tf
  forms = {'hard_swish': layers.clamped_hard_swish} if quantize == 'int8' else {}
  with layers.activation_forms(**forms):  # the model is traced here: through a new function object, so
    function = _tf_function(lambda images: fn(images), spec)  # that no earlier trace of `fn` is reused
    concrete = function.get_concrete_function()
  converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], function)
  if quantize == 'float16':
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
  elif quantize == 'int8':
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    batch = spec.shape[0] or 1  # a fixed-batch graph takes calibration batches of its own size
    converter.representative_dataset = lambda: ([calibration[i:i + batch]]
                                                for i in range(0, len(calibration) - batch + 1, batch))
  with open(path, 'wb') as f:
    f.write(converter.convert())


def write_savedmodel(fn: Callable, spec: jax.ShapeDtypeStruct, path: str, quantize: str,
                     calibration: np.ndarray | None) -> None:
  del quantize, calibration  # float32 only (check() says so before anything runs)
  import tensorflow as tf
  module = tf.Module()
  module.probabilities = _tf_function(fn, spec)
  tf.saved_model.save(module, path, signatures={'serving_default': module.probabilities.get_concrete_function()})


class _Calibration:
  """onnxruntime's CalibrationDataReader protocol over an array, one model batch at a time."""

  def __init__(self, name: str, images: np.ndarray, batch: int):
    self.batches = iter({name: images[i:i + batch]} for i in range(0, len(images) - batch + 1, batch))

  def get_next(self) -> dict[str, np.ndarray] | None:
    return next(self.batches, None)


def _keep_fully_connected_bias() -> None:
  """Re-registers tf2onnx's converter of TFLite's FULLY_CONNECTED so that it keeps the bias.

  tf2onnx 1.17 drops the bias of a FULLY_CONNECTED whose input has rank > 2 (the TFLite converter folds
  a flatten into the layer, as it does at the end of GhostNet's head): it replaces the inputs by the
  flattened input and the weights, and the later bias step sees two inputs. Measured: up to 0.0025 error
  in GhostNet's probabilities. The check after every export catches any such error.
  """
  from tf2onnx import handler
  from tf2onnx.tflite_handlers import tfl_math
  original = tfl_math.TflFullyConnectedOp.to_tf

  def to_tf(ctx, node, **kwargs):
    flattened = (len(node.input) == 3 and node.attr['keep_num_dims'].i == 0
                 and ctx.get_rank(node.input[0]) != 2)
    bias = node.input[2] if flattened else None
    original(ctx, node, **kwargs)
    if bias is not None:
      add = ctx.insert_new_node_on_output('Add', node.output[0], inputs=[node.output[0], bias])
      add.skip_conversion = True

  handler.tf_op.register_handler(to_tf, 0, ['TFL_FULLY_CONNECTED'], 'com.google.tensorflow', {})


def write_onnx(fn: Callable, spec: jax.ShapeDtypeStruct, path: str, quantize: str,
               calibration: np.ndarray | None) -> None:
  """Through the float32 TFLite model (tf2onnx reads it): its graph has BatchNorm and hard-swish already
  fused, and runs in onnxruntime in 3.5 ms against 8.7 ms for jax2onnx's direct conversion
  (MobileNetV3-Large, 224 px, 2 threads; experiments/RESULTS.md)."""
  import onnx
  import tf2onnx
  _keep_fully_connected_bias()
  with tempfile.TemporaryDirectory() as scratch:
    tflite_path, float_path = os.path.join(scratch, 'model.tflite'), os.path.join(scratch, 'float.onnx')
    write_tflite(fn, spec, tflite_path, 'float32', None)
    tf2onnx.convert.from_tflite(tflite_path, opset=ONNX_OPSET, output_path=float_path)
    onnx.save(onnx_graph.simplified(onnx.load(float_path)), float_path)
    if quantize == 'float32':
      shutil.move(float_path, path)
    elif quantize == 'float16':
      from onnxruntime.transformers.float16 import convert_float_to_float16
      onnx.save(convert_float_to_float16(onnx.load(float_path), keep_io_types=True), path)
    else:
      quantized_onnx(float_path, path, calibration, spec.shape[0] or 1)


def quantized_onnx(source: str, path: str, calibration: np.ndarray, batch: int) -> None:
  """The float32 ONNX model `source` as int8 at `path`, activation ranges calibrated on `calibration`
  (model inputs, `batch` at a time): QDQ with per-channel int8 weights and uint8 activations, the pair
  onnxruntime's x86 kernels run fastest (MobileNetV2, 224 px: 2.2 ms against 4.5 ms with int8 activations
  and 3.6 ms in float32; experiments/RESULTS.md)."""
  import onnx
  from onnxruntime import quantization
  with tempfile.TemporaryDirectory() as scratch:
    prepared_path = os.path.join(scratch, 'prepared.onnx')
    # onnxruntime's symbolic shape inference fails on tf2onnx's dynamic-batch shape arithmetic; ONNX's own
    # shape inference is enough for quantization.
    quantization.quant_pre_process(source, prepared_path, skip_symbolic_shape=True)
    name = onnx.load(prepared_path).graph.input[0].name
    quantization.quantize_static(prepared_path, path, _Calibration(name, calibration, batch),
                                 quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                                 activation_type=quantization.QuantType.QUInt8,
                                 weight_type=quantization.QuantType.QInt8)


WRITERS = {'tflite': write_tflite, 'onnx': write_onnx, 'savedmodel': write_savedmodel}


def verification(run: Run, options: Options, fn: Callable, deployed, inputs: np.ndarray,
                 labels: np.ndarray) -> dict[str, Any]:
  """The exported model against the JAX function it came from, on the same inputs."""
  want = np.asarray(jax.jit(fn)(inputs))
  got = deployed(inputs).astype(np.float32)
  top1_jax, top1_export = float(np.mean(want.argmax(1) == labels)), float(np.mean(got.argmax(1) == labels))
  result = {'images': len(inputs), 'max_abs_diff': float(np.abs(got - want).max()),
            'top1_agreement': float(np.mean(got.argmax(1) == want.argmax(1))),
            'top1_jax': top1_jax, 'top1_export': top1_export, 'top1_drop': top1_jax - top1_export}
  if options.quantize == 'int8':
    result['max_top1_drop'] = options.max_top1_drop
    result['passed'] = result['top1_drop'] <= options.max_top1_drop
  else:
    result['tolerance'] = options.tolerance or DEFAULT_TOLERANCE[options.quantize]
    result['passed'] = result['max_abs_diff'] <= result['tolerance']
  return result


def model_card(run: Run, options: Options, spec: jax.ShapeDtypeStruct, checked: dict[str, Any],
               size_bytes: int) -> dict[str, Any]:
  from lightcls import summary
  blocks = convert.top_level_blocks(run.model, (1, *run.image_shape))
  macs = sum(summary.macs_by_block(run.model, run.variables, run.image_shape, blocks).values())
  data = run.config.data
  raw = options.raw_input
  return {
      'architecture': run.config.model.name,
      'model_config': run.config.model.to_dict(),
      'classes': len(run.class_names), 'labels': 'labels.txt',
      'params': run.params, 'macs': macs,
      'format': options.format, 'file': MODEL_FILES[options.format], 'bytes': size_bytes,
      'quantize': options.quantize,
      'input': {'shape': list(spec.shape), 'dtype': str(np.dtype(spec.dtype)), 'layout': 'NHWC',
                'channels': 'RGB' if raw or run.image_shape[-1] == 3 else 'gray',
                'preprocessing': ('inside the model: uint8 RGB in, resized to the model size and normalised'
                                  if raw else '(pixels / 255 - mean) / std, at the model size'),
                'model_size': list(run.image_shape), 'resize': data.eval_resize,
                'mean': list(data.mean), 'std': list(data.std)},
      'output': 'class probabilities (softmax), in the order of labels.txt',
      'checkpoint': {'workdir': os.path.abspath(run.workdir), 'step': run.step, 'weights': run.weights},
      'validation_top1': run.top1,
      'verification': checked,
      'lightcls_version': lightcls.__version__,
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
  }


class ExportError(RuntimeError):
  """The exported model disagrees with the JAX model beyond the tolerance."""


def export(workdir: str, options: Options, step: int | None = None, ema: bool = False,
           output_dir: str | None = None, dataset=None) -> dict[str, Any]:
  """Exports the run in `workdir` as `options` say, checks it, and writes `<output_dir>/<options.name>/`
  (default output_dir: `<workdir>/export`). Returns the model card. `dataset` replaces the configured
  source for the check and calibration images (runs trained on arrays)."""
  check(ml_collections.ConfigDict({**dataclasses.asdict(options), 'formats': (options.format,)}))
  started = time.perf_counter()
  run = read_run(workdir, step, ema)
  logging.info('Exporting %s (step %d, %s weights, %d classes, %s input) as %s.', run.config.model.name, run.step,
               run.weights, len(run.class_names), 'x'.join(map(str, run.image_shape)), options.name)
  fn, spec = model_function(run, options)
  sample = (lambda train, count: _sampled(dataset, run, train, count)) if dataset else (
      lambda train, count: sample_images(run, train, count))
  images, labels = sample(False, options.verify_images)
  calibration = (model_inputs(run, options, sample(True, options.calibration_images)[0])
                 if options.quantize == 'int8' else None)
  output_dir = output_dir or os.path.join(workdir, 'export')
  os.makedirs(output_dir, exist_ok=True)
  scratch = tempfile.mkdtemp(prefix=f'.{options.name}-', dir=output_dir)
  try:
    path = os.path.join(scratch, MODEL_FILES[options.format])
    WRITERS[options.format](fn, spec, path, options.quantize, calibration)
    logging.info('Converted in %.1f s; checking on %d validation images.', time.perf_counter() - started,
                 len(images))
    from lightcls import deployed
    checked = verification(run, options, fn, deployed.load(path), model_inputs(run, options, images), labels)
    _log_check(checked)
    if not checked['passed']:
      raise ExportError(_failure(options, checked))
    card = model_card(run, options, spec, checked, _size(path))
    with open(os.path.join(scratch, 'labels.txt'), 'w', encoding='utf-8') as f:
      f.write(''.join(f'{name}\n' for name in run.class_names))
    with open(os.path.join(scratch, 'model_card.json'), 'w') as f:
      json.dump(card, f, indent=2)
    os.chmod(scratch, 0o755)  # mkdtemp's folder is private to its owner; an export is for sharing
    _replace(scratch, os.path.join(output_dir, options.name))
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  logging.info('Wrote %s (%.1f MB) in %.0f s.', os.path.join(output_dir, options.name, MODEL_FILES[options.format]),
               card['bytes'] / 1e6, time.perf_counter() - started)
  return card


def _size(path: str) -> int:
  if os.path.isdir(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
  return os.path.getsize(path)


def _replace(source: str, target: str) -> None:
  """Moves the finished folder into place; an earlier export of the same name is removed only after."""
  old = None
  if os.path.exists(target):
    old = target + '.old'
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
  os.replace(source, target)
  if old:
    shutil.rmtree(old, ignore_errors=True)


def _log_check(checked: dict[str, Any]) -> None:
  logging.info('Check on %d images: max |probability difference| %.2g, top-1 agreement %.2f%%, top-1 %.2f%% '
               '(JAX %.2f%%, drop %.2f points).', checked['images'], checked['max_abs_diff'],
               100 * checked['top1_agreement'], 100 * checked['top1_export'], 100 * checked['top1_jax'],
               100 * checked['top1_drop'])


def _failure(options: Options, checked: dict[str, Any]) -> str:
  if options.quantize == 'int8':
    return (f'the int8 model loses {100 * checked["top1_drop"]:.2f} points of top-1 on {checked["images"]} '
            f'validation images (allowed: {100 * options.max_top1_drop:.2f}); calibrate on more images '
            '(--calibration_images), export float16, or allow more with --max_top1_drop. Nothing was written.')
  return (f'the exported model\'s probabilities differ from the JAX model\'s by up to {checked["max_abs_diff"]:.3g} '
          f'(tolerance {checked["tolerance"]:.3g}) on {checked["images"]} validation images. Nothing was written; '
          'this is a conversion bug worth reporting (--tolerance raises the limit).')


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined only when it runs: train.py imports this module too)."""
  flags.DEFINE_string('workdir', None, 'The training run to export (its --workdir).')
  flags.DEFINE_enum('format', None, FORMATS, "Export format (default: the run's config.export.formats[0], or tflite).")
  flags.DEFINE_enum('quantize', None, QUANTIZATIONS, 'Precision (default: config.export.quantize).')
  flags.DEFINE_integer('batch', None, "The exported model's batch size, 0 for any (default: config.export.batch).")
  flags.DEFINE_bool('raw_input', None, 'uint8 RGB input, resized and normalised inside the model.')
  flags.DEFINE_string('input_size', None, 'With --raw_input: HEIGHT,WIDTH of the pixels fed (default: image size).')
  flags.DEFINE_integer('step', None, 'Export the checkpoint of this step (default: the best).')
  flags.DEFINE_bool('ema', False, 'Export the moving average of the weights (runs with optimizer.ema_decay > 0).')
  flags.DEFINE_integer('verify_images', None, 'Validation images the export is checked on.')
  flags.DEFINE_integer('calibration_images', None, 'int8: training images that calibrate activation ranges.')
  flags.DEFINE_float('tolerance', None, 'Max |probability difference| against the JAX model.')
  flags.DEFINE_float('max_top1_drop', None, 'int8: the most top-1 accuracy the export may lose.')
  flags.DEFINE_string('output', None, 'Folder to write the export folder into (default: WORKDIR/export).')


def options_from_flags(export_config: ml_collections.ConfigDict) -> Options:
  """The run's config.export section with the flags given on the command line applied."""
  export_config = export_config.copy_and_resolve_references()
  for key in ('quantize', 'batch', 'raw_input', 'verify_images', 'calibration_images', 'tolerance',
              'max_top1_drop'):
    if FLAGS[key].value is not None:
      export_config[key] = FLAGS[key].value
  if FLAGS.input_size:
    try:
      export_config.input_size = tuple(int(v) for v in FLAGS.input_size.split(','))
    except ValueError:
      raise config_utils.ConfigError(f'--input_size={FLAGS.input_size!r}: give HEIGHT,WIDTH, e.g. 480,640.') from None
  fmt = FLAGS.format or (export_config.formats[0] if export_config.formats else 'tflite')
  export_config.formats = (fmt,)
  check(export_config)
  return Options.of(export_config, fmt)


def main(argv: list[str]) -> None:
  cli.start(argv)
  try:
    options = options_from_flags(run_config(FLAGS.workdir).export)
    card = export(FLAGS.workdir, options, FLAGS.step, FLAGS.ema, FLAGS.output)
  except (config_utils.ConfigError, ExportError, FileNotFoundError, ValueError) as error:
    logging.flush()
    sys.exit(f'lightcls.export: {error}')
  print(json.dumps({k: card[k] for k in ('format', 'quantize', 'bytes', 'params', 'macs', 'validation_top1',
                                         'verification')}, indent=2))


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TensorFlow's start-up notices
  define_flags()
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
