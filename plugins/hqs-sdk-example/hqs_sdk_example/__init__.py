"""Example tasks for hqs-sdk: ``hello``, ``write_file`` and ``read_file``.

Example::

    from hqs_sdk_example import hello, read_file, write_file

    print(hello("world"))                 # "Hello, world!"
    ref = write_file("some content")      # a FileRef
    assert read_file(ref) == "some content"
"""

from hqs_sdk_example.tasks import countdown, hello, read_file, write_file

__all__ = ["countdown", "hello", "read_file", "write_file"]
