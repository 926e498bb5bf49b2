"""pipeline/data/ffcv_compat.py: FFCV imported without its import-time numba typed-dict JIT
(the image modes are a plain dict with the same items) and with torch's thread count kept.
Both storage modes (raw and JPEG) through real betons: tests/test_datasets.py, test_loaders.py."""
from __future__ import annotations

import subprocess
import sys

from conftest import env


def test_image_modes_are_a_plain_dict_and_numba_is_restored():
    import numba.typed
    import numba.typed.typeddict

    from pipeline.data import ffcv_compat  # noqa: F401  (imports FFCV)
    import ffcv.fields.rgb_image as rgb

    assert type(rgb.IMAGE_MODES) is dict and rgb.IMAGE_MODES == {"jpg": 0, "raw": 1}
    assert numba.typed.Dict is numba.typed.typeddict.Dict  # only the import saw `dict`
    typed = numba.typed.Dict()  # and numba's own typed dict still works afterwards
    typed["jpg"] = 0
    assert typed["jpg"] == 0


def test_a_fresh_process_imports_ffcv_without_compiling_a_typed_dict():
    code = ("import torch; torch.set_num_threads(3)\n"
            "import pipeline.data.ffcv_compat\n"
            "from numba.typed import typeddict\n"
            "print(torch.get_num_threads(), len(typeddict._make_dict.overloads))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "0"]  # threads kept; numba's dict maker never compiled
