"""Image files (or their bytes, or arrays) -> uint8 RGB or grayscale pixels, whatever the file's mode.

Every way a file can fail (missing, empty, truncated, corrupt, not an image, too large) raises
`UnreadableImage`, which names the file and the reason, so a pipeline can skip and report it.
"""
from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = ('.bmp', '.gif', '.jpeg', '.jpg', '.png', '.tif', '.tiff', '.webp')

# PIL refuses images above 2 x 89 megapixels (and warns above 89) to protect servers from decompression bombs
# in untrusted uploads. A dataset's own photos can be larger (scans, 100 MP cameras); beyond this limit
# (1.6 GB as decoded RGB) a file is reported as unreadable rather than allowed to exhaust host memory.
MAX_PIXELS = 1 << 29
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
  Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# EXIF orientation tag (0x0112) -> the transposition that shows the image upright (EXIF 2.32, section 4.6.4).
_ORIENTATION_TAG = 0x0112
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')
_ALPHA_MODES = {'LA': 'LA', 'La': 'LA', 'PA': 'RGBA', 'RGBA': 'RGBA', 'RGBa': 'RGBA'}
# What PIL raises for files it recognises but cannot decode (truncated, corrupt chunks, bad headers).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


class UnreadableImage(ValueError):
  """A file that cannot be decoded; `name` is the file, `reason` says why."""

  def __init__(self, name: str, reason: str):
    super().__init__(name, reason)  # both in args, so the error pickles across processes
    self.name, self.reason = name, reason

  def __str__(self) -> str:
    return f'{self.name}: unreadable image ({self.reason})'


def is_image_path(path: str) -> bool:
  """Whether the file name has one of the IMAGE_EXTENSIONS (any case)."""
  return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def decode_image(image: str | bytes | np.ndarray, name: str, grayscale: bool = False,
                 max_side: int | None = None) -> np.ndarray:
  """(H, W, 3) uint8 RGB pixels, or (H, W, 1) luma when `grayscale`, of an image file path, the file's bytes
  or an array, upright per its EXIF orientation.

  `max_side` is the size the caller resizes to: a JPEG is then decoded at 1/2, 1/4 or 1/8 scale (libjpeg's
  DCT scaling, far faster than a full decode) as long as both sides stay at least `max_side`; other formats
  are returned at full size. Raises UnreadableImage (naming `name`) for files that cannot be decoded.
  """
  if isinstance(image, np.ndarray):
    return with_channels(_array_pixels(image, name), grayscale)
  source = _opened_source(image, name)
  try:
    with Image.open(source) as im:
      _check_size(im, name)
      if max_side:
        im.draft(None, (max_side, max_side))  # a no-op for formats other than JPEG
      im.load()
      pixels = _pixels(_upright(im), name)
  except UnreadableImage:
    raise
  except Image.UnidentifiedImageError:
    raise UnreadableImage(name, f'not an image file (starts with {_head(image)!r})') from None
  except Image.DecompressionBombError as error:  # PIL's own limit, if someone lowered it again
    raise UnreadableImage(name, f'too large ({error})') from None
  except _DECODE_ERRORS as error:
    raise UnreadableImage(name, f'truncated or corrupt ({type(error).__name__}: {error})') from None
  return with_channels(pixels, grayscale)


def _opened_source(image: str | bytes, name: str) -> str | io.BytesIO:
  """What Image.open reads; the empty and missing files PIL would only call 'unidentified' named as such."""
  if isinstance(image, (bytes, bytearray, memoryview)):
    if not len(image):
      raise UnreadableImage(name, 'empty file (0 bytes)')
    return io.BytesIO(image)
  try:
    size = os.path.getsize(image)
  except OSError as error:
    raise UnreadableImage(name, f'cannot open ({error.strerror or error})') from None
  if not size:
    raise UnreadableImage(name, 'empty file (0 bytes)')
  return image


def _head(image: str | bytes) -> bytes:
  """The first bytes of a file, which tell what a non-image is (an HTML error page, a text file ...)."""
  if isinstance(image, str):
    with open(image, 'rb') as f:
      return f.read(16)
  return bytes(image[:16])


def _check_size(im: Image.Image, name: str) -> None:
  width, height = im.size
  if width * height > MAX_PIXELS:
    raise UnreadableImage(name, f'{width}x{height} pixels exceeds the limit of {MAX_PIXELS} '
                                '(lightcls.data.decode.MAX_PIXELS)')


def _upright(im: Image.Image) -> Image.Image:
  """The image as it is meant to be seen: cameras store sensor rows and record the rotation in EXIF."""
  try:
    orientation = im.getexif().get(_ORIENTATION_TAG, 1)
  except _DECODE_ERRORS:  # a broken EXIF block does not make the pixels unreadable
    return im
  return im.transpose(_UPRIGHT[orientation]) if orientation in _UPRIGHT else im


def _pixels(im: Image.Image, name: str) -> np.ndarray:
  """(H, W, 3) RGB or (H, W, 1) gray uint8 pixels of a loaded image of any PIL mode."""
  if im.mode in _SIXTEEN_BIT_MODES:
    return _from_16_bit(np.asarray(im), name)[..., None]
  if im.mode == 'F':
    raise UnreadableImage(name, 'floating-point pixels (mode F) have no defined 0..255 scale')
  if im.mode == '1':
    im = im.convert('L')
  if 'transparency' in im.info:  # palette or single-colour transparency (GIF, PNG tRNS)
    im = im.convert('RGBA')
  if im.mode in _ALPHA_MODES:
    return _on_white(np.asarray(im.convert(_ALPHA_MODES[im.mode])))
  if im.mode not in ('L', 'RGB'):  # P, CMYK (PIL undoes Adobe's inverted CMYK JPEGs), YCbCr, HSV, ...
    try:
      im = im.convert('RGB')
    except ValueError:
      raise UnreadableImage(name, f'pixel mode {im.mode} cannot be converted to RGB') from None
  pixels = np.asarray(im)
  return pixels[..., None] if pixels.ndim == 2 else pixels


def _from_16_bit(pixels: np.ndarray, name: str) -> np.ndarray:
  """16-bit gray values scaled (not clipped) to 8 bits: round(v * 255 / 65535). PIL reads 16-bit colour PNGs
  as RGB itself, keeping the high byte (v >> 8), within one level of this."""
  pixels = pixels.astype(np.int64)
  if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
    raise UnreadableImage(name, f'32-bit integer pixels in [{pixels.min()}, {pixels.max()}] are not 16-bit values')
  return ((pixels * 255 + 32767) // 65535).astype(np.uint8)


def _on_white(pixels: np.ndarray) -> np.ndarray:
  """Colour channels composited over white by the last (alpha) channel. White, not black: transparent
  regions of product shots, logos and drawings are meant to be seen on a white page, and dark strokes on a
  transparent background (line art, text) would vanish on black."""
  color, alpha = pixels[..., :-1].astype(np.uint32), pixels[..., -1:].astype(np.uint32)
  return ((color * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _array_pixels(array: np.ndarray, name: str) -> np.ndarray:
  """Decoded pixels passed through: (H, W) gains a channel axis, RGBA loses its alpha."""
  if array.dtype != np.uint8:
    raise ValueError(f'{name}: image arrays must be uint8 pixels 0..255; got {array.dtype}. '
                     'Convert with (x * 255).round().astype(np.uint8) if they are floats in [0, 1].')
  if array.ndim == 2:
    return array[..., None]
  if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
    raise ValueError(f'{name}: image arrays must be (H, W) or (H, W, C) with C in (1, 3, 4); '
                     f'got shape {array.shape}')
  return array[..., :3]


def with_channels(pixels: np.ndarray, grayscale: bool) -> np.ndarray:
  """(H, W, 1) luma when `grayscale` (ITU-R 601, as PIL and torchvision), else (H, W, 3) RGB."""
  if grayscale and pixels.shape[-1] == 3:
    return np.asarray(Image.fromarray(pixels).convert('L'))[..., None]
  if not grayscale and pixels.shape[-1] == 1:
    return np.repeat(pixels, 3, axis=-1)
  return np.ascontiguousarray(pixels)
