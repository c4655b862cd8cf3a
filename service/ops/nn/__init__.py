"""``/activate`` and ``/layers``: activation functions, torch.nn's Linear and recurrent
layers.

``registry`` (the activation table), ``binding`` (a request's functions and parameter
values), ``evaluation`` (values, derivatives, cost), ``activations`` (their public names
together); ``linear`` (``/layers/linear``), ``rnn`` (``/layers/rnn``), ``layers`` (what the
two share); ``handlers`` (each route's prepare and compute).
"""
