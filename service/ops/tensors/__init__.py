"""``/tensor/ops``: the program interpreter and NumPy-style indexing."""
