"""An example backend written from the plugin docs only (docs/backend-walkthrough.md).

Not shipped: it measures how much code a third-party backend needs on :mod:`hqs_sdk.control`,
and its contract test (``test_pool_backend.py``, run by ``tox -e core``) keeps it working.
"""
