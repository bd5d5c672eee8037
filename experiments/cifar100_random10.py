"""CIFAR-100, ResNet-18, forget a random 10% of the training set.

SalUn's (arXiv 2310.12508) and SFR-on's (arXiv 2409.19732) CIFAR-100 rows: the standard
ResNet-18 (width 64, 100 classes), original and Retrain trained 182 epochs as for CIFAR-10,
reference hyperparameters (docs/paper-settings.md; ``--print-hparams``: RL and SalUn on one
shuffled forget + retain loader, the SalUn code's CIFAR-100 branch), three seeds.

    python experiments/cifar100_random10.py --data-dir ~/tensorflow_datasets
    python experiments/cifar100_random10.py --smoke
    python experiments/cifar100_random10.py --print-hparams
"""

from jaxunlearn import paper_settings
from jaxunlearn.experiment import ExperimentConfig

from paper import classification_main

CONFIG = ExperimentConfig(
    dataset='cifar100', width=64, scenario='random:10', seeds=(0, 1, 2),
    methods=('retrain', 'ft', 'ga', 'rl', 'l1_sparse', 'salun', 'sfron', 'lur'),
    overrides=paper_settings.overrides('cifar100_random10'))

def main(argv=None) -> dict:
  return classification_main('cifar100_random10', CONFIG, __doc__, argv)


if __name__ == '__main__':
  main()
