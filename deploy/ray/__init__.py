"""torchlab on Ray Serve: the application (app.py) and its Serve config files."""
