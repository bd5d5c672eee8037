"""CIFAR-100, ResNet-18, forget a random 10% of the training set.

SalUn's (arXiv 2310.12508) and SFR-on's (arXiv 2409.19732) CIFAR-100 rows: the standard
ResNet-18 (width 64, 100 classes), original and Retrain trained 182 epochs as for CIFAR-10,
reference hyperparameters, three seeds.

    python experiments/cifar100_random10.py --data-dir ~/tensorflow_datasets
    python experiments/cifar100_random10.py --smoke
"""

from jaxunlearn.experiment import ExperimentConfig

from paper import classification_main

TRAIN = {'epochs': 182, 'batch_size': 256, 'lr': 0.1}
CONFIG = ExperimentConfig(
    dataset='cifar100', width=64, scenario='random:10', seeds=(0, 1, 2),
    methods=('retrain', 'ft', 'ga', 'rl', 'l1_sparse', 'salun', 'sfron', 'lur'),
    overrides={'train': TRAIN, 'retrain': TRAIN})

if __name__ == '__main__':
  classification_main('cifar100_random10', CONFIG, __doc__)
