"""``/regress/*``: linear and logistic fits, their metrics, and predictions."""
