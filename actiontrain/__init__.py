"""actiontrain: elastic X3D action-classification training on Kubernetes."""

__version__ = "0.1.0"
