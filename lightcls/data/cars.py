"""Stanford Cars (Krause et al. 2013) from its original files: 16,185 photos of 196 car models (8,144 train,
8,041 test), each with a bounding box. (tfds' cars196 download URLs are dead, tensorflow/datasets#4932.)

config.data_dir holds one of the two published layouts:
  updated release:  car_ims.tgz, cars_annos.mat, car_devkit.tgz
  first release:    cars_train.tgz, cars_test.tgz, car_devkit.tgz, cars_test_annos_withlabels.mat
Class names come from the devkit's cars_meta.mat; labels are 0..195 (the .mat files count from 1).

The annotated images are extracted once into <data_dir>/prepared/ with an index.json (python -m
lightcls.data.prepare --source=cars, or automatically on first load). Extraction writes to a temporary folder
renamed into place when complete, so a killed preparation never leaves a prepared/ that is trusted.
"""
from __future__ import annotations

import dataclasses
import glob
import gzip
import io
import json
import logging
import os
import shutil
import tarfile
import tempfile
import zlib
from typing import Any, BinaryIO, Iterable

import ml_collections
import numpy as np
import scipy.io

from lightcls.config_utils import ConfigError
from lightcls.data.progress import ProgressBar
from lightcls.data.dataset import Box, Dataset, Record, Records

log = logging.getLogger(__name__)

LAYOUTS = {
    'updated release': ('car_ims.tgz', 'cars_annos.mat', 'car_devkit.tgz'),
    'first release': ('cars_train.tgz', 'cars_test.tgz', 'car_devkit.tgz', 'cars_test_annos_withlabels.mat'),
}
PREPARED_DIR = 'prepared'
INDEX_FILE = 'index.json'
DEVKIT_META = 'devkit/cars_meta.mat'
DEVKIT_TRAIN_ANNOS = 'devkit/cars_train_annos.mat'
_BOX_FIELDS = ('bbox_x1', 'bbox_y1', 'bbox_x2', 'bbox_y2')  # MATLAB: 1-based, inclusive corners


@dataclasses.dataclass(frozen=True)
class Annotation:
  member: str  # the image's path inside its archive, e.g. 'car_ims/000001.jpg'
  label: int   # 0-based class
  box: Box     # 0-based, half-open: the crop is image[y_min:y_max, x_min:x_max]
  test: bool


def complete_layout(data_dir: str) -> str:
  """The name of the first layout whose files are all in `data_dir`; none complete is an error that lists
  what each layout lacks."""
  missing = {name: [f for f in files if not os.path.isfile(os.path.join(data_dir, f))]
             for name, files in LAYOUTS.items()}
  for name, files in missing.items():
    if not files:
      return name
  lacks = '; '.join(f'{name} lacks {", ".join(files)}' for name, files in missing.items())
  raise FileNotFoundError(f'{data_dir} holds neither layout of the Stanford Cars files ({lacks}). Download them '
                          'from the dataset page (https://ai.stanford.edu/~jkrause/cars/car_dataset.html) or a '
                          'mirror and put them in config.data.data_dir.')


def _loadmat(source: str | BinaryIO, what: str) -> dict[str, Any]:
  try:
    return scipy.io.loadmat(source, squeeze_me=True)
  except (ValueError, TypeError, OSError, NotImplementedError) as error:
    raise ValueError(f'{what} is not a readable MATLAB file ({error}).') from None


def _devkit_mat(data_dir: str, member: str) -> dict[str, Any]:
  """A .mat file read from inside car_devkit.tgz."""
  archive = os.path.join(data_dir, 'car_devkit.tgz')
  with _opened_tar(archive) as tar:
    try:
      data = tar.extractfile(member).read()
    except KeyError:
      raise ValueError(f'{archive} has no member {member}; is it the Stanford Cars devkit?') from None
  return _loadmat(io.BytesIO(data), f'{archive}:{member}')


def _opened_tar(path: str) -> tarfile.TarFile:
  try:
    return tarfile.open(path, 'r:*')
  except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
    raise ValueError(f'{path} is not a readable tar archive ({error}); download it again.') from None


def class_names(data_dir: str) -> tuple[str, ...]:
  """The 196 model names ('AM General Hummer SUV 2000', ...) in label order, from the devkit."""
  names = np.atleast_1d(_devkit_mat(data_dir, DEVKIT_META)['class_names'])
  return tuple(str(n).strip() for n in names)


def _struct_rows(mat: dict[str, Any], path_field: str, what: str) -> np.ndarray:
  """The 'annotations' struct array as a 1-D record array (squeeze_me makes a single row 0-d), checked to
  have the fields read from it."""
  if 'annotations' not in mat:
    variables = sorted(k for k in mat if not k.startswith('__'))
    raise ValueError(f'{what} has no "annotations" variable; found {variables}.')
  rows = np.atleast_1d(mat['annotations'])
  missing = sorted({path_field, 'class', *_BOX_FIELDS} - set(rows.dtype.names or ()))
  if missing:
    raise ValueError(f'{what}: the annotations lack the field(s) {missing} (has {rows.dtype.names}); '
                     'a test annotation file without labels cannot be used (cars_test_annos_withlabels.mat has them).')
  return rows


def _annotation(row: np.void, member: str, test: bool, num_classes: int, what: str) -> Annotation:
  """One row of a .mat annotations table: MATLAB's 1-based class and inclusive 1-based box corners made
  0-based (label) and 0-based half-open (box)."""
  label = int(row['class'])
  if not 1 <= label <= num_classes:
    raise ValueError(f'{what}: {member} has class {label}, outside 1..{num_classes}.')
  x1, y1, x2, y2 = (int(row[k]) for k in _BOX_FIELDS)
  return Annotation(_safe_member(member, what), label - 1, (x1 - 1, y1 - 1, x2, y2), test)


def _safe_member(member: str, what: str) -> str:
  """A normalised relative archive path; anything that would leave the prepared folder is refused."""
  path = os.path.normpath(member.strip()).replace(os.sep, '/')
  if os.path.isabs(path) or path.startswith('..'):
    raise ValueError(f'{what}: image path {member!r} points outside the archive.')
  return path


def annotations(data_dir: str, layout: str, num_classes: int) -> list[Annotation]:
  """Every annotated image of the layout, train and test, in the files' order."""
  if layout == 'updated release':
    what = os.path.join(data_dir, 'cars_annos.mat')
    return [_annotation(row, str(row['relative_im_path']), bool(row['test']), num_classes, what)
            for row in _struct_rows(_loadmat(what, what), 'relative_im_path', what)]
  train_what = f'{os.path.join(data_dir, "car_devkit.tgz")}:{DEVKIT_TRAIN_ANNOS}'
  test_what = os.path.join(data_dir, 'cars_test_annos_withlabels.mat')
  train = _struct_rows(_devkit_mat(data_dir, DEVKIT_TRAIN_ANNOS), 'fname', train_what)
  test = _struct_rows(_loadmat(test_what, test_what), 'fname', test_what)
  return ([_annotation(row, f'cars_train/{row["fname"]}', False, num_classes, train_what) for row in train] +
          [_annotation(row, f'cars_test/{row["fname"]}', True, num_classes, test_what) for row in test])


def _archives(data_dir: str, layout: str) -> list[str]:
  return [os.path.join(data_dir, f) for f in LAYOUTS[layout] if f.endswith('.tgz') and f != 'car_devkit.tgz']


def _extract(archives: Iterable[str], members: set[str], destination: str, bar: ProgressBar) -> None:
  """Writes each wanted member of the archives to destination/member, reading every archive once in order
  (gzip cannot seek); members are written under names from the annotations only, never the archive's."""
  found = set()
  for archive in archives:
    with _opened_tar(archive) as tar:
      try:
        for info in tar:
          name = os.path.normpath(info.name).replace(os.sep, '/')
          if info.isfile() and name in members and name not in found:
            target = os.path.join(destination, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with tar.extractfile(info) as src, open(target, 'wb') as dst:
              shutil.copyfileobj(src, dst)
            found.add(name)
            bar.update(len(found))
      except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise ValueError(f'{archive} is truncated or corrupt ({error}); download it again.') from None
  missing = sorted(members - found)
  if missing:
    raise ValueError(f'{len(missing)} image(s) named in the annotations are not in '
                     f'{", ".join(map(os.path.basename, archives))}: {", ".join(missing[:5])}'
                     f'{" ..." if len(missing) > 5 else ""}')


def _index(layout: str, names: tuple[str, ...], annos: list[Annotation]) -> dict[str, Any]:
  return {'format': 1, 'layout': layout, 'class_names': list(names),
          'images': [[a.member, a.label, *a.box, int(a.test)] for a in annos]}


def prepare(data_dir: str) -> str:
  """<data_dir>/prepared, with the annotated images extracted and index.json, made now unless already done."""
  prepared = os.path.join(data_dir, PREPARED_DIR)
  if os.path.isfile(os.path.join(prepared, INDEX_FILE)):
    return prepared
  if os.path.exists(prepared):
    raise ValueError(f'{prepared} exists but has no {INDEX_FILE}, so it is not a finished preparation; '
                     'delete it to prepare again.')
  layout = complete_layout(data_dir)
  names = class_names(data_dir)
  annos = annotations(data_dir, layout, len(names))
  log.info('Stanford Cars (%s): extracting %d images into %s', layout, len(annos), prepared)
  temporary = tempfile.mkdtemp(prefix=f'.{PREPARED_DIR}-', dir=data_dir)
  try:
    members = {a.member for a in annos}
    with ProgressBar('extracting Stanford Cars', len(members)) as bar:
      _extract(_archives(data_dir, layout), members, temporary, bar)
    with open(os.path.join(temporary, INDEX_FILE), 'w') as f:
      json.dump(_index(layout, names, annos), f)
    _publish(temporary, prepared)
  finally:
    shutil.rmtree(temporary, ignore_errors=True)  # gone already when published
  _warn_leftovers(data_dir)
  return prepared


def _publish(temporary: str, prepared: str) -> None:
  """Renames the finished folder into place (atomic); another process that finished first wins."""
  try:
    os.rename(temporary, prepared)
  except OSError:
    if not os.path.isfile(os.path.join(prepared, INDEX_FILE)):
      raise


def _warn_leftovers(data_dir: str) -> None:
  leftovers = glob.glob(os.path.join(data_dir, f'.{PREPARED_DIR}-*'))
  if leftovers:
    log.warning('Folders of interrupted (or running) preparations take space in %s: %s; delete them when no '
                'preparation is running.', data_dir, ', '.join(map(os.path.basename, leftovers)))


def _records(prepared: str, rows: list[list[Any]]) -> Records:
  records = []
  for member, label, x0, y0, x1, y1, _ in rows:
    path = os.path.join(prepared, member)
    records.append(Record(path, label, path, (x0, y0, x1, y1)))
  return Records.of(records)


def _split(key: str, split: str) -> int:
  """1 for the test split, 0 for train (the value of the annotations' test flag)."""
  if split not in ('train', 'test'):
    raise ConfigError(f"config.data.{key}={split!r}: Stanford Cars splits are 'train' and 'test'.")
  return int(split == 'test')


def load_cars(config: ml_collections.ConfigDict) -> Dataset:
  """Stanford Cars from the original files in config.data_dir, prepared on first use; records carry boxes."""
  if not config.data_dir:
    raise ConfigError("config.data.data_dir must name the directory of the Stanford Cars files when "
                      "data.source='cars'.")
  prepared = prepare(config.data_dir)
  with open(os.path.join(prepared, INDEX_FILE)) as f:
    index = json.load(f)
  splits = [_records(prepared, [r for r in index['images'] if r[-1] == _split(key, config[key] or default)])
            for key, default in (('train_split', 'train'), ('eval_split', 'test'))]
  log.info('Stanford Cars: %d classes, %d train and %d eval images', len(index['class_names']),
           len(splits[0]), len(splits[1]))
  return Dataset(splits[0], splits[1], tuple(index['class_names']))
