"""The networks of supervised contrastive learning (train.method = "supcon"): any registered model's
`features` as the encoder, a projection MLP to an L2-normalised embedding (pre-training), and a
probe on the frozen features (the classifier that is evaluated)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.schema import SupConConfig


class SupConNet(nn.Module):
    def __init__(self, encoder: nn.Module, cfg: SupConConfig, num_classes: int):
        super().__init__()
        d = encoder.feature_dim
        self.encoder = encoder
        # the paper's projection head: one hidden layer as wide as the features, ReLU, then the embedding
        self.projection = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, cfg.projection))
        self.probe = (nn.Linear(d, num_classes) if cfg.probe == "linear" else
                      nn.Sequential(nn.Linear(d, cfg.probe_hidden), nn.ReLU(inplace=True),
                                    nn.Linear(cfg.probe_hidden, num_classes)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(self.encoder.features(x)).float(), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The probe's logits on the encoder's features: what evaluation and the test read."""
        return self.probe(self.encoder.features(x))
