"""Each op against an independent reference at fixed parameters (PIL, or numpy re-implementations of
torchvision's documented formulas; torchvision itself cannot be installed here), each sampler against the
distribution torchvision draws from, and the whole pipeline under jit."""
import colorsys
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from configs import default
from lightcls import config_utils, losses
from lightcls.data import augment

KEYS = jax.random.split(jax.random.PRNGKey(0), 200)


def rgb_image(height=20, width=24, seed=0):
  """Smooth colours plus noise: interpolation differences show, but stay small next to the values."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[:height, :width]
  base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 255 / (height + width)], axis=-1)
  return np.clip(base + rng.integers(-40, 41, base.shape), 0, 255).astype(np.uint8)


def unit(image):
  return jnp.asarray(image, jnp.float32) / 255.0


def as_uint8(image):
  return np.round(np.asarray(image) * 255).astype(np.int32)


def assert_close_to_pil(got, expected, levels, mismatch=0.0):
  """All but a `mismatch` fraction of pixels within `levels` of the reference (0-255 units)."""
  diff = np.abs(as_uint8(got) - np.asarray(expected, np.int32))
  assert np.mean(diff.max(axis=-1) > levels) <= mismatch, f'max diff {diff.max()}, mean {diff.mean():.3f}'


def torchvision_inverse_affine(center, angle, translate, scale, shear):
  """torchvision.transforms.functional._get_inverse_affine_matrix, in float64 Python."""
  rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
  cx, cy = center
  tx, ty = translate
  a = math.cos(rot - sy) / math.cos(sy)
  b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
  c = math.sin(rot - sy) / math.cos(sy)
  d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
  m = [x / scale for x in (d, -b, 0.0, -c, a, 0.0)]
  m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty) + cx
  m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty) + cy
  return m


# Geometric ops ------------------------------------------------------------------------------------------

def test_random_crop_is_a_shifted_window_of_the_zero_padded_image():
  image = jnp.arange(1, 1 + 6 * 5 * 2, dtype=jnp.uint8).reshape(6, 5, 2)
  padded = np.pad(np.asarray(image), ((3, 3), (3, 3), (0, 0)))
  windows = {padded[t:t + 6, l:l + 5].tobytes() for t in range(7) for l in range(7)}
  crops = [np.asarray(augment.random_crop(jax.random.PRNGKey(i), image, 3)) for i in range(40)]
  assert all(c.shape == (6, 5, 2) and c.tobytes() in windows for c in crops)
  assert len({c.tobytes() for c in crops}) > 10  # offsets really vary


def test_hflip_mirrors_columns_with_the_given_probability():
  image = jnp.arange(12, dtype=jnp.uint8).reshape(1, 4, 3, 1)[0]
  flips = [augment.random_hflip(jax.random.PRNGKey(i), image, 0.5) for i in range(400)]
  flipped = [bool(np.array_equal(f, image[:, ::-1])) for f in flips]
  assert all(f or np.array_equal(g, image) for f, g in zip(flipped, flips))
  assert 0.4 < np.mean(flipped) < 0.6


@pytest.mark.parametrize('interpolation,resample,levels,mismatch', [
    ('nearest', Image.Resampling.NEAREST, 0, 0.02), ('bilinear', Image.Resampling.BILINEAR, 1, 0.02)])
@pytest.mark.parametrize('angle,translate,scale,shear', [
    (25.0, (2, -3), 0.9, (8.0, 0.0)), (-17.0, (0, 1), 1.1, (-5.0, 4.0)), (0.0, (3, 0), 1.0, (0.0, 0.0))])
def test_affine_matches_pil_with_torchvisions_matrix(angle, translate, scale, shear, interpolation, resample,
                                                     levels, mismatch):
  image = rgb_image()
  matrix = torchvision_inverse_affine((12.0, 10.0), angle, translate, scale, shear)
  expected = Image.fromarray(image).transform((24, 20), Image.Transform.AFFINE, matrix, resample,
                                              fillcolor=(10, 20, 30))
  got = augment.affine(unit(image), angle, translate, scale, shear, interpolation, fill=(10, 20, 30))
  assert_close_to_pil(got, expected, levels, mismatch)


def test_rotate_matches_pil_rotate_counter_clockwise():
  image = rgb_image()
  for angle in (30.0, -75.0, 90.0):
    expected = Image.fromarray(image).rotate(angle, Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    assert_close_to_pil(augment.rotate(unit(image), angle, 'bilinear'), expected, 1, 0.02)


def test_affine_params_stay_in_torchvision_ranges():
  params = [augment.affine_params(k, (20, 30), 25, (0.1, 0.2), (0.9, 1.1), 8) for k in KEYS]
  angle, shift, zoom, shear = (np.array([p[i] for p in params]) for i in range(4))
  assert np.abs(angle).max() <= 25 and np.abs(angle).max() > 20
  assert np.array_equal(shift, np.round(shift))  # whole pixels
  assert np.abs(shift[:, 0]).max() == 3 and np.abs(shift[:, 1]).max() == 4  # 0.1 * width, 0.2 * height
  assert zoom.min() >= 0.9 and zoom.max() <= 1.1
  assert np.abs(shear[:, 0]).max() <= 8 and np.all(shear[:, 1] == 0)
  (_, _, _, four) = augment.affine_params(KEYS[0], (20, 30), 0, (0, 0), (1, 1), (1, 2, -4, -3))
  assert 1 <= four[0] <= 2 and -4 <= four[1] <= -3


def torchvision_perspective_coeffs(startpoints, endpoints):
  a = np.zeros((8, 8))
  for i, ((x, y), (u, v)) in enumerate(zip(endpoints, startpoints)):
    a[2 * i] = [x, y, 1, 0, 0, 0, -u * x, -u * y]
    a[2 * i + 1] = [0, 0, 0, x, y, 1, -v * x, -v * y]
  return np.linalg.lstsq(a, np.asarray(startpoints, np.float64).reshape(8), rcond=None)[0]


def test_perspective_matches_pil_perspective_transform():
  image = rgb_image()
  starts = np.array([[0, 0], [23, 0], [23, 19], [0, 19]])
  ends = np.array([[3, 2], [21, 0], [23, 16], [1, 18]])
  expected = Image.fromarray(image).transform((24, 20), Image.Transform.PERSPECTIVE,
                                              torchvision_perspective_coeffs(starts, ends),
                                              Image.Resampling.BILINEAR)
  assert_close_to_pil(augment.perspective(unit(image), starts, ends), expected, 1, 0.02)


def test_perspective_points_move_each_corner_inwards_within_the_distortion_bound():
  for key in KEYS[:50]:
    starts, ends = augment.perspective_points(key, (20, 30), 0.5)
    bound = np.array([30 // 2 * 0.5, 20 // 2 * 0.5]).astype(int) + 1  # torchvision: int(d * half) + 1
    np.testing.assert_array_equal(starts, [[0, 0], [29, 0], [29, 19], [0, 19]])
    inward = np.abs(np.asarray(ends) - np.asarray(starts))
    assert np.all(inward < bound) and np.all(inward >= 0)


def test_resized_crop_matches_pil_crop_then_bilinear_resize():
  image = rgb_image()
  for top, left, height, width in ((3, 5, 11, 9), (0, 0, 20, 24), (7, 2, 13, 22)):
    expected = Image.fromarray(image).crop((left, top, left + width, top + height)).resize(
        (24, 20), Image.Resampling.BILINEAR)
    assert_close_to_pil(augment.resized_crop(unit(image), top, left, height, width), expected, 1)


def test_resized_crop_box_samples_area_and_ratio_within_range_or_falls_back_to_the_centre():
  boxes = np.array([augment.resized_crop_box(k, (40, 50), (0.3, 0.6), (0.5, 2.0)) for k in KEYS])
  top, left, height, width = boxes.T
  assert np.all((top >= 0) & (left >= 0) & (top + height <= 40) & (left + width <= 50))
  area = height * width / 2000
  assert area.min() > 0.25 and area.max() < 0.66  # [scale] up to the rounding of the sides
  assert (width / height).min() > 0.45 and (width / height).max() < 2.2
  # no box of 2-3x the image fits: torchvision's central crop, clipped to the ratio range
  np.testing.assert_array_equal(augment.resized_crop_box(KEYS[0], (40, 50), (2, 3), (0.5, 1.0)), [0, 5, 40, 40])


# Colour ops ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('factor', [0.4, 1.0, 1.7])
@pytest.mark.parametrize('op,enhancer', [(augment.adjust_brightness, ImageEnhance.Brightness),
                                         (augment.adjust_contrast, ImageEnhance.Contrast),
                                         (augment.adjust_saturation, ImageEnhance.Color),
                                         (augment.adjust_sharpness, ImageEnhance.Sharpness)])
def test_colour_adjustments_blend_as_pil_image_enhance(op, enhancer, factor):
  image = rgb_image()
  expected = enhancer(Image.fromarray(image)).enhance(factor)
  assert_close_to_pil(op(unit(image), factor), expected, 2)


def test_adjust_hue_rotates_hsv_hue_as_colorsys():
  image = rgb_image()
  for shift in (0.1, -0.35):
    expected = [[colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)
                 for h, s, v in (colorsys.rgb_to_hsv(*(p / 255.0)) for p in row)] for row in image]
    np.testing.assert_allclose(augment.adjust_hue(unit(image), shift), np.array(expected), atol=1e-5)


def test_grey_images_keep_their_colour_under_saturation_and_hue():
  grey = unit(rgb_image()[..., :1])
  np.testing.assert_array_equal(augment.adjust_saturation(grey, 0.3), grey)
  np.testing.assert_array_equal(augment.adjust_hue(grey, 0.2), grey)
  assert_close_to_pil(augment.adjust_contrast(grey, 0.5),
                      np.asarray(ImageEnhance.Contrast(Image.fromarray(rgb_image()[..., 0])).enhance(0.5))[..., None],
                      1)


def test_color_jitter_applies_the_four_adjustments_in_the_given_order():
  image = unit(rgb_image())
  factors = jnp.array([1.3, 0.6, 1.8, 0.15])
  for order in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):
    expected = image
    for op in order:
      expected = augment.JITTERS[op](expected, factors[op])
    np.testing.assert_allclose(augment.color_jitter(image, jnp.array(order), factors), expected, atol=1e-6)
  assert not np.allclose(augment.color_jitter(image, jnp.array([0, 1, 2, 3]), factors),
                         augment.color_jitter(image, jnp.array([3, 2, 1, 0]), factors), atol=1e-3)


def test_color_jitter_params_are_a_permutation_and_factors_in_torchvision_ranges():
  params = [augment.color_jitter_params(k, 0.2, (0.5, 0.7), 1.5, 0.1) for k in KEYS]
  assert all(sorted(np.asarray(order).tolist()) == [0, 1, 2, 3] for order, _ in params)
  assert len({tuple(np.asarray(order).tolist()) for order, _ in params}) > 12
  factors = np.array([f for _, f in params])
  low, high = factors.min(axis=0), factors.max(axis=0)
  assert np.all(low >= [0.8, 0.5, 0.0, -0.1]) and np.all(high <= [1.2, 0.7, 2.5, 0.1])
  assert np.all(high - low > 0.8 * np.array([0.4, 0.2, 2.5, 0.2]))  # the whole range is used


# Random erasing -----------------------------------------------------------------------------------------

def test_erase_fills_exactly_the_box():
  image = unit(rgb_image())
  expected = np.array(image)
  expected[4:9, 6:16] = [0.1, 0.2, 0.3]
  np.testing.assert_array_equal(augment.erase(image, 4, 6, 5, 10, jnp.array([0.1, 0.2, 0.3])), expected)


def test_erasing_boxes_cover_the_scale_range_and_an_erased_box_holds_the_mean_colour():
  boxes = [augment.erasing_box(k, (40, 50), (0.02, 0.25), (0.3, 3.3)) for k in KEYS]
  assert all(bool(found) for _, found in boxes)
  top, left, height, width = np.array([box for box, _ in boxes]).T
  assert np.all((top + height <= 40) & (left + width <= 50))
  area = height * width / 2000
  assert area.min() < 0.03 and 0.2 < area.max() < 0.28
  mean, std = (0.4, 0.5, 0.6), (0.2, 0.2, 0.2)
  erased = [augment.random_erasing(k, unit(rgb_image(40, 50)), 0.5, (0.02, 0.25), value=0.0, mean=mean, std=std)
            for k in KEYS[:100]]
  changed = [not np.allclose(e, unit(rgb_image(40, 50))) for e in erased]
  assert 0.35 < np.mean(changed) < 0.65
  colours = np.asarray(erased[changed.index(True)]).reshape(-1, 3)
  assert np.sum(np.all(np.isclose(colours, mean), axis=1)) >= 0.02 * 2000 * 0.9


def test_erasing_leaves_the_image_when_no_try_fits():
  image = unit(rgb_image())
  _, found = augment.erasing_box(KEYS[0], (20, 24), (1.0, 1.0), (1.0, 1.0))  # the whole image never fits
  assert not found
  np.testing.assert_array_equal(augment.random_erasing(KEYS[0], image, 1.0, (1.0, 1.0), (1.0, 1.0)), image)


# AugMix ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('op,reference,levels', [
    (augment.equalize, ImageOps.equalize, 0),
    (augment.autocontrast, ImageOps.autocontrast, 1),
    (lambda x: augment.posterize(x, 3), lambda im: ImageOps.posterize(im, 3), 0),
    (lambda x: augment.solarize(x, 128 / 255), lambda im: ImageOps.solarize(im, 128), 0),
])
def test_augmix_level_ops_match_pil_image_ops(op, reference, levels):
  image = rgb_image(seed=3)
  image[..., 1] = image[..., 1] // 2 + 40  # a channel that does not span the whole range
  assert_close_to_pil(op(unit(image)), reference(Image.fromarray(image)), levels)


def test_augmix_shear_x_is_torchvisions_shear_about_the_top_left_corner():
  image = rgb_image()
  expected = Image.fromarray(image).transform((24, 20), Image.Transform.AFFINE, (1, 0.2, 0, 0, 1, 0),
                                              Image.Resampling.BILINEAR)
  got = augment.augmix_op(unit(image), jnp.asarray(augment.AUGMIX_OPS.index('shear_x')), jnp.asarray(0.2))
  assert_close_to_pil(got, expected, 1, 0.02)


def test_augmix_op_indices_select_the_named_ops():
  image = unit(rgb_image())
  for name, expected in (('equalize', augment.equalize(image)), ('brightness', augment.adjust_brightness(image, 1.5)),
                         ('rotate', augment.rotate(image, 0.5, 'bilinear'))):
    got = augment.augmix_op(image, jnp.asarray(augment.AUGMIX_OPS.index(name)), jnp.asarray(0.5))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_augmix_mixes_chains_into_a_valid_image_that_varies_per_key():
  image = unit(rgb_image())
  run = jax.jit(lambda k: augment.random_augmix(k, image, severity=5, width=3))
  outputs = [np.asarray(run(k)) for k in KEYS[:4]]
  assert all(o.shape == image.shape and o.min() >= 0 and o.max() <= 1 for o in outputs)
  assert len({o.tobytes() for o in outputs}) == 4 and not np.allclose(outputs[0], image)


# MixUp and CutMix ---------------------------------------------------------------------------------------

def test_mixup_blends_each_image_with_the_previous_one():
  images = jax.random.uniform(KEYS[0], (4, 3, 3, 1))
  expected = 0.7 * np.asarray(images) + 0.3 * np.asarray(images)[[3, 0, 1, 2]]
  np.testing.assert_allclose(augment.mixup(images, 0.7), expected, rtol=1e-6)


def test_cutmix_pastes_the_partners_box_and_weights_labels_by_area():
  images = jnp.arange(3, dtype=jnp.float32)[:, None, None, None] * jnp.ones((3, 10, 8, 1))
  mixed, lam = augment.cutmix(images, jnp.array([2, 1, 6, 6]))  # x1, y1, x2, y2: 4 x 5 of 80 pixels
  assert np.isclose(lam, 1 - 20 / 80)
  for i in range(3):
    assert np.mean(np.asarray(mixed[i]) == i) == lam
    assert np.all(np.asarray(mixed[i, 1:6, 2:6]) == (i - 1) % 3)
  targets = augment.mixed_targets(jnp.array([0, 2, 1]), lam, 4)
  np.testing.assert_allclose(targets, [[0.75, 0.25, 0, 0], [0.25, 0, 0.75, 0], [0, 0.75, 0.25, 0]])


@pytest.mark.parametrize('alpha', [0.2, 1.0])
def test_mixup_lambda_is_beta_distributed(alpha):
  images = jnp.zeros((2, 4, 4, 1))
  lams = np.array([augment.mixed(k, images, mixup_alpha=alpha)[1] for k in KEYS])
  assert abs(lams.mean() - 0.5) < 0.07  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
  assert abs(lams.var() - 1 / (4 * (2 * alpha + 1))) < 0.03


def test_cutmix_boxes_leave_about_lambda_of_each_image_and_both_alphas_pick_either():
  images = jnp.arange(2, dtype=jnp.float32)[:, None, None, None] * jnp.ones((2, 32, 32, 1))
  for key in KEYS[:30]:
    mixed, lam = augment.mixed(key, images, cutmix_alpha=1.0)
    assert np.isclose(np.mean(np.asarray(mixed[1]) == 1), lam)
  kinds = set()
  for key in KEYS[:30]:
    mixed, lam = augment.mixed(key, images, mixup_alpha=1.0, cutmix_alpha=1.0)
    kinds.add('cutmix' if set(np.unique(np.asarray(mixed))) <= {0.0, 1.0} else 'mixup')
  assert kinds == {'cutmix', 'mixup'}


@pytest.mark.parametrize('smoothing', [0.0, 0.1])
def test_loss_on_mixed_targets_is_pytorchs_cross_entropy_with_probabilities(smoothing):
  torch = pytest.importorskip('torch')
  logits = np.asarray(jax.random.normal(KEYS[0], (3, 5)) * 2)
  targets = augment.mixed_targets(jnp.array([4, 0, 2]), jnp.asarray(0.7), 5)
  expected = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(np.asarray(targets)),
                                               reduction='none', label_smoothing=smoothing)
  np.testing.assert_allclose(losses.cross_entropy(logits, targets, smoothing), expected.numpy(), rtol=1e-5)


def test_no_mixing_keeps_the_batch_and_hard_labels():
  images = jax.random.uniform(KEYS[0], (3, 4, 4, 1))
  mixed, lam = augment.mixed(KEYS[1], images)
  assert mixed is images and lam == 1.0
  np.testing.assert_array_equal(augment.mixed_targets(jnp.array([1, 0, 2]), lam, 3), np.eye(3)[[1, 0, 2]])


# The pipeline -------------------------------------------------------------------------------------------

def every_op_config():
  config = default.get_config().augment
  config.order = augment.IMAGE_OPS
  config.affine.update(degrees=25, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=8)
  config.rotation.degrees = 15
  config.color_jitter.update(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1)
  config.erasing.value = 'random'
  config.mixup.alpha = config.cutmix.alpha = 1.0
  return config


def augment_and_mix(config):
  def step(key, images):
    pixels = augment.augment(key, images, config, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return augment.mixed(key, pixels, config.mixup.alpha, config.cutmix.alpha)
  return jax.jit(step)


def test_every_op_runs_under_jit_on_a_batch():
  config = every_op_config()
  images = jax.random.randint(KEYS[0], (4, 16, 16, 3), 0, 256).astype(jnp.uint8)
  mixed, lam = augment_and_mix(config)(KEYS[1], images)
  assert mixed.shape == images.shape and mixed.dtype == jnp.float32 and lam.shape == ()
  assert np.all(np.isfinite(mixed)) and 0.0 <= float(lam) <= 1.0  # random erasing noise leaves [0, 1]
  config.erasing.value = 0.0
  mixed, _ = augment_and_mix(config)(KEYS[1], images)
  assert 0.0 <= float(mixed.min()) and float(mixed.max()) <= 1.0


def test_each_example_gets_its_own_randomness():
  config = default.get_config().augment
  config.order = ('crop',)
  config.crop.padding = 2
  images = jnp.tile(jnp.arange(64, dtype=jnp.uint8).reshape(1, 8, 8, 1), (16, 1, 1, 1))
  out = augment.augment(jax.random.PRNGKey(0), images, config)
  assert len({np.asarray(x).tobytes() for x in out}) > 4


def test_disabled_augmentation_is_the_identity():
  images = jax.random.randint(jax.random.PRNGKey(1), (4, 8, 8, 3), 0, 256).astype(jnp.uint8)
  out = augment.augment(jax.random.PRNGKey(0), images, default.get_config().augment)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, np.asarray(images) / 255.0, rtol=1e-6)


def test_ops_apply_in_config_order():
  config = default.get_config().augment
  config.hflip.p = 1.0
  config.affine.degrees = (10.0, 10.0)  # both ops deterministic; they do not commute
  images = jnp.asarray(rgb_image())[None]
  image = unit(images[0])
  config.order = ('hflip', 'affine')
  np.testing.assert_allclose(augment.augment(KEYS[0], images, config)[0],
                             augment.affine(image[:, ::-1], 10.0, (0, 0), 1.0, (0, 0)), atol=1e-6)
  config.order = ('affine', 'hflip')
  np.testing.assert_allclose(augment.augment(KEYS[0], images, config)[0],
                             augment.affine(image, 10.0, (0, 0), 1.0, (0, 0))[:, ::-1], atol=1e-6)


def test_validate_lists_the_valid_ops_for_an_unknown_name():
  config = default.get_config()
  config.augment.order = ('hflip', 'cutout')
  with pytest.raises(config_utils.ConfigError, match="config.augment.order.*'cutout'.*crop, hflip, affine"):
    config_utils.validate(config)
  config.augment.order = ('hflip', 'affine')
  config.augment.affine.interpolation = 'bicubic'
  with pytest.raises(config_utils.ConfigError, match=r"augment.affine.interpolation='bicubic'"):
    config_utils.validate(config)
