"""Put the folder that `benchmarks/device_check.sh --prepare` filled behind the installed packages.

device_check.sh puts this folder on PYTHONPATH and names the prepared one in DEVICE_CHECK_SITE.
`site.addsitedir` appends it to sys.path, so a package the interpreter already has wins and the
prepared copies fill in only what is missing (on the device: lightly, nbclient and a kernel).
Every Python started below the check (pytest, the notebooks' kernels) inherits both variables.
"""
import os
import site

if os.environ.get("DEVICE_CHECK_SITE"):
    site.addsitedir(os.environ["DEVICE_CHECK_SITE"])
