"""nginx in front of torchlab replicas: the configuration template and its renderer."""
