"""lightcls.export and lightcls.predict on a small trained run (GhostNet 1.0 on scikit-learn's digits, three
epochs): every format and precision against the JAX model on real validation images, the preprocessing
inside raw-input models against PIL's, and failures that write nothing."""
import hashlib
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from lightcls import checkpoint, deployed, export, predict, summary, train
from lightcls.models import convert
from tests import helpers


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('run'))
  # Three epochs: after one (62% top-1) many images are near-ties, and whether int8 flips them depends on the
  # rounding of training; after three (85-92%) the int8 checks measure quantization, not luck.
  config = helpers.small_config(**{'train.total_epochs': 3.0})
  config.export.formats = ('tflite',)  # exported when training ends
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope='module')
def reference(run):
  """Validation images (uint8, the model's size), labels and the JAX model's probabilities."""
  model_run = export.read_run(run)
  images, labels = export.sample_images(model_run, train=False, count=48)
  normalised = export.model_inputs(model_run, export.Options('tflite'), images)
  return images, labels, np.asarray(jax.jit(model_run.apply)(normalised)), model_run


def _read(path):
  with open(path) as f:
    return json.load(f)


def test_training_with_export_formats_exports_the_best_checkpoint_when_it_ends(run, reference):
  folder = os.path.join(run, 'export', 'tflite-float32')
  card, result = _read(os.path.join(folder, 'model_card.json')), _read(os.path.join(run, 'summary.json'))
  assert result['exports'] == {'tflite-float32': folder}
  assert card['checkpoint']['step'] == result['best_step']
  assert card['validation_top1'] == result['best_top1']
  assert card['params'] == result['params']
  model_run = reference[3]
  blocks = convert.top_level_blocks(model_run.model, (1, *model_run.image_shape))
  assert card['macs'] == sum(summary.macs_by_block(model_run.model, model_run.variables, model_run.image_shape,
                                                   blocks).values()) > 0
  assert card['verification']['passed'] and card['verification']['top1_agreement'] == 1.0
  with open(os.path.join(folder, 'labels.txt')) as f:
    assert f.read().split('\n') == [str(d) for d in range(10)] + ['']
  assert card['input']['shape'] == [1, 32, 32, 1] and card['input']['mean'] == [0.3054]


def test_folded_inference_model_equals_the_trained_model_in_evaluation_mode(run, reference):
  import jax.numpy as jnp

  from lightcls import models, steps
  images, _, want, model_run = reference
  state, _, _ = checkpoint.read(run)
  model = models.create_model(model_run.config.model, 10)
  x = steps.normalized(jnp.asarray(images), model_run.config.data.mean, model_run.config.data.std)
  logits = jax.jit(model.apply)({'params': state['params'], 'batch_stats': state['batch_stats']}, x)
  np.testing.assert_allclose(jax.nn.softmax(logits), want, atol=1e-5)


@pytest.mark.parametrize('fmt, quantize, batch, raw, input_size', [
    ('tflite', 'float16', 1, False, None),
    ('tflite', 'int8', 1, False, None),
    ('tflite', 'float32', 0, True, None),
    ('onnx', 'float32', 1, False, None),
    ('onnx', 'float16', 0, False, None),
    ('onnx', 'int8', 0, True, (40, 52)),
    ('savedmodel', 'float32', 0, True, (40, 52)),
])
def test_export_agrees_with_the_jax_model_on_validation_images(run, reference, tmp_path, fmt, quantize, batch, raw,
                                                             input_size):
  images, labels, want, model_run = reference
  options = export.Options(fmt, quantize, batch, raw, input_size, verify_images=64, calibration_images=64)
  card = export.export(run, options, output_dir=str(tmp_path))
  model = deployed.load(str(tmp_path / options.name / export.MODEL_FILES[fmt]))
  assert model.input_shape == (batch or None, *(input_size or (32, 32)), 3 if raw else 1)
  assert model.labels == [str(d) for d in range(10)]
  if raw:  # RGB pixels at the input size, as a camera gives them
    rgb = np.repeat(images, 3, axis=-1)
    inputs = rgb if input_size is None else np.stack(
        [np.asarray(Image.fromarray(x).resize(input_size[::-1], Image.Resampling.BILINEAR)) for x in rgb])
    # Against the JAX function exported (the same resize), and the model on the pipeline's images.
    exact = np.asarray(jax.jit(export.raw_pixels_function(model_run, input_size or (32, 32)))(inputs))
  else:
    inputs = export.model_inputs(model_run, options, images)
    exact = want
  got = model(inputs)
  assert got.shape == (len(images), 10)
  # int8 probabilities come in steps of 1/256, each rounded: 10 of them may sum to 1 +- 5/256
  np.testing.assert_allclose(got.sum(1), 1.0, atol=5 / 256 if quantize == 'int8' else 1e-2)
  agreement = np.mean(got.argmax(1) == exact.argmax(1))
  if quantize == 'int8':
    assert agreement >= 0.9
    assert card['verification']['top1_drop'] <= 0.05
  else:
    np.testing.assert_allclose(got, exact, atol={'float32': 1e-4, 'float16': 1e-2}[quantize])
  if raw:  # the in-model grayscale and resize against the evaluation pipeline's (PIL) on the same photos
    prepare = predict.evaluation_preparation(32, 1, 'stretch', (0.3054,), (0.3236,))
    ours = jax.jit(export.raw_preprocessing(model_run, input_size or (32, 32)))(inputs)
    levels = 1.5 if input_size else 0.01  # PIL rounds to 8 bits after each of its passes
    np.testing.assert_allclose(ours, np.stack([prepare(x) for x in inputs]), atol=levels / 255 / 0.3236)
  verification = card['verification']
  assert verification['images'] == 64 and verification['passed']
  assert verification['top1_jax'] - verification['top1_export'] == pytest.approx(verification['top1_drop'])


@pytest.mark.parametrize('source, target', [(32, 32), (8, 32), (37, 224), (224, 32), (480, 224), (100, 99)])
def test_resize_matrix_is_pils_bilinear_resize(source, target):
  rng = np.random.default_rng(source + target)
  image = rng.integers(0, 256, (source, source + 3), dtype=np.uint8)
  want = np.asarray(Image.fromarray(image).resize((target, target), Image.Resampling.BILINEAR), np.float32)
  got = export.resize_matrix(source, target) @ image.astype(np.float32) @ export.resize_matrix(source + 3, target).T
  assert np.abs(got - want).max() <= 1.0  # PIL rounds its weights and each pass's result to 8 bits
  assert np.abs(got - want).mean() < 0.4  # rounding alone: 0.25


def _digest(folder):
  return {name: hashlib.sha256(open(os.path.join(folder, name), 'rb').read()).hexdigest()
          for name in sorted(os.listdir(folder))}


def test_an_export_beyond_its_tolerance_fails_writes_nothing_and_keeps_the_earlier_one(run):
  output = os.path.join(run, 'export')
  before = _digest(os.path.join(output, 'tflite-float32'))
  with pytest.raises(export.ExportError, match=r'differ .* by up to .* \(tolerance 1e-12\).*Nothing was written'):
    export.export(run, export.Options('tflite', tolerance=1e-12, verify_images=8))
  assert _digest(os.path.join(output, 'tflite-float32')) == before
  assert sorted(os.listdir(output)) == ['tflite-float32']  # no half-written folder left behind


def _command(module, *args):
  return subprocess.run([sys.executable, '-m', module, *args], cwd=helpers.REPO, capture_output=True, text=True,
                        env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})


def test_export_command_rejects_bad_requests_before_converting(run, tmp_path):
  result = _command('lightcls.export', f'--workdir={run}', '--format=savedmodel', '--quantize=int8')
  assert result.returncode != 0 and 'SavedModel is float32 only' in result.stderr
  result = _command('lightcls.export', f'--workdir={tmp_path}')
  assert result.returncode != 0 and 'holds no config.json' in result.stderr
  result = _command('lightcls.export', f'--workdir={run}', '--step=123456')
  assert result.returncode != 0 and 'no checkpoint of step 123456' in result.stderr
  assert sorted(os.listdir(os.path.join(run, 'export'))) == ['tflite-float32']
  with pytest.raises(ValueError, match=r'keeps no moving average .*drop --ema'):
    export.read_run(run, ema=True)


@pytest.fixture(scope='module')
def photos(tmp_path_factory, reference):
  """A folder of validation digits saved as 64x64 RGB PNG files, one broken JPEG in a subfolder."""
  folder = tmp_path_factory.mktemp('photos')
  images, labels = reference[:2]
  for i in range(6):
    Image.fromarray(images[i, ..., 0]).resize((64, 64)).convert('RGB').save(folder / f'{i}-label{labels[i]}.png')
  (folder / 'more').mkdir()
  (folder / 'more' / 'broken.jpg').write_bytes(b'\xff\xd8 truncated')
  return folder


def test_predict_from_the_run_and_from_its_export_name_the_same_classes_and_report_the_bad_file(run, photos):
  from_run = predict.predictions(predict.from_workdir(run), predict.image_files([str(photos)]), top_k=3)
  result = _command('lightcls.predict', f'--model={run}/export/tflite-float32/model.tflite', '--json', '--top_k=3',
                    str(photos))
  assert result.returncode == 0, result.stderr
  from_export = json.loads(result.stdout)
  assert [r['file'] for r in from_export] == [r['file'] for r in from_run]
  assert from_run[-1]['file'].endswith('broken.jpg') and 'error' in from_run[-1] and 'error' in from_export[-1]
  for ours, theirs in zip(from_run[:-1], from_export[:-1]):
    assert [p['label'] for p in ours['predictions']] == [p['label'] for p in theirs['predictions']]
    np.testing.assert_allclose([p['probability'] for p in ours['predictions']],
                               [p['probability'] for p in theirs['predictions']], atol=1e-4)
  assert 'unreadable' in predict.table(from_run).splitlines()[-1]


def test_the_clamped_hard_swish_of_int8_exports_is_hard_swish_and_is_undone_after_tracing():
  from lightcls.models import layers
  x = np.linspace(-8, 8, 4001, dtype=np.float32)
  np.testing.assert_allclose(layers.clamped_hard_swish(x), layers.hard_swish(x), atol=1e-6)
  with layers.activation_forms(hard_swish=layers.clamped_hard_swish):
    assert layers.ACTIVATIONS['hard_swish'] is layers.clamped_hard_swish
  assert layers.ACTIVATIONS['hard_swish'] is layers.hard_swish


def _delegated_pieces(path: str) -> int:
  from ai_edge_litert.interpreter import Interpreter
  interpreter = Interpreter(model_path=path, num_threads=1)
  interpreter.allocate_tensors()
  return sum(op['op_name'] == 'DELEGATE' for op in interpreter._get_ops_details())


def test_int8_tflite_hard_swish_runs_in_one_xnnpack_piece(tmp_path):
  """A convolution, hard-swish and a convolution exported in int8: LiteRT's XNNPACK delegate takes the whole
  graph as one piece (a split falls back to the reference kernels between pieces, several times slower)."""
  import jax.numpy as jnp
  from lightcls.models import layers
  rng = np.random.default_rng(0)
  w1, w2 = (jnp.asarray(rng.standard_normal((1, 1, 8, 8)), jnp.float32) for _ in range(2))

  def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

  def block(images):
    return conv(layers.ACTIVATIONS['hard_swish'](conv(images, w1)), w2)

  spec = jax.ShapeDtypeStruct((1, 8, 8, 8), np.float32)
  calibration = rng.standard_normal((8, 8, 8, 8)).astype(np.float32)
  path = str(tmp_path / 'block.tflite')
  export.write_tflite(block, spec, path, 'int8', calibration)
  assert _delegated_pieces(path) == 1
  want = np.asarray(block(calibration[:1]))
  # int8 steps of the output's range (about 1/250 of it), accumulated over two layers
  np.testing.assert_allclose(deployed.load(path, 1)(calibration[:1]), want, atol=0.03 * np.abs(want).max())
