"""``/grad``: the expression language (scan, parse, check, evaluate) and autograd over it."""
