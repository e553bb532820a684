import io
import pickle
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from lightcls.data import decode
from lightcls.data.decode import UnreadableImage, decode_image

RNG = np.random.default_rng(0)


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, fmt, **options)
  return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
  return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))


def _png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes) -> bytes:
  """A PNG written by hand (PNG spec, filter type 0), independent of PIL's encoder."""
  header = struct.pack('>IIBBBBB', width, height, bit_depth, color_type, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', header) + _png_chunk(b'IDAT', zlib.compress(rows)) +
          _png_chunk(b'IEND', b''))


def _png_16_bit(pixels: np.ndarray) -> bytes:
  """(H, W, 1 or 3) uint16 -> a 16-bit gray or RGB PNG."""
  height, width, channels = pixels.shape
  rows = b''.join(b'\0' + row.astype('>u2').tobytes() for row in pixels)
  return _png(width, height, 16, {1: 0, 3: 2}[channels], rows)


def _blocks(height: int = 32, width: int = 48) -> np.ndarray:
  """Flat 8x8 blocks of random colours: survive JPEG almost unchanged, and show any rotation or flip."""
  colors = RNG.integers(0, 256, (height // 8, width // 8, 3), np.uint8)
  return np.repeat(np.repeat(colors, 8, axis=0), 8, axis=1)


def test_rgb_jpeg_decodes_alike_from_its_path_and_its_bytes(tmp_path):
  pixels = _blocks()
  data = _encoded(Image.fromarray(pixels), 'JPEG', quality=95, subsampling=0)  # 4:4:4 keeps block colours
  (tmp_path / 'a.jpg').write_bytes(data)
  from_path = decode_image(str(tmp_path / 'a.jpg'), 'a.jpg')
  assert from_path.shape == (32, 48, 3) and from_path.dtype == np.uint8
  np.testing.assert_array_equal(from_path, decode_image(data, 'a.jpg'))
  np.testing.assert_allclose(from_path[4::8, 4::8], pixels[4::8, 4::8], atol=8)  # block centres


@pytest.mark.parametrize('fmt,options', [('PNG', {}), ('BMP', {}), ('TIFF', {}), ('WEBP', {'lossless': True}),
                                         ('GIF', {})])
def test_lossless_formats_decode_to_the_stored_pixels(fmt, options):
  pixels = _blocks()  # 24 colours: fits a GIF palette exactly
  np.testing.assert_array_equal(decode_image(_encoded(Image.fromarray(pixels), fmt, **options), fmt), pixels)


def test_gray_image_gives_three_equal_channels_or_one_when_asked():
  gray = RNG.integers(0, 256, (10, 12), np.uint8)
  data = _encoded(Image.fromarray(gray), 'PNG')
  np.testing.assert_array_equal(decode_image(data, 'g.png'), np.repeat(gray[..., None], 3, axis=-1))
  np.testing.assert_array_equal(decode_image(data, 'g.png', grayscale=True), gray[..., None])


def test_grayscale_of_a_colour_image_is_itu_r_601_luma():
  rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], np.uint8)
  luma = decode_image(_encoded(Image.fromarray(rgb), 'PNG'), 'c.png', grayscale=True)
  np.testing.assert_allclose(luma[0, :, 0], [0.299 * 255, 0.587 * 255, 0.114 * 255, 255], atol=1)


def test_one_bit_image_becomes_black_and_white():
  bits = np.array([[0, 1, 1, 0]], bool)
  data = _encoded(Image.fromarray(bits), 'PNG')
  np.testing.assert_array_equal(decode_image(data, 'b.png', grayscale=True)[0, :, 0], [0, 255, 255, 0])


def test_alpha_is_composited_on_white():
  rgba = np.array([[[200, 20, 40, 0], [200, 20, 40, 255], [200, 20, 40, 51]]], np.uint8)
  decoded = decode_image(_encoded(Image.fromarray(rgba), 'PNG'), 'a.png')
  expected = [[255, 255, 255], [200, 20, 40], np.round((np.array([200, 20, 40]) * 51 + 255 * 204) / 255)]
  np.testing.assert_array_equal(decoded[0], np.array(expected, np.uint8))


def test_gray_with_alpha_is_composited_on_white():
  la = Image.fromarray(np.array([[[0, 0], [0, 255], [100, 102]]], np.uint8), 'LA')
  decoded = decode_image(_encoded(la, 'PNG'), 'la.png', grayscale=True)
  np.testing.assert_array_equal(decoded[0, :, 0], [255, 0, round((100 * 102 + 255 * 153) / 255)])


def test_palette_image_with_a_transparent_index_is_composited_on_white():
  palette_image = Image.fromarray(np.array([[0, 1, 2]], np.uint8), 'P')
  palette_image.putpalette([255, 0, 0, 0, 0, 255, 10, 20, 30])
  data = _encoded(palette_image, 'PNG', transparency=1)
  np.testing.assert_array_equal(decode_image(data, 'p.png')[0], [[255, 0, 0], [255, 255, 255], [10, 20, 30]])


def test_cmyk_jpeg_decodes_to_rgb():
  cyan, black = (255, 0, 0, 0), (0, 0, 0, 255)
  cmyk = np.array([[cyan] * 8 + [black] * 8] * 8, np.uint8)
  decoded = decode_image(_encoded(Image.fromarray(cmyk, 'CMYK'), 'JPEG', quality=95), 'cmyk.jpg')
  np.testing.assert_allclose(decoded[4, 2], [0, 255, 255], atol=6)
  np.testing.assert_allclose(decoded[4, 13], [0, 0, 0], atol=6)


def test_16_bit_gray_png_is_scaled_to_8_bits_not_clipped():
  ramp = np.array([0, 1, 128, 129, 200, 257, 385, 32767, 32768, 65279, 65535], np.uint16)
  decoded = decode_image(_png_16_bit(ramp[None, :, None]), 'ramp.png', grayscale=True)
  np.testing.assert_array_equal(decoded[0, :, 0], [0, 0, 0, 1, 1, 1, 1, 127, 128, 254, 255])  # v / 257


def test_16_bit_rgb_png_keeps_within_one_level_of_exact_scaling():
  ramp = np.arange(0, 65536, 97, dtype=np.uint16)
  decoded = decode_image(_png_16_bit(np.stack([ramp, ramp[::-1], ramp], -1)[None]), 'rgb16.png')
  exact = np.round(np.stack([ramp, ramp[::-1], ramp], -1) / 257)
  assert np.abs(decoded[0].astype(int) - exact).max() <= 1
  assert decoded[0, 0, 0] == 0 and decoded[0, 0, 1] == 255 and decoded[0, -1, 0] == 255


# Visual position of the stored image per EXIF orientation (EXIF 2.32, 4.6.4 tag 0x0112), written out here
# independently of the decoder's PIL transpose table.
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),        # row 0 is the right side: turn clockwise
    7: lambda a: np.rot90(a, -1)[::-1],
    8: lambda a: np.rot90(a, 1),         # row 0 is the left side: turn counter-clockwise
}


def _jpeg_with_orientation(pixels: np.ndarray, orientation: int | None) -> bytes:
  exif = Image.Exif()
  if orientation is not None:
    exif[0x0112] = orientation
  return _encoded(Image.fromarray(pixels), 'JPEG', quality=95, exif=exif)


@pytest.mark.parametrize('orientation', sorted(UPRIGHT))
def test_exif_orientation_is_applied(orientation):
  pixels = _blocks(24, 40)
  stored = decode_image(_jpeg_with_orientation(pixels, None), 'plain.jpg')  # same coefficients, no tag
  decoded = decode_image(_jpeg_with_orientation(pixels, orientation), f'o{orientation}.jpg')
  np.testing.assert_array_equal(decoded, UPRIGHT[orientation](stored))


def test_exif_orientation_6_puts_the_stored_top_left_corner_at_the_top_right():
  pixels = np.zeros((16, 32, 3), np.uint8)
  pixels[:8, :8] = (255, 0, 0)  # red block at the stored top-left
  decoded = decode_image(_jpeg_with_orientation(pixels, 6), 'rotated.jpg')
  assert decoded.shape == (32, 16, 3)
  assert decoded[3, 12, 0] > 200 and decoded[3, 12, 1] < 60   # top-right: red
  assert decoded[3, 3].max() < 60                              # top-left: black


@pytest.fixture(scope='module')
def huge_jpeg(tmp_path_factory) -> str:
  """A 102-megapixel JPEG (above PIL's default 89 MP bomb limit)."""
  pixels = np.zeros((10000, 10240), np.uint8)
  pixels[:, 5120:] = 200
  path = tmp_path_factory.mktemp('huge') / 'huge.jpg'
  Image.fromarray(pixels).save(path, quality=50)
  return str(path)


@pytest.mark.filterwarnings('error::PIL.Image.DecompressionBombWarning')
def test_huge_jpeg_decodes_quickly_at_a_reduced_size_that_still_covers_max_side(huge_jpeg):
  start = time.perf_counter()
  decoded = decode_image(huge_jpeg, 'huge.jpg', max_side=1000)
  assert time.perf_counter() - start < 5
  assert decoded.shape == (1250, 1280, 3)  # 1/8 scale: both sides still >= 1000
  assert decoded[600, 100].max() < 10 and abs(int(decoded[600, 1200, 0]) - 200) < 10
  assert decode_image(huge_jpeg, 'huge.jpg', max_side=2000).shape == (2500, 2560, 3)  # 1/4 scale


@pytest.mark.filterwarnings('ignore::PIL.Image.DecompressionBombWarning')
@pytest.mark.parametrize('side', [30000, 50000])  # above our limit; the second also above PIL's error limit
def test_image_over_the_pixel_limit_is_unreadable_not_a_crash(side):
  bomb = _png(side, side, 1, 0, b'')  # only the header matters: the size is refused before decoding
  with pytest.raises(UnreadableImage, match=r'bomb\.png: .*pixels'):
    decode_image(bomb, 'bomb.png')


@pytest.fixture(scope='module')
def bad_folder(tmp_path_factory):
  """Files an image folder of real data tends to contain."""
  folder = tmp_path_factory.mktemp('bad')
  jpeg = _encoded(Image.fromarray(_blocks()), 'JPEG')
  png = _encoded(Image.fromarray(_blocks()), 'PNG')
  (folder / 'truncated.jpg').write_bytes(jpeg[:len(jpeg) // 2])
  (folder / 'truncated.png').write_bytes(png[:len(png) // 2])
  (folder / 'corrupt.jpg').write_bytes(RNG.integers(0, 256, 2000, np.uint8).tobytes())
  (folder / 'empty.jpg').write_bytes(b'')
  (folder / 'notes.jpg').write_text('these are my notes, not a photo\n')
  (folder / 'page.jpg').write_text('<!DOCTYPE html><html>404 Not Found</html>')
  return folder


@pytest.mark.parametrize('name,reason', [
    ('truncated.jpg', 'truncated'),
    ('truncated.png', 'truncated'),
    ('corrupt.jpg', 'not an image'),
    ('empty.jpg', 'empty file'),
    ('notes.jpg', "not an image file \\(starts with b'these are my not"),
    ('page.jpg', 'DOCTYPE'),
    ('missing.jpg', 'cannot open'),
])
def test_unreadable_files_raise_an_error_naming_the_file_and_reason(bad_folder, name, reason):
  path = str(bad_folder / name)
  with pytest.raises(UnreadableImage, match=f'{name}: unreadable image .*{reason}') as caught:
    decode_image(path, path)
  assert caught.value.name == path
  if name != 'missing.jpg':
    with pytest.raises(UnreadableImage):  # the bytes fail alike
      decode_image((bad_folder / name).read_bytes(), name)


def test_unreadable_image_survives_pickling():
  error = pickle.loads(pickle.dumps(UnreadableImage('a.jpg', 'truncated')))
  assert (error.name, error.reason, str(error)) == ('a.jpg', 'truncated', 'a.jpg: unreadable image (truncated)')


def test_arrays_pass_through_with_channels_made_consistent():
  gray = RNG.integers(0, 256, (5, 6), np.uint8)
  np.testing.assert_array_equal(decode_image(gray, 'g'), np.repeat(gray[..., None], 3, axis=-1))
  np.testing.assert_array_equal(decode_image(gray, 'g', grayscale=True), gray[..., None])
  rgba = RNG.integers(0, 256, (5, 6, 4), np.uint8)
  np.testing.assert_array_equal(decode_image(rgba, 'rgba'), rgba[..., :3])


@pytest.mark.parametrize('array,message', [
    (np.zeros((4, 4, 3), np.float32), 'uint8'),
    (np.zeros((4, 4, 2), np.uint8), 'C in'),
    (np.zeros((2, 4, 4, 3), np.uint8), 'C in'),
])
def test_wrong_arrays_are_errors_naming_the_example(array, message):
  with pytest.raises(ValueError, match=f'example 7: .*{message}'):
    decode_image(array, 'example 7')


def test_image_extensions_are_recognised_in_any_case():
  assert decode.is_image_path('a/B.JPG') and decode.is_image_path('x.tiff') and decode.is_image_path('y.webp')
  assert not decode.is_image_path('notes.txt') and not decode.is_image_path('jpg')
