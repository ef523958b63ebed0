"""Error-minimising noise on cluster pseudo-labels: ``redteam protect``'s default, no surrogate.

Unlearnable Examples (Huang et al., ICLR 2021, arXiv:2101.04898) make a dataset useless for
training with noise that *minimises* a model's loss, a shortcut the model learns instead of the
content. The paper needs the true labels; here they are replaced by label-free clusters of the
images (``clusters``), so, like Unlearnable Clusters, the protection needs neither labels nor a
pretrained model. ``method`` holds the min-min optimisation.
"""

from defenses.unlearnable_examples.clusters import self_labelled_clusters
from defenses.unlearnable_examples.method import REFERENCE, ClusterErrorMinimizingNoise

__all__ = ["REFERENCE", "ClusterErrorMinimizingNoise", "self_labelled_clusters"]
