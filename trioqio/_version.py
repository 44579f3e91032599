"""The package version."""

#: The installed trioqio version, a :pep:`440` string.
#:
#: Example::
#:
#:     print("trioqio", trioqio.__version__)
__version__ = "0.1.0.dev0"
