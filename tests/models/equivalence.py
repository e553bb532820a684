"""Ports random reference weights into a lightcls model and compares eval-mode outputs."""
import jax
import jax.numpy as jnp
import numpy as np

from lightcls.models import convert
from tests import reference


def random_images(shape, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def lightcls_outputs(model, variables, images):
  """(logits, pre-logit features) of the ported model, eval mode, float32."""
  return jax.jit(lambda v, x: model.apply(v, x, return_features=True))(variables, images)


def timm_outputs(torch_model, images):
  """(logits, pre-logit features) of a timm model in eval mode on NHWC images."""
  import torch
  x = torch.from_numpy(images.transpose(0, 3, 1, 2))
  with torch.no_grad():
    features = torch_model.forward_head(torch_model.forward_features(x), pre_logits=True)
    return torch_model.get_classifier()(features).numpy(), features.numpy()


def scale_torch_classifier(torch_model, seed: int = 0) -> None:
  """Classifier weights of unit-variance logits: timm's tiny init would make any port look exact."""
  import torch
  classifier = torch_model.get_classifier()
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    classifier.weight.copy_(torch.randn(classifier.weight.shape, generator=generator)
                            / classifier.weight.shape[1] ** 0.5)
    classifier.bias.copy_(torch.randn(classifier.bias.shape, generator=generator))


# --- Keras references (MobileNet V1 / V2 / V3) ---------------------------------------------------------

def _keras_classifier(keras_model):
  """The last weight-holding layer: the classifier (Dense, or a 1x1 Conv2D as in MobileNet V1 / V3)."""
  return [layer for layer in reference._keras_leaves(keras_model) if layer.weights][-1]


def scale_keras_classifier(keras_model, seed: int = 0) -> None:
  """Keras counterpart of scale_torch_classifier: unit-variance logits, random bias."""
  rng = np.random.default_rng(seed)
  classifier = _keras_classifier(keras_model)
  kernel = classifier.kernel
  classifier.kernel.assign(rng.standard_normal(kernel.shape, dtype=np.float32) / kernel.shape[-2] ** 0.5)
  classifier.bias.assign(rng.standard_normal(classifier.bias.shape, dtype=np.float32))


def randomize_keras_biases(keras_model, seed: int = 0) -> None:
  """Small random convolution biases (Keras initialises them to zero, which would hide a mis-port)."""
  rng = np.random.default_rng(seed)
  for layer in reference._keras_leaves(keras_model):
    if type(layer).__name__ in ('Conv2D', 'Dense') and getattr(layer, 'bias', None) is not None:
      layer.bias.assign(0.1 * rng.standard_normal(layer.bias.shape, dtype=np.float32))


def keras_outputs(keras_model, images):
  """(logits, pre-logit features: the classifier's input) of a Keras classifier in inference mode."""
  keras = reference.keras()
  features = _keras_classifier(keras_model).input
  both = keras.Model(keras_model.input, [keras_model.outputs[0], features])
  logits, features = both.predict(images, batch_size=len(images), verbose=0)  # one jitted inference call
  return np.asarray(logits).reshape(len(images), -1), np.asarray(features).reshape(len(images), -1)


# MobileNet V1 / V2 are ReLU networks: with BatchNorm calibrated exactly (calibrate_*_batchnorm below), eval
# mode is chaotic there (float32 rounding grows ~1.5x per layer, to 2e-4 in V1's pre-logit features), as each
# BatchNorm scales up the channels that the ReLU before it leaves almost constant. Raising every moving
# variance below its layer's median to that median damps those channels: rounding stays ~1e-6 while the
# pre-logit features still differ by O(0.3) between two images.

def _at_least_median(var: np.ndarray) -> np.ndarray:
  return np.maximum(var, np.median(var)).astype(np.float32)


def damped_port_from_keras(model, keras_model, images):
  """calibrated_port_from_keras, then every moving variance raised to at least its layer's median."""
  randomize_keras_biases(keras_model)
  scale_keras_classifier(keras_model)
  calibrate_keras_batchnorm(keras_model, images)
  for layer in reference._keras_leaves(keras_model):
    if type(layer).__name__ == 'BatchNormalization':
      layer.moving_variance.assign(_at_least_median(np.asarray(layer.moving_variance.numpy())))
  return convert.port(_zero_variables(model, images.shape), convert.layer_order(model, images.shape),
                      convert.keras_layers(keras_model), 'Keras')



# --- Keras references (EfficientNet B0-B7) -----------------------------------------------------------------

def keras_with_random_weights(build, seed: int = 0):
  """The Keras model `build()` returns, with seeded NumPy weights in place of what Keras' initialisers draw.

  Keras draws each weight with a JAX random op compiled per shape: ~20 s for EfficientNet-B0 on two CPU cores,
  more for the larger ones. Built inside a StatelessScope the variables wait uninitialised; each is given a
  constant initialiser (kernels normal with std 1/sqrt(fan-in), BatchNorm and biases their usual constants,
  which the ports then randomise) and Keras initialises them on leaving the scope.
  """
  keras = reference.keras()
  rng = np.random.default_rng(seed)
  with keras.StatelessScope():
    model = build()
    for layer in reference._keras_leaves(model):
      depthwise = type(layer).__name__ == 'DepthwiseConv2D'
      for variable in layer.weights:
        value = _keras_initial_value(variable, depthwise, rng)
        if value is not None:
          variable._initializer = lambda shape, dtype=None, value=value: value  # pylint: disable=protected-access
  return model


def _keras_initial_value(variable, depthwise: bool, rng: np.random.Generator):
  name, shape = variable.path.rpartition('/')[2], tuple(variable.shape)
  if name in ('kernel', 'depthwise_kernel'):
    fan_in = int(np.prod(shape[:2] if depthwise else shape[:-1]))
    return rng.standard_normal(shape, dtype=np.float32) / fan_in ** 0.5
  constants = {'gamma': 1.0, 'moving_variance': 1.0, 'beta': 0.0, 'moving_mean': 0.0, 'bias': 0.0}
  return np.full(shape, constants[name], np.float32) if name in constants else None


def keras_after(keras_model, first_layer: str):
  """The sub-model from the input of layer `first_layer` on, with outputs (logits, pre-logit features).

  For EfficientNet: after its Rescaling and Normalization input layers, whose statistics lightcls leaves to
  the data pipeline. (Keras gives a cut model a copy of its input tensor, so the features output has to be
  chosen here, not afterwards from the cut model.)
  """
  keras = reference.keras()
  return keras.Model(keras_model.get_layer(first_layer).input,
                     [keras_model.outputs[0], _keras_classifier(keras_model).input])


def keras_predict_outputs(keras_model, images):
  """(logits, pre-logit features) of a Keras model whose two outputs are those (keras_after's), inference mode."""
  logits, features = keras_model.predict(images, batch_size=len(images), verbose=0)
  return np.asarray(logits).reshape(len(images), -1), np.asarray(features).reshape(len(images), -1)


# Calibrated BatchNorm. With random moving statistics far from those of the layer's input, every BatchNorm
# outputs mostly its (random) shift: in EfficientNet the image's part of the signal then shrinks ~10x per stage
# and the logits hardly depend on the image (measured: a spread of 5e-6 across images in B0 at 72 px), so a
# comparison at 1e-4 checks little beyond the constants. Here the moving statistics are those of each
# BatchNorm's input on the compared images (one training-mode pass), so every BatchNorm output is O(1) and
# image-dependent at any depth. The scales are drawn small (0.15-0.45) against the shifts (0.2 N(0, 1)): with
# scales ~1 a deep EfficientNet in eval mode is chaotic (B7: float32 rounding grows to 6e-3 in the logits;
# statistics off by a few percent blow the logits up to 1e4 and more).
BATCHNORM_SCALE = (0.15, 0.45)


def calibrate_keras_batchnorm(keras_model, images, seed: int = 0) -> None:
  """Random BatchNorm scale and shift; moving statistics := those of each BatchNorm's input on `images`."""
  rng = np.random.default_rng(seed)
  layers = list(reference._keras_leaves(keras_model))
  batchnorms = [layer for layer in layers if type(layer).__name__ == 'BatchNormalization']
  dropouts = [layer for layer in layers if type(layer).__name__ == 'Dropout']
  saved = [(layer, layer.momentum) for layer in batchnorms], [(layer, layer.rate) for layer in dropouts]
  for layer in batchnorms:
    n = layer.gamma.shape[0]
    layer.gamma.assign(rng.uniform(*BATCHNORM_SCALE, n).astype(np.float32))
    layer.beta.assign(0.2 * rng.standard_normal(n, dtype=np.float32))
    layer.momentum = 0.0  # moving := the batch's statistics
  for layer in dropouts:
    layer.rate = 0.0      # stochastic depth and classifier dropout off for the pass
  try:
    trainable = [v.value for v in keras_model.trainable_variables]
    non_trainable = [v.value for v in keras_model.non_trainable_variables]
    step = jax.jit(lambda t, n, x: keras_model.stateless_call(t, n, x, training=True)[1])
    for variable, value in zip(keras_model.non_trainable_variables, step(trainable, non_trainable, images)):
      variable.assign(value)
  finally:
    for layer, momentum in saved[0]:
      layer.momentum = momentum
    for layer, rate in saved[1]:
      layer.rate = rate


def calibrate_torch_batchnorm(torch_model, images, seed: int = 0) -> None:
  """PyTorch counterpart of calibrate_keras_batchnorm (biased variance, as Keras and Flax keep it).

  The pass runs in training mode with the model's own drop rates: create it with timm's default of 0.
  """
  import torch
  generator = torch.Generator().manual_seed(seed)
  batchnorms = [m for m in torch_model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
  statistics, hooks = {}, []
  for m in batchnorms:
    with torch.no_grad():
      low, high = BATCHNORM_SCALE
      m.weight.copy_(low + (high - low) * torch.rand(m.num_features, generator=generator))
      m.bias.copy_(0.2 * torch.randn(m.num_features, generator=generator))
    hooks.append(m.register_forward_pre_hook(
        lambda module, args: statistics.__setitem__(
            module, (args[0].mean((0, 2, 3)), args[0].var((0, 2, 3), unbiased=False)))))
  torch_model.train()
  try:
    with torch.no_grad():
      torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2)))
  finally:
    torch_model.eval()
    for hook in hooks:
      hook.remove()
  with torch.no_grad():
    for m in batchnorms:
      m.running_mean.copy_(statistics[m][0])
      m.running_var.copy_(statistics[m][1])


def randomize_torch_biases(torch_model, seed: int = 0) -> None:
  """Small random convolution biases (timm initialises EfficientNet's to zero, which would hide a mis-port)."""
  import torch
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in torch_model.modules():
      if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=generator))


def _zero_variables(model, input_shape):
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(input_shape)))
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), variables)


def calibrated_port_from_keras(model, keras_model, images):
  """lightcls variables from a Keras model with random biases and classifier, BatchNorm calibrated on `images`."""
  randomize_keras_biases(keras_model)
  scale_keras_classifier(keras_model)
  calibrate_keras_batchnorm(keras_model, images)
  return convert.port(_zero_variables(model, images.shape), convert.layer_order(model, images.shape),
                      convert.keras_layers(keras_model), 'Keras')


def calibrated_port_from_timm(model, torch_model, images):
  """lightcls variables from a timm model with random biases and classifier, BatchNorm calibrated on `images`."""
  randomize_torch_biases(torch_model)
  scale_torch_classifier(torch_model)
  calibrate_torch_batchnorm(torch_model, images)
  return convert.port_from_torch(model, _zero_variables(model, images.shape), torch_model.state_dict(),
                                 images.shape)

