"""DDPM on CIFAR-10, forget one class (SalUn and SFR-on's diffusion experiment).

The setting of SalUn (arXiv 2310.12508, Sec. 5.3) and SFR-on (arXiv 2409.19732, Table 3):
a class-conditional DDPM (DDPM's CIFAR-10 UNet, 35.8M parameters, 1000 linear-schedule
steps, classifier-free guidance with label dropout 0.1) forgets class 0 (airplane) with
SalUn (1000 steps), SFR-on (150 iterations), LUR, Selective Amnesia and GA, Adam 1e-4,
batch 128; UA by a classifier trained on CIFAR-10, FID of the other classes (give
``--fid-inception`` through GenerationConfig for Inception features). The original model is
a converted diffusers checkpoint (``--unet FOLDER``: a class-conditional ``UNet2DModel``,
``num_class_embeds=11``), or, without it, trained here for ``ddpm.steps`` (the references
train 800k steps: budget days on one GPU).

    python experiments/ddpm_cifar10_class.py --data-dir ~/tensorflow_datasets --unet ddpm-c10-cond
    python experiments/ddpm_cifar10_class.py --smoke
"""

from jaxunlearn.diffusion.experiment import GenerationConfig
from jaxunlearn.diffusion.train import DiffusionConfig

from paper import generation_main

CONFIG = GenerationConfig(
    dataset='cifar10', model='ddpm-cifar10', scenario='class:0', seeds=(0,),
    methods=('salun', 'sfron', 'lur', 'sa', 'ga'),
    ddpm=DiffusionConfig(steps=800_000, batch_size=128, lr=2e-4, warmup=5000),
    forget_samples=500, fid_samples_per_class=500, sample_steps=100, guidance=2.0)


def main(argv=None) -> dict:
  return generation_main('ddpm_cifar10_class', CONFIG, __doc__, argv)


if __name__ == '__main__':
  main()
