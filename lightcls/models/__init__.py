"""Model registry: config.model.name -> constructor. Every model takes the same common options.

A constructor receives the `config.model` section and the class count and returns a Flax module whose
`__call__(images, train=False, return_features=False)` gives logits, or (logits, pre-logit features).
Options a model does not have are rejected (`unsupported`), never silently dropped.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import ml_collections

from lightcls.models import convolutions, efficientnet, ghostnet, linear, mobilenet
from lightcls.models.layers import CLASSIFIERS, CONV_IMPLS, PADDINGS, LayerConfig

# Options for every jax.jit that runs a model (convolutions.COMPILER_OPTIONS says why).
COMPILER_OPTIONS = convolutions.COMPILER_OPTIONS
# Options for the jit that initialises a model. It runs once, in well under a second, but XLA:CPU spent
# most of its compile in LLVM optimising each parameter's random-number kernels (GhostNet 1.0: 24 s;
# without LLVM optimisation 8 s, values within 1 ulp; experiments/RESULTS.md).
INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 0}
# config.model.cpu_codegen: how XLA:CPU writes a model's kernels. 'fast_compile', the default, takes its
# older kernel emitters: train-step compiles 10-40% shorter (GhostNet 1.0 at 32 px: 13-15 s against
# 17-20 s), the same results to float rounding. 'fast_steps' takes XLA's current MLIR emitters. Over three
# rounds of one fresh process per model and setting, the older emitters' train steps were as fast at 224 px
# and as fast or faster at 32 px, although they run the depthwise filter gradient's reduction on one core
# (2x slower on its own). Only compiled beside the newer ones in one process were they 3-12% slower
# (experiments/RESULTS.md, "CPU speed").
CPU_CODEGENS = ('fast_compile', 'fast_steps')


def compiler_options(cpu_codegen: str = 'fast_compile') -> dict[str, Any]:
  """The `compiler_options` of a jax.jit that runs a model, for config.model.cpu_codegen (ignored off CPU)."""
  if cpu_codegen not in CPU_CODEGENS:
    raise ValueError(f'cpu_codegen={cpu_codegen!r}: expected one of {CPU_CODEGENS}.')
  legacy = {'xla_cpu_use_fusion_emitters': False} if cpu_codegen == 'fast_compile' else {}
  return {**COMPILER_OPTIONS, **legacy}


def layer_config(config: ml_collections.ConfigDict) -> LayerConfig:
  return LayerConfig(bn_momentum=config.bn_momentum, bn_eps=config.bn_eps, padding=config.padding,
                     dtype=config.dtype, conv_impl=config.conv_impl)


def unsupported(config: ml_collections.ConfigDict, **defaults) -> None:
  """Raises if a key this model does not have is set away from its default (None / 'default')."""
  for key, default in defaults.items():
    if config[key] != default:
      raise ValueError(f'model.{key}={config[key]!r} is not an option of {config.name}; '
                       f'leave it at {default!r}')


def optional(value, default):
  """`value` unless it is None (the config's "the architecture's own")."""
  return default if value is None else value


def _ghostnet(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  unsupported(config, drop_path=None)
  head = 'timm' if config.head == 'default' else config.head
  return ghostnet.GhostNet(num_classes=num_classes, width=config.width, dropout=optional(config.dropout, 0.2),
                           head_features=optional(config.head_features, 1280), head=head,
                           small_input=config.small_input, layer=layer_config(config),
                           classifier=config.classifier)


def _mobilenet(version: str, size: str | None = None) -> Callable[[ml_collections.ConfigDict, int], nn.Module]:
  """MobileNet V1 / V2 / V3 (`size` small | large); dropout and head_features None: the architecture's own."""
  def build(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    # V1 has no head layer to resize.
    unsupported(config, drop_path=None, head='default', **({'head_features': None} if version == 'v1' else {}))
    common = dict(num_classes=num_classes, width=config.width, dropout=config.dropout,
                  small_input=config.small_input, layer=layer_config(config), classifier=config.classifier)
    if version == 'v1':
      return mobilenet.MobileNetV1(**common)
    if version == 'v2':
      return mobilenet.MobileNetV2(head_features=config.head_features, **common)
    return mobilenet.MobileNetV3(size=size, head_features=config.head_features, **common)
  return build


def _efficientnet(variant: str) -> Callable[[ml_collections.ConfigDict, int], nn.Module]:
  """EfficientNet-`variant` (b0..b7); dropout / head_features None: the variant's own, drop_path None: 0.2."""
  def build(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    unsupported(config, head='default')
    return efficientnet.EfficientNet(
        num_classes=num_classes, variant=variant, width=config.width,
        dropout=optional(config.dropout, efficientnet.VARIANTS[variant].dropout),
        drop_path=optional(config.drop_path, 0.2), head_features=config.head_features,
        small_input=config.small_input, layer=layer_config(config), classifier=config.classifier)
  return build


def _linear(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """Logistic regression on the flattened pixels (a baseline; the learning-rate search's convex test)."""
  unsupported(config, width=1.0, head_features=None, head='default', drop_path=None, small_input=False)
  return linear.Linear(num_classes=num_classes, dropout=optional(config.dropout, 0.0), layer=layer_config(config),
                       classifier=config.classifier)


HEADS = ('default', 'thesis')  # thesis: GhostNet of seed 000

MODELS: dict[str, Callable[[ml_collections.ConfigDict, int], nn.Module]] = {
    'ghostnet': _ghostnet,
    'mobilenet_v1': _mobilenet('v1'),
    'mobilenet_v2': _mobilenet('v2'),
    'mobilenet_v3_small': _mobilenet('v3', 'small'),
    'mobilenet_v3_large': _mobilenet('v3', 'large'),
    'efficientnet_b0': _efficientnet('b0'),
    'efficientnet_b1': _efficientnet('b1'),
    'efficientnet_b2': _efficientnet('b2'),
    'efficientnet_b3': _efficientnet('b3'),
    'efficientnet_b4': _efficientnet('b4'),
    'efficientnet_b5': _efficientnet('b5'),
    'efficientnet_b6': _efficientnet('b6'),
    'efficientnet_b7': _efficientnet('b7'),
    'linear': _linear,
}


def create_model(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """Builds the model named by `config.name` (a `config.model` section) for `num_classes` classes."""
  if config.name not in MODELS:
    raise ValueError(f'unknown model {config.name!r}; choose one of {sorted(MODELS)}')
  if config.classifier not in CLASSIFIERS:
    raise ValueError(f'model.classifier={config.classifier!r} is not one of {CLASSIFIERS} (cosine: normalised '
                     'features and weights, for loss.name=am_softmax)')
  return MODELS[config.name](config, num_classes)


def total_stride(config: ml_collections.ConfigDict) -> int:
  """How much the model shrinks an image before pooling: the convnets' five stride-2 stages (32), or three
  with small_input (8); the linear model, 1."""
  if config.name == 'linear':
    return 1
  return 8 if config.small_input else 32


def smallest_image(config: ml_collections.ConfigDict) -> int:
  """The smallest image size whose last stride-2 stage still has more than one pixel to halve (below it, the
  last stages compute on a 1x1 map of mostly padding)."""
  return total_stride(config) // 2 + 1


def create(name: str, num_classes: int, **options) -> nn.Module:
  """A model by name with any `config.model` option as a keyword, the rest at their defaults (for notebooks
  and scripts): `create('ghostnet', 10, width=0.5, small_input=True)`."""
  from configs import default
  config = default.get_config().model
  unknown = sorted(set(options) - set(config.keys()))
  if unknown:
    raise ValueError(f'unknown model option(s) {unknown}; the options are {sorted(set(config.keys()) - {"name"})}')
  config.name = name
  config.update(options)
  return create_model(config, num_classes)


__all__ = ['CLASSIFIERS', 'CONV_IMPLS', 'CPU_CODEGENS', 'HEADS', 'MODELS', 'PADDINGS', 'compiler_options', 'create',
           'create_model', 'layer_config', 'optional', 'smallest_image', 'total_stride', 'unsupported']
