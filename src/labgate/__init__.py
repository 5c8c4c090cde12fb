"""labgate: a test lab controller with a push gate and flake-aware bisection."""

__version__ = "0.1.0"
