"""``/regress/*``: linear and logistic fits, their metrics, and predictions.

* ``handlers``: the routes' prepare and compute (request → plan → content or picture).
* ``linear``: ``/regress/linear``, least squares and gradient descent.
* ``logistic``: ``/regress/logistic``, binary and multinomial, L-BFGS, SGD or Adam.
* ``params``: models in their JSON form, checked and ready to predict (``/regress/predict``).
* ``metrics``: r2, MSE, MAE, Pearson's r; accuracy, log loss, confusion, precision, recall.
* ``split``: the train/test split and the mini-batches of an epoch.
* ``training``: what both fits share in training (the data's charge, the standardiser).
"""
