"""``/grad``: the expression language and autograd over it.

``functions`` (what an expression may call), ``parse`` (scan and parse the text), ``check``
(the checker: node limits, names, calls), ``evaluate`` (the walk over tensors, on ``meta``
or for real), ``gradients`` (plan, then value, gradients and hessians) and ``handlers``
(the route's prepare and compute).
"""
