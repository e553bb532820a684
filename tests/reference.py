"""Reference implementations for the equivalence tests: timm (PyTorch CPU) and Keras 3 (JAX backend).

There is no CPU build of torchvision, which timm imports (its data and transform modules, and
FrozenBatchNorm2d in isinstance checks); the model classes work with placeholder modules in its place.
"""
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types



class _Placeholder(type):
  """A class whose every attribute is another such class: enough for timm's import-time uses."""

  def __getattr__(cls, name):
    if name.startswith('__'):
      raise AttributeError(name)
    return _Placeholder(name, (), {})


class _PlaceholderModule(types.ModuleType):
  def __getattr__(self, name):
    if name.startswith('__'):
      raise AttributeError(name)
    return _Placeholder(name, (), {})


class _TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Answers every `torchvision.*` import with a placeholder module (torchvision has no CPU build)."""

  def find_spec(self, fullname, path=None, target=None):
    if fullname == 'torchvision' or fullname.startswith('torchvision.'):
      return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
    return None

  def create_module(self, spec):
    module = _PlaceholderModule(spec.name)
    module.__path__ = []
    return module

  def exec_module(self, module):
    pass


def timm():
  """timm, importable without torchvision (its model classes only name torchvision's FrozenBatchNorm2d).

  Torch's global generator is seeded on every call: the model created next gets the same random weights
  whatever ran before in this process (with pytest-xdist that depends on how test files were shared out;
  a port compared within 1e-4 failed on one such draw)."""
  import torch
  if importlib.util.find_spec('torchvision') is None:
    sys.meta_path.append(_TorchvisionStandIn())
  import timm as timm_module
  torch.set_num_threads(2)
  torch.manual_seed(0)
  return timm_module


def keras():
  """Keras 3 on the JAX backend."""
  os.environ.setdefault('KERAS_BACKEND', 'jax')
  import keras as keras_module
  if keras_module.backend.backend() != 'jax':
    raise RuntimeError('Keras must run on the JAX backend here: set KERAS_BACKEND=jax before importing it')
  return keras_module


def randomize_torch_batchnorm(module, seed: int = 0) -> None:
  """Random BatchNorm affine parameters and running statistics, so a port that mixes them up shows."""
  import torch
  generator = torch.Generator().manual_seed(seed)
  for layer in module.modules():
    if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
      with torch.no_grad():
        n = layer.num_features
        layer.weight.copy_(0.5 + torch.rand(n, generator=generator))
        layer.bias.copy_(0.2 * torch.randn(n, generator=generator))
        layer.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
        layer.running_var.copy_(0.5 + torch.rand(n, generator=generator))


def _keras_leaves(model):
  for layer in model.layers:
    yield from (_keras_leaves(layer) if hasattr(layer, 'layers') else (layer,))
