"""Top-k classes of image files, from a training run or an exported model.

  python -m lightcls.predict --workdir=runs/x photos/ car.jpg         # the run's best checkpoint, in JAX
  python -m lightcls.predict --model=runs/x/export/tflite-float32/model.tflite photos/ --json

Folders are searched recursively for image files. Images get the evaluation's preprocessing (EXIF
orientation, grayscale if the model is, the same resize, normalisation); a model exported with raw input
gets RGB pixels at its input size and does the rest itself. A file that cannot be read is reported in
its row, and the others are still classified.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from absl import app, flags, logging

from lightcls import cli
from lightcls.data import decode, pipeline


@dataclasses.dataclass(frozen=True)
class Predictor:
  """A classifier and the preprocessing its inputs need."""
  classify: Callable[[np.ndarray], np.ndarray]  # a batch of prepared inputs -> (N, classes) probabilities
  prepare: Callable[[np.ndarray], np.ndarray]   # one decoded (H, W, 3) uint8 RGB image -> one input
  labels: Sequence[str]


def evaluation_preparation(size: int, channels: int, resize: str, mean: Sequence[float],
                           std: Sequence[float]) -> Callable[[np.ndarray], np.ndarray]:
  """RGB pixels -> the model's normalised float32 input, through the evaluation pipeline's own functions."""
  options = pipeline.Preprocess(size, resize, grayscale=channels == 1)
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

  def prepare(image: np.ndarray) -> np.ndarray:
    pixels = pipeline.preprocessed(image, None, options)
    return (pixels.astype(np.float32) / 255.0 - mean) / std
  return prepare


def raw_preparation(height: int, width: int) -> Callable[[np.ndarray], np.ndarray]:
  """RGB pixels -> uint8 RGB at the exported model's input size (it resizes and normalises itself)."""
  from PIL import Image

  def prepare(image: np.ndarray) -> np.ndarray:
    if image.shape[:2] == (height, width):
      return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
  return prepare


def from_workdir(workdir: str, step: int | None = None, ema: bool = False, batch_size: int = 32) -> Predictor:
  """The run's best (or `step`) checkpoint, run by JAX in batches of `batch_size` (one compilation)."""
  import jax

  from lightcls import deployed, export, models
  run = export.read_run(workdir, step, ema, conv_impl='auto')
  apply = jax.jit(run.apply, compiler_options=models.compiler_options(run.config.model.cpu_codegen))
  classify = lambda inputs: deployed.in_batches(apply, inputs, batch_size)
  size, _, channels = run.image_shape
  data = run.config.data
  return Predictor(classify, evaluation_preparation(size, channels, data.eval_resize, data.mean, data.std),
                   run.class_names)


def from_model(path: str, threads: int = 2) -> Predictor:
  """An exported model (lightcls.export), with the preprocessing its model card describes."""
  from lightcls import deployed
  model = deployed.load(path, threads)
  card = model.card.get('input')
  if not card:
    raise FileNotFoundError(f'{path}: no model_card.json beside it, so its preprocessing is unknown; predict '
                            'with a model folder written by python -m lightcls.export.')
  if card['dtype'] == 'uint8':
    prepare = raw_preparation(*model.input_shape[1:3])
  else:
    size, _, channels = card['model_size']
    prepare = evaluation_preparation(size, channels, card['resize'], card['mean'], card['std'])
  labels = model.labels or [str(i) for i in range(model.card['classes'])]
  return Predictor(model, prepare, labels)


def image_files(paths: Iterable[str]) -> list[str]:
  """The files named, and the image files in the folders named (recursively, sorted)."""
  files = []
  for path in paths:
    if os.path.isdir(path):
      files.extend(sorted(os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names
                          if decode.is_image_path(name)))
    else:
      files.append(path)
  return files


def predictions(predictor: Predictor, files: Sequence[str], top_k: int = 5) -> list[dict[str, Any]]:
  """Per file: {'file', 'predictions': [{'label', 'probability'}, ...]} best first, or {'file', 'error'}."""
  results: list[dict[str, Any]] = [{'file': path} for path in files]
  inputs, readable = [], []
  for i, path in enumerate(files):
    try:
      if not os.path.isfile(path):
        raise decode.UnreadableImage(path, 'no such file')
      inputs.append(predictor.prepare(decode.decode_image(path, path)))
      readable.append(i)
    except decode.UnreadableImage as error:
      results[i]['error'] = error.reason
  if inputs:
    probabilities = predictor.classify(np.stack(inputs))
    for i, p in zip(readable, probabilities):
      best = np.argsort(-p)[:top_k]
      results[i]['predictions'] = [{'label': predictor.labels[c], 'probability': float(p[c])} for c in best]
  return results


def table(results: Sequence[dict[str, Any]]) -> str:
  """One row per file: the top classes with their probabilities, or the reason it could not be read."""
  width = max(len(r['file']) for r in results)
  rows = []
  for r in results:
    if 'error' in r:
      text = f'unreadable: {r["error"]}'
    else:
      text = '  '.join(f'{p["label"]} {100 * p["probability"]:.1f}%' for p in r['predictions'])
    rows.append(f'{r["file"]:<{width}}  {text}')
  return '\n'.join(rows)


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'A training run: predict with its best checkpoint in JAX.')
  flags.DEFINE_string('model', None, 'An exported model (.tflite, .onnx, or a SavedModel folder).')
  flags.DEFINE_integer('step', None, 'With --workdir: the checkpoint of this step instead of the best.')
  flags.DEFINE_bool('ema', False, 'With --workdir: the moving average of the weights.')
  flags.DEFINE_integer('top_k', 5, 'Classes listed per image.')
  flags.DEFINE_bool('json', False, 'Print JSON instead of a table.')
  flags.DEFINE_integer('threads', 2, 'CPU threads of an exported model\'s runtime.')


def main(argv: list[str]) -> None:
  if not argv[1:]:
    raise app.UsageError('Name image files or folders after the flags.')
  if bool(FLAGS.workdir) == bool(FLAGS.model):
    raise app.UsageError('Give exactly one of --workdir (a training run) or --model (an exported model).')
  logging.get_absl_handler().addFilter(cli.OwnInfoOnly())
  files = image_files(argv[1:])
  if not files:
    sys.exit(f'lightcls.predict: no image files in {argv[1:]}')
  try:
    if FLAGS.workdir:
      cli.use_compilation_cache()
      predictor = from_workdir(FLAGS.workdir, FLAGS.step, FLAGS.ema)
    else:
      predictor = from_model(FLAGS.model, FLAGS.threads)
  except (FileNotFoundError, ValueError) as error:
    sys.exit(f'lightcls.predict: {error}')
  results = predictions(predictor, files, FLAGS.top_k)
  print(json.dumps(results, indent=1) if FLAGS.json else table(results))
  unreadable = sum('error' in r for r in results)
  if unreadable:
    logging.warning('%d of %d file(s) could not be read.', unreadable, len(results))


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  define_flags()
  app.run(main)
