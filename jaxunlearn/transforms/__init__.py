"""Unlearning as optax gradient transformations (the contract: docs/architecture.md)."""

from jaxunlearn.transforms.align import AlignForgetRetainState, align_forget_retain
from jaxunlearn.transforms.combine import (AddL1PenaltyState, CombineForgetRetainState,
                                           add_l1_penalty, combine_forget_retain)
from jaxunlearn.transforms.elastic import (ElasticPenaltyState, add_elastic_penalty,
                                           set_elastic_fisher)
from jaxunlearn.transforms.ema import TrackParamsEMAState, ema_params, track_params_ema
from jaxunlearn.transforms.fast_slow import fast_slow_schedule, hold
from jaxunlearn.transforms.finite import apply_if_finite
from jaxunlearn.transforms.mask import MaskBySaliencyState, mask_by_saliency, set_saliency_mask
from jaxunlearn.transforms.masking import masked, partition, restrict_like
from jaxunlearn.transforms.multi_steps import MultiStepsState, multi_steps
from jaxunlearn.transforms.project import (ProjectOntoForgetMemoryState,
                                           project_onto_forget_memory)
from jaxunlearn.transforms.remain_geometry import (PreconditionByRemainHessianState,
                                                   precondition_by_remain_hessian)
from jaxunlearn.transforms.train_state import TrainState

__all__ = ['AddL1PenaltyState', 'AlignForgetRetainState', 'CombineForgetRetainState',
           'ElasticPenaltyState', 'MaskBySaliencyState', 'MultiStepsState', 'PreconditionByRemainHessianState',
           'ProjectOntoForgetMemoryState', 'TrackParamsEMAState', 'TrainState',
           'add_elastic_penalty', 'add_l1_penalty', 'align_forget_retain', 'apply_if_finite',
           'combine_forget_retain', 'ema_params', 'fast_slow_schedule', 'hold', 'mask_by_saliency',
           'masked', 'multi_steps', 'partition', 'restrict_like',
           'precondition_by_remain_hessian', 'project_onto_forget_memory', 'set_elastic_fisher',
           'set_saliency_mask', 'track_params_ema']
