"""Random augmentation on the device, inside the compiled train step (per-example keys, vmapped).

Each op is a deterministic function of explicit parameters (`affine(image, angle, translate, ...)`) plus a
sampler `random_<op>(key, image, **params)` that draws those parameters as torchvision's transform of the same
name does, with torchvision's parameter names, so the seed studies' settings carry over one to one:

  crop          RandomCrop(size, padding) with zero fill
  hflip         RandomHorizontalFlip(p)
  affine        RandomAffine(degrees, translate, scale, shear, interpolation, fill)
  rotation      RandomRotation(degrees, interpolation, fill)
  perspective   RandomPerspective(distortion_scale, p, interpolation, fill)
  resized_crop  RandomResizedCrop(image_size, scale, ratio), bilinear, back to the same size
  color_jitter  ColorJitter(brightness, contrast, saturation, hue), the four in a random order per call
  erasing       RandomErasing(p, scale, ratio, value), value in normalised units as after Normalize
  augmix        AugMix(severity, mixture_width=width, chain_depth=depth, alpha, all_ops), bilinear
  mixup, cutmix MixUp(alpha), CutMix(alpha): batch level, a batch is mixed with itself rolled by one

Images are float32 in [0, 1] between ops (`augment` takes uint8). Geometric ops resample as PIL does for
the PIL images the seed studies transformed: a pixel whose source point falls outside the image gets `fill`
(in 0-255 pixel units, as PIL's fillcolor), one inside it is interpolated with edge clamping.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import dm_pix
import jax
import jax.numpy as jnp
import ml_collections

Range = float | Sequence[float]
IMAGE_OPS = ('crop', 'hflip', 'affine', 'rotation', 'perspective', 'resized_crop', 'color_jitter', 'erasing',
             'augmix')
INTERPOLATIONS = ('nearest', 'bilinear')


# Resampling ---------------------------------------------------------------------------------------------

def resampled(image: jax.Array, rows: jax.Array, cols: jax.Array, interpolation: str = 'bilinear',
              fill: Range = 0.0) -> jax.Array:
  """`image` read at source points (rows, cols), each (H', W') in pixel-centre units (pixel k at k).

  Points outside [-0.5, size - 0.5) get `fill` (0-255 units), as in PIL's transforms.
  """
  height, width, channels = image.shape
  inside = (rows >= -0.5) & (rows < height - 0.5) & (cols >= -0.5) & (cols < width - 0.5)
  if interpolation == 'nearest':  # PIL rounds half up
    r = jnp.clip(jnp.floor(rows + 0.5), 0, height - 1).astype(jnp.int32)
    c = jnp.clip(jnp.floor(cols + 0.5), 0, width - 1).astype(jnp.int32)
    values = image[r, c]
  elif interpolation == 'bilinear':
    r0, c0 = jnp.floor(rows), jnp.floor(cols)
    dr, dc = (rows - r0)[..., None], (cols - c0)[..., None]
    r0, c0 = r0.astype(jnp.int32), c0.astype(jnp.int32)
    r0, r1 = jnp.clip(r0, 0, height - 1), jnp.clip(r0 + 1, 0, height - 1)
    c0, c1 = jnp.clip(c0, 0, width - 1), jnp.clip(c0 + 1, 0, width - 1)
    top = image[r0, c0] * (1 - dc) + image[r0, c1] * dc
    bottom = image[r1, c0] * (1 - dc) + image[r1, c1] * dc
    values = top * (1 - dr) + bottom * dr
  else:
    raise ValueError(f'interpolation {interpolation!r} is not one of {INTERPOLATIONS}')
  return jnp.where(inside[..., None], values, fill_value(fill, channels))


def fill_value(fill: Range, channels: int) -> jax.Array:
  """A fill given in 0-255 pixel units (one number, or one per channel) as a (channels,) vector in [0, 1]."""
  return jnp.broadcast_to(jnp.asarray(fill, jnp.float32) / 255.0, (channels,))


def _output_grid(height: int, width: int) -> tuple[jax.Array, jax.Array]:
  """(x, y) of the output pixel centres in PIL's edge units (pixel k spans [k, k + 1])."""
  y, x = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32) + 0.5, jnp.arange(width, dtype=jnp.float32) + 0.5,
                      indexing='ij')
  return x, y


def warped(image: jax.Array, inverse: jax.Array, interpolation: str = 'bilinear', fill: Range = 0.0) -> jax.Array:
  """Resamples `image` with `inverse`, the 3x3 homogeneous map from output (x, y, 1) to input, in edge units."""
  x, y = _output_grid(*image.shape[:2])
  source = jnp.tensordot(inverse, jnp.stack([x, y, jnp.ones_like(x)]), axes=1)
  cols, rows = source[0] / source[2] - 0.5, source[1] / source[2] - 0.5
  return resampled(image, rows, cols, interpolation, fill)


# Geometric ops ------------------------------------------------------------------------------------------

def random_crop(key: jax.Array, image: jax.Array, padding: int) -> jax.Array:
  """Pads `padding` zero pixels on every side and crops the original size at a uniform random offset."""
  height, width, channels = image.shape
  padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  top, left = jax.random.randint(key, (2,), 0, 2 * padding + 1)
  return jax.lax.dynamic_slice(padded, (top, left, 0), (height, width, channels))


def random_hflip(key: jax.Array, image: jax.Array, p: float) -> jax.Array:
  return jnp.where(jax.random.bernoulli(key, p), dm_pix.flip_left_right(image), image)


def inverse_affine_matrix(center: Sequence, angle, translate: Sequence, scale, shear: Sequence) -> jax.Array:
  """torchvision's `_get_inverse_affine_matrix` (angles in degrees, clockwise) as a 3x3 homogeneous matrix."""
  rot, sx, sy = (jnp.deg2rad(jnp.asarray(a, jnp.float32)) for a in (angle, shear[0], shear[1]))
  (cx, cy), (tx, ty) = center, translate
  # rotation-scale-shear of the forward map, without the scale; its determinant is 1
  a = jnp.cos(rot - sy) / jnp.cos(sy)
  b = -jnp.cos(rot - sy) * jnp.tan(sx) / jnp.cos(sy) - jnp.sin(rot)
  c = jnp.sin(rot - sy) / jnp.cos(sy)
  d = -jnp.sin(rot - sy) * jnp.tan(sx) / jnp.cos(sy) + jnp.cos(rot)
  m00, m01, m10, m11 = d / scale, -b / scale, -c / scale, a / scale
  m02 = m00 * (-cx - tx) + m01 * (-cy - ty) + cx
  m12 = m10 * (-cx - tx) + m11 * (-cy - ty) + cy
  return jnp.array([[m00, m01, m02], [m10, m11, m12], [0.0, 0.0, 1.0]])


def affine(image: jax.Array, angle, translate: Sequence, scale, shear: Sequence, interpolation: str = 'nearest',
           fill: Range = 0.0, center: Sequence | None = None) -> jax.Array:
  """torchvision's F.affine: clockwise `angle` and `shear` (x, y) in degrees, `translate` (x, y) in pixels,
  about `center` (x, y) in edge units (default: the image centre)."""
  height, width = image.shape[:2]
  center = (width * 0.5, height * 0.5) if center is None else center
  return warped(image, inverse_affine_matrix(center, angle, translate, scale, shear), interpolation, fill)


def rotate(image: jax.Array, angle, interpolation: str = 'nearest', fill: Range = 0.0) -> jax.Array:
  """torchvision's F.rotate (and PIL's Image.rotate) without expand: `angle` degrees counter-clockwise."""
  return affine(image, -angle, (0.0, 0.0), 1.0, (0.0, 0.0), interpolation, fill)


def _range(value: Range, name: str, center: float = 0.0, lower: float | None = None) -> tuple[float, float]:
  """torchvision's reading of a number v as [center - v, center + v] (clipped at `lower`), or of a (min, max)."""
  if isinstance(value, (int, float)):
    if value < 0:
      raise ValueError(f'{name}={value} must not be negative')
    low = center - value
    return (low if lower is None else max(lower, low), center + value)
  if len(value) != 2 or value[0] > value[1]:
    raise ValueError(f'{name}={value} must be a number or a (min, max) pair')
  return float(value[0]), float(value[1])


def _shear_ranges(shear: Range) -> tuple[tuple[float, float], tuple[float, float]]:
  """RandomAffine's shear: a number or (min, max) for x only, or (xmin, xmax, ymin, ymax)."""
  if not isinstance(shear, (int, float)) and len(shear) == 4:
    return _range(tuple(shear[:2]), 'shear'), _range(tuple(shear[2:]), 'shear')
  return _range(shear, 'shear'), (0.0, 0.0)


def affine_params(key: jax.Array, image_size: tuple[int, int], degrees: Range, translate: Sequence[float],
                  scale: Sequence[float], shear: Range) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """RandomAffine.get_params: (angle, (tx, ty) whole pixels, scale, (shear_x, shear_y))."""
  height, width = image_size
  k_angle, k_translate, k_scale, k_shear = jax.random.split(key, 4)
  low, high = _range(degrees, 'degrees')
  angle = jax.random.uniform(k_angle, (), minval=low, maxval=high)
  max_shift = jnp.array([translate[0] * width, translate[1] * height], jnp.float32)
  shift = jnp.round(jax.random.uniform(k_translate, (2,), minval=-max_shift, maxval=max_shift))
  zoom = jax.random.uniform(k_scale, (), minval=scale[0], maxval=scale[1])
  (sx0, sx1), (sy0, sy1) = _shear_ranges(shear)
  shears = jax.random.uniform(k_shear, (2,), minval=jnp.array([sx0, sy0]), maxval=jnp.array([sx1, sy1]))
  return angle, shift, zoom, shears


def random_affine(key: jax.Array, image: jax.Array, degrees: Range, translate: Sequence[float] = (0.0, 0.0),
                  scale: Sequence[float] = (1.0, 1.0), shear: Range = 0.0, interpolation: str = 'nearest',
                  fill: Range = 0.0) -> jax.Array:
  angle, shift, zoom, shears = affine_params(key, image.shape[:2], degrees, translate, scale, shear)
  return affine(image, angle, shift, zoom, shears, interpolation, fill)


def applied_with(p: float, op: Callable[[jax.Array, jax.Array], jax.Array]):
  """torchvision's RandomApply([op], p): `op` on a random fraction p of the images (p = 1: always, with
  the op's own random numbers unchanged)."""
  if p >= 1.0:
    return op

  def sometimes(key: jax.Array, image: jax.Array) -> jax.Array:
    apply_key, op_key = jax.random.split(key)
    return jnp.where(jax.random.bernoulli(apply_key, p), op(op_key, image), image)
  return sometimes


def random_rotation(key: jax.Array, image: jax.Array, degrees: Range, interpolation: str = 'nearest',
                    fill: Range = 0.0, p: float = 1.0) -> jax.Array:
  def rotated(key, image):
    low, high = _range(degrees, 'degrees')
    return rotate(image, jax.random.uniform(key, (), minval=low, maxval=high), interpolation, fill)
  return applied_with(p, rotated)(key, image)


def perspective_inverse(startpoints: jax.Array, endpoints: jax.Array) -> jax.Array:
  """torchvision's `_get_perspective_coeffs` as a 3x3 matrix: maps the 4 `endpoints` (x, y) to `startpoints`."""
  (x, y), (u, v) = endpoints.T.astype(jnp.float32), startpoints.T.astype(jnp.float32)
  zero, one = jnp.zeros(4), jnp.ones(4)
  rows_u = jnp.stack([x, y, one, zero, zero, zero, -u * x, -u * y], axis=1)
  rows_v = jnp.stack([zero, zero, zero, x, y, one, -v * x, -v * y], axis=1)
  coeffs = jnp.linalg.solve(jnp.concatenate([rows_u, rows_v]), jnp.concatenate([u, v]))
  return jnp.append(coeffs, 1.0).reshape(3, 3)


def perspective(image: jax.Array, startpoints: jax.Array, endpoints: jax.Array, interpolation: str = 'bilinear',
                fill: Range = 0.0) -> jax.Array:
  """torchvision's F.perspective: the 4 corner `startpoints` (x, y) move to `endpoints`."""
  return warped(image, perspective_inverse(startpoints, endpoints), interpolation, fill)


def perspective_points(key: jax.Array, image_size: tuple[int, int],
                       distortion_scale: float) -> tuple[jax.Array, jax.Array]:
  """RandomPerspective.get_params: (startpoints, endpoints), each 4 corners (x, y) from top-left, clockwise."""
  height, width = image_size
  bound_h, bound_w = int(distortion_scale * (height // 2)) + 1, int(distortion_scale * (width // 2)) + 1
  near_x, near_y = jax.random.randint(key, (2, 4), 0, jnp.array([[bound_w], [bound_h]]))
  # corners: x near 0 for top-left and bottom-left, near width - 1 for the right ones; likewise y
  right, bottom = jnp.array([0, 1, 1, 0]), jnp.array([0, 0, 1, 1])
  ends = jnp.stack([jnp.where(right, width - 1 - near_x, near_x), jnp.where(bottom, height - 1 - near_y, near_y)],
                   axis=1)
  starts = jnp.stack([right * (width - 1), bottom * (height - 1)], axis=1)
  return starts, ends


def random_perspective(key: jax.Array, image: jax.Array, distortion_scale: float = 0.5, p: float = 0.5,
                       interpolation: str = 'bilinear', fill: Range = 0.0) -> jax.Array:
  apply_key, points_key = jax.random.split(key)
  starts, ends = perspective_points(points_key, image.shape[:2], distortion_scale)
  return jnp.where(jax.random.bernoulli(apply_key, p), perspective(image, starts, ends, interpolation, fill),
                   image)


def resized_crop(image: jax.Array, top, left, height, width) -> jax.Array:
  """torchvision's F.resized_crop to the image's own size, bilinear: crop (top, left, height, width), then
  upsample as PIL does (half-pixel centres, the crop's edge pixels repeated)."""
  out_h, out_w = image.shape[:2]
  rows = top + (jnp.arange(out_h) + 0.5) * height / out_h - 0.5
  cols = left + (jnp.arange(out_w) + 0.5) * width / out_w - 0.5
  rows = jnp.clip(rows, top, top + height - 1)
  cols = jnp.clip(cols, left, left + width - 1)
  rows, cols = jnp.meshgrid(rows, cols, indexing='ij')
  return resampled(image, rows, cols, 'bilinear')


def _sized_boxes(key: jax.Array, area: float, scale: Sequence[float], ratio: Sequence[float],
                 attempts: int = 10) -> tuple[jax.Array, jax.Array]:
  """`attempts` candidate box sides (sqrt(area * r), sqrt(area / r)) rounded, area and log-ratio uniform."""
  area_key, ratio_key = jax.random.split(key)
  target = area * jax.random.uniform(area_key, (attempts,), minval=scale[0], maxval=scale[1])
  aspect = jnp.exp(jax.random.uniform(ratio_key, (attempts,), minval=math.log(ratio[0]), maxval=math.log(ratio[1])))
  return jnp.round(jnp.sqrt(target * aspect)), jnp.round(jnp.sqrt(target / aspect))


def _first(valid: jax.Array, values: jax.Array) -> jax.Array:
  return values[jnp.argmax(valid)]


def resized_crop_box(key: jax.Array, image_size: tuple[int, int], scale: Sequence[float],
                     ratio: Sequence[float]) -> jax.Array:
  """RandomResizedCrop.get_params: (top, left, height, width) from the first of 10 tries that fits, else the
  central crop of the nearest allowed aspect ratio."""
  height, width = image_size
  box_key, top_key, left_key = jax.random.split(key, 3)
  w, h = _sized_boxes(box_key, height * width, scale, ratio)
  fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
  in_ratio = width / height
  if in_ratio < min(ratio):
    fallback = (width, round(width / min(ratio)))
  elif in_ratio > max(ratio):
    fallback = (round(height * max(ratio)), height)
  else:
    fallback = (width, height)
  w = jnp.where(fits.any(), _first(fits, w), fallback[0])
  h = jnp.where(fits.any(), _first(fits, h), fallback[1])
  top = jnp.where(fits.any(), jax.random.randint(top_key, (), 0, height - h + 1), (height - h) // 2)
  left = jnp.where(fits.any(), jax.random.randint(left_key, (), 0, width - w + 1), (width - w) // 2)
  return jnp.stack([top, left, h, w]).astype(jnp.int32)


def random_resized_crop(key: jax.Array, image: jax.Array, scale: Sequence[float] = (0.08, 1.0),
                        ratio: Sequence[float] = (3 / 4, 4 / 3), p: float = 1.0) -> jax.Array:
  cropped = lambda key, image: resized_crop(image, *resized_crop_box(key, image.shape[:2], scale, ratio))
  return applied_with(p, cropped)(key, image)


# Colour ops (torchvision's blends, clamped to [0, 1]) ----------------------------------------------------

def _blend(image: jax.Array, other: jax.Array, factor) -> jax.Array:
  return jnp.clip(factor * image + (1 - factor) * other, 0.0, 1.0)


def grayscale(image: jax.Array) -> jax.Array:
  """(H, W, 1) luma with torchvision's weights (ITU-R 601-2, as dm_pix's rec601); grey images as they are."""
  return image if image.shape[-1] == 1 else dm_pix.rgb_to_grayscale(image)


def adjust_brightness(image: jax.Array, factor) -> jax.Array:
  """torchvision's: a blend with black (dm_pix's is TF's additive shift)."""
  return _blend(image, jnp.zeros_like(image), factor)


def adjust_contrast(image: jax.Array, factor) -> jax.Array:
  """torchvision's: a blend with the mean of the greyscale image (dm_pix's uses per-channel means)."""
  return _blend(image, jnp.mean(grayscale(image)), factor)


def adjust_saturation(image: jax.Array, factor) -> jax.Array:
  """torchvision's: a blend with the greyscale image; grey images stay as they are."""
  return image if image.shape[-1] == 1 else _blend(image, grayscale(image), factor)


def adjust_hue(image: jax.Array, shift) -> jax.Array:
  """torchvision's: H of HSV shifted by `shift` (in turns, in [-0.5, 0.5]); grey images stay as they are."""
  return image if image.shape[-1] == 1 else jnp.clip(dm_pix.adjust_hue(image, shift), 0.0, 1.0)


JITTERS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(image: jax.Array, order: jax.Array, factors: jax.Array) -> jax.Array:
  """Brightness, contrast, saturation and hue adjustments (factors[i] for JITTERS[i]) in the given order.

  A scan over the four positions, not an unrolled loop: unrolled, XLA:CPU fused the positions into each
  other and recomputed earlier ones inside later ones (550 ms instead of 140 ms for 32 images at 224 px)."""
  def adjusted(image, op):
    return jax.lax.switch(op, JITTERS, image, factors[op]), None
  return jax.lax.scan(adjusted, image, order)[0]


def color_jitter_params(key: jax.Array, brightness: Range = 0.0, contrast: Range = 0.0, saturation: Range = 0.0,
                        hue: Range = 0.0) -> tuple[jax.Array, jax.Array]:
  """ColorJitter.get_params: a random order of the four adjustments and their factors (hue: a shift)."""
  order_key, factor_key = jax.random.split(key)
  ranges = [_range(v, name, 1.0, lower=0.0)
            for v, name in ((brightness, 'brightness'), (contrast, 'contrast'), (saturation, 'saturation'))]
  ranges.append(_range(hue, 'hue'))
  low, high = jnp.array(ranges, jnp.float32).T
  return jax.random.permutation(order_key, len(JITTERS)), jax.random.uniform(factor_key, (4,), minval=low,
                                                                             maxval=high)


def random_color_jitter(key: jax.Array, image: jax.Array, brightness: Range = 0.0, contrast: Range = 0.0,
                        saturation: Range = 0.0, hue: Range = 0.0) -> jax.Array:
  return color_jitter(image, *color_jitter_params(key, brightness, contrast, saturation, hue))


# Random erasing -----------------------------------------------------------------------------------------

def erase(image: jax.Array, top, left, height, width, value: jax.Array) -> jax.Array:
  """torchvision's F.erase: the box gets `value` (broadcast against the image)."""
  rows, cols = jnp.arange(image.shape[0])[:, None], jnp.arange(image.shape[1])[None, :]
  box = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
  return jnp.where(box[..., None], value, image)


def erasing_box(key: jax.Array, image_size: tuple[int, int], scale: Sequence[float],
                ratio: Sequence[float]) -> tuple[jax.Array, jax.Array]:
  """RandomErasing.get_params: (top, left, height, width) of the first of 10 tries strictly smaller than the
  image, and whether any try was (if none, torchvision erases nothing)."""
  height, width = image_size
  box_key, top_key, left_key = jax.random.split(key, 3)
  h, w = _sized_boxes(box_key, height * width, scale, ratio)  # RandomErasing: height = sqrt(area * ratio)
  fits = (h < height) & (w < width)
  h, w = _first(fits, h), _first(fits, w)
  top = jax.random.randint(top_key, (), 0, height - h + 1)
  left = jax.random.randint(left_key, (), 0, width - w + 1)
  return jnp.stack([top, left, h, w]).astype(jnp.int32), fits.any()


def random_erasing(key: jax.Array, image: jax.Array, p: float = 0.5, scale: Sequence[float] = (0.02, 0.33),
                   ratio: Sequence[float] = (0.3, 3.3), value: Range | str = 0.0, mean: Range = 0.0,
                   std: Range = 1.0) -> jax.Array:
  """RandomErasing placed after Normalize(mean, std): `value` (a number, one per channel, or 'random' for
  standard normal noise) is in normalised units, so 0 erases to the mean colour."""
  apply_key, box_key, noise_key = jax.random.split(key, 3)
  box, found = erasing_box(box_key, image.shape[:2], scale, ratio)
  if value == 'random':
    value = jax.random.normal(noise_key, image.shape)
  pixels = jnp.asarray(mean, jnp.float32) + jnp.asarray(value, jnp.float32) * jnp.asarray(std, jnp.float32)
  erased = erase(image, *box, jnp.broadcast_to(pixels, image.shape))
  return jnp.where(jax.random.bernoulli(apply_key, p) & found, erased, image)


# AugMix (torchvision's, all ops on [0, 1] floats; uint8 quantisation where the op is defined on levels) -----

def _levels(image: jax.Array) -> jax.Array:
  """uint8 levels as torchvision's float -> uint8 conversion gives them."""
  return jnp.floor(image * 255.999).astype(jnp.int32)


def autocontrast(image: jax.Array) -> jax.Array:
  """Each channel stretched to [0, 1]; constant channels stay as they are."""
  low, high = image.min(axis=(0, 1)), image.max(axis=(0, 1))
  flat = high <= low
  scale = jnp.where(flat, 1.0, 1.0 / jnp.where(flat, 1.0, high - low))
  return jnp.clip((image - jnp.where(flat, 0.0, low)) * scale, 0.0, 1.0)


def _equalized_channel(levels: jax.Array) -> jax.Array:
  """PIL's ImageOps.equalize lookup for one channel of uint8 levels (flattened)."""
  hist = jnp.bincount(levels, length=256)
  step = (levels.size - hist[levels.max()]) // 255
  safe_step = jnp.maximum(step, 1)
  lut = jnp.concatenate([jnp.zeros(1, hist.dtype), (jnp.cumsum(hist)[:-1] + safe_step // 2) // safe_step])
  return jnp.where(step > 0, jnp.clip(lut, 0, 255)[levels], levels)


def equalize(image: jax.Array) -> jax.Array:
  """Histogram equalisation per channel, as PIL's ImageOps.equalize and torchvision's F.equalize."""
  levels = _levels(image).reshape(-1, image.shape[-1])
  return jax.vmap(_equalized_channel, in_axes=1, out_axes=1)(levels).reshape(image.shape) / 255.0


def posterize(image: jax.Array, bits) -> jax.Array:
  """The uint8 levels keep their `bits` highest bits."""
  mask = (0xFF << (8 - jnp.asarray(bits, jnp.int32))) & 0xFF
  return (_levels(image) & mask) / 255.0


def solarize(image: jax.Array, threshold) -> jax.Array:
  """Pixels at or above `threshold` (in [0, 1]) inverted."""
  return jnp.where(image >= threshold, 1.0 - image, image)


def adjust_sharpness(image: jax.Array, factor) -> jax.Array:
  """torchvision's: a blend with the image smoothed by PIL's SMOOTH kernel, border pixels kept."""
  kernel = jnp.array([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
  height, width = image.shape[:2]
  smooth = sum(kernel[i, j] * image[i:i + height - 2, j:j + width - 2] for i in range(3) for j in range(3))
  degenerate = image.at[1:-1, 1:-1].set(smooth)
  return _blend(image, degenerate, factor)


# torchvision's AugMix space: name, magnitude of the 10 severity bins, signed (random sign)
AUGMIX_GEOMETRIC = ('shear_x', 'shear_y', 'translate_x', 'translate_y', 'rotate')
AUGMIX_OPS = AUGMIX_GEOMETRIC + ('posterize', 'solarize', 'autocontrast', 'equalize',  # the partial space
                                 'brightness', 'color', 'contrast', 'sharpness')      # all_ops adds these
_AUGMIX_PARTIAL = 9


def _augmix_magnitudes(image_size: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
  """(13, 10) magnitudes per op and severity bin, and whether each op's sign is random (torchvision's table)."""
  height, width = image_size
  bins = jnp.linspace(0.0, 1.0, 10)
  posterize_bits = jnp.round(4 - jnp.arange(10) / (9 / 4))
  table = jnp.stack([0.3 * bins, 0.3 * bins, width / 3 * bins, height / 3 * bins, 30 * bins, posterize_bits,
                     1.0 - bins, bins * 0, bins * 0] + [0.9 * bins] * 4)
  signed = jnp.array([True] * 5 + [False] * 4 + [True] * 4)
  return table, signed


def _augmix_inverse(op: jax.Array, magnitude: jax.Array, image_size: tuple[int, int]) -> jax.Array:
  """Inverse matrix of the geometric op `op` (an index into AUGMIX_GEOMETRIC) at `magnitude`."""
  height, width = image_size
  centre = (width * 0.5, height * 0.5)
  shear = jnp.rad2deg(jnp.arctan(magnitude))
  shift = jnp.trunc(magnitude)  # torchvision: int(magnitude) pixels
  zero = jnp.zeros(())
  return jnp.stack([
      inverse_affine_matrix((0.0, 0.0), zero, (0.0, 0.0), 1.0, (shear, zero)),
      inverse_affine_matrix((0.0, 0.0), zero, (0.0, 0.0), 1.0, (zero, shear)),
      inverse_affine_matrix(centre, zero, (shift, zero), 1.0, (zero, zero)),
      inverse_affine_matrix(centre, zero, (zero, shift), 1.0, (zero, zero)),
      inverse_affine_matrix(centre, -magnitude, (0.0, 0.0), 1.0, (zero, zero)),
  ])[jnp.clip(op, 0, len(AUGMIX_GEOMETRIC) - 1)]


def augmix_op(image: jax.Array, op: jax.Array, magnitude: jax.Array) -> jax.Array:
  """AUGMIX_OPS[op] at `magnitude`, as torchvision's AugMix applies it (geometric ops bilinear, zero fill)."""
  branches = [
      lambda x, m: warped(x, _augmix_inverse(op, m, x.shape[:2]), 'bilinear'),
      lambda x, m: posterize(x, m.astype(jnp.int32)),
      solarize,
      lambda x, m: autocontrast(x),
      lambda x, m: equalize(x),
      lambda x, m: adjust_brightness(x, 1 + m),
      lambda x, m: adjust_saturation(x, 1 + m),
      lambda x, m: adjust_contrast(x, 1 + m),
      lambda x, m: adjust_sharpness(x, 1 + m),
  ]
  branch = jnp.maximum(op - len(AUGMIX_GEOMETRIC) + 1, 0)  # all geometric ops share one warp
  return jax.lax.switch(branch, branches, image, magnitude)


def random_augmix(key: jax.Array, image: jax.Array, severity: int = 3, width: int = 3, depth: int = -1,
                  alpha: float = 1.0, all_ops: bool = True) -> jax.Array:
  """torchvision's AugMix: `width` chains of `depth` random ops (depth -1: 1 to 3 per chain), each at a
  magnitude from the first `severity` of 10 bins, mixed with Dirichlet(alpha) weights, then blended with the
  image with a Beta(alpha, alpha) weight."""
  table, signed = _augmix_magnitudes(image.shape[:2])
  max_depth = depth if depth > 0 else 3
  keys = jax.random.split(key, 6)
  ops = jax.random.randint(keys[0], (width, max_depth), 0, len(AUGMIX_OPS) if all_ops else _AUGMIX_PARTIAL)
  magnitudes = table[ops, jax.random.randint(keys[1], (width, max_depth), 0, severity)]
  signs = jnp.where(signed[ops] & jax.random.bernoulli(keys[2], 0.5, (width, max_depth)), -1.0, 1.0)
  depths = jax.random.randint(keys[3], (width,), 1, 4) if depth <= 0 else jnp.full((width,), depth)

  def chain(ops, magnitudes, depth):
    augmented = image
    for step in range(max_depth):
      augmented = jnp.where(step < depth, augmix_op(augmented, ops[step], magnitudes[step]), augmented)
    return augmented

  chains = jax.vmap(chain)(ops, magnitudes * signs, depths)
  original_weight = jax.random.beta(keys[4], alpha, alpha)
  weights = jax.random.dirichlet(keys[5], jnp.full((width,), alpha)) * (1 - original_weight)
  return original_weight * image + jnp.tensordot(weights, chains, axes=1)


# MixUp and CutMix (batch level) ------------------------------------------------------------------------

def mixup(images: jax.Array, lam) -> jax.Array:
  """Each image blended with its partner, the previous image in the batch: lam * own + (1 - lam) * partner."""
  return lam * images + (1 - lam) * jnp.roll(images, 1, axis=0)


def cutmix(images: jax.Array, box: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The box (x1, y1, x2, y2) of each image replaced by its partner's; returns the images and the fraction of
  each image that is still its own (torchvision's adjusted lambda)."""
  height, width = images.shape[1:3]
  x1, y1, x2, y2 = box
  rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
  inside = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)
  mixed = jnp.where(inside[None, ..., None], jnp.roll(images, 1, axis=0), images)
  return mixed, 1.0 - (x2 - x1) * (y2 - y1) / (height * width)


def cutmix_box(key: jax.Array, image_size: tuple[int, int], lam) -> jax.Array:
  """torchvision's CutMix box (x1, y1, x2, y2): area about (1 - lam), centred at a uniform pixel, clipped."""
  height, width = image_size
  centre_x, centre_y = jax.random.randint(key, (2,), 0, jnp.array([width, height]))
  r = 0.5 * jnp.sqrt(1.0 - lam)
  half_w, half_h = jnp.floor(r * width).astype(jnp.int32), jnp.floor(r * height).astype(jnp.int32)
  return jnp.stack([jnp.maximum(centre_x - half_w, 0), jnp.maximum(centre_y - half_h, 0),
                    jnp.minimum(centre_x + half_w, width), jnp.minimum(centre_y + half_h, height)])


def mixed(key: jax.Array, images: jax.Array, mixup_alpha: float = 0.0,
          cutmix_alpha: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """MixUp or CutMix of a batch with lam ~ Beta(alpha, alpha) (with both, one of the two per batch, evenly);
  returns the batch and lam, the weight of each image's own label (its partner's is 1 - lam)."""
  if not mixup_alpha and not cutmix_alpha:
    return images, jnp.ones(())
  choice_key, mixup_key, cutmix_key, box_key = jax.random.split(key, 4)
  options = []
  if mixup_alpha:
    lam = jax.random.beta(mixup_key, mixup_alpha, mixup_alpha)
    options.append((mixup(images, lam), lam))
  if cutmix_alpha:
    lam = jax.random.beta(cutmix_key, cutmix_alpha, cutmix_alpha)
    options.append(cutmix(images, cutmix_box(box_key, images.shape[1:3], lam)))
  if len(options) == 1:
    return options[0]
  use_cutmix = jax.random.bernoulli(choice_key, 0.5)
  return jax.tree.map(lambda by_mixup, by_cutmix: jnp.where(use_cutmix, by_cutmix, by_mixup), *options)


def mixed_targets(labels: jax.Array, lam: jax.Array, num_classes: int) -> jax.Array:
  """Soft targets (N, num_classes) of a batch mixed by `mixed`: lam on each own label, 1 - lam on the partner's."""
  own = jax.nn.one_hot(labels, num_classes)
  return lam * own + (1 - lam) * jnp.roll(own, 1, axis=0)


# The pipeline -------------------------------------------------------------------------------------------

RANDOM_OPS: dict[str, Callable[..., jax.Array]] = {
    'crop': random_crop, 'hflip': random_hflip, 'affine': random_affine, 'rotation': random_rotation,
    'perspective': random_perspective, 'resized_crop': random_resized_crop, 'color_jitter': random_color_jitter,
    'erasing': random_erasing, 'augmix': random_augmix,
}


def _image_ops(config: ml_collections.ConfigDict, mean: Range, std: Range) -> list[Callable]:
  """The ops of `config.order`, each (key, image) -> image with its config section's parameters bound."""
  ops = []
  for name in config.order:
    params = config[name].to_dict()
    if name == 'erasing':  # its value is in the normalised units of the Normalize that follows
      params.update(mean=mean, std=std)
    ops.append(functools.partial(RANDOM_OPS[name], **params))
  return ops


def augment_image(key: jax.Array, image: jax.Array, config: ml_collections.ConfigDict, mean: Range = 0.0,
                  std: Range = 1.0) -> jax.Array:
  """One uint8 image (H, W, C) through the ops of `config.order`, as float32 in [0, 1]."""
  image = image.astype(jnp.float32) / 255.0
  ops = _image_ops(config, mean, std)
  for op, op_key in zip(ops, jax.random.split(key, max(len(ops), 1))):
    image = op(op_key, image)
  return image


def augment(key: jax.Array, images: jax.Array, config: ml_collections.ConfigDict, mean: Range = 0.0,
            std: Range = 1.0) -> jax.Array:
  """Augments a uint8 batch (N, H, W, C) with an independent key per example (a `config.augment` section);
  float32 in [0, 1]. `mean`/`std`: the normalisation that follows, in whose units erasing values are given."""
  keys = jax.random.split(key, images.shape[0])
  return jax.vmap(functools.partial(augment_image, config=config, mean=mean, std=std))(keys, images)


def training_batch(key: jax.Array, images: jax.Array, config: ml_collections.ConfigDict, mean: Range = 0.0,
                   std: Range = 1.0) -> tuple[jax.Array, jax.Array]:
  """What the train step feeds the model, before normalisation: the augmented batch in [0, 1], then MixUp or
  CutMix; and the weight of each image's own label (see `mixed`)."""
  augment_key, mix_key = jax.random.split(key)
  pixels = augment(augment_key, images, config, mean, std)
  return mixed(mix_key, pixels, config.mixup.alpha, config.cutmix.alpha)


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the `augment.*` key whose value cannot work (no tracing, no compilation)."""
  unknown = [name for name in config.order if name not in IMAGE_OPS]
  if unknown:
    raise ValueError(f'augment.order={tuple(config.order)} names unknown ops {unknown}; valid ops: '
                     f'{", ".join(IMAGE_OPS)} (mixup and cutmix are set by augment.mixup.alpha and '
                     f'augment.cutmix.alpha).')
  for name in ('affine', 'rotation', 'perspective'):
    if config[name].interpolation not in INTERPOLATIONS:
      raise ValueError(f'augment.{name}.interpolation={config[name].interpolation!r} is not one of '
                       f'{INTERPOLATIONS}.')
  for name in ('hflip', 'perspective', 'erasing', 'rotation', 'resized_crop'):
    if not 0.0 <= config[name].p <= 1.0:
      raise ValueError(f'augment.{name}.p={config[name].p} must be a probability in [0, 1].')
  for key in ('affine.degrees', 'affine.shear', 'rotation.degrees', 'color_jitter.brightness',
              'color_jitter.contrast', 'color_jitter.saturation', 'color_jitter.hue'):
    section, name = key.split('.')
    value = config[section][name]
    if not (name == 'shear' and not isinstance(value, (int, float)) and len(value) == 4):
      _range(value, f'augment.{key}')
  if not 1 <= config.augmix.severity <= 10:
    raise ValueError(f'augment.augmix.severity={config.augmix.severity} must be in 1..10.')
  for key in ('mixup', 'cutmix'):
    if config[key].alpha < 0:
      raise ValueError(f'augment.{key}.alpha={config[key].alpha} must be >= 0 (0: off).')
