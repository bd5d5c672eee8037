"""Evaluation protocol: UA/RA/TA, MIA-Efficacy, Avg. Gap, divergences to Retrain."""

from jaxunlearn.evaluate.metrics import (GAP_METRICS, accuracy, avg_gap, entropy,
                                         js_divergence, kl_divergence, mia_efficacy,
                                         mia_entropy_efficacy, softmax, summarize,
                                         true_label_confidence)
from jaxunlearn.evaluate.protocol import Outputs, evaluate, model_outputs

__all__ = ['GAP_METRICS', 'Outputs', 'accuracy', 'avg_gap', 'entropy', 'evaluate',
           'js_divergence', 'kl_divergence', 'mia_efficacy', 'mia_entropy_efficacy',
           'model_outputs', 'softmax', 'summarize', 'true_label_confidence']
