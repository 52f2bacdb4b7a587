"""hqs-sdk quick start: tasks run as detached local processes, results cached in SQLite.

Run it twice: the second run takes every result from the cache (.hqs_sdk_cache.db beside
this script) instead of running the tasks again.
"""

from hqs_sdk_example import hello, read_file, write_file

from hqs_sdk import global_config, run_many, scoped_config

from_cache = []
global_config.on_cache_hit(lambda request: from_cache.append(request.task_name))

# 1. A single call: runs `hello` in a worker process and blocks until it is done.
print(hello("world"))

# 2. Many calls at once: they run concurrently, and the outputs come back in input order.
print(run_many([hello.bind(name) for name in ("Ada", "Grace", "Emmy")]))

# 3. A scoped configuration: hardware and time limit for the calls inside the block only.
with scoped_config(vcpu=1, memory_mb=512, timeout_minutes=2):
    ref = write_file("Hello from a file!")

# 4. A file round trip: `write_file` returns a FileRef; `read_file` takes it as input.
print(f"{ref.path} -> {read_file(ref)!r}")

total = 6
if from_cache:
    print(f"{len(from_cache)} of {total} results came from the cache "
          f"({global_config.cache.describe()}); delete that file to run the tasks again.")
else:
    print(f"All {total} tasks ran on the local backend. Run this script again: the results "
          "will come from the cache.")
