import numpy as np
import pytest

from jaxunlearn.data import load_dataset, load_digits, load_tfds, make_split, parse_scenario
from jaxunlearn.data.dataset import Dataset


def test_digits_shapes_and_fixed_split():
  ds = load_digits(16)
  assert ds.x_train.shape == (1438, 16, 16, 1) and ds.x_test.shape == (359, 16, 16, 1)
  assert ds.x_train.dtype == np.float32 and ds.num_classes == 10
  # Stratified: every class has 35-37 test images.
  assert set(np.bincount(ds.y_test)) <= {35, 36, 37}
  # Standardized with training statistics.
  assert abs(ds.x_train.mean()) < 1e-4 and abs(ds.x_train.std() - 1) < 1e-3
  again = load_digits(16)
  np.testing.assert_array_equal(ds.y_train, again.y_train)
  np.testing.assert_array_equal(ds.x_test, again.x_test)


def test_digits_native_size_and_bad_size():
  assert load_digits(8).image_shape == (8, 8, 1)
  with pytest.raises(ValueError, match='image_size must be >= 8'):
    load_digits(4)


def test_class_split_removes_class_from_test(toy):
  split = make_split(toy, 'class:1')
  assert np.all(toy.y_train[split.forget] == 1)
  assert not np.any(toy.y_train[split.retain] == 1)
  assert not np.any(toy.y_test[split.test] == 1)
  assert len(split.forget) + len(split.retain) == len(toy.y_train)
  assert np.intersect1d(split.forget, split.retain).size == 0


def test_random_split_is_pure_function_of_seed(toy):
  a, b, c = (make_split(toy, 'random:10', s) for s in (0, 0, 1))
  np.testing.assert_array_equal(a.forget, b.forget)
  assert not np.array_equal(a.forget, c.forget)
  assert len(a.forget) == 6 and len(a.test) == len(toy.y_test)
  np.testing.assert_array_equal(np.sort(np.concatenate([a.forget, a.retain])), np.arange(60))


@pytest.mark.parametrize('spec, message', [
    ('class:3', r'class 3 does not exist in toy; classes are 0\.\.2'),
    ('class:-1', 'classes are numbered from 0'),
    ('random:0', r'open interval \(0, 100\)'),
    ('random:100', r'open interval \(0, 100\)'),
    ('random:0.5', 'forget set is empty.*choose P >= 1.67'),
    ('forget:3', "use 'class:K'"),
    ('class', "use 'class:K'"),
    ('class:x', 'no number'),
    ('class:1.5', 'must be an integer'),
])
def test_bad_scenarios_raise_clear_errors(toy, spec, message):
  with pytest.raises(ValueError, match=message):
    make_split(toy, spec)


def test_parse_scenario_roundtrip():
  assert str(parse_scenario('random:10')) == 'random:10'
  assert str(parse_scenario('class:3')) == 'class:3'


def test_dataset_validates_labels_and_shapes():
  x = np.zeros((4, 8, 8, 1), np.float32)
  with pytest.raises(ValueError, match=r'labels must lie in 0\.\.2'):
    Dataset('bad', x, np.array([0, 1, 2, 3]), x, np.zeros(4, int), 3)
  with pytest.raises(ValueError, match='expected'):
    Dataset('bad', x, np.zeros(3, int), x, np.zeros(4, int), 3)


def test_tfds_mock_cifar10_loads_without_network(tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=12):
    ds = load_tfds('cifar10', data_dir=str(tmp_path))
    assert ds.x_train.shape == (12, 32, 32, 3) and ds.num_classes == 10
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    small = load_dataset('cifar10', data_dir=str(tmp_path), image_size=16)
    assert small.image_shape == (16, 16, 3)
    split = make_split(ds, 'random:25', seed=0)
    assert len(split.forget) == 3
    sym = load_tfds('cifar10', data_dir=str(tmp_path), pixels='symmetric')
    assert sym.x_train.min() >= -1 and sym.x_train.max() <= 1 and sym.x_train.min() < -0.5


def test_tfds_missing_dataset_names_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match='tfds build cifar10 --data_dir'):
    load_tfds('cifar10', data_dir=str(tmp_path))
