import os

import jax
import numpy as np
import pytest

from configs import default

from lightcls.data import pipeline
from lightcls.data.dataset import Dataset, Record, Records, Split


def make_split(n, size=4, channels=1):
  images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, size, size, channels), np.uint8)
  return Split(images, np.arange(n, dtype=np.int32) % 5)


@pytest.mark.parametrize('n,batch', [(37, 8), (32, 8), (5, 8)])
def test_eval_batches_count_every_example_exactly_once(n, batch):
  split = make_split(n)
  seen = []
  for b in pipeline.eval_batches(split, batch):
    assert b['image'].shape[0] == batch and b['mask'].shape == (batch,)
    seen.extend(b['image'][b['mask'], 0, 0, 0].tolist())
  assert sorted(seen) == list(range(n))


def test_eval_batches_split_over_processes_cover_each_example_once():
  split, seen = make_split(37), []
  for process in range(2):
    for b in pipeline.eval_batches(split, 8, process_index=process, process_count=2):
      assert b['image'].shape[0] == 4
      seen.extend(b['image'][b['mask'], 0, 0, 0].tolist())
  assert sorted(seen) == list(range(37))


def test_train_order_depends_only_on_seed_and_epoch():
  split = make_split(40)
  first = [b['label'].tolist() for b in pipeline.train_batches(split, 8, seed=3, epoch=1)]
  again = [b['label'].tolist() for b in pipeline.train_batches(split, 8, seed=3, epoch=1)]
  other_epoch = [b['label'].tolist() for b in pipeline.train_batches(split, 8, seed=3, epoch=2)]
  assert first == again and first != other_epoch


def test_an_epoch_started_mid_way_continues_with_the_batches_of_the_whole_epoch():
  split = make_split(40)
  whole = [b['label'].tolist() for b in pipeline.train_batches(split, 8, seed=3, epoch=1)]
  rest = [b['label'].tolist() for b in pipeline.train_batches(split, 8, seed=3, epoch=1, start=2)]
  assert rest == whole[2:] and len(rest) == 3


def test_train_epoch_has_full_batches_of_distinct_examples():
  split = make_split(43)
  ids = [b['image'][:, 0, 0, 0] for b in pipeline.train_batches(split, 8, seed=0, epoch=0)]
  assert len(ids) == 43 // 8 and all(len(i) == 8 for i in ids)
  flat = np.concatenate(ids)
  assert len(set(flat.tolist())) == len(flat)


def test_processes_receive_disjoint_halves_of_the_global_batch():
  split = make_split(32)
  whole = list(pipeline.train_batches(split, 8, seed=1, epoch=0))
  halves = [list(pipeline.train_batches(split, 8, seed=1, epoch=0, process_index=p, process_count=2))
            for p in range(2)]
  for step, batch in enumerate(whole):
    joined = np.concatenate([halves[0][step]['image'], halves[1][step]['image']])
    np.testing.assert_array_equal(joined, batch['image'])


def test_resize_matches_an_independent_bilinear_antialiased_resize():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
  for size in (16, 96):  # shrinking (antialiased) and enlarging
    ours = pipeline.resized(image, size).astype(np.float32)
    reference = jax.image.resize(image.astype(np.float32), (size, size, 3), 'bilinear', antialias=True)
    assert ours.shape == (size, size, 3)
    assert np.abs(ours - np.asarray(reference)).max() <= 2.0  # 8-bit fixed point inside PIL


def test_center_crop_keeps_the_aspect_ratio_and_takes_the_middle():
  image = np.zeros((40, 80, 1), np.uint8)
  image[:, 20:60] = 255  # the middle square of a 2:1 image
  out = pipeline.resized(image, 20, 'center_crop')
  assert out.shape == (20, 20, 1)
  assert out[:, 1:-1].min() == 255 and out[:, [0, -1]].min() > 128  # edges blurred by the antialias filter


def test_boxes_crop_or_erase_the_background_outside_the_box():
  image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
  box = (2, 1, 5, 4)
  np.testing.assert_array_equal(pipeline.boxed(image, box, erase_background=False), image[1:4, 2:5])
  erased = pipeline.boxed(image, box, erase_background=True)
  outside = np.ones((6, 8), bool)
  outside[1:4, 2:5] = False
  assert erased.shape == image.shape and (erased[outside] == 255).all()
  np.testing.assert_array_equal(erased[1:4, 2:5], image[1:4, 2:5])
  assert pipeline.boxed(image, (9, 9, 12, 12), False) is image  # a box outside the image is ignored


@pytest.mark.parametrize('rgb', [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 200, 30)])
def test_grayscale_is_itu_601_luma(rgb):
  image = np.tile(np.array(rgb, np.uint8), (4, 4, 1))
  out = pipeline.preprocessed(image, None, pipeline.Preprocess(size=4, grayscale=True))
  assert out.shape == (4, 4, 1)
  assert np.abs(out.astype(float) - np.dot(rgb, [0.299, 0.587, 0.114])).max() <= 0.5 + 1e-9


def records(images, labels, boxes=None):
  boxes = boxes or [None] * len(images)
  return Records.of([Record(im, int(y), f'img{i}.png', b) for i, (im, y, b) in enumerate(zip(images, labels, boxes))])


def test_unreadable_files_are_skipped_counted_and_listed():
  good = np.full((10, 12, 3), 7, np.uint8)
  split, report = pipeline.decoded(records([good, b'not an image', b'', good], [0, 1, 1, 1]),
                                   pipeline.Preprocess(size=8), num_classes=2, what='train')
  assert split.images.shape == (2, 8, 8, 3) and split.labels.tolist() == [0, 1]
  assert report.examples == 4 and report.decoded == 2
  assert [s['name'] for s in report.skipped] == ['img1.png', 'img2.png']
  assert all(s['reason'] for s in report.skipped)


def test_a_label_outside_the_classes_names_the_file():
  with pytest.raises(ValueError, match=r'img1\.png.*label 5'):
    pipeline.decoded(records([np.zeros((4, 4, 3), np.uint8)] * 2, [0, 5]), pipeline.Preprocess(size=4), 2, 'train')


def test_a_class_with_no_readable_image_is_an_error_naming_it():
  dataset = Dataset(records([np.zeros((4, 4, 3), np.uint8), b'broken'], [0, 1]),
                    records([np.zeros((4, 4, 3), np.uint8)], [0]), ('cat', 'dog'))
  with pytest.raises(ValueError, match="'dog'.*img1.png"):
    pipeline.prepared(dataset, data_config(image_size=4))


def data_config(**overrides):
  config = default.get_config().data
  config.update(overrides)
  return config


def test_stratified_holdout_takes_the_fraction_of_every_class():
  labels = np.repeat(np.arange(4), [10, 20, 40, 1])
  train, held = pipeline.stratified_holdout(labels, 0.25, seed=3)
  assert sorted(np.concatenate([train, held]).tolist()) == list(range(len(labels)))
  assert np.bincount(labels[held], minlength=4).tolist() == [2, 5, 10, 0]  # round(0.25 n); a singleton stays
  again, _ = pipeline.stratified_holdout(labels, 0.25, seed=3)
  other, _ = pipeline.stratified_holdout(labels, 0.25, seed=4)
  assert np.array_equal(train, again) and not np.array_equal(train, other)


def test_validation_split_replaces_eval_and_uses_eval_preprocessing():
  images = [np.full((6, 6, 3), i, np.uint8) for i in range(20)]
  boxes = [(0, 0, 3, 3)] * 20
  dataset = Dataset(records(images, [i % 2 for i in range(20)], boxes), records(images[:2], [0, 1]), ('a', 'b'))
  config = data_config(image_size=6, val_fraction=0.2, crop_to_boxes=True, erase_background=True)
  prepared, report = pipeline.prepared(dataset, config)
  assert len(prepared.train) == 16 and len(prepared.eval) == 4
  assert report['eval']['per_class'] == [2, 2]
  assert (prepared.train.images[:, 4:, 4:] == 255).all()  # training images: background erased
  assert (prepared.eval.images[:, 4:, 4:] != 255).all()   # held-out images: whole photos


def test_disk_cache_is_reused_without_decoding_again(tmp_path, monkeypatch):
  dataset = Dataset(records([np.full((5, 5, 3), i, np.uint8) for i in range(4)], [0, 1, 0, 1]),
                    records([np.zeros((5, 5, 3), np.uint8)] * 2, [0, 1]), ('a', 'b'))
  config = data_config(image_size=4, cache_dir=str(tmp_path))
  first, _ = pipeline.prepared(dataset, config)
  monkeypatch.setattr(pipeline.decode, 'decode_image', lambda *a, **k: pytest.fail('decoded again'))
  second, report = pipeline.prepared(dataset, config)
  np.testing.assert_array_equal(first.train.images, second.train.images)
  assert report['train']['decoded'] == 4
  assert not [p for p in os.listdir(tmp_path) if p.startswith('tmp')]  # no leftover temporary files


def test_prefetched_yields_everything_in_order_and_raises_errors_in_the_consumer():
  assert list(pipeline.prefetched(iter(range(50)), size=3)) == list(range(50))

  def failing():
    yield 1
    raise OSError('disk gone')
  with pytest.raises(OSError, match='disk gone'):
    list(pipeline.prefetched(failing()))
