"""CIFAR-10, ResNet-18, forget a random 10% of the training set.

The setting of SalUn (arXiv 2310.12508) Table 3, SFR-on (arXiv 2409.19732) Table 1 and LUR
(arXiv 2503.06339) Table 1: the standard ResNet-18 (width 64, CIFAR stem), original and
Retrain trained 182 epochs (SGD 0.1, momentum 0.9, weight decay 5e-4, batch 256; cosine
instead of the references' steps at epochs 91 and 136), every method with its reference
hyperparameters (``jaxunlearn methods``), three seeds.

    python experiments/cifar10_random10.py --data-dir ~/tensorflow_datasets
    python experiments/cifar10_random10.py --smoke
"""

from jaxunlearn.experiment import ExperimentConfig

from paper import classification_main

TRAIN = {'epochs': 182, 'batch_size': 256, 'lr': 0.1}
CONFIG = ExperimentConfig(
    dataset='cifar10', width=64, scenario='random:10', seeds=(0, 1, 2),
    methods=('retrain', 'ft', 'ga', 'rl', 'l1_sparse', 'iu', 'bs', 'scrub', 'salun', 'sfron',
             'lur'),
    overrides={'train': TRAIN, 'retrain': TRAIN})

if __name__ == '__main__':
  classification_main('cifar10_random10', CONFIG, __doc__)
