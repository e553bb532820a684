"""Image folders: root/<split>/<class>/**/*.jpg (the torchvision ImageFolder layout, one folder per split).

Classes are the train split's class folders sorted by name, so label i means the same class in every split.
"""
from __future__ import annotations

import logging
import os

import ml_collections

from lightcls.config_utils import ConfigError
from lightcls.data.decode import is_image_path
from lightcls.data.dataset import Dataset, Record, Records

log = logging.getLogger(__name__)


def class_folders(split_dir: str) -> tuple[str, ...]:
  """The class folder names of one split, sorted (hidden folders such as .ipynb_checkpoints skipped)."""
  if not os.path.isdir(split_dir):
    raise FileNotFoundError(f'{split_dir} is not a folder; expected <data_dir>/<split>/<class>/<image files>.')
  names = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith('.'))
  if not names:
    raise ValueError(f'{split_dir} has no class folders; expected {split_dir}/<class>/<image files>.')
  return tuple(names)


def _files(folder: str) -> list[str]:
  """Every file under `folder`, in sorted order (subfolders included, as torchvision's ImageFolder)."""
  paths = []
  for parent, dirs, names in os.walk(folder, followlinks=True):
    dirs.sort()
    paths.extend(os.path.join(parent, n) for n in sorted(names))
  return paths


def _image_files(class_dir: str) -> list[str]:
  files = _files(class_dir)
  images = [f for f in files if is_image_path(f)]
  skipped = [os.path.relpath(f, class_dir) for f in files if not is_image_path(f)]
  if skipped:
    log.info('%s: skipped %d file(s) without an image extension: %s', class_dir, len(skipped),
             ', '.join(skipped[:10]) + (' ...' if len(skipped) > 10 else ''))
  if not images:
    raise ValueError(f'Class folder {class_dir} has no image file (extensions: .jpg .jpeg .png .bmp .gif '
                     f'.webp .tif .tiff); it holds {len(skipped)} other file(s). Add images or remove the folder.')
  return images


def split_records(split_dir: str, class_names: tuple[str, ...]) -> Records:
  """The images of one split, labelled by the position of their folder in `class_names`; a class folder
  that is not in `class_names` (e.g. only in eval) is an error, a missing one is not."""
  present = class_folders(split_dir)
  unknown = sorted(set(present) - set(class_names))
  if unknown:
    raise ValueError(f'{split_dir} has class folder(s) {unknown} that the training split lacks; '
                     'every class must have training images (labels would not match).')
  missing = sorted(set(class_names) - set(present))
  if missing:
    log.info('%s has no folder for %d class(es): %s', split_dir, len(missing), missing[:10])
  return Records.of([Record(path, label, path) for label, name in enumerate(class_names) if name in present
                     for path in _image_files(os.path.join(split_dir, name))])


def load_folder(config: ml_collections.ConfigDict) -> Dataset:
  """A dataset from config.data_dir/<train_split>/<class>/... and .../<eval_split>/<class>/... (split names
  default to 'train' and 'test'). Without an eval folder, config.val_fraction > 0 carves one from train."""
  if not config.data_dir:
    raise ConfigError("config.data.data_dir must name the image folder root (root/<split>/<class>/*.jpg) "
                      "when data.source='folder'.")
  train_dir = os.path.join(config.data_dir, config.train_split or 'train')
  eval_dir = os.path.join(config.data_dir, config.eval_split or 'test')
  class_names = class_folders(train_dir)
  train = split_records(train_dir, class_names)
  if os.path.isdir(eval_dir):
    eval_ = split_records(eval_dir, class_names)
  elif config.val_fraction:
    eval_ = Records.of([])  # the pipeline replaces it with a stratified part of train
  else:
    raise ConfigError(f'No eval folder {eval_dir}. Set config.data.eval_split to the folder holding the '
                      'evaluation images, or config.data.val_fraction (e.g. 0.1) to hold out part of train.')
  log.info('%s: %d classes, %d train and %d eval images', config.data_dir, len(class_names), len(train),
           len(eval_))
  return Dataset(train, eval_, class_names)
