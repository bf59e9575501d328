"""cifarlab: build, train and compare ConvNets on CIFAR from scratch.

Data flow: data -> augment -> model -> train -> evaluate -> results -> report.
"""

__version__ = "0.1.0"
