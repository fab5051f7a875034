"""ByzPy's asynchronous parameter server (:mod:`~velocity.byzpy.engine.parameter_server.ps`)."""

from velocity.byzpy.engine.parameter_server.ps import ParameterServer

__all__ = ["ParameterServer"]
