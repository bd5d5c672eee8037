"""CIFAR-10, ResNet-18, forget one class (class-wise forgetting).

The class-wise setting of SalUn (arXiv 2310.12508, Table A3), SFR-on (arXiv 2409.19732)
and LUR (arXiv 2503.06339): every training image of one class (here class 0, airplane;
``--scenario``-style changes go in ``CONFIG``), the standard ResNet-18 (width 64), original
and Retrain trained 182 epochs as in ``cifar10_random10.py``, reference hyperparameters,
three seeds. TA is the accuracy on the test images of the other classes.

    python experiments/cifar10_classwise.py --data-dir ~/tensorflow_datasets
    python experiments/cifar10_classwise.py --smoke
"""

from jaxunlearn.experiment import ExperimentConfig

from paper import classification_main

TRAIN = {'epochs': 182, 'batch_size': 256, 'lr': 0.1}
CONFIG = ExperimentConfig(
    dataset='cifar10', width=64, scenario='class:0', seeds=(0, 1, 2),
    methods=('retrain', 'ft', 'ga', 'rl', 'l1_sparse', 'iu', 'bs', 'scrub', 'salun', 'sfron',
             'lur'),
    overrides={'train': TRAIN, 'retrain': TRAIN})

if __name__ == '__main__':
  classification_main('cifar10_classwise', CONFIG, __doc__)
