import numpy as np
import pytest

from lightcls.data import pipeline
from lightcls.data.sources import Split


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


def test_resized_upscales_to_the_configured_size_and_keeps_range():
  split = Split(np.array([[[0, 255], [255, 0]]], np.uint8)[..., None], np.zeros(1, np.int32))
  out = pipeline.resized(split, 8)
  assert out.images.shape == (1, 8, 8, 1) and out.images.dtype == np.uint8
  # Corners keep their pixel (bilinear, half-pixel centres), the mean is preserved.
  assert out.images[0, 0, 0, 0] == 0 and out.images[0, 0, 7, 0] == 255
  assert abs(out.images.mean() - 127.5) < 1
