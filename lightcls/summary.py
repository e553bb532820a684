"""Per-block table of a model: output shape, parameters, MACs; totals; CPU latency of the forward pass.

  python -m lightcls.summary --config=configs/quickstart.py --config.model.name=mobilenet_v3_large \\
      --image_size=224 --num_classes=1000
  python -m lightcls.summary --zoo       # the README's model zoo table

MACs are the multiply-accumulates of the convolutions and matrix products (as REFERENCE.md counts them:
padding taps included), each taken from XLA's cost analysis of that operation at its shape in the traced
forward pass (batch 1), with the zero padding made part of the input; the whole program's XLA FLOPs, which
add BatchNorm and activations and leave out padding, are printed beside them.
"""
from __future__ import annotations

import collections
import dataclasses
import statistics
import time
from typing import Any, Iterable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags

from lightcls import cli, config_utils, models
from lightcls.models import convert

MATMUL_PRIMITIVES = ('conv_general_dilated', 'dot_general')


@dataclasses.dataclass
class Row:
  name: str
  shape: tuple[int, ...]
  params: int
  macs: int


def _sub_jaxprs(params: Mapping[str, Any]) -> Iterable[Any]:
  for value in params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jax.extend.core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jax.extend.core.Jaxpr):
        yield item


def _matmul_equations(jaxpr, scope: str = '') -> Iterable[tuple[str, Any]]:
  """(module path, equation) of every convolution / matrix product, inner jaxprs included."""
  for eqn in jaxpr.eqns:
    where = '/'.join(part for part in (scope, str(eqn.source_info.name_stack)) if part)
    if eqn.primitive.name in MATMUL_PRIMITIVES:
      yield where, eqn
    for inner in _sub_jaxprs(eqn.params):
      yield from _matmul_equations(inner, where)


def _with_explicit_padding(eqn) -> tuple[list[jax.ShapeDtypeStruct], dict]:
  """Operands and parameters of the equation, a convolution's zero padding made part of its input.

  XLA's cost analysis leaves out the products with padding zeros; the usual MAC count (REFERENCE.md's,
  PyTorch profilers') includes them: every output position costs every kernel tap.
  """
  args = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars]
  params = dict(eqn.params)
  if eqn.primitive.name == 'conv_general_dilated':
    shape = list(args[0].shape)
    for axis, (low, high) in zip(params['dimension_numbers'].lhs_spec[2:], params['padding']):
      shape[axis] += low + high
    args[0] = jax.ShapeDtypeStruct(tuple(shape), args[0].dtype)
    params['padding'] = tuple((0, 0) for _ in params['padding'])
  return args, params


def _xla_macs(eqn, cache: dict) -> int:
  """Multiply-accumulates of one equation by XLA's cost analysis (FLOPs / 2) of it alone."""
  key = (eqn.primitive.name, tuple((v.aval.shape, str(v.aval.dtype)) for v in eqn.invars), str(eqn.params))
  if key not in cache:
    args, params = _with_explicit_padding(eqn)
    cost = jax.jit(lambda *a: eqn.primitive.bind(*a, **params)).lower(*args).cost_analysis()
    cache[key] = round((cost[0] if isinstance(cost, (list, tuple)) else cost)['flops'] / 2)
  return cache[key]


def macs_by_block(model: nn.Module, variables: Any, image_shape: tuple[int, ...],
                  blocks: Iterable[str]) -> dict[str, int]:
  """MACs of each top-level block of the model for one image (key None: outside every block)."""
  x = jnp.zeros((1, *image_shape), jnp.float32)
  jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x))(variables, x)
  macs: dict[str | None, int] = collections.defaultdict(int)
  cache: dict = {}
  blocks = set(blocks)
  for where, eqn in _matmul_equations(jaxpr.jaxpr):
    # The name stack is the module path, with the names of methods other than __call__ in between.
    block = next((part for part in where.split('/') if part in blocks), None)
    macs[block] += _xla_macs(eqn, cache)
  return dict(macs)


def block_rows(model: nn.Module, image_shape: tuple[int, ...]) -> list[Row]:
  """One row per top-level block, in forward order: output shape (batch 1), parameters, MACs."""
  x = jnp.zeros((1, *image_shape), jnp.float32)
  top_level = lambda module, method: method == '__call__' and len(module.scope.path) == 1
  (_, variables) = jax.eval_shape(
      lambda: model.init_with_output(jax.random.PRNGKey(0), x, capture_intermediates=top_level))
  outputs = variables['intermediates']
  names = convert.top_level_blocks(model, (1, *image_shape))
  macs = macs_by_block(model, {k: v for k, v in variables.items() if k != 'intermediates'}, image_shape,
                       names)
  if macs.get(None):
    raise RuntimeError(f'{macs[None]} MACs outside every top-level block of {type(model).__name__}')
  return [Row(name, tuple(outputs[name]['__call__'][0].shape[1:]),
              sum(leaf.size for leaf in jax.tree.leaves(variables['params'][name])), macs.get(name, 0))
          for name in names]


def xla_flops(model: nn.Module, image_shape: tuple[int, ...]) -> float:
  x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(x.shape)))
  cost = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, x).cost_analysis()
  return (cost[0] if isinstance(cost, (list, tuple)) else cost)['flops']


def latency(model: nn.Module, image_shape: tuple[int, ...], batch: int, repeats: int,
            cpu_codegen: str) -> float:
  """Median seconds of one jit-compiled eval forward pass at `batch` (after compiling and a warm-up)."""
  x = jnp.asarray(jax.random.normal(jax.random.PRNGKey(1), (batch, *image_shape)))
  variables = jax.jit(model.init, compiler_options=models.INIT_COMPILER_OPTIONS)(jax.random.PRNGKey(0), x[:1])
  forward = jax.jit(lambda v, x: model.apply(v, x), compiler_options=models.compiler_options(cpu_codegen))
  jax.block_until_ready(forward(variables, x))
  jax.block_until_ready(forward(variables, x))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(forward(variables, x))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def summary_model(config: ml_collections.ConfigDict, num_classes: int, conv_impl: str = 'xla') -> nn.Module:
  """The configured model; MACs are counted on XLA's convolutions, whatever the run would use."""
  model_config = ml_collections.ConfigDict(config.model.to_dict())
  model_config.conv_impl = conv_impl
  return models.create_model(model_config, num_classes)


def format_table(rows: list[Row]) -> str:
  lines = [f"{'block':<14} {'output':>16} {'params':>12} {'MMACs':>10}"]
  for row in rows:
    shape = 'x'.join(str(d) for d in row.shape)
    lines.append(f'{row.name:<14} {shape:>16} {row.params:>12,} {row.macs / 1e6:>10.1f}')
  lines.append(f"{'total':<14} {'':>16} {sum(r.params for r in rows):>12,} "
               f'{sum(r.macs for r in rows) / 1e6:>10.1f}')
  return '\n'.join(lines)


# The model zoo table of the README: (name, width) rows, each at its own input size and at 32 px small-input.
ZOO = [('ghostnet', 0.5), ('ghostnet', 1.0), ('ghostnet', 1.3),
       *((f'efficientnet_b{i}', 1.0) for i in range(8)),
       ('mobilenet_v1', 1.0), ('mobilenet_v1', 0.75), ('mobilenet_v2', 1.0),
       ('mobilenet_v3_large', 1.0), ('mobilenet_v3_large', 0.75), ('mobilenet_v3_small', 1.0)]


def native_size(name: str) -> int:
  """The input size a model was designed for (EfficientNet's per-variant resolution, else 224)."""
  if name.startswith('efficientnet_'):
    from lightcls.models import efficientnet
    return efficientnet.VARIANTS[name.rpartition('_')[2]].resolution
  return 224


def zoo_table() -> str:
  """Markdown: params (1000 classes) and MACs at the native size, and MACs of the 32 px small-input form."""
  from configs import default
  lines = ['| model | width | input | params (1000 classes) | MMACs | small-input MMACs at 32 px |',
           '|---|---|---|---|---|---|']
  for name, width in ZOO:
    config = default.get_config()
    config.model.update(name=name, width=width)
    size = native_size(name)
    rows = block_rows(summary_model(config, 1000), (size, size, 3))
    config.model.small_input = True
    small = block_rows(summary_model(config, 1000), (32, 32, 3))
    lines.append(f'| {name} | {width} | {size} | {sum(r.params for r in rows):,} | '
                 f'{sum(r.macs for r in rows) / 1e6:.1f} | {sum(r.macs for r in small) / 1e6:.1f} |')
  return '\n'.join(lines)


FLAGS = flags.FLAGS
cli.define_config_flag(required=False)
flags.DEFINE_boolean('zoo', False, 'Print the model zoo table (every model, Markdown) instead.')
flags.DEFINE_integer('image_size', None, 'Input size (default: config.data.image_size).')
flags.DEFINE_integer('channels', None, 'Input channels (default: one per config.data.mean value).')
flags.DEFINE_integer('num_classes', 1000, 'Classes of the classifier.')
flags.DEFINE_boolean('latency', True, 'Also time the jit-compiled forward pass on this machine.')
flags.DEFINE_integer('repeats', 10, 'Timed forward passes per batch size.')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.use_compilation_cache()
  if FLAGS.zoo:
    print(zoo_table())
    return
  if FLAGS.config is None:
    raise app.UsageError('--config is required (or --zoo)')
  config = FLAGS.config
  try:
    config_utils.validate(config)
  except config_utils.ConfigError as e:
    raise SystemExit(f'lightcls: {e}') from None
  size = FLAGS.image_size or config.data.image_size
  image_shape = (size, size, FLAGS.channels or len(config.data.mean))
  model = summary_model(config, FLAGS.num_classes)
  rows = block_rows(model, image_shape)
  print(f'{config.model.name} (width {config.model.width}), input {"x".join(map(str, image_shape))}, '
        f'{FLAGS.num_classes} classes')
  print(format_table(rows))
  print(f'XLA FLOPs of the whole forward pass (batch 1): {xla_flops(model, image_shape) / 1e6:.1f}M')
  if FLAGS.latency:
    run_model = models.create_model(config.model, FLAGS.num_classes)
    codegen = config.model.cpu_codegen
    one = latency(run_model, image_shape, 1, FLAGS.repeats, codegen)
    many = latency(run_model, image_shape, 32, max(2, FLAGS.repeats // 4), codegen)
    print(f'{jax.devices()[0].platform} latency: {1e3 * one:.1f} ms/image at batch 1, '
          f'{32 / many:.0f} images/s at batch 32')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
