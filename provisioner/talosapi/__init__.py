"""The Talos machine API: the project's .proto subset, generated messages (gen/), client and TLS helpers.

Import submodules explicitly; this package imports nothing so that the lab's stand-in can use ``gen``
and ``tls`` without the client's dependencies.
"""
