"""Stanford Cars from generated miniatures of its original files: .mat files in the real field structure
(written with scipy.io.savemat) and real .tgz archives of small JPEGs, in both published layouts."""
import io
import logging
import os
import tarfile

import numpy as np
import pytest
import scipy.io
from PIL import Image

from configs import default
from lightcls.config_utils import ConfigError
from lightcls.data import cars, prepare, sources
from lightcls.data.decode import decode_image

CLASS_NAMES = ['AM General Hummer SUV 2000'] + [f'Make {i} Model Sedan 2012' for i in range(2, 196)] + [
    'smart fortwo Convertible 2012']
# (class 1..196, box as MATLAB's 1-based inclusive x1, y1, x2, y2, test flag)
UPDATED = [(1, (3, 2, 18, 14), 0), (1, (1, 1, 20, 16), 1), (14, (5, 4, 10, 9), 0), (196, (2, 3, 19, 12), 1),
           (196, (1, 2, 3, 4), 0), (14, (7, 7, 8, 8), 0)]


def _jpeg(value: int) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(np.full((16, 20, 3), value, np.uint8)).save(buffer, 'JPEG', quality=95)
  return buffer.getvalue()


def _tgz(path, members: dict[str, bytes]) -> None:
  with tarfile.open(path, 'w:gz') as tar:
    for name, data in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))


def _struct_array(rows: list[dict]) -> np.ndarray:
  """A 1xN MATLAB struct array, as savemat writes a structured array of objects."""
  array = np.empty((1, len(rows)), [(field, 'O') for field in rows[0]])
  for i, row in enumerate(rows):
    array[0, i] = tuple(row.values())
  return array


def _mat_bytes(variables: dict) -> bytes:
  buffer = io.BytesIO()
  scipy.io.savemat(buffer, variables)
  return buffer.getvalue()


def _box_fields(box) -> dict:
  return {k: np.uint16(v) for k, v in zip(('bbox_x1', 'bbox_y1', 'bbox_x2', 'bbox_y2'), box)}


def _cell(strings) -> np.ndarray:
  return np.array(strings, dtype=object).reshape(1, -1)


def _devkit(directory, train_rows: list[dict]) -> None:
  """car_devkit.tgz as published: devkit/cars_meta.mat, cars_train_annos.mat, cars_test_annos.mat, README."""
  test_rows = [{**_box_fields((1, 1, 5, 5)), 'fname': '00001.jpg'}]  # no class: the unlabelled original
  _tgz(directory / 'car_devkit.tgz', {
      'devkit/README.txt': b'This file gives documentation for the cars 196 dataset.',
      'devkit/cars_meta.mat': _mat_bytes({'class_names': _cell(CLASS_NAMES)}),
      'devkit/cars_train_annos.mat': _mat_bytes({'annotations': _struct_array(train_rows)}),
      'devkit/cars_test_annos.mat': _mat_bytes({'annotations': _struct_array(test_rows)}),
  })


def _updated_row(i: int, label: int, box, test: int) -> dict:
  return {'relative_im_path': f'car_ims/{i + 1:06d}.jpg', **_box_fields(box), 'class': np.uint8(label),
          'test': np.uint8(test)}


def _updated_release(directory, rows=UPDATED, images: int | None = None):
  """car_ims.tgz + cars_annos.mat + car_devkit.tgz; image i is filled with the value 30 * (i + 1) mod 256."""
  directory.mkdir(exist_ok=True)
  count = len(rows) if images is None else images
  _tgz(directory / 'car_ims.tgz', {f'car_ims/{i + 1:06d}.jpg': _jpeg(30 * (i + 1) % 256) for i in range(count)})
  annotations = [_updated_row(i, *row) for i, row in enumerate(rows)]
  (directory / 'cars_annos.mat').write_bytes(_mat_bytes({'annotations': _struct_array(annotations),
                                                         'class_names': _cell(CLASS_NAMES)}))
  _devkit(directory, [{**_box_fields((1, 1, 20, 16)), 'class': np.uint8(2), 'fname': '00001.jpg'}])
  return directory


def _first_release(directory, test_class: int = 196):
  """cars_train.tgz + cars_test.tgz + car_devkit.tgz + cars_test_annos_withlabels.mat (members './'-prefixed,
  as tar writes them when run inside the folder)."""
  directory.mkdir(exist_ok=True)
  train = [(3, (2, 2, 9, 9)), (1, (1, 1, 20, 16)), (3, (4, 5, 6, 7))]
  _tgz(directory / 'cars_train.tgz', {f'./cars_train/{i + 1:05d}.jpg': _jpeg(20 + 10 * i) for i in range(3)})
  _tgz(directory / 'cars_test.tgz', {f'./cars_test/{i + 1:05d}.jpg': _jpeg(200 + 10 * i) for i in range(2)})
  _devkit(directory, [{**_box_fields(box), 'class': np.uint8(label), 'fname': f'{i + 1:05d}.jpg'}
                      for i, (label, box) in enumerate(train)])
  test = [{**_box_fields((1, 2, 3, 4)), 'class': np.uint8(c), 'fname': f'{i + 1:05d}.jpg'}
          for i, c in enumerate((2, test_class))]
  (directory / 'cars_test_annos_withlabels.mat').write_bytes(_mat_bytes({'annotations': _struct_array(test)}))
  return directory


def _config(directory, **overrides):
  config = default.get_config().data
  config.update(source='cars', data_dir=str(directory), **overrides)
  return config


def test_updated_release_loads_0_based_labels_half_open_boxes_and_devkit_names(tmp_path):
  data = sources.load(_config(_updated_release(tmp_path / 'cars')))
  assert data.class_names == tuple(CLASS_NAMES) and data.num_classes == 196
  train, test = list(data.train), list(data.eval)
  assert [os.path.basename(r.name) for r in train] == ['000001.jpg', '000003.jpg', '000005.jpg', '000006.jpg']
  assert [os.path.basename(r.name) for r in test] == ['000002.jpg', '000004.jpg']
  np.testing.assert_array_equal(data.train.labels, [0, 13, 195, 13])
  np.testing.assert_array_equal(data.eval.labels, [0, 195])
  # MATLAB x1=3..x2=18 (inclusive, 1-based) are 0-based columns 2..17: the slice 2:18.
  assert train[0].box == (2, 1, 18, 14) and test[0].box == (0, 0, 20, 16) and train[3].box == (6, 6, 8, 8)


def test_updated_release_records_are_the_annotated_images(tmp_path):
  data = cars.load_cars(_config(_updated_release(tmp_path / 'cars')))
  values = [int(decode_image(r.image, r.name)[8, 10, 0]) for r in data.train]
  np.testing.assert_allclose(values, [30, 90, 150, 180], atol=2)


def test_first_release_loads_train_and_test_from_their_own_archives(tmp_path):
  data = cars.load_cars(_config(_first_release(tmp_path / 'cars')))
  np.testing.assert_array_equal(data.train.labels, [2, 0, 2])
  np.testing.assert_array_equal(data.eval.labels, [1, 195])
  assert [r.box for r in data.train] == [(1, 1, 9, 9), (0, 0, 20, 16), (3, 4, 6, 7)]
  assert [os.path.relpath(r.name, tmp_path / 'cars') for r in data.eval] == ['prepared/cars_test/00001.jpg',
                                                                            'prepared/cars_test/00002.jpg']
  values = [int(decode_image(r.image, r.name)[0, 0, 0]) for r in (*data.train, *data.eval)]
  np.testing.assert_allclose(values, [20, 30, 40, 200, 210], atol=2)


def test_preparation_happens_once_and_later_loads_need_no_archives(tmp_path):
  directory = _updated_release(tmp_path / 'cars')
  cars.load_cars(_config(directory))
  assert (directory / 'prepared' / 'index.json').is_file()
  for archive in ('car_ims.tgz', 'car_devkit.tgz', 'cars_annos.mat'):
    (directory / archive).unlink()
  assert len(cars.load_cars(_config(directory)).train) == 4


def test_cli_prepares_and_shows_progress_on_stderr(tmp_path, capsys):
  directory = _first_release(tmp_path / 'cars')
  assert prepare.main(['--source=cars', f'--data_dir={directory}']) == 0
  out, err = capsys.readouterr()
  assert out.strip() == str(directory / 'prepared')
  assert 'extracting Stanford Cars: 5/5' in err and 'images/s' in err and 'ETA' in err


def test_cli_reports_missing_files_without_a_traceback(tmp_path, capsys):
  assert prepare.main(['--source=cars', f'--data_dir={tmp_path}']) == 1
  assert 'error:' in capsys.readouterr().err


def test_interrupted_preparation_leaves_nothing_that_is_trusted(tmp_path, monkeypatch):
  directory = _updated_release(tmp_path / 'cars')
  real_extract = cars._extract

  def killed(archives, members, destination, bar):
    real_extract(archives, members, destination, bar)
    raise KeyboardInterrupt  # killed after the images, before the index
  monkeypatch.setattr(cars, '_extract', killed)
  with pytest.raises(KeyboardInterrupt):
    cars.load_cars(_config(directory))
  assert sorted(os.listdir(directory)) == ['car_devkit.tgz', 'car_ims.tgz', 'cars_annos.mat']
  monkeypatch.undo()
  assert len(cars.load_cars(_config(directory)).eval) == 2


def test_leftover_of_a_killed_preparation_is_ignored_and_reported(tmp_path, caplog):
  directory = _updated_release(tmp_path / 'cars')
  (directory / '.prepared-k1ll3d' / 'car_ims').mkdir(parents=True)  # what SIGKILL mid-extraction leaves
  with caplog.at_level(logging.WARNING, logger='lightcls.data.cars'):
    data = cars.load_cars(_config(directory))
  assert len(data.train) == 4 and '.prepared-k1ll3d' in caplog.text


def test_no_complete_layout_lists_what_each_layout_lacks(tmp_path):
  directory = _first_release(tmp_path / 'cars')
  (directory / 'cars_test.tgz').unlink()
  with pytest.raises(FileNotFoundError, match=r'updated release lacks car_ims.tgz, cars_annos.mat; '
                                              r'first release lacks cars_test.tgz\)'):
    cars.load_cars(_config(directory))


def test_image_named_in_annotations_but_missing_from_the_archive_is_named(tmp_path):
  directory = _updated_release(tmp_path / 'cars', images=len(UPDATED) - 1)
  with pytest.raises(ValueError, match=r'1 image\(s\) named in the annotations are not in car_ims.tgz: '
                                       r'car_ims/000006.jpg'):
    cars.load_cars(_config(directory))
  assert not (directory / 'prepared').exists()


@pytest.mark.parametrize('label', [0, 197])
def test_label_outside_1_to_196_is_an_error_naming_the_image(tmp_path, label):
  directory = _updated_release(tmp_path / 'cars', rows=UPDATED[:2] + [(label, (1, 1, 2, 2), 0)])
  with pytest.raises(ValueError, match=f'cars_annos.mat: car_ims/000003.jpg has class {label}, outside 1..196'):
    cars.load_cars(_config(directory))


def test_test_labels_outside_range_in_the_first_release_are_errors_too(tmp_path):
  with pytest.raises(ValueError, match='cars_test_annos_withlabels.mat: cars_test/00002.jpg has class 200'):
    cars.load_cars(_config(_first_release(tmp_path / 'cars', test_class=200)))


def test_unlabelled_test_annotations_are_refused(tmp_path):
  directory = _first_release(tmp_path / 'cars')
  rows = [{**_box_fields((1, 1, 5, 5)), 'fname': '00001.jpg'}]
  (directory / 'cars_test_annos_withlabels.mat').write_bytes(_mat_bytes({'annotations': _struct_array(rows)}))
  with pytest.raises(ValueError, match=r"lack the field\(s\) \['class'\]"):
    cars.load_cars(_config(directory))


def test_image_paths_leaving_the_archive_are_refused(tmp_path):
  directory = _updated_release(tmp_path / 'cars', rows=UPDATED[:1])
  annotations = [{**_updated_row(0, *UPDATED[0]), 'relative_im_path': '../../etc/passwd'}]
  (directory / 'cars_annos.mat').write_bytes(_mat_bytes({'annotations': _struct_array(annotations)}))
  with pytest.raises(ValueError, match='points outside the archive'):
    cars.load_cars(_config(directory))


def test_split_names_other_than_train_and_test_are_config_errors(tmp_path):
  with pytest.raises(ConfigError, match='eval_split'):
    cars.load_cars(_config(_updated_release(tmp_path / 'cars'), eval_split='val'))


def test_missing_data_dir_is_a_config_error():
  config = default.get_config().data
  config.source = 'cars'
  with pytest.raises(ConfigError, match='data_dir'):
    cars.load_cars(config)
