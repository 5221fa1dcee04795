import os

# Tests run on the CPU with small shapes; keep XLA from grabbing every core per compile.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
