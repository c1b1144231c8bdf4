"""The network: model, label bins, losses and model files."""
