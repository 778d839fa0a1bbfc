"""The gateway's tools, apart from the request path in ``ext_proc``.

``up``/``apply``/``status`` (the local supervisor), the mock providers, the
load generator and the benchmark. Tools may import ``ext_proc``; ``ext_proc``
never imports them.
"""
