"""Past one process: replicas behind nginx, several workers on one port, Ray Serve."""
