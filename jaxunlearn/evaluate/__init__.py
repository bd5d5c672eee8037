"""Evaluation protocol: UA/RA/TA, MIA-Efficacy, Avg. Gap, divergences to Retrain;
forget/retain gradient alignment along a run."""

from jaxunlearn.evaluate.alignment import GradientAlignment
from jaxunlearn.evaluate.metrics import (GAP_METRICS, accuracy, avg_gap, entropy,
                                         js_divergence, kl_divergence, mia_efficacy,
                                         mia_entropy_efficacy, softmax, summarize,
                                         true_label_confidence)
from jaxunlearn.evaluate.protocol import Outputs, evaluate, model_outputs

__all__ = ['GAP_METRICS', 'GradientAlignment', 'Outputs', 'accuracy', 'avg_gap', 'entropy',
           'evaluate', 'js_divergence', 'kl_divergence', 'mia_efficacy', 'mia_entropy_efficacy',
           'model_outputs', 'softmax', 'summarize', 'true_label_confidence']
