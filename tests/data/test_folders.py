import logging
import os

import numpy as np
import pytest
from PIL import Image

from configs import default
from lightcls.config_utils import ConfigError
from lightcls.data import folders, pipeline, sources
from lightcls.data.decode import decode_image


def _write_image(path, value: int) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.full((6, 5, 3), value, np.uint8)).save(path)


def _tree(root, files: dict[str, int]) -> None:
  for relative, value in files.items():
    _write_image(root / relative, value)


def _config(root, **overrides):
  config = default.get_config().data
  config.update(source='folder', data_dir=str(root), **overrides)
  return config


@pytest.fixture
def root(tmp_path):
  _tree(tmp_path, {'train/dog/d1.png': 10, 'train/dog/d2.JPG': 20, 'train/cat/c1.bmp': 30,
                   'train/cat/more/c2.webp': 40, 'train/emu/e1.tiff': 50,
                   'test/cat/c3.gif': 60, 'test/dog/d3.jpeg': 70})
  (tmp_path / 'train/dog/notes.txt').write_text('not an image')
  (tmp_path / 'train/dog/.DS_Store').write_bytes(b'\0')
  (tmp_path / 'train/.ipynb_checkpoints').mkdir()
  return tmp_path


def test_classes_are_the_sorted_train_folders_and_labels_their_positions(root):
  data = sources.load(_config(root))
  assert data.class_names == ('cat', 'dog', 'emu')
  names = [os.path.relpath(r.name, root) for r in data.train]
  assert names == ['train/cat/c1.bmp', 'train/cat/more/c2.webp', 'train/dog/d1.png', 'train/dog/d2.JPG',
                   'train/emu/e1.tiff']
  np.testing.assert_array_equal(data.train.labels, [0, 0, 1, 1, 2])
  assert [r.label for r in data.eval] == [0, 1]  # emu has no test folder: fine


def test_records_point_at_files_that_decode(root):
  data = folders.load_folder(_config(root))
  pixels = [decode_image(r.image, r.name)[0, 0, 0] for r in data.eval]
  assert pixels == [60, 70] and all(r.box is None for r in data.eval)


def test_files_without_an_image_extension_are_skipped_and_listed(root, caplog):
  with caplog.at_level(logging.INFO, logger='lightcls.data.folders'):
    data = folders.load_folder(_config(root))
  assert not any(r.name.endswith(('.txt', '.DS_Store')) for r in data.train)
  assert 'skipped 2 file(s)' in caplog.text and 'notes.txt' in caplog.text


def test_a_class_only_in_eval_is_an_error(root):
  _write_image(root / 'test/yak/y.png', 0)
  with pytest.raises(ValueError, match=r"\['yak'\] that the training split lacks"):
    folders.load_folder(_config(root))


def test_a_class_folder_without_images_is_an_error_naming_it(root):
  (root / 'train/fox').mkdir()
  (root / 'train/fox/readme.md').write_text('todo')
  with pytest.raises(ValueError, match=f'{root}/train/fox has no image file'):
    folders.load_folder(_config(root))


def test_missing_eval_folder_asks_for_val_fraction(root):
  with pytest.raises(ConfigError, match='val_fraction'):
    folders.load_folder(_config(root, eval_split='val'))


def test_missing_eval_folder_is_fine_when_val_fraction_carves_one(root):
  data = folders.load_folder(_config(root, eval_split='val', val_fraction=0.2))
  assert len(data.train) == 5 and len(data.eval) == 0


def test_split_folder_names_come_from_the_config(root):
  (root / 'test').rename(root / 'validation')
  data = folders.load_folder(_config(root, train_split='train', eval_split='validation'))
  assert len(data.eval) == 2


def test_missing_data_dir_is_a_config_error():
  config = default.get_config().data
  config.source = 'folder'
  with pytest.raises(ConfigError, match='data_dir'):
    folders.load_folder(config)


def test_missing_train_folder_says_which_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match=f'{tmp_path}/train is not a folder'):
    folders.load_folder(_config(tmp_path))


def test_a_folder_with_broken_files_trains_on_the_rest_and_reports_each_one(tmp_path):
  _tree(tmp_path, {'train/cat/ok1.png': 10, 'train/cat/ok2.png': 20, 'train/dog/ok3.png': 30,
                   'test/cat/ok4.png': 40, 'test/dog/ok5.png': 50})
  good = (tmp_path / 'train/dog/ok3.png').read_bytes()
  (tmp_path / 'train/dog/truncated.png').write_bytes(good[:len(good) // 2])
  (tmp_path / 'train/cat/empty.jpg').write_bytes(b'')
  (tmp_path / 'train/cat/notes.jpg').write_text('not a photo')
  data, report = pipeline.prepared(sources.load(_config(tmp_path, image_size=4)), _config(tmp_path, image_size=4))
  assert data.train.images.shape == (3, 4, 4, 3) and data.train.labels.tolist() == [0, 0, 1]
  skipped = {os.path.relpath(s['name'], tmp_path): s['reason'] for s in report['train']['skipped']}
  assert set(skipped) == {'train/dog/truncated.png', 'train/cat/empty.jpg', 'train/cat/notes.jpg'}
  assert report['train'] | {'skipped': None} == {'examples': 6, 'decoded': 3, 'skipped': None, 'per_class': [2, 1]}
  assert report['eval']['decoded'] == 2 and report['class_names'] == ['cat', 'dog']
