"""Exported models run by their own runtimes: LiteRT (TFLite), onnxruntime, TensorFlow (SavedModel).

`load(path)` gives a callable `images -> probabilities` for any of them, with the input shape and dtype it
expects and the model card and labels written beside it by `lightcls.export`. Each runtime is imported only
when a model of its format is loaded, so predicting with a .tflite file needs neither TensorFlow nor JAX.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

import numpy as np

DEFAULT_THREADS = 2


class Deployed:
  """An exported model. `input_shape` is (batch, height, width, channels), batch None when any batch goes.

  Calling it with any number of images runs them in chunks of the model's batch (the last one padded).
  """

  def __init__(self, path: str, run: Callable[[np.ndarray], np.ndarray], input_shape: tuple,
               input_dtype: np.dtype, resize: Callable[[int], None] | None = None):
    self.path, self._run, self._resize = path, run, resize
    self.input_shape, self.input_dtype = tuple(input_shape), np.dtype(input_dtype)
    folder = os.path.dirname(os.path.abspath(path))
    self.card = _read_json(os.path.join(folder, 'model_card.json'))
    self.labels = _read_labels(os.path.join(folder, 'labels.txt'))
    self._batch = None

  def __call__(self, images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, self.input_dtype)
    if images.shape[1:] != self.input_shape[1:]:
      raise ValueError(f'{self.path} takes images of shape {self.input_shape[1:]} ({self.input_dtype}); '
                       f'got {images.shape[1:]}')
    fixed = self.input_shape[0]
    if fixed is None:
      if self._resize is not None and self._batch != len(images):
        self._resize(len(images))
        self._batch = len(images)
      return self._run(images)
    return in_batches(self._run, images, fixed)


def in_batches(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch: int) -> np.ndarray:
  """`run` on `images` in chunks of exactly `batch` (the last one padded with zeros), outputs concatenated:
  a model of fixed batch size, or a jitted function compiled once."""
  outputs = []
  for start in range(0, len(images), batch):
    chunk = images[start:start + batch]
    padded = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
    outputs.append(np.asarray(run(padded))[:len(chunk)])
  return np.concatenate(outputs)


def _read_json(path: str) -> dict[str, Any]:
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _read_labels(path: str) -> list[str] | None:
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    return [line.rstrip('\n') for line in f]


def _tflite(path: str, threads: int) -> Deployed:
  from ai_edge_litert.interpreter import Interpreter
  interpreter = Interpreter(model_path=path, num_threads=threads)
  interpreter.allocate_tensors()
  source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
  signature = [None if d < 0 else int(d) for d in source['shape_signature']]

  def run(images):
    interpreter.set_tensor(source['index'], images)
    interpreter.invoke()
    return interpreter.get_tensor(target['index']).copy()

  def resize(batch):
    interpreter.resize_tensor_input(source['index'], [batch, *signature[1:]], strict=True)
    interpreter.allocate_tensors()

  return Deployed(path, run, signature, source['dtype'], resize)


_ONNX_DTYPES = {'tensor(float)': np.float32, 'tensor(uint8)': np.uint8, 'tensor(float16)': np.float16}


def _onnx(path: str, threads: int) -> Deployed:
  import onnxruntime
  options = onnxruntime.SessionOptions()
  options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
  session = onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])
  source = session.get_inputs()[0]
  shape = [d if isinstance(d, int) else None for d in source.shape]
  return Deployed(path, lambda images: session.run(None, {source.name: images})[0], shape,
                  _ONNX_DTYPES[source.type])


def _saved_model(path: str, threads: int) -> Deployed:
  import tensorflow as tf
  try:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
  except RuntimeError:  # TensorFlow already ran in this process (an export): its thread pool stays
    pass
  serve = tf.saved_model.load(path).signatures['serving_default']
  (name, spec), = serve.structured_input_signature[1].items()
  (output,) = serve.structured_outputs
  return Deployed(path.rstrip(os.sep),
                  lambda images: serve(**{name: tf.constant(images)})[output].numpy(),
                  spec.shape.as_list(), spec.dtype.as_numpy_dtype)


def load(path: str, threads: int = DEFAULT_THREADS) -> Deployed:
  """The exported model at `path`: a .tflite or .onnx file, or a SavedModel directory."""
  if os.path.isdir(path):
    if not os.path.exists(os.path.join(path, 'saved_model.pb')):
      raise FileNotFoundError(f'{path} is a directory without saved_model.pb; give a .tflite or .onnx file, '
                              'or a SavedModel directory written by python -m lightcls.export.')
    return _saved_model(path, threads)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no such file (python -m lightcls.export writes <workdir>/export/*/model.*)')
  loaders = {'.tflite': _tflite, '.onnx': _onnx}
  extension = os.path.splitext(path)[1]
  if extension not in loaders:
    raise ValueError(f'{path}: unknown model format {extension!r}; expected .tflite, .onnx or a SavedModel '
                     'directory.')
  return loaders[extension](path, threads)
