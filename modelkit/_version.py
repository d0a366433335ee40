"""modelkit's version, in a module of its own so that a subpackage can name it without importing the package root
(and, through it, every layer the root's functions reach)."""

__version__ = "0.1.0"
