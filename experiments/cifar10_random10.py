"""CIFAR-10, ResNet-18, forget a random 10% of the training set.

The setting of SalUn (arXiv 2310.12508) Table 3, SFR-on (arXiv 2409.19732) Table 1 and LUR
(arXiv 2503.06339) Table 1: the standard ResNet-18 (width 64, CIFAR stem), original and
Retrain trained 182 epochs (SGD 0.1, momentum 0.9, weight decay 5e-4, batch 256, the rate
times 0.1 after epochs 91 and 136), every method with its reference hyperparameters (each
value's source file and line: docs/paper-settings.md; ``--print-hparams`` prints them),
three seeds.

    python experiments/cifar10_random10.py --data-dir ~/tensorflow_datasets
    python experiments/cifar10_random10.py --smoke
    python experiments/cifar10_random10.py --print-hparams
"""

from jaxunlearn import paper_settings
from jaxunlearn.experiment import ExperimentConfig

from paper import classification_main

CONFIG = ExperimentConfig(
    dataset='cifar10', width=64, scenario='random:10', seeds=(0, 1, 2),
    methods=('retrain', 'ft', 'ga', 'rl', 'l1_sparse', 'iu', 'bs', 'scrub', 'bad_teacher',
             'scissorhands', 'salun', 'sfron', 'lur'),
    overrides=paper_settings.overrides('cifar10_random10'))

def main(argv=None) -> dict:
  return classification_main('cifar10_random10', CONFIG, __doc__, argv)


if __name__ == '__main__':
  main()
