"""How torchlab runs past one process: nginx in front of replicas, Ray Serve."""
