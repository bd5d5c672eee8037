"""CIFAR-10, ResNet-18, forget one class (class-wise forgetting).

The class-wise setting of SalUn (arXiv 2310.12508, Table A3), SFR-on (arXiv 2409.19732)
and LUR (arXiv 2503.06339): every training image of one class (here class 0, airplane;
``--scenario``-style changes go in ``CONFIG``), the standard ResNet-18 (width 64), original
and Retrain trained 182 epochs as in ``cifar10_random10.py``, every method with its
reference hyperparameters (docs/paper-settings.md; ``--print-hparams``), three seeds. TA
is the accuracy on the test images of the other classes.

    python experiments/cifar10_classwise.py --data-dir ~/tensorflow_datasets
    python experiments/cifar10_classwise.py --smoke
    python experiments/cifar10_classwise.py --print-hparams
"""

from jaxunlearn import paper_settings
from jaxunlearn.experiment import ExperimentConfig

from paper import classification_main

CONFIG = ExperimentConfig(
    dataset='cifar10', width=64, scenario='class:0', seeds=(0, 1, 2),
    methods=('retrain', 'ft', 'ga', 'rl', 'l1_sparse', 'iu', 'bs', 'scrub', 'salun', 'sfron',
             'lur'),
    overrides=paper_settings.overrides('cifar10_classwise'))

def main(argv=None) -> dict:
  return classification_main('cifar10_classwise', CONFIG, __doc__, argv)


if __name__ == '__main__':
  main()
