"""CPU inference latency of lightcls's exported models against the same timm architectures exported to ONNX and
run by onnxruntime, side by side in one run.

  python experiments/bench_latency.py                      # 5 models, batch 1 and 32, float32 and int8, 224 px
  python experiments/bench_latency.py --models=mobilenet_v3_small --batch_sizes=1 --image_size=96

lightcls: each model (random weights, random BatchNorm statistics, BatchNorm folded, softmax at the end: what
`python -m lightcls.export` exports) written by `lightcls.export.write_tflite` / `write_onnx` with a fixed batch
(one export per batch size; batch 1 is the phone case) and run by `lightcls.deployed.load`: LiteRT for .tflite,
onnxruntime for .onnx. timm: `timm.create_model(name).eval()` (plus the same softmax), `torch.onnx.export`
(TorchScript exporter, opset 17, fixed batch, NCHW) run by onnxruntime. int8 on the onnxruntime side is the same
recipe for both (`lightcls.export.quantized_onnx`: QDQ, per-channel int8 weights, uint8 activations); LiteRT's
int8 is the TFLite converter's full-integer quantization of the weights and activations (float32 input and
output).

Calibration uses random normal model inputs (--calibration_images of them, the same on both sides): activation
ranges do not change the latency. Whether int8 keeps the accuracy is checked by the export on real images, not
here: with random weights the 1000 probabilities are near-equal (LiteRT's int8 softmax, in steps of 1/256, may
give all zeros; onnxruntime's too), so int8 outputs are only checked to be finite and in [0, 1]; float32 ones to
sum to 1 and to match the unexported model (JAX, PyTorch) within 1e-3 of its largest probability.

Fair play: the same input size, batch, thread count (--threads; onnxruntime intra-op threads, inter-op 1; LiteRT
num_threads) and input values on both sides; every model of a row is loaded and warmed up, then all are timed in
--repeats rounds, each giving every model in turn a block of consecutive calls (so caches stay warm as in an app,
and background load falls on all alike): median seconds of the runtime call alone (LiteRT set_tensor, invoke,
get_tensor; onnxruntime session.run), conversion and the Deployed wrapper's batching not included. Single calls
taken in turns instead measured several times slower on 2 cores (the previous runtime's threads still spin).
A conversion that fails leaves its cell 'failed' and is named under the table, as are outputs that fail a check.

Batch 1 is reported as ms/image, larger batches as images/s. `ratio` is timm's time / the faster of ours: above
1 means ours is faster (the issue's goal, ours/timm <= 1.0, is ratio >= 1.0). `int8 x` is float32 time / int8
time of the same column: above 1 means int8 is faster.

The seed 002 OpenVINO figures (MobileNetV3-Small 2.05 ms, MobileNetV3-Large 2.89 ms, EfficientNet-B0 3.01 ms at
batch 1) were measured on another CPU: compare them with this table only through the timm/onnxruntime column.
"""
import argparse
import dataclasses
import importlib.metadata
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TensorFlow's start-up notices

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bench_train  # noqa: E402  (the timm model names)
from configs import default  # noqa: E402
from lightcls import deployed, export, models  # noqa: E402
from lightcls.models import layers  # noqa: E402
from tests import reference  # noqa: E402

MODELS = 'ghostnet,efficientnet_b0,mobilenet_v3_large,mobilenet_v3_small,mobilenet_v2'
OURS = {'tflite': export.write_tflite, 'onnx': export.write_onnx}
PACKAGES = ('jax', 'tensorflow-cpu', 'ai-edge-litert', 'tf2onnx', 'onnxruntime', 'torch', 'timm')


def environment(threads: int) -> str:
  """CPU model and the instruction sets int8 speed depends on, the versions of every runtime and converter."""
  cpu, flags = platform.processor() or '?', set()
  if os.path.exists('/proc/cpuinfo'):
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'model name':
          cpu = value.strip()
        elif key.strip() == 'flags':
          flags = set(value.split())
  isa = [x for x in ('avx2', 'avx512f', 'avx512_vnni', 'avx_vnni', 'amx_int8') if x in flags]
  versions = []
  for package in PACKAGES:
    try:
      versions.append(f'{package} {importlib.metadata.version(package)}')
    except importlib.metadata.PackageNotFoundError:
      versions.append(f'{package} -')
  return (f'CPU: {cpu} ({os.cpu_count()} cores; {" ".join(isa) or "no avx2"}), {threads} threads; '
          + ', '.join(versions))


def lightcls_function(name: str, size: int, seed: int = 0):
  """images (N, size, size, 3) -> probabilities of the 1000-class model `name` as lightcls exports it: random
  weights and BatchNorm statistics, BatchNorm folded into the convolutions, XLA convolutions, float32."""
  config = default.get_config()
  config.model.name = name
  model = models.create_model(config.model, 1000)
  variables = jax.jit(model.init, compiler_options=models.INIT_COMPILER_OPTIONS)(jax.random.PRNGKey(seed), jnp.zeros((1, size, size, 3), jnp.float32))
  rng = np.random.default_rng(seed)
  stats = jax.tree_util.tree_map_with_path(  # non-trivial running statistics, as after training
      lambda path, x: (0.5 + rng.random(x.shape) if 'var' in jax.tree_util.keystr(path)
                       else 0.2 * rng.standard_normal(x.shape)).astype(np.float32), variables['batch_stats'])
  folded = layers.folded_batch_norm({'params': variables['params'], 'batch_stats': stats}, config.model.bn_eps)
  layer = dataclasses.replace(models.layer_config(config.model), conv_impl='xla', dtype='float32',
                              fold_batch_norm=True)
  inference = model.clone(layer=layer)
  return lambda images: jax.nn.softmax(inference.apply(folded, images).astype(jnp.float32))


def write_timm(name: str, size: int, batch: int, path: str, quantize: str, calibration: np.ndarray) -> np.ndarray:
  """Exports timm's `name` (eval mode, softmax at the end) to ONNX at `path`, int8 through onnxruntime's
  quantization; returns PyTorch's probabilities on the first `batch` calibration images (NCHW)."""
  import torch
  timm = reference.timm()  # timm without torchvision, which has no CPU build
  torch.manual_seed(0)
  model = torch.nn.Sequential(timm.create_model(bench_train.TIMM_NAMES[name], num_classes=1000),
                              torch.nn.Softmax(dim=1)).eval()
  reference.randomize_torch_batchnorm(model)  # as on our side: BatchNorm that is not the identity
  example = torch.from_numpy(calibration[:batch])
  with torch.inference_mode():
    expected = model(example).numpy()
  with tempfile.TemporaryDirectory() as scratch:
    float_path = path if quantize == 'float32' else os.path.join(scratch, 'float.onnx')
    torch.onnx.export(model, (example,), float_path, input_names=['images'], output_names=['probabilities'],
                      opset_version=export.ONNX_OPSET, dynamo=False)
    if quantize == 'int8':
      export.quantized_onnx(float_path, path, calibration, batch)
  return expected


def runtime_call(model: deployed.Deployed):
  """The runtime's own call on one full batch (LiteRT set_tensor/invoke/get_tensor, or session.run), without
  the Deployed wrapper's chunking and padding, which copies the input."""
  return model._run


def median_seconds_in_turns(calls: dict, rounds: int, seconds: float, warmup: int) -> dict:
  """Median seconds of each zero-argument call: all warmed up, then timed in `rounds` rounds that give each
  call in turn a block of consecutive calls (for `seconds` / `rounds`, at least one call), so that caches stay
  warm within a block as in an app, and background load falls on every call alike."""
  for call in calls.values():
    for _ in range(warmup):
      call()
  times = {key: [] for key in calls}
  for _ in range(rounds):
    for key, call in calls.items():
      start = time.perf_counter()
      while True:
        begin = time.perf_counter()
        call()
        end = time.perf_counter()
        times[key].append(end - begin)
        if end - start >= seconds / rounds:
          break
  return {key: statistics.median(values) for key, values in times.items()}


def sane(probabilities: np.ndarray, quantize: str) -> str:
  """'' if the outputs are probabilities (float32: rows summing to 1; int8: finite, in [0, 1]), else why not."""
  p = np.asarray(probabilities, np.float32)
  if not np.all(np.isfinite(p)) or p.min() < -1e-3 or p.max() > 1 + 1e-3:
    return f'outputs outside [0, 1] or not finite (min {p.min():.3g}, max {p.max():.3g})'
  sums = p.sum(1)
  if quantize == 'float32' and np.abs(sums - 1).max() > 1e-3:
    return f'rows sum to {sums.min():.4f}..{sums.max():.4f}, not 1'
  return ''


def bench_row(name: str, size: int, batch: int, args, calibration: np.ndarray, scratch: str) -> dict:
  """Seconds per call of every (side, precision) of one model at one batch size that converted, and notes on
  conversions that failed and outputs that are not what they should be."""
  fn = lightcls_function(name, size)  # not jitted: the exporter traces it afresh (int8 changes hard-swish's form)
  spec = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  nhwc = calibration[:batch]
  nchw = np.ascontiguousarray(calibration.transpose(0, 3, 1, 2))
  want = np.asarray(jax.jit(fn)(nhwc))
  calls, notes, convert_s = {}, [], {}
  for quantize in args.quantize.split(','):
    for side in (*args.formats.split(','), 'timm'):
      what = f'{name} batch {batch} {side} {quantize}'
      path = os.path.join(scratch, f'{name}-{batch}-{quantize}-{side}.{"tflite" if side == "tflite" else "onnx"}')
      start = time.perf_counter()
      try:
        if side == 'timm':
          images, expected = nchw[:batch], write_timm(name, size, batch, path, quantize, nchw)
        else:
          OURS[side](fn, spec, path, quantize, calibration)
          images, expected = nhwc, want
        call = _bound(runtime_call(deployed.load(path, args.threads)), images)
        output = call()
      except Exception as error:  # noqa: BLE001  (a failed conversion leaves the rest of the table)
        lines = str(error).strip().splitlines()
        notes.append(f'{what}: failed: {type(error).__name__}: {lines[-1] if lines else ""}')
        print(f'  {notes[-1]}', flush=True)
        continue
      convert_s[f'{side} {quantize}'] = time.perf_counter() - start
      calls[side, quantize] = call
      notes += _check(what, output, expected, quantize)
  print('  converted in ' + ', '.join(f'{k} {v:.0f} s' for k, v in convert_s.items()), flush=True)
  seconds = median_seconds_in_turns(calls, args.repeats, args.seconds, args.warmup)
  return {'seconds': seconds, 'notes': notes}


def _bound(run, images: np.ndarray):
  return lambda: run(images)


def _check(what: str, got: np.ndarray, want: np.ndarray, quantize: str) -> list[str]:
  """Notes on outputs that are not probabilities, or (float32) that differ from the unexported model's."""
  problem = sane(got, quantize)
  error = np.abs(got - want).max() / want.max()  # relative: random weights give near-equal probabilities
  if not problem and quantize == 'float32' and error > 1e-3:
    problem = f'differs from the unexported model by {error:.2g} of its largest probability'
  if problem:
    print(f'  WARNING {what}: {problem}', flush=True)
  return [f'{what}: {problem}'] if problem else []


def cell(seconds: float | None, batch: int) -> str:
  if seconds is None:
    return 'failed'
  return f'{1e3 * seconds / batch:.2f} ms' if batch == 1 else f'{batch / seconds:.0f} img/s'


def ratio(numerator: float | None, denominator: float | None) -> str:
  return '-' if numerator is None or denominator is None else f'{numerator / denominator:.2f}'


def table(rows: list, formats: list[str], precisions: list[str]) -> str:
  lines = ['model | precision | batch | ' + ' | '.join(f'lightcls {f}' for f in formats)
           + ' | timm onnx | ratio timm/ours | int8 x: ' + ', '.join(f'lightcls {f}' for f in formats)
           + ', timm', '---|---|---' + '|---' * (len(formats) + 3)]
  for name, batch, result in rows:
    seconds = result['seconds']
    for precision in precisions:
      ours = [seconds.get((f, precision)) for f in formats]
      best = min((s for s in ours if s is not None), default=None)
      theirs = seconds.get(('timm', precision))
      speedups = '-'
      if precision == 'int8' and 'float32' in precisions:
        speedups = ', '.join(ratio(seconds.get((side, 'float32')), seconds.get((side, 'int8')))
                             for side in (*formats, 'timm'))
      lines.append(f'{name} | {precision} | {batch} | ' + ' | '.join(cell(s, batch) for s in ours)
                   + f' | {cell(theirs, batch)} | {ratio(theirs, best)} | {speedups}')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--models', default=MODELS)
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--batch_sizes', default='1,32', help='comma-separated; one fixed-batch export each')
  parser.add_argument('--quantize', default='float32,int8', help='comma-separated: float32, int8')
  parser.add_argument('--formats', default='tflite,onnx', help="ours, comma-separated: tflite, onnx")
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--repeats', type=int, default=5, help='timed rounds: blocks of calls of each model in turn')
  parser.add_argument('--seconds', type=float, default=3.0, help='timing seconds per model (all its rounds)')
  parser.add_argument('--warmup', type=int, default=3, help='untimed calls of each model first')
  parser.add_argument('--calibration_images', type=int, default=64,
                      help='random normal inputs that calibrate int8 (>= the largest batch)')
  args = parser.parse_args()
  batch_sizes = [int(b) for b in args.batch_sizes.split(',')]
  formats, precisions = args.formats.split(','), args.quantize.split(',')
  if not set(formats) <= set(OURS) or not set(precisions) <= {'float32', 'int8'}:
    parser.error('--formats: tflite, onnx; --quantize: float32, int8')
  if args.calibration_images < max(batch_sizes):
    parser.error(f'--calibration_images must be >= the largest batch ({max(batch_sizes)})')
  warnings.filterwarnings('ignore', message='You are using the legacy TorchScript')  # chosen: dynamo=False
  warnings.filterwarnings('ignore', message=r'\s*Warning: tf.lite.Interpreter is deprecated')  # the calibrator's
  reference.timm()
  import torch
  torch.set_num_threads(args.threads)
  print(environment(args.threads), flush=True)
  calibration = np.random.default_rng(0).standard_normal(
      (args.calibration_images, args.image_size, args.image_size, 3)).astype(np.float32)
  rows = []
  with tempfile.TemporaryDirectory(prefix='bench_latency-') as scratch:
    for name in args.models.split(','):
      for batch in batch_sizes:
        print(f'{name} {args.image_size} px, batch {batch}:', flush=True)
        result = bench_row(name, args.image_size, batch, args, calibration, scratch)
        rows.append((name, batch, result))
        print('  ' + ', '.join(f'{k[0]} {k[1]} {cell(v, batch)}' for k, v in result['seconds'].items()),
              flush=True)
        for path in os.listdir(scratch):
          os.remove(os.path.join(scratch, path))
  print(f'\n{args.image_size} px, {args.threads} threads; batch 1 in ms/image (lower is better), larger batches '
        'in images/s (higher is better)\n')
  print(table(rows, formats, precisions))
  notes = [note for _, _, result in rows for note in result['notes']]
  if notes:
    print('\nFailures and checks that failed:\n' + '\n'.join(f'- {note}' for note in notes))


if __name__ == '__main__':
  main()
