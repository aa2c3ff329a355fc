"""Training in plain PyTorch: data, model, fit, LR finder, advice, interpretation, export."""
