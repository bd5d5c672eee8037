"""DDPM on CIFAR-10, forget one class (SalUn and SFR-on's diffusion experiment).

The setting of SalUn (arXiv 2310.12508, Sec. 5.3) and SFR-on (arXiv 2409.19732, Table 3):
the references' class-conditional DDPM (their DDIM-code UNet, ``--model ref-cifar10``: ch
128, ch_mult 1-2-2-2, a class-embedding MLP concatenated with the time embedding, a learned
null vector for guidance, dropout 0.1 active in training and unlearning; 1000
linear-schedule steps, label dropout 0.1) forgets class 0 (airplane) with SalUn (1000
steps), SFR-on (150 iterations), LUR, Selective Amnesia and GA, Adam 1e-4, batch 128
(every value and the reference line it comes from: docs/paper-settings.md); UA
by a classifier trained on CIFAR-10, FID of the other classes (give ``--fid-inception``
through GenerationConfig for Inception features). Samples are drawn as theirs are
(``sample.py``'s defaults: 1000 DDIM steps, eta 1, no x0 clipping, cond_scale 2 = our
guidance 3); ``--sampling fast`` takes 50 deterministic steps instead.

The original model is the references' released checkpoint (``--unet ckpts/ckpt.pth``, or
their run folder; SFR-on's README links one), a diffusers ``UNet2DModel`` folder
(class-conditional, ``num_class_embeds=11``), or, without either, trained here for
``ddpm.steps`` (the references train 800k steps: budget days on one GPU).

    python experiments/ddpm_cifar10_class.py --data-dir ~/tensorflow_datasets --unet pretrain/ckpts/ckpt.pth
    python experiments/ddpm_cifar10_class.py --smoke
"""

from jaxunlearn import paper_settings
from jaxunlearn.diffusion.experiment import GenerationConfig

from paper import generation_main

SETTING = paper_settings.overrides('ddpm_cifar10_class')
CONFIG = GenerationConfig(
    dataset='cifar10', model='ref-cifar10', scenario='class:0', seeds=(0,),
    methods=('salun', 'sfron', 'lur', 'sa', 'ga'), forget_samples=500,
    fid_samples_per_class=500, **SETTING['sampling'],
    overrides={k: v for k, v in SETTING.items() if k != 'sampling'})

def main(argv=None) -> dict:
  return generation_main('ddpm_cifar10_class', CONFIG, __doc__, argv)


if __name__ == '__main__':
  main()
