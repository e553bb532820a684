"""Weights from reference implementations (timm / PyTorch, Keras) into lightcls variables.

Every lightcls model creates its layers in the order of the forward pass, as timm registers its modules and
Keras builds its layers. So a port pairs the i-th weight-holding layer of one with the i-th of the other and
converts each tensor's layout; names never need translating, and a model whose structure differs shows up
as a list of the layers that do not pair, with their shapes.

Layouts: PyTorch convolutions are (out, in/groups, kh, kw) and linear layers (out, in); Keras depthwise
kernels are (kh, kw, C, 1). lightcls uses nn.Conv's (kh, kw, in/groups, out) and nn.Dense's (in, out).
"""
from __future__ import annotations

import collections
import inspect
import os
from typing import Any, Iterable, Mapping

from absl import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Variables = Mapping[str, Any]
Path = tuple[str, ...]

# The role of each tensor of a layer (weight, bias, running mean, running variance) by framework name.
TORCH_ROLES = {'weight': 'weight', 'bias': 'bias', 'running_mean': 'mean', 'running_var': 'var'}
KERAS_ROLES = {'kernel': 'weight', 'depthwise_kernel': 'weight', 'gamma': 'weight', 'beta': 'bias',
               'bias': 'bias', 'moving_mean': 'mean', 'moving_variance': 'var'}
LIGHTCLS_ROLES = {('params', 'kernel'): 'weight', ('params', 'scale'): 'weight', ('params', 'bias'): 'bias',
                  ('batch_stats', 'mean'): 'mean', ('batch_stats', 'var'): 'var'}


class PortError(ValueError):
  """The reference weights do not fit the lightcls model."""


Layer = tuple[str, dict[str, np.ndarray]]  # (name, {role: array})


def layer_order(model: nn.Module, input_shape: tuple[int, ...]) -> list[Path]:
  """Paths of the model's weight-holding layers in the order the forward pass creates them.

  Traced with abstract values (nothing is computed). The order is read inside the trace, where Flax's
  variable dicts still keep creation order; pytrees coming out of jit are sorted by key.
  """
  order: list[Path] = []

  def init(rng):
    variables = model.init(rng, jnp.zeros(input_shape, jnp.float32))
    order.extend(_leaf_layers(variables['params']))
    return 0

  jax.eval_shape(init, jax.random.PRNGKey(0))
  return order


def top_level_blocks(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
  """Names of the model's top-level blocks in forward order (what freezing and the summary count)."""
  return list(dict.fromkeys(path[0] for path in layer_order(model, input_shape)))


def _leaf_layers(tree: Mapping[str, Any], prefix: Path = ()) -> Iterable[Path]:
  if any(not isinstance(v, Mapping) for v in tree.values()):
    yield prefix
  for key, value in tree.items():
    if isinstance(value, Mapping):
      yield from _leaf_layers(value, prefix + (key,))


def torch_layers(state_dict: Mapping[str, Any]) -> list[Layer]:
  """Groups a PyTorch state dict (in its saved order) into layers; BatchNorm's step counter is dropped."""
  layers: dict[str, dict[str, np.ndarray]] = collections.OrderedDict()
  for key, tensor in state_dict.items():
    module, _, name = key.rpartition('.')
    if name == 'num_batches_tracked':
      continue
    if name not in TORCH_ROLES:
      raise PortError(f'unexpected tensor {key!r} in the PyTorch state dict (known: {sorted(TORCH_ROLES)})')
    array = tensor.detach().cpu().numpy() if hasattr(tensor, 'detach') else np.asarray(tensor)
    layers.setdefault(module, {})[TORCH_ROLES[name]] = _torch_layout(array)
  return list(layers.items())


def _torch_layout(array: np.ndarray) -> np.ndarray:
  if array.ndim == 4:
    return array.transpose(2, 3, 1, 0)
  if array.ndim == 2:
    return array.T
  return array


def keras_layers(model: Any) -> list[Layer]:
  """The weight-holding layers of a Keras 3 model, in build order.

  An input Normalization layer (Keras' EfficientNet has one) is preprocessing, which lightcls does in the
  data pipeline: it is left out, and its mean and standard deviation are logged for config.data.
  """
  layers = []
  for layer in _flat_keras_layers(model):
    if type(layer).__name__ == 'Normalization':
      mean, variance = (np.asarray(v).reshape(-1) for v in (layer.mean, layer.variance))
      logging.warning('The Keras model normalises its input in a layer lightcls leaves out: for the same '
                      'inputs set config.data.mean=%s and config.data.std=%s (in the units of its input).',
                      tuple(np.round(mean, 4)), tuple(np.round(np.sqrt(variance), 4)))
      continue
    arrays = {}
    for weight in layer.weights:
      name = weight.path.rpartition('/')[2]
      if name not in KERAS_ROLES:
        raise PortError(f'unexpected Keras weight {weight.path!r} (known: {sorted(KERAS_ROLES)})')
      array = np.asarray(weight.numpy())
      # Keras 3 names a DepthwiseConv2D kernel 'kernel' (Keras 2: 'depthwise_kernel'); its layout is
      # (kh, kw, C, 1), nn.Conv's (kh, kw, 1, C).
      if array.ndim == 4 and (name == 'depthwise_kernel' or type(layer).__name__ == 'DepthwiseConv2D'):
        array = array.transpose(0, 1, 3, 2)
      arrays[KERAS_ROLES[name]] = array
    if arrays:
      layers.append((layer.name, arrays))
  return layers


def _flat_keras_layers(model: Any) -> Iterable[Any]:
  for layer in model.layers:
    if hasattr(layer, 'layers'):
      yield from _flat_keras_layers(layer)
    else:
      yield layer


def port(variables: Variables, order: list[Path], reference: list[Layer], source: str) -> dict[str, Any]:
  """New variables with every layer of `order` taken from the same-position layer of `reference`.

  The classifier (the last layer) keeps its fresh initialisation when the reference's has another class
  count or tensors it lacks (a bias, for a cosine classifier), or the reference has none (a headless
  "notop" file). Raises PortError listing every layer that does not pair: missing, unexpected or
  mis-shaped tensors.
  """
  ours = [(path, _roles(variables, path)) for path in order]
  if _classifier_differs(ours[-1][1], variables, ours[-1][0], reference, len(ours)):
    logging.info('Classifier %s keeps its initialisation: the %s weights have another class count, another '
                 'kind of classifier or none.', '/'.join(ours[-1][0]), source)
    ours, reference = ours[:-1], reference[:len(ours) - 1]
  problems = []
  if len(ours) != len(reference):
    problems.append(f'lightcls has {len(ours)} weight-holding layers, the {source} model {len(reference)}')
  new = jax.tree.map(np.asarray, _unfreeze(variables))
  for index, ((path, targets), (ref_name, arrays)) in enumerate(zip(ours, reference)):
    where = f"{'/'.join(path)} <- {ref_name}"
    if set(targets) != set(arrays):
      problems.append(f'{where}: tensors {sorted(targets)} vs {sorted(arrays)}')
      continue
    for role, (collection, leaf) in targets.items():
      target = _get(new, (collection,) + path + (leaf,))
      array = arrays[role]
      if index == 0 and role == 'weight':
        array = _adapted_stem(array, target.shape)
      if array.size == target.size and array.shape != target.shape and array.ndim > target.ndim:
        array = array.reshape(target.shape)  # a 1x1 convolution classifier into a dense layer
      if array.shape != target.shape:
        problems.append(f'{where}: {role} {tuple(target.shape)} vs {tuple(array.shape)}')
        continue
      _set(new, (collection,) + path + (leaf,), array.astype(target.dtype))
  if problems:
    raise PortError(f'the {source} weights do not fit this model:\n  ' + '\n  '.join(problems[:20])
                    + (f'\n  ... and {len(problems) - 20} more' if len(problems) > 20 else ''))
  return new


def _adapted_stem(kernel: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """An RGB stem kernel for a grayscale model: the sum of its three input filters.

  A grey image replicated to three channels gives the RGB model the same response, so ImageNet weights
  keep their meaning for grayscale inputs (seed 000 trained grayscale GhostNets).
  """
  if kernel.ndim == 4 and kernel.shape[2] == 3 and len(shape) == 4 and shape[2] == 1:
    logging.info('The RGB stem becomes a grayscale one: its three input filters are summed.')
    return kernel.sum(axis=2, keepdims=True)
  return kernel


def _classifier_differs(targets, variables, path, reference: list[Layer], count: int) -> bool:
  if len(reference) == count - 1:
    return True
  if len(reference) != count:
    return False
  weight = reference[-1][1].get('weight')
  target = _get(variables, ('params',) + path + (targets['weight'][1],))
  same_inputs = weight is not None and weight.size // weight.shape[-1] == target.size // target.shape[-1]
  # Other tensors: a linear classifier's bias beside a cosine classifier, whose logits mean something else.
  return same_inputs and (weight.shape[-1] != target.shape[-1] or set(reference[-1][1]) != set(targets))


def _roles(variables: Variables, path: Path) -> dict[str, tuple[str, str]]:
  roles = {}
  for collection in ('params', 'batch_stats'):
    node = variables.get(collection, {})
    for key in path:
      node = node.get(key, {}) if isinstance(node, Mapping) else {}
    for leaf in node if isinstance(node, Mapping) else ():
      if not isinstance(node[leaf], Mapping):
        roles[LIGHTCLS_ROLES[(collection, leaf)]] = (collection, leaf)
  return roles


def _unfreeze(tree):
  return {k: _unfreeze(v) for k, v in tree.items()} if isinstance(tree, Mapping) else tree


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _set(tree, path, value):
  for key in path[:-1]:
    tree = tree[key]
  tree[path[-1]] = value


def port_from_torch(model: nn.Module, variables: Variables, state_dict: Mapping[str, Any],
                    input_shape: tuple[int, ...]) -> dict[str, Any]:
  """`variables` with every weight from a timm / PyTorch state dict (saved in module order)."""
  return port(variables, layer_order(model, input_shape), torch_layers(state_dict), 'PyTorch')


def port_from_keras(model: nn.Module, variables: Variables, keras_model: Any,
                    input_shape: tuple[int, ...]) -> dict[str, Any]:
  """`variables` with every weight of a built Keras 3 model."""
  return port(variables, layer_order(model, input_shape), keras_layers(keras_model), 'Keras')


def port_by_path(variables: Variables, source: Variables, source_name: str) -> dict[str, Any]:
  """`variables` with every tensor of the same path taken from `source` (another lightcls run).

  The classifier keeps its initialisation when its shape differs (another class count) or it is of
  another kind (linear or cosine: the tensors differ).
  """
  ours = dict(_flat(_unfreeze(variables)))
  theirs = dict(_flat(_unfreeze(source)))
  classifier = [path for path in ours if path[1] == 'classifier']
  if set(classifier) != {path for path in theirs if path[1] == 'classifier'}:
    theirs = {path: array for path, array in theirs.items() if path[1] != 'classifier'}
    theirs.update((path, ours[path]) for path in classifier)
  problems = [f'missing in {source_name}: {"/".join(p)}' for p in ours if p not in theirs]
  problems += [f'unexpected in {source_name}: {"/".join(p)}' for p in theirs if p not in ours]
  new = {}
  for path, target in ours.items():
    array = np.asarray(theirs.get(path, target))
    if array.shape != target.shape:
      if path in classifier:
        array = np.asarray(target)
      else:
        problems.append(f'{"/".join(path)}: {tuple(target.shape)} vs {tuple(array.shape)} in {source_name}')
    new[path] = array.astype(target.dtype)
  if problems:
    raise PortError(f'the weights of {source_name} do not fit this model:\n  ' + '\n  '.join(problems[:20]))
  return _unflat(new)


def _flat(tree, prefix=()):
  for key, value in tree.items():
    if isinstance(value, Mapping):
      yield from _flat(value, prefix + (key,))
    else:
      yield prefix + (key,), value


def _unflat(items: Mapping[Path, Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, value in items.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


TORCH_SUFFIXES = ('.pth', '.pt', '.bin')
KERAS_SUFFIXES = ('.h5', '.keras')


def load_initial_variables(path: str, reference: str | None, model: nn.Module, variables: Variables,
                           input_shape: tuple[int, ...]) -> dict[str, Any]:
  """`variables` with the weights of `path`: a lightcls workdir, a timm/PyTorch file or a Keras file."""
  if os.path.isdir(path):
    from lightcls import checkpoint
    return port_by_path(variables, checkpoint.restore_variables(path), path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'config.init.checkpoint={path!r}: no such file or directory')
  if path.endswith(TORCH_SUFFIXES):
    return port_from_torch(model, variables, _torch_state_dict(path), input_shape)
  if path.endswith('.safetensors'):
    return port_from_torch(model, variables, _ordered_safetensors(path, reference), input_shape)
  if path.endswith(KERAS_SUFFIXES):
    return port_from_keras(model, variables, _keras_model(path, reference, getattr(model, 'width', 1.0)),
                           input_shape)
  raise ValueError(f'config.init.checkpoint={path!r}: unknown kind of file; give a lightcls workdir, '
                   f'a PyTorch state dict ({", ".join(TORCH_SUFFIXES)}, .safetensors) or a Keras file '
                   f'({", ".join(KERAS_SUFFIXES)})')


def _torch_state_dict(path: str) -> Mapping[str, Any]:
  import torch  # a pickled state dict needs torch to read; it keeps the modules' order
  state = torch.load(path, map_location='cpu', weights_only=True)
  for key in ('state_dict', 'model', 'state_dict_ema'):
    if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
      return state[key]
  return state


def _ordered_safetensors(path: str, reference: str | None) -> Mapping[str, Any]:
  """A .safetensors state dict (read without torch) in the module order of the timm model `reference`.

  The format stores tensors sorted by name, which is not the forward order; timm's model says it.
  """
  from safetensors.numpy import load_file
  tensors = load_file(path)
  if not reference:
    raise ValueError('config.init.reference must name the timm model of a .safetensors file (its layer order '
                     "is not in the file), e.g. config.init.reference='mobilenetv3_large_100'")
  import timm
  order = list(timm.create_model(reference, pretrained=False).state_dict())
  missing = [k for k in order if k not in tensors and not k.endswith('num_batches_tracked')]
  unexpected = [k for k in tensors if k not in order]
  headless = [k for k in missing if k.split('.')[0] in ('classifier', 'fc', 'head')]  # a "notop" file
  if unexpected or set(missing) - set(headless):
    raise PortError(f'{path} does not hold timm {reference!r}: missing {missing[:10]}, unexpected '
                    f'{unexpected[:10]}')
  return collections.OrderedDict((k, tensors[k]) for k in order if k in tensors)


def _keras_model(path: str, reference: str | None, width: float = 1.0) -> Any:
  """The keras.applications model `reference` (at width multiplier `width`, its `alpha`, where it has one)
  with the weights of `path` (with or without its top)."""
  if not reference:
    raise ValueError('config.init.reference must name the keras.applications model of a Keras weights '
                     "file, e.g. config.init.reference='MobileNetV3Large'")
  os.environ.setdefault('KERAS_BACKEND', 'jax')
  import keras
  constructor = getattr(keras.applications, reference, None)
  if constructor is None:
    raise ValueError(f'config.init.reference={reference!r} is not in keras.applications')
  options = {'alpha': width} if 'alpha' in inspect.signature(constructor).parameters else {}
  errors = []
  for include_top in (True, False):
    try:
      model = constructor(weights=None, include_top=include_top, **options)
      model.load_weights(path)
      return model
    except ValueError as error:  # a top/no-top file loaded into the other kind of model
      errors.append(str(error).splitlines()[0])
  raise PortError(f'{path} does not fit keras.applications.{reference}: {errors}')
