"""``/activate`` and ``/layers``: activation functions, torch.nn's Linear and recurrent
layers."""
